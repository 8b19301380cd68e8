package demo

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/server"
)

const verifier = "a-pkce-code-verifier-that-is-long-enough-0123456789"

func challenge(v string) string {
	sum := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

type env struct {
	crm   *CRM
	srv   *httptest.Server
	clock *clock.Fake
	cb    string // the registered connect callback
}

func newEnv(t *testing.T) *env {
	t.Helper()
	gin.SetMode(gin.ReleaseMode)
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	e := &env{clock: clk}
	r := gin.New()
	e.srv = httptest.NewServer(r)
	t.Cleanup(e.srv.Close)
	crm, err := New(Options{PublicURL: e.srv.URL, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	e.crm = crm
	crm.Register(r, server.Middlewares{})
	e.cb = e.srv.URL + "/oauth/callback"
	return e
}

// client never follows redirects: the tests look at them.
var client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func authQuery(cb string) url.Values {
	return url.Values{
		"response_type": {"code"}, "client_id": {ClientID}, "redirect_uri": {cb}, "state": {"st-1"},
		"code_challenge": {challenge(verifier)}, "code_challenge_method": {"S256"}, "scope": {"demo"},
	}
}

func get(t *testing.T, u string, header ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func postForm(t *testing.T, u string, form url.Values, basic bool) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		req.SetBasicAuth(ClientID, ClientSecret)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &m)
	return resp, m
}

// signIn submits the sign-in form and returns the code from the redirect.
func (e *env) signIn(t *testing.T, login, lifetime string) string {
	t.Helper()
	f := authQuery(e.cb)
	f.Set("login", login)
	f.Set("lifetime", lifetime)
	f.Set("action", "allow")
	resp, _ := postForm(t, e.srv.URL+AuthorizePath, f, false)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("sign in: status %d", resp.StatusCode)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != e.cb {
		t.Fatalf("redirected to %s, want %s", got, e.cb)
	}
	if loc.Query().Get("state") != "st-1" || loc.Query().Get("code") == "" {
		t.Fatalf("redirect query %q lacks state or code", loc.RawQuery)
	}
	return loc.Query().Get("code")
}

func (e *env) exchange(t *testing.T, code string) (int, map[string]any) {
	t.Helper()
	resp, m := postForm(t, e.srv.URL+TokenPath, url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {e.cb}, "code_verifier": {verifier},
	}, true)
	return resp.StatusCode, m
}

func (e *env) refresh(t *testing.T, rt string) (int, map[string]any) {
	t.Helper()
	resp, m := postForm(t, e.srv.URL+TokenPath, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, true)
	return resp.StatusCode, m
}

func (e *env) me(t *testing.T, at string) int {
	t.Helper()
	resp, _ := get(t, e.srv.URL+UserPath, "Authorization", "Bearer "+at)
	return resp.StatusCode
}

func TestAuthorizePage(t *testing.T) {
	e := newEnv(t)
	good := authQuery(e.cb)
	cases := []struct {
		name     string
		edit     func(q url.Values)
		status   int
		redirect string // error= in the redirect, "" for a page
		page     string // text on the page
	}{
		{"valid request shows the sign-in form", func(url.Values) {}, 200, "", "Sign in as"},
		{"unknown client is an error page, no redirect", func(q url.Values) { q.Set("client_id", "evil") }, 400, "", "Unknown client_id"},
		{"unregistered redirect URI is an error page", func(q url.Values) { q.Set("redirect_uri", "https://evil.example/cb") }, 400, "", "not registered"},
		{"missing PKCE goes back with invalid_request", func(q url.Values) { q.Del("code_challenge") }, 302, "invalid_request", ""},
		{"plain PKCE is refused", func(q url.Values) { q.Set("code_challenge_method", "plain") }, 302, "invalid_request", ""},
		{"other response types are refused", func(q url.Values) { q.Set("response_type", "token") }, 302, "unsupported_response_type", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := url.Values{}
			for k, v := range good {
				q[k] = append([]string(nil), v...)
			}
			tc.edit(q)
			resp, body := get(t, e.srv.URL+AuthorizePath+"?"+q.Encode())
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.redirect != "" {
				loc, _ := url.Parse(resp.Header.Get("Location"))
				if loc.Query().Get("error") != tc.redirect || loc.Query().Get("state") != "st-1" {
					t.Fatalf("redirect %s, want error=%s with the state", loc, tc.redirect)
				}
				return
			}
			if !strings.Contains(body, tc.page) || !strings.Contains(body, "DEMO CRM") {
				t.Fatalf("page lacks %q or the DEMO label:\n%s", tc.page, body)
			}
			csp := resp.Header.Get("Content-Security-Policy")
			if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "form-action 'self' "+e.srv.URL+" https://ringcentral.github.io") {
				t.Fatalf("CSP %q", csp)
			}
		})
	}
}

