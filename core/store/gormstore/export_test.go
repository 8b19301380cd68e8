package gormstore

import (
	"context"
	"fmt"
	"strings"

	"gorm.io/gorm"
)

// SeedUsers bulk-inserts n users (ids "<prefix>-%08d", CRM user ids the
// same) each holding a sealed access and refresh token ("at-<i>",
// "rt-<i>"): two values per user. Test setup for rotation at scale, far
// faster than n UpsertUser calls.
func SeedUsers(ctx context.Context, s *Store, prefix string, n int) error {
	const per = 200
	for start := 0; start < n; start += per {
		end := min(start+per, n)
		var vals []string
		a := args{}
		for i := start; i < end; i++ {
			id := UserSeedID(prefix, i)
			at, err := s.sealString(adUsers, id, "access_token", fmt.Sprintf("at-%d", i))
			if err != nil {
				return err
			}
			rt, err := s.sealString(adUsers, id, "refresh_token", fmt.Sprintf("rt-%d", i))
			if err != nil {
				return err
			}
			k := fmt.Sprint(i - start)
			vals = append(vals, "(@id"+k+", 'seed', @id"+k+", @at"+k+", @rt"+k+", 'active', {now}, {now})")
			a["id"+k], a["at"+k], a["rt"+k] = id, at, rt
		}
		q := `INSERT INTO users (id, platform, crm_user_id, access_token, refresh_token, status, created_at_ms, updated_at_ms) VALUES ` +
			strings.Join(vals, ", ")
		if err := s.w.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			_, err := s.exec(ctx, tx, q, a)
			return err
		}); err != nil {
			return fmt.Errorf("seed users: %w", err)
		}
	}
	return nil
}

// UserSeedID is the id SeedUsers gives user i.
func UserSeedID(prefix string, i int) string { return fmt.Sprintf("%s-%08d", prefix, i) }

// BlobColumns lists "<table>.<column>" of every BLOB/bytea column.
func BlobColumns(ctx context.Context, s *Store) ([]string, error) {
	var rows []struct {
		T string `gorm:"column:t"`
		C string `gorm:"column:c"`
	}
	q := `SELECT m.name AS t, p.name AS c FROM sqlite_master m, pragma_table_info(m.name) p
		WHERE m.type = 'table' AND upper(p.type) = 'BLOB' ORDER BY 1, 2`
	if s.dialect == DialectPostgres {
		q = `SELECT table_name AS t, column_name AS c FROM information_schema.columns
			WHERE table_schema = current_schema() AND data_type = 'bytea' ORDER BY 1, 2`
	}
	if _, err := s.query(ctx, s.r, &rows, q, nil); err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rows {
		out = append(out, r.T+"."+r.C)
	}
	return out, nil
}
