package gormstore

import (
	"context"
	"fmt"
	"time"

	"github.com/connectd/connectd/core/store"
)

var _ store.OperatorUsers = (*Store)(nil)

// summaryColumns select whether each secret is present, never the secret.
const summaryColumns = `id, platform, crm_user_id, host_kind, host_account_id, host_user_id,
	hostname, appconnect_id, display_name, status, token_expiry_ms, oauth_app_ref,
	CASE WHEN access_token IS NULL THEN 0 ELSE 1 END AS has_access,
	CASE WHEN refresh_token IS NULL THEN 0 ELSE 1 END AS has_refresh,
	CASE WHEN api_key IS NULL THEN 0 ELSE 1 END AS has_api_key,
	CASE WHEN secrets IS NULL THEN 0 ELSE 1 END AS has_secrets,
	created_at_ms, updated_at_ms`

type summaryRow struct {
	ID            string `gorm:"column:id"`
	Platform      string `gorm:"column:platform"`
	CRMUserID     string `gorm:"column:crm_user_id"`
	HostKind      string `gorm:"column:host_kind"`
	HostAccountID string `gorm:"column:host_account_id"`
	HostUserID    string `gorm:"column:host_user_id"`
	Hostname      string `gorm:"column:hostname"`
	AppConnectID  string `gorm:"column:appconnect_id"`
	DisplayName   string `gorm:"column:display_name"`
	Status        string `gorm:"column:status"`
	TokenExpiryMS *int64 `gorm:"column:token_expiry_ms"`
	OAuthAppRef   string `gorm:"column:oauth_app_ref"`
	HasAccess     int64  `gorm:"column:has_access"`
	HasRefresh    int64  `gorm:"column:has_refresh"`
	HasAPIKey     int64  `gorm:"column:has_api_key"`
	HasSecrets    int64  `gorm:"column:has_secrets"`
	CreatedAtMS   int64  `gorm:"column:created_at_ms"`
	UpdatedAtMS   int64  `gorm:"column:updated_at_ms"`
}

func (r *summaryRow) summary() store.UserSummary {
	return store.UserSummary{
		ID: r.ID, Platform: r.Platform, CRMUserID: r.CRMUserID,
		Host:     store.HostIdentity{Kind: r.HostKind, AccountID: r.HostAccountID, UserID: r.HostUserID},
		Hostname: r.Hostname, AppConnectID: r.AppConnectID, DisplayName: r.DisplayName,
		Status: store.UserStatus(r.Status), TokenExpiry: msTimePtr(r.TokenExpiryMS), OAuthAppRef: r.OAuthAppRef,
		HasAccessToken: r.HasAccess == 1, HasRefreshToken: r.HasRefresh == 1, HasAPIKey: r.HasAPIKey == 1, HasSecrets: r.HasSecrets == 1,
		CreatedAt: msTime(r.CreatedAtMS), UpdatedAt: msTime(r.UpdatedAtMS),
	}
}

// ListUsers implements store.OperatorUsers: a page of logins by id.
func (s *Store) ListUsers(ctx context.Context, f store.UserFilter) ([]store.UserSummary, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	var rows []summaryRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+summaryColumns+` FROM users
		WHERE (@p = '' OR platform = @p) AND (@hk = '' OR host_kind = @hk) AND (@ha = '' OR host_account_id = @ha)
		AND (@st = '' OR status = @st) AND id > @after ORDER BY id LIMIT @n`,
		args{"p": f.Platform, "hk": f.HostKind, "ha": f.AccountID, "st": f.Status, "after": f.After, "n": limit}); err != nil {
		return nil, fmt.Errorf("gormstore: list users: %w", err)
	}
	out := make([]store.UserSummary, 0, len(rows))
	for i := range rows {
		out = append(out, rows[i].summary())
	}
	return out, nil
}

// UserSummary implements store.OperatorUsers.
func (s *Store) UserSummary(ctx context.Context, id string) (*store.UserSummary, error) {
	var rows []summaryRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+summaryColumns+` FROM users WHERE id = @id`, args{"id": id}); err != nil {
		return nil, fmt.Errorf("gormstore: user summary: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: user %s: %w", id, store.ErrNotFound)
	}
	u := rows[0].summary()
	return &u, nil
}

// ListUserSessions implements store.OperatorUsers.
func (s *Store) ListUserSessions(ctx context.Context, userID string) ([]store.Session, error) {
	var rows []sessionRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+sessionColumns+` FROM sessions WHERE user_id = @uid
		ORDER BY created_at_ms DESC, id LIMIT 1000`, args{"uid": userID}); err != nil {
		return nil, fmt.Errorf("gormstore: list user sessions: %w", err)
	}
	out := make([]store.Session, 0, len(rows))
	for i := range rows {
		out = append(out, *rows[i].session())
	}
	return out, nil
}

// LiveSessions counts unexpired, unrevoked sessions and returns the
// latest expiry among them (zero when none): what a retired session
// signing key may still have to verify.
func (s *Store) LiveSessions(ctx context.Context) (int64, int64, error) {
	var rows []struct {
		N   int64  `gorm:"column:n"`
		Max *int64 `gorm:"column:m"`
	}
	if _, err := s.query(ctx, s.r, &rows, `SELECT COUNT(*) AS n, MAX(expires_at_ms) AS m FROM sessions
		WHERE revoked_at_ms IS NULL AND expires_at_ms > {now}`, nil); err != nil {
		return 0, 0, fmt.Errorf("gormstore: live sessions: %w", err)
	}
	if len(rows) == 0 || rows[0].Max == nil {
		return 0, 0, nil
	}
	return rows[0].N, *rows[0].Max, nil
}

var _ store.OperatorStats = (*Store)(nil)

// OpsCounts implements store.OperatorStats with four GROUP BY reads.
func (s *Store) OpsCounts(ctx context.Context, auditSince time.Time) (store.OpsCounts, error) {
	out := store.OpsCounts{Users: map[store.Pair]int64{}, LiveSessions: map[string]int64{}, Jobs: map[store.Pair]int64{}, Audit: map[string]int64{}}
	type row struct {
		A string `gorm:"column:a"`
		B string `gorm:"column:b"`
		N int64  `gorm:"column:n"`
	}
	for _, q := range []struct {
		sql  string
		a    args
		into func(r row)
	}{
		{`SELECT platform AS a, status AS b, COUNT(*) AS n FROM users GROUP BY platform, status`, nil,
			func(r row) { out.Users[store.Pair{A: r.A, B: r.B}] = r.N }},
		{`SELECT kind AS a, '' AS b, COUNT(*) AS n FROM sessions WHERE revoked_at_ms IS NULL AND expires_at_ms > {now} GROUP BY kind`, nil,
			func(r row) { out.LiveSessions[r.A] = r.N }},
		{`SELECT kind AS a, state AS b, COUNT(*) AS n FROM jobs GROUP BY kind, state`, nil,
			func(r row) { out.Jobs[store.Pair{A: r.A, B: r.B}] = r.N }},
		{`SELECT action AS a, '' AS b, COUNT(*) AS n FROM audit_events WHERE at_ms >= @since GROUP BY action`, args{"since": auditSince.UnixMilli()},
			func(r row) { out.Audit[r.A] = r.N }},
	} {
		var rows []row
		if _, err := s.query(ctx, s.r, &rows, q.sql, q.a); err != nil {
			return out, fmt.Errorf("gormstore: ops counts: %w", err)
		}
		for _, r := range rows {
			q.into(r)
		}
	}
	return out, nil
}
