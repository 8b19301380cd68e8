package gormstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/connectd/connectd/core/store"
)

// Logical table names of the managed block (associated data; never change).
const (
	adManagedValues = "managed_values"
	adManagedApps   = "managed_oauth_apps"
)

var _ store.Managed = (*Store)(nil)

// managedValueAD binds a managed value to its account, platform, scope,
// user and field (each part path-escaped so no two keys share a binding).
// A value copied to another account, user or field does not open. The
// row id is not part of it: upserts keep whichever row holds the key.
func managedValueAD(k store.ManagedKey, field string) []byte {
	e := url.PathEscape
	return []byte(adManagedValues + "/" + e(k.HostKind) + "/" + e(k.AccountID) + "/" + e(k.Platform) + "/" +
		e(k.Scope) + "/" + e(k.UserID) + "/" + e(field) + "/value")
}

func checkManagedKey(k store.ManagedKey) error {
	if k.HostKind == "" || k.AccountID == "" || k.Platform == "" {
		return errors.New("gormstore: managed key needs host kind, account and platform")
	}
	switch k.Scope {
	case store.ManagedScopeAccount:
		if k.UserID != "" {
			return errors.New("gormstore: account-scope managed key must not name a user")
		}
	case store.ManagedScopeUser:
		if k.UserID == "" {
			return errors.New("gormstore: user-scope managed key needs a user")
		}
	default:
		return fmt.Errorf("gormstore: unknown managed scope %q", k.Scope)
	}
	return nil
}

type managedValueRow struct {
	HostKind      string `gorm:"column:host_kind"`
	HostAccountID string `gorm:"column:host_account_id"`
	Platform      string `gorm:"column:platform"`
	Scope         string `gorm:"column:scope"`
	HostUserID    string `gorm:"column:host_user_id"`
	HostUserName  string `gorm:"column:host_user_name"`
	FieldConst    string `gorm:"column:field_const"`
	Value         []byte `gorm:"column:value"`
	SetBy         string `gorm:"column:set_by"`
	UpdatedAtMS   int64  `gorm:"column:updated_at_ms"`
}

const managedValueColumns = `host_kind, host_account_id, platform, scope, host_user_id, host_user_name, field_const, value, set_by, updated_at_ms`

// ApplyManagedChange implements store.Managed.
func (s *Store) ApplyManagedChange(ctx context.Context, c store.ManagedChange) error {
	if err := checkManagedKey(c.Key); err != nil {
		return err
	}
	k := c.Key
	sealed := make(map[string][]byte, len(c.Set))
	for f, v := range c.Set {
		if f == "" || v == "" {
			return errors.New("gormstore: managed value needs a field name and a value (clear it instead)")
		}
		ct, err := s.sealer.Seal([]byte(v), managedValueAD(k, f))
		if err != nil {
			return fmt.Errorf("gormstore: seal managed value: %w", err)
		}
		sealed[f] = ct
	}
	err := s.w.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		base := args{"hk": k.HostKind, "ha": k.AccountID, "p": k.Platform, "sc": k.Scope, "hu": k.UserID}
		for f, ct := range sealed {
			a := args{"id": uuid.NewString(), "hn": c.UserName, "f": f, "v": ct, "by": c.SetBy}
			for kk, vv := range base {
				a[kk] = vv
			}
			if _, err := s.exec(ctx, tx, `INSERT INTO managed_values (id, host_kind, host_account_id, platform, scope, host_user_id,
					host_user_name, field_const, value, set_by, created_at_ms, updated_at_ms)
				VALUES (@id, @hk, @ha, @p, @sc, @hu, @hn, @f, @v, @by, {now}, {now})
				ON CONFLICT (host_kind, host_account_id, platform, scope, host_user_id, field_const) DO UPDATE SET
					value = excluded.value, host_user_name = excluded.host_user_name, set_by = excluded.set_by,
					updated_at_ms = excluded.updated_at_ms`, a); err != nil {
				return err
			}
		}
		for _, f := range c.Clear {
			a := args{"f": f}
			for kk, vv := range base {
				a[kk] = vv
			}
			if _, err := s.exec(ctx, tx, `DELETE FROM managed_values WHERE host_kind = @hk AND host_account_id = @ha
				AND platform = @p AND scope = @sc AND host_user_id = @hu AND field_const = @f`, a); err != nil {
				return err
			}
		}
		if k.Scope == store.ManagedScopeUser && c.UserName != "" {
			// Keep the display name of every field of this user current.
			a := args{"hn": c.UserName}
			for kk, vv := range base {
				a[kk] = vv
			}
			if _, err := s.exec(ctx, tx, `UPDATE managed_values SET host_user_name = @hn WHERE host_kind = @hk
				AND host_account_id = @ha AND platform = @p AND scope = @sc AND host_user_id = @hu`, a); err != nil {
				return err
			}
		}
		return s.insertAudit(ctx, tx, c.Audit)
	})
	if err != nil {
		return fmt.Errorf("gormstore: apply managed change: %w", s.translate(err))
	}
	return nil
}

