package connectortest_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connectortest"
)

const redirectURI = "https://connectd.test/oauth/callback"

func baseOptions() connectortest.ProviderOptions {
	return connectortest.ProviderOptions{
		ClientID:     "client-1",
		ClientSecret: "s3cret/with+specials",
		RedirectURIs: []string{redirectURI},
		RequirePKCE:  true,
		Users: map[string]connectortest.ProviderUser{
			"alice": {ID: "42", Name: "Alice", Email: "alice@example.test", Timezone: "Europe/Berlin"},
		},
	}
}

// login runs the whole browser part and returns the code and the verifier.
func login(t *testing.T, p *connectortest.Provider, cfg *oauth2.Config) (code, verifier string) {
	t.Helper()
	verifier = oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL("state-123", oauth2.S256ChallengeOption(verifier))
	loc, err := p.Authorize(context.Background(), authURL, "alice")
	if err != nil {
		t.Fatalf("Authorize: %v", err)
	}
	q := loc.Query()
	if q.Get("state") != "state-123" || q.Get("code") == "" {
		t.Fatalf("redirect %s: want code and state-123", loc)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != redirectURI {
		t.Fatalf("redirected to %s, want %s", got, redirectURI)
	}
	return q.Get("code"), verifier
}

func exchange(t *testing.T, p *connectortest.Provider, cfg *oauth2.Config) *oauth2.Token {
	t.Helper()
	code, verifier := login(t, p, cfg)
	tok, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	return tok
}

// rawToken posts a form to the token endpoint with HTTP Basic client auth
// and returns status, headers and decoded JSON (nil when not JSON).
func rawToken(t *testing.T, p *connectortest.Provider, form url.Values) (int, http.Header, map[string]any) {
	t.Helper()
	return rawPost(t, p, p.TokenURL(), form)
}

func rawPost(t *testing.T, p *connectortest.Provider, endpoint string, form url.Values) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	o := p.Options()
	req.SetBasicAuth(url.QueryEscape(o.ClientID), url.QueryEscape(o.ClientSecret))
	resp, err := p.Client().Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", endpoint, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if json.Unmarshal(body, &m) != nil {
		m = nil
	}
	return resp.StatusCode, resp.Header, m
}

func refreshForm(rt string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
}

func userInfo(t *testing.T, p *connectortest.Provider, accessToken string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.UserInfoURL(), nil)
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := p.Client().Do(req)
	if err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func retrieveErrorCode(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

func TestLoginFlowAssertsRequests(t *testing.T) {
	tests := []struct {
		name       string
		clientAuth string
		style      oauth2.AuthStyle
		wantBasic  bool
	}{
		{"basic", connectortest.ClientAuthBasic, oauth2.AuthStyleInHeader, true},
		{"body", connectortest.ClientAuthBody, oauth2.AuthStyleInParams, false},
		{"any with header", connectortest.ClientAuthAny, oauth2.AuthStyleInHeader, true},
		{"any with params", connectortest.ClientAuthAny, oauth2.AuthStyleInParams, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOptions()
			o.ClientAuth = tc.clientAuth
			o.AccessTokenTTL = time.Hour
			p := connectortest.NewProvider(t, o)
			cfg := p.OAuth2Config("read", "write")
			cfg.Endpoint.AuthStyle = tc.style
			code, verifier := login(t, p, cfg)

			// The authorize request the browser sent.
			auth := p.Requests()[0]
			if auth.Method != http.MethodGet || auth.Path != connectortest.PathAuthorize {
				t.Fatalf("first request %s %s", auth.Method, auth.Path)
			}
			for k, want := range map[string]string{
				"client_id": "client-1", "redirect_uri": redirectURI, "response_type": "code", "state": "state-123",
				"scope": "read write", "code_challenge_method": "S256", "code_challenge": oauth2.S256ChallengeFromVerifier(verifier),
			} {
				if got := auth.Query.Get(k); got != want {
					t.Errorf("authorize %s = %q, want %q", k, got, want)
				}
			}

			tok, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if tok.TokenType != "Bearer" || tok.RefreshToken == "" || tok.Expiry.IsZero() {
				t.Errorf("token %+v: want Bearer, refresh token, expiry", tok)
			}
			if got := tok.Extra("scope"); got != "read write" {
				t.Errorf("scope %v", got)
			}
			if got := tok.Extra("expires_in"); got != float64(3600) {
				t.Errorf("expires_in %v, want 3600", got)
			}

			reqs := p.TokenRequests()
			if len(reqs) != 1 {
				t.Fatalf("%d token requests, want 1", len(reqs))
			}
			r := reqs[0]
			want := connectortest.Expect{
				Method: http.MethodPost, Path: connectortest.PathToken,
				ContentType: "application/x-www-form-urlencoded",
				Form: url.Values{
					"grant_type": {"authorization_code"}, "code": {code},
					"redirect_uri": {redirectURI}, "code_verifier": {verifier},
				},
			}
			if tc.wantBasic {
				want.BasicAuth, want.BasicUser, want.BasicPassword = true, "client-1", "s3cret/with+specials"
			} else {
				want.NoHeader = []string{"Authorization"}
				want.Form.Set("client_id", "client-1")
				want.Form.Set("client_secret", "s3cret/with+specials")
			}
			connectortest.ExpectRequest(t, r, want)

			status, info := userInfo(t, p, tok.AccessToken)
			if status != http.StatusOK {
				t.Fatalf("userinfo %d", status)
			}
			wantInfo := map[string]any{"id": "42", "name": "Alice", "email": "alice@example.test", "timezone": "Europe/Berlin"}
			for k, v := range wantInfo {
				if info[k] != v {
					t.Errorf("userinfo %s = %v, want %v", k, info[k], v)
				}
			}
			if ui := p.Requests()[len(p.Requests())-1]; ui.Bearer != tok.AccessToken {
				t.Errorf("recorded bearer differs")
			}
			if got := p.Count(connectortest.PathAuthorize); got != 2 {
				t.Errorf("authorize count %d, want 2 (GET form + POST sign-in)", got)
			}
		})
	}
}

