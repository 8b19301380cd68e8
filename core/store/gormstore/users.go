package gormstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/connectd/connectd/core/store"
	"github.com/google/uuid"
	"gorm.io/gorm"
)

const userColumns = `id, platform, crm_user_id, host_kind, host_account_id, host_user_id,
	hostname, appconnect_id, display_name, timezone_name, timezone_offset,
	access_token, refresh_token, token_expiry_ms, api_key, additional_info, secrets,
	oauth_app_ref, status, version, created_at_ms, updated_at_ms`

type userRow struct {
	ID             string  `gorm:"column:id"`
	Platform       string  `gorm:"column:platform"`
	CRMUserID      string  `gorm:"column:crm_user_id"`
	HostKind       string  `gorm:"column:host_kind"`
	HostAccountID  string  `gorm:"column:host_account_id"`
	HostUserID     string  `gorm:"column:host_user_id"`
	Hostname       string  `gorm:"column:hostname"`
	AppConnectID   string  `gorm:"column:appconnect_id"`
	DisplayName    string  `gorm:"column:display_name"`
	TimezoneName   string  `gorm:"column:timezone_name"`
	TimezoneOffset string  `gorm:"column:timezone_offset"`
	AccessToken    []byte  `gorm:"column:access_token"`
	RefreshToken   []byte  `gorm:"column:refresh_token"`
	TokenExpiryMS  *int64  `gorm:"column:token_expiry_ms"`
	APIKey         []byte  `gorm:"column:api_key"`
	AdditionalInfo *string `gorm:"column:additional_info"`
	Secrets        []byte  `gorm:"column:secrets"`
	OAuthAppRef    string  `gorm:"column:oauth_app_ref"`
	Status         string  `gorm:"column:status"`
	Version        int64   `gorm:"column:version"`
	CreatedAtMS    int64   `gorm:"column:created_at_ms"`
	UpdatedAtMS    int64   `gorm:"column:updated_at_ms"`
}

// decodeUser opens the sealed columns with the row's own id.
func (s *Store) decodeUser(r *userRow) (*store.User, error) {
	u := &store.User{
		ID:             r.ID,
		Platform:       r.Platform,
		CRMUserID:      r.CRMUserID,
		Host:           store.HostIdentity{Kind: r.HostKind, AccountID: r.HostAccountID, UserID: r.HostUserID},
		Hostname:       r.Hostname,
		AppConnectID:   r.AppConnectID,
		DisplayName:    r.DisplayName,
		TimezoneName:   r.TimezoneName,
		TimezoneOffset: r.TimezoneOffset,
		TokenExpiry:    msTimePtr(r.TokenExpiryMS),
		OAuthAppRef:    r.OAuthAppRef,
		Status:         store.UserStatus(r.Status),
		Version:        r.Version,
		CreatedAt:      msTime(r.CreatedAtMS),
		UpdatedAt:      msTime(r.UpdatedAtMS),
	}
	var err error
	if u.AccessToken, err = s.openString(adUsers, r.ID, "access_token", r.AccessToken); err != nil {
		return nil, err
	}
	if u.RefreshToken, err = s.openString(adUsers, r.ID, "refresh_token", r.RefreshToken); err != nil {
		return nil, err
	}
	if u.APIKey, err = s.openString(adUsers, r.ID, "api_key", r.APIKey); err != nil {
		return nil, err
	}
	if u.Secrets, err = s.openSecrets(adUsers, r.ID, "secrets", r.Secrets); err != nil {
		return nil, err
	}
	if u.AdditionalInfo, err = decodeJSON[map[string]any](r.AdditionalInfo); err != nil {
		return nil, fmt.Errorf("%w (users/%s/additional_info)", err, r.ID)
	}
	return u, nil
}

// sealedUser holds a user's credential columns sealed for one row id.
type sealedUser struct {
	access, refresh, apiKey, secrets []byte
}

func (s *Store) sealUser(id string, u *store.User) (sealedUser, error) {
	var out sealedUser
	var err error
	if out.access, err = s.sealString(adUsers, id, "access_token", u.AccessToken); err != nil {
		return out, err
	}
	if out.refresh, err = s.sealString(adUsers, id, "refresh_token", u.RefreshToken); err != nil {
		return out, err
	}
	if out.apiKey, err = s.sealString(adUsers, id, "api_key", u.APIKey); err != nil {
		return out, err
	}
	if out.secrets, err = s.sealSecrets(adUsers, id, "secrets", u.Secrets); err != nil {
		return out, err
	}
	return out, nil
}

