// Package plugins serves connectd as an App Connect plugin server: the
// seed's routes (contract A: /plugins/generateAuthUrl|checkAuth|logout|
// licenseStatus/:pluginId and /plugin/:pluginId) and App Connect's current
// manifest-URL protocol (contract B, under /plugins/v2/:pluginId/). It
// parses and authenticates; core/plugin runs the plugins, the durable
// tasks and the licences, and the shared connect flow (server/connect)
// runs a plugin's own third-party login.
//
// Who the caller is:
//   - contract A: an App Connect session JWT (Authorization: Bearer,
//     ?jwtToken=, or the logout body) - connectd's own sessions, or, for a
//     plugin configured so, a JWT of another App Connect server (HS256 with
//     a shared secret; alg pinned, exp required);
//   - contract B: register proves a RingCentral token whose account equals
//     rcAccountId; every other call carries the plugin bearer it returned,
//     whose plugin must be the plugin called (403 otherwise).
//
// A plugin login belongs to the authenticated caller (its "owner key"):
// the session's user, the external App Connect user, or the bearer's
// session. Header hints (hashedExtensionId, rc-extension-id, ...) are never
// used to find one.
package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/auth"
	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/plugin"
	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/connect"
	"github.com/connectd/connectd/server/httpx"
)

// SurfaceName is the connect-flow surface of plugin logins.
const SurfaceName = "plugins"

// HostKindPlugin scopes the user records of plugin logins: their host
// account is the owner key, so two owners never share (or log out) one
// record even when they connect the same third-party account.
const HostKindPlugin = "plugin"

// RefreshedTokenHeader carries a rotated plugin bearer (contract B).
const RefreshedTokenHeader = "X-Refreshed-JWT-Token"

// DefaultBodyLimit caps a process request body.
const DefaultBodyLimit = 512 << 10

// ticketPurpose marks the flow row behind a generateAuthUrl link: a
// single-use, short-lived ticket naming the caller, consumed when the
// browser opens the link (which then starts the real connect flow with
// its binding cookie).
const ticketPurpose = "plugin_ticket"

const ticketTTL = 10 * time.Minute

// HostVerifier verifies a RingCentral access token (core/identity): it
// returns the host identity the token belongs to; a bad token is
// failure.Unauthenticated, an unreachable host failure.UpstreamUnavailable.
type HostVerifier interface {
	VerifyHost(ctx context.Context, token string) (*store.HostIdentity, error)
}

// Store is what the surface stores itself (flows for tickets, plugin
// logins, installs).
type Store interface {
	store.Flows
	store.PluginLogins
	store.PluginInstalls
}

// ExternalJWT lets a plugin accept session JWTs issued by another App
// Connect server (contract A), signed HS256 with a shared secret.
type ExternalJWT struct {
	// SecretEnv names the environment variable holding the shared secret
	// (at least 32 bytes). Read once at New.
	SecretEnv string
	// Issuer, when set, must equal the token's iss.
	Issuer string
}

// Options configures the surface.
type Options struct {
	Plugins  *plugin.Service
	Auth     *auth.Engine
	Connect  *connect.Handler
	Sessions *session.Manager
	Store    Store
	Hosts    HostVerifier
	// PublicURL is connectd's external base URL (links it hands out).
	PublicURL string
	// External maps plugin ids to their external JWT settings.
	External map[string]ExternalJWT
	// Getenv reads External secrets (default: nothing is set).
	Getenv func(string) string
	// BodyLimit caps process bodies (default 512 KiB).
	BodyLimit int64
	Clock     clock.Clock
	Logger    hclog.Logger
}

// Surface serves the plugin routes.
type Surface struct {
	o        Options
	log      hclog.Logger
	external map[string]*externalVerifier
}

