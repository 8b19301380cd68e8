// Package session issues and verifies the JWTs connectd hands out: App
// Connect sessions, plugin bearers and operator identities (decisions.md
// "Tokens connectd issues", security.md "Session JWT", RFC 8725).
//
// Every token is HS256-signed with the primary key of the session key ring
// (kid = decimal key id) and verified with whichever ring key its kid names,
// so signing keys rotate without logging anyone out. The parser is strict:
// the algorithm is pinned, exp, iss, aud and the kind (typ claim) are
// required and checked, and the length is capped before any decoding.
//
// Every token also has a server-side session row (store.Sessions). A token
// verifies only while its row exists, has the same kind, is not revoked and
// has not expired; a refreshed token keeps its session id, so revoking the
// row invalidates every copy.
//
// Revocation: Verify reads the row on EVERY call (one primary-key read), with
// no in-process cache. A revocation committed on one replica is therefore
// seen by the very next verification on every replica, well within the
// 1-second promise, and there is no cache to size, expire or invalidate.
package session

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/encryption"
)

// Token kinds: the JWT typ claim, and store.Session.Kind of the row.
const (
	KindAppConnect = store.SessionAppConnect // "session"
	KindPlugin     = store.SessionPlugin     // "plugin"
	KindIdentity   = store.SessionIdentity   // "identity"
)

// Audiences.
const (
	AudienceAppConnect = "appconnect"
	AudienceHost       = "host"
	audiencePluginPfx  = "plugin:"
)

// HostKindOperator is the host kind of operator identities.
const HostKindOperator = "operator"

// IdentityPrefix starts the string form of an operator identity token, so
// it can never be mistaken for (or forwarded as) a RingCentral token.
const IdentityPrefix = "cdi_"

// Defaults and limits.
const (
	DefaultLifetime         = 14 * 24 * time.Hour
	DefaultRenewWithin      = 7 * 24 * time.Hour
	DefaultIdentityLifetime = time.Hour
	// Leeway tolerates clock skew between replicas for exp/iat.
	Leeway = 30 * time.Second
	// MaxTokenLength caps a token (identity prefix included) before any
	// parsing, so a huge token costs nothing. Ours are well under 1 KiB.
	MaxTokenLength = 8 << 10
)

// sessionCheckLabel is MACed by CheckValue.
const sessionCheckLabel = "connectd session key check"

// ErrInvalidToken is wrapped by every verification failure that means "this
// caller is not authenticated" (surfaces answer 401). The error returned is a
// *failure.Error with code failure.Unauthenticated whose cause says why;
// messages never contain the token.
var ErrInvalidToken = errors.New("session: invalid token")

// ErrWrongAudience is returned by VerifyPlugin for a genuine, live plugin
// bearer issued for another plugin (surfaces answer 403; code
// failure.Forbidden). It does not wrap ErrInvalidToken.
var ErrWrongAudience = errors.New("session: token issued for another plugin")

// Options configures a Manager.
type Options struct {
	// Keys is the session key ring (CONNECTD_SESSION_KEYS): its 32-byte
	// keys are HMAC-SHA256 keys. Required. Keep it separate from the
	// encryption ring.
	Keys *encryption.KeyRing
	// Issuer is the iss of every token: CONNECTD_PUBLIC_URL. Required.
	Issuer string
	// Sessions stores the server-side rows. Required.
	Sessions store.Sessions
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Lifetime of App Connect sessions and plugin bearers (default 2 weeks).
	Lifetime time.Duration
	// RenewWithin: NeedsRenewal reports true when at most this much of a
	// token's life is left (default 7 days).
	RenewWithin time.Duration
}

// Claims is what a verified (or freshly issued) token says.
type Claims struct {
	Kind      string
	SessionID string
	// Subject is the user record id (App Connect sessions; plugin bearers
	// when issued for a user).
	Subject string
	// AppConnectID ("<crmUserId>-<platform>") and Platform: App Connect
	// sessions only.
	AppConnectID, Platform string
	// Host is the host identity the token speaks for.
	Host store.HostIdentity
	// Admin: operator identities only.
	Admin bool
	// PluginID: plugin bearers only.
	PluginID  string
	IssuedAt  time.Time
	ExpiresAt time.Time
	// KeyID is the session key that signed the token.
	KeyID uint32
}

