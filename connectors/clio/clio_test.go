package clio

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/connectd/connectd/core/connector"
)

const (
	testRedirect = "https://connectd.example/oauth/callback"
	testCode     = "clio-code"
)

// fakeClio plays one Clio region (OAuth and API on the same host). Every
// handler checks requests as the named documentation page describes them
// and fails the test otherwise.
type fakeClio struct {
	t                      *testing.T
	name                   string
	clientID, clientSecret string
	access, refresh        string
	srv                    *httptest.Server

	mu     sync.Mutex
	calls  []string
	mode   string // "", "malformed", "nodata", "ratelimit"
	deauth int    // status for /oauth/deauthorize (0: 200)
}

func newFakeClio(t *testing.T, name string) *fakeClio {
	t.Helper()
	f := &fakeClio{t: t, name: name, clientID: name + "-id", clientSecret: name + "-secret",
		access: name + "-access", refresh: name + "-refresh"}
	mux := http.NewServeMux()
	mux.HandleFunc("/oauth/token", f.token)
	mux.HandleFunc("/oauth/deauthorize", f.deauthorize)
	mux.HandleFunc("/api/v4/users/who_am_i.json", f.whoAmI)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		f.t.Errorf("fake clio %s: unexpected request %s %s", f.name, r.Method, r.URL)
		http.NotFound(w, r)
	})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.calls = append(f.calls, r.Method+" "+r.URL.RequestURI())
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeClio) fail(w http.ResponseWriter, format string, args ...any) {
	f.t.Helper()
	f.t.Errorf("fake clio %s: "+format, append([]any{f.name}, args...)...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	fmt.Fprint(w, `{"error":{"type":"BadRequest","message":"bad request"}}`)
}

func (f *fakeClio) form(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	if r.Method != http.MethodPost {
		f.fail(w, "%s: method %s, want POST", r.URL.Path, r.Method)
		return nil, false
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		f.fail(w, "%s: Content-Type %q, want a form", r.URL.Path, r.Header.Get("Content-Type"))
		return nil, false
	}
	if err := r.ParseForm(); err != nil {
		f.fail(w, "%s: %v", r.URL.Path, err)
		return nil, false
	}
	return r.PostForm, true
}

// token follows https://docs.developers.clio.com/api-docs/authorization
// ("Step 3: Exchange the authorization code for an access token", "Refresh
// tokens"). The docs put client_id and client_secret in the body; HTTP
// Basic also works in production (crm-apis.md "(?)"), so both are accepted
// here - but never both at once, and never neither.
func (f *fakeClio) token(w http.ResponseWriter, r *http.Request) {
	form, ok := f.form(w, r)
	if !ok {
		return
	}
	id, secret, basic := r.BasicAuth()
	inBody := form.Has("client_id") || form.Has("client_secret")
	switch {
	case basic && inBody:
		f.fail(w, "token: client credentials in Basic and in the body")
		return
	case !basic && !inBody:
		f.fail(w, "token: no client authentication")
		return
	case inBody:
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	if id != f.clientID || secret != f.clientSecret {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"invalid_client","error_description":"Client authentication failed"}`)
		f.t.Errorf("fake clio %s: token: client %q (wrong region's app?)", f.name, id)
		return
	}
	switch form.Get("grant_type") {
	case "authorization_code":
		if form.Get("code") != testCode || form.Get("redirect_uri") != testRedirect {
			f.fail(w, "token: code %q redirect_uri %q", form.Get("code"), form.Get("redirect_uri"))
			return
		}
	case "refresh_token":
		if form.Get("refresh_token") != f.refresh {
			f.fail(w, "token: refresh_token %q", form.Get("refresh_token"))
			return
		}
	default:
		f.fail(w, "token: grant_type %q", form.Get("grant_type"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"token_type":"bearer","access_token":%q,"expires_in":2592000,"refresh_token":%q}`, f.access, f.refresh)
}

// deauthorize follows https://docs.developers.clio.com/api-docs/authorization
// ("Deauthorization"): POST with the access token as bearer and as the
// form's token; 200 with an empty body.
func (f *fakeClio) deauthorize(w http.ResponseWriter, r *http.Request) {
	form, ok := f.form(w, r)
	if !ok {
		return
	}
	if got := r.Header.Get("Authorization"); got != "Bearer "+f.access {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"invalid_token","error_description":"The access token is invalid"}`)
		return
	}
	if form.Get("token") != f.access || len(form) != 1 {
		f.fail(w, "deauthorize: form %v, want only token=<access token>", form)
		return
	}
	f.mu.Lock()
	sc := f.deauth
	f.mu.Unlock()
	if sc == 0 {
		sc = http.StatusOK
	}
	w.WriteHeader(sc)
}

// whoAmI follows https://docs.developers.clio.com/api-reference/ (Users:
// "Return the data for the current User", GET /users/who_am_i.json; Fields;
// Rate Limits: 429 with Retry-After and X-RateLimit-*) and the 401 body of
// https://docs.developers.clio.com/api-docs/authorization.
func (f *fakeClio) whoAmI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		f.fail(w, "who_am_i: method %s", r.Method)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Authorization") != "Bearer "+f.access {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"invalid_token","error_description":"The access token is invalid"}`)
		return
	}
	if got := r.URL.Query(); got.Get("fields") != "id,name,time_zone" || len(got) != 1 || r.ContentLength > 0 {
		f.fail(w, "who_am_i: query %v, want only fields=id,name,time_zone and no body", got)
		return
	}
	f.mu.Lock()
	mode := f.mode
	f.mu.Unlock()
	switch mode {
	case "malformed":
		fmt.Fprint(w, `<html>oops</html>`)
	case "nodata":
		fmt.Fprint(w, `{"data":{"etag":"\"abc\""}}`)
	case "ratelimit":
		w.Header().Set("Retry-After", "30")
		w.Header().Set("X-RateLimit-Limit", "50")
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Reset", "1767225600")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"error":{"type":"RateLimited","message":"Rate limit exceeded. Retry in 30 seconds"}}`)
	default:
		fmt.Fprintf(w, `{"data":{"id":344,"name":"%s Counsel","time_zone":"Eastern Time (US & Canada)"}}`, f.name)
	}
}

