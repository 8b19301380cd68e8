// Package console serves /console: a developer's page that lists the
// loaded connectors (available or why not) and logs in to any of them the
// way the App Connect client would - OAuth through the shared connect flow
// with the console as the surface, API keys through the manifest's form -
// then shows each login's state (who, platform, token expiry, status;
// never a secret), runs authValidation, forces a token refresh and logs
// out. With CONNECTD_DEMO=true it is the newcomer's first minute: the demo
// connectors log in to the demo CRM served by connectd itself.
//
// The page is server-rendered from embedded files and loads nothing from
// elsewhere; its script is a separate embedded file so the CSP needs no
// 'unsafe-inline'. The App Connect session tokens of the browser's logins
// are kept in an HttpOnly cookie scoped to /console; the page and its
// JSON API only ever show what the session record says, never a token.
package console

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/auth"
	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/connect"
	"github.com/connectd/connectd/server/httpx"
)

// SurfaceName is the connect-flow surface of console logins.
const SurfaceName = "console"

// CookieName holds the browser's console sessions (App Connect session
// tokens, "|"-separated), HttpOnly, Path=/console.
const CookieName = "connectd_console"

// PendingCookieName carries a just-completed login's session to the
// console (see complete).
const PendingCookieName = "connectd_console_new"

// maxSessions bounds the logins one browser keeps in the console cookie.
const maxSessions = 6

// Cookie lifetimes: the console cookie outlives the sessions it holds
// (they expire on their own); a pending session is merged at once.
const (
	cookieTTL  = 30 * 24 * time.Hour
	pendingTTL = 10 * time.Minute
)

// Engine is what the console needs of the login engine (core/auth).
type Engine interface {
	Validate(ctx context.Context, userID string) (connector.ValidationResult, error)
	Logout(ctx context.Context, userID string) (connector.Result, error)
}

// Refresher refreshes a login's access token now (core/refresh).
type Refresher interface {
	ForceRefresh(ctx context.Context, userID string, failedVersion int64) (*store.User, error)
}

// Users reads login records.
type Users interface {
	GetUser(ctx context.Context, id string) (*store.User, error)
}

// Sessions issues and verifies App Connect session tokens (core/session).
type Sessions interface {
	IssueAppConnect(ctx context.Context, userID, appConnectID, platform string, host store.HostIdentity) (string, *session.Claims, error)
	VerifyAppConnect(ctx context.Context, token string) (*session.Claims, error)
}

// Options configure New.
type Options struct {
	Engine    Engine
	Refresher Refresher
	Users     Users
	Sessions  Sessions
	// Connect is the shared connect flow; New adds the console's
	// completer to it.
	Connect  *connect.Handler
	Registry *registry.Registry
	// PublicURL is CONNECTD_PUBLIC_URL: the connect flow's cookies live on
	// its host, so the console redirects loopback aliases there.
	PublicURL string
	// Demo tells which platforms are demo connectors (labelled as such).
	// Nil: none.
	Demo   func(platform string) bool
	Clock  clock.Clock
	Logger hclog.Logger
}

// Surface is the console.
type Surface struct {
	o      Options
	public *url.URL
	secure bool
}

var _ server.Surface = (*Surface)(nil)