// tokenClaims is the JWT payload.
type tokenClaims struct {
	jwt.RegisteredClaims
	Type         string `json:"typ"`
	SessionID    string `json:"sid"`
	AppConnectID string `json:"id,omitempty"`
	Platform     string `json:"platform,omitempty"`
	HostKind     string `json:"host_kind,omitempty"`
	HostAccount  string `json:"host_account,omitempty"`
	HostUser     string `json:"host_user,omitempty"`
	PluginID     string `json:"plugin,omitempty"`
	Admin        bool   `json:"admin,omitempty"`
}

// Manager issues and verifies tokens. It is safe for concurrent use.
type Manager struct {
	keys        *encryption.KeyRing
	issuer      string
	sessions    store.Sessions
	clock       clock.Clock
	lifetime    time.Duration
	renewWithin time.Duration

	// One parser per expected audience (plugin audiences are checked by
	// hand to tell "other plugin" from "bad token"). Parsers are read-only
	// after construction, so sharing them is safe.
	appConnectParser *jwt.Parser
	identityParser   *jwt.Parser
	pluginParser     *jwt.Parser
}

// New returns a Manager.
func New(o Options) (*Manager, error) {
	if o.Keys == nil || o.Keys.Len() == 0 {
		return nil, errors.New("session: a session key ring is required")
	}
	if o.Issuer == "" {
		return nil, errors.New("session: an issuer (public URL) is required")
	}
	if o.Sessions == nil {
		return nil, errors.New("session: a session store is required")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Lifetime == 0 {
		o.Lifetime = DefaultLifetime
	}
	if o.RenewWithin == 0 {
		o.RenewWithin = DefaultRenewWithin
	}
	if o.Lifetime < 0 || o.RenewWithin < 0 {
		return nil, errors.New("session: lifetimes must be positive")
	}
	m := &Manager{
		keys:        o.Keys,
		issuer:      o.Issuer,
		sessions:    o.Sessions,
		clock:       o.Clock,
		lifetime:    o.Lifetime,
		renewWithin: o.RenewWithin,
	}
	m.appConnectParser = m.newParser(jwt.WithAudience(AudienceAppConnect))
	m.identityParser = m.newParser(jwt.WithAudience(AudienceHost))
	m.pluginParser = m.newParser()
	return m, nil
}

func (m *Manager) newParser(extra ...jwt.ParserOption) *jwt.Parser {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithIssuer(m.issuer),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(m.clock.Now),
		jwt.WithStrictDecoding(),
	}
	return jwt.NewParser(append(opts, extra...)...)
}

// CheckValue returns HMAC-SHA256(key, "connectd session key check"): stored
// once per session key and compared at start, so a wrong key refuses to
// start instead of logging everyone out. It reveals nothing about the key.
func CheckValue(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(sessionCheckLabel))
	return m.Sum(nil)
}

// IssueAppConnect creates a session row for a user record and returns its
// App Connect session token.
func (m *Manager) IssueAppConnect(ctx context.Context, userID, appConnectID, platform string, host store.HostIdentity) (string, *Claims, error) {
	if userID == "" || appConnectID == "" || platform == "" {
		return "", nil, errors.New("session: user id, App Connect id and platform are required")
	}
	c := &Claims{
		Kind:         KindAppConnect,
		Subject:      userID,
		AppConnectID: appConnectID,
		Platform:     platform,
		Host:         host,
	}
	return m.issue(ctx, c, m.lifetime, appConnectID)
}

