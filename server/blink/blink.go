// Package blink is the Blink surface (seed 002): connectd plays a Blink
// authenticated app's backend for any connector. Each operator-configured
// app is served under /blink/<app name>/ (Blink's "proxy URL"):
//
//   - POST /blink/<app>/auth/<auth_id> answers {"code":"OK",...,"data":
//     {"authorization_url": ...}}. The URL is a one-time start link
//     (/blink/<app>/connect?t=<token>) because Blink opens it in the user's
//     browser, not through the proxy that called us: only that browser
//     request can set the connect flow's binding cookie. The token is
//     random (256 bits), carried in the query (access logs leave it out),
//     stored as a hash, single use, short lived and bound to the Blink
//     user and auth id.
//   - GET /blink/<app>/connect?t=<token> consumes the token and starts the
//     shared connect flow (server/connect): upstream OAuth with state and
//     PKCE, or connectd's API-key form. After the login the "blink"
//     completer records the linked account and queues "Add User Linked
//     Account"; the completion page says the window can be closed.
//   - DELETE /blink/<app>/linked-accounts/<id> (Blink's linked account
//     id) revokes the login (engine Logout: credentials cleared, upstream
//     revocation) and queues "Delete User Linked Account".
//
// Proxied routes authenticate Blink by the app's proxy secret (current or
// previous), compared in constant time over SHA-256 digests; the Blink user
// id header is trusted only after that. Errors use Blink's {code, message}
// envelope.
//
// Every call to Blink's API is a durable job (core/jobs) with retries and
// backoff, so a Blink outage never loses a login: the credentials are
// stored first and the linked account is delivered when Blink answers.
// Sync (periodic) and UserChanged (a hook) push requires_reauth and, for
// apps that share tokens, the refreshed access token when a user record
// changes. The operator manages apps with Command ("connectd blink ...").
//
// Where Blink's API reference leaves details open, they are per-app
// settings (store.BlinkAPISettings) with these defaults: POST
// <api>/users/{user_id}/linked-accounts to add (Blink's id read from
// data.id, data.linked_account_id, id or linked_account_id), DELETE
// <api>/users/{user_id}/linked-accounts/{linked_account_id} to delete,
// PATCH on the same path to update; the API token is sent as
// "Authorization: Bearer", and every Add carries an Idempotency-Key.
package blink

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/connectd/connectd/core/auth"
	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/connect"
	"github.com/connectd/connectd/server/httpx"
)

// SurfaceName is the connect flow surface (flow.Surface) of Blink
// connects, and HostKind the host kind of the user records they create.
const (
	SurfaceName = "blink"
	HostKind    = "blink"
)

// Headers Blink's proxy adds to every request.
const (
	HeaderProxySecret = "blink-auth-proxysecret"
	HeaderUserID      = "blink-auth-userid"
)

// Envelope codes.
const (
	CodeOK           = "OK"
	CodeBadRequest   = "BAD_REQUEST"
	CodeUnauthorized = "UNAUTHORIZED"
	CodeNotFound     = "NOT_FOUND"
	CodeUnavailable  = "SERVICE_UNAVAILABLE"
	CodeInternal     = "INTERNAL_ERROR"
)

// DefaultStartTTL bounds a start link (Blink opens it at once).
const DefaultStartTTL = 5 * time.Minute

// Store is what the surface needs from storage.
type Store interface {
	store.Blink
	store.Users
	store.Jobs
}

// Options configure New.
type Options struct {
	Store Store
	// Engine revokes logins on disconnect (Engine.Logout).
	Engine *auth.Engine
	// Connect is the shared connect flow: New adds the "blink" completer.
	Connect *connect.Handler
	// HTTP calls Blink's API: the engine's outbound client (timeouts,
	// SSRF guard, size cap).
	HTTP *http.Client
	// PublicURL is connectd's external base URL (start links).
	PublicURL string
	// Getenv reads the secrets the apps name (proxy secrets, API tokens).
	Getenv func(string) string
	Clock  clock.Clock
	Logger hclog.Logger
	// Registerer receives the Blink metrics (nil: none).
	Registerer prometheus.Registerer
	// StartTTL bounds start links (default 5 minutes, at most the
	// connect flow's lifetime).
	StartTTL time.Duration
	// JobLifetime bounds retries of one Blink call (default 7 days).
	JobLifetime time.Duration
}