// UpsertUser inserts or updates the login identified by (platform, crm
// user id, host identity). Race-free on both backends without holding a
// transaction: look the id up; if present, update that row (sealing with
// its id); if absent, insert with a new id ON CONFLICT DO NOTHING and, when
// a concurrent insert won, go round again and update the winner's row.
// An update clears any refresh lease, so a refresh in flight from the old
// login fails its fenced save instead of overwriting the new tokens.
func (s *Store) UpsertUser(ctx context.Context, u *store.User) (*store.User, error) {
	if u == nil || u.Platform == "" || u.CRMUserID == "" {
		return nil, errors.New("gormstore: upsert user: platform and CRM user id are required")
	}
	info, err := encodeJSON(u.AdditionalInfo)
	if err != nil {
		return nil, err
	}
	for attempt := 0; attempt < 5; attempt++ {
		var ids []string
		if _, err := s.query(ctx, s.r, &ids, `SELECT id FROM users
			WHERE platform = @platform AND crm_user_id = @crm AND host_kind = @hk AND host_account_id = @ha AND host_user_id = @hu`,
			args{"platform": u.Platform, "crm": u.CRMUserID, "hk": u.Host.Kind, "ha": u.Host.AccountID, "hu": u.Host.UserID}); err != nil {
			return nil, fmt.Errorf("gormstore: upsert user: %w", err)
		}
		if len(ids) == 1 {
			return s.updateLogin(ctx, ids[0], u, info)
		}
		id := u.ID
		if id == "" {
			id = uuid.NewString()
		}
		sealed, err := s.sealUser(id, u)
		if err != nil {
			return nil, err
		}
		var rows []userRow
		n, err := s.query(ctx, s.w, &rows, `INSERT INTO users (id, platform, crm_user_id, host_kind, host_account_id, host_user_id,
				hostname, appconnect_id, display_name, timezone_name, timezone_offset,
				access_token, refresh_token, token_expiry_ms, api_key, additional_info, secrets,
				oauth_app_ref, status, version, created_at_ms, updated_at_ms)
			VALUES (@id, @platform, @crm, @hk, @ha, @hu, @hostname, @acid, @dn, @tzn, @tzo,
				@at, @rt, @exp, @ak, @info, @sec, @app, 'active', 1, {now}, {now})
			ON CONFLICT (platform, crm_user_id, host_kind, host_account_id, host_user_id) DO NOTHING
			RETURNING `+userColumns, args{
			"id": id, "platform": u.Platform, "crm": u.CRMUserID, "hk": u.Host.Kind, "ha": u.Host.AccountID, "hu": u.Host.UserID,
			"hostname": u.Hostname, "acid": u.AppConnectID, "dn": u.DisplayName, "tzn": u.TimezoneName, "tzo": u.TimezoneOffset,
			"at": blob(sealed.access), "rt": blob(sealed.refresh), "exp": msPtr(u.TokenExpiry), "ak": blob(sealed.apiKey),
			"info": info, "sec": blob(sealed.secrets), "app": u.OAuthAppRef,
		})
		if err != nil {
			// A caller-chosen id colliding with another login's id.
			return nil, fmt.Errorf("gormstore: insert user: %w", err)
		}
		if n == 1 {
			return s.decodeUser(&rows[0])
		}
		// Lost an insert race: the row exists now; update it.
	}
	return nil, fmt.Errorf("gormstore: upsert user: gave up after repeated races: %w", store.ErrConflict)
}

func (s *Store) updateLogin(ctx context.Context, id string, u *store.User, info any) (*store.User, error) {
	sealed, err := s.sealUser(id, u)
	if err != nil {
		return nil, err
	}
	var rows []userRow
	n, err := s.query(ctx, s.w, &rows, `UPDATE users SET
			hostname = @hostname, appconnect_id = @acid, display_name = @dn, timezone_name = @tzn, timezone_offset = @tzo,
			access_token = @at, refresh_token = @rt, token_expiry_ms = @exp, api_key = @ak,
			additional_info = @info, secrets = @sec, oauth_app_ref = @app,
			status = 'active', status_before_lease = NULL, lease_owner = NULL, lease_until_ms = NULL,
			version = version + 1, updated_at_ms = {now}
		WHERE id = @id
		RETURNING `+userColumns, args{
		"id": id, "hostname": u.Hostname, "acid": u.AppConnectID, "dn": u.DisplayName, "tzn": u.TimezoneName, "tzo": u.TimezoneOffset,
		"at": blob(sealed.access), "rt": blob(sealed.refresh), "exp": msPtr(u.TokenExpiry), "ak": blob(sealed.apiKey),
		"info": info, "sec": blob(sealed.secrets), "app": u.OAuthAppRef,
	})
	if err != nil {
		return nil, fmt.Errorf("gormstore: update user: %w", err)
	}
	if n != 1 {
		return nil, fmt.Errorf("gormstore: update user %s: %w", id, store.ErrNotFound)
	}
	return s.decodeUser(&rows[0])
}