// IssuePlugin creates a session row and returns a bearer token valid only
// for pluginID. userID may be empty (a bearer for a host account).
func (m *Manager) IssuePlugin(ctx context.Context, pluginID string, host store.HostIdentity, userID string) (string, *Claims, error) {
	if pluginID == "" {
		return "", nil, errors.New("session: plugin id is required")
	}
	if host.Kind == "" || host.AccountID == "" {
		return "", nil, errors.New("session: plugin bearer needs a host kind and account")
	}
	c := &Claims{Kind: KindPlugin, Subject: userID, Host: host, PluginID: pluginID}
	return m.issue(ctx, c, m.lifetime, pluginID)
}

// IssueIdentity creates a session row and returns an operator identity
// token, prefixed "cdi_". host.Kind must be "operator" (or empty, meaning
// operator). ttl <= 0 means DefaultIdentityLifetime.
func (m *Manager) IssueIdentity(ctx context.Context, host store.HostIdentity, admin bool, ttl time.Duration) (string, *Claims, error) {
	if host.Kind == "" {
		host.Kind = HostKindOperator
	}
	if host.Kind != HostKindOperator {
		return "", nil, fmt.Errorf("session: identity tokens are for host kind %q, not %q", HostKindOperator, host.Kind)
	}
	if host.AccountID == "" || host.UserID == "" {
		return "", nil, errors.New("session: identity token needs an account and a user")
	}
	if ttl <= 0 {
		ttl = DefaultIdentityLifetime
	}
	c := &Claims{Kind: KindIdentity, Host: host, Admin: admin}
	tok, c, err := m.issue(ctx, c, ttl, "")
	if err != nil {
		return "", nil, err
	}
	return IdentityPrefix + tok, c, nil
}

// issue fills c's session id and times, stores the row and signs.
func (m *Manager) issue(ctx context.Context, c *Claims, ttl time.Duration, rowSubject string) (string, *Claims, error) {
	now := m.clock.Now().Truncate(time.Second) // JWT times are whole seconds
	c.SessionID = uuid.NewString()
	c.IssuedAt = now
	c.ExpiresAt = now.Add(ttl)
	row := &store.Session{
		ID:        c.SessionID,
		Kind:      c.Kind,
		UserID:    c.Subject,
		Host:      c.Host,
		Subject:   rowSubject,
		ExpiresAt: c.ExpiresAt,
	}
	if err := m.sessions.CreateSession(ctx, row); err != nil {
		return "", nil, fmt.Errorf("session: create session: %w", err)
	}
	tok, err := m.sign(c)
	if err != nil {
		return "", nil, err
	}
	return tok, c, nil
}

// sign signs c with the primary key, setting c.KeyID.
func (m *Manager) sign(c *Claims) (string, error) {
	kid := m.keys.PrimaryID()
	key, _ := m.keys.Key(kid)
	tc := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    m.issuer,
			Subject:   c.Subject,
			IssuedAt:  jwt.NewNumericDate(c.IssuedAt),
			ExpiresAt: jwt.NewNumericDate(c.ExpiresAt),
		},
		Type:         c.Kind,
		SessionID:    c.SessionID,
		AppConnectID: c.AppConnectID,
		Platform:     c.Platform,
		HostKind:     c.Host.Kind,
		HostAccount:  c.Host.AccountID,
		HostUser:     c.Host.UserID,
		PluginID:     c.PluginID,
		Admin:        c.Admin,
	}
	switch c.Kind {
	case KindAppConnect:
		tc.Audience = jwt.ClaimStrings{AudienceAppConnect}
	case KindPlugin:
		tc.Audience = jwt.ClaimStrings{audiencePluginPfx + c.PluginID}
	case KindIdentity:
		tc.Audience = jwt.ClaimStrings{AudienceHost}
	default:
		return "", fmt.Errorf("session: unknown token kind %q", c.Kind)
	}
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, tc)
	t.Header["kid"] = strconv.FormatUint(uint64(kid), 10)
	s, err := t.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("session: sign token: %w", err)
	}
	c.KeyID = kid
	return s, nil
}

