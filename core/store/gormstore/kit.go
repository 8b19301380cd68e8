package gormstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/connectd/connectd/core/store"
)

var _ store.Kit = (*Store)(nil)

const kitAppColumns = `id, name, connector, client_id, client_secret_hash, redirect_uris, after_install_url,
	created_at_ms, updated_at_ms`

type kitAppRow struct {
	ID               string `gorm:"column:id"`
	Name             string `gorm:"column:name"`
	Connector        string `gorm:"column:connector"`
	ClientID         string `gorm:"column:client_id"`
	ClientSecretHash string `gorm:"column:client_secret_hash"`
	RedirectURIs     string `gorm:"column:redirect_uris"`
	AfterInstallURL  string `gorm:"column:after_install_url"`
	CreatedAtMS      int64  `gorm:"column:created_at_ms"`
	UpdatedAtMS      int64  `gorm:"column:updated_at_ms"`
}

func (r *kitAppRow) app() (*store.KitApp, error) {
	a := &store.KitApp{
		ID: r.ID, Name: r.Name, Connector: r.Connector, ClientID: r.ClientID, ClientSecretHash: r.ClientSecretHash,
		AfterInstallURL: r.AfterInstallURL, CreatedAt: msTime(r.CreatedAtMS), UpdatedAt: msTime(r.UpdatedAtMS),
	}
	if err := json.Unmarshal([]byte(r.RedirectURIs), &a.RedirectURIs); err != nil {
		return nil, fmt.Errorf("gormstore: kit app %s: redirect_uris: %w", r.ID, err)
	}
	return a, nil
}

const kitGrantColumns = `id, app_id, user_id, expires_at_ms, revoked_at_ms, created_at_ms`

type kitGrantRow struct {
	ID          string `gorm:"column:id"`
	AppID       string `gorm:"column:app_id"`
	UserID      string `gorm:"column:user_id"`
	ExpiresAtMS int64  `gorm:"column:expires_at_ms"`
	RevokedAtMS *int64 `gorm:"column:revoked_at_ms"`
	CreatedAtMS int64  `gorm:"column:created_at_ms"`
}

func (r *kitGrantRow) grant() *store.KitGrant {
	return &store.KitGrant{ID: r.ID, AppID: r.AppID, UserID: r.UserID, ExpiresAt: msTime(r.ExpiresAtMS),
		RevokedAt: msTimePtr(r.RevokedAtMS), CreatedAt: msTime(r.CreatedAtMS)}
}

const kitCodeColumns = `code_hash, app_id, grant_id, redirect_uri, expires_at_ms, used_at_ms, created_at_ms`

type kitCodeRow struct {
	CodeHash    string `gorm:"column:code_hash"`
	AppID       string `gorm:"column:app_id"`
	GrantID     string `gorm:"column:grant_id"`
	RedirectURI string `gorm:"column:redirect_uri"`
	ExpiresAtMS int64  `gorm:"column:expires_at_ms"`
	UsedAtMS    *int64 `gorm:"column:used_at_ms"`
	CreatedAtMS int64  `gorm:"column:created_at_ms"`
}

func (r *kitCodeRow) code() *store.KitCode {
	return &store.KitCode{CodeHash: r.CodeHash, AppID: r.AppID, GrantID: r.GrantID, RedirectURI: r.RedirectURI,
		ExpiresAt: msTime(r.ExpiresAtMS), UsedAt: msTimePtr(r.UsedAtMS), CreatedAt: msTime(r.CreatedAtMS)}
}

type kitTokenRow struct {
	TokenHash   string `gorm:"column:token_hash"`
	GrantID     string `gorm:"column:grant_id"`
	Kind        string `gorm:"column:kind"`
	ParentHash  string `gorm:"column:parent_hash"`
	ExpiresAtMS int64  `gorm:"column:expires_at_ms"`
	RotatedAtMS *int64 `gorm:"column:rotated_at_ms"`
	CreatedAtMS int64  `gorm:"column:created_at_ms"`
}