// New checks the options and returns the surface. It adds the plugin
// login completer to the connect handler.
func New(o Options) (*Surface, error) {
	if o.Plugins == nil || o.Auth == nil || o.Connect == nil || o.Sessions == nil || o.Store == nil {
		return nil, errors.New("plugins: Plugins, Auth, Connect, Sessions and Store are required")
	}
	if o.PublicURL == "" {
		return nil, errors.New("plugins: PublicURL is required")
	}
	if o.Getenv == nil {
		o.Getenv = func(string) string { return "" }
	}
	if o.BodyLimit <= 0 {
		o.BodyLimit = DefaultBodyLimit
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	s := &Surface{o: o, log: o.Logger, external: map[string]*externalVerifier{}}
	for id, e := range o.External {
		v, err := newExternalVerifier(id, e, o.Getenv, o.Clock)
		if err != nil {
			return nil, err
		}
		s.external[id] = v
	}
	if o.Connect.Completers == nil {
		o.Connect.Completers = map[string]connect.Completer{}
	}
	o.Connect.Completers[SurfaceName] = s.completeLogin
	return s, nil
}

// Register implements server.Surface.
func (s *Surface) Register(r gin.IRouter, mw server.Middlewares) {
	login := mw.Limiter.PerIP()
	// Contract A.
	r.GET("/plugins/generateAuthUrl/:pluginId", s.a(s.generateAuthURL))
	r.GET("/plugins/checkAuth/:pluginId", s.a(s.checkAuth))
	r.POST("/plugins/logout/:pluginId", s.logoutA)
	r.GET("/plugins/licenseStatus/:pluginId", s.licenseA)
	r.POST("/plugin/:pluginId", s.a(s.process))
	r.GET("/plugin/:pluginId/tasks/:taskId", s.a(s.task))
	// The link behind the Connect button (opened in the browser).
	r.GET("/plugins/connect/:pluginId", login, s.startConnect)
	// Contract B.
	v2 := r.Group("/plugins/v2/:pluginId")
	v2.POST("/register", login, s.register)
	v2.POST("/process", s.b(s.process))
	v2.POST("/token-sync", s.b(s.tokenSync))
	v2.GET("/license", s.b(s.licenseB))
	v2.GET("/tasks/:taskId", s.b(s.task))
	v2.GET("/auth-url", s.browser(s.generateAuthURL))
	v2.GET("/auth-state", s.browser(s.authState))
	v2.POST("/logout", s.browser(s.logoutB))
}

// caller is an authenticated plugin caller.
type caller struct {
	plugin   *plugin.Plugin
	owner    string
	host     *store.HostIdentity
	contract string
}

type handler func(c *gin.Context, who *caller)

func (s *Surface) lookup(c *gin.Context) (*plugin.Plugin, bool) {
	p, err := s.o.Plugins.Lookup(c.Param("pluginId"))
	if err != nil {
		httpx.Fail(c, err)
		return nil, false
	}
	return p, true
}

// a wraps a contract-A route: an App Connect session is required.
func (s *Surface) a(h handler) gin.HandlerFunc {
	return func(c *gin.Context) {
		p, ok := s.lookup(c)
		if !ok {
			return
		}
		who, err := s.sessionCaller(c.Request.Context(), p, tokenFrom(c, ""))
		if err != nil {
			httpx.Fail(c, err)
			return
		}
		h(c, who)
	}
}

// b wraps a contract-B route: the plugin bearer of THIS plugin.
func (s *Surface) b(h handler) gin.HandlerFunc {
	return func(c *gin.Context) {
		p, ok := s.lookup(c)
		if !ok {
			return
		}
		who, ok := s.bearerCaller(c, p, true)
		if !ok {
			return
		}
		h(c, who)
	}
}

// browser wraps contract B's auth routes: the plugin bearer when one is
// sent, else an App Connect session (?jwtToken=).
func (s *Surface) browser(h handler) gin.HandlerFunc {
	return func(c *gin.Context) {
		p, ok := s.lookup(c)
		if !ok {
			return
		}
		if bearer(c) != "" {
			who, ok := s.bearerCaller(c, p, true)
			if ok {
				h(c, who)
			}
			return
		}
		who, err := s.sessionCaller(c.Request.Context(), p, c.Query("jwtToken"))
		if err != nil {
			httpx.Fail(c, err)
			return
		}
		who.contract = plugin.ContractB
		h(c, who)
	}
}

func bearer(c *gin.Context) string {
	v := c.GetHeader("Authorization")
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return ""
}

// tokenFrom finds a contract-A session token: bearer, ?jwtToken=, or the
// body value given.
func tokenFrom(c *gin.Context, body string) string {
	if t := bearer(c); t != "" {
		return t
	}
	if t := c.Query("jwtToken"); t != "" {
		return t
	}
	return body
}

// sessionCaller verifies a contract-A session: connectd's own, or the
// plugin's external App Connect issuer.
func (s *Surface) sessionCaller(ctx context.Context, p *plugin.Plugin, token string) (*caller, error) {
	if token == "" {
		return nil, failure.Newf(failure.Unauthenticated, "A session token (jwtToken) is required.")
	}
	cl, err := s.o.Sessions.VerifyAppConnect(ctx, token)
	if err == nil {
		host := cl.Host
		return &caller{plugin: p, owner: "session-user:" + cl.Subject, host: &host, contract: plugin.ContractA}, nil
	}
	if !failure.Is(err, failure.Unauthenticated) {
		return nil, err
	}
	if ev, ok := s.external[p.ID]; ok {
		id, xerr := ev.verify(token)
		if xerr == nil {
			return &caller{plugin: p, owner: "external:" + id, contract: plugin.ContractA}, nil
		}
		s.log.Debug("external session token rejected", "plugin", p.ID, "error", xerr)
	}
	return nil, err
}

// bearerCaller verifies the plugin bearer, answering 401/403 itself, and
// rotates it when due.
func (s *Surface) bearerCaller(c *gin.Context, p *plugin.Plugin, rotate bool) (*caller, bool) {
	tok := bearer(c)
	if tok == "" {
		httpx.WriteError(c, http.StatusUnauthorized, failure.Unauthenticated, "Bearer token is required.")
		return nil, false
	}
	cl, err := s.o.Sessions.VerifyPlugin(c.Request.Context(), tok, p.ID)
	switch {
	case errors.Is(err, session.ErrWrongAudience):
		httpx.WriteError(c, http.StatusForbidden, failure.Forbidden, "This bearer token was issued for another plugin.")
		return nil, false
	case failure.Is(err, failure.Unauthenticated):
		httpx.WriteError(c, http.StatusUnauthorized, failure.Unauthenticated, "Invalid bearer token.")
		return nil, false
	case err != nil:
		httpx.Fail(c, err)
		return nil, false
	}
	if rotate && s.o.Sessions.NeedsRenewal(cl) {
		if fresh, err := s.o.Sessions.Reissue(c.Request.Context(), cl); err == nil {
			c.Header(RefreshedTokenHeader, fresh)
		} else {
			httpx.Logger(c).Warn("plugin bearer rotation failed", "plugin", p.ID, "error", err)
		}
	}
	host := cl.Host
	return &caller{plugin: p, owner: "bearer:" + cl.SessionID, host: &host, contract: plugin.ContractB}, true
}

// ---- Connect button -------------------------------------------------

// generateAuthURL answers {authUrl}: a single-use link to connectd that,
// opened in the browser, starts the plugin's login for this caller.
func (s *Surface) generateAuthURL(c *gin.Context, who *caller) {
	if !who.plugin.NeedsLogin() {
		httpx.WriteError(c, http.StatusBadRequest, failure.InvalidRequest, "This plugin has no login.")
		return
	}
	f := &store.OAuthFlow{
		ID: auth.NewState(), Platform: who.plugin.ID, Purpose: ticketPurpose, Surface: SurfaceName,
		Data:      map[string]string{"owner": who.owner},
		ExpiresAt: s.o.Clock.Now().Add(ticketTTL),
	}
	if who.host != nil {
		f.Host = *who.host
	}
	if err := s.o.Store.CreateFlow(c.Request.Context(), f); err != nil {
		httpx.Fail(c, failure.New(failure.Unavailable, "The login could not be started; please retry.", err))
		return
	}
	u := s.o.PublicURL + "/plugins/connect/" + url.PathEscape(who.plugin.ID) + "?ticket=" + url.QueryEscape(f.ID)
	c.JSON(http.StatusOK, gin.H{"authUrl": u})
}

// startConnect consumes the ticket and starts the connect flow (binding
// cookie, state, PKCE) for the ticket's owner.
func (s *Surface) startConnect(c *gin.Context) {
	p, ok := s.lookup(c)
	if !ok {
		return
	}
	t := c.Query("ticket")
	if t == "" || len(t) > 200 {
		httpx.WriteError(c, http.StatusBadRequest, failure.InvalidState, "This link is not valid. Open the plugin settings and press Connect again.")
		return
	}
	f, err := s.o.Store.ConsumeFlow(c.Request.Context(), t)
	if err != nil || f.Purpose != ticketPurpose || f.Platform != p.ID || f.Data["owner"] == "" {
		httpx.WriteError(c, http.StatusBadRequest, failure.InvalidState, "This link has expired or was already used. Open the plugin settings and press Connect again.")
		return
	}
	owner := f.Data["owner"]
	s.o.Connect.Start(c, auth.ConnectRequest{
		Platform: p.ID,
		Host:     &store.HostIdentity{Kind: HostKindPlugin, AccountID: owner},
		Surface:  SurfaceName,
		Data:     map[string]string{"owner": owner, "plugin": p.ID},
	})
}

// completeLogin links the login the connect flow stored to its owner.
func (s *Surface) completeLogin(c *gin.Context, res *auth.LoginResult) {
	owner, pluginID := res.Flow.Data["owner"], res.Flow.Data["plugin"]
	if owner == "" || pluginID == "" || res.Flow.Host.Kind != HostKindPlugin || res.Flow.Host.AccountID != owner {
		httpx.WriteError(c, http.StatusBadRequest, failure.InvalidState, "This login does not belong to a plugin.")
		return
	}
	ctx := c.Request.Context()
	prev, err := s.o.Store.PutPluginLogin(ctx, pluginID, owner, res.User.ID)
	if err != nil {
		httpx.Fail(c, failure.New(failure.Unavailable, "The login could not be saved; please retry.", err))
		return
	}
	if prev != "" && prev != res.User.ID {
		if _, err := s.o.Auth.Logout(ctx, prev); err != nil {
			httpx.Logger(c).Warn("revoking the replaced plugin login failed", "plugin", pluginID, "user", prev, "error", err)
		}
	}
	s.o.Connect.Done(c, res, "You can close this window and return to App Connect.")
}

// checkAuth answers {successful}: is the caller connected?
func (s *Surface) checkAuth(c *gin.Context, who *caller) {
	if !who.plugin.NeedsLogin() {
		c.JSON(http.StatusOK, gin.H{"successful": true})
		return
	}
	u, err := s.o.Plugins.Login(c.Request.Context(), who.plugin.ID, who.owner)
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"successful": u != nil})
}

