package gormstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"gorm.io/gorm"

	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/encryption"
)

var _ store.Rotation = (*Store)(nil)

// sealedColumn is one column holding ciphertext, with how to rebuild the
// associated data it was sealed with. Every sealed column of the schema is
// listed here (a test compares this list with the schema's BLOB columns).
type sealedColumn struct {
	table, column string
	// extra are further columns the associated data needs (besides id).
	extra []string
	ad    func(id string, extra []string) []byte
}

func rowAD(table, field string) func(string, []string) []byte {
	return func(id string, _ []string) []byte { return associatedData(table, id, field) }
}

// sealedColumns lists every sealed column in rotation order.
func sealedColumns() []sealedColumn {
	mv := []string{"host_kind", "host_account_id", "platform", "scope", "host_user_id", "field_const"}
	return []sealedColumn{
		{table: "users", column: "access_token", ad: rowAD(adUsers, "access_token")},
		{table: "users", column: "refresh_token", ad: rowAD(adUsers, "refresh_token")},
		{table: "users", column: "api_key", ad: rowAD(adUsers, "api_key")},
		{table: "users", column: "secrets", ad: rowAD(adUsers, "secrets")},
		{table: "oauth_flows", column: "pkce_verifier", ad: rowAD(adFlows, "pkce_verifier")},
		{table: "jobs", column: "payload", ad: rowAD(adJobs, "payload")},
		{table: "jobs", column: "result", ad: rowAD(adJobs, "result")},
		{table: "managed_values", column: "value", extra: mv, ad: func(_ string, e []string) []byte {
			k := store.ManagedKey{HostKind: e[0], AccountID: e[1], Platform: e[2], Scope: e[3], UserID: e[4]}
			return managedValueAD(k, e[5])
		}},
		{table: "managed_oauth_apps", column: "client_secret", ad: rowAD(adManagedApps, "client_secret")},
		{table: "plugin_tasks", column: "payload", ad: rowAD(adPluginTasks, "payload")},
		{table: "plugin_tasks", column: "result", ad: rowAD(adPluginTasks, "result")},
	}
}

// SealedColumns names every sealed column as "<table>.<column>".
func SealedColumns() []string {
	var out []string
	for _, c := range sealedColumns() {
		out = append(out, c.table+"."+c.column)
	}
	return out
}

// headerLen is the ciphertext prefix naming the key: version(1) | key id(4).
const headerLen = 5

// headerExpr is the SQL for a ciphertext's 5-byte header.
func (s *Store) headerExpr(column string) string {
	if s.dialect == DialectPostgres {
		return "substring(" + column + " from 1 for 5)"
	}
	return "substr(" + column + ", 1, 5)"
}

// PrimaryKeyID reports the key id the store seals with now (it seals a
// probe and reads the id from the ciphertext: the Sealer interface does
// not expose its ring).
func (s *Store) PrimaryKeyID() (uint32, error) {
	ct, err := s.sealer.Seal([]byte{0}, []byte("connectd/rotate/probe"))
	if err != nil {
		return 0, fmt.Errorf("gormstore: probe seal: %w", err)
	}
	id, err := encryption.KeyIDOf(ct)
	if err != nil {
		return 0, fmt.Errorf("gormstore: the sealer does not write key ids: %w", err)
	}
	return id, nil
}

func header(id uint32) []byte {
	h := make([]byte, headerLen)
	h[0] = encryption.Version
	binary.BigEndian.PutUint32(h[1:], id)
	return h
}

// KeyUsage implements store.Rotation. Values whose header is not a known
// format are counted under key id 0 ("unreadable").
func (s *Store) KeyUsage(ctx context.Context) (store.KeyUsage, error) {
	counts := map[uint32]int64{}
	for _, c := range sealedColumns() {
		var rows []struct {
			H []byte `gorm:"column:h"`
			N int64  `gorm:"column:n"`
		}
		h := s.headerExpr(c.column)
		if _, err := s.query(ctx, s.r, &rows, `SELECT `+h+` AS h, COUNT(*) AS n FROM `+c.table+
			` WHERE `+c.column+` IS NOT NULL GROUP BY `+h, nil); err != nil {
			return nil, fmt.Errorf("gormstore: key usage of %s.%s: %w", c.table, c.column, err)
		}
		for _, r := range rows {
			id, err := encryption.KeyIDOf(r.H)
			if err != nil {
				id = 0
			}
			counts[id] += r.N
		}
	}
	return store.KeyUsage{"encryption": counts}, nil
}

// countNotUnder counts values whose header differs from h.
func (s *Store) countNotUnder(ctx context.Context, c sealedColumn, h []byte) (int64, error) {
	var n int64
	if _, err := s.query(ctx, s.r, &n, `SELECT COUNT(*) FROM `+c.table+` WHERE `+c.column+` IS NOT NULL AND `+
		s.headerExpr(c.column)+` <> @h`, args{"h": h}); err != nil {
		return 0, fmt.Errorf("gormstore: count %s.%s: %w", c.table, c.column, err)
	}
	return n, nil
}

