// Package appconnect is the App Connect surface: the routes RingCentral's
// App Connect client (the browser extension) calls on an App Connect core
// server - /crmManifest, /oauth-callback, /apiKeyLogin, /authValidation,
// /unAuthorize and friends - with App Connect's paths and JSON shapes,
// translated to engine calls. It adds what App Connect lacks: connectd
// issues the authorize URL itself (GET /oauth/authorize) so the state is a
// single-use random id bound to a PKCE verifier.
package appconnect

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/auth"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/httpx"
	"github.com/connectd/connectd/server/ratelimit"
)

// HostVerifier turns the caller's host token (X-RC-Access-Token, legacy
// rcAccessToken) into a verified host identity. Implemented by
// core/identity; nil means no host identities are accepted.
type HostVerifier interface {
	// VerifyHost returns the identity, or nil with no error when the
	// request carries no host token. A bad token is failure.Unauthenticated;
	// an unreachable host platform failure.UpstreamUnavailable.
	VerifyHost(ctx context.Context, token string) (*store.HostIdentity, error)
}

// Surface serves App Connect's client routes.
type Surface struct {
	Engine    *auth.Engine
	Sessions  *session.Manager
	Manifests *manifest.Set
	Hosts     HostVerifier
	Logger    hclog.Logger
	// PublicURL is connectd's external base URL: the served manifest's
	// serverUrl, and the authUrl of every OAuth platform (see ServedManifest).
	PublicURL string

	limiter *ratelimit.Limiter
}

// Register implements server.Surface.
func (s *Surface) Register(r gin.IRouter, mw server.Middlewares) {
	if s.Logger == nil {
		s.Logger = hclog.NewNullLogger()
	}
	s.limiter = mw.Limiter
	login := mw.Limiter.PerIP()
	r.GET("/crmManifest", s.crmManifest)
	r.GET("/implementedInterfaces", s.implementedInterfaces)
	r.GET("/oauth/authorize", login, s.authorize)
	r.GET("/oauth-callback", login, s.oauthCallback)
	r.POST("/apiKeyLogin", login, s.apiKeyLogin)

	authed := r.Group("", s.requireSession)
	authed.GET("/authValidation", s.authValidation)
	authed.POST("/unAuthorize", s.unAuthorize)
	authed.POST("/user/refreshInfo", s.refreshInfo)
	authed.GET("/licenseStatus", s.licenseStatus)
	authed.GET("/hostname", s.hostname)
}

const claimsKey = "connectd.appconnect.claims"

// requireSession verifies the App Connect session JWT (bearer or legacy
// ?jwtToken=) and renews it in x-refreshed-jwt-token when 7 days or less
// remain (same session id, so logout still revokes it).
func (s *Surface) requireSession(c *gin.Context) {
	tok := bearer(c.GetHeader("Authorization"))
	if tok == "" {
		tok = c.Query("jwtToken")
	}
	if tok == "" {
		s.fail(c, failure.Newf(failure.Unauthenticated, "Please log in."))
		return
	}
	claims, err := s.Sessions.VerifyAppConnect(c.Request.Context(), tok)
	if err != nil {
		if errors.Is(err, session.ErrInvalidToken) {
			s.fail(c, failure.New(failure.Unauthenticated, "Your session is invalid or has expired. Please log in again.", err))
			return
		}
		s.fail(c, err)
		return
	}
	if s.Sessions.NeedsRenewal(claims) {
		if fresh, err := s.Sessions.Reissue(c.Request.Context(), claims); err == nil {
			c.Header("x-refreshed-jwt-token", fresh)
		} else {
			httpx.Logger(c).Warn("session renewal failed", "error", err)
		}
	}
	c.Set(claimsKey, claims)
	c.Next()
}

func claimsOf(c *gin.Context) *session.Claims {
	v, _ := c.Get(claimsKey)
	cl, _ := v.(*session.Claims)
	return cl
}