func TestAuthorizeValidation(t *testing.T) {
	verifier := oauth2.GenerateVerifier()
	challenge := oauth2.S256ChallengeFromVerifier(verifier)
	good := url.Values{
		"client_id": {"client-1"}, "redirect_uri": {redirectURI}, "response_type": {"code"},
		"state": {"st"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"},
	}
	with := func(k, v string) url.Values {
		q := url.Values{}
		for kk, vv := range good {
			q[kk] = slices.Clone(vv)
		}
		if v == "" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
		return q
	}
	tests := []struct {
		name      string
		query     url.Values
		login     string
		wantCode  string // AuthorizeError code; "" for none
		wantError string // error query param in the redirect; "" for a code
		noRedir   bool
	}{
		{"ok", good, "alice", "", "", false},
		{"unknown client", with("client_id", "other"), "alice", "http_400", "", true},
		{"missing client", with("client_id", ""), "alice", "http_400", "", true},
		{"unregistered redirect", with("redirect_uri", "https://evil.test/cb"), "alice", "http_400", "", true},
		{"redirect prefix", with("redirect_uri", redirectURI+"/x"), "alice", "http_400", "", true},
		{"missing redirect", with("redirect_uri", ""), "alice", "http_400", "", true},
		{"token response type", with("response_type", "token"), "alice", "unsupported_response_type", "unsupported_response_type", false},
		{"missing state", with("state", ""), "alice", "invalid_request", "invalid_request", false},
		{"plain PKCE", with("code_challenge_method", "plain"), "alice", "invalid_request", "invalid_request", false},
		{"PKCE method missing", with("code_challenge_method", ""), "alice", "invalid_request", "invalid_request", false},
		{"PKCE missing", with("code_challenge", ""), "alice", "invalid_request", "invalid_request", false},
		{"malformed challenge", with("code_challenge", "short"), "alice", "invalid_request", "invalid_request", false},
		{"user denies", good, "", "", "access_denied", false},
		{"unknown login", good, "mallory", "http_401", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := connectortest.NewProvider(t, baseOptions())
			loc, err := p.Authorize(context.Background(), p.AuthURL()+"?"+tc.query.Encode(), tc.login)
			var ae *connectortest.AuthorizeError
			switch {
			case tc.wantCode == "" && err != nil:
				t.Fatalf("Authorize: %v", err)
			case tc.wantCode != "" && (!errors.As(err, &ae) || ae.Code != tc.wantCode):
				t.Fatalf("Authorize error %v, want code %s", err, tc.wantCode)
			}
			if tc.noRedir {
				if loc != nil {
					t.Fatalf("redirected to %s; an unverified client or redirect URI must never be redirected to", loc)
				}
				return
			}
			q := loc.Query()
			if q.Get("state") != tc.query.Get("state") {
				t.Errorf("state %q not echoed", q.Get("state"))
			}
			if q.Get("error") != tc.wantError {
				t.Errorf("error %q, want %q", q.Get("error"), tc.wantError)
			}
			if (tc.wantError == "") != (q.Get("code") != "") {
				t.Errorf("code %q with error %q", q.Get("code"), q.Get("error"))
			}
		})
	}
}