// authState is contract B's {successful, returnMessage}.
func (s *Surface) authState(c *gin.Context, who *caller) {
	u, err := s.o.Plugins.Login(c.Request.Context(), who.plugin.ID, who.owner)
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	ok := u != nil || !who.plugin.NeedsLogin()
	msg := "Not connected."
	if ok {
		msg = "Connected."
	}
	c.JSON(http.StatusOK, gin.H{"successful": ok, "returnMessage": gin.H{"message": msg, "messageType": "info"}})
}

// logout destroys the caller's plugin login: mapping deleted, record
// revoked (upstream revocation retried by the jobs mechanism).
func (s *Surface) logout(ctx context.Context, who *caller) error {
	pl, err := s.o.Store.DeletePluginLogin(ctx, who.plugin.ID, who.owner)
	if errors.Is(err, store.ErrNotFound) {
		return nil // already logged out: logout is idempotent
	}
	if err != nil {
		return failure.New(failure.Unavailable, "Logout failed; please retry.", err)
	}
	if _, err := s.o.Auth.Logout(ctx, pl.UserID); err != nil && !failure.Is(err, failure.NeedsReauth) {
		return err
	}
	return nil
}

// logoutA: POST /plugins/logout/:pluginId {jwtToken}.
func (s *Surface) logoutA(c *gin.Context) {
	p, ok := s.lookup(c)
	if !ok {
		return
	}
	var body struct {
		JWTToken string `json:"jwtToken"`
	}
	tok := tokenFrom(c, "")
	if tok == "" {
		if err := httpx.DecodeJSON(c, &body); err != nil {
			httpx.Fail(c, err)
			return
		}
		tok = body.JWTToken
	}
	who, err := s.sessionCaller(c.Request.Context(), p, tok)
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	if err := s.logout(c.Request.Context(), who); err != nil {
		httpx.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"successful": true})
}

