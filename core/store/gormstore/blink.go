package gormstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/connectd/connectd/core/store"
)

var _ store.Blink = (*Store)(nil)

// startRetention is how long used or expired start tokens are kept before
// CreateBlinkStart purges them.
const startRetentionMS = 3600 * 1000

type blinkAppRow struct {
	ID                     string `gorm:"column:id"`
	Name                   string `gorm:"column:name"`
	Connector              string `gorm:"column:connector"`
	AuthID                 string `gorm:"column:auth_id"`
	ProxySecretEnv         string `gorm:"column:proxy_secret_env"`
	PreviousProxySecretEnv string `gorm:"column:previous_proxy_secret_env"`
	APIURL                 string `gorm:"column:api_url"`
	APITokenEnv            string `gorm:"column:api_token_env"`
	ShareTokens            bool   `gorm:"column:share_tokens"`
	AddPath                string `gorm:"column:add_path"`
	DeletePath             string `gorm:"column:delete_path"`
	UpdatePath             string `gorm:"column:update_path"`
	UpdateMethod           string `gorm:"column:update_method"`
	CreatedAtMS            int64  `gorm:"column:created_at_ms"`
	UpdatedAtMS            int64  `gorm:"column:updated_at_ms"`
}

const blinkAppColumns = `id, name, connector, auth_id, proxy_secret_env, previous_proxy_secret_env, api_url,
	api_token_env, share_tokens, add_path, delete_path, update_path, update_method, created_at_ms, updated_at_ms`

func (r *blinkAppRow) decode() store.BlinkApp {
	return store.BlinkApp{
		ID: r.ID, Name: r.Name, Connector: r.Connector, AuthID: r.AuthID,
		ProxySecretEnv: r.ProxySecretEnv, PreviousProxySecretEnv: r.PreviousProxySecretEnv,
		APIURL: r.APIURL, APITokenEnv: r.APITokenEnv, ShareTokens: r.ShareTokens,
		API:       store.BlinkAPISettings{AddPath: r.AddPath, DeletePath: r.DeletePath, UpdatePath: r.UpdatePath, UpdateMethod: r.UpdateMethod},
		CreatedAt: msTime(r.CreatedAtMS), UpdatedAt: msTime(r.UpdatedAtMS),
	}
}

// CreateBlinkApp implements store.Blink.
func (s *Store) CreateBlinkApp(ctx context.Context, app *store.BlinkApp) error {
	if app.Name == "" || app.Connector == "" || app.AuthID == "" || app.ProxySecretEnv == "" || app.APIURL == "" || app.APITokenEnv == "" {
		return errors.New("gormstore: blink app needs name, connector, auth id, proxy secret env, api url and api token env")
	}
	id := uuid.NewString()
	var rows []blinkAppRow
	if _, err := s.query(ctx, s.w, &rows, `INSERT INTO blink_apps (`+blinkAppColumns+`) VALUES
		(@id, @name, @conn, @auth, @pse, @ppse, @url, @tok, @share, @add, @del, @upd, @method, {now}, {now})
		RETURNING `+blinkAppColumns, args{
		"id": id, "name": app.Name, "conn": app.Connector, "auth": app.AuthID, "pse": app.ProxySecretEnv,
		"ppse": app.PreviousProxySecretEnv, "url": app.APIURL, "tok": app.APITokenEnv, "share": app.ShareTokens,
		"add": app.API.AddPath, "del": app.API.DeletePath, "upd": app.API.UpdatePath, "method": app.API.UpdateMethod,
	}); err != nil {
		return fmt.Errorf("gormstore: create blink app: %w", err)
	}
	if len(rows) == 1 {
		*app = rows[0].decode()
	}
	return nil
}

func (s *Store) getBlinkApp(ctx context.Context, where string, a args) (*store.BlinkApp, error) {
	var rows []blinkAppRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+blinkAppColumns+` FROM blink_apps WHERE `+where, a); err != nil {
		return nil, fmt.Errorf("gormstore: blink app: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: blink app: %w", store.ErrNotFound)
	}
	app := rows[0].decode()
	return &app, nil
}

// GetBlinkApp implements store.Blink.
func (s *Store) GetBlinkApp(ctx context.Context, id string) (*store.BlinkApp, error) {
	return s.getBlinkApp(ctx, "id = @id", args{"id": id})
}

// GetBlinkAppByName implements store.Blink.
func (s *Store) GetBlinkAppByName(ctx context.Context, name string) (*store.BlinkApp, error) {
	return s.getBlinkApp(ctx, "name = @name", args{"name": name})
}