// Surface serves the Blink routes and runs the Blink jobs.
type Surface struct {
	o       Options
	log     hclog.Logger
	metrics *metrics
}

// New returns the surface and registers its completer with o.Connect.
func New(o Options) (*Surface, error) {
	if o.Store == nil || o.Engine == nil || o.Connect == nil || o.HTTP == nil {
		return nil, errors.New("blink: Store, Engine, Connect and HTTP are required")
	}
	if o.PublicURL == "" {
		return nil, errors.New("blink: PublicURL is required")
	}
	if o.Getenv == nil {
		return nil, errors.New("blink: Getenv is required (secrets come from the environment)")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.StartTTL <= 0 || o.StartTTL > auth.MaxFlowTTL {
		o.StartTTL = DefaultStartTTL
	}
	if o.JobLifetime <= 0 {
		o.JobLifetime = 7 * 24 * time.Hour
	}
	o.PublicURL = strings.TrimRight(o.PublicURL, "/")
	s := &Surface{o: o, log: o.Logger}
	m, err := newMetrics(o.Store, o.Registerer)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	if o.Connect.Completers == nil {
		o.Connect.Completers = map[string]connect.Completer{}
	}
	o.Connect.Completers[SurfaceName] = s.complete
	return s, nil
}

// Register implements server.Surface.
func (s *Surface) Register(r gin.IRouter, mw server.Middlewares) {
	g := r.Group("/blink/:app")
	g.POST("/auth/:auth_id", s.proxied, s.startAuth)
	g.DELETE("/linked-accounts/:id", s.proxied, s.deleteLinked)
	g.GET("/connect", mw.Limiter.PerIP(), s.openStart)
}

// envelope is Blink's response shape.
type envelope struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

func fail(c *gin.Context, status int, code, message string) {
	c.Header("Cache-Control", "no-store")
	c.AbortWithStatusJSON(status, envelope{Code: code, Message: message})
}

// failWith answers an engine or store error in the envelope; 5xx are
// logged with their cause, which never reaches the response.
func failWith(c *gin.Context, what string, err error) {
	code := failure.CodeOf(err)
	status := httpx.StatusOf(code)
	if errors.Is(err, store.ErrUnavailable) {
		status = http.StatusServiceUnavailable
	}
	env := CodeInternal
	msg := "Something went wrong. Please try again."
	switch {
	case status == http.StatusServiceUnavailable:
		env, msg = CodeUnavailable, "The service is temporarily unavailable. Please try again."
	case status == http.StatusNotFound:
		env, msg = CodeNotFound, failure.MessageOf(err)
	case status < 500:
		env, msg = CodeBadRequest, failure.MessageOf(err)
	}
	if status >= 500 {
		httpx.Logger(c).Error("blink request failed", "step", what, "error", err)
	}
	fail(c, status, env, msg)
}

var (
	appNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	// Blink's ids: opaque strings. Accept a conservative alphabet.
	idRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$`)
)

// ValidAppName reports whether name can be an app's path segment.
func ValidAppName(name string) bool { return appNameRe.MatchString(name) }

const ctxApp = "blink.app"
const ctxUser = "blink.user"

// proxied authenticates Blink's proxy: the app's proxy secret (current
// or previous), then the user id header.
func (s *Surface) proxied(c *gin.Context) {
	name := c.Param("app")
	if !appNameRe.MatchString(name) {
		fail(c, http.StatusNotFound, CodeNotFound, "Unknown app.")
		return
	}
	app, err := s.o.Store.GetBlinkAppByName(c.Request.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		fail(c, http.StatusNotFound, CodeNotFound, "Unknown app.")
		return
	}
	if err != nil {
		failWith(c, "read app", err)
		return
	}
	given := c.GetHeader(HeaderProxySecret)
	current := s.o.Getenv(app.ProxySecretEnv)
	previous := ""
	if app.PreviousProxySecretEnv != "" {
		previous = s.o.Getenv(app.PreviousProxySecretEnv)
	}
	// Both comparisons always run; no early return on length.
	if secretMatch(given, current)|secretMatch(given, previous) != 1 {
		s.metrics.inbound.WithLabelValues(app.Name, "unauthorized").Inc()
		fail(c, http.StatusUnauthorized, CodeUnauthorized, "The proxy secret is missing or wrong.")
		return
	}
	user := c.GetHeader(HeaderUserID)
	if !idRe.MatchString(user) {
		s.metrics.inbound.WithLabelValues(app.Name, "bad_request").Inc()
		fail(c, http.StatusBadRequest, CodeBadRequest, "The "+HeaderUserID+" header is missing or malformed.")
		return
	}
	c.Set(ctxApp, app)
	c.Set(ctxUser, user)
	c.Next()
}

// secretMatch compares SHA-256 digests in constant time; an empty
// expected secret (variable unset) never matches. Returns 1 on a match.
func secretMatch(given, expected string) int {
	g := sha256.Sum256([]byte(given))
	e := sha256.Sum256([]byte(expected))
	eq := subtle.ConstantTimeCompare(g[:], e[:])
	nonEmpty := subtle.ConstantTimeEq(int32(min(len(expected), 1)), 1)
	return eq & nonEmpty
}

// POST /blink/<app>/auth/<auth_id>
func (s *Surface) startAuth(c *gin.Context) {
	app := c.MustGet(ctxApp).(*store.BlinkApp)
	user := c.GetString(ctxUser)
	authID := c.Param("auth_id")
	if !idRe.MatchString(authID) {
		fail(c, http.StatusBadRequest, CodeBadRequest, "The auth id is malformed.")
		return
	}
	if subtle.ConstantTimeCompare([]byte(authID), []byte(app.AuthID)) != 1 {
		s.metrics.inbound.WithLabelValues(app.Name, "not_found").Inc()
		fail(c, http.StatusNotFound, CodeNotFound, "Unknown auth id.")
		return
	}
	token := newToken()
	if err := s.o.Store.CreateBlinkStart(c.Request.Context(), &store.BlinkStart{
		TokenHash: tokenHash(token), AppID: app.ID, BlinkUserID: user, AuthID: authID,
		ExpiresAt: s.o.Clock.Now().Add(s.o.StartTTL),
	}); err != nil {
		failWith(c, "create start link", err)
		return
	}
	s.metrics.inbound.WithLabelValues(app.Name, "auth_started").Inc()
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, envelope{Code: CodeOK, Message: "OK", Data: map[string]string{
		// The token rides in the query: access logs record paths only.
		"authorization_url": s.o.PublicURL + "/blink/" + app.Name + "/connect?t=" + token,
	}})
}

// GET /blink/<app>/connect?t=<token>: Blink opened the start link in the
// user's browser.
func (s *Surface) openStart(c *gin.Context) {
	ctx := c.Request.Context()
	name, token := c.Param("app"), c.Query("t")
	if !appNameRe.MatchString(name) || !validToken(token) {
		s.page(c, http.StatusBadRequest, "This link is not valid. Press Connect in Blink again.")
		return
	}
	st, err := s.o.Store.ConsumeBlinkStart(ctx, tokenHash(token))
	if errors.Is(err, store.ErrNotFound) {
		s.page(c, http.StatusBadRequest, "This link was already used or has expired. Press Connect in Blink again.")
		return
	}
	if err != nil {
		httpx.Logger(c).Error("consuming a blink start link failed", "error", err)
		s.page(c, http.StatusServiceUnavailable, "The service is temporarily unavailable. Please try again.")
		return
	}
	app, err := s.o.Store.GetBlinkApp(ctx, st.AppID)
	if err != nil || app.Name != name || app.AuthID != st.AuthID {
		s.page(c, http.StatusNotFound, "This app is no longer available.")
		return
	}
	s.o.Connect.Start(c, auth.ConnectRequest{
		Platform: app.Connector,
		Host:     &store.HostIdentity{Kind: HostKind, AccountID: app.ID, UserID: st.BlinkUserID},
		Surface:  SurfaceName,
		Data:     map[string]string{"app_id": app.ID, "blink_user_id": st.BlinkUserID, "auth_id": st.AuthID},
	})
}

// complete is the connect flow's completer: the login is stored; record
// the linked account, queue the call to Blink and show the completion
// page. A failure to queue is logged and caught by Sync; it never undoes
// the login.
func (s *Surface) complete(c *gin.Context, res *auth.LoginResult) {
	ctx := c.Request.Context()
	d := res.Flow.Data
	appID, blinkUser := d["app_id"], d["blink_user_id"]
	want := store.HostIdentity{Kind: HostKind, AccountID: appID, UserID: blinkUser}
	if appID == "" || blinkUser == "" || res.User.Host != want {
		httpx.Logger(c).Error("blink connect completed with an inconsistent flow", "flow_surface", res.Flow.Surface)
		s.page(c, http.StatusBadRequest, "This login cannot be linked to Blink. Press Connect in Blink again.")
		return
	}
	if _, err := s.o.Store.GetBlinkApp(ctx, appID); err != nil {
		// Deleted by the operator during the login: nothing to link to.
		httpx.Logger(c).Warn("blink connect completed for an app that is gone; the login is kept", "user_id", res.User.ID, "error", err)
		s.page(c, http.StatusNotFound, "This app is no longer available in Blink.")
		return
	}
	link, err := s.o.Store.UpsertBlinkLink(ctx, &store.BlinkLink{
		AppID: appID, BlinkUserID: blinkUser, UserID: res.User.ID, ExternalAccountID: res.User.CRMUserID,
	})
	if err != nil {
		httpx.Logger(c).Error("recording the blink linked account failed; the login is kept", "user_id", res.User.ID, "error", err)
		s.page(c, http.StatusServiceUnavailable, "You are signed in, but Blink could not be updated yet. Please press Connect in Blink again in a moment.")
		return
	}
	if err := s.enqueuePush(ctx, link, res.User); err != nil {
		httpx.Logger(c).Warn("queueing the blink linked account failed; sync will retry", "link_id", link.ID, "error", err)
	}
	s.o.Connect.Done(c, res, "You can now return to Blink.")
}

// DELETE /blink/<app>/linked-accounts/<id>
func (s *Surface) deleteLinked(c *gin.Context) {
	ctx := c.Request.Context()
	app := c.MustGet(ctxApp).(*store.BlinkApp)
	user := c.GetString(ctxUser)
	id := c.Param("id")
	if !idRe.MatchString(id) {
		fail(c, http.StatusBadRequest, CodeBadRequest, "The linked account id is malformed.")
		return
	}
	link, err := s.o.Store.FindBlinkLink(ctx, app.ID, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && subtle.ConstantTimeCompare([]byte(link.BlinkUserID), []byte(user)) != 1) {
		s.metrics.inbound.WithLabelValues(app.Name, "not_found").Inc()
		fail(c, http.StatusNotFound, CodeNotFound, "Unknown linked account.")
		return
	}
	if err != nil {
		failWith(c, "find link", err)
		return
	}
	if link.State != store.BlinkLinkDeleting {
		// Revoke first: if anything below fails, Blink's retry finds the
		// credentials already gone and finishes the rest.
		if _, err := s.o.Engine.Logout(ctx, link.UserID); err != nil && failure.CodeOf(err) != failure.NeedsReauth {
			failWith(c, "logout", err)
			return
		}
		if err := s.o.Store.MarkBlinkLinkDeleting(ctx, link.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
			failWith(c, "mark deleting", err)
			return
		}
	}
	if err := s.enqueueDelete(ctx, link); err != nil {
		failWith(c, "queue delete", err)
		return
	}
	s.metrics.inbound.WithLabelValues(app.Name, "disconnected").Inc()
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, envelope{Code: CodeOK, Message: "OK"})
}

// newToken returns 256 random bits, URL-safe.
func newToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("blink: crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func validToken(t string) bool {
	if len(t) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(t)
	return err == nil
}

// tokenHash is what the store keeps of a start token.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte("connectd blink start\x00" + token))
	return hex.EncodeToString(sum[:])
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Blink connect</title><style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}</style></head>
<body><h1>Could not connect</h1><p id="message">{{.}}</p></body></html>`))

// page renders a small error page with the connect pages' headers.
func (s *Surface) page(c *gin.Context, status int, msg string) {
	c.Header("Cache-Control", "no-store")
	c.Header("Referrer-Policy", "no-referrer")
	c.Header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	c.Header("X-Frame-Options", "DENY")
	c.Header("X-Content-Type-Options", "nosniff")
	c.Header("Content-Type", "text/html; charset=utf-8")
	c.Status(status)
	if err := pageTmpl.Execute(c.Writer, msg); err != nil {
		s.log.Error("rendering blink page failed", "error", err)
	}
	c.Abort()
}

var _ server.Surface = (*Surface)(nil)

func errorf(format string, a ...any) error { return fmt.Errorf("blink: "+format, a...) }