func (r *kitTokenRow) token() store.KitToken {
	return store.KitToken{TokenHash: r.TokenHash, GrantID: r.GrantID, Kind: r.Kind, ParentHash: r.ParentHash,
		ExpiresAt: msTime(r.ExpiresAtMS), RotatedAt: msTimePtr(r.RotatedAtMS), CreatedAt: msTime(r.CreatedAtMS)}
}

// CreateKitApp implements store.Kit.
func (s *Store) CreateKitApp(ctx context.Context, a *store.KitApp) error {
	if a == nil || a.Name == "" || a.Connector == "" || a.ClientID == "" || a.ClientSecretHash == "" || len(a.RedirectURIs) == 0 {
		return errors.New("gormstore: create kit app: name, connector, client id, secret hash and redirect URIs are required")
	}
	if a.ID == "" {
		a.ID = uuid.NewString()
	}
	uris, err := json.Marshal(a.RedirectURIs)
	if err != nil {
		return fmt.Errorf("gormstore: create kit app: %w", err)
	}
	var rows []kitAppRow
	if _, err := s.query(ctx, s.w, &rows, `INSERT INTO kit_apps (id, name, connector, client_id, client_secret_hash,
			redirect_uris, after_install_url, created_at_ms, updated_at_ms)
		VALUES (@id, @name, @conn, @cid, @hash, @uris, @after, {now}, {now})
		RETURNING `+kitAppColumns, args{"id": a.ID, "name": a.Name, "conn": a.Connector, "cid": a.ClientID,
		"hash": a.ClientSecretHash, "uris": string(uris), "after": a.AfterInstallURL}); err != nil {
		return fmt.Errorf("gormstore: create kit app: %w", err)
	}
	if len(rows) == 1 {
		a.CreatedAt, a.UpdatedAt = msTime(rows[0].CreatedAtMS), msTime(rows[0].UpdatedAtMS)
	}
	return nil
}

func (s *Store) getKitApp(ctx context.Context, where string, a args) (*store.KitApp, error) {
	var rows []kitAppRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+kitAppColumns+` FROM kit_apps WHERE `+where, a); err != nil {
		return nil, fmt.Errorf("gormstore: get kit app: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: kit app: %w", store.ErrNotFound)
	}
	return rows[0].app()
}

// GetKitApp implements store.Kit.
func (s *Store) GetKitApp(ctx context.Context, id string) (*store.KitApp, error) {
	return s.getKitApp(ctx, `id = @id`, args{"id": id})
}

// GetKitAppByClientID implements store.Kit.
func (s *Store) GetKitAppByClientID(ctx context.Context, clientID string) (*store.KitApp, error) {
	return s.getKitApp(ctx, `client_id = @cid`, args{"cid": clientID})
}

// ListKitApps implements store.Kit.
func (s *Store) ListKitApps(ctx context.Context) ([]store.KitApp, error) {
	var rows []kitAppRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+kitAppColumns+` FROM kit_apps ORDER BY created_at_ms, id`, nil); err != nil {
		return nil, fmt.Errorf("gormstore: list kit apps: %w", err)
	}
	out := make([]store.KitApp, 0, len(rows))
	for i := range rows {
		a, err := rows[i].app()
		if err != nil {
			return nil, err
		}
		out = append(out, *a)
	}
	return out, nil
}