// ListBlinkApps implements store.Blink.
func (s *Store) ListBlinkApps(ctx context.Context) ([]store.BlinkApp, error) {
	var rows []blinkAppRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+blinkAppColumns+` FROM blink_apps ORDER BY name`, nil); err != nil {
		return nil, fmt.Errorf("gormstore: list blink apps: %w", err)
	}
	out := make([]store.BlinkApp, 0, len(rows))
	for i := range rows {
		out = append(out, rows[i].decode())
	}
	return out, nil
}

// DeleteBlinkApp implements store.Blink: the link check and the delete run
// in one transaction.
func (s *Store) DeleteBlinkApp(ctx context.Context, name string) error {
	err := s.w.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var ids []string
		if _, err := s.query(ctx, tx, &ids, `SELECT id FROM blink_apps WHERE name = @name`, args{"name": name}); err != nil {
			return err
		}
		if len(ids) == 0 {
			return store.ErrNotFound
		}
		var n int64
		if _, err := s.query(ctx, tx, &n, `SELECT COUNT(*) FROM blink_links WHERE app_id = @id`, args{"id": ids[0]}); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: the app still has %d linked accounts", store.ErrConflict, n)
		}
		if _, err := s.exec(ctx, tx, `DELETE FROM blink_starts WHERE app_id = @id`, args{"id": ids[0]}); err != nil {
			return err
		}
		_, err := s.exec(ctx, tx, `DELETE FROM blink_apps WHERE id = @id`, args{"id": ids[0]})
		return err
	})
	if err != nil {
		return fmt.Errorf("gormstore: delete blink app: %w", err)
	}
	return nil
}

// CreateBlinkStart implements store.Blink.
func (s *Store) CreateBlinkStart(ctx context.Context, st *store.BlinkStart) error {
	if st.TokenHash == "" || st.AppID == "" || st.BlinkUserID == "" || st.ExpiresAt.IsZero() {
		return errors.New("gormstore: blink start needs token hash, app, blink user and expiry")
	}
	if _, err := s.exec(ctx, s.w, `DELETE FROM blink_starts WHERE expires_at_ms < {now} - @keep`, args{"keep": startRetentionMS}); err != nil {
		return fmt.Errorf("gormstore: purge blink starts: %w", err)
	}
	if _, err := s.exec(ctx, s.w, `INSERT INTO blink_starts (token_hash, app_id, blink_user_id, auth_id, expires_at_ms, created_at_ms)
		VALUES (@h, @app, @user, @auth, @exp, {now})`, args{
		"h": st.TokenHash, "app": st.AppID, "user": st.BlinkUserID, "auth": st.AuthID, "exp": st.ExpiresAt.UnixMilli(),
	}); err != nil {
		return fmt.Errorf("gormstore: create blink start: %w", err)
	}
	return nil
}

type blinkStartRow struct {
	TokenHash   string `gorm:"column:token_hash"`
	AppID       string `gorm:"column:app_id"`
	BlinkUserID string `gorm:"column:blink_user_id"`
	AuthID      string `gorm:"column:auth_id"`
	ExpiresAtMS int64  `gorm:"column:expires_at_ms"`
}

// ConsumeBlinkStart implements store.Blink: one conditional UPDATE, so of
// concurrent openers exactly one gets the token.
func (s *Store) ConsumeBlinkStart(ctx context.Context, tokenHash string) (*store.BlinkStart, error) {
	var rows []blinkStartRow
	if _, err := s.query(ctx, s.w, &rows, `UPDATE blink_starts SET used_at_ms = {now}
		WHERE token_hash = @h AND used_at_ms IS NULL AND expires_at_ms > {now}
		RETURNING token_hash, app_id, blink_user_id, auth_id, expires_at_ms`, args{"h": tokenHash}); err != nil {
		return nil, fmt.Errorf("gormstore: consume blink start: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: blink start: %w", store.ErrNotFound)
	}
	r := rows[0]
	return &store.BlinkStart{TokenHash: r.TokenHash, AppID: r.AppID, BlinkUserID: r.BlinkUserID, AuthID: r.AuthID, ExpiresAt: msTime(r.ExpiresAtMS)}, nil
}

