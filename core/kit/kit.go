// Package kit is connectd's OAuth 2.0 authorization server for Kit (seed
// 001): Kit apps (OAuth clients), authorization codes, token families
// (grants) and the access tokens Kit presents on plugin calls. It owns the
// token rules; server/kit speaks HTTP.
//
// Rules (security.md case 25, RFC 6749/7009/9700):
//   - codes are single use, live at most 10 minutes and are bound to the
//     client; a replayed code revokes every token issued from it;
//   - access tokens are short (2 h); refresh tokens rotate on every use and
//     a rotated token presented again revokes the whole family, except
//     within a short grace window (30 s) while its successor is unused,
//     where the retry gets the SAME new pair (so one lost response does not
//     uninstall a creator). The successor pair is derived with a keyed MAC
//     from the old refresh token, so nothing but hashes is ever stored;
//   - a family has an absolute lifetime; revoking any token ends it;
//   - client secrets, codes and tokens are stored as SHA-256 hashes and
//     compared in constant time.
//
// Expiry is decided by the database clock in the statements that decide,
// and checked again against the injected clock (tests move it).
package kit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/encryption"
)

// Defaults and bounds.
const (
	MaxCodeTTL        = 10 * time.Minute
	DefaultAccessTTL  = 2 * time.Hour
	DefaultRefreshTTL = 90 * 24 * time.Hour
	DefaultFamilyTTL  = 365 * 24 * time.Hour
	DefaultGrace      = 30 * time.Second
	maxTokenLen       = 512
)

// OAuth error codes (RFC 6749 5.2).
const (
	ErrInvalidRequest       = "invalid_request"
	ErrInvalidClient        = "invalid_client"
	ErrInvalidGrant         = "invalid_grant"
	ErrUnsupportedGrantType = "unsupported_grant_type"
	ErrServerError          = "server_error"
	ErrTemporarily          = "temporarily_unavailable"
)

// OAuthError is an RFC 6749 error answer. Description is safe to show.
type OAuthError struct {
	Code        string
	Description string
	Cause       error
}

// Error implements error.
func (e *OAuthError) Error() string {
	if e.Cause != nil {
		return "kit: " + e.Code + ": " + e.Description + ": " + e.Cause.Error()
	}
	return "kit: " + e.Code + ": " + e.Description
}

// Unwrap returns the cause.
func (e *OAuthError) Unwrap() error { return e.Cause }

func oauthErr(code, desc string, cause error) *OAuthError {
	return &OAuthError{Code: code, Description: desc, Cause: cause}
}

// storeErr maps a storage failure to server_error / temporarily_unavailable.
func storeErr(err error) *OAuthError {
	if errors.Is(err, store.ErrUnavailable) {
		return oauthErr(ErrTemporarily, "The server is temporarily unavailable. Please retry.", err)
	}
	return oauthErr(ErrServerError, "The request could not be processed.", err)
}

// Options configure a Service.
type Options struct {
	Store store.Kit
	// Keys derive the successor pair of a rotated refresh token (the
	// session signing ring; any key of it reproduces a retried rotation).
	Keys   *encryption.KeyRing
	Clock  clock.Clock
	Logger hclog.Logger
	// TTLs (zero: defaults). CodeTTL is capped at 10 minutes.
	CodeTTL, AccessTTL, RefreshTTL, FamilyTTL time.Duration
	// Grace is the idempotent window for a retried refresh (zero: 30 s;
	// negative: none).
	Grace time.Duration
	// GrantEnded is called after a grant was revoked (revoke endpoint,
	// replayed code, reused refresh token), to end what hangs off it.
	GrantEnded func(ctx context.Context, g *store.KitGrant)
}

// Service issues and checks Kit codes and tokens.
type Service struct {
	o Options
}