func TestAuthorizeOptionalPKCEAndDeny(t *testing.T) {
	o := baseOptions()
	o.RequirePKCE = false
	p := connectortest.NewProvider(t, o)
	cfg := p.OAuth2Config()
	loc, err := p.Authorize(context.Background(), cfg.AuthCodeURL("s1"), "alice")
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("without PKCE: %v %v", loc, err)
	}
	// A code without challenge is redeemable without verifier...
	if _, err := cfg.Exchange(context.Background(), loc.Query().Get("code")); err != nil {
		t.Fatalf("exchange without PKCE: %v", err)
	}
	// ...but a verifier for it is a downgrade attempt (RFC 9700 2.1.1).
	loc, _ = p.Authorize(context.Background(), cfg.AuthCodeURL("s2"), "alice")
	_, err = cfg.Exchange(context.Background(), loc.Query().Get("code"), oauth2.VerifierOption(oauth2.GenerateVerifier()))
	if retrieveErrorCode(err) != "invalid_grant" {
		t.Fatalf("verifier for a code without challenge: %v, want invalid_grant", err)
	}

	const evil = `<script>alert(1)</script>`
	p.SetDeny(true, evil)
	loc, err = p.Authorize(context.Background(), cfg.AuthCodeURL("s3"), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if q := loc.Query(); q.Get("error") != "access_denied" || q.Get("error_description") != evil || q.Get("state") != "s3" || q.Has("code") {
		t.Fatalf("deny redirect %s", loc)
	}
	p.SetDeny(false, "")
	if loc, err = p.Authorize(context.Background(), cfg.AuthCodeURL("s4"), "alice"); err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("after SetDeny(false): %v %v", loc, err)
	}
}