func (s *Store) decodeManagedValues(rows []managedValueRow) ([]store.ManagedValue, error) {
	out := make([]store.ManagedValue, 0, len(rows))
	for _, r := range rows {
		k := store.ManagedKey{HostKind: r.HostKind, AccountID: r.HostAccountID, Platform: r.Platform, Scope: r.Scope, UserID: r.HostUserID}
		pt, err := s.sealer.Open(r.Value, managedValueAD(k, r.FieldConst))
		if err != nil {
			return nil, fmt.Errorf("gormstore: open managed value %s: %w: %w", r.FieldConst, store.ErrDecrypt, err)
		}
		out = append(out, store.ManagedValue{Key: k, UserName: r.HostUserName, Field: r.FieldConst, Value: string(pt), SetBy: r.SetBy, UpdatedAt: msTime(r.UpdatedAtMS)})
	}
	return out, nil
}

// ManagedValuesFor implements store.Managed.
func (s *Store) ManagedValuesFor(ctx context.Context, hostKind, accountID, platform, userID string) ([]store.ManagedValue, error) {
	var rows []managedValueRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+managedValueColumns+` FROM managed_values
		WHERE host_kind = @hk AND host_account_id = @ha AND platform = @p
		AND ((scope = 'account' AND host_user_id = '') OR (scope = 'user' AND host_user_id = @hu AND @hu <> ''))
		ORDER BY scope, field_const`, args{"hk": hostKind, "ha": accountID, "p": platform, "hu": userID}); err != nil {
		return nil, fmt.Errorf("gormstore: managed values: %w", err)
	}
	return s.decodeManagedValues(rows)
}

// ListManagedValues implements store.Managed.
func (s *Store) ListManagedValues(ctx context.Context, hostKind, accountID, platform string) ([]store.ManagedValue, error) {
	var rows []managedValueRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+managedValueColumns+` FROM managed_values
		WHERE host_kind = @hk AND host_account_id = @ha AND platform = @p
		ORDER BY scope, host_user_id, field_const`, args{"hk": hostKind, "ha": accountID, "p": platform}); err != nil {
		return nil, fmt.Errorf("gormstore: list managed values: %w", err)
	}
	return s.decodeManagedValues(rows)
}

// MarkManagedLoginFailure implements store.Managed.
func (s *Store) MarkManagedLoginFailure(ctx context.Context, h store.HostIdentity, platform string) error {
	_, err := s.exec(ctx, s.w, `INSERT INTO managed_login_failures (host_kind, host_account_id, host_user_id, platform, failed_at_ms)
		VALUES (@hk, @ha, @hu, @p, {now})
		ON CONFLICT (host_kind, host_account_id, host_user_id, platform) DO UPDATE SET failed_at_ms = excluded.failed_at_ms`,
		args{"hk": h.Kind, "ha": h.AccountID, "hu": h.UserID, "p": platform})
	if err != nil {
		return fmt.Errorf("gormstore: mark managed login failure: %w", err)
	}
	return nil
}

// ClearManagedLoginFailure implements store.Managed.
func (s *Store) ClearManagedLoginFailure(ctx context.Context, h store.HostIdentity, platform string) error {
	_, err := s.exec(ctx, s.w, `DELETE FROM managed_login_failures WHERE host_kind = @hk AND host_account_id = @ha
		AND host_user_id = @hu AND platform = @p`, args{"hk": h.Kind, "ha": h.AccountID, "hu": h.UserID, "p": platform})
	if err != nil {
		return fmt.Errorf("gormstore: clear managed login failure: %w", err)
	}
	return nil
}

// HasManagedLoginFailure implements store.Managed.
func (s *Store) HasManagedLoginFailure(ctx context.Context, h store.HostIdentity, platform string) (bool, error) {
	var n int64
	if _, err := s.query(ctx, s.r, &n, `SELECT COUNT(*) FROM managed_login_failures WHERE host_kind = @hk
		AND host_account_id = @ha AND host_user_id = @hu AND platform = @p`,
		args{"hk": h.Kind, "ha": h.AccountID, "hu": h.UserID, "p": platform}); err != nil {
		return false, fmt.Errorf("gormstore: read managed login failure: %w", err)
	}
	return n > 0, nil
}