// GetUser reads one user record, revoked ones included.
func (s *Store) GetUser(ctx context.Context, id string) (*store.User, error) {
	var row userRow
	found, err := s.readUserRow(ctx, id, &row) // hotreads.go
	if err != nil {
		return nil, fmt.Errorf("gormstore: get user: %w", err)
	}
	if !found {
		return nil, fmt.Errorf("gormstore: user %s: %w", id, store.ErrNotFound)
	}
	return s.decodeUser(&row)
}

// userState distinguishes why a conditional UPDATE matched nothing.
func (s *Store) userState(ctx context.Context, id string) (status string, found bool, err error) {
	var st []string
	if _, err := s.query(ctx, s.r, &st, `SELECT status FROM users WHERE id = @id`, args{"id": id}); err != nil {
		return "", false, err
	}
	if len(st) == 0 {
		return "", false, nil
	}
	return st[0], true, nil
}

// AcquireUserLease takes the refresh lease in one conditional UPDATE. The
// status the record had before the lease is kept in status_before_lease,
// so ReleaseUserLease(status "") can put it back. Re-acquiring our own
// lease keeps the saved status (it would otherwise save refresh_uncertain);
// taking over an expired lease saves refresh_uncertain, which is the truth:
// the previous owner may have rotated the refresh token before dying.
func (s *Store) AcquireUserLease(ctx context.Context, id, owner string, ttl time.Duration) (*store.User, error) {
	if owner == "" || ttl <= 0 {
		return nil, errors.New("gormstore: acquire user lease: owner and a positive ttl are required")
	}
	var rows []userRow
	n, err := s.query(ctx, s.w, &rows, `UPDATE users SET
			status_before_lease = CASE WHEN lease_owner = @owner THEN status_before_lease ELSE status END,
			status = 'refresh_uncertain',
			lease_owner = @owner,
			lease_until_ms = {now} + CAST(@ttl AS BIGINT),
			updated_at_ms = {now}
		WHERE id = @id AND status <> 'revoked'
			AND (lease_owner IS NULL OR lease_until_ms < {now} OR lease_owner = @owner)
		RETURNING `+userColumns, args{"id": id, "owner": owner, "ttl": ttl.Milliseconds()})
	if err != nil {
		return nil, fmt.Errorf("gormstore: acquire user lease: %w", err)
	}
	if n == 1 {
		return s.decodeUser(&rows[0])
	}
	status, found, err := s.userState(ctx, id)
	switch {
	case err != nil:
		return nil, fmt.Errorf("gormstore: acquire user lease: %w", err)
	case !found || status == string(store.StatusRevoked):
		return nil, fmt.Errorf("gormstore: acquire user lease %s: %w", id, store.ErrNotFound)
	default:
		return nil, fmt.Errorf("gormstore: acquire user lease %s: %w", id, store.ErrLeaseHeld)
	}
}

// SaveLeasedTokens is the fenced save: it matches only while owner holds
// the lease and the record is not revoked.
func (s *Store) SaveLeasedTokens(ctx context.Context, id, owner string, upd store.TokenUpdate) (*store.User, error) {
	if owner == "" {
		return nil, errors.New("gormstore: save leased tokens: owner is required")
	}
	at, err := s.sealString(adUsers, id, "access_token", upd.AccessToken)
	if err != nil {
		return nil, err
	}
	a := args{"id": id, "owner": owner, "at": blob(at), "exp": msPtr(upd.TokenExpiry), "hostname": upd.Hostname}
	refreshSet := "refresh_token"
	if upd.RefreshToken != "" {
		rt, err := s.sealString(adUsers, id, "refresh_token", upd.RefreshToken)
		if err != nil {
			return nil, err
		}
		a["rt"] = rt
		refreshSet = "@rt"
	}
	var rows []userRow
	n, err := s.query(ctx, s.w, &rows, `UPDATE users SET
			access_token = @at, refresh_token = `+refreshSet+`, token_expiry_ms = @exp,
			hostname = CASE WHEN @hostname = '' THEN hostname ELSE @hostname END,
			status = 'active', status_before_lease = NULL, lease_owner = NULL, lease_until_ms = NULL,
			version = version + 1, updated_at_ms = {now}
		WHERE id = @id AND lease_owner = @owner AND status <> 'revoked'
		RETURNING `+userColumns, a)
	if err != nil {
		return nil, fmt.Errorf("gormstore: save leased tokens: %w", err)
	}
	if n == 1 {
		return s.decodeUser(&rows[0])
	}
	_, found, err := s.userState(ctx, id)
	switch {
	case err != nil:
		return nil, fmt.Errorf("gormstore: save leased tokens: %w", err)
	case !found:
		return nil, fmt.Errorf("gormstore: save leased tokens %s: %w", id, store.ErrNotFound)
	default:
		return nil, fmt.Errorf("gormstore: save leased tokens %s: %w", id, store.ErrLeaseLost)
	}
}