// SetKitAppSecret implements store.Kit.
func (s *Store) SetKitAppSecret(ctx context.Context, id, secretHash string) error {
	if secretHash == "" {
		return errors.New("gormstore: set kit app secret: empty hash")
	}
	n, err := s.exec(ctx, s.w, `UPDATE kit_apps SET client_secret_hash = @hash, updated_at_ms = {now} WHERE id = @id`,
		args{"id": id, "hash": secretHash})
	if err != nil {
		return fmt.Errorf("gormstore: set kit app secret: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("gormstore: kit app: %w", store.ErrNotFound)
	}
	return nil
}

// DeleteKitApp implements store.Kit. The children go explicitly first
// rather than trusting ON DELETE CASCADE alone, so a database whose
// foreign keys are off still ends clean.
func (s *Store) DeleteKitApp(ctx context.Context, id string) ([]string, error) {
	var n int64
	var users []string
	err := s.w.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		a := args{"id": id}
		var rows []struct {
			UserID string `gorm:"column:user_id"`
		}
		if _, err := s.query(ctx, tx, &rows, `SELECT DISTINCT user_id FROM kit_grants WHERE app_id = @id AND revoked_at_ms IS NULL
			ORDER BY user_id`, a); err != nil {
			return err
		}
		users = users[:0]
		for _, r := range rows {
			users = append(users, r.UserID)
		}
		for _, q := range []string{
			`DELETE FROM kit_tokens WHERE grant_id IN (SELECT id FROM kit_grants WHERE app_id = @id)`,
			`DELETE FROM kit_codes WHERE app_id = @id`,
			`DELETE FROM kit_grants WHERE app_id = @id`,
		} {
			if _, err := s.exec(ctx, tx, q, a); err != nil {
				return err
			}
		}
		var err error
		n, err = s.exec(ctx, tx, `DELETE FROM kit_apps WHERE id = @id`, a)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("gormstore: delete kit app: %w", err)
	}
	if n == 0 {
		return nil, fmt.Errorf("gormstore: kit app: %w", store.ErrNotFound)
	}
	return users, nil
}

// CreateKitGrant implements store.Kit.
func (s *Store) CreateKitGrant(ctx context.Context, g *store.KitGrant, c *store.KitCode) error {
	if g == nil || c == nil || g.AppID == "" || g.UserID == "" || g.ExpiresAt.IsZero() || c.CodeHash == "" || c.ExpiresAt.IsZero() {
		return errors.New("gormstore: create kit grant: app, user, expiry and code are required")
	}
	if g.ID == "" {
		g.ID = uuid.NewString()
	}
	c.GrantID, c.AppID = g.ID, g.AppID
	err := s.w.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []kitGrantRow
		if _, err := s.query(ctx, tx, &rows, `INSERT INTO kit_grants (id, app_id, user_id, expires_at_ms, created_at_ms, updated_at_ms)
			VALUES (@id, @app, @user, @exp, {now}, {now}) RETURNING `+kitGrantColumns,
			args{"id": g.ID, "app": g.AppID, "user": g.UserID, "exp": g.ExpiresAt.UnixMilli()}); err != nil {
			return err
		}
		if len(rows) == 1 {
			g.CreatedAt = msTime(rows[0].CreatedAtMS)
		}
		_, err := s.exec(ctx, tx, `INSERT INTO kit_codes (code_hash, app_id, grant_id, redirect_uri, expires_at_ms, created_at_ms)
			VALUES (@hash, @app, @grant, @ru, @exp, {now})`,
			args{"hash": c.CodeHash, "app": c.AppID, "grant": c.GrantID, "ru": c.RedirectURI, "exp": c.ExpiresAt.UnixMilli()})
		return err
	})
	if err != nil {
		return fmt.Errorf("gormstore: create kit grant: %w", err)
	}
	return nil
}

// insertKitTokens stores tokens in grantID.
func (s *Store) insertKitTokens(ctx context.Context, tx *gorm.DB, grantID string, tokens []store.KitToken) error {
	for _, t := range tokens {
		if t.TokenHash == "" || (t.Kind != store.KitAccessToken && t.Kind != store.KitRefreshToken) || t.ExpiresAt.IsZero() {
			return errors.New("kit token needs a hash, a kind and an expiry")
		}
		// created_at is the issuer's record of when it answered (a retried
		// rotation repeats it); it decides nothing, so the caller's clock
		// may set it. rotated_at, which decides, is the database's.
		created, a := "{now}", args{"hash": t.TokenHash, "grant": grantID, "kind": t.Kind, "parent": t.ParentHash, "exp": t.ExpiresAt.UnixMilli()}
		if !t.CreatedAt.IsZero() {
			created, a["created"] = "@created", t.CreatedAt.UnixMilli()
		}
		if _, err := s.exec(ctx, tx, `INSERT INTO kit_tokens (token_hash, grant_id, kind, parent_hash, expires_at_ms, created_at_ms)
			VALUES (@hash, @grant, @kind, @parent, @exp, `+created+`)`, a); err != nil {
			return err
		}
	}
	return nil
}

