package connectortest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/connectd/connectd/core/clock"
)

// Endpoint paths of a Provider (relative to URL()).
const (
	PathAuthorize = "/authorize"
	PathToken     = "/token"
	PathRevoke    = "/revoke"
	PathUserInfo  = "/userinfo"
)

// AllPaths, given to SetFault or FailNext, applies a fault to every endpoint.
const AllPaths = "*"

// CodeLifetime is how long an authorization code can be redeemed (RFC 6749
// 4.1.2 recommends at most 10 minutes; Pipedrive uses 5).
const CodeLifetime = 5 * time.Minute

// Client authentication methods a Provider accepts at /token and /revoke.
const (
	ClientAuthBasic = "basic" // HTTP Basic only (client_secret_basic)
	ClientAuthBody  = "body"  // client_id + client_secret form fields only (client_secret_post)
	ClientAuthAny   = "any"   // either, but never both
)

// ProviderUser is an account a test can sign in as.
type ProviderUser struct {
	ID       string
	Name     string
	Email    string
	Timezone string
}

// ProviderOptions configures a Provider. Zero values are usable: a client
// "test-client"/"test-secret", any client authentication, one redirect URI
// http://127.0.0.1/callback, users "alice" and "bob", the real clock.
type ProviderOptions struct {
	ClientID, ClientSecret string
	// RedirectURIs are the registered redirect URIs, compared exactly.
	// /authorize must carry one, and /token must carry the same one
	// (RFC 6749 4.1.3).
	RedirectURIs []string
	// RequirePKCE refuses authorization requests without a code_challenge.
	// Only S256 is ever accepted; "plain" is refused either way.
	RequirePKCE bool
	// ClientAuth is ClientAuthBasic, ClientAuthBody or ClientAuthAny ("").
	ClientAuth string
	// AccessTokenTTL becomes expires_in; 0 omits expires_in and the access
	// tokens never expire.
	AccessTokenTTL time.Duration
	// RotateRefreshTokens issues a new refresh token on every refresh; the
	// old one stops working.
	RotateRefreshTokens bool
	// ReuseDetection: presenting a rotated-away refresh token revokes the
	// whole grant (every access and refresh token issued from its code).
	ReuseDetection bool
	// OmitRefreshTokenOnRefresh answers refreshes without refresh_token; the
	// client must keep using the one it has. Incompatible with rotation.
	OmitRefreshTokenOnRefresh bool
	// Users maps a login name to the account it signs in as.
	Users map[string]ProviderUser
	// Clock decides code and token expiry; nil means the real clock.
	Clock clock.Clock
	// TLS serves over HTTPS (httptest.NewTLSServer); use Client() to trust it.
	TLS bool
}

// DefaultUsers are the accounts of a Provider whose options name none.
func DefaultUsers() map[string]ProviderUser {
	return map[string]ProviderUser{
		"alice": {ID: "1001", Name: "Alice Example", Email: "alice@example.test", Timezone: "Europe/Berlin"},
		"bob":   {ID: "1002", Name: "Bob Example", Email: "bob@example.test", Timezone: "America/New_York"},
	}
}

// TokenKind tells what a token string is at a Provider.
type TokenKind string

// Token kinds known to TokenInfo.
const (
	KindAuthCode     TokenKind = "authorization_code"
	KindAccessToken  TokenKind = "access_token"
	KindRefreshToken TokenKind = "refresh_token"
)

// TokenInfo is the provider's view of one code or token.
type TokenInfo struct {
	Kind  TokenKind
	Login string
	// Family identifies the grant: every token issued from one code.
	Family string
	// Revoked is true when this token or its whole family was revoked.
	Revoked bool
	// Rotated is true for a refresh token that a refresh replaced, and for a
	// code that was redeemed.
	Rotated   bool
	ExpiresAt time.Time // zero: no expiry
	Scope     string
}

// Provider is a fake OAuth 2.0 authorization server plus a user-info API,
// served by an httptest.Server that is closed when the test ends. All
// methods are safe for concurrent use.
type Provider struct {
	t     testing.TB
	opts  ProviderOptions
	clock clock.Clock
	srv   *httptest.Server
	done  chan struct{}
	rec   recorder

	mu          sync.Mutex
	codes       map[string]*codeState
	access      map[string]*tokenState
	refresh     map[string]*tokenState
	families    map[string]*family
	faults      map[string][]*faultEntry
	deny        bool
	denyDesc    string
	familyCount int
}

type codeState struct {
	clientID, redirectURI string
	challenge             string
	login, scope          string
	expiresAt             time.Time
	used                  bool
	family                string // set once redeemed
}