const appColumns = `id, host_kind, host_account_id, platform, state, client_id, client_secret, token_url, auth_url,
	redirect_uri, scopes, hostname, expires_at_ms, promoted_by, set_by, created_at_ms, updated_at_ms`

type appRow struct {
	ID            string  `gorm:"column:id"`
	HostKind      string  `gorm:"column:host_kind"`
	HostAccountID string  `gorm:"column:host_account_id"`
	Platform      string  `gorm:"column:platform"`
	State         string  `gorm:"column:state"`
	ClientID      string  `gorm:"column:client_id"`
	ClientSecret  []byte  `gorm:"column:client_secret"`
	TokenURL      string  `gorm:"column:token_url"`
	AuthURL       string  `gorm:"column:auth_url"`
	RedirectURI   string  `gorm:"column:redirect_uri"`
	Scopes        *string `gorm:"column:scopes"`
	Hostname      string  `gorm:"column:hostname"`
	ExpiresAtMS   *int64  `gorm:"column:expires_at_ms"`
	PromotedBy    string  `gorm:"column:promoted_by"`
	SetBy         string  `gorm:"column:set_by"`
	CreatedAtMS   int64   `gorm:"column:created_at_ms"`
	UpdatedAtMS   int64   `gorm:"column:updated_at_ms"`
}

func (s *Store) decodeApp(r *appRow) (*store.ManagedOAuthApp, error) {
	a := &store.ManagedOAuthApp{
		ID: r.ID, HostKind: r.HostKind, AccountID: r.HostAccountID, Platform: r.Platform, State: r.State,
		ClientID: r.ClientID, TokenURL: r.TokenURL, AuthURL: r.AuthURL, RedirectURI: r.RedirectURI,
		Hostname: r.Hostname, ExpiresAt: msTimePtr(r.ExpiresAtMS), PromotedBy: r.PromotedBy, SetBy: r.SetBy,
		CreatedAt: msTime(r.CreatedAtMS), UpdatedAt: msTime(r.UpdatedAtMS),
	}
	if r.Scopes != nil && *r.Scopes != "" {
		if err := json.Unmarshal([]byte(*r.Scopes), &a.Scopes); err != nil {
			return nil, fmt.Errorf("gormstore: decode scopes of app %s: %w", r.ID, err)
		}
	}
	var err error
	if a.ClientSecret, err = s.openString(adManagedApps, r.ID, "client_secret", r.ClientSecret); err != nil {
		return nil, err
	}
	return a, nil
}

// PutPendingOAuthApp implements store.Managed.
func (s *Store) PutPendingOAuthApp(ctx context.Context, app *store.ManagedOAuthApp, audit *store.AuditEvent) error {
	if app == nil || app.HostKind == "" || app.AccountID == "" || app.Platform == "" || app.ClientID == "" {
		return errors.New("gormstore: pending OAuth app needs host kind, account, platform and client id")
	}
	var scopes any
	if len(app.Scopes) > 0 {
		b, err := json.Marshal(app.Scopes)
		if err != nil {
			return fmt.Errorf("gormstore: encode scopes: %w", err)
		}
		scopes = string(b)
	}
	lock := ""
	if s.dialect == DialectPostgres {
		lock = " FOR UPDATE"
	}
	err := s.w.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var ids []string
		if _, err := s.query(ctx, tx, &ids, `SELECT id FROM managed_oauth_apps WHERE host_kind = @hk AND host_account_id = @ha
			AND platform = @p AND slot = 'pending'`+lock, args{"hk": app.HostKind, "ha": app.AccountID, "p": app.Platform}); err != nil {
			return err
		}
		id := uuid.NewString()
		if len(ids) == 1 {
			id = ids[0] // replace in place: the secret is sealed to this row
		}
		secret, err := s.sealString(adManagedApps, id, "client_secret", app.ClientSecret)
		if err != nil {
			return err
		}
		a := args{
			"id": id, "hk": app.HostKind, "ha": app.AccountID, "p": app.Platform, "cid": app.ClientID, "cs": blob(secret),
			"tu": app.TokenURL, "au": app.AuthURL, "ru": app.RedirectURI, "sc": scopes, "hn": app.Hostname,
			"exp": msPtr(app.ExpiresAt), "by": app.SetBy,
		}
		if len(ids) == 1 {
			_, err = s.exec(ctx, tx, `UPDATE managed_oauth_apps SET client_id = @cid, client_secret = @cs, token_url = @tu,
				auth_url = @au, redirect_uri = @ru, scopes = @sc, hostname = @hn, expires_at_ms = @exp, set_by = @by,
				updated_at_ms = {now} WHERE id = @id`, a)
		} else {
			_, err = s.exec(ctx, tx, `INSERT INTO managed_oauth_apps (id, host_kind, host_account_id, platform, state, slot,
					client_id, client_secret, token_url, auth_url, redirect_uri, scopes, hostname, expires_at_ms, set_by,
					created_at_ms, updated_at_ms)
				VALUES (@id, @hk, @ha, @p, 'pending', 'pending', @cid, @cs, @tu, @au, @ru, @sc, @hn, @exp, @by, {now}, {now})`, a)
		}
		if err != nil {
			return err
		}
		app.ID, app.State = id, store.OAuthAppPending
		return s.insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("gormstore: put pending oauth app: %w", s.translate(err))
	}
	return nil
}