// revokeKitGrantTx revokes a grant inside tx (idempotent).
func (s *Store) revokeKitGrantTx(ctx context.Context, tx *gorm.DB, grantID string) error {
	_, err := s.exec(ctx, tx, `UPDATE kit_grants SET revoked_at_ms = {now}, updated_at_ms = {now}
		WHERE id = @id AND revoked_at_ms IS NULL`, args{"id": grantID})
	return err
}

// errKitRollback aborts a transaction whose outcome is already decided
// (and recorded in the caller's outcome variable).
var errKitRollback = errors.New("gormstore: kit transaction rolled back")

// RedeemKitCode implements store.Kit.
func (s *Store) RedeemKitCode(ctx context.Context, codeHash, appID string, tokens []store.KitToken) (*store.KitCode, *store.KitGrant, error) {
	var code *store.KitCode
	var grant *store.KitGrant
	var outcome error
	err := s.w.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []kitCodeRow
		if _, err := s.query(ctx, tx, &rows, `UPDATE kit_codes SET used_at_ms = {now}
			WHERE code_hash = @hash AND app_id = @app AND used_at_ms IS NULL AND expires_at_ms > {now}
			AND grant_id IN (SELECT id FROM kit_grants WHERE revoked_at_ms IS NULL AND expires_at_ms > {now})
			RETURNING `+kitCodeColumns, args{"hash": codeHash, "app": appID}); err != nil {
			return err
		}
		if len(rows) == 0 {
			// Why not? A used code of this app is a replay: revoke what it
			// issued (RFC 6749 4.1.2), and keep that revocation.
			var seen []kitCodeRow
			if _, err := s.query(ctx, tx, &seen, `SELECT `+kitCodeColumns+` FROM kit_codes WHERE code_hash = @hash AND app_id = @app`,
				args{"hash": codeHash, "app": appID}); err != nil {
				return err
			}
			if len(seen) == 1 && seen[0].UsedAtMS != nil {
				if err := s.revokeKitGrantTx(ctx, tx, seen[0].GrantID); err != nil {
					return err
				}
				outcome = &store.KitReplayError{GrantID: seen[0].GrantID}
				return nil
			}
			outcome = store.ErrNotFound
			return nil
		}
		code = rows[0].code()
		var grows []kitGrantRow
		if _, err := s.query(ctx, tx, &grows, `SELECT `+kitGrantColumns+` FROM kit_grants WHERE id = @id`, args{"id": code.GrantID}); err != nil {
			return err
		}
		if len(grows) != 1 {
			outcome = store.ErrNotFound
			return errKitRollback // keep the code unused; nothing to issue into
		}
		grant = grows[0].grant()
		return s.insertKitTokens(ctx, tx, code.GrantID, tokens)
	})
	if err != nil && !errors.Is(err, errKitRollback) {
		return nil, nil, fmt.Errorf("gormstore: redeem kit code: %w", err)
	}
	if outcome != nil {
		return nil, nil, fmt.Errorf("gormstore: kit code: %w", outcome)
	}
	return code, grant, nil
}

