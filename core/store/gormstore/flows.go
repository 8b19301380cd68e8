package gormstore

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/connectd/connectd/core/store"
)

const flowColumns = `id, platform, purpose, surface, hostname, redirect_uri, pkce_verifier, oauth_app_ref,
	host_kind, host_account_id, host_user_id, binding_hash, return_to, data,
	expires_at_ms, used_at_ms, created_at_ms`

// minFlowIDLen is 128 bits in unpadded base64url: the id is the OAuth
// state, so it must be unguessable.
const minFlowIDLen = 22

type flowRow struct {
	ID            string  `gorm:"column:id"`
	Platform      string  `gorm:"column:platform"`
	Purpose       string  `gorm:"column:purpose"`
	Surface       string  `gorm:"column:surface"`
	Hostname      string  `gorm:"column:hostname"`
	RedirectURI   string  `gorm:"column:redirect_uri"`
	PKCEVerifier  []byte  `gorm:"column:pkce_verifier"`
	OAuthAppRef   string  `gorm:"column:oauth_app_ref"`
	HostKind      string  `gorm:"column:host_kind"`
	HostAccountID string  `gorm:"column:host_account_id"`
	HostUserID    string  `gorm:"column:host_user_id"`
	BindingHash   string  `gorm:"column:binding_hash"`
	ReturnTo      string  `gorm:"column:return_to"`
	Data          *string `gorm:"column:data"`
	ExpiresAtMS   int64   `gorm:"column:expires_at_ms"`
	UsedAtMS      *int64  `gorm:"column:used_at_ms"`
	CreatedAtMS   int64   `gorm:"column:created_at_ms"`
}

func (s *Store) decodeFlow(r *flowRow) (*store.OAuthFlow, error) {
	f := &store.OAuthFlow{
		ID:          r.ID,
		Platform:    r.Platform,
		Purpose:     r.Purpose,
		Surface:     r.Surface,
		Hostname:    r.Hostname,
		RedirectURI: r.RedirectURI,
		OAuthAppRef: r.OAuthAppRef,
		Host:        store.HostIdentity{Kind: r.HostKind, AccountID: r.HostAccountID, UserID: r.HostUserID},
		BindingHash: r.BindingHash,
		ReturnTo:    r.ReturnTo,
		ExpiresAt:   msTime(r.ExpiresAtMS),
		UsedAt:      msTimePtr(r.UsedAtMS),
		CreatedAt:   msTime(r.CreatedAtMS),
	}
	var err error
	if f.PKCEVerifier, err = s.openString(adFlows, r.ID, "pkce_verifier", r.PKCEVerifier); err != nil {
		return nil, err
	}
	if f.Data, err = decodeJSON[map[string]string](r.Data); err != nil {
		return nil, fmt.Errorf("%w (oauth_flows/%s/data)", err, r.ID)
	}
	return f, nil
}

// NewFlowID returns a fresh OAuth state: 256 random bits, base64url.
func NewFlowID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// CreateFlow inserts f, filling ID (NewFlowID when empty) and CreatedAt.
// A caller-chosen id shorter than 22 characters (128 bits) is refused.
func (s *Store) CreateFlow(ctx context.Context, f *store.OAuthFlow) error {
	if f == nil || f.ExpiresAt.IsZero() {
		return errors.New("gormstore: create flow: expiry is required")
	}
	if f.ID == "" {
		f.ID = NewFlowID()
	}
	if len(f.ID) < minFlowIDLen {
		return fmt.Errorf("gormstore: create flow: id must carry at least 128 bits (%d+ characters)", minFlowIDLen)
	}
	pkce, err := s.sealString(adFlows, f.ID, "pkce_verifier", f.PKCEVerifier)
	if err != nil {
		return err
	}
	data, err := encodeJSON(f.Data)
	if err != nil {
		return err
	}
	var rows []flowRow
	if _, err := s.query(ctx, s.w, &rows, `INSERT INTO oauth_flows (id, platform, purpose, surface, hostname, redirect_uri,
			pkce_verifier, oauth_app_ref, host_kind, host_account_id, host_user_id, binding_hash, return_to, data,
			expires_at_ms, created_at_ms, updated_at_ms)
		VALUES (@id, @platform, @purpose, @surface, @hostname, @redirect, @pkce, @app, @hk, @ha, @hu, @binding, @ret, @data,
			@exp, {now}, {now})
		RETURNING `+flowColumns, args{
		"id": f.ID, "platform": f.Platform, "purpose": f.Purpose, "surface": f.Surface, "hostname": f.Hostname,
		"redirect": f.RedirectURI, "pkce": blob(pkce), "app": f.OAuthAppRef,
		"hk": f.Host.Kind, "ha": f.Host.AccountID, "hu": f.Host.UserID, "binding": f.BindingHash, "ret": f.ReturnTo,
		"data": data, "exp": f.ExpiresAt.UnixMilli(),
	}); err != nil {
		return fmt.Errorf("gormstore: create flow: %w", err)
	}
	if len(rows) == 1 {
		f.CreatedAt = msTime(rows[0].CreatedAtMS)
	}
	return nil
}

// GetFlow reads an unused, unexpired flow (database clock).
func (s *Store) GetFlow(ctx context.Context, id string) (*store.OAuthFlow, error) {
	var rows []flowRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+flowColumns+` FROM oauth_flows
		WHERE id = @id AND used_at_ms IS NULL AND expires_at_ms > {now}`, args{"id": id}); err != nil {
		return nil, fmt.Errorf("gormstore: get flow: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: flow: %w", store.ErrNotFound)
	}
	return s.decodeFlow(&rows[0])
}

// ConsumeFlow is single use: one conditional UPDATE decides, so of N
// concurrent callers exactly one gets the flow.
func (s *Store) ConsumeFlow(ctx context.Context, id string) (*store.OAuthFlow, error) {
	var rows []flowRow
	if _, err := s.query(ctx, s.w, &rows, `UPDATE oauth_flows SET used_at_ms = {now}, updated_at_ms = {now}
		WHERE id = @id AND used_at_ms IS NULL AND expires_at_ms > {now}
		RETURNING `+flowColumns, args{"id": id}); err != nil {
		return nil, fmt.Errorf("gormstore: consume flow: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: flow: %w", store.ErrNotFound)
	}
	return s.decodeFlow(&rows[0])
}