func TestSignInPageForBrowsers(t *testing.T) {
	p := connectortest.NewProvider(t, baseOptions())
	cfg := p.OAuth2Config("contacts")
	verifier := oauth2.GenerateVerifier()
	resp, err := p.Client().Get(cfg.AuthCodeURL("st<&>", oauth2.S256ChallengeOption(verifier)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET authorize: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{`name="login"`, `value="allow"`, `value="deny"`, `method="post"`, `name="state" value="st&lt;&amp;&gt;"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	// Submitting the form as a browser would.
	form := url.Values{
		"client_id": {"client-1"}, "redirect_uri": {redirectURI}, "response_type": {"code"}, "scope": {"contacts"},
		"state": {"st<&>"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"},
		"login": {"alice"}, "decision": {"allow"},
	}
	client := *p.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err = client.PostForm(p.AuthURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || loc.Query().Get("state") != "st<&>" || loc.Query().Get("code") == "" {
		t.Fatalf("POST authorize: %d %s", resp.StatusCode, loc)
	}
	info, ok := p.TokenInfo(loc.Query().Get("code"))
	if !ok || info.Kind != connectortest.KindAuthCode || info.Login != "alice" || info.Scope != "contacts" {
		t.Fatalf("code info %+v %v", info, ok)
	}
}

func TestCodeReplayRevokesIssuedTokens(t *testing.T) {
	p := connectortest.NewProvider(t, baseOptions())
	cfg := p.OAuth2Config()
	code, verifier := login(t, p, cfg)
	tok, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if status, _ := userInfo(t, p, tok.AccessToken); status != http.StatusOK {
		t.Fatalf("userinfo before replay: %d", status)
	}
	_, err = cfg.Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
	if retrieveErrorCode(err) != "invalid_grant" {
		t.Fatalf("replay: %v, want invalid_grant", err)
	}
	if !p.IsRevoked(tok.AccessToken) || !p.IsRevoked(tok.RefreshToken) || !p.FamilyRevoked(code) {
		t.Fatalf("tokens from a replayed code must be revoked")
	}
	if status, body := userInfo(t, p, tok.AccessToken); status != http.StatusUnauthorized || body["error"] != "invalid_token" {
		t.Fatalf("userinfo after replay: %d %v", status, body)
	}
	if status, _, body := rawToken(t, p, refreshForm(tok.RefreshToken)); status != http.StatusBadRequest || body["error"] != "invalid_grant" {
		t.Fatalf("refresh after replay: %d %v", status, body)
	}
	if got := p.ActiveAccessTokens(); len(got) != 0 {
		t.Fatalf("active access tokens %d, want 0", len(got))
	}
}

func TestCodeBinding(t *testing.T) {
	tests := []struct {
		name       string
		mutate     func(form url.Values)
		advance    time.Duration
		wantStatus int
		wantError  string
	}{
		{"valid", func(url.Values) {}, 0, 200, ""},
		{"PKCE mismatch", func(f url.Values) { f.Set("code_verifier", oauth2.GenerateVerifier()) }, 0, 400, "invalid_grant"},
		{"PKCE verifier missing", func(f url.Values) { f.Del("code_verifier") }, 0, 400, "invalid_grant"},
		{"PKCE verifier malformed", func(f url.Values) { f.Set("code_verifier", "short") }, 0, 400, "invalid_grant"},
		{"redirect_uri mismatch", func(f url.Values) { f.Set("redirect_uri", redirectURI+"?x=1") }, 0, 400, "invalid_grant"},
		{"redirect_uri missing", func(f url.Values) { f.Del("redirect_uri") }, 0, 400, "invalid_grant"},
		{"unknown code", func(f url.Values) { f.Set("code", "nope") }, 0, 400, "invalid_grant"},
		{"expired code", func(url.Values) {}, connectortest.CodeLifetime, 400, "invalid_grant"},
		{"just before expiry", func(url.Values) {}, connectortest.CodeLifetime - time.Second, 200, ""},
		{"missing grant type", func(f url.Values) { f.Del("grant_type") }, 0, 400, "invalid_request"},
		{"unsupported grant type", func(f url.Values) { f.Set("grant_type", "password") }, 0, 400, "unsupported_grant_type"},
		{"repeated parameter", func(f url.Values) { f.Add("code", "again") }, 0, 400, "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
			o := baseOptions()
			o.Clock = clk
			p := connectortest.NewProvider(t, o)
			code, verifier := login(t, p, p.OAuth2Config())
			clk.Advance(tc.advance)
			form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI}, "code_verifier": {verifier}}
			tc.mutate(form)
			status, hdr, body := rawToken(t, p, form)
			if status != tc.wantStatus {
				t.Fatalf("status %d, want %d (%v)", status, tc.wantStatus, body)
			}
			if hdr.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q", hdr.Get("Cache-Control"))
			}
			if tc.wantError != "" {
				if body["error"] != tc.wantError {
					t.Fatalf("error %v, want %s", body["error"], tc.wantError)
				}
				if body["access_token"] != nil {
					t.Fatalf("error answer carries a token")
				}
				return
			}
			if body["token_type"] != "Bearer" || body["access_token"] == "" || body["refresh_token"] == "" {
				t.Fatalf("answer %v", body)
			}
			if _, ok := body["expires_in"]; ok {
				t.Errorf("expires_in present with AccessTokenTTL 0")
			}
		})
	}
}

func TestTokenEndpointClientAuthAndFraming(t *testing.T) {
	type req struct {
		method, contentType, query, body string
		basicUser, basicPass             string
	}
	form := "grant_type=refresh_token&refresh_token=x"
	tests := []struct {
		name       string
		clientAuth string
		req        req
		wantStatus int
		wantError  string
		wantWWW    bool
	}{
		{"basic mode, body credentials", "basic", req{body: form + "&client_id=client-1&client_secret=pw"}, 401, "invalid_client", true},
		{"body mode, basic credentials", "body", req{body: form, basicUser: "client-1", basicPass: "pw"}, 401, "invalid_client", true},
		{"both methods", "any", req{body: form + "&client_secret=pw", basicUser: "client-1", basicPass: "pw"}, 401, "invalid_client", true},
		{"wrong secret", "any", req{body: form, basicUser: "client-1", basicPass: "wrong"}, 401, "invalid_client", true},
		{"wrong client", "any", req{body: form + "&client_id=other&client_secret=pw"}, 401, "invalid_client", false},
		{"body client_id differs from basic", "any", req{body: form + "&client_id=other", basicUser: "client-1", basicPass: "pw"}, 401, "invalid_client", true},
		{"no credentials", "any", req{body: form}, 401, "invalid_client", false},
		{"JSON body", "any", req{contentType: "application/json", body: `{"grant_type":"refresh_token"}`, basicUser: "client-1", basicPass: "pw"}, 400, "invalid_request", false},
		{"query parameters", "any", req{query: "code=x", body: form, basicUser: "client-1", basicPass: "pw"}, 400, "invalid_request", false},
		{"GET", "any", req{method: "GET", basicUser: "client-1", basicPass: "pw"}, 405, "invalid_request", false},
		{"valid basic, unknown refresh token", "basic", req{body: form, basicUser: "client-1", basicPass: "pw"}, 400, "invalid_grant", false},
		{"valid body, unknown refresh token", "body", req{body: form + "&client_id=client-1&client_secret=pw"}, 400, "invalid_grant", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOptions()
			o.ClientSecret = "pw"
			o.ClientAuth = tc.clientAuth
			p := connectortest.NewProvider(t, o)
			method := tc.req.method
			if method == "" {
				method = http.MethodPost
			}
			target := p.TokenURL()
			if tc.req.query != "" {
				target += "?" + tc.req.query
			}
			r, _ := http.NewRequest(method, target, strings.NewReader(tc.req.body))
			ct := tc.req.contentType
			if ct == "" {
				ct = "application/x-www-form-urlencoded"
			}
			r.Header.Set("Content-Type", ct)
			if tc.req.basicUser != "" {
				r.SetBasicAuth(tc.req.basicUser, tc.req.basicPass)
			}
			resp, err := p.Client().Do(r)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]string
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != tc.wantStatus || body["error"] != tc.wantError {
				t.Fatalf("got %d %v, want %d %s", resp.StatusCode, body, tc.wantStatus, tc.wantError)
			}
			if got := resp.Header.Get("WWW-Authenticate") != ""; got != tc.wantWWW {
				t.Errorf("WWW-Authenticate present=%v, want %v", got, tc.wantWWW)
			}
			if strings.Contains(body["error_description"], "pw") {
				t.Errorf("error description leaks the secret")
			}
		})
	}
}

func TestRefresh(t *testing.T) {
	t.Run("rotation with reuse detection revokes the family", func(t *testing.T) {
		o := baseOptions()
		o.RotateRefreshTokens, o.ReuseDetection = true, true
		p := connectortest.NewProvider(t, o)
		tok := exchange(t, p, p.OAuth2Config())
		other := p.IssueTokens("alice", "") // another grant must survive

		status, _, r1 := rawToken(t, p, refreshForm(tok.RefreshToken))
		if status != 200 || r1["refresh_token"] == tok.RefreshToken || r1["refresh_token"] == nil {
			t.Fatalf("first refresh %d %v: want a new refresh token", status, r1)
		}
		rt2 := r1["refresh_token"].(string)
		if info, _ := p.TokenInfo(tok.RefreshToken); !info.Rotated || info.Revoked {
			t.Fatalf("old refresh token %+v: want rotated, not revoked", info)
		}
		status, _, r2 := rawToken(t, p, refreshForm(rt2))
		if status != 200 {
			t.Fatalf("second refresh %d", status)
		}
		// Replaying the first (rotated) token.
		status, _, body := rawToken(t, p, refreshForm(tok.RefreshToken))
		if status != 400 || body["error"] != "invalid_grant" {
			t.Fatalf("reuse: %d %v", status, body)
		}
		for _, tk := range []string{tok.AccessToken, r1["access_token"].(string), r2["access_token"].(string), r2["refresh_token"].(string)} {
			if !p.IsRevoked(tk) {
				t.Errorf("token of the family not revoked after reuse")
			}
		}
		if !p.FamilyRevoked(tok.AccessToken) {
			t.Errorf("family not revoked")
		}
		if status, _, _ := rawToken(t, p, refreshForm(r2["refresh_token"].(string))); status != 400 {
			t.Errorf("newest refresh token still works after reuse: %d", status)
		}
		if got := p.ActiveAccessTokens(); !slices.Equal(got, []string{other.AccessToken}) {
			t.Errorf("active tokens %v, want only the other grant's", got)
		}
		if got := p.RefreshCount(); got != 4 {
			t.Errorf("RefreshCount %d, want 4", got)
		}
	})
	t.Run("rotation without reuse detection refuses only the old token", func(t *testing.T) {
		o := baseOptions()
		o.RotateRefreshTokens = true
		p := connectortest.NewProvider(t, o)
		tok := p.IssueTokens("alice", "")
		_, _, r1 := rawToken(t, p, refreshForm(tok.RefreshToken))
		if status, _, body := rawToken(t, p, refreshForm(tok.RefreshToken)); status != 400 || body["error"] != "invalid_grant" {
			t.Fatalf("old token: %d %v", status, body)
		}
		if p.FamilyRevoked(tok.AccessToken) {
			t.Fatalf("family revoked without reuse detection")
		}
		if status, _, _ := rawToken(t, p, refreshForm(r1["refresh_token"].(string))); status != 200 {
			t.Fatalf("new token refused: %d", status)
		}
	})
	t.Run("no rotation re-sends the same refresh token", func(t *testing.T) {
		p := connectortest.NewProvider(t, baseOptions())
		tok := p.IssueTokens("alice", "")
		for range 2 {
			_, _, body := rawToken(t, p, refreshForm(tok.RefreshToken))
			if body["refresh_token"] != tok.RefreshToken {
				t.Fatalf("refresh answer %v: want the same refresh token", body)
			}
		}
	})
	t.Run("omitted refresh token: x/oauth2 keeps the old one", func(t *testing.T) {
		o := baseOptions()
		o.OmitRefreshTokenOnRefresh = true
		o.AccessTokenTTL = time.Minute
		clk := clock.NewFake(time.Now())
		o.Clock = clk
		p := connectortest.NewProvider(t, o)
		tok := p.IssueTokens("alice", "")
		_, _, raw := rawToken(t, p, refreshForm(tok.RefreshToken))
		if _, ok := raw["refresh_token"]; ok || raw["access_token"] == nil {
			t.Fatalf("raw answer %v: want access_token and no refresh_token", raw)
		}
		expired := &oauth2.Token{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(-time.Minute)}
		got, err := p.OAuth2Config().TokenSource(context.Background(), expired).Token()
		if err != nil {
			t.Fatal(err)
		}
		if got.RefreshToken != tok.RefreshToken || got.AccessToken == tok.AccessToken {
			t.Fatalf("x/oauth2 token %+v: want new access token, old refresh token", got)
		}
		last := p.TokenRequests()[len(p.TokenRequests())-1]
		connectortest.ExpectRequest(t, last, connectortest.Expect{
			Method: "POST", Path: connectortest.PathToken, ContentType: "application/x-www-form-urlencoded",
			Form:      refreshForm(tok.RefreshToken),
			BasicAuth: true, BasicUser: "client-1", BasicPassword: "s3cret/with+specials",
		})
	})
	t.Run("scope may narrow, not widen", func(t *testing.T) {
		p := connectortest.NewProvider(t, baseOptions())
		tok := p.IssueTokens("alice", "read write")
		f := refreshForm(tok.RefreshToken)
		f.Set("scope", "read")
		if status, _, _ := rawToken(t, p, f); status != 200 {
			t.Fatalf("narrowing refused: %d", status)
		}
		f.Set("scope", "admin")
		if status, _, body := rawToken(t, p, f); status != 400 || body["error"] != "invalid_scope" {
			t.Fatalf("widening: %d %v", status, body)
		}
	})
}

func TestInconsistentOptionsFail(t *testing.T) {
	tests := []struct {
		name string
		o    connectortest.ProviderOptions
	}{
		{"rotate and omit", connectortest.ProviderOptions{RotateRefreshTokens: true, OmitRefreshTokenOnRefresh: true}},
		{"reuse without rotation", connectortest.ProviderOptions{ReuseDetection: true}},
		{"bad client auth", connectortest.ProviderOptions{ClientAuth: "jwt"}},
		{"negative TTL", connectortest.ProviderOptions{AccessTokenTTL: -time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ft := &fakeTB{TB: t}
			func() {
				defer func() { _ = recover() }()
				connectortest.NewProvider(ft, tc.o)
			}()
			if len(ft.errors()) == 0 {
				t.Fatalf("NewProvider accepted %+v", tc.o)
			}
		})
	}
}

func TestAccessTokenExpiryByClock(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	o := baseOptions()
	o.AccessTokenTTL = 10 * time.Minute
	o.Clock = clk
	p := connectortest.NewProvider(t, o)
	tok := exchange(t, p, p.OAuth2Config())
	if info, _ := p.TokenInfo(tok.AccessToken); !info.ExpiresAt.Equal(clk.Now().Add(10 * time.Minute)) {
		t.Fatalf("expires at %v", info.ExpiresAt)
	}
	clk.Advance(10*time.Minute - time.Second)
	if status, _ := userInfo(t, p, tok.AccessToken); status != 200 {
		t.Fatalf("before expiry: %d", status)
	}
	clk.Advance(time.Second)
	if status, body := userInfo(t, p, tok.AccessToken); status != 401 || body["error"] != "invalid_token" {
		t.Fatalf("after expiry: %d %v", status, body)
	}
	if len(p.ActiveAccessTokens()) != 0 {
		t.Fatalf("expired token listed as active")
	}
	// The refresh token outlives the access token.
	status, _, body := rawToken(t, p, refreshForm(tok.RefreshToken))
	if status != 200 || body["expires_in"] != float64(600) {
		t.Fatalf("refresh: %d %v", status, body)
	}
	if status, _ := userInfo(t, p, body["access_token"].(string)); status != 200 {
		t.Fatalf("new access token: %d", status)
	}
	if req := p.Requests()[len(p.Requests())-1]; !req.Time.Equal(clk.Now()) {
		t.Errorf("recorded time %v, want the fake clock's %v", req.Time, clk.Now())
	}
}

func TestUserInfoRejects(t *testing.T) {
	p := connectortest.NewProvider(t, baseOptions())
	tok := p.IssueTokens("alice", "")
	tests := []struct {
		name, auth string
	}{
		{"no header", ""},
		{"unknown token", "Bearer nope"},
		{"basic scheme", "Basic " + tok.AccessToken},
		{"refresh token as access token", "Bearer " + tok.RefreshToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, p.UserInfoURL(), nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := p.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]string
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != 401 || body["error"] != "invalid_token" || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
				t.Fatalf("%d %v %q", resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
}

func TestRevoke(t *testing.T) {
	tests := []struct {
		name        string
		form        func(tok *oauth2.Token) url.Values
		wantStatus  int
		wantAccess  bool // access token still valid afterwards
		wantRefresh bool // refresh token still valid afterwards
	}{
		{"refresh token revokes the family", func(tk *oauth2.Token) url.Values {
			return url.Values{"token": {tk.RefreshToken}, "token_type_hint": {"refresh_token"}}
		}, 200, false, false},
		{"refresh token with a wrong hint", func(tk *oauth2.Token) url.Values {
			return url.Values{"token": {tk.RefreshToken}, "token_type_hint": {"access_token"}}
		}, 200, false, false},
		{"access token only", func(tk *oauth2.Token) url.Values {
			return url.Values{"token": {tk.AccessToken}, "token_type_hint": {"access_token"}}
		}, 200, false, true},
		{"unknown token", func(*oauth2.Token) url.Values { return url.Values{"token": {"unknown"}} }, 200, true, true},
		{"missing token", func(*oauth2.Token) url.Values { return url.Values{} }, 400, true, true},
		{"unsupported hint", func(tk *oauth2.Token) url.Values {
			return url.Values{"token": {tk.AccessToken}, "token_type_hint": {"id_token"}}
		}, 400, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := connectortest.NewProvider(t, baseOptions())
			tok := p.IssueTokens("alice", "")
			status, _, _ := rawPost(t, p, p.RevokeURL(), tc.form(tok))
			if status != tc.wantStatus {
				t.Fatalf("revoke status %d, want %d", status, tc.wantStatus)
			}
			if st, _ := userInfo(t, p, tok.AccessToken); (st == 200) != tc.wantAccess {
				t.Errorf("access token valid=%v, want %v", st == 200, tc.wantAccess)
			}
			if st, _, _ := rawToken(t, p, refreshForm(tok.RefreshToken)); (st == 200) != tc.wantRefresh {
				t.Errorf("refresh token valid=%v, want %v", st == 200, tc.wantRefresh)
			}
		})
	}
	t.Run("requires client authentication", func(t *testing.T) {
		p := connectortest.NewProvider(t, baseOptions())
		tok := p.IssueTokens("alice", "")
		resp, err := p.Client().PostForm(p.RevokeURL(), url.Values{"token": {tok.RefreshToken}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || p.IsRevoked(tok.RefreshToken) {
			t.Fatalf("unauthenticated revoke: %d revoked=%v", resp.StatusCode, p.IsRevoked(tok.RefreshToken))
		}
	})
}

// TestConcurrentRefreshWithoutCoordination shows why the engine must refresh
// exactly once: racing clients make a rotating provider with reuse
// detection revoke the grant.
func TestConcurrentRefreshWithoutCoordination(t *testing.T) {
	o := baseOptions()
	o.RotateRefreshTokens, o.ReuseDetection = true, true
	p := connectortest.NewProvider(t, o)
	tok := p.IssueTokens("alice", "")
	const n = 40
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, p.TokenURL(), strings.NewReader(refreshForm(tok.RefreshToken).Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth("client-1", url.QueryEscape("s3cret/with+specials"))
			resp, err := p.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wg.Wait()
	ok := 0
	for _, s := range statuses {
		if s == 200 {
			ok++
		}
	}
	if ok != 1 || p.RefreshCount() != n || !p.FamilyRevoked(tok.RefreshToken) {
		t.Fatalf("successes %d (want 1), refreshes %d (want %d), family revoked %v (want true)", ok, p.RefreshCount(), n, p.FamilyRevoked(tok.RefreshToken))
	}
	if len(p.ActiveRefreshTokens()) != 0 || len(p.ActiveAccessTokens()) != 0 {
		t.Fatalf("tokens survive reuse")
	}
}

func TestTLSProvider(t *testing.T) {
	o := baseOptions()
	o.TLS = true
	p := connectortest.NewProvider(t, o)
	if !strings.HasPrefix(p.TokenURL(), "https://") {
		t.Fatalf("token URL %s", p.TokenURL())
	}
	cfg := p.OAuth2Config()
	code, verifier := login(t, p, cfg)
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, p.Client())
	if _, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err != nil {
		t.Fatal(err)
	}
}

func TestAuthorizeRejectsForeignURL(t *testing.T) {
	p := connectortest.NewProvider(t, baseOptions())
	if _, err := p.Authorize(context.Background(), "https://elsewhere.test/authorize?client_id=x", "alice"); err == nil {
		t.Fatal("Authorize followed a URL that is not the provider's")
	}
	if p.Count(connectortest.PathAuthorize) != 0 {
		t.Fatal("request sent")
	}
}

func TestIssueHelpersRejectUnknownLogin(t *testing.T) {
	ft := &fakeTB{TB: t}
	p := connectortest.NewProvider(ft, baseOptions())
	for _, issue := range []func(){
		func() { p.IssueTokens("nobody", "") },
		func() { p.IssueCode("nobody", redirectURI, "", "") },
	} {
		func() {
			defer func() { _ = recover() }()
			issue()
		}()
	}
	if got := len(ft.errors()); got != 2 {
		t.Fatalf("%d failures, want 2", got)
	}
	// IssueCode's code is redeemable through the token endpoint.
	verifier := strings.Repeat("v", 43)
	code := p.IssueCode("alice", redirectURI, connectortest.S256Challenge(verifier), "read")
	tok, err := p.OAuth2Config().Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := p.TokenInfo(tok.AccessToken); info.Login != "alice" || info.Scope != "read" || info.Kind != connectortest.KindAccessToken {
		t.Fatalf("info %+v", info)
	}
}