// RotateKitRefresh implements store.Kit.
func (s *Store) RotateKitRefresh(ctx context.Context, oldHash, appID string, grace time.Duration, next []store.KitToken) (*store.KitRotation, error) {
	if grace < 0 {
		return nil, errors.New("gormstore: rotate kit refresh: negative grace")
	}
	var rot *store.KitRotation
	var outcome error
	err := s.w.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		a := args{"hash": oldHash, "app": appID, "grace": grace.Milliseconds()}
		// The one statement that decides who rotates: concurrent callers
		// with the same token serialise on the row; the losers see it
		// rotated and fall through to the retry/reuse rules below.
		var won []kitTokenRow
		if _, err := s.query(ctx, tx, &won, `UPDATE kit_tokens SET rotated_at_ms = {now}
			WHERE token_hash = @hash AND kind = 'refresh' AND rotated_at_ms IS NULL AND expires_at_ms > {now}
			AND grant_id IN (SELECT id FROM kit_grants WHERE app_id = @app AND revoked_at_ms IS NULL AND expires_at_ms > {now})
			RETURNING token_hash, grant_id, kind, parent_hash, expires_at_ms, rotated_at_ms, created_at_ms`, a); err != nil {
			return err
		}
		var grows []kitGrantRow
		if len(won) == 1 {
			if _, err := s.query(ctx, tx, &grows, `SELECT `+kitGrantColumns+` FROM kit_grants WHERE id = @id`, args{"id": won[0].GrantID}); err != nil {
				return err
			}
			if len(grows) != 1 {
				outcome = store.ErrNotFound
				return errKitRollback
			}
			rot = &store.KitRotation{Grant: *grows[0].grant()}
			return s.insertKitTokens(ctx, tx, won[0].GrantID, next)
		}
		// Not rotatable now: unknown, expired, dead grant, another app's -
		// or already rotated (retry or reuse).
		var cur []struct {
			GrantID        string `gorm:"column:grant_id"`
			RotatedAtMS    *int64 `gorm:"column:rotated_at_ms"`
			AppID          string `gorm:"column:app_id"`
			GrantRevokedMS *int64 `gorm:"column:grant_revoked_ms"`
			GrantExpiresMS int64  `gorm:"column:grant_expires_ms"`
			Live           int64  `gorm:"column:live"`
			InGrace        int64  `gorm:"column:in_grace"`
		}
		if _, err := s.query(ctx, tx, &cur, `SELECT t.token_hash, t.grant_id, t.kind, t.parent_hash, t.expires_at_ms, t.rotated_at_ms,
				t.created_at_ms, g.app_id, g.revoked_at_ms AS grant_revoked_ms, g.expires_at_ms AS grant_expires_ms,
				CASE WHEN g.revoked_at_ms IS NULL AND g.expires_at_ms > {now} AND t.expires_at_ms > {now} THEN 1 ELSE 0 END AS live,
				CASE WHEN t.rotated_at_ms IS NOT NULL AND t.rotated_at_ms >= {now} - CAST(@grace AS BIGINT) THEN 1 ELSE 0 END AS in_grace
			FROM kit_tokens t JOIN kit_grants g ON g.id = t.grant_id
			WHERE t.token_hash = @hash AND t.kind = 'refresh'`, a); err != nil {
			return err
		}
		if len(cur) != 1 || cur[0].AppID != appID || cur[0].Live != 1 || cur[0].RotatedAtMS == nil {
			outcome = store.ErrNotFound
			return nil
		}
		c := cur[0]
		if c.InGrace == 1 {
			var succ []kitTokenRow
			if _, err := s.query(ctx, tx, &succ, `SELECT token_hash, grant_id, kind, parent_hash, expires_at_ms, rotated_at_ms, created_at_ms
				FROM kit_tokens WHERE parent_hash = @hash AND kind = 'refresh' AND grant_id = @grant`,
				args{"hash": oldHash, "grant": c.GrantID}); err != nil {
				return err
			}
			if len(succ) == 1 && succ[0].RotatedAtMS == nil {
				var grows []kitGrantRow
				if _, err := s.query(ctx, tx, &grows, `SELECT `+kitGrantColumns+` FROM kit_grants WHERE id = @id`, args{"id": c.GrantID}); err != nil {
					return err
				}
				if len(grows) == 1 {
					rot = &store.KitRotation{Grant: *grows[0].grant(), Retried: true, SuccessorHash: succ[0].TokenHash,
						SuccessorCreatedAt: msTime(succ[0].CreatedAtMS)}
					return nil
				}
			}
		}
		// Reuse of a rotated token: someone else holds the family. Revoke
		// it (committed even though the caller gets an error).
		if err := s.revokeKitGrantTx(ctx, tx, c.GrantID); err != nil {
			return err
		}
		outcome = &store.KitReplayError{GrantID: c.GrantID}
		return nil
	})
	if err != nil && !errors.Is(err, errKitRollback) {
		return nil, fmt.Errorf("gormstore: rotate kit refresh token: %w", err)
	}
	if outcome != nil {
		return nil, fmt.Errorf("gormstore: kit refresh token: %w", outcome)
	}
	return rot, nil
}

