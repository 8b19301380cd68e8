package demo

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

//go:embed assets/*.html
var assetFS embed.FS

var pages = template.Must(template.ParseFS(assetFS, "assets/*.html"))

type lifetimeChoice struct {
	Seconds  int
	Label    string
	Selected bool
}

type pageData struct {
	Title   string
	Message string
	Users   []User
	// The authorization request, carried through the form.
	ClientID, RedirectURI, State, Challenge, Method, Scope string
	RedirectHost                                           string
	Lifetimes                                              []lifetimeChoice
}

func lifetimes() []lifetimeChoice {
	return []lifetimeChoice{
		{Seconds: int(DefaultLifetime / time.Second), Label: "1 hour (default)", Selected: true},
		{Seconds: int(ShortLifetime / time.Second), Label: "45 seconds (watch connectd refresh it)"},
	}
}

func lifetimeAllowed(s string) (time.Duration, bool) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, false
	}
	for _, l := range lifetimes() {
		if l.Seconds == n {
			return time.Duration(n) * time.Second, true
		}
	}
	return 0, false
}

// authRequest is an authorization request, read from the query (GET) or
// the form (POST).
type authRequest struct {
	responseType, clientID, redirectURI, state, challenge, method, scope string
}

func readAuthRequest(get func(string) string) authRequest {
	return authRequest{
		responseType: get("response_type"), clientID: get("client_id"), redirectURI: get("redirect_uri"),
		state: get("state"), challenge: get("code_challenge"), method: get("code_challenge_method"), scope: get("scope"),
	}
}

// check validates the client and redirect URI (errors shown on the page:
// RFC 6749 4.1.2.1 forbids redirecting to an unverified URI), then the
// rest (errors sent back to the client).
func (m *CRM) check(r authRequest) (pageErr, redirectErr string) {
	if r.clientID != ClientID {
		return "Unknown client_id: this demo CRM knows only connectd's demo client.", ""
	}
	if !m.redirectAllowed(r.redirectURI) {
		return "The redirect_uri is not registered for the demo client (it must be <CONNECTD_PUBLIC_URL>/oauth/callback).", ""
	}
	if len(r.state) > 1024 {
		return "", "invalid_request"
	}
	if r.responseType != "code" {
		return "", "unsupported_response_type"
	}
	// PKCE is required, and only S256 (RFC 9700).
	if r.challenge == "" || r.method != "S256" || len(r.challenge) < 43 || len(r.challenge) > 128 {
		return "", "invalid_request"
	}
	return "", ""
}

func (m *CRM) sendBack(c *gin.Context, r authRequest, params url.Values) {
	u, _ := url.Parse(r.redirectURI) // registered, so it parses
	q := u.Query()
	for k, vs := range params {
		q[k] = vs
	}
	if r.state != "" {
		q.Set("state", r.state)
	}
	u.RawQuery = q.Encode()
	m.pageHeaders(c)
	c.Redirect(http.StatusFound, u.String())
}

// GET /demo/crm/oauth/authorize: the "sign in as" page.
func (m *CRM) authorizePage(c *gin.Context) {
	q := c.Request.URL.Query()
	r := readAuthRequest(q.Get)
	if pe, re := m.check(r); pe != "" {
		m.render(c, http.StatusBadRequest, "error.html", pageData{Title: "Demo CRM: bad authorization request", Message: pe})
		return
	} else if re != "" {
		m.sendBack(c, r, url.Values{"error": {re}})
		return
	}
	host := r.redirectURI
	if u, err := url.Parse(r.redirectURI); err == nil {
		host = u.Host
	}
	m.render(c, http.StatusOK, "authorize.html", pageData{
		Title: "Sign in to the Demo CRM", Users: m.users, Lifetimes: lifetimes(),
		ClientID: r.clientID, RedirectURI: r.redirectURI, State: r.state, Challenge: r.challenge, Method: r.method, Scope: r.scope,
		RedirectHost: host,
	})
}