func TestDenyGoesBackWithAccessDenied(t *testing.T) {
	e := newEnv(t)
	f := authQuery(e.cb)
	f.Set("login", "alice")
	f.Set("action", "deny")
	resp, _ := postForm(t, e.srv.URL+AuthorizePath, f, false)
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || loc.Query().Get("error") != "access_denied" || loc.Query().Get("code") != "" {
		t.Fatalf("status %d location %s", resp.StatusCode, loc)
	}
}

func TestCodeFlowRefreshRotationAndRevocation(t *testing.T) {
	e := newEnv(t)
	code := e.signIn(t, "alice", "3600")
	status, tok := e.exchange(t, code)
	if status != http.StatusOK || tok["token_type"] != "Bearer" || tok["expires_in"] != float64(3600) {
		t.Fatalf("exchange: %d %v", status, tok)
	}
	at, rt := tok["access_token"].(string), tok["refresh_token"].(string)
	resp, body := get(t, e.srv.URL+UserPath, "Authorization", "Bearer "+at)
	var p profile
	if err := json.Unmarshal([]byte(body), &p); err != nil || resp.StatusCode != 200 || p.ID != "demo-1001" || p.Name != "Alice Demo" {
		t.Fatalf("me: %d %s", resp.StatusCode, body)
	}

	t.Run("a code is single use; a second use revokes its tokens", func(t *testing.T) {
		e := newEnv(t)
		code := e.signIn(t, "bob", "3600")
		_, tok := e.exchange(t, code)
		status, again := e.exchange(t, code)
		if status != http.StatusBadRequest || again["error"] != "invalid_grant" {
			t.Fatalf("second exchange: %d %v", status, again)
		}
		if got := e.crm.TokenState(tok["access_token"].(string)); got != "revoked" {
			t.Fatalf("access token after code reuse: %s", got)
		}
	})
	t.Run("wrong verifier, redirect URI or expired code are refused", func(t *testing.T) {
		for _, edit := range []func(url.Values){
			func(f url.Values) { f.Set("code_verifier", verifier+"x") },
			func(f url.Values) { f.Del("code_verifier") },
			func(f url.Values) { f.Set("redirect_uri", AppConnectRedirectURI) },
		} {
			f := url.Values{"grant_type": {"authorization_code"}, "code": {e.signIn(t, "alice", "3600")}, "redirect_uri": {e.cb}, "code_verifier": {verifier}}
			edit(f)
			resp, m := postForm(t, e.srv.URL+TokenPath, f, true)
			if resp.StatusCode != http.StatusBadRequest || m["error"] != "invalid_grant" {
				t.Fatalf("%v: %d %v", f, resp.StatusCode, m)
			}
		}
		code := e.signIn(t, "alice", "3600")
		e.clock.Advance(CodeLifetime)
		if status, m := e.exchange(t, code); status != http.StatusBadRequest || m["error"] != "invalid_grant" {
			t.Fatalf("expired code: %d %v", status, m)
		}
	})
	t.Run("client authentication", func(t *testing.T) {
		cases := []struct {
			name string
			set  func(r *http.Request, f url.Values)
		}{
			{"no credentials", func(*http.Request, url.Values) {}},
			{"wrong secret", func(r *http.Request, _ url.Values) { r.SetBasicAuth(ClientID, "nope") }},
			{"basic and body together", func(r *http.Request, f url.Values) {
				r.SetBasicAuth(ClientID, ClientSecret)
				f.Set("client_secret", ClientSecret)
			}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				f := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}
				req, _ := http.NewRequest(http.MethodPost, e.srv.URL+TokenPath, nil)
				tc.set(req, f)
				req.Body = io.NopCloser(strings.NewReader(f.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
					t.Fatalf("status %d", resp.StatusCode)
				}
			})
		}
		// Credentials in the body alone are fine.
		resp, m := postForm(t, e.srv.URL+TokenPath, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}, "client_id": {ClientID}, "client_secret": {ClientSecret}}, false)
		if resp.StatusCode != http.StatusBadRequest || m["error"] != "invalid_grant" {
			t.Fatalf("body credentials: %d %v", resp.StatusCode, m)
		}
	})

	// Refresh rotates: new pair, the old refresh token is spent.
	status, r1 := e.refresh(t, rt)
	if status != http.StatusOK || r1["refresh_token"] == rt || r1["access_token"] == at {
		t.Fatalf("refresh: %d %v", status, r1)
	}
	if got := e.crm.TokenState(rt); got != "rotated" {
		t.Fatalf("old refresh token: %s", got)
	}
	at2, rt2 := r1["access_token"].(string), r1["refresh_token"].(string)
	if e.me(t, at2) != 200 || e.me(t, at) != 200 {
		t.Fatal("access tokens of a live grant must work until they expire")
	}
	// Replaying the spent refresh token revokes the grant (reuse detection).
	if status, m := e.refresh(t, rt); status != http.StatusBadRequest || m["error"] != "invalid_grant" {
		t.Fatalf("reuse: %d %v", status, m)
	}
	for _, tok := range []string{at, at2, rt2} {
		if got := e.crm.TokenState(tok); got != "revoked" {
			t.Fatalf("after reuse, a token is %s", got)
		}
	}
	if e.me(t, at2) != http.StatusUnauthorized {
		t.Fatal("revoked access token still works")
	}

	// Revocation (RFC 7009) of a fresh grant.
	_, tok = e.exchange(t, e.signIn(t, "bob", "3600"))
	resp, _ = postForm(t, e.srv.URL+RevokePath, url.Values{"token": {tok["refresh_token"].(string)}}, true)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	if e.me(t, tok["access_token"].(string)) != http.StatusUnauthorized {
		t.Fatal("revoking the refresh token must revoke the grant's access tokens")
	}
	if resp, _ := postForm(t, e.srv.URL+RevokePath, url.Values{"token": {"unknown"}}, true); resp.StatusCode != http.StatusOK {
		t.Fatalf("revoking an unknown token: %d", resp.StatusCode)
	}
}