// GetKitBearer implements store.Kit: one read through the token's primary
// key, joined to its grant and app.
func (s *Store) GetKitBearer(ctx context.Context, accessHash string) (*store.KitBearer, error) {
	var rows []struct {
		TokenHash   string `gorm:"column:token_hash"`
		GrantID     string `gorm:"column:grant_id"`
		Kind        string `gorm:"column:kind"`
		ParentHash  string `gorm:"column:parent_hash"`
		ExpiresAtMS int64  `gorm:"column:expires_at_ms"`
		RotatedAtMS *int64 `gorm:"column:rotated_at_ms"`
		CreatedAtMS int64  `gorm:"column:created_at_ms"`
		GAppID      string `gorm:"column:g_app_id"`
		GUserID     string `gorm:"column:g_user_id"`
		GExpiresMS  int64  `gorm:"column:g_expires_at_ms"`
		GCreatedMS  int64  `gorm:"column:g_created_at_ms"`
		AName       string `gorm:"column:a_name"`
		AConnector  string `gorm:"column:a_connector"`
		AClientID   string `gorm:"column:a_client_id"`
		ARedirects  string `gorm:"column:a_redirect_uris"`
		AAfter      string `gorm:"column:a_after_install_url"`
		ACreatedMS  int64  `gorm:"column:a_created_at_ms"`
		AUpdatedMS  int64  `gorm:"column:a_updated_at_ms"`
		ASecretHash string `gorm:"column:a_client_secret_hash"`
	}
	if _, err := s.query(ctx, s.r, &rows, `SELECT t.token_hash, t.grant_id, t.kind, t.parent_hash, t.expires_at_ms, t.rotated_at_ms,
			t.created_at_ms, g.app_id AS g_app_id, g.user_id AS g_user_id, g.expires_at_ms AS g_expires_at_ms,
			g.created_at_ms AS g_created_at_ms, a.name AS a_name, a.connector AS a_connector, a.client_id AS a_client_id,
			a.redirect_uris AS a_redirect_uris, a.after_install_url AS a_after_install_url, a.created_at_ms AS a_created_at_ms,
			a.updated_at_ms AS a_updated_at_ms, a.client_secret_hash AS a_client_secret_hash
		FROM kit_tokens t JOIN kit_grants g ON g.id = t.grant_id JOIN kit_apps a ON a.id = g.app_id
		WHERE t.token_hash = @hash AND t.kind = 'access' AND t.expires_at_ms > {now}
		AND g.revoked_at_ms IS NULL AND g.expires_at_ms > {now}`, args{"hash": accessHash}); err != nil {
		return nil, fmt.Errorf("gormstore: kit bearer: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: kit bearer: %w", store.ErrNotFound)
	}
	r := rows[0]
	tr := kitTokenRow{TokenHash: r.TokenHash, GrantID: r.GrantID, Kind: r.Kind, ParentHash: r.ParentHash,
		ExpiresAtMS: r.ExpiresAtMS, RotatedAtMS: r.RotatedAtMS, CreatedAtMS: r.CreatedAtMS}
	ar := kitAppRow{ID: r.GAppID, Name: r.AName, Connector: r.AConnector, ClientID: r.AClientID, ClientSecretHash: r.ASecretHash,
		RedirectURIs: r.ARedirects, AfterInstallURL: r.AAfter, CreatedAtMS: r.ACreatedMS, UpdatedAtMS: r.AUpdatedMS}
	app, err := ar.app()
	if err != nil {
		return nil, err
	}
	return &store.KitBearer{
		Token: tr.token(),
		Grant: store.KitGrant{ID: r.GrantID, AppID: r.GAppID, UserID: r.GUserID, ExpiresAt: msTime(r.GExpiresMS), CreatedAt: msTime(r.GCreatedMS)},
		App:   *app,
	}, nil
}