type tokenState struct {
	family    string
	expiresAt time.Time
	revoked   bool
	rotated   bool
}

type family struct {
	login, clientID, scope string
	revoked                bool
}

// NewProvider starts a Provider; it is closed by t.Cleanup. Inconsistent
// options fail the test at once.
func NewProvider(t testing.TB, o ProviderOptions) *Provider {
	t.Helper()
	if o.ClientID == "" {
		o.ClientID = "test-client"
	}
	if o.ClientSecret == "" {
		o.ClientSecret = "test-secret"
	}
	if len(o.RedirectURIs) == 0 {
		o.RedirectURIs = []string{"http://127.0.0.1/callback"}
	}
	switch o.ClientAuth {
	case "":
		o.ClientAuth = ClientAuthAny
	case ClientAuthAny, ClientAuthBasic, ClientAuthBody:
	default:
		t.Fatalf("connectortest: ProviderOptions.ClientAuth %q: want basic, body or any", o.ClientAuth)
	}
	if o.RotateRefreshTokens && o.OmitRefreshTokenOnRefresh {
		t.Fatalf("connectortest: RotateRefreshTokens and OmitRefreshTokenOnRefresh contradict each other")
	}
	if o.ReuseDetection && !o.RotateRefreshTokens {
		t.Fatalf("connectortest: ReuseDetection needs RotateRefreshTokens")
	}
	if o.AccessTokenTTL < 0 {
		t.Fatalf("connectortest: negative AccessTokenTTL")
	}
	if len(o.Users) == 0 {
		o.Users = DefaultUsers()
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	o.RedirectURIs = slices.Clone(o.RedirectURIs)
	p := &Provider{
		t:        t,
		opts:     o,
		clock:    o.Clock,
		done:     make(chan struct{}),
		codes:    map[string]*codeState{},
		access:   map[string]*tokenState{},
		refresh:  map[string]*tokenState{},
		families: map[string]*family{},
		faults:   map[string][]*faultEntry{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc(PathAuthorize, p.handleAuthorize)
	mux.HandleFunc(PathToken, p.handleToken)
	mux.HandleFunc(PathRevoke, p.handleRevoke)
	mux.HandleFunc(PathUserInfo, p.handleUserInfo)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	h := p.middleware(mux)
	if o.TLS {
		p.srv = httptest.NewTLSServer(h)
	} else {
		p.srv = httptest.NewServer(h)
	}
	t.Cleanup(func() {
		close(p.done) // wakes Slow/Latency waits so Close does not hang
		p.srv.CloseClientConnections()
		p.srv.Close()
	})
	return p
}

// URL is the provider's base URL.
func (p *Provider) URL() string { return p.srv.URL }

// AuthURL is the authorization endpoint.
func (p *Provider) AuthURL() string { return p.srv.URL + PathAuthorize }

// TokenURL is the token endpoint.
func (p *Provider) TokenURL() string { return p.srv.URL + PathToken }

// RevokeURL is the RFC 7009 revocation endpoint.
func (p *Provider) RevokeURL() string { return p.srv.URL + PathRevoke }

// UserInfoURL is the user API: GET with a Bearer access token.
func (p *Provider) UserInfoURL() string { return p.srv.URL + PathUserInfo }

// Client returns an HTTP client that trusts the provider (needed with TLS).
func (p *Provider) Client() *http.Client { return p.srv.Client() }

// Options returns the effective options (defaults filled in).
func (p *Provider) Options() ProviderOptions {
	o := p.opts
	o.RedirectURIs = slices.Clone(o.RedirectURIs)
	return o
}

// OAuth2Config is an x/oauth2 configuration for this provider's client,
// using the first registered redirect URI and the client authentication
// style the options demand.
func (p *Provider) OAuth2Config(scopes ...string) *oauth2.Config {
	style := oauth2.AuthStyleAutoDetect
	switch p.opts.ClientAuth {
	case ClientAuthBasic:
		style = oauth2.AuthStyleInHeader
	case ClientAuthBody:
		style = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{
		ClientID:     p.opts.ClientID,
		ClientSecret: p.opts.ClientSecret,
		RedirectURL:  p.opts.RedirectURIs[0],
		Scopes:       scopes,
		Endpoint:     oauth2.Endpoint{AuthURL: p.AuthURL(), TokenURL: p.TokenURL(), AuthStyle: style},
	}
}

// ---- faults ----

// FailNext injects f into the next n calls of path (PathToken, ...; AllPaths
// for every endpoint). Faults queue: the earliest installed one applies
// first.
func (p *Provider) FailNext(path string, f Fault, n int) {
	p.t.Helper()
	if err := f.validate(); err != nil {
		p.t.Fatal(err)
	}
	if n <= 0 {
		p.t.Fatalf("connectortest: FailNext(%s, %s, %d): n must be positive", path, f, n)
	}
	p.mu.Lock()
	p.faults[path] = append(p.faults[path], &faultEntry{fault: f, remaining: n})
	p.mu.Unlock()
}

// SetFault injects f into every call of path until ClearFaults.
func (p *Provider) SetFault(path string, f Fault) {
	p.t.Helper()
	if err := f.validate(); err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.faults[path] = append(p.faults[path], &faultEntry{fault: f, remaining: -1})
	p.mu.Unlock()
}

// ClearFaults removes every injected fault.
func (p *Provider) ClearFaults() {
	p.mu.Lock()
	p.faults = map[string][]*faultEntry{}
	p.mu.Unlock()
}

// takeFaults returns the total latency to apply and the first terminal
// fault for path, consuming counted entries.
func (p *Provider) takeFaults(path string) (latency time.Duration, terminal *Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, key := range []string{path, AllPaths} {
		entries := p.faults[key]
		kept := entries[:0]
		for _, e := range entries {
			use := false
			if e.fault.Kind == KindLatency {
				latency += e.fault.Delay
				use = true
			} else if terminal == nil {
				f := e.fault
				terminal = &f
				use = true
			}
			if use && e.remaining > 0 {
				e.remaining--
			}
			if e.remaining != 0 {
				kept = append(kept, e)
			}
		}
		if len(kept) == 0 {
			delete(p.faults, key)
		} else {
			p.faults[key] = kept
		}
	}
	return latency, terminal
}

// wait sleeps d unless the request or the provider ends first.
func (p *Provider) wait(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	case <-p.done:
		return false
	}
}

// middleware records every request, then applies injected faults.
func (p *Provider) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec, tooLarge := recordRequest(r, p.clock.Now())
		p.rec.add(rec)
		if tooLarge {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		latency, f := p.takeFaults(r.URL.Path)
		if latency > 0 && !p.wait(r.Context(), latency) {
			return
		}
		if f == nil {
			next.ServeHTTP(w, r)
			return
		}
		switch f.Kind {
		case KindStatus:
			http.Error(w, http.StatusText(f.Status), f.Status)
		case KindTooMany:
			secs := max(1, int((f.Delay+time.Second-1)/time.Second))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "rate_limited"})
		case KindSlow:
			if p.wait(r.Context(), f.Delay) {
				next.ServeHTTP(w, r)
			}
		case KindInvalidGrant:
			writeJSON(w, http.StatusBadRequest, oauthError{Error: "invalid_grant", Description: "injected fault"})
		case KindErrorIn200:
			writeJSON(w, http.StatusOK, oauthError{Error: "invalid_grant"})
		case KindHTML200:
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "<!doctype html><html><body><h1>Service maintenance</h1></body></html>")
		case KindNoAccessToken:
			writeJSON(w, http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": 3600})
		case KindOversized:
			writeOversized(w)
		case KindLostResponse:
			p.lostResponse(w, r, next)
		}
	})
}