func (s *Surface) logoutB(c *gin.Context, who *caller) {
	if err := s.logout(c.Request.Context(), who); err != nil {
		httpx.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"successful": true, "returnMessage": gin.H{"message": "Logged out.", "messageType": "success"}})
}

// ---- Licence --------------------------------------------------------

// licenseA: GET /plugins/licenseStatus/:pluginId, session optional.
func (s *Surface) licenseA(c *gin.Context) {
	p, ok := s.lookup(c)
	if !ok {
		return
	}
	var who *caller
	if tok := tokenFrom(c, ""); tok != "" {
		var err error
		if who, err = s.sessionCaller(c.Request.Context(), p, tok); err != nil {
			httpx.Fail(c, err)
			return
		}
	} else {
		who = &caller{plugin: p}
	}
	c.JSON(http.StatusOK, s.o.Plugins.License(c.Request.Context(), p, who.host, who.owner))
}

func (s *Surface) licenseB(c *gin.Context, who *caller) {
	c.JSON(http.StatusOK, s.o.Plugins.License(c.Request.Context(), who.plugin, who.host, who.owner))
}

// ---- Contract B registration -------------------------------------------

// register: POST /plugins/v2/:pluginId/register {rcAccessToken,
// rcAccountId} -> {jwtToken}. Every registration is its own bearer
// session; earlier ones stay valid.
func (s *Surface) register(c *gin.Context) {
	p, ok := s.lookup(c)
	if !ok {
		return
	}
	var body struct {
		RCAccessToken string `json:"rcAccessToken"`
		RCAccountID   string `json:"rcAccountId"`
	}
	if err := httpx.DecodeJSON(c, &body); err != nil {
		httpx.Fail(c, err)
		return
	}
	fail := func(status int, code failure.Code, msg string) { httpx.WriteError(c, status, code, msg) }
	if body.RCAccessToken == "" || body.RCAccountID == "" {
		fail(http.StatusBadRequest, failure.InvalidRequest, "Plugin registration failed: rcAccessToken and rcAccountId are required.")
		return
	}
	// An operator identity token is never a RingCentral token: it is not
	// forwarded and does not register.
	if s.o.Hosts == nil || strings.HasPrefix(body.RCAccessToken, session.IdentityPrefix) {
		fail(http.StatusBadRequest, failure.InvalidRequest, "Plugin registration failed.")
		return
	}
	host, err := s.o.Hosts.VerifyHost(c.Request.Context(), body.RCAccessToken)
	switch {
	case err != nil && (failure.Is(err, failure.UpstreamUnavailable) || failure.Is(err, failure.Unavailable)):
		httpx.Fail(c, err)
		return
	case err != nil || host == nil || host.AccountID == "" || host.Kind != "ringcentral":
		httpx.Logger(c).Debug("plugin registration refused", "plugin", p.ID, "error", err)
		fail(http.StatusBadRequest, failure.InvalidRequest, "Plugin registration failed.")
		return
	case host.AccountID != body.RCAccountID:
		fail(http.StatusForbidden, failure.Forbidden, "rcAccountId mismatch.")
		return
	}
	account := store.HostIdentity{Kind: host.Kind, AccountID: host.AccountID}
	tok, cl, err := s.o.Sessions.IssuePlugin(c.Request.Context(), p.ID, account, "")
	if err != nil {
		httpx.Fail(c, failure.New(failure.Unavailable, "Plugin registration failed; please retry.", err))
		return
	}
	if err := s.o.Store.AddPluginInstall(c.Request.Context(), &store.PluginInstall{PluginID: p.ID, Host: account, SessionID: cl.SessionID}); err != nil {
		httpx.Logger(c).Warn("recording plugin install failed", "plugin", p.ID, "error", err)
	}
	c.JSON(http.StatusOK, gin.H{"jwtToken": tok})
}