// RevokeKitToken implements store.Kit.
func (s *Store) RevokeKitToken(ctx context.Context, tokenHash, appID string) (*store.KitGrant, error) {
	var rows []kitGrantRow
	if _, err := s.query(ctx, s.w, &rows, `UPDATE kit_grants SET revoked_at_ms = {now}, updated_at_ms = {now}
		WHERE id IN (SELECT grant_id FROM kit_tokens WHERE token_hash = @hash) AND app_id = @app AND revoked_at_ms IS NULL
		RETURNING `+kitGrantColumns, args{"hash": tokenHash, "app": appID}); err != nil {
		return nil, fmt.Errorf("gormstore: revoke kit token: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: kit token: %w", store.ErrNotFound)
	}
	return rows[0].grant(), nil
}

// RevokeKitGrant implements store.Kit.
func (s *Store) RevokeKitGrant(ctx context.Context, grantID string) error {
	if err := s.revokeKitGrantTx(ctx, s.w, grantID); err != nil {
		return fmt.Errorf("gormstore: revoke kit grant: %w", err)
	}
	return nil
}

// GetKitGrant implements store.Kit.
func (s *Store) GetKitGrant(ctx context.Context, id string) (*store.KitGrant, error) {
	var rows []kitGrantRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+kitGrantColumns+` FROM kit_grants WHERE id = @id`, args{"id": id}); err != nil {
		return nil, fmt.Errorf("gormstore: get kit grant: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: kit grant: %w", store.ErrNotFound)
	}
	return rows[0].grant(), nil
}

// PurgeExpiredKit implements store.Kit. A used code is kept for retention
// so a late replay is still recognised (and still revokes its grant).
func (s *Store) PurgeExpiredKit(ctx context.Context, retention time.Duration) (int64, error) {
	if retention < 0 {
		return 0, errors.New("gormstore: purge kit: retention must not be negative")
	}
	a := args{"ret": retention.Milliseconds()}
	var total int64
	err := s.w.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		for _, q := range []string{
			`DELETE FROM kit_tokens WHERE grant_id IN (SELECT id FROM kit_grants
				WHERE (revoked_at_ms IS NOT NULL AND revoked_at_ms < {now} - CAST(@ret AS BIGINT))
				OR expires_at_ms < {now} - CAST(@ret AS BIGINT))`,
			`DELETE FROM kit_codes WHERE grant_id IN (SELECT id FROM kit_grants
				WHERE (revoked_at_ms IS NOT NULL AND revoked_at_ms < {now} - CAST(@ret AS BIGINT))
				OR expires_at_ms < {now} - CAST(@ret AS BIGINT))`,
			`DELETE FROM kit_grants WHERE (revoked_at_ms IS NOT NULL AND revoked_at_ms < {now} - CAST(@ret AS BIGINT))
				OR expires_at_ms < {now} - CAST(@ret AS BIGINT)`,
			`DELETE FROM kit_codes WHERE expires_at_ms < {now} - CAST(@ret AS BIGINT)`,
			`DELETE FROM kit_tokens WHERE expires_at_ms < {now} - CAST(@ret AS BIGINT)`,
		} {
			n, err := s.exec(ctx, tx, q, a)
			if err != nil {
				return err
			}
			total += n
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("gormstore: purge kit: %w", err)
	}
	return total, nil
}
