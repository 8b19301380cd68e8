package pipedrive

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"golang.org/x/oauth2"

	"github.com/connectd/connectd/core/connector"
)

const (
	testClientID     = "pd-client-id"
	testClientSecret = "pd-client-secret"
	testAccess       = "v1u:access-token"
	testRefresh      = "refresh-token-1"
	testCode         = "auth-code-1"
	testRedirect     = "https://connectd.example/oauth/callback"
)

// fakePipedrive plays oauth.pipedrive.com and <company>.pipedrive.com on
// one httptest server. Every handler checks the request exactly as the
// named documentation page describes it and fails the test otherwise.
type fakePipedrive struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	calls    []string // "METHOD path" in order
	revoked  []string // "hint=token" in order
	meMode   string   // "", "malformed", "nodata", "ratelimit"
	revokeSC int      // status for /oauth/revoke (0: 200)
}

func newFakePipedrive(t *testing.T) *fakePipedrive {
	t.Helper()
	f := &fakePipedrive{t: t}
	mux := http.NewServeMux()
	mux.HandleFunc("/oauth/token", f.token)
	mux.HandleFunc("/oauth/revoke", f.revoke)
	mux.HandleFunc("/api/v1/users/me", f.me)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		f.t.Errorf("fake pipedrive: unexpected request %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
	})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.calls = append(f.calls, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakePipedrive) fail(w http.ResponseWriter, format string, args ...any) {
	f.t.Helper()
	f.t.Errorf("fake pipedrive: "+format, args...)
	http.Error(w, `{"success":false,"error":"bad request"}`, http.StatusBadRequest)
}

// checkClientAuth enforces HTTP Basic client authentication, the only one
// Pipedrive documents, and a form body (other content types get 400).
func (f *fakePipedrive) checkClientAuth(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	if r.Method != http.MethodPost {
		f.fail(w, "%s: method %s, want POST", r.URL.Path, r.Method)
		return nil, false
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		f.fail(w, "%s: Content-Type %q, want application/x-www-form-urlencoded", r.URL.Path, r.Header.Get("Content-Type"))
		return nil, false
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(testClientID+":"+testClientSecret))
	if got := r.Header.Get("Authorization"); got != want {
		f.fail(w, "%s: Authorization %q, want Basic client credentials", r.URL.Path, got)
		return nil, false
	}
	if err := r.ParseForm(); err != nil {
		f.fail(w, "%s: form: %v", r.URL.Path, err)
		return nil, false
	}
	if r.PostForm.Has("client_id") || r.PostForm.Has("client_secret") {
		f.fail(w, "%s: client credentials in the body as well as in Basic", r.URL.Path)
		return nil, false
	}
	return r.PostForm, true
}