func validLeaseExitStatus(st store.UserStatus) bool {
	switch st {
	case "", store.StatusActive, store.StatusNeedsReauth, store.StatusRefreshUncertain:
		return true
	}
	return false
}

// ReleaseUserLease gives the lease up. status "" restores the status the
// record had when the lease was taken; any other status (active,
// needs_reauth, refresh_uncertain) is set. Revoked is not accepted here:
// use RevokeUser.
func (s *Store) ReleaseUserLease(ctx context.Context, id, owner string, status store.UserStatus) error {
	if !validLeaseExitStatus(status) {
		return fmt.Errorf("gormstore: release user lease: status %q is not allowed (want active, needs_reauth, refresh_uncertain or empty)", status)
	}
	if _, err := s.exec(ctx, s.w, `UPDATE users SET
			status = CASE WHEN @status = '' THEN COALESCE(status_before_lease, status) ELSE @status END,
			status_before_lease = NULL, lease_owner = NULL, lease_until_ms = NULL, updated_at_ms = {now}
		WHERE id = @id AND lease_owner = @owner AND status <> 'revoked'`,
		args{"id": id, "owner": owner, "status": string(status)}); err != nil {
		return fmt.Errorf("gormstore: release user lease: %w", err)
	}
	return nil
}

// SetUserStatus compares and sets the status. A revoked record is never
// brought back (ErrConflict); revoking goes through RevokeUser.
func (s *Store) SetUserStatus(ctx context.Context, id string, version int64, status store.UserStatus) error {
	if status == "" || status == store.StatusRevoked || !validLeaseExitStatus(status) {
		return fmt.Errorf("gormstore: set user status: status %q is not allowed (use RevokeUser to revoke)", status)
	}
	n, err := s.exec(ctx, s.w, `UPDATE users SET status = @status, updated_at_ms = {now}
		WHERE id = @id AND status <> 'revoked' AND (CAST(@version AS BIGINT) = 0 OR version = @version)`,
		args{"id": id, "status": string(status), "version": version})
	if err != nil {
		return fmt.Errorf("gormstore: set user status: %w", err)
	}
	if n == 1 {
		return nil
	}
	_, found, err := s.userState(ctx, id)
	switch {
	case err != nil:
		return fmt.Errorf("gormstore: set user status: %w", err)
	case !found:
		return fmt.Errorf("gormstore: set user status %s: %w", id, store.ErrNotFound)
	default:
		return fmt.Errorf("gormstore: set user status %s: %w", id, store.ErrConflict)
	}
}

// RevokeUser reads the record and clears it in one short write
// transaction (PostgreSQL: the read locks the row), returning what was
// there for upstream revocation. It breaks any lease without waiting.
func (s *Store) RevokeUser(ctx context.Context, id string) (*store.User, error) {
	var before userRow
	lock := ""
	if s.dialect == DialectPostgres {
		lock = " FOR UPDATE"
	}
	err := s.w.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []userRow
		n, err := s.query(ctx, tx, &rows, `SELECT `+userColumns+` FROM users WHERE id = @id`+lock, args{"id": id})
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		before = rows[0]
		_, err = s.exec(ctx, tx, `UPDATE users SET
				access_token = NULL, refresh_token = NULL, token_expiry_ms = NULL, api_key = NULL, secrets = NULL,
				status = 'revoked', status_before_lease = NULL, lease_owner = NULL, lease_until_ms = NULL,
				version = version + 1, updated_at_ms = {now}
			WHERE id = @id`, args{"id": id})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("gormstore: revoke user %s: %w", id, s.translate(err))
	}
	return s.decodeUser(&before)
}

// UpdateUserProfile replaces the non-secret profile fields; credentials
// and version are untouched.
func (s *Store) UpdateUserProfile(ctx context.Context, id string, displayName, tzName, tzOffset string, info map[string]any) error {
	enc, err := encodeJSON(info)
	if err != nil {
		return err
	}
	n, err := s.exec(ctx, s.w, `UPDATE users SET display_name = @dn, timezone_name = @tzn, timezone_offset = @tzo,
			additional_info = @info, updated_at_ms = {now}
		WHERE id = @id`, args{"id": id, "dn": displayName, "tzn": tzName, "tzo": tzOffset, "info": enc})
	if err != nil {
		return fmt.Errorf("gormstore: update user profile: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("gormstore: update user profile %s: %w", id, store.ErrNotFound)
	}
	return nil
}