func (s *Surface) tokenSync(c *gin.Context, _ *caller) {
	c.JSON(http.StatusOK, gin.H{"successful": true})
}

// ---- Processing -----------------------------------------------------

// processBody is both contracts' process request.
type processBody struct {
	Data              json.RawMessage `json:"data"`
	Config            json.RawMessage `json:"config"`
	AsyncTaskID       string          `json:"asyncTaskId"`
	CallbackURL       string          `json:"callbackUrl"`
	HashedExtensionID string          `json:"hashedExtensionId"` // a hint; never used to authorize
}

// process: POST /plugin/:pluginId (A) and /plugins/v2/:pluginId/process (B).
func (s *Surface) process(c *gin.Context, who *caller) {
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.o.BodyLimit)
	var body processBody
	if err := httpx.DecodeJSON(c, &body); err != nil {
		httpx.Fail(c, err)
		return
	}
	if err := plugin.CheckData(body.Data); err != nil {
		httpx.Fail(c, err)
		return
	}
	if cfg := strings.TrimSpace(string(body.Config)); cfg != "" && cfg != "null" && cfg[0] != '{' {
		httpx.WriteError(c, http.StatusBadRequest, failure.InvalidRequest, "\"config\" must be a JSON object or null.")
		return
	}
	ctx := c.Request.Context()
	p := who.plugin
	if p.Platform.RequireLicense {
		if st := s.o.Plugins.License(ctx, p, who.host, who.owner); !st.LicenseStatus {
			httpx.WriteError(c, http.StatusForbidden, failure.Forbidden, "No valid licence: "+st.LicenseStatusDescription)
			return
		}
	}
	call := plugin.Call{
		PluginID: p.ID, OwnerKey: who.owner, Contract: who.contract,
		Data: body.Data, Config: body.Config, CallbackURL: body.CallbackURL,
	}
	if who.host != nil {
		call.Host = *who.host
	}
	if !p.Async() {
		out, err := s.o.Plugins.ProcessSync(ctx, p, call)
		if err != nil {
			httpx.Fail(c, err)
			return
		}
		c.Data(http.StatusOK, "application/json; charset=utf-8", out)
		return
	}
	if who.contract == plugin.ContractB {
		call.TaskKey = body.AsyncTaskID
	}
	t, err := s.o.Plugins.Submit(ctx, p, call)
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	resp := gin.H{"accepted": true, "asyncTaskId": t.TaskKey}
	if who.contract == plugin.ContractA {
		resp["taskUrl"] = fmt.Sprintf("%s/plugin/%s/tasks/%s", s.o.PublicURL, url.PathEscape(p.ID), t.ID)
	} else {
		resp["taskId"] = t.ID
	}
	c.JSON(http.StatusOK, resp)
}