// New returns a Service.
func New(o Options) (*Service, error) {
	if o.Store == nil || o.Keys == nil {
		return nil, errors.New("kit: Store and Keys are required")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.CodeTTL <= 0 || o.CodeTTL > MaxCodeTTL {
		o.CodeTTL = MaxCodeTTL
	}
	if o.AccessTTL <= 0 {
		o.AccessTTL = DefaultAccessTTL
	}
	if o.RefreshTTL <= 0 {
		o.RefreshTTL = DefaultRefreshTTL
	}
	if o.FamilyTTL <= 0 {
		o.FamilyTTL = DefaultFamilyTTL
	}
	switch {
	case o.Grace == 0:
		o.Grace = DefaultGrace
	case o.Grace < 0:
		o.Grace = 0
	}
	return &Service{o: o}, nil
}

// AccessTTL is the lifetime of an access token (expires_in).
func (s *Service) AccessTTL() time.Duration { return s.o.AccessTTL }

// TokenPair is the token endpoints' answer.
type TokenPair struct {
	AccessToken  string
	RefreshToken string
	ExpiresIn    int64 // seconds
	CreatedAt    int64 // unix seconds
	GrantID      string
}

// Authenticate checks a client id and secret in constant time; unknown
// clients cost the same comparison.
func (s *Service) Authenticate(ctx context.Context, clientID, secret string) (*store.KitApp, error) {
	if clientID == "" || secret == "" {
		return nil, oauthErr(ErrInvalidClient, "Client authentication failed.", nil)
	}
	a, err := s.o.Store.GetKitAppByClientID(ctx, clientID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, storeErr(err)
	}
	hash := strings.Repeat("0", 64)
	if a != nil {
		hash = a.ClientSecretHash
	}
	if !secretMatches(secret, hash) || a == nil {
		return nil, oauthErr(ErrInvalidClient, "Client authentication failed.", nil)
	}
	return a, nil
}

// Client returns the app of a client id (no secret: the refresh endpoint
// and the authorize page).
func (s *Service) Client(ctx context.Context, clientID string) (*store.KitApp, error) {
	if clientID == "" || len(clientID) > 128 {
		return nil, oauthErr(ErrInvalidClient, "Unknown client.", nil)
	}
	a, err := s.o.Store.GetKitAppByClientID(ctx, clientID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, oauthErr(ErrInvalidClient, "Unknown client.", err)
	}
	if err != nil {
		return nil, storeErr(err)
	}
	return a, nil
}

// RegisteredRedirect reports whether uri is one of the app's redirect URIs
// (exact match).
func RegisteredRedirect(a *store.KitApp, uri string) bool {
	return uri != "" && slices.Contains(a.RedirectURIs, uri)
}

// IssueCode creates the grant for a completed connect flow (userID is the
// creator's connector login) and its authorization code.
func (s *Service) IssueCode(ctx context.Context, a *store.KitApp, grantID, userID, redirectURI string) (string, *store.KitGrant, error) {
	if !RegisteredRedirect(a, redirectURI) {
		return "", nil, oauthErr(ErrInvalidRequest, "The redirect URI is not registered for this app.", nil)
	}
	now := s.o.Clock.Now()
	code := randomToken(codePrefix)
	g := &store.KitGrant{ID: grantID, AppID: a.ID, UserID: userID, ExpiresAt: now.Add(s.o.FamilyTTL)}
	c := &store.KitCode{CodeHash: Hash(code), RedirectURI: redirectURI, ExpiresAt: now.Add(s.o.CodeTTL)}
	if err := s.o.Store.CreateKitGrant(ctx, g, c); err != nil {
		return "", nil, storeErr(err)
	}
	return code, g, nil
}

// ExchangeCode redeems an authorization code for the authenticated app.
// redirectURI must be one of the app's registered URIs (Kit names another
// registered URI here than in its authorize request).
func (s *Service) ExchangeCode(ctx context.Context, a *store.KitApp, code, redirectURI string) (*TokenPair, error) {
	if code == "" || len(code) > maxTokenLen {
		return nil, oauthErr(ErrInvalidRequest, "code is required.", nil)
	}
	if redirectURI == "" {
		return nil, oauthErr(ErrInvalidRequest, "redirect_uri is required.", nil)
	}
	if !RegisteredRedirect(a, redirectURI) {
		return nil, oauthErr(ErrInvalidGrant, "redirect_uri is not registered for this client.", nil)
	}
	now := s.o.Clock.Now()
	access, refresh := randomToken(accessPrefix), randomToken(refreshPrefix)
	c, g, err := s.o.Store.RedeemKitCode(ctx, Hash(code), a.ID, s.pair(access, refresh, "", now))
	if err != nil {
		return nil, s.grantFailure(ctx, err, "The authorization code is invalid, expired or already used.")
	}
	// The database decided single use and expiry; the injected clock
	// must agree too (it is what tests move).
	if !now.Before(c.ExpiresAt) || !now.Before(g.ExpiresAt) {
		s.endGrant(ctx, g.ID)
		return nil, oauthErr(ErrInvalidGrant, "The authorization code is invalid, expired or already used.", errors.New("kit: code expired by the service clock"))
	}
	return &TokenPair{AccessToken: access, RefreshToken: refresh, ExpiresIn: int64(s.o.AccessTTL / time.Second), CreatedAt: now.Unix(), GrantID: g.ID}, nil
}

// Refresh rotates a refresh token of the app's (client id only: Kit sends
// no secret, so the refresh token is the credential).
func (s *Service) Refresh(ctx context.Context, a *store.KitApp, refreshToken string) (*TokenPair, error) {
	if refreshToken == "" || len(refreshToken) > maxTokenLen {
		return nil, oauthErr(ErrInvalidRequest, "refresh_token is required.", nil)
	}
	if !strings.HasPrefix(refreshToken, refreshPrefix) {
		return nil, oauthErr(ErrInvalidGrant, "The refresh token is invalid, expired or revoked.", nil)
	}
	now := s.o.Clock.Now()
	id := s.o.Keys.PrimaryID()
	key, _ := s.o.Keys.Key(id)
	access, refresh := derive(key, refreshToken)
	oldHash := Hash(refreshToken)
	rot, err := s.o.Store.RotateKitRefresh(ctx, oldHash, a.ID, s.o.Grace, s.pair(access, refresh, oldHash, now))
	if err != nil {
		return nil, s.grantFailure(ctx, err, "The refresh token is invalid, expired or revoked.")
	}
	if !now.Before(rot.Grant.ExpiresAt) {
		s.endGrant(ctx, rot.Grant.ID)
		return nil, oauthErr(ErrInvalidGrant, "The refresh token is invalid, expired or revoked.", errors.New("kit: family lifetime over"))
	}
	created := now
	if rot.Retried {
		// The same pair again - if the retry is still within the grace
		// window by our clock too, and some key of the ring reproduces the
		// successor (the primary may have changed since).
		found := false
		for _, kid := range s.o.Keys.IDs() {
			k, _ := s.o.Keys.Key(kid)
			ac, rf := derive(k, refreshToken)
			if Hash(rf) == rot.SuccessorHash {
				access, refresh, found = ac, rf, true
				break
			}
		}
		if !found || now.Sub(rot.SuccessorCreatedAt) > s.o.Grace {
			s.endGrant(ctx, rot.Grant.ID)
			return nil, oauthErr(ErrInvalidGrant, "The refresh token is invalid, expired or revoked.", errors.New("kit: rotated refresh token reused"))
		}
		created = rot.SuccessorCreatedAt
		s.o.Logger.Debug("retried refresh answered with the same pair", "grant", rot.Grant.ID)
	}
	return &TokenPair{AccessToken: access, RefreshToken: refresh, ExpiresIn: int64(s.o.AccessTTL / time.Second), CreatedAt: created.Unix(), GrantID: rot.Grant.ID}, nil
}

// Revoke ends the grant of any token of the app's (RFC 7009: unknown or
// already revoked tokens are not an error; the grant is nil then).
func (s *Service) Revoke(ctx context.Context, a *store.KitApp, token string) (*store.KitGrant, error) {
	if token == "" || len(token) > maxTokenLen {
		return nil, oauthErr(ErrInvalidRequest, "token is required.", nil)
	}
	g, err := s.o.Store.RevokeKitToken(ctx, Hash(token), a.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, storeErr(err)
	}
	s.o.Logger.Info("kit grant revoked", "app", a.ID, "grant", g.ID)
	if s.o.GrantEnded != nil {
		s.o.GrantEnded(ctx, g)
	}
	return g, nil
}

// Bearer resolves a Kit access token to its live grant and app; nil and
// an *OAuthError (invalid_token semantics) otherwise.
func (s *Service) Bearer(ctx context.Context, token string) (*store.KitBearer, error) {
	if !strings.HasPrefix(token, accessPrefix) || len(token) > maxTokenLen {
		return nil, oauthErr("invalid_token", "The access token is invalid.", nil)
	}
	b, err := s.o.Store.GetKitBearer(ctx, Hash(token))
	if errors.Is(err, store.ErrNotFound) {
		return nil, oauthErr("invalid_token", "The access token is invalid, expired or revoked.", err)
	}
	if err != nil {
		return nil, storeErr(err)
	}
	now := s.o.Clock.Now()
	if !now.Before(b.Token.ExpiresAt) || !now.Before(b.Grant.ExpiresAt) {
		return nil, oauthErr("invalid_token", "The access token is invalid, expired or revoked.", errors.New("kit: expired by the service clock"))
	}
	return b, nil
}

// pair builds the rows of an access + refresh pair.
func (s *Service) pair(access, refresh, parent string, now time.Time) []store.KitToken {
	return []store.KitToken{
		{TokenHash: Hash(access), Kind: store.KitAccessToken, ParentHash: parent, ExpiresAt: now.Add(s.o.AccessTTL), CreatedAt: now},
		{TokenHash: Hash(refresh), Kind: store.KitRefreshToken, ParentHash: parent, ExpiresAt: now.Add(s.o.RefreshTTL), CreatedAt: now},
	}
}

// grantFailure maps a storage answer to invalid_grant, ending the grant
// after a replay.
func (s *Service) grantFailure(ctx context.Context, err error, desc string) error {
	var re *store.KitReplayError
	if errors.As(err, &re) {
		s.o.Logger.Warn("kit credential replayed; grant revoked", "grant", re.GrantID)
		s.endGrant(ctx, re.GrantID)
		return oauthErr(ErrInvalidGrant, desc, err)
	}
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrKitReplay) {
		return oauthErr(ErrInvalidGrant, desc, err)
	}
	return storeErr(err)
}