// Reissue returns a fresh token for the same session (same sid, new exp),
// for App Connect's x-refreshed-jwt-token. The row must still be live; its
// expiry is extended (store.Sessions.ExtendSession). Identity
// tokens are not reissued: the operator mints new ones.
func (m *Manager) Reissue(ctx context.Context, c *Claims) (string, error) {
	if c == nil || c.SessionID == "" {
		return "", errors.New("session: reissue: no session")
	}
	if c.Kind != KindAppConnect && c.Kind != KindPlugin {
		return "", fmt.Errorf("session: reissue: %q tokens are not reissued", c.Kind)
	}
	row, err := m.liveRow(ctx, c.SessionID, c.Kind)
	if err != nil {
		return "", err
	}
	if !matches(row, c) {
		return "", invalid("claims do not match their session")
	}
	now := m.clock.Now().Truncate(time.Second)
	exp := now.Add(m.lifetime)
	if err := m.sessions.ExtendSession(ctx, c.SessionID, exp); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return "", invalid("session revoked or expired")
		}
		return "", failure.New(failure.Unavailable, "Sessions are temporarily unavailable.", fmt.Errorf("session: extend session: %w", err))
	}
	n := *c
	n.IssuedAt = now
	n.ExpiresAt = exp
	tok, err := m.sign(&n)
	if err != nil {
		return "", err
	}
	return tok, nil
}

// NeedsRenewal reports whether at most RenewWithin of the token's life is
// left, i.e. the caller should be handed a reissued token.
func (m *Manager) NeedsRenewal(c *Claims) bool {
	return c.ExpiresAt.Sub(m.clock.Now()) <= m.renewWithin
}

// Revoke revokes a session: every token carrying its id stops verifying.
func (m *Manager) Revoke(ctx context.Context, sessionID string) error {
	if err := m.sessions.RevokeSession(ctx, sessionID); err != nil {
		return fmt.Errorf("session: revoke session: %w", err)
	}
	return nil
}

// RevokeUser revokes every session of a user record (logout everywhere,
// credentials revoked) and returns how many were revoked.
func (m *Manager) RevokeUser(ctx context.Context, userID string) (int, error) {
	n, err := m.sessions.RevokeUserSessions(ctx, userID)
	if err != nil {
		return 0, fmt.Errorf("session: revoke user sessions: %w", err)
	}
	return n, nil
}

// VerifyAppConnect verifies an App Connect session token.
func (m *Manager) VerifyAppConnect(ctx context.Context, token string) (*Claims, error) {
	c, err := m.verify(ctx, token, KindAppConnect, m.appConnectParser)
	if err != nil {
		return nil, err
	}
	if c.Subject == "" || c.AppConnectID == "" || c.Platform == "" {
		return nil, invalid("session token lacks user claims")
	}
	return c, nil
}

// VerifyPlugin verifies a plugin bearer for pluginID. A valid bearer of
// another plugin returns ErrWrongAudience (403), anything else invalid
// ErrInvalidToken (401).
func (m *Manager) VerifyPlugin(ctx context.Context, token, pluginID string) (*Claims, error) {
	c, err := m.verify(ctx, token, KindPlugin, m.pluginParser)
	if err != nil {
		return nil, err
	}
	if pluginID == "" || c.PluginID != pluginID {
		return nil, failure.New(failure.Forbidden, "This token is not valid for this plugin.", ErrWrongAudience)
	}
	return c, nil
}

// VerifyIdentity verifies an operator identity token ("cdi_" + JWT).
func (m *Manager) VerifyIdentity(ctx context.Context, token string) (*Claims, error) {
	if len(token) > MaxTokenLength {
		return nil, invalid("token too long")
	}
	jwtText, ok := strings.CutPrefix(token, IdentityPrefix)
	if !ok {
		return nil, invalid("identity token lacks the cdi_ prefix")
	}
	c, err := m.verify(ctx, jwtText, KindIdentity, m.identityParser)
	if err != nil {
		return nil, err
	}
	if c.Host.Kind != HostKindOperator || c.Host.AccountID == "" || c.Host.UserID == "" {
		return nil, invalid("identity token lacks operator claims")
	}
	return c, nil
}

