// Package demo is the built-in demo CRM: a small, fake CRM that connectd
// serves itself under /demo/crm/ when CONNECTD_DEMO=true (make run), so a
// newcomer can watch a real login end to end without an account anywhere.
//
// It is an OAuth 2.0 provider (an authorize page with a "sign in as" form,
// authorization codes bound to the redirect URI and a PKCE S256 challenge,
// a token endpoint with refresh-token rotation and reuse detection, RFC
// 7009 revocation) plus a user endpoint for its access tokens and an
// API-key check. The demo connectors (connectors/demo) talk to it through
// exactly the engine paths real connectors use.
//
// Everything is held in memory by one *CRM value: it is a demonstration
// for one process on a developer's machine, never a production service.
// Tokens are stored as SHA-256 hashes only, and the state is bounded.
package demo

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/server"
)

// Paths of the demo CRM, all under BasePath.
const (
	BasePath      = "/demo/crm"
	AuthorizePath = BasePath + "/oauth/authorize"
	TokenPath     = BasePath + "/oauth/token"
	RevokePath    = BasePath + "/oauth/revoke"
	UserPath      = BasePath + "/api/me"    // Bearer access token
	APIKeyPath    = BasePath + "/apikey/me" // Basic base64(apiKey + ":")
)

// The demo OAuth client. These are public demo values, not secrets: the
// demo connector presents them like any connector presents its app.
const (
	ClientID     = "connectd-demo-client"
	ClientSecret = "connectd-demo-secret"
)

// AppConnectRedirectURI is the redirect URI App Connect's client uses; it
// is registered at the demo provider so the App Connect flow works too.
const AppConnectRedirectURI = "https://ringcentral.github.io/ringcentral-embeddable/redirect.html"

// Access-token lifetimes a person can pick on the sign-in page.
const (
	DefaultLifetime = time.Hour
	// ShortLifetime lets a newcomer watch connectd refresh on its own: the
	// demo manifest's refresh margin is longer, so every use refreshes.
	ShortLifetime = 45 * time.Second
	// CodeLifetime bounds an authorization code.
	CodeLifetime = 2 * time.Minute
)

// Limits keep the in-memory state bounded.
const (
	maxTokens = 50000
	maxCodes  = 5000
)

// User is an account of the demo CRM.
type User struct {
	Login  string
	ID     string
	Name   string
	Email  string
	APIKey string // the demo API key that signs in as this user
}

// Users returns the demo accounts (a fresh slice).
func Users() []User {
	return []User{
		{Login: "alice", ID: "demo-1001", Name: "Alice Demo", Email: "alice@demo.connectd.invalid", APIKey: "demo-key-alice"},
		{Login: "bob", ID: "demo-1002", Name: "Bob Demo", Email: "bob@demo.connectd.invalid", APIKey: "demo-key-bob"},
	}
}

// Options configure New.
type Options struct {
	// PublicURL is connectd's CONNECTD_PUBLIC_URL; the connect flow's
	// callback under it is a registered redirect URI.
	PublicURL string
	// RedirectURIs replaces the registered redirect URIs (default:
	// <PublicURL>/oauth/callback and AppConnectRedirectURI).
	RedirectURIs []string
	Clock        clock.Clock
	Logger       hclog.Logger
}

// CRM is the demo CRM. Safe for concurrent use.
type CRM struct {
	redirectURIs []string
	formAction   string
	clock        clock.Clock
	log          hclog.Logger
	users        []User

	mu     sync.Mutex
	codes  map[string]*code  // sha256(code) ->
	tokens map[string]*token // sha256(token) ->
}

// grant is everything issued from one authorization: one code, its access
// tokens and its chain of refresh tokens. Revoking it revokes them all.
type grant struct {
	user     User
	lifetime time.Duration
	revoked  bool
}

type code struct {
	grant       *grant
	redirectURI string
	challenge   string
	expires     time.Time
	used        bool
}

type tokenKind int

const (
	accessToken tokenKind = iota + 1
	refreshToken
)

type token struct {
	grant   *grant
	kind    tokenKind
	expires time.Time // access tokens
	rotated bool      // refresh tokens replaced by a refresh
}

var _ server.Surface = (*CRM)(nil)