const maxFailedRefs = 20

// RotateSealed implements store.Rotation.
func (s *Store) RotateSealed(ctx context.Context, batch int, progress func(store.RotateProgress)) (store.RotateResult, error) {
	var res store.RotateResult
	if batch <= 0 {
		batch = 500
	}
	primary, err := s.PrimaryKeyID()
	if err != nil {
		return res, err
	}
	res.PrimaryKeyID = primary
	h := header(primary)
	cols := sealedColumns()
	for _, c := range cols {
		n, err := s.countNotUnder(ctx, c, h)
		if err != nil {
			return res, err
		}
		res.Total += n
	}
	for _, c := range cols {
		res.Column = c.table + "." + c.column
		if err := s.rotateColumn(ctx, c, h, batch, &res, progress); err != nil {
			return res, err
		}
	}
	res.Column = ""
	return res, nil
}

type sealedRow struct {
	id    string
	ct    []byte
	extra []string
}

func (s *Store) rotateColumn(ctx context.Context, c sealedColumn, h []byte, batch int, res *store.RotateResult, progress func(store.RotateProgress)) error {
	after := ""
	for {
		rows, err := s.readNotUnder(ctx, c, h, after, batch)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		after = rows[len(rows)-1].id
		type update struct {
			id       string
			old, new []byte
		}
		ups := make([]update, 0, len(rows))
		for _, r := range rows {
			ad := c.ad(r.id, r.extra)
			pt, err := s.sealer.Open(r.ct, ad)
			if err != nil {
				res.Failed++
				if len(res.FailedRefs) < maxFailedRefs {
					res.FailedRefs = append(res.FailedRefs, c.table+"."+c.column+" "+r.id)
				}
				s.log.Warn("cannot open a sealed value; left as is", "table", c.table, "column", c.column, "id", r.id, "error", err)
				continue
			}
			ct, err := s.sealer.Seal(pt, ad)
			clear(pt)
			if err != nil {
				return fmt.Errorf("gormstore: re-seal %s.%s %s: %w", c.table, c.column, r.id, err)
			}
			ups = append(ups, update{id: r.id, old: r.ct, new: ct})
		}
		var resealed, conflicts int64
		// One transaction per batch: one commit (one fsync) for the batch
		// rather than per value; a kill mid-batch rolls the batch back.
		err = s.w.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			resealed, conflicts = 0, 0
			for _, u := range ups {
				n, err := s.exec(ctx, tx, `UPDATE `+c.table+` SET `+c.column+` = @new WHERE id = @id AND `+c.column+` = @old`,
					args{"id": u.id, "old": u.old, "new": u.new})
				if err != nil {
					return err
				}
				if n == 1 {
					resealed++
				} else {
					conflicts++ // a concurrent writer changed (or deleted) it: theirs stands
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("gormstore: save re-sealed %s.%s: %w", c.table, c.column, err)
		}
		res.Resealed += resealed
		res.Conflicts += conflicts
		res.Done = res.Resealed + res.Conflicts + res.Failed
		if progress != nil {
			progress(res.RotateProgress)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// maxExtra is how many extra associated-data columns a sealed column may
// name (managed_values names six).
const maxExtra = 6

func (s *Store) readNotUnder(ctx context.Context, c sealedColumn, h []byte, after string, batch int) ([]sealedRow, error) {
	if len(c.extra) > maxExtra {
		return nil, fmt.Errorf("gormstore: %s.%s: too many associated-data columns", c.table, c.column)
	}
	cols := "id, " + c.column + " AS v"
	for i := range maxExtra {
		e := "''"
		if i < len(c.extra) {
			e = c.extra[i]
		}
		cols += fmt.Sprintf(", %s AS e%d", e, i)
	}
	q := `SELECT ` + cols + ` FROM ` + c.table + ` WHERE ` + c.column + ` IS NOT NULL AND ` +
		s.headerExpr(c.column) + ` <> @h AND id > @after ORDER BY id LIMIT @n`
	var raw []struct {
		ID string `gorm:"column:id"`
		V  []byte `gorm:"column:v"`
		E0 string `gorm:"column:e0"`
		E1 string `gorm:"column:e1"`
		E2 string `gorm:"column:e2"`
		E3 string `gorm:"column:e3"`
		E4 string `gorm:"column:e4"`
		E5 string `gorm:"column:e5"`
	}
	if _, err := s.query(ctx, s.r, &raw, q, args{"h": h, "after": after, "n": batch}); err != nil {
		return nil, fmt.Errorf("gormstore: read %s.%s: %w", c.table, c.column, err)
	}
	out := make([]sealedRow, 0, len(raw))
	for _, m := range raw {
		if m.ID == "" {
			return nil, errors.New("gormstore: read sealed column: row without id")
		}
		out = append(out, sealedRow{id: m.ID, ct: m.V, extra: []string{m.E0, m.E1, m.E2, m.E3, m.E4, m.E5}[:len(c.extra)]})
	}
	return out, nil
}