func (f *fakeClio) reset(mode string, deauth int) {
	f.mu.Lock()
	f.calls, f.mode, f.deauth = nil, mode, deauth
	f.mu.Unlock()
}

func (f *fakeClio) snapshot() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// setup configures US and EU (each on its own fake) and leaves CA and AU
// unconfigured.
func setup(t *testing.T) (*Connector, *fakeClio, *fakeClio) {
	t.Helper()
	us, eu := newFakeClio(t, "us"), newFakeClio(t, "eu")
	c, err := New(connector.Config{Name: "clio", Getenv: env(map[string]string{
		"CLIO_CLIENT_ID": us.clientID, "CLIO_CLIENT_SECRET": us.clientSecret, "CLIO_BASE_URL": us.srv.URL,
		"CLIO_EU_CLIENT_ID": eu.clientID, "CLIO_EU_CLIENT_SECRET": eu.clientSecret, "CLIO_EU_BASE_URL": eu.srv.URL,
	})})
	if err != nil {
		t.Fatal(err)
	}
	return c.(*Connector), us, eu
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
		{"nothing configured", nil, "CLIO_CLIENT_ID and CLIO_CLIENT_SECRET are not set"},
		{"us secret missing", map[string]string{"CLIO_CLIENT_ID": "x"}, "CLIO_CLIENT_SECRET is not set"},
		{"eu id missing", map[string]string{"CLIO_EU_CLIENT_SECRET": "x"}, "CLIO_EU_CLIENT_ID is not"},
		{"bad base", map[string]string{"CLIO_AU_CLIENT_ID": "x", "CLIO_AU_CLIENT_SECRET": "y", "CLIO_AU_BASE_URL": "nope"}, "CLIO_AU_BASE_URL"},
		{"us only", map[string]string{"CLIO_CLIENT_ID": "x", "CLIO_CLIENT_SECRET": "y"}, ""},
		{"eu only", map[string]string{"CLIO_EU_CLIENT_ID": "x", "CLIO_EU_CLIENT_SECRET": "y"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(connector.Config{Getenv: env(tt.env)})
			if tt.wantErr == "" {
				if err != nil || c == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if !errors.Is(err, connector.ErrUnavailable) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want ErrUnavailable mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestRegionHost(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "app.clio.com"},
		{"app.clio.com", "app.clio.com"},
		{"https://eu.app.clio.com", "eu.app.clio.com"},
		{"https://EU.app.clio.com/", "eu.app.clio.com"},
		{"ca.app.clio.com", "ca.app.clio.com"},
		{"https://au.app.clio.com", "au.app.clio.com"},
		{"http://eu.app.clio.com", ""},
		{"https://eu.app.clio.com:444", ""},
		{"https://eu.app.clio.com/oauth", ""},
		{"https://x@app.clio.com", ""},
		{"grow.clio.com", ""},
		{"app.clio.com.evil.com", ""},
		{"evil.example", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := RegionHost(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("RegionHost(%q) = %q, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("RegionHost(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestOAuthInfo(t *testing.T) {
	c, us, eu := setup(t)
	ctx := context.Background()
	tests := []struct {
		name     string
		hostname string
		fake     *fakeClio
		wantHost string
		wantFail string
	}{
		{"default region", "", us, "app.clio.com", ""},
		{"us", "https://app.clio.com", us, "app.clio.com", ""},
		{"eu", "https://eu.app.clio.com", eu, "eu.app.clio.com", ""},
		{"unconfigured region", "https://ca.app.clio.com", nil, "", "region ca.app.clio.com is not configured"},
		{"not a region", "https://evil.example", nil, "", "not a Clio region"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := c.OAuthInfo(ctx, connector.OAuthInfoRequest{Hostname: tt.hostname})
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantFail != "" {
				if info.FailMessage == nil || !strings.Contains(info.FailMessage.Message, tt.wantFail) || info.ClientID != "" {
					t.Fatalf("OAuthInfo = %+v, want a FailMessage %q", info, tt.wantFail)
				}
				return
			}
			if info.ClientID != tt.fake.clientID || info.ClientSecret.Reveal() != tt.fake.clientSecret ||
				info.TokenURL != tt.fake.srv.URL+"/oauth/token" || info.AuthURL != tt.fake.srv.URL+"/oauth/authorize" ||
				info.Hostname != tt.wantHost || info.AuthStyle != oauth2.AuthStyleInParams || info.FailMessage != nil {
				t.Fatalf("OAuthInfo = %+v", info)
			}
			// The engine's exchange with these values is what Clio documents
			// (the fake checks client auth, grant and redirect URI).
			cfg := oauth2.Config{ClientID: info.ClientID, ClientSecret: info.ClientSecret.Reveal(), RedirectURL: testRedirect,
				Endpoint: oauth2.Endpoint{AuthURL: info.AuthURL, TokenURL: info.TokenURL, AuthStyle: info.AuthStyle}}
			tok, err := cfg.Exchange(ctx, testCode)
			if err != nil || tok.AccessToken != tt.fake.access || tok.RefreshToken != tt.fake.refresh {
				t.Fatalf("Exchange = %+v, %v", tok, err)
			}
			// Refresh too: same endpoint, grant_type=refresh_token.
			tok.Expiry = time.Now().Add(-time.Minute)
			fresh, err := cfg.TokenSource(ctx, tok).Token()
			if err != nil || fresh.AccessToken != tt.fake.access {
				t.Fatalf("refresh = %+v, %v", fresh, err)
			}
		})
	}
	// Production hosts.
	prod, _ := New(connector.Config{Getenv: env(map[string]string{"CLIO_AU_CLIENT_ID": "a", "CLIO_AU_CLIENT_SECRET": "b"})})
	info, _ := prod.(*Connector).OAuthInfo(ctx, connector.OAuthInfoRequest{Hostname: "au.app.clio.com"})
	if info.AuthURL != "https://au.app.clio.com/oauth/authorize" || info.TokenURL != "https://au.app.clio.com/oauth/token" {
		t.Fatalf("production AU = %+v", info)
	}
}

func TestBasicClientAuthAcceptedByFake(t *testing.T) {
	// The fake also takes HTTP Basic (production accepts it); the connector
	// itself uses the documented body form, proven in TestOAuthInfo.
	c, us, _ := setup(t)
	info, _ := c.OAuthInfo(context.Background(), connector.OAuthInfoRequest{})
	cfg := oauth2.Config{ClientID: info.ClientID, ClientSecret: info.ClientSecret.Reveal(), RedirectURL: testRedirect,
		Endpoint: oauth2.Endpoint{TokenURL: info.TokenURL, AuthStyle: oauth2.AuthStyleInHeader}}
	if tok, err := cfg.Exchange(context.Background(), testCode); err != nil || tok.AccessToken != us.access {
		t.Fatalf("Basic exchange = %+v, %v", tok, err)
	}
}

func TestUserInfo(t *testing.T) {
	c, us, eu := setup(t)
	tests := []struct {
		name      string
		hostname  string
		auth      string
		mode      string
		wantName  string
		wantOK    bool
		wantErr   string
		wantUS    []string
		wantEU    []string
		wantRegio string
	}{
		{name: "us success", hostname: "https://app.clio.com", auth: "Bearer us-access", wantOK: true, wantName: "us Counsel", wantRegio: "US",
			wantUS: []string{"GET /api/v4/users/who_am_i.json?fields=id,name,time_zone"}},
		{name: "eu success goes to the eu host only", hostname: "eu.app.clio.com", auth: "Bearer eu-access", wantOK: true, wantName: "eu Counsel", wantRegio: "EU",
			wantEU: []string{"GET /api/v4/users/who_am_i.json?fields=id,name,time_zone"}},
		{name: "401", hostname: "app.clio.com", auth: "Bearer stale",
			wantUS: []string{"GET /api/v4/users/who_am_i.json?fields=id,name,time_zone"}},
		{name: "malformed", hostname: "app.clio.com", auth: "Bearer us-access", mode: "malformed", wantErr: "malformed JSON",
			wantUS: []string{"GET /api/v4/users/who_am_i.json?fields=id,name,time_zone"}},
		{name: "no id", hostname: "app.clio.com", auth: "Bearer us-access", mode: "nodata", wantErr: "without data.id",
			wantUS: []string{"GET /api/v4/users/who_am_i.json?fields=id,name,time_zone"}},
		{name: "429", hostname: "app.clio.com", auth: "Bearer us-access", mode: "ratelimit", wantErr: `Retry-After "30"`,
			wantUS: []string{"GET /api/v4/users/who_am_i.json?fields=id,name,time_zone"}},
		{name: "foreign hostname", hostname: "https://evil.example", auth: "Bearer us-access"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			us.reset(tt.mode, 0)
			eu.reset(tt.mode, 0)
			res, err := c.UserInfo(context.Background(), connector.UserInfoRequest{
				HTTPClient: http.DefaultClient, AuthHeader: tt.auth, Hostname: tt.hostname, Platform: "clio",
			})
			if got := us.snapshot(); strings.Join(got, ",") != strings.Join(tt.wantUS, ",") {
				t.Errorf("US calls = %v, want %v", got, tt.wantUS)
			}
			if got := eu.snapshot(); strings.Join(got, ",") != strings.Join(tt.wantEU, ",") {
				t.Errorf("EU calls = %v, want %v", got, tt.wantEU)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Successful != tt.wantOK {
				t.Fatalf("Successful = %v (%+v)", res.Successful, res.ReturnMessage)
			}
			if !tt.wantOK {
				if res.ReturnMessage == nil || res.ReturnMessage.MessageType != connector.MessageWarning {
					t.Fatalf("no warning: %+v", res)
				}
				return
			}
			u := res.User
			wantHost, _ := RegionHost(tt.hostname)
			if u.ID != "344" || u.Name != tt.wantName || u.TimezoneName != "Eastern Time (US & Canada)" ||
				u.OverridingHostname != wantHost || u.AdditionalInfo["region"] != tt.wantRegio {
				t.Fatalf("user = %+v", u)
			}
		})
	}
}

func TestValidateAuth(t *testing.T) {
	c, us, _ := setup(t)
	tests := []struct {
		name       string
		access     string
		hostname   string
		wantOK     bool
		wantStatus int
		wantErr    bool
	}{
		{"valid", "us-access", "app.clio.com", true, 200, false},
		{"invalid token", "stale", "app.clio.com", false, 401, false},
		{"unconfigured region", "us-access", "au.app.clio.com", false, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			us.reset("", 0)
			res, err := c.ValidateAuth(context.Background(), connector.UserRequest{
				HTTPClient: engineClient(tt.access), User: connector.User{Hostname: tt.hostname},
			})
			if tt.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil || res.Successful != tt.wantOK || res.Status != tt.wantStatus {
				t.Fatalf("ValidateAuth = %+v, %v", res, err)
			}
		})
	}
}

func TestUnauthorize(t *testing.T) {
	c, us, eu := setup(t)
	tests := []struct {
		name     string
		hostname string
		access   string
		deauth   int
		wantErr  bool
		wantUS   []string
		wantEU   []string
	}{
		{name: "us deauthorize", hostname: "app.clio.com", access: "us-access", wantUS: []string{"POST /oauth/deauthorize"}},
		{name: "eu deauthorize", hostname: "https://eu.app.clio.com", access: "eu-access", wantEU: []string{"POST /oauth/deauthorize"}},
		{name: "already deauthorized (401)", hostname: "app.clio.com", access: "gone", wantUS: []string{"POST /oauth/deauthorize"}},
		{name: "no token", hostname: "app.clio.com", access: ""},
		{name: "server error is retried later", hostname: "app.clio.com", access: "us-access", deauth: 503, wantErr: true, wantUS: []string{"POST /oauth/deauthorize"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			us.reset("", tt.deauth)
			eu.reset("", tt.deauth)
			res, err := c.Unauthorize(context.Background(), connector.UserRequest{
				HTTPClient: engineClient(tt.access),
				User:       connector.User{Hostname: tt.hostname, AccessToken: connector.Secret(tt.access), RefreshToken: "r"},
			})
			if got := us.snapshot(); strings.Join(got, ",") != strings.Join(tt.wantUS, ",") {
				t.Errorf("US calls = %v, want %v", got, tt.wantUS)
			}
			if got := eu.snapshot(); strings.Join(got, ",") != strings.Join(tt.wantEU, ",") {
				t.Errorf("EU calls = %v, want %v", got, tt.wantEU)
			}
			if tt.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil || !res.Successful || res.ReturnMessage.Message != "Logged out of Clio" {
				t.Fatalf("Unauthorize = %+v, %v", res, err)
			}
		})
	}
}