// New returns a demo CRM for a server whose public URL is o.PublicURL.
func New(o Options) (*CRM, error) {
	pub := strings.TrimRight(o.PublicURL, "/")
	if o.RedirectURIs == nil {
		if pub == "" {
			return nil, errors.New("demo: PublicURL is required")
		}
		o.RedirectURIs = []string{pub + "/oauth/callback", AppConnectRedirectURI}
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	// The sign-in form posts to the demo CRM ('self') and is then
	// redirected to the client; browsers apply form-action to that
	// redirect, so the redirect URIs' origins are listed too.
	actions := []string{"'self'"}
	for _, ru := range o.RedirectURIs {
		u, err := url.Parse(ru)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, errors.New("demo: redirect URIs must be absolute URLs")
		}
		if origin := u.Scheme + "://" + u.Host; !slices.Contains(actions, origin) {
			actions = append(actions, origin)
		}
	}
	return &CRM{
		redirectURIs: slices.Clone(o.RedirectURIs),
		formAction:   strings.Join(actions, " "),
		clock:        o.Clock,
		log:          o.Logger,
		users:        Users(),
		codes:        map[string]*code{},
		tokens:       map[string]*token{},
	}, nil
}

// Register implements server.Surface.
func (m *CRM) Register(r gin.IRouter, mw server.Middlewares) {
	g := r.Group(BasePath)
	g.GET("", m.index)
	g.GET("/", m.index)
	g.GET("/oauth/authorize", m.authorizePage)
	g.POST("/oauth/authorize", mw.Limiter.PerIP(), m.authorizeSubmit)
	g.POST("/oauth/token", m.tokenEndpoint)
	g.POST("/oauth/revoke", m.revokeEndpoint)
	g.GET("/api/me", m.me)
	g.GET("/apikey/me", m.apiKeyMe)
}

// TokenState says what the CRM knows of a token: "active", "expired",
// "rotated", "revoked" or "unknown". For tests and the curious; it never
// returns token material.
func (m *CRM) TokenState(tok string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tokens[hash(tok)]
	switch {
	case !ok:
		return "unknown"
	case t.grant.revoked:
		return "revoked"
	case t.rotated:
		return "rotated"
	case t.kind == accessToken && !m.clock.Now().Before(t.expires):
		return "expired"
	}
	return "active"
}

func (m *CRM) userByLogin(login string) (User, bool) {
	for _, u := range m.users {
		if u.Login == login {
			return u, true
		}
	}
	return User{}, false
}

// newSecret returns 32 random bytes, URL-safe.
func newSecret(prefix string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails on supported platforms (Go 1.24+)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func equal(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// prune drops expired codes and access tokens, and the tokens of revoked
// grants. Called with mu held.
func (m *CRM) prune(now time.Time) {
	for k, c := range m.codes {
		if !now.Before(c.expires) || c.grant.revoked {
			delete(m.codes, k)
		}
	}
	for k, t := range m.tokens {
		if t.kind == accessToken && !now.Before(t.expires) {
			delete(m.tokens, k)
		}
	}
}

// errFull means the demo holds as many tokens as it will.
var errFull = errors.New("demo: too many live tokens")

// issue mints an access token (and a refresh token) for g. Called with mu
// held.
func (m *CRM) issue(g *grant, now time.Time) (access, refresh string, err error) {
	if len(m.tokens)+2 > maxTokens {
		m.prune(now)
		if len(m.tokens)+2 > maxTokens {
			return "", "", errFull
		}
	}
	access = newSecret("demo_at_")
	refresh = newSecret("demo_rt_")
	m.tokens[hash(access)] = &token{grant: g, kind: accessToken, expires: now.Add(g.lifetime)}
	m.tokens[hash(refresh)] = &token{grant: g, kind: refreshToken}
	return access, refresh, nil
}

func (m *CRM) redirectAllowed(ru string) bool {
	return slices.Contains(m.redirectURIs, ru)
}

// pageHeaders: the demo pages load nothing from anywhere (inline style
// only) and may only post back to the CRM or its registered clients.
func (m *CRM) pageHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action "+m.formAction+"; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
}

func (m *CRM) index(c *gin.Context) {
	m.render(c, http.StatusOK, "index.html", pageData{Title: "Demo CRM", Users: m.users})
}

func (m *CRM) render(c *gin.Context, status int, name string, d pageData) {
	m.pageHeaders(c)
	c.Status(status)
	c.Header("Content-Type", "text/html; charset=utf-8")
	if err := pages.ExecuteTemplate(c.Writer, name, d); err != nil {
		m.log.Error("rendering the demo page failed", "page", name, "error", err)
	}
	c.Abort()
}