type blinkLinkRow struct {
	ID                   string  `gorm:"column:id"`
	BlinkLinkedAccountID *string `gorm:"column:blink_linked_account_id"`
	AppID                string  `gorm:"column:app_id"`
	BlinkUserID          string  `gorm:"column:blink_user_id"`
	UserID               string  `gorm:"column:user_id"`
	ExternalAccountID    string  `gorm:"column:external_account_id"`
	State                string  `gorm:"column:state"`
	PushedVersion        int64   `gorm:"column:pushed_version"`
	PushedReauth         bool    `gorm:"column:pushed_reauth"`
	CreatedAtMS          int64   `gorm:"column:created_at_ms"`
	UpdatedAtMS          int64   `gorm:"column:updated_at_ms"`
}

const blinkLinkColumns = `id, blink_linked_account_id, app_id, blink_user_id, user_id, external_account_id, state,
	pushed_version, pushed_reauth, created_at_ms, updated_at_ms`

func (r *blinkLinkRow) decode() store.BlinkLink {
	l := store.BlinkLink{
		ID: r.ID, AppID: r.AppID, BlinkUserID: r.BlinkUserID, UserID: r.UserID,
		ExternalAccountID: r.ExternalAccountID, State: r.State, PushedVersion: r.PushedVersion,
		PushedReauth: r.PushedReauth, CreatedAt: msTime(r.CreatedAtMS), UpdatedAt: msTime(r.UpdatedAtMS),
	}
	if r.BlinkLinkedAccountID != nil {
		l.BlinkLinkedAccountID = *r.BlinkLinkedAccountID
	}
	return l
}

// UpsertBlinkLink implements store.Blink.
func (s *Store) UpsertBlinkLink(ctx context.Context, l *store.BlinkLink) (*store.BlinkLink, error) {
	if l.AppID == "" || l.BlinkUserID == "" || l.UserID == "" || l.ExternalAccountID == "" {
		return nil, errors.New("gormstore: blink link needs app, blink user, user and external account id")
	}
	var out store.BlinkLink
	err := s.w.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		key := args{"app": l.AppID, "bu": l.BlinkUserID, "uid": l.UserID, "ext": l.ExternalAccountID,
			"pending": store.BlinkLinkPending, "deleting": store.BlinkLinkDeleting}
		var rows []blinkLinkRow
		// A deleting link is reset: its Delete job carries Blink's id
		// itself and will not remove a row that is no longer deleting.
		if _, err := s.query(ctx, tx, &rows, `UPDATE blink_links SET
			state = CASE WHEN state = @deleting THEN @pending ELSE state END,
			blink_linked_account_id = CASE WHEN state = @deleting THEN NULL ELSE blink_linked_account_id END,
			pushed_version = CASE WHEN state = @deleting THEN 0 ELSE pushed_version END,
			pushed_reauth = CASE WHEN state = @deleting THEN FALSE ELSE pushed_reauth END,
			external_account_id = @ext, updated_at_ms = {now}
			WHERE app_id = @app AND blink_user_id = @bu AND user_id = @uid
			RETURNING `+blinkLinkColumns, key); err != nil {
			return err
		}
		if len(rows) == 0 {
			key["id"] = uuid.NewString()
			if _, err := s.query(ctx, tx, &rows, `INSERT INTO blink_links (id, app_id, blink_user_id, user_id, external_account_id, state, created_at_ms, updated_at_ms)
				VALUES (@id, @app, @bu, @uid, @ext, @pending, {now}, {now}) RETURNING `+blinkLinkColumns, key); err != nil {
				return err
			}
		}
		if len(rows) == 0 {
			return errors.New("no row returned")
		}
		out = rows[0].decode()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gormstore: upsert blink link: %w", err)
	}
	return &out, nil
}

func (s *Store) oneBlinkLink(ctx context.Context, where string, a args) (*store.BlinkLink, error) {
	var rows []blinkLinkRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+blinkLinkColumns+` FROM blink_links WHERE `+where, a); err != nil {
		return nil, fmt.Errorf("gormstore: blink link: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: blink link: %w", store.ErrNotFound)
	}
	l := rows[0].decode()
	return &l, nil
}

// GetBlinkLink implements store.Blink.
func (s *Store) GetBlinkLink(ctx context.Context, id string) (*store.BlinkLink, error) {
	return s.oneBlinkLink(ctx, "id = @id", args{"id": id})
}

// FindBlinkLink implements store.Blink.
func (s *Store) FindBlinkLink(ctx context.Context, appID, blinkLinkedAccountID string) (*store.BlinkLink, error) {
	if blinkLinkedAccountID == "" {
		return nil, fmt.Errorf("gormstore: blink link: %w", store.ErrNotFound)
	}
	return s.oneBlinkLink(ctx, "app_id = @app AND blink_linked_account_id = @bid", args{"app": appID, "bid": blinkLinkedAccountID})
}

