package insightly

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // IANA names checked without relying on the host's zoneinfo

	"github.com/connectd/connectd/core/connector"
)

const testKey = "0f9c1d2e-insightly-key"

// fakeInsightly plays one Insightly pod's API. Every handler checks the
// request as the named documentation page describes it and fails the test
// otherwise.
type fakeInsightly struct {
	t   *testing.T
	srv *httptest.Server

	mu    sync.Mutex
	calls []string
	mode  string // "", "malformed", "noid", "ratelimit"
}

func newFake(t *testing.T) *fakeInsightly {
	t.Helper()
	f := &fakeInsightly{t: t}
	mux := http.NewServeMux()
	mux.HandleFunc("/v3.1/Users/Me", f.me)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		f.t.Errorf("fake insightly: unexpected request %s %s", r.Method, r.URL)
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

// me follows https://api.insightly.com/v3.1/Help#!/Users/GetUserMe (fields)
// and, for authentication and limits,
// https://support.insight.ly/en-US/Knowledge/article/1447/Working_with_the_Insightly_Web_API:
// "Authorization: Basic" with the base64 API key; incorrect authentication
// is a 401 (its body is undocumented, crm-apis.md "(?)": an ASP.NET-style
// message here); X-RateLimit-Limit/Remaining on answers, 429 with
// Retry-After past the limit. The key may arrive as base64("key:") - the
// documented user-name form - or base64("key") as some clients send it
// ("(?)"): both are accepted.
func (f *fakeInsightly) me(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.RawQuery != "" || r.ContentLength > 0 {
		f.t.Errorf("fake insightly: Users/Me %s %s with %d body bytes, want a plain GET", r.Method, r.URL, r.ContentLength)
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	auth := r.Header.Get("Authorization")
	if auth != "Basic "+base64.StdEncoding.EncodeToString([]byte(testKey+":")) &&
		auth != "Basic "+base64.StdEncoding.EncodeToString([]byte(testKey)) {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"Message":"Authorization has been denied for this request."}`)
		return
	}
	w.Header().Set("X-RateLimit-Limit", "1000")
	f.mu.Lock()
	mode := f.mode
	f.mu.Unlock()
	switch mode {
	case "malformed":
		fmt.Fprint(w, `{"USER_ID":`)
	case "noid":
		fmt.Fprint(w, `{"FIRST_NAME":"Grace"}`)
	case "ratelimit":
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"Message":"API rate limit exceeded"}`)
	default:
		w.Header().Set("X-RateLimit-Remaining", "999")
		fmt.Fprint(w, `{"USER_ID":2024,"CONTACT_ID":55,"FIRST_NAME":"Grace","LAST_NAME":"Hopper","TIMEZONE_ID":"Eastern Standard Time","EMAIL_ADDRESS":"grace@navy.example","EMAIL_DROPBOX_IDENTIFIER":"abc","EMAIL_DROPBOX_ADDRESS":"abc@mailbox.insight.ly","ADMINISTRATOR":true,"ACCOUNT_OWNER":false,"ACTIVE":true,"DATE_CREATED_UTC":"2020-01-01 00:00:00","DATE_UPDATED_UTC":"2026-01-01 00:00:00","USER_CURRENCY":"USD","CONTACT_DISPLAY":"LastFirst","CONTACT_ORDER":"LastFirst","ORGANISATION_DISPLAY":"Name","ORGANISATION_ORDER":"Name","INSTANCE_ID":777}`)
	}
}

func (f *fakeInsightly) reset(mode string) {
	f.mu.Lock()
	f.calls, f.mode = nil, mode
	f.mu.Unlock()
}

func (f *fakeInsightly) snapshot() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func newTestConnector(t *testing.T, origin string) *Connector {
	t.Helper()
	c, err := New(connector.Config{Name: "insightly", Getenv: func(k string) string {
		if k == EnvTestAPIOrigin {
			return origin
		}
		return ""
	}})
	if err != nil {
		t.Fatal(err)
	}
	return c.(*Connector)
}

// engineClient plays the engine's per-user client for an API-key user: it
// injects "Basic <BasicAuth(key)>".
func engineClient(c *Connector, key string) *http.Client {
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Basic "+c.BasicAuth(key))
		return http.DefaultTransport.RoundTrip(r)
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestBasicAuthAndAuthType(t *testing.T) {
	c := newTestConnector(t, "")
	if got, want := c.BasicAuth("abc"), base64.StdEncoding.EncodeToString([]byte("abc:")); got != want {
		t.Fatalf("BasicAuth = %q, want %q", got, want)
	}
	if at, err := c.AuthType(context.Background()); err != nil || at != connector.AuthAPIKey {
		t.Fatalf("AuthType = %q, %v", at, err)
	}
	if _, err := New(connector.Config{Getenv: func(string) string { return "ftp://x" }}); err == nil {
		t.Fatal("a bad INSIGHTLY_TEST_API_ORIGIN must make the connector unavailable")
	}
}

func TestAPIBase(t *testing.T) {
	c := newTestConnector(t, "")
	tests := []struct{ in, want, wantErr string }{
		{in: "https://api.na1.insightly.com/v3.1/", want: "https://api.na1.insightly.com/v3.1"},
		{in: "https://api.na1.insightly.com", want: "https://api.na1.insightly.com/v3.1"},
		{in: "https://api.eu1.insightly.com/v3.0/", want: "https://api.eu1.insightly.com/v3.1"},
		{in: "api.au1.insightly.com/v3.1", want: "https://api.au1.insightly.com/v3.1"},
		{in: "  https://API.NA1.insightly.com/v3.1/Users?x=1  ", want: "https://api.na1.insightly.com/v3.1"},
		{in: "https://api.insightly.com/v2.3/", want: "https://api.insightly.com/v3.1"},
		{in: "https://evil.example/v3.1", wantErr: "not an insightly.com address"},
		{in: "http://api.na1.insightly.com", wantErr: "must start with https://"},
		{in: "https://api.na1.insightly.com.evil.com", wantErr: "not an insightly.com address"},
		{in: "https://api.na1.insightly.com.evil.com/v3.1", wantErr: "not an insightly.com address"},
		{in: "https://insightly.com/v3.1", wantErr: "not an insightly.com address"},
		{in: "https://evilinsightly.com/v3.1", wantErr: "not an insightly.com address"},
		{in: "https://api.na1.insightly.com:8443/v3.1", wantErr: "not an insightly.com address"},
		{in: "https://key@api.na1.insightly.com/v3.1", wantErr: "not an insightly.com address"},
		{in: "https://evil.example#.insightly.com", wantErr: "not an insightly.com address"},
		{in: "https://api.na1.insightly.com/proxy/v3.1", wantErr: "unexpected path"},
		{in: "", wantErr: "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := c.APIBase(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("APIBase(%q) = %q, %v; want error %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("APIBase(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestUserInfo(t *testing.T) {
	f := newFake(t)
	c := newTestConnector(t, f.srv.URL)
	keyColon := "Basic " + base64.StdEncoding.EncodeToString([]byte(testKey+":"))
	meCall := []string{"GET /v3.1/Users/Me"}
	tests := []struct {
		name      string
		apiURL    string
		auth      string
		key       string
		formKey   string
		mode      string
		wantOK    bool
		wantMsg   string
		wantErr   string
		wantCalls []string
	}{
		{name: "success", apiURL: f.srv.URL + "/v3.1/", auth: keyColon, key: testKey, wantOK: true, wantCalls: meCall},
		{name: "pasted without version", apiURL: f.srv.URL, auth: keyColon, key: testKey, wantOK: true, wantCalls: meCall},
		{name: "header built from the key", apiURL: f.srv.URL + "/v3.1", key: testKey, wantOK: true, wantCalls: meCall},
		{name: "key from the form field", apiURL: f.srv.URL, formKey: testKey, wantOK: true, wantCalls: meCall},
		{name: "key-only base64 also accepted by the fake", apiURL: f.srv.URL, auth: "Basic " + base64.StdEncoding.EncodeToString([]byte(testKey)), key: testKey, wantOK: true, wantCalls: meCall},
		{name: "401 bad key", apiURL: f.srv.URL, auth: "Basic " + base64.StdEncoding.EncodeToString([]byte("wrong:")), key: "wrong", wantMsg: "did not accept the API key", wantCalls: meCall},
		{name: "malformed", apiURL: f.srv.URL, auth: keyColon, key: testKey, mode: "malformed", wantErr: "malformed JSON", wantCalls: meCall},
		{name: "no USER_ID", apiURL: f.srv.URL, auth: keyColon, key: testKey, mode: "noid", wantErr: "without USER_ID", wantCalls: meCall},
		{name: "429", apiURL: f.srv.URL, auth: keyColon, key: testKey, mode: "ratelimit", wantErr: `Retry-After "3600"`, wantCalls: meCall},
		{name: "evil host", apiURL: "https://evil.example/v3.1", auth: keyColon, key: testKey, wantMsg: "not an insightly.com address"},
		{name: "plain http", apiURL: "http://api.na1.insightly.com", auth: keyColon, key: testKey, wantMsg: "must start with https://"},
		{name: "suffix trick", apiURL: "https://api.na1.insightly.com.evil.com", auth: keyColon, key: testKey, wantMsg: "not an insightly.com address"},
		{name: "missing API URL", apiURL: "", auth: keyColon, key: testKey, wantMsg: "API URL is empty"},
		{name: "missing key", apiURL: f.srv.URL, wantMsg: "API key is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.reset(tt.mode)
			res, err := c.UserInfo(context.Background(), connector.UserInfoRequest{
				HTTPClient: http.DefaultClient, AuthHeader: tt.auth, APIKey: connector.Secret(tt.key), Platform: "insightly",
				AdditionalInfo: map[string]string{FieldAPIURL: tt.apiURL, "apiKey": tt.formKey},
			})
			if got := f.snapshot(); strings.Join(got, ",") != strings.Join(tt.wantCalls, ",") {
				t.Errorf("upstream calls = %v, want %v", got, tt.wantCalls)
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
			if !tt.wantOK {
				if res.Successful || res.ReturnMessage == nil || !strings.Contains(res.ReturnMessage.Message, tt.wantMsg) {
					t.Fatalf("result = %+v, want a refusal saying %q", res, tt.wantMsg)
				}
				return
			}
			u := res.User
			if !res.Successful || u.ID != "2024" || u.Name != "Grace Hopper" || u.TimezoneName != "America/New_York" ||
				u.AdditionalInfo[FieldAPIURL] != f.srv.URL || u.AdditionalInfo["instanceId"] != "777" || u.OverridingHostname != "" {
				t.Fatalf("result = %+v", res)
			}
		})
	}
}

func TestValidateAuth(t *testing.T) {
	f := newFake(t)
	c := newTestConnector(t, f.srv.URL)
	tests := []struct {
		name       string
		key        string
		apiURL     any
		wantOK     bool
		wantStatus int
		wantErr    bool
	}{
		{"valid", testKey, f.srv.URL, true, 200, false},
		{"key replaced in Insightly", "old-key", f.srv.URL, false, 401, false},
		{"stored URL no longer allowed", testKey, "https://evil.example", false, 0, true},
		{"no stored URL", testKey, nil, false, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.reset("")
			info := map[string]any{}
			if tt.apiURL != nil {
				info[FieldAPIURL] = tt.apiURL
			}
			res, err := c.ValidateAuth(context.Background(), connector.UserRequest{
				HTTPClient: engineClient(c, tt.key), User: connector.User{APIKey: connector.Secret(tt.key), AdditionalInfo: info},
			})
			if tt.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				if calls := f.snapshot(); len(calls) != 0 {
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

func TestUnauthorizeCallsNothing(t *testing.T) {
	f := newFake(t)
	c := newTestConnector(t, f.srv.URL)
	res, err := c.Unauthorize(context.Background(), connector.UserRequest{
		HTTPClient: engineClient(c, testKey),
		User:       connector.User{APIKey: testKey, AdditionalInfo: map[string]any{FieldAPIURL: f.srv.URL}},
	})
	if err != nil || !res.Successful || res.ReturnMessage == nil || !strings.Contains(res.ReturnMessage.Message, "generate a new one") {
		t.Fatalf("Unauthorize = %+v, %v", res, err)
	}
	if calls := f.snapshot(); len(calls) != 0 {
		t.Fatalf("upstream calls = %v, want none", calls)
	}
}

func TestIANAZone(t *testing.T) {
	src, err := os.ReadFile("insightly.go")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`case "([^"]+)":`).FindAllStringSubmatch(string(src), -1)
	if len(names) < 60 {
		t.Fatalf("found %d Windows zone names, expected the whole table", len(names))
	}
	for _, m := range names {
		t.Run(m[1], func(t *testing.T) {
			iana := IANAZone(m[1])
			if iana == m[1] {
				t.Fatalf("%q is not mapped", m[1])
			}
			if _, err := time.LoadLocation(iana); err != nil {
				t.Fatalf("%q maps to %q: %v", m[1], iana, err)
			}
		})
	}
	for _, pass := range []string{"Europe/Berlin", "Some Unknown Zone", ""} {
		if got := IANAZone(pass); got != pass {
			t.Errorf("IANAZone(%q) = %q, want it unchanged", pass, got)
		}
	}
}