// New returns the console and registers its completer on o.Connect.
func New(o Options) (*Surface, error) {
	if o.Engine == nil || o.Refresher == nil || o.Users == nil || o.Sessions == nil || o.Connect == nil || o.Registry == nil {
		return nil, errors.New("console: Engine, Refresher, Users, Sessions, Connect and Registry are required")
	}
	pub, err := url.Parse(strings.TrimRight(o.PublicURL, "/"))
	if err != nil || (pub.Scheme != "http" && pub.Scheme != "https") || pub.Host == "" {
		return nil, fmt.Errorf("console: PublicURL %q is not an http(s) URL", o.PublicURL)
	}
	if o.Demo == nil {
		o.Demo = func(string) bool { return false }
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	s := &Surface{o: o, public: pub, secure: pub.Scheme == "https"}
	if o.Connect.Completers == nil {
		o.Connect.Completers = map[string]connect.Completer{}
	}
	o.Connect.Completers[SurfaceName] = s.complete
	return s, nil
}

// Register implements server.Surface.
func (s *Surface) Register(r gin.IRouter, mw server.Middlewares) {
	r.GET("/console", s.page)
	r.GET("/console/assets/console.js", asset("assets/console.js", "text/javascript; charset=utf-8"))
	r.GET("/console/assets/console.css", asset("assets/console.css", "text/css; charset=utf-8"))
	r.GET("/console/assets/icon.svg", asset("assets/icon.svg", "image/svg+xml"))
	api := r.Group("/console/api", sameOrigin(s.public))
	api.GET("/sessions", s.listSessions)
	api.POST("/login", mw.Limiter.PerIP(), s.login)
	api.POST("/validate", s.validate)
	api.POST("/refresh", s.refresh)
	api.POST("/logout", s.logout)
}

// sameOrigin refuses cross-site calls of the JSON API: a browser always
// sends Origin on POST and Sec-Fetch-Site on modern engines; a JSON
// content type cannot be sent cross-site without a CORS preflight, which
// connectd does not grant to other origins.
func sameOrigin(public *url.URL) gin.HandlerFunc {
	return func(c *gin.Context) {
		if site := c.GetHeader("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
			httpx.WriteError(c, http.StatusForbidden, failure.Forbidden, "Cross-site requests are not allowed.")
			return
		}
		if origin := c.GetHeader("Origin"); origin != "" {
			own := "http://" + c.Request.Host
			if c.Request.TLS != nil {
				own = "https://" + c.Request.Host
			}
			if !strings.EqualFold(origin, own) && !strings.EqualFold(origin, public.Scheme+"://"+public.Host) {
				httpx.WriteError(c, http.StatusForbidden, failure.Forbidden, "Cross-origin requests are not allowed.")
				return
			}
		}
		if c.Request.Method == http.MethodPost && !strings.HasPrefix(c.ContentType(), "application/json") {
			httpx.WriteError(c, http.StatusUnsupportedMediaType, failure.InvalidRequest, "Send JSON (Content-Type: application/json).")
			return
		}
		c.Next()
	}
}

// loopbackAlias reports whether host (host[:port] of a request) is another
// loopback name for the public URL's host, e.g. 127.0.0.1:8080 for
// localhost:8080: cookies set under one are not sent to the other, so the
// console sends the browser to the public URL first.
func (s *Surface) loopbackAlias(host string) bool {
	if strings.EqualFold(host, s.public.Host) {
		return false
	}
	h, p, err := net.SplitHostPort(host)
	if err != nil {
		h, p = host, ""
	}
	pp := s.public.Port()
	if pp == "" {
		pp = map[string]string{"http": "80", "https": "443"}[s.public.Scheme]
	}
	if p == "" {
		p = map[string]string{"http": "80", "https": "443"}[s.public.Scheme]
	}
	return p == pp && isLoopback(h) && isLoopback(s.public.Hostname())
}

func isLoopback(h string) bool {
	h = strings.Trim(strings.ToLower(h), "[]")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// login body: the platform to log in to.
type loginBody struct {
	Platform string `json:"platform"`
}

// POST /console/api/login {platform} -> {url}: starts the connect flow for
// this browser (the binding cookie is set on this response); the page
// then navigates to the CRM's authorize page or connectd's API-key form.
func (s *Surface) login(c *gin.Context) {
	var b loginBody
	if err := httpx.DecodeJSONStrict(c, &b); err != nil {
		httpx.Fail(c, err)
		return
	}
	started, err := s.o.Connect.StartURL(c, auth.ConnectRequest{Platform: b.Platform, Surface: SurfaceName})
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"url": started.AuthURL})
}