// GetManagedOAuthApp implements store.Managed.
func (s *Store) GetManagedOAuthApp(ctx context.Context, id string) (*store.ManagedOAuthApp, error) {
	var rows []appRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+appColumns+` FROM managed_oauth_apps WHERE id = @id`, args{"id": id}); err != nil {
		return nil, fmt.Errorf("gormstore: get oauth app: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: oauth app: %w", store.ErrNotFound)
	}
	return s.decodeApp(&rows[0])
}

// CurrentOAuthApps implements store.Managed.
func (s *Store) CurrentOAuthApps(ctx context.Context, hostKind, accountID, platform string) (pending, active *store.ManagedOAuthApp, err error) {
	var rows []appRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+appColumns+` FROM managed_oauth_apps
		WHERE host_kind = @hk AND host_account_id = @ha AND platform = @p
		AND (state = 'active' OR (state = 'pending' AND (expires_at_ms IS NULL OR expires_at_ms > {now})))`,
		args{"hk": hostKind, "ha": accountID, "p": platform}); err != nil {
		return nil, nil, fmt.Errorf("gormstore: current oauth apps: %w", err)
	}
	for i := range rows {
		a, err := s.decodeApp(&rows[i])
		if err != nil {
			return nil, nil, err
		}
		if a.State == store.OAuthAppPending {
			pending = a
		} else {
			active = a
		}
	}
	return pending, active, nil
}

// PromoteOAuthApp implements store.Managed.
func (s *Store) PromoteOAuthApp(ctx context.Context, id, promotedBy string) error {
	lock := ""
	if s.dialect == DialectPostgres {
		lock = " FOR UPDATE"
	}
	err := s.w.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []appRow
		if _, err := s.query(ctx, tx, &rows, `SELECT `+appColumns+` FROM managed_oauth_apps WHERE id = @id
			AND state = 'pending' AND (expires_at_ms IS NULL OR expires_at_ms > {now})`+lock, args{"id": id}); err != nil {
			return err
		}
		if len(rows) == 0 {
			return store.ErrNotFound
		}
		r := rows[0]
		a := args{"hk": r.HostKind, "ha": r.HostAccountID, "p": r.Platform, "id": id, "by": promotedBy}
		if _, err := s.exec(ctx, tx, `UPDATE managed_oauth_apps SET state = 'retired', slot = id, updated_at_ms = {now}
			WHERE host_kind = @hk AND host_account_id = @ha AND platform = @p AND slot = 'active'`, a); err != nil {
			return err
		}
		n, err := s.exec(ctx, tx, `UPDATE managed_oauth_apps SET state = 'active', slot = 'active', expires_at_ms = NULL,
			promoted_by = @by, updated_at_ms = {now} WHERE id = @id AND state = 'pending'`, a)
		if err != nil {
			return err
		}
		if n != 1 {
			return store.ErrConflict
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("gormstore: promote oauth app: %w", s.translate(err))
	}
	return nil
}

// DeleteOAuthApps implements store.Managed.
func (s *Store) DeleteOAuthApps(ctx context.Context, hostKind, accountID, platform string, states []string, audit *store.AuditEvent) (int, error) {
	if len(states) == 0 {
		return 0, nil
	}
	var n int64
	err := s.w.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		n, err = s.exec(ctx, tx, `DELETE FROM managed_oauth_apps WHERE host_kind = @hk AND host_account_id = @ha
			AND platform = @p AND state IN @st`, args{"hk": hostKind, "ha": accountID, "p": platform, "st": states})
		if err != nil {
			return err
		}
		return s.insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return 0, fmt.Errorf("gormstore: delete oauth apps: %w", s.translate(err))
	}
	return int(n), nil
}