// lostResponse performs the request into a throwaway recorder, then
// hijacks the connection and closes it so the client gets no answer.
func (p *Provider) lostResponse(w http.ResponseWriter, r *http.Request, next http.Handler) {
	next.ServeHTTP(httptest.NewRecorder(), r)
	hj, ok := w.(http.Hijacker)
	if !ok {
		// HTTP/2 cannot be hijacked; abort the stream instead.
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

func writeOversized(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, `{"access_token":"oversized-token","token_type":"Bearer","padding":"`)
	chunk := strings.Repeat("x", 64<<10)
	for written := 0; written <= 1<<20; written += len(chunk) {
		if _, err := io.WriteString(w, chunk); err != nil {
			return // the client stopped reading, as it should
		}
	}
	_, _ = io.WriteString(w, `"}`)
}

// ---- authorize ----

var signInPage = template.Must(template.New("signin").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Sign in - connectortest</title></head>
<body>
<h1>Sign in to the test provider</h1>
<p>{{.ClientID}} asks for access{{if .Scope}} ({{.Scope}}){{end}}.</p>
<form method="post" action="{{.Action}}">
{{range .Hidden}}<input type="hidden" name="{{.Name}}" value="{{.Value}}">
{{end}}<label>Login <input type="text" name="login" id="login" autocomplete="username"></label>
<button type="submit" name="decision" value="allow" id="allow">Allow</button>
<button type="submit" name="decision" value="deny" id="deny">Deny</button>
</form>
</body></html>
`))

type hiddenField struct{ Name, Value string }

// authorizeParams are the request parameters the form carries back.
var authorizeParams = []string{"response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method"}

// validateAuthorize checks an authorization request. A non-empty fatal
// means the request must not be redirected (unknown client or redirect URI,
// RFC 6749 4.1.2.1); otherwise a non-empty code is an error to redirect.
func (p *Provider) validateAuthorize(v url.Values) (fatal, code, desc string) {
	for _, k := range authorizeParams {
		if len(v[k]) > 1 {
			if k == "client_id" || k == "redirect_uri" {
				return "repeated " + k, "", ""
			}
			return "", "invalid_request", "repeated parameter " + k
		}
	}
	if v.Get("client_id") == "" {
		return "missing client_id", "", ""
	}
	if v.Get("client_id") != p.opts.ClientID {
		return "unknown client_id", "", ""
	}
	if !slices.Contains(p.opts.RedirectURIs, v.Get("redirect_uri")) {
		return "redirect_uri missing or not registered", "", ""
	}
	if v.Get("response_type") != "code" {
		return "", "unsupported_response_type", "only response_type=code is supported"
	}
	if v.Get("state") == "" {
		return "", "invalid_request", "state is required by this provider"
	}
	challenge, method := v.Get("code_challenge"), v.Get("code_challenge_method")
	switch {
	case challenge == "" && method != "":
		return "", "invalid_request", "code_challenge_method without code_challenge"
	case challenge == "" && p.opts.RequirePKCE:
		return "", "invalid_request", "PKCE code_challenge required"
	case challenge != "" && method != "S256":
		return "", "invalid_request", "only code_challenge_method=S256 is accepted"
	case challenge != "" && !validChallenge(challenge):
		return "", "invalid_request", "malformed code_challenge"
	}
	return "", "", ""
}

// validChallenge: an S256 challenge is 32 bytes in unpadded base64url.
func validChallenge(c string) bool {
	b, err := base64.RawURLEncoding.DecodeString(c)
	return err == nil && len(b) == sha256.Size
}

func (p *Provider) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	var v url.Values
	switch r.Method {
	case http.MethodGet:
		v = r.URL.Query()
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		v = r.PostForm
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	fatal, code, desc := p.validateAuthorize(v)
	if fatal != "" {
		http.Error(w, "invalid authorization request: "+fatal, http.StatusBadRequest)
		return
	}
	redirectURI, state := v.Get("redirect_uri"), v.Get("state")
	if code != "" {
		redirectWith(w, redirectURI, url.Values{"error": {code}, "error_description": {desc}, "state": {state}})
		return
	}
	if r.Method == http.MethodGet {
		data := struct {
			ClientID, Scope, Action string
			Hidden                  []hiddenField
		}{ClientID: v.Get("client_id"), Scope: v.Get("scope"), Action: PathAuthorize}
		for _, k := range authorizeParams {
			if v.Has(k) {
				data.Hidden = append(data.Hidden, hiddenField{k, v.Get(k)})
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = signInPage.Execute(w, data)
		return
	}
	p.mu.Lock()
	deny, denyDesc := p.deny, p.denyDesc
	p.mu.Unlock()
	login := v.Get("login")
	if deny || v.Get("decision") != "allow" || login == "" {
		q := url.Values{"error": {"access_denied"}, "state": {state}}
		if denyDesc != "" {
			q.Set("error_description", denyDesc)
		}
		redirectWith(w, redirectURI, q)
		return
	}
	if _, ok := p.opts.Users[login]; !ok {
		http.Error(w, "unknown login "+strconv.Quote(login), http.StatusUnauthorized)
		return
	}
	c := p.issueCode(login, redirectURI, v.Get("code_challenge"), v.Get("scope"))
	redirectWith(w, redirectURI, url.Values{"code": {c}, "state": {state}})
}

func redirectWith(w http.ResponseWriter, redirectURI string, q url.Values) {
	u, err := url.Parse(redirectURI)
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	merged := u.Query()
	for k, vs := range q {
		if len(vs) == 1 && vs[0] == "" {
			continue
		}
		merged[k] = vs
	}
	u.RawQuery = merged.Encode()
	w.Header().Set("Location", u.String())
	w.WriteHeader(http.StatusFound)
}

// SetDeny makes every later sign-in answer error=access_denied (with the
// given error_description when non-empty, e.g. HTML to check that clients
// never reflect it); SetDeny(false, "") restores normal sign-in.
func (p *Provider) SetDeny(deny bool, description string) {
	p.mu.Lock()
	p.deny, p.denyDesc = deny, description
	p.mu.Unlock()
}

// IssueCode creates an authorization code for login as if the user had
// signed in, bound to redirectURI and (when non-empty) an S256
// codeChallenge. It bypasses /authorize, for tests that start mid-flow.
func (p *Provider) IssueCode(login, redirectURI, codeChallenge, scope string) string {
	p.t.Helper()
	p.requireUser(login)
	return p.issueCode(login, redirectURI, codeChallenge, scope)
}

// requireUser fails the test for a login the options do not define.
func (p *Provider) requireUser(login string) {
	p.t.Helper()
	if _, ok := p.opts.Users[login]; !ok {
		p.t.Fatalf("connectortest: unknown login %q (ProviderOptions.Users)", login)
	}
}

func (p *Provider) issueCode(login, redirectURI, codeChallenge, scope string) string {
	c := randomToken("code")
	p.mu.Lock()
	p.codes[c] = &codeState{
		clientID: p.opts.ClientID, redirectURI: redirectURI, challenge: codeChallenge,
		login: login, scope: scope, expiresAt: p.clock.Now().Add(CodeLifetime),
	}
	p.mu.Unlock()
	return c
}

// IssueTokens creates a grant for login directly, as if a code had been
// exchanged, and returns its tokens (for tests that start with a user
// already logged in).
func (p *Provider) IssueTokens(login, scope string) *oauth2.Token {
	p.t.Helper()
	p.requireUser(login)
	p.mu.Lock()
	defer p.mu.Unlock()
	fam := p.newFamilyLocked(login, p.opts.ClientID, scope)
	resp := p.issueLocked(fam, true)
	return resp.oauth2Token(p.clock.Now())
}

// AuthorizeError is the provider's refusal of an authorization request.
type AuthorizeError struct {
	// Code is the OAuth error (invalid_request, ...) or "http_<status>" when
	// the provider answered with a page instead of redirecting.
	Code        string
	Description string
}

func (e *AuthorizeError) Error() string {
	return fmt.Sprintf("connectortest: authorization refused: %s: %s", e.Code, e.Description)
}

// Authorize acts as the user's browser: it GETs authorizeURL (which must
// point at this provider), submits the sign-in form as login ("" clicks
// Deny) and returns the redirect the provider answered with, carrying code
// and state, or error=access_denied. It returns an *AuthorizeError when the
// provider rejected the request itself (bad client, redirect URI, PKCE,
// missing state), together with the error redirect when there is one.
func (p *Provider) Authorize(ctx context.Context, authorizeURL, login string) (*url.URL, error) {
	u, err := url.Parse(authorizeURL)
	if err != nil {
		return nil, fmt.Errorf("connectortest: authorize URL: %w", err)
	}
	base, _ := url.Parse(p.srv.URL)
	if u.Scheme != base.Scheme || u.Host != base.Host || u.Path != PathAuthorize {
		return nil, fmt.Errorf("connectortest: authorize URL %s://%s%s is not this provider's %s", u.Scheme, u.Host, u.Path, p.AuthURL())
	}
	client := *p.srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	step := func(req *http.Request) (*url.URL, error) {
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("connectortest: authorize: %w", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		switch resp.StatusCode {
		case http.StatusFound:
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil {
				return nil, fmt.Errorf("connectortest: authorize: bad Location: %w", err)
			}
			return loc, nil
		case http.StatusOK:
			return nil, nil
		default:
			return nil, &AuthorizeError{Code: "http_" + strconv.Itoa(resp.StatusCode), Description: strings.TrimSpace(string(body))}
		}
	}
	get, err := http.NewRequestWithContext(ctx, http.MethodGet, authorizeURL, nil)
	if err != nil {
		return nil, fmt.Errorf("connectortest: authorize: %w", err)
	}
	loc, err := step(get)
	if err != nil || loc != nil {
		return loc, redirectError(loc, err)
	}
	form := url.Values{}
	for _, k := range authorizeParams {
		if vs, ok := u.Query()[k]; ok {
			form[k] = vs
		}
	}
	form.Set("login", login)
	if login == "" {
		form.Set("decision", "deny")
	} else {
		form.Set("decision", "allow")
	}
	post, err := http.NewRequestWithContext(ctx, http.MethodPost, p.AuthURL(), strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("connectortest: authorize: %w", err)
	}
	post.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	loc, err = step(post)
	if err == nil && loc == nil {
		return nil, &AuthorizeError{Code: "http_200", Description: "sign-in form shown again"}
	}
	return loc, redirectError(loc, err)
}

// redirectError turns an error redirect the user did not cause into an
// *AuthorizeError; access_denied is the user's (or SetDeny's) answer.
func redirectError(loc *url.URL, err error) error {
	if err != nil || loc == nil {
		return err
	}
	q := loc.Query()
	if e := q.Get("error"); e != "" && e != "access_denied" {
		return &AuthorizeError{Code: e, Description: q.Get("error_description")}
	}
	return nil
}

// ---- token ----

type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

func (t tokenResponse) oauth2Token(now time.Time) *oauth2.Token {
	tok := &oauth2.Token{AccessToken: t.AccessToken, TokenType: t.TokenType, RefreshToken: t.RefreshToken, ExpiresIn: t.ExpiresIn}
	if t.ExpiresIn > 0 {
		tok.Expiry = now.Add(time.Duration(t.ExpiresIn) * time.Second)
	}
	return tok
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeOAuthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, oauthError{Error: code, Description: desc})
}

// authenticateClient applies ClientAuth (RFC 6749 2.3.1). It writes the
// error answer and returns false when the client is not authenticated.
func (p *Provider) authenticateClient(w http.ResponseWriter, r *http.Request, form url.Values) bool {
	user, pass, basic := r.BasicAuth()
	if basic {
		user, pass = unescapeCredential(user), unescapeCredential(pass)
	}
	bodyID, bodySecret := form.Get("client_id"), form.Get("client_secret")
	fail := func(desc string) bool {
		if basic || p.opts.ClientAuth == ClientAuthBasic {
			w.Header().Set("WWW-Authenticate", `Basic realm="connectortest"`)
		}
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", desc)
		return false
	}
	switch {
	case basic && bodySecret != "":
		return fail("client authenticated with more than one method")
	case basic:
		if p.opts.ClientAuth == ClientAuthBody {
			return fail("this client must authenticate with client_secret in the body")
		}
		if bodyID != "" && bodyID != user {
			return fail("client_id in the body differs from HTTP Basic")
		}
		if !equalSecret(user, p.opts.ClientID) || !equalSecret(pass, p.opts.ClientSecret) {
			return fail("client authentication failed")
		}
	case bodySecret != "":
		if p.opts.ClientAuth == ClientAuthBasic {
			return fail("this client must authenticate with HTTP Basic")
		}
		if !equalSecret(bodyID, p.opts.ClientID) || !equalSecret(bodySecret, p.opts.ClientSecret) {
			return fail("client authentication failed")
		}
	default:
		return fail("client authentication missing")
	}
	return true
}

func equalSecret(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// parseOAuthForm enforces what RFC 6749 3.2 asks of token and revocation
// requests: POST, a form body, nothing in the query, no repeated params.
func parseOAuthForm(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeOAuthError(w, http.StatusMethodNotAllowed, "invalid_request", "POST only")
		return nil, false
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, _ := strings.Cut(ct, ";"); strings.TrimSpace(strings.ToLower(mt)) != "application/x-www-form-urlencoded" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "body must be application/x-www-form-urlencoded")
		return nil, false
	}
	if r.URL.RawQuery != "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "parameters must not be sent in the query string")
		return nil, false
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "unreadable body")
		return nil, false
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "malformed form body")
		return nil, false
	}
	for k, vs := range form {
		if len(vs) > 1 {
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", "repeated parameter "+k)
			return nil, false
		}
	}
	return form, true
}

func (p *Provider) handleToken(w http.ResponseWriter, r *http.Request) {
	form, ok := parseOAuthForm(w, r)
	if !ok || !p.authenticateClient(w, r, form) {
		return
	}
	switch form.Get("grant_type") {
	case "authorization_code":
		p.exchangeCode(w, form)
	case "refresh_token":
		p.refreshGrant(w, form)
	case "":
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "grant_type missing")
	default:
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
	}
}

func (p *Provider) exchangeCode(w http.ResponseWriter, form url.Values) {
	code := form.Get("code")
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.codes[code]
	if !ok || code == "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "unknown authorization code")
		return
	}
	if c.used {
		// RFC 6749 4.1.2: a replayed code revokes what it issued.
		p.revokeFamilyLocked(c.family)
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "authorization code already used")
		return
	}
	now := p.clock.Now()
	if !now.Before(c.expiresAt) {
		c.used = true
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "authorization code expired")
		return
	}
	if c.clientID != p.opts.ClientID {
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "code issued to another client")
		return
	}
	if form.Get("redirect_uri") != c.redirectURI {
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri differs from the authorization request")
		return
	}
	verifier := form.Get("code_verifier")
	switch {
	case c.challenge == "" && verifier != "":
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "code_verifier sent for a code without code_challenge")
		return
	case c.challenge != "" && verifier == "":
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "code_verifier missing")
		return
	case c.challenge != "" && !validVerifier(verifier):
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "malformed code_verifier")
		return
	case c.challenge != "" && !equalSecret(S256Challenge(verifier), c.challenge):
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "code_verifier does not match code_challenge")
		return
	}
	c.used = true
	c.family = p.newFamilyLocked(c.login, c.clientID, c.scope)
	writeJSON(w, http.StatusOK, p.issueLocked(c.family, true))
}

// validVerifier checks RFC 7636 4.1: 43-128 unreserved characters.
func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for _, ch := range v {
		if !(ch >= 'A' && ch <= 'Z' || ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || strings.ContainsRune("-._~", ch)) {
			return false
		}
	}
	return true
}

// S256Challenge is the RFC 7636 S256 code_challenge of verifier.
func S256Challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func (p *Provider) refreshGrant(w http.ResponseWriter, form url.Values) {
	rt := form.Get("refresh_token")
	p.mu.Lock()
	defer p.mu.Unlock()
	st, ok := p.refresh[rt]
	if !ok || rt == "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "unknown refresh token")
		return
	}
	fam := p.families[st.family]
	if st.revoked || fam.revoked {
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "refresh token revoked")
		return
	}
	if fam.clientID != p.opts.ClientID {
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "refresh token issued to another client")
		return
	}
	if st.rotated {
		if p.opts.ReuseDetection {
			p.revokeFamilyLocked(st.family)
			writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "refresh token reused; grant revoked")
			return
		}
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "refresh token was rotated")
		return
	}
	if s := form.Get("scope"); s != "" && !scopeSubset(s, fam.scope) {
		writeOAuthError(w, http.StatusBadRequest, "invalid_scope", "scope exceeds the grant")
		return
	}
	resp := p.issueLocked(st.family, p.opts.RotateRefreshTokens)
	if p.opts.RotateRefreshTokens {
		st.rotated = true
	}
	if !p.opts.RotateRefreshTokens && !p.opts.OmitRefreshTokenOnRefresh {
		resp.RefreshToken = rt // re-sent unchanged, as many providers do
	}
	writeJSON(w, http.StatusOK, resp)
}

func scopeSubset(req, granted string) bool {
	have := strings.Fields(granted)
	for _, s := range strings.Fields(req) {
		if !slices.Contains(have, s) {
			return false
		}
	}
	return true
}

func (p *Provider) newFamilyLocked(login, clientID, scope string) string {
	p.familyCount++
	id := "grant-" + strconv.Itoa(p.familyCount)
	p.families[id] = &family{login: login, clientID: clientID, scope: scope}
	return id
}

// issueLocked mints an access token (and a refresh token when withRefresh)
// in family fam.
func (p *Provider) issueLocked(fam string, withRefresh bool) tokenResponse {
	now := p.clock.Now()
	at := randomToken("at")
	st := &tokenState{family: fam}
	resp := tokenResponse{AccessToken: at, TokenType: "Bearer", Scope: p.families[fam].scope}
	if ttl := p.opts.AccessTokenTTL; ttl > 0 {
		st.expiresAt = now.Add(ttl)
		resp.ExpiresIn = int64(ttl / time.Second)
	}
	p.access[at] = st
	if withRefresh {
		rt := randomToken("rt")
		p.refresh[rt] = &tokenState{family: fam}
		resp.RefreshToken = rt
	}
	return resp
}

func (p *Provider) revokeFamilyLocked(fam string) {
	if f := p.families[fam]; f != nil {
		f.revoked = true
	}
	for _, st := range p.access {
		if st.family == fam {
			st.revoked = true
		}
	}
	for _, st := range p.refresh {
		if st.family == fam {
			st.revoked = true
		}
	}
}

func randomToken(prefix string) string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return prefix + "_" + base64.RawURLEncoding.EncodeToString(b)
}

// ---- revoke ----

func (p *Provider) handleRevoke(w http.ResponseWriter, r *http.Request) {
	form, ok := parseOAuthForm(w, r)
	if !ok || !p.authenticateClient(w, r, form) {
		return
	}
	tok := form.Get("token")
	if tok == "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "token missing")
		return
	}
	switch form.Get("token_type_hint") {
	case "", "access_token", "refresh_token":
	default:
		writeOAuthError(w, http.StatusBadRequest, "unsupported_token_type", "")
		return
	}
	p.mu.Lock()
	// The hint is only a hint (RFC 7009 2.1): look in both stores.
	if st, ok := p.refresh[tok]; ok {
		p.revokeFamilyLocked(st.family)
	} else if st, ok := p.access[tok]; ok {
		st.revoked = true
	}
	p.mu.Unlock()
	w.WriteHeader(http.StatusOK) // unknown tokens too (RFC 7009 2.2)
}

// ---- user info ----

func (p *Provider) handleUserInfo(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	unauthorized := func(desc string) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeOAuthError(w, http.StatusUnauthorized, "invalid_token", desc)
	}
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		unauthorized("Bearer access token required")
		return
	}
	p.mu.Lock()
	st, ok := p.access[tok]
	var login string
	valid := ok && !st.revoked && (st.expiresAt.IsZero() || p.clock.Now().Before(st.expiresAt))
	if valid {
		fam := p.families[st.family]
		valid = !fam.revoked
		login = fam.login
	}
	p.mu.Unlock()
	if !valid {
		unauthorized("access token unknown, expired or revoked")
		return
	}
	u := p.opts.Users[login]
	writeJSON(w, http.StatusOK, map[string]string{"id": u.ID, "name": u.Name, "email": u.Email, "timezone": u.Timezone})
}

// ---- recording and introspection ----

// Requests returns every request received since the start or Reset, in
// arrival order, including those answered with faults.
func (p *Provider) Requests() []RecordedRequest { return p.rec.all() }

// Count returns how many requests path received.
func (p *Provider) Count(path string) int {
	return len(p.rec.filter(func(r RecordedRequest) bool { return r.Path == path }))
}

// TokenRequests returns the requests to the token endpoint.
func (p *Provider) TokenRequests() []RecordedRequest {
	return p.rec.filter(func(r RecordedRequest) bool { return r.Path == PathToken })
}

// RefreshCount returns how many token requests asked for
// grant_type=refresh_token (whether answered, faulted or refused).
func (p *Provider) RefreshCount() int {
	return len(p.rec.filter(func(r RecordedRequest) bool {
		return r.Path == PathToken && r.Grant() == "refresh_token"
	}))
}

// Reset forgets recorded requests; codes, tokens and faults stay.
func (p *Provider) Reset() { p.rec.reset() }

// ActiveAccessTokens returns the access tokens that /userinfo would accept
// now, sorted.
func (p *Provider) ActiveAccessTokens() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	var out []string
	for tok, st := range p.access {
		if !st.revoked && !p.families[st.family].revoked && (st.expiresAt.IsZero() || now.Before(st.expiresAt)) {
			out = append(out, tok)
		}
	}
	slices.Sort(out)
	return out
}

// IsRevoked tells whether an access or refresh token was revoked, on its
// own or with its family. Unknown tokens are not revoked.
func (p *Provider) IsRevoked(token string) bool {
	info, ok := p.TokenInfo(token)
	return ok && info.Revoked
}

// FamilyRevoked tells whether the grant that token (a code, access or
// refresh token) belongs to was revoked as a whole.
func (p *Provider) FamilyRevoked(token string) bool {
	info, ok := p.TokenInfo(token)
	if !ok || info.Family == "" {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.families[info.Family].revoked
}

// TokenInfo describes a code or token the provider issued.
func (p *Provider) TokenInfo(token string) (TokenInfo, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.codes[token]; ok {
		info := TokenInfo{Kind: KindAuthCode, Login: c.login, Family: c.family, Rotated: c.used, ExpiresAt: c.expiresAt, Scope: c.scope}
		if f := p.families[c.family]; f != nil {
			info.Revoked = f.revoked
		}
		return info, true
	}
	for kind, m := range map[TokenKind]map[string]*tokenState{KindAccessToken: p.access, KindRefreshToken: p.refresh} {
		if st, ok := m[token]; ok {
			f := p.families[st.family]
			return TokenInfo{
				Kind: kind, Login: f.login, Family: st.family, Revoked: st.revoked || f.revoked,
				Rotated: st.rotated, ExpiresAt: st.expiresAt, Scope: f.scope,
			}, true
		}
	}
	return TokenInfo{}, false
}

// ActiveRefreshTokens returns the refresh tokens a refresh would accept
// now (not rotated, not revoked), sorted.
func (p *Provider) ActiveRefreshTokens() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for tok, st := range p.refresh {
		if !st.revoked && !st.rotated && !p.families[st.family].revoked {
			out = append(out, tok)
		}
	}
	slices.Sort(out)
	return out
}