// POST /demo/crm/oauth/authorize: the person signed in as someone (or
// denied); the browser goes back to the client with a code.
func (m *CRM) authorizeSubmit(c *gin.Context) {
	if err := c.Request.ParseForm(); err != nil {
		m.render(c, http.StatusBadRequest, "error.html", pageData{Title: "Demo CRM", Message: "The form could not be read."})
		return
	}
	f := c.Request.PostForm
	r := readAuthRequest(f.Get)
	if pe, re := m.check(r); pe != "" {
		m.render(c, http.StatusBadRequest, "error.html", pageData{Title: "Demo CRM: bad authorization request", Message: pe})
		return
	} else if re != "" {
		m.sendBack(c, r, url.Values{"error": {re}})
		return
	}
	if f.Get("action") == "deny" {
		m.sendBack(c, r, url.Values{"error": {"access_denied"}})
		return
	}
	user, ok := m.userByLogin(f.Get("login"))
	if !ok {
		m.render(c, http.StatusBadRequest, "error.html", pageData{Title: "Demo CRM", Message: "Pick one of the demo users."})
		return
	}
	lifetime, ok := lifetimeAllowed(f.Get("lifetime"))
	if !ok {
		lifetime = DefaultLifetime
	}
	cv := newSecret("demo_code_")
	now := m.clock.Now()
	m.mu.Lock()
	if len(m.codes) >= maxCodes {
		m.prune(now)
	}
	full := len(m.codes) >= maxCodes
	if !full {
		m.codes[hash(cv)] = &code{
			grant:       &grant{user: user, lifetime: lifetime},
			redirectURI: r.redirectURI, challenge: r.challenge, expires: now.Add(CodeLifetime),
		}
	}
	m.mu.Unlock()
	if full {
		m.sendBack(c, r, url.Values{"error": {"temporarily_unavailable"}})
		return
	}
	m.log.Info("demo sign-in", "login", user.Login, "lifetime", lifetime.String())
	m.sendBack(c, r, url.Values{"code": {cv}})
}

// oauthError answers a token or revoke request with RFC 6749's shape.
func oauthError(c *gin.Context, status int, code, description string) {
	if status == http.StatusUnauthorized {
		c.Header("WWW-Authenticate", `Basic realm="demo-crm"`)
	}
	c.Header("Cache-Control", "no-store")
	c.AbortWithStatusJSON(status, gin.H{"error": code, "error_description": description})
}

// clientAuth checks the demo client's credentials: HTTP Basic or form
// fields, never both (RFC 6749 2.3.1).
func clientAuth(c *gin.Context) bool {
	f := c.Request.PostForm
	id, secret, basic := c.Request.BasicAuth()
	if basic {
		if f.Get("client_secret") != "" {
			return false
		}
		// RFC 6749 2.3.1: Basic credentials are form-urlencoded first.
		if v, err := url.QueryUnescape(id); err == nil {
			id = v
		}
		if v, err := url.QueryUnescape(secret); err == nil {
			secret = v
		}
	} else {
		id, secret = f.Get("client_id"), f.Get("client_secret")
	}
	if fid := f.Get("client_id"); basic && fid != "" && fid != id {
		return false
	}
	return equal(id, ClientID) && equal(secret, ClientSecret)
}

func parseTokenForm(c *gin.Context) bool {
	if !strings.HasPrefix(c.ContentType(), "application/x-www-form-urlencoded") {
		oauthError(c, http.StatusBadRequest, "invalid_request", "Send the request as application/x-www-form-urlencoded.")
		return false
	}
	if err := c.Request.ParseForm(); err != nil {
		oauthError(c, http.StatusBadRequest, "invalid_request", "The form could not be read.")
		return false
	}
	return true
}

// POST /demo/crm/oauth/token: authorization_code and refresh_token grants.
func (m *CRM) tokenEndpoint(c *gin.Context) {
	if !parseTokenForm(c) {
		return
	}
	if !clientAuth(c) {
		oauthError(c, http.StatusUnauthorized, "invalid_client", "Client authentication failed.")
		return
	}
	f := c.Request.PostForm
	var (
		access, refresh string
		g               *grant
		err             error
		code, desc      string
	)
	now := m.clock.Now()
	m.mu.Lock()
	switch f.Get("grant_type") {
	case "authorization_code":
		g, code, desc = m.redeemCode(f, now)
	case "refresh_token":
		g, code, desc = m.rotate(f.Get("refresh_token"), now)
	default:
		code, desc = "unsupported_grant_type", "Use authorization_code or refresh_token."
	}
	if code == "" {
		access, refresh, err = m.issue(g, now)
	}
	m.mu.Unlock()
	switch {
	case code != "":
		oauthError(c, http.StatusBadRequest, code, desc)
		return
	case errors.Is(err, errFull):
		oauthError(c, http.StatusServiceUnavailable, "temporarily_unavailable", "The demo CRM holds too many tokens; restart connectd.")
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, gin.H{
		"access_token":  access,
		"token_type":    "Bearer",
		"expires_in":    int(g.lifetime / time.Second),
		"refresh_token": refresh,
		"scope":         "demo",
	})
}