// invalid returns a 401 failure wrapping ErrInvalidToken with reason as the
// (log-only) cause. reason never includes the token.
func invalid(reason string) error {
	return failure.New(failure.Unauthenticated, "Invalid or expired session.", fmt.Errorf("%w: %s", ErrInvalidToken, reason))
}

// verify checks everything common to the kinds: length, signature, kid,
// exp/iat/iss (and aud when p checks it), typ, and the session row.
func (m *Manager) verify(ctx context.Context, token, kind string, p *jwt.Parser) (*Claims, error) {
	if len(token) > MaxTokenLength {
		return nil, invalid("token too long")
	}
	if token == "" {
		return nil, invalid("no token")
	}
	var tc tokenClaims
	var kid uint32
	_, err := p.ParseWithClaims(token, &tc, func(t *jwt.Token) (any, error) {
		k, ok := t.Header["kid"].(string)
		if !ok {
			return nil, errors.New("no kid")
		}
		id, err := strconv.ParseUint(k, 10, 32)
		if err != nil || strconv.FormatUint(id, 10) != k {
			return nil, errors.New("malformed kid")
		}
		key, ok := m.keys.Key(uint32(id))
		if !ok {
			return nil, fmt.Errorf("unknown kid %d", id)
		}
		kid = uint32(id)
		return key, nil
	})
	if err != nil {
		// jwt's messages describe the failure, never the token.
		return nil, invalid(err.Error())
	}
	if tc.Type != kind {
		return nil, invalid(fmt.Sprintf("token kind %q, want %q", tc.Type, kind))
	}
	if tc.SessionID == "" {
		return nil, invalid("no session id")
	}
	if tc.IssuedAt == nil {
		return nil, invalid("no iat")
	}
	c := &Claims{
		Kind:         tc.Type,
		SessionID:    tc.SessionID,
		Subject:      tc.Subject,
		AppConnectID: tc.AppConnectID,
		Platform:     tc.Platform,
		Host:         store.HostIdentity{Kind: tc.HostKind, AccountID: tc.HostAccount, UserID: tc.HostUser},
		Admin:        tc.Admin,
		PluginID:     tc.PluginID,
		IssuedAt:     tc.IssuedAt.Time,
		ExpiresAt:    tc.ExpiresAt.Time,
		KeyID:        kid,
	}
	if kind == KindPlugin {
		// The audience must be exactly "plugin:<the plugin claim>"; which
		// plugin the caller wanted is checked by VerifyPlugin.
		if c.PluginID == "" || !slices.Equal(tc.Audience, jwt.ClaimStrings{audiencePluginPfx + c.PluginID}) {
			return nil, invalid("plugin audience mismatch")
		}
	}
	row, err := m.liveRow(ctx, c.SessionID, kind)
	if err != nil {
		return nil, err
	}
	if !matches(row, c) {
		return nil, invalid("token does not match its session")
	}
	return c, nil
}

// matches reports whether claims describe the session row: the row is the
// authority, a token must not claim another user, host or plugin than the
// session it names.
func matches(row *store.Session, c *Claims) bool {
	if row.UserID != c.Subject || row.Host != c.Host {
		return false
	}
	switch c.Kind {
	case KindAppConnect:
		return row.Subject == c.AppConnectID
	case KindPlugin:
		return row.Subject == c.PluginID
	}
	return true
}

// liveRow reads the session row and checks it is usable for kind. A missing
// row is an invalid token; a store failure is not (it is a 503, so a
// database outage does not log everyone out).
func (m *Manager) liveRow(ctx context.Context, sid, kind string) (*store.Session, error) {
	row, err := m.sessions.GetSession(ctx, sid)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, invalid("unknown session")
		}
		return nil, failure.New(failure.Unavailable, "Sessions are temporarily unavailable.", fmt.Errorf("session: read session: %w", err))
	}
	switch {
	case row.Kind != kind:
		return nil, invalid(fmt.Sprintf("session kind %q, want %q", row.Kind, kind))
	case row.RevokedAt != nil:
		return nil, invalid("session revoked")
	case !m.clock.Now().Before(row.ExpiresAt):
		return nil, invalid("session expired")
	}
	return row, nil
}