// complete finishes a console login: an App Connect session is issued for
// it and the browser goes back to the console. The console cookie is
// scoped to /console and so not sent here (/oauth/callback, the API-key
// form); the new session waits in a pending cookie that the console merges
// on its next request.
func (s *Surface) complete(c *gin.Context, res *auth.LoginResult) {
	u := res.User
	tok, cl, err := s.o.Sessions.IssueAppConnect(c.Request.Context(), u.ID, u.AppConnectID, u.Platform, u.Host)
	if err != nil {
		httpx.Logger(c).Error("console: issuing the session failed", "error", err)
		c.Header("Content-Type", "text/plain; charset=utf-8")
		c.String(http.StatusServiceUnavailable, "The login worked but its session could not be created. Please retry.")
		return
	}
	http.SetCookie(c.Writer, &http.Cookie{
		Name: PendingCookieName, Value: tok, Path: "/console",
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode,
		MaxAge: int(pendingTTL.Seconds()),
	})
	s.o.Logger.Info("console login", "platform", u.Platform, "user", u.ID, "session", cl.SessionID)
	c.Redirect(http.StatusSeeOther, "/console#session-"+cl.SessionID)
}

// entry is one live session of the browser's console cookie.
type entry struct {
	token  string
	claims *session.Claims
}

// entries returns the browser's console sessions that still verify, the
// pending one first; revoked and expired ones are dropped, and a newer
// session of a login replaces older ones.
func (s *Surface) entries(c *gin.Context) []entry {
	var raw []string
	if v, err := c.Cookie(PendingCookieName); err == nil && v != "" {
		raw = append(raw, v)
	}
	if v, err := c.Cookie(CookieName); err == nil && v != "" {
		raw = append(raw, strings.Split(v, "|")...)
	}
	var out []entry
	seen := map[string]bool{}
	for _, tok := range raw {
		if tok == "" || len(out) >= maxSessions {
			continue
		}
		cl, err := s.o.Sessions.VerifyAppConnect(c.Request.Context(), tok)
		if err != nil || seen[cl.Subject] {
			continue
		}
		seen[cl.Subject] = true
		out = append(out, entry{token: tok, claims: cl})
	}
	return out
}

// syncCookie stores live as the console cookie (clearing it when empty)
// when it differs from what the browser sent, and drops the pending one.
func (s *Surface) syncCookie(c *gin.Context, live []entry) {
	tokens := make([]string, len(live))
	for i, e := range live {
		tokens[i] = e.token
	}
	if pending, err := c.Cookie(PendingCookieName); err == nil && pending != "" {
		http.SetCookie(c.Writer, &http.Cookie{Name: PendingCookieName, Path: "/console", MaxAge: -1, HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode})
	}
	raw, _ := c.Cookie(CookieName)
	if strings.Join(tokens, "|") == raw {
		return
	}
	ck := &http.Cookie{
		Name: CookieName, Value: strings.Join(tokens, "|"), Path: "/console",
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode,
		MaxAge: int(cookieTTL.Seconds()),
	}
	if len(tokens) == 0 {
		ck.Value, ck.MaxAge = "", -1
	}
	http.SetCookie(c.Writer, ck)
}

// sessionRequest names one of the browser's console sessions by id.
type sessionRequest struct {
	Session string `json:"session"`
}

// find decodes the body and returns the named live session.
func (s *Surface) find(c *gin.Context) (entry, bool) {
	var b sessionRequest
	if err := httpx.DecodeJSONStrict(c, &b); err != nil {
		httpx.Fail(c, err)
		return entry{}, false
	}
	live := s.entries(c)
	s.syncCookie(c, live)
	for _, e := range live {
		if e.claims.SessionID == b.Session && b.Session != "" {
			return e, true
		}
	}
	httpx.WriteError(c, http.StatusNotFound, failure.NotFound, "This login is not in your console any more (logged out or expired). Reload the page.")
	return entry{}, false
}