func bearer(h string) string {
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// GET /crmManifest?platformName=X: the manifest without connectd's
// server-side blocks, pointed at this server (ServedManifest).
func (s *Surface) crmManifest(c *gin.Context) {
	name := c.Query("platformName")
	var (
		body []byte
		err  error
	)
	if name == "" {
		body, err = s.Manifests.ClientManifest()
	} else {
		if p, ok := s.Manifests.Platform(name); !ok || p.Kind() == manifest.KindPlugin {
			c.JSON(http.StatusBadRequest, gin.H{"error": string(failure.NotFound), "message": "Platform not found", "requestId": httpx.RequestID(c)})
			return
		}
		body, err = s.Manifests.ClientJSON(name)
	}
	if err == nil {
		body, err = ServedManifest(body, s.PublicURL, s.pluginNames())
	}
	if err != nil {
		httpx.Fail(c, failure.New(failure.Internal, "Internal error.", err))
		return
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", body)
}

// pluginNames are the App Connect plugin platforms: they have their own
// protocol (server/plugins) and are not CRMs, so /crmManifest leaves them out.
func (s *Surface) pluginNames() []string {
	var out []string
	for _, p := range s.Manifests.Platforms() {
		if p.Kind() == manifest.KindPlugin {
			out = append(out, p.Key)
		}
	}
	return out
}

// ServedManifest points a client manifest at connectd: serverUrl becomes
// publicURL, and every OAuth platform's auth.oauth.authUrl becomes
// connectd's GET /oauth/authorize, so an unchanged App Connect client
// starts its logins here (single-use state, PKCE) instead of at the CRM
// with a guessable state. Platforms named in drop are left out. Every other
// key is served untouched.
func ServedManifest(client []byte, publicURL string, drop []string) ([]byte, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(client, &doc); err != nil {
		return nil, err
	}
	base := strings.TrimRight(publicURL, "/")
	if base != "" {
		doc["serverUrl"], _ = json.Marshal(base)
	}
	var plats map[string]map[string]json.RawMessage
	if err := json.Unmarshal(doc["platforms"], &plats); err != nil {
		return nil, err
	}
	for _, name := range drop {
		delete(plats, name)
	}
	for _, p := range plats {
		if base == "" {
			break
		}
		var a map[string]json.RawMessage
		if json.Unmarshal(p["auth"], &a) != nil {
			continue
		}
		var typ string
		_ = json.Unmarshal(a["type"], &typ)
		if typ != string(connector.AuthOAuth) {
			continue
		}
		o := map[string]json.RawMessage{}
		if raw, ok := a["oauth"]; ok && json.Unmarshal(raw, &o) != nil {
			continue
		}
		o["authUrl"], _ = json.Marshal(base + "/oauth/authorize")
		a["oauth"], _ = json.Marshal(o)
		p["auth"], _ = json.Marshal(a)
	}
	doc["platforms"], _ = json.Marshal(plats)
	return json.Marshal(doc)
}

// GET /implementedInterfaces?platform=X
func (s *Surface) implementedInterfaces(c *gin.Context) {
	name := c.Query("platform")
	if name == "" {
		s.fail(c, failure.Newf(failure.InvalidRequest, "platform is required."))
		return
	}
	m := s.Engine.Registry().Implemented(name)
	if m == nil {
		s.fail(c, failure.Newf(failure.NotFound, "Platform not found"))
		return
	}
	c.JSON(http.StatusOK, m)
}

// GET /oauth/authorize?platform=X[&hostname=][&redirect_uri=]: creates the
// flow and sends the browser to the CRM (or answers {authUrl} to JSON
// callers). An unchanged App Connect client whose manifest authUrl points
// here appends state=platform=X&redirect_uri=...&client_id=...; both forms
// work.
func (s *Surface) authorize(c *gin.Context) {
	q := c.Request.URL.Query()
	platform := q.Get("platform")
	if st := q.Get("state"); st != "" {
		if inner, err := url.ParseQuery(st); err == nil {
			if platform == "" {
				platform = inner.Get("platform")
			}
			if q.Get("hostname") == "" && inner.Get("hostname") != "" {
				q.Set("hostname", inner.Get("hostname"))
			}
		}
	}
	host, err := s.host(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	if !s.accountAllowed(c, host) {
		return
	}
	started, err := s.Engine.StartOAuth(c.Request.Context(), auth.StartRequest{
		Platform:    platform,
		Hostname:    q.Get("hostname"),
		RedirectURI: q.Get("redirect_uri"),
		Host:        host,
		Purpose:     store.PurposeAppConnect,
		Surface:     "appconnect",
	})
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	if wantsJSON(c) {
		c.JSON(http.StatusOK, gin.H{"authUrl": started.AuthURL})
		return
	}
	c.Redirect(http.StatusFound, started.AuthURL)
}

func wantsJSON(c *gin.Context) bool {
	return strings.Contains(c.GetHeader("Accept"), "application/json")
}

// GET /oauth-callback?callbackUri=...: App Connect's JSON completion.
func (s *Surface) oauthCallback(c *gin.Context) {
	params, err := ParseCallback(c.Request.URL.RawQuery)
	if err != nil {
		s.fail(c, err)
		return
	}
	host, err := s.host(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	if !s.accountAllowed(c, host) {
		return
	}
	res, err := s.Engine.CompleteOAuth(c.Request.Context(), auth.CallbackRequest{
		Host:     host,
		State:    params.State,
		Code:     params.Code,
		Error:    params.Error,
		Platform: params.Platform,
		TokenURL: params.TokenURL,
		APIURL:   params.APIURL,
		Username: params.Username,
		Query:    params.Extra,
		Purpose:  store.PurposeAppConnect,
	})
	if err != nil {
		s.fail(c, err)
		return
	}
	s.loggedIn(c, http.StatusOK, res)
}

// apiKeyLoginBody is POST /apiKeyLogin's body.
type apiKeyLoginBody struct {
	Platform       string            `json:"platform"`
	APIKey         string            `json:"apiKey"`
	Hostname       string            `json:"hostname"`
	AdditionalInfo map[string]any    `json:"additionalInfo"`
	ProxyID        string            `json:"proxyId"`
	RCAccessToken  string            `json:"rcAccessToken"`
	Extra          map[string]string `json:"-"`
}

// POST /apiKeyLogin
func (s *Surface) apiKeyLogin(c *gin.Context) {
	var body apiKeyLoginBody
	if err := httpx.DecodeJSON(c, &body); err != nil {
		s.fail(c, err)
		return
	}
	info, err := stringFields(body.AdditionalInfo)
	if err != nil {
		s.fail(c, err)
		return
	}
	host, err := s.hostWith(c, body.RCAccessToken)
	if err != nil {
		s.fail(c, err)
		return
	}
	if !s.accountAllowed(c, host) {
		return
	}
	res, err := s.Engine.APIKeyLogin(c.Request.Context(), auth.APIKeyRequest{
		Platform:       body.Platform,
		APIKey:         body.APIKey,
		Hostname:       body.Hostname,
		AdditionalInfo: info,
		Host:           host,
	})
	if err != nil {
		var mf *auth.MissingFieldsError
		if errors.As(err, &mf) {
			msg := gin.H{"message": "Missing required authentication fields.", "messageType": "warning", "ttl": 3000, "missingRequiredFieldConsts": mf.Consts}
			c.JSON(http.StatusBadRequest, gin.H{"returnMessage": msg, "missingRequiredFieldConsts": mf.Consts, "error": string(failure.MissingManagedFields), "requestId": httpx.RequestID(c)})
			return
		}
		s.fail(c, err)
		return
	}
	s.loggedIn(c, http.StatusBadRequest, res)
}

// loggedIn answers a completed login: {jwtToken, name, returnMessage}, or
// {returnMessage} with refusedStatus when the service refused it.
func (s *Surface) loggedIn(c *gin.Context, refusedStatus int, res *auth.LoginResult) {
	if res.User == nil {
		c.JSON(refusedStatus, gin.H{"returnMessage": res.Message})
		return
	}
	u := res.User
	tok, _, err := s.Sessions.IssueAppConnect(c.Request.Context(), u.ID, u.AppConnectID, u.Platform, u.Host)
	if err != nil {
		httpx.Fail(c, failure.New(failure.Unavailable, "The session could not be created. Please retry.", err))
		return
	}
	msg := res.Message
	if msg == nil {
		msg = &connector.ReturnMessage{Message: "Connected to " + s.displayName(u.Platform) + ".", MessageType: connector.MessageSuccess, TTL: 3000}
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, gin.H{"jwtToken": tok, "name": res.Name, "returnMessage": msg})
}

// GET /authValidation
func (s *Surface) authValidation(c *gin.Context) {
	cl := claimsOf(c)
	res, err := s.Engine.Validate(c.Request.Context(), cl.Subject)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := gin.H{"successful": res.Successful, "returnMessage": res.ReturnMessage}
	if !res.Successful && res.ReturnMessage == nil {
		out["returnMessage"] = connector.ReturnMessage{Message: "Your login is no longer valid. Please connect again.", MessageType: connector.MessageWarning, TTL: 5000}
	}
	c.JSON(http.StatusOK, out)
}

// POST /unAuthorize: revoke upstream, clear credentials, revoke the
// session (App Connect leaves the JWT valid; connectd does not).
func (s *Surface) unAuthorize(c *gin.Context) {
	cl := claimsOf(c)
	res, err := s.Engine.Logout(c.Request.Context(), cl.Subject)
	if err != nil && !failure.Is(err, failure.NeedsReauth) {
		s.fail(c, err)
		return
	}
	if err := s.Sessions.Revoke(c.Request.Context(), cl.SessionID); err != nil {
		s.fail(c, failure.New(failure.Unavailable, "Logout could not be completed. Please retry.", err))
		return
	}
	if res.ReturnMessage == nil {
		res.ReturnMessage = &connector.ReturnMessage{Message: "Logged out.", MessageType: connector.MessageSuccess, TTL: 1000}
	}
	c.JSON(http.StatusOK, gin.H{"successful": true, "returnMessage": res.ReturnMessage})
}

// POST /user/refreshInfo
func (s *Surface) refreshInfo(c *gin.Context) {
	res, err := s.Engine.RefreshUserInfo(c.Request.Context(), claimsOf(c).Subject)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"successful": res.Successful, "returnMessage": res.ReturnMessage})
}

// GET /licenseStatus
func (s *Surface) licenseStatus(c *gin.Context) {
	st, err := s.Engine.License(c.Request.Context(), claimsOf(c).Subject)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

// GET /hostname: the user's CRM hostname, as text (App Connect's shape).
func (s *Surface) hostname(c *gin.Context) {
	u, err := s.Engine.User(c.Request.Context(), claimsOf(c).Subject)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.String(http.StatusOK, u.Hostname)
}

// fail answers err in App Connect's envelope: {successful: false,
// returnMessage, errorCode?} plus connectd's stable error code and the
// request id. needs_reauth is App Connect's 401 CRM_SESSION_REVOKED.
func (s *Surface) fail(c *gin.Context, err error) {
	code := failure.CodeOf(err)
	status := httpx.StatusOf(code)
	if status >= 500 {
		httpx.Logger(c).Error("request failed", "code", string(code), "error", err)
	} else {
		httpx.Logger(c).Debug("request rejected", "code", string(code), "error", err)
	}
	msgType, ttl := connector.MessageWarning, 5000
	if status >= 500 {
		msgType = connector.MessageDanger
	}
	body := gin.H{
		"successful":    false,
		"returnMessage": connector.ReturnMessage{Message: failure.MessageOf(err), MessageType: msgType, TTL: ttl},
		"error":         string(code),
		"requestId":     httpx.RequestID(c),
	}
	if code == failure.NeedsReauth {
		body["errorCode"] = "CRM_SESSION_REVOKED"
	}
	if status == http.StatusTooManyRequests {
		c.Header("Retry-After", "60")
	}
	c.AbortWithStatusJSON(status, body)
}

// accountAllowed applies the per-account login rate limit (beside the
// per-IP one), so guessing credentials for one account from many
// addresses is slowed down too. It answers 429 and returns false when the
// account's bucket is empty.
func (s *Surface) accountAllowed(c *gin.Context, host *store.HostIdentity) bool {
	if host == nil {
		return true
	}
	return s.limiter.CheckAccount(c, host.Kind+"/"+host.AccountID)
}

// host returns the caller's verified host identity, if it presented one.
func (s *Surface) host(c *gin.Context) (*store.HostIdentity, error) {
	return s.hostWith(c, "")
}

func (s *Surface) hostWith(c *gin.Context, bodyToken string) (*store.HostIdentity, error) {
	tok := c.GetHeader("X-RC-Access-Token")
	if tok == "" {
		tok = bodyToken
	}
	if tok == "" {
		tok = c.Query("rcAccessToken")
	}
	if tok == "" {
		return nil, nil
	}
	if s.Hosts == nil {
		return nil, failure.Newf(failure.Unauthenticated, "Host identities are not enabled on this server.")
	}
	return s.Hosts.VerifyHost(c.Request.Context(), tok)
}

func (s *Surface) displayName(platform string) string {
	if p, ok := s.Manifests.Platform(platform); ok && p.DisplayName != "" {
		return p.DisplayName
	}
	return platform
}

// stringFields flattens App Connect's additionalInfo (string values; numbers
// and booleans as text) and rejects nested values.
func stringFields(in map[string]any) (map[string]string, error) {
	out := make(map[string]string, len(in))
	for k, v := range in {
		switch x := v.(type) {
		case nil:
		case string:
			out[k] = x
		case bool:
			if x {
				out[k] = "true"
			} else {
				out[k] = "false"
			}
		case float64:
			out[k] = formatFloat(x)
		default:
			return nil, failure.Newf(failure.InvalidRequest, "additionalInfo.%s must be a string.", truncate(k, 64))
		}
	}
	return out, nil
}