// insertAudit appends e inside tx (nil: nothing).
func (s *Store) insertAudit(ctx context.Context, tx *gorm.DB, e *store.AuditEvent) error {
	if e == nil {
		return nil
	}
	if e.Action == "" || e.Actor.Kind == "" || e.Actor.AccountID == "" {
		return errors.New("gormstore: audit event needs an action and an actor account")
	}
	if e.ID == "" {
		e.ID = uuid.NewString()
	}
	var fields any
	if len(e.Fields) > 0 {
		b, err := json.Marshal(e.Fields)
		if err != nil {
			return fmt.Errorf("gormstore: encode audit fields: %w", err)
		}
		fields = string(b)
	}
	var at []int64
	if _, err := s.query(ctx, tx, &at, `INSERT INTO audit_events (id, at_ms, actor_kind, actor_account, actor_user, action,
			platform, target, fields, request_id)
		VALUES (@id, {now}, @ak, @aa, @au, @act, @p, @t, @f, @rid) RETURNING at_ms`, args{
		"id": e.ID, "ak": e.Actor.Kind, "aa": e.Actor.AccountID, "au": e.Actor.UserID, "act": e.Action,
		"p": e.Platform, "t": e.Target, "f": fields, "rid": e.RequestID,
	}); err != nil {
		return err
	}
	if len(at) == 1 {
		e.At = msTime(at[0])
	}
	return nil
}

// AppendAudit implements store.Managed.
func (s *Store) AppendAudit(ctx context.Context, e *store.AuditEvent) error {
	if err := s.insertAudit(ctx, s.w, e); err != nil {
		return fmt.Errorf("gormstore: append audit: %w", s.translate(err))
	}
	return nil
}

type auditRow struct {
	ID           string  `gorm:"column:id"`
	AtMS         int64   `gorm:"column:at_ms"`
	ActorKind    string  `gorm:"column:actor_kind"`
	ActorAccount string  `gorm:"column:actor_account"`
	ActorUser    string  `gorm:"column:actor_user"`
	Action       string  `gorm:"column:action"`
	Platform     string  `gorm:"column:platform"`
	Target       string  `gorm:"column:target"`
	Fields       *string `gorm:"column:fields"`
	RequestID    string  `gorm:"column:request_id"`
}

// ListAudit implements store.Managed.
func (s *Store) ListAudit(ctx context.Context, q store.AuditQuery) ([]store.AuditEvent, error) {
	limit := q.Limit
	if limit <= 0 || limit > 500 {
		limit = 100
	}
	cond := `actor_kind = @ak AND actor_account = @aa`
	a := args{"ak": q.HostKind, "aa": q.AccountID, "lim": limit}
	if q.Platform != "" {
		cond += ` AND platform = @p`
		a["p"] = q.Platform
	}
	if q.Before != nil {
		cond += ` AND at_ms < @before`
		a["before"] = q.Before.UnixMilli()
	}
	var rows []auditRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT id, at_ms, actor_kind, actor_account, actor_user, action, platform, target,
		fields, request_id FROM audit_events WHERE `+cond+` ORDER BY at_ms DESC, id DESC LIMIT @lim`, a); err != nil {
		return nil, fmt.Errorf("gormstore: list audit: %w", err)
	}
	out := make([]store.AuditEvent, 0, len(rows))
	for _, r := range rows {
		e := store.AuditEvent{
			ID: r.ID, At: msTime(r.AtMS), Actor: store.HostIdentity{Kind: r.ActorKind, AccountID: r.ActorAccount, UserID: r.ActorUser},
			Action: r.Action, Platform: r.Platform, Target: r.Target, RequestID: r.RequestID,
		}
		if r.Fields != nil && *r.Fields != "" {
			if err := json.Unmarshal([]byte(*r.Fields), &e.Fields); err != nil {
				return nil, fmt.Errorf("gormstore: decode audit fields: %w", err)
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// PurgeAudit implements store.Managed.
func (s *Store) PurgeAudit(ctx context.Context, before time.Time) (int64, error) {
	n, err := s.exec(ctx, s.w, `DELETE FROM audit_events WHERE at_ms < @before`, args{"before": before.UnixMilli()})
	if err != nil {
		return 0, fmt.Errorf("gormstore: purge audit: %w", err)
	}
	return n, nil
}