// SetBlinkLinkLinked implements store.Blink.
func (s *Store) SetBlinkLinkLinked(ctx context.Context, id, blinkID string, version int64, reauth bool) error {
	n, err := s.exec(ctx, s.w, `UPDATE blink_links SET blink_linked_account_id = @bid, state = @linked,
		pushed_version = @v, pushed_reauth = @r, updated_at_ms = {now}
		WHERE id = @id AND state IN (@pending, @linked)`, args{
		"id": id, "bid": blinkID, "v": version, "r": reauth, "linked": store.BlinkLinkLinked, "pending": store.BlinkLinkPending,
	})
	if err != nil {
		return fmt.Errorf("gormstore: set blink link linked: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("gormstore: set blink link linked: %w", store.ErrConflict)
	}
	return nil
}

// SetBlinkLinkPushed implements store.Blink.
func (s *Store) SetBlinkLinkPushed(ctx context.Context, id string, version int64, reauth bool) error {
	n, err := s.exec(ctx, s.w, `UPDATE blink_links SET pushed_version = @v, pushed_reauth = @r, updated_at_ms = {now}
		WHERE id = @id AND state = @linked`, args{"id": id, "v": version, "r": reauth, "linked": store.BlinkLinkLinked})
	if err != nil {
		return fmt.Errorf("gormstore: set blink link pushed: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("gormstore: set blink link pushed: %w", store.ErrConflict)
	}
	return nil
}

// MarkBlinkLinkDeleting implements store.Blink.
func (s *Store) MarkBlinkLinkDeleting(ctx context.Context, id string) error {
	n, err := s.exec(ctx, s.w, `UPDATE blink_links SET state = @deleting, updated_at_ms = {now}
		WHERE id = @id AND state IN (@pending, @linked)`, args{
		"id": id, "deleting": store.BlinkLinkDeleting, "pending": store.BlinkLinkPending, "linked": store.BlinkLinkLinked,
	})
	if err != nil {
		return fmt.Errorf("gormstore: mark blink link deleting: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("gormstore: mark blink link deleting: %w", store.ErrNotFound)
	}
	return nil
}

// DeleteBlinkLink implements store.Blink.
func (s *Store) DeleteBlinkLink(ctx context.Context, id, state string) (bool, error) {
	n, err := s.exec(ctx, s.w, `DELETE FROM blink_links WHERE id = @id AND state = @state`, args{"id": id, "state": state})
	if err != nil {
		return false, fmt.Errorf("gormstore: delete blink link: %w", err)
	}
	return n > 0, nil
}

// ListBlinkLinks implements store.Blink.
func (s *Store) ListBlinkLinks(ctx context.Context, q store.BlinkLinkQuery) ([]store.BlinkLink, error) {
	if q.Limit <= 0 || q.Limit > 1000 {
		q.Limit = 500
	}
	where := "id > @after"
	a := args{"after": q.AfterID, "limit": q.Limit}
	if q.AppID != "" {
		where += " AND app_id = @app"
		a["app"] = q.AppID
	}
	if q.UserID != "" {
		where += " AND user_id = @uid"
		a["uid"] = q.UserID
	}
	if q.State != "" {
		where += " AND state = @state"
		a["state"] = q.State
	}
	var rows []blinkLinkRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+blinkLinkColumns+` FROM blink_links WHERE `+where+` ORDER BY id LIMIT @limit`, a); err != nil {
		return nil, fmt.Errorf("gormstore: list blink links: %w", err)
	}
	out := make([]store.BlinkLink, 0, len(rows))
	for i := range rows {
		out = append(out, rows[i].decode())
	}
	return out, nil
}

// CountBlinkLinks implements store.Blink.
func (s *Store) CountBlinkLinks(ctx context.Context) (map[string]map[string]int, error) {
	type countRow struct {
		AppID string `gorm:"column:app_id"`
		State string `gorm:"column:state"`
		N     int    `gorm:"column:n"`
	}
	var rows []countRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT app_id, state, COUNT(*) AS n FROM blink_links GROUP BY app_id, state`, nil); err != nil {
		return nil, fmt.Errorf("gormstore: count blink links: %w", err)
	}
	out := map[string]map[string]int{}
	for _, r := range rows {
		if out[r.AppID] == nil {
			out[r.AppID] = map[string]int{}
		}
		out[r.AppID][r.State] = r.N
	}
	return out, nil
}