// redeemCode checks a code (single use, unexpired, same redirect URI,
// PKCE S256). A second use revokes everything the code issued (RFC 6749
// 4.1.2). Called with mu held.
func (m *CRM) redeemCode(f url.Values, now time.Time) (*grant, string, string) {
	cd, ok := m.codes[hash(f.Get("code"))]
	switch {
	case !ok || f.Get("code") == "":
		return nil, "invalid_grant", "Unknown authorization code."
	case cd.used:
		cd.grant.revoked = true
		return nil, "invalid_grant", "The authorization code was already used; its tokens are revoked."
	case !now.Before(cd.expires):
		return nil, "invalid_grant", "The authorization code has expired."
	case f.Get("redirect_uri") != cd.redirectURI:
		return nil, "invalid_grant", "redirect_uri differs from the authorization request."
	}
	sum := sha256.Sum256([]byte(f.Get("code_verifier")))
	if f.Get("code_verifier") == "" || !equal(base64.RawURLEncoding.EncodeToString(sum[:]), cd.challenge) {
		return nil, "invalid_grant", "The PKCE code_verifier does not match."
	}
	cd.used = true
	return cd.grant, "", ""
}

// rotate spends a refresh token: it is replaced by a new one; presenting a
// replaced one again revokes the whole grant (reuse detection). Called
// with mu held.
func (m *CRM) rotate(rt string, now time.Time) (*grant, string, string) {
	t, ok := m.tokens[hash(rt)]
	switch {
	case !ok || rt == "" || t.kind != refreshToken:
		return nil, "invalid_grant", "Unknown refresh token."
	case t.grant.revoked:
		return nil, "invalid_grant", "The refresh token was revoked."
	case t.rotated:
		t.grant.revoked = true
		m.log.Warn("demo refresh token reused: grant revoked", "login", t.grant.user.Login)
		return nil, "invalid_grant", "The refresh token was already used; the grant is revoked."
	}
	t.rotated = true
	return t.grant, "", ""
}

// POST /demo/crm/oauth/revoke (RFC 7009): revokes the grant of any of its
// tokens. Unknown tokens are not an error.
func (m *CRM) revokeEndpoint(c *gin.Context) {
	if !parseTokenForm(c) {
		return
	}
	if !clientAuth(c) {
		oauthError(c, http.StatusUnauthorized, "invalid_client", "Client authentication failed.")
		return
	}
	m.mu.Lock()
	if t, ok := m.tokens[hash(c.Request.PostForm.Get("token"))]; ok {
		t.grant.revoked = true
		m.log.Info("demo grant revoked", "login", t.grant.user.Login)
	}
	m.prune(m.clock.Now())
	m.mu.Unlock()
	c.Status(http.StatusOK)
}

type profile struct {
	ID    string `json:"id"`
	Login string `json:"login"`
	Name  string `json:"name"`
	Email string `json:"email"`
}

func profileOf(u User) profile {
	return profile{ID: u.ID, Login: u.Login, Name: u.Name, Email: u.Email}
}

// GET /demo/crm/api/me with a Bearer access token.
func (m *CRM) me(c *gin.Context) {
	tok, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
	if !ok || tok == "" {
		c.Header("WWW-Authenticate", `Bearer realm="demo-crm"`)
		c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "invalid_token"})
		return
	}
	now := m.clock.Now()
	m.mu.Lock()
	t, found := m.tokens[hash(tok)]
	valid := found && t.kind == accessToken && !t.grant.revoked && now.Before(t.expires)
	var u User
	if valid {
		u = t.grant.user
	}
	m.mu.Unlock()
	if !valid {
		c.Header("WWW-Authenticate", `Bearer realm="demo-crm", error="invalid_token"`)
		c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "invalid_token"})
		return
	}
	c.JSON(http.StatusOK, profileOf(u))
}

// GET /demo/crm/apikey/me with Basic base64(apiKey + ":").
func (m *CRM) apiKeyMe(c *gin.Context) {
	key, _, ok := c.Request.BasicAuth()
	if ok {
		for _, u := range m.users {
			if equal(key, u.APIKey) {
				c.JSON(http.StatusOK, profileOf(u))
				return
			}
		}
	}
	c.Header("WWW-Authenticate", `Basic realm="demo-crm"`)
	c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "invalid_api_key", "message": "Unknown demo API key."})
}