// token follows https://pipedrive.readme.io/docs/marketplace-oauth-authorization
// ("Step 3: getting the tokens" and "Step 7: refreshing the tokens").
func (f *fakePipedrive) token(w http.ResponseWriter, r *http.Request) {
	form, ok := f.checkClientAuth(w, r)
	if !ok {
		return
	}
	switch form.Get("grant_type") {
	case "authorization_code":
		if form.Get("code") != testCode || form.Get("redirect_uri") != testRedirect {
			f.fail(w, "token: code %q redirect_uri %q", form.Get("code"), form.Get("redirect_uri"))
			return
		}
	case "refresh_token":
		if form.Get("refresh_token") != testRefresh {
			f.fail(w, "token: refresh_token %q", form.Get("refresh_token"))
			return
		}
	default:
		f.fail(w, "token: grant_type %q", form.Get("grant_type"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3599,"refresh_token":%q,"scope":"base,deals:full,contacts:read","api_domain":%q}`,
		testAccess, testRefresh, f.srv.URL)
}

// revoke follows https://pipedrive.readme.io/docs/app-uninstallation
// ("Token revocation", RFC 7009): Basic client auth, form token and
// token_type_hint.
func (f *fakePipedrive) revoke(w http.ResponseWriter, r *http.Request) {
	form, ok := f.checkClientAuth(w, r)
	if !ok {
		return
	}
	hint, tok := form.Get("token_type_hint"), form.Get("token")
	if (hint != "refresh_token" && hint != "access_token") || tok == "" {
		f.fail(w, "revoke: token_type_hint %q token %q", hint, tok)
		return
	}
	f.mu.Lock()
	f.revoked = append(f.revoked, hint+"="+tok)
	sc := f.revokeSC
	f.mu.Unlock()
	if sc == http.StatusBadRequest {
		// RFC 7009 section 2.2.1: an unknown token is an invalid_token error
		// for servers that report it (Pipedrive does not say; the connector
		// treats it as already revoked).
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(sc)
		fmt.Fprint(w, `{"error":"invalid_token"}`)
		return
	}
	if sc != 0 {
		w.WriteHeader(sc)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// me follows https://developers.pipedrive.com/docs/api/v1/Users#getCurrentUser
// (envelope, fields) and, for errors,
// https://pipedrive.readme.io/docs/core-api-concepts-http-status-codes (401
// body) and https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting
// (429 with x-ratelimit-* headers).
func (f *fakePipedrive) me(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.RawQuery != "" || r.ContentLength > 0 {
		f.fail(w, "users/me: %s %s with %d body bytes, want a plain GET", r.Method, r.URL, r.ContentLength)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Authorization") != "Bearer "+testAccess {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"success":false,"error":"unauthorized access","errorCode":401,"error_info":"Please check developers.pipedrive.com"}`)
		return
	}
	f.mu.Lock()
	mode := f.meMode
	f.mu.Unlock()
	switch mode {
	case "malformed":
		fmt.Fprint(w, `{"success":true,"data":{"id":`)
	case "nodata":
		fmt.Fprint(w, `{"success":true,"data":null}`)
	case "ratelimit":
		w.Header().Set("x-ratelimit-limit", "80")
		w.Header().Set("x-ratelimit-remaining", "0")
		w.Header().Set("x-ratelimit-reset", "2")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"success":false,"error":"Request over limit","errorCode":429}`)
	default:
		fmt.Fprint(w, `{"success":true,"data":{"id":123456,"name":"Ada Lovelace","default_currency":"EUR","locale":"en_US","lang":1,"email":"ada@acme.example","phone":null,"activated":true,"last_login":"2026-11-01 10:00:00","created":"2020-01-01 10:00:00","modified":"2026-11-01 10:00:00","has_created_company":true,"access":[{"app":"sales","admin":true,"permission_set_id":"1"}],"active_flag":true,"timezone_name":"Europe/Berlin","timezone_offset":"+01:00","role_id":1,"icon_url":null,"is_you":true,"company_id":987,"company_name":"Acme GmbH","company_domain":"acme","company_country":"DE","company_industry":"Software","language":{"language_code":"en","country_code":"US"}}}`)
	}
}

func (f *fakePipedrive) setMeMode(m string) {
	f.mu.Lock()
	f.meMode = m
	f.mu.Unlock()
}

func (f *fakePipedrive) reset() {
	f.mu.Lock()
	f.calls, f.revoked, f.meMode, f.revokeSC = nil, nil, "", 0
	f.mu.Unlock()
}

func (f *fakePipedrive) snapshot() (calls, revoked []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...), append([]string(nil), f.revoked...)
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func newTestConnector(t *testing.T, f *fakePipedrive) *Connector {
	t.Helper()
	c, err := New(connector.Config{Name: "pipedrive", Getenv: env(map[string]string{
		EnvClientID:      testClientID,
		EnvClientSecret:  testClientSecret,
		EnvOAuthBaseURL:  f.srv.URL,
		EnvTestAPIOrigin: f.srv.URL,
	})})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c.(*Connector)
}

// engineClient plays the engine's per-user client: it injects the user's
// bearer token unless the connector set Authorization itself.
func engineClient(access string) *http.Client {
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Header.Get("Authorization") == "" {
			r = r.Clone(r.Context())
			r.Header.Set("Authorization", "Bearer "+access)
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{"no client id", map[string]string{EnvClientSecret: "s"}, "PIPEDRIVE_CLIENT_ID is not set"},
		{"no client secret", map[string]string{EnvClientID: "i"}, "PIPEDRIVE_CLIENT_SECRET is not set"},
		{"bad oauth base", map[string]string{EnvClientID: "i", EnvClientSecret: "s", EnvOAuthBaseURL: "ftp://x"}, EnvOAuthBaseURL},
		{"ok", map[string]string{EnvClientID: "i", EnvClientSecret: "s"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(connector.Config{Name: "pipedrive", Getenv: env(tt.env)})
			if tt.wantErr == "" {
				if err != nil || c == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if !errors.Is(err, connector.ErrUnavailable) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want ErrUnavailable mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestOAuthInfoAndCodeExchange(t *testing.T) {
	f := newFakePipedrive(t)
	c := newTestConnector(t, f)
	ctx := context.Background()

	at, err := c.AuthType(ctx)
	if err != nil || at != connector.AuthOAuth {
		t.Fatalf("AuthType = %q, %v", at, err)
	}
	info, err := c.OAuthInfo(ctx, connector.OAuthInfoRequest{Hostname: "acme.pipedrive.com"})
	if err != nil {
		t.Fatal(err)
	}
	if info.ClientID != testClientID || info.ClientSecret.Reveal() != testClientSecret ||
		info.TokenURL != f.srv.URL+"/oauth/token" || info.AuthURL != f.srv.URL+"/oauth/authorize" ||
		info.AuthStyle != oauth2.AuthStyleInHeader || len(info.Scopes) != 0 || info.Hostname != "acme.pipedrive.com" {
		t.Fatalf("OAuthInfo = %+v", info)
	}
	// Production defaults.
	prod, _ := New(connector.Config{Getenv: env(map[string]string{EnvClientID: "i", EnvClientSecret: "s"})})
	pinfo, _ := prod.(*Connector).OAuthInfo(ctx, connector.OAuthInfoRequest{})
	if pinfo.TokenURL != "https://oauth.pipedrive.com/oauth/token" || pinfo.AuthURL != "https://oauth.pipedrive.com/oauth/authorize" {
		t.Fatalf("production OAuthInfo = %+v", pinfo)
	}

	// What the engine does with these values (x/oauth2) must be exactly
	// what Pipedrive documents; the fake checks it.
	cfg := oauth2.Config{
		ClientID: info.ClientID, ClientSecret: info.ClientSecret.Reveal(),
		Endpoint:    oauth2.Endpoint{AuthURL: info.AuthURL, TokenURL: info.TokenURL, AuthStyle: info.AuthStyle},
		RedirectURL: testRedirect,
	}
	tok, err := cfg.Exchange(ctx, testCode)
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if tok.AccessToken != testAccess || tok.RefreshToken != testRefresh {
		t.Fatalf("token = %+v", tok)
	}
	res, err := c.UserInfo(ctx, connector.UserInfoRequest{HTTPClient: http.DefaultClient, AuthHeader: "Bearer " + tok.AccessToken, Token: tok})
	if err != nil || !res.Successful {
		t.Fatalf("UserInfo after exchange = %+v, %v", res, err)
	}
}

func TestUserInfo(t *testing.T) {
	f := newFakePipedrive(t)
	c := newTestConnector(t, f)
	fakeHost := strings.TrimPrefix(f.srv.URL, "http://")
	tokenWith := func(domain string) *oauth2.Token {
		return (&oauth2.Token{AccessToken: testAccess}).WithExtra(map[string]any{"api_domain": domain})
	}
	tests := []struct {
		name      string
		mode      string
		token     *oauth2.Token
		auth      string
		wantOK    bool
		wantErr   string
		wantCalls []string
	}{
		{name: "success", token: tokenWith(f.srv.URL), auth: "Bearer " + testAccess, wantOK: true, wantCalls: []string{"GET /api/v1/users/me"}},
		{name: "401 invalid token", token: tokenWith(f.srv.URL), auth: "Bearer wrong", wantCalls: []string{"GET /api/v1/users/me"}},
		{name: "malformed answer", mode: "malformed", token: tokenWith(f.srv.URL), auth: "Bearer " + testAccess, wantErr: "malformed JSON", wantCalls: []string{"GET /api/v1/users/me"}},
		{name: "no data", mode: "nodata", token: tokenWith(f.srv.URL), auth: "Bearer " + testAccess, wantErr: "data.id", wantCalls: []string{"GET /api/v1/users/me"}},
		{name: "429", mode: "ratelimit", token: tokenWith(f.srv.URL), auth: "Bearer " + testAccess, wantErr: "429", wantCalls: []string{"GET /api/v1/users/me"}},
		{name: "api_domain elsewhere", token: tokenWith("https://evil.example"), auth: "Bearer " + testAccess, wantErr: "not an https://*.pipedrive.com"},
		{name: "api_domain missing", token: &oauth2.Token{AccessToken: testAccess}, auth: "Bearer " + testAccess, wantErr: "no api_domain"},
		{name: "no token", auth: "Bearer " + testAccess, wantErr: "no api_domain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.reset()
			f.setMeMode(tt.mode)
			res, err := c.UserInfo(context.Background(), connector.UserInfoRequest{
				HTTPClient: http.DefaultClient, AuthHeader: tt.auth, Platform: "pipedrive", Token: tt.token,
			})
			calls, _ := f.snapshot()
			if strings.Join(calls, ",") != strings.Join(tt.wantCalls, ",") {
				t.Errorf("upstream calls = %v, want %v", calls, tt.wantCalls)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("UserInfo: %v", err)
			}
			if res.Successful != tt.wantOK {
				t.Fatalf("Successful = %v, want %v (%+v)", res.Successful, tt.wantOK, res.ReturnMessage)
			}
			if !tt.wantOK {
				if res.ReturnMessage == nil || res.ReturnMessage.MessageType != connector.MessageWarning {
					t.Fatalf("refused login has no warning: %+v", res)
				}
				return
			}
			u := res.User
			if u.ID != "123456" || u.Name != "Ada Lovelace" || u.TimezoneName != "Europe/Berlin" || u.TimezoneOffset != "+01:00" ||
				u.OverridingHostname != fakeHost || u.AdditionalInfo["companyId"] != "987" || u.AdditionalInfo["companyDomain"] != "acme" {
				t.Fatalf("user = %+v", u)
			}
		})
	}
}

func TestAPIDomainCheck(t *testing.T) {
	c, err := New(connector.Config{Getenv: env(map[string]string{EnvClientID: "i", EnvClientSecret: "s"})})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in, want string
	}{
		{"https://acme.pipedrive.com", "https://acme.pipedrive.com"},
		{"https://ACME.pipedrive.com/", "https://acme.pipedrive.com"},
		{"acme.pipedrive.com", "https://acme.pipedrive.com"},
		{"https://a.b.pipedrive.com", "https://a.b.pipedrive.com"},
		{"http://acme.pipedrive.com", ""},
		{"https://pipedrive.com", ""},
		{"https://.pipedrive.com", ""},
		{"https://acme.pipedrive.com.evil.com", ""},
		{"https://evilpipedrive.com", ""},
		{"https://acme.pipedrive.com:8443", ""},
		{"https://user@acme.pipedrive.com", ""},
		{"https://evil.example/acme.pipedrive.com", ""},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := c.(*Connector).apiBase(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("apiBase(%q) = %q, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("apiBase(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestUnauthorize(t *testing.T) {
	f := newFakePipedrive(t)
	c := newTestConnector(t, f)
	user := func(access, refresh string) connector.User {
		return connector.User{Platform: "pipedrive", Hostname: strings.TrimPrefix(f.srv.URL, "http://"),
			AccessToken: connector.Secret(access), RefreshToken: connector.Secret(refresh)}
	}
	tests := []struct {
		name        string
		user        connector.User
		oauth       connector.OAuthInfo
		revokeSC    int
		wantErr     bool
		wantRevoked []string
	}{
		{name: "refresh then access", user: user(testAccess, testRefresh),
			wantRevoked: []string{"refresh_token=" + testRefresh, "access_token=" + testAccess}},
		{name: "issuing app from the request", user: user(testAccess, testRefresh),
			oauth:       connector.OAuthInfo{ClientID: testClientID, ClientSecret: testClientSecret},
			wantRevoked: []string{"refresh_token=" + testRefresh, "access_token=" + testAccess}},
		{name: "access only", user: user(testAccess, ""), wantRevoked: []string{"access_token=" + testAccess}},
		{name: "nothing to revoke", user: user("", "")},
		{name: "already revoked", user: user(testAccess, testRefresh), revokeSC: http.StatusBadRequest,
			wantRevoked: []string{"refresh_token=" + testRefresh, "access_token=" + testAccess}},
		{name: "server error is retried later", user: user(testAccess, testRefresh), revokeSC: http.StatusServiceUnavailable,
			wantErr: true, wantRevoked: []string{"refresh_token=" + testRefresh}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.reset()
			f.mu.Lock()
			f.revokeSC = tt.revokeSC
			f.mu.Unlock()
			res, err := c.Unauthorize(context.Background(), connector.UserRequest{
				HTTPClient: engineClient(tt.user.AccessToken.Reveal()), User: tt.user, OAuth: tt.oauth,
			})
			_, revoked := f.snapshot()
			if strings.Join(revoked, ",") != strings.Join(tt.wantRevoked, ",") {
				t.Errorf("revoked = %v, want %v", revoked, tt.wantRevoked)
			}
			if tt.wantErr {
				if err == nil {
					t.Fatal("want an error for the engine to retry")
				}
				return
			}
			if err != nil || !res.Successful || res.ReturnMessage == nil || res.ReturnMessage.Message != "Logged out of Pipedrive" {
				t.Fatalf("Unauthorize = %+v, %v", res, err)
			}
		})
	}
}

func TestValidateAuth(t *testing.T) {
	f := newFakePipedrive(t)
	c := newTestConnector(t, f)
	host := strings.TrimPrefix(f.srv.URL, "http://")
	tests := []struct {
		name       string
		hostname   string
		access     string
		wantOK     bool
		wantStatus int
		wantErr    bool
	}{
		{"valid", host, testAccess, true, 200, false},
		{"revoked", host, "stale", false, 401, false},
		{"foreign hostname", "evil.example", testAccess, false, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.reset()
			res, err := c.ValidateAuth(context.Background(), connector.UserRequest{
				HTTPClient: engineClient(tt.access), User: connector.User{Hostname: tt.hostname},
			})
			if tt.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				if calls, _ := f.snapshot(); len(calls) != 0 {
					t.Fatalf("calls = %v, want none", calls)
				}
				return
			}
			if err != nil || res.Successful != tt.wantOK || res.Status != tt.wantStatus {
				t.Fatalf("ValidateAuth = %+v, %v", res, err)
			}
		})
	}
}