// endGrant revokes a grant and tells GrantEnded.
func (s *Service) endGrant(ctx context.Context, grantID string) {
	ctx = context.WithoutCancel(ctx)
	if err := s.o.Store.RevokeKitGrant(ctx, grantID); err != nil {
		s.o.Logger.Error("revoking a kit grant failed", "grant", grantID, "error", err)
		return
	}
	if s.o.GrantEnded == nil {
		return
	}
	g, err := s.o.Store.GetKitGrant(ctx, grantID)
	if err != nil {
		s.o.Logger.Error("reading a revoked kit grant failed", "grant", grantID, "error", err)
		return
	}
	s.o.GrantEnded(ctx, g)
}

// derive computes the successor pair of a refresh token under key: a
// retried rotation reproduces it, and without the server key nobody can.
func derive(key []byte, oldRefresh string) (access, refresh string) {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("connectd kit rotation v1"))
	sub := m.Sum(nil)
	mac := func(label string) string {
		h := hmac.New(sha256.New, sub)
		h.Write([]byte(label))
		h.Write([]byte{0})
		h.Write([]byte(oldRefresh))
		return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
	}
	return accessPrefix + mac("access"), refreshPrefix + mac("refresh")
}

// Describe is a safe one-line description of an app for listings.
func Describe(a *store.KitApp) string {
	return fmt.Sprintf("%s  %s  connector=%s  client_id=%s  redirect_uris=%s", a.ID, a.Name, a.Connector, a.ClientID, strings.Join(a.RedirectURIs, ","))
}