// taskView is a task as its owner reads it.
type taskView struct {
	TaskID      string          `json:"taskId"`
	AsyncTaskID string          `json:"asyncTaskId"`
	State       string          `json:"state"`
	Successful  *bool           `json:"successful,omitempty"`
	Message     string          `json:"message,omitempty"`
	Note        string          `json:"note,omitempty"`
	Data        json.RawMessage `json:"data,omitempty"`
	Attempts    int             `json:"attempts"`
	CreatedAt   time.Time       `json:"createdAt"`
	UpdatedAt   time.Time       `json:"updatedAt"`
	ExpiresAt   time.Time       `json:"expiresAt"`
}

// task: GET /plugin/:pluginId/tasks/:taskId, the owner only (404 else).
func (s *Surface) task(c *gin.Context, who *caller) {
	t, err := s.o.Plugins.Task(c.Request.Context(), who.plugin.ID, who.owner, c.Param("taskId"))
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	v := taskView{TaskID: t.ID, AsyncTaskID: t.TaskKey, State: t.State, Attempts: t.Attempts,
		CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt, ExpiresAt: t.ExpiresAt}
	if t.Processed {
		r := plugin.Outcome(t)
		ok := r.Successful
		v.Successful, v.Message, v.Note, v.Data = &ok, r.Message, r.Note, r.Data
	}
	c.JSON(http.StatusOK, v)
}
