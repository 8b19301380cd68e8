package redtail

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/connectd/connectd/core/connector"
)

const (
	testAPIKey   = "G5555F31-56Z2-62X7-9PSG-553E0MCD8ATG2"
	testUser     = "CoolGuy65"
	testPassword = "L@zy:pass"
	testUserKey  = "3B3A1D2F-9C8E-4A57-B0F1-UK-secret"
	basePath     = "/api/public/v1"
)

// fakeRedtail plays Redtail's public v1 API under /api/public/v1. Every
// handler checks the request as the named documentation describes it and
// fails the test otherwise.
type fakeRedtail struct {
	t   *testing.T
	srv *httptest.Server

	mu    sync.Mutex
	calls []string
	mode  string // "", "malformed", "nokey", "ratelimit", "down"
}

func newFake(t *testing.T) *fakeRedtail {
	t.Helper()
	f := &fakeRedtail{t: t}
	mux := http.NewServeMux()
	mux.HandleFunc(basePath+"/authentication", f.authentication)
	mux.HandleFunc(basePath+"/lists/database_users", f.databaseUsers)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		f.t.Errorf("fake redtail: unexpected request %s %s", r.Method, r.URL)
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

// unauthorized answers Redtail's 401; its body is undocumented
// (crm-apis.md "(?)"), so a plain JSON message stands in.
func unauthorized(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	fmt.Fprint(w, `{"message":"Unauthorized"}`)
}

// authentication follows
// https://help.redtailtechnology.com/hc/en-us/articles/203964430-Authentication-Methods-
// ("Authenticating via Basic Authentication": "Basic " + base64 of
// "APIKey:Username:Password") and crm-apis.md's Redtail section for
// GET /authentication and its authenticated_user answer.
func (f *fakeRedtail) authentication(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		f.t.Errorf("fake redtail: authentication method %s, want GET", r.Method)
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if r.ContentLength > 0 || len(r.URL.RawQuery) > 0 {
		f.t.Errorf("fake redtail: authentication carries a body or query (credentials belong in the header)")
	}
	if r.Header.Get("Authorization") != "Basic "+base64.StdEncoding.EncodeToString([]byte(testAPIKey+":"+testUser+":"+testPassword)) {
		unauthorized(w)
		return
	}
	f.mu.Lock()
	mode := f.mode
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch mode {
	case "malformed":
		fmt.Fprint(w, `{"authenticated_user":{"user_key":`)
	case "nokey":
		fmt.Fprint(w, `{"authenticated_user":{"id":42,"first_name":"Cool"}}`)
	case "ratelimit":
		w.Header().Set("Retry-After", "10")
		w.WriteHeader(http.StatusTooManyRequests)
	case "down":
		w.WriteHeader(http.StatusBadGateway)
	default:
		fmt.Fprintf(w, `{"authenticated_user":{"id":42,"user_key":%q,"first_name":"Cool","last_name":"Guy","email":"cool@example.com","database_id":9001}}`, testUserKey)
	}
}

// databaseUsers follows the same article's "Authenticating via UserKey"
// ("Userkeyauth " + base64 of "APIKey:UserKey") and crm-apis.md's
// GET /lists/database_users.
func (f *fakeRedtail) databaseUsers(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		f.t.Errorf("fake redtail: database_users method %s", r.Method)
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get("Authorization") != "Userkeyauth "+base64.StdEncoding.EncodeToString([]byte(testAPIKey+":"+testUserKey)) {
		unauthorized(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"database_users":[{"id":42,"first_name":"Cool","last_name":"Guy"}]}`)
}

func (f *fakeRedtail) reset(mode string) {
	f.mu.Lock()
	f.calls, f.mode = nil, mode
	f.mu.Unlock()
}

func (f *fakeRedtail) snapshot() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func newTestConnector(t *testing.T, base string) *Connector {
	t.Helper()
	c, err := New(connector.Config{Name: "redtail", Getenv: func(k string) string {
		if k == EnvBaseURL {
			return base
		}
		return ""
	}})
	if err != nil {
		t.Fatal(err)
	}
	return c.(*Connector)
}

func TestNew(t *testing.T) {
	c, err := New(connector.Config{})
	if err != nil || c.(*Connector).base != DefaultBaseURL {
		t.Fatalf("default New = %+v, %v", c, err)
	}
	c = newTestConnector(t, "https://review.crm.redtailtechnology.com/api/public/v1/")
	if got := c.(*Connector).base; got != "https://review.crm.redtailtechnology.com/api/public/v1" {
		t.Fatalf("base = %q", got)
	}
	for _, bad := range []string{"not a url", "ftp://x/y", "https://u:p@crm.redtailtechnology.com/api"} {
		_, err := New(connector.Config{Getenv: func(string) string { return bad }})
		if !errors.Is(err, connector.ErrUnavailable) || !strings.Contains(err.Error(), EnvBaseURL) {
			t.Errorf("New with %q = %v, want ErrUnavailable naming %s", bad, err, EnvBaseURL)
		}
	}
}

func TestHeaders(t *testing.T) {
	c := newTestConnector(t, "")
	if got := c.BasicAuth("k"); got != base64.StdEncoding.EncodeToString([]byte("k")) {
		t.Errorf("BasicAuth = %q", got)
	}
	if got, want := LoginAuthHeader("a", "b", "c"), "Basic "+base64.StdEncoding.EncodeToString([]byte("a:b:c")); got != want {
		t.Errorf("LoginAuthHeader = %q, want %q", got, want)
	}
	if got, want := UserkeyAuthHeader("a", "k"), "Userkeyauth "+base64.StdEncoding.EncodeToString([]byte("a:k")); got != want {
		t.Errorf("UserkeyAuthHeader = %q, want %q", got, want)
	}
	if at, err := c.AuthType(context.Background()); err != nil || at != connector.AuthAPIKey {
		t.Errorf("AuthType = %q, %v", at, err)
	}
}

func TestUserInfo(t *testing.T) {
	f := newFake(t)
	c := newTestConnector(t, f.srv.URL+basePath+"/")
	authCall := []string{"GET " + basePath + "/authentication"}
	tests := []struct {
		name      string
		key       string
		user      string
		password  string
		mode      string
		wantOK    bool
		wantMsg   string
		wantErr   string
		wantCalls []string
	}{
		{name: "user key exchange", key: testAPIKey, user: testUser, password: testPassword, wantOK: true, wantCalls: authCall},
		{name: "user name with spaces", key: testAPIKey, user: "  " + testUser + " ", password: testPassword, wantOK: true, wantCalls: authCall},
		{name: "wrong password", key: testAPIKey, user: testUser, password: "nope", wantMsg: "did not accept", wantCalls: authCall},
		{name: "wrong API key", key: "other", user: testUser, password: testPassword, wantMsg: "did not accept", wantCalls: authCall},
		{name: "malformed", key: testAPIKey, user: testUser, password: testPassword, mode: "malformed", wantErr: "malformed JSON", wantCalls: authCall},
		{name: "no user key", key: testAPIKey, user: testUser, password: testPassword, mode: "nokey", wantErr: "user_key", wantCalls: authCall},
		{name: "429", key: testAPIKey, user: testUser, password: testPassword, mode: "ratelimit", wantErr: "429", wantCalls: authCall},
		{name: "upstream down", key: testAPIKey, user: testUser, password: testPassword, mode: "down", wantErr: "HTTP 502", wantCalls: authCall},
		{name: "no API key managed for the account", user: testUser, password: testPassword, wantMsg: "API key (ask your admin)"},
		{name: "no password", key: testAPIKey, user: testUser, wantMsg: "Missing password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.reset(tt.mode)
			res, err := c.UserInfo(context.Background(), connector.UserInfoRequest{
				HTTPClient: http.DefaultClient, Platform: "redtail", APIKey: connector.Secret(tt.key),
				// What the engine passes for an API-key login.
				AuthHeader:     "Basic " + c.BasicAuth(tt.key),
				AdditionalInfo: map[string]string{FieldUsername: tt.user, FieldPassword: tt.password, "apiKey": tt.key},
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
			if !res.Successful || u.ID != testUser || u.Name != "Cool Guy" || u.Secrets[SecretUserKey].Reveal() != testUserKey ||
				u.AdditionalInfo[FieldUsername] != testUser || u.AdditionalInfo["redtailUserId"] != "42" || u.AdditionalInfo["databaseId"] != "9001" {
				t.Fatalf("result = %+v", res)
			}
			if len(u.Secrets) != 1 {
				t.Fatalf("secrets = %v, want only the user key", u.Secrets)
			}
			// Neither the password nor the user key may leak into what is
			// printed, logged or stored unsealed.
			printed := fmt.Sprintf("%+v %#v", res, res)
			plain, _ := json.Marshal(u.AdditionalInfo)
			for _, secret := range []string{testPassword, testUserKey, testAPIKey} {
				if strings.Contains(printed, secret) || strings.Contains(string(plain), secret) {
					t.Fatalf("secret %q visible in the result: %s / %s", secret, printed, plain)
				}
			}
			if _, ok := u.AdditionalInfo[FieldPassword]; ok {
				t.Fatal("password kept in AdditionalInfo")
			}
			// The user key works for later calls with the documented scheme.
			req, _ := http.NewRequest(http.MethodGet, f.srv.URL+basePath+"/lists/database_users", nil)
			req.Header.Set("Authorization", UserkeyAuthHeader(tt.key, u.Secrets[SecretUserKey].Reveal()))
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("database_users with the user key: %v %v", resp, err)
			}
			resp.Body.Close()
		})
	}
}

func TestUnauthorizeCallsNothing(t *testing.T) {
	f := newFake(t)
	c := newTestConnector(t, f.srv.URL+basePath)
	res, err := c.Unauthorize(context.Background(), connector.UserRequest{
		HTTPClient: http.DefaultClient,
		User:       connector.User{APIKey: testAPIKey, Secrets: map[string]connector.Secret{SecretUserKey: testUserKey}},
	})
	if err != nil || !res.Successful || res.ReturnMessage == nil || res.ReturnMessage.Message != "Logged out of Redtail" {
		t.Fatalf("Unauthorize = %+v, %v", res, err)
	}
	if calls := f.snapshot(); len(calls) != 0 {
		t.Fatalf("upstream calls = %v, want none", calls)
	}
}