func TestShortLifetime(t *testing.T) {
	e := newEnv(t)
	_, tok := e.exchange(t, e.signIn(t, "alice", "45"))
	if tok["expires_in"] != float64(45) {
		t.Fatalf("expires_in %v", tok["expires_in"])
	}
	at := tok["access_token"].(string)
	e.clock.Advance(44 * time.Second)
	if e.me(t, at) != 200 {
		t.Fatal("token should still work")
	}
	e.clock.Advance(time.Second)
	if e.me(t, at) != http.StatusUnauthorized || e.crm.TokenState(at) != "expired" {
		t.Fatal("token should have expired")
	}
	// The refreshed token has the grant's lifetime too.
	_, r := e.refresh(t, tok["refresh_token"].(string))
	if r["expires_in"] != float64(45) {
		t.Fatalf("refreshed expires_in %v", r["expires_in"])
	}
	// An unknown lifetime falls back to the default.
	_, tok = e.exchange(t, e.signIn(t, "alice", "999999"))
	if tok["expires_in"] != float64(3600) {
		t.Fatalf("expires_in %v", tok["expires_in"])
	}
}

func TestAPIKeyCheck(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, key string
		status    int
		id        string
	}{
		{"alice's key", "demo-key-alice", 200, "demo-1001"},
		{"bob's key", "demo-key-bob", 200, "demo-1002"},
		{"unknown key", "demo-key-mallory", 401, ""},
		{"empty key", "", 401, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, e.srv.URL+APIKeyPath, nil)
			req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(tc.key+":")))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p profile
			_ = json.NewDecoder(resp.Body).Decode(&p)
			if resp.StatusCode != tc.status || p.ID != tc.id {
				t.Fatalf("status %d id %q", resp.StatusCode, p.ID)
			}
		})
	}
}

func TestNewNeedsAPublicURL(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without a public URL must fail")
	}
	if _, err := New(Options{RedirectURIs: []string{"not a url"}}); err == nil {
		t.Fatal("New with a relative redirect URI must fail")
	}
}
