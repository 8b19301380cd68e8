package appconnect_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
)

// callback sends App Connect's /oauth-callback with a callbackUri carrying q.
func (e *oauthEnv) callback(t *testing.T, q url.Values) (int, map[string]any) {
	t.Helper()
	cb := clientRedirect + "?" + q.Encode()
	r := e.h.Do(t, http.MethodGet, "/oauth-callback?callbackUri="+url.QueryEscape(cb), nil)
	return r.Status, r.JSON(t)
}

// Security cases 1-6 (reference/security.md) on every backend.
func TestCallbackStateAndTokenEndpointCases(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newOAuthEnv(t, backend, connectortest.ProviderOptions{RequirePKCE: true}, connectortest.OAuthConnectorOptions{}, true)
		ctx := context.Background()

		t.Run("case 1: missing, unknown, replayed, expired state -> 400, no token request", func(t *testing.T) {
			e.p.Reset()
			// missing state
			if st, body := e.callback(t, url.Values{"code": {"abc"}}); st != http.StatusBadRequest || body["error"] != "invalid_state" {
				t.Errorf("missing state: %d %v", st, body)
			}
			// unknown state
			if st, body := e.callback(t, url.Values{"code": {"abc"}, "state": {"no-such-state"}}); st != http.StatusBadRequest || body["error"] != "invalid_state" {
				t.Errorf("unknown state: %d %v", st, body)
			}
			// replayed: a real login, then the same callback again.
			authURL := e.authorize(t, "platform=testcrm")
			redirect, err := e.p.Authorize(ctx, authURL, "alice")
			if err != nil {
				t.Fatal(err)
			}
			first := e.h.Do(t, http.MethodGet, "/oauth-callback?callbackUri="+url.QueryEscape(redirect.String()), nil)
			if first.Status != http.StatusOK {
				t.Fatalf("first callback: %d %s", first.Status, first.Body)
			}
			tokenCalls := len(e.p.TokenRequests())
			again := e.h.Do(t, http.MethodGet, "/oauth-callback?callbackUri="+url.QueryEscape(redirect.String()), nil)
			if again.Status != http.StatusBadRequest || again.JSON(t)["error"] != "invalid_state" {
				t.Errorf("replayed state: %d %s", again.Status, again.Body)
			}
			// expired: a flow whose expiry has passed (database clock).
			expired := &store.OAuthFlow{ID: "expired-state-0123456789abcdef", Platform: "testcrm", Purpose: store.PurposeAppConnect, RedirectURI: clientRedirect, ExpiresAt: time.Now().Add(-time.Minute)}
			if err := e.h.Store.CreateFlow(ctx, expired); err != nil {
				t.Fatal(err)
			}
			if st, body := e.callback(t, url.Values{"code": {"abc"}, "state": {expired.ID}}); st != http.StatusBadRequest || body["error"] != "invalid_state" {
				t.Errorf("expired state: %d %v", st, body)
			}
			if n := len(e.p.TokenRequests()); n != tokenCalls {
				t.Errorf("token requests after bad states: %d, want %d", n, tokenCalls)
			}
		})

		t.Run("case 2: platform mismatch rejected", func(t *testing.T) {
			authURL := e.authorize(t, "platform=testcrm")
			redirect, err := e.p.Authorize(ctx, authURL, "alice")
			if err != nil {
				t.Fatal(err)
			}
			before := len(e.p.TokenRequests())
			r := e.h.Do(t, http.MethodGet, "/oauth-callback?platform=othercrm&callbackUri="+url.QueryEscape(redirect.String()), nil)
			if r.Status != http.StatusBadRequest || r.JSON(t)["error"] != "invalid_state" {
				t.Errorf("platform mismatch: %d %s", r.Status, r.Body)
			}
			if n := len(e.p.TokenRequests()); n != before {
				t.Errorf("token request sent for a mismatched platform")
			}
		})

		t.Run("case 3: provider error with HTML is not reflected", func(t *testing.T) {
			authURL := e.authorize(t, "platform=testcrm")
			u, _ := url.Parse(authURL)
			state := u.Query().Get("state")
			evil := `<script>alert("x")</script>`
			st, body := e.callback(t, url.Values{"error": {"access_denied"}, "error_description": {evil}, "state": {state}})
			if st != http.StatusBadRequest {
				t.Errorf("status %d", st)
			}
			raw := body["returnMessage"].(map[string]any)["message"].(string)
			if strings.Contains(raw, "<script>") || strings.Contains(raw, "alert") {
				t.Errorf("provider text reflected: %q", raw)
			}
			// the state is burnt
			if st, _ := e.callback(t, url.Values{"code": {"x"}, "state": {state}}); st != http.StatusBadRequest {
				t.Errorf("state usable after an error callback")
			}
		})

		t.Run("case 4: S256 challenge on every authorize URL", func(t *testing.T) {
			a := e.authorize(t, "platform=testcrm")
			b := e.authorize(t, "platform=testcrm")
			ua, _ := url.Parse(a)
			ub, _ := url.Parse(b)
			if ua.Query().Get("code_challenge_method") != "S256" || ua.Query().Get("code_challenge") == "" {
				t.Errorf("authorize URL without S256: %s", a)
			}
			if ua.Query().Get("code_challenge") == ub.Query().Get("code_challenge") || ua.Query().Get("state") == ub.Query().Get("state") {
				t.Errorf("challenge or state reused across flows")
			}
			if s := ua.Query().Get("state"); len(s) < 22 {
				t.Errorf("state too short: %d chars", len(s))
			}
		})

		t.Run("case 5: malicious redirect URIs rejected at start", func(t *testing.T) {
			for _, bad := range []string{"//evil.example", "https://client.example@evil.example/redirect.html", "javascript:alert(1)", "https://client.example.evil.com/redirect.html", clientRedirect + "/../x", clientRedirect + "?x=1"} {
				r := e.h.Do(t, http.MethodGet, "/oauth/authorize?platform=testcrm&redirect_uri="+url.QueryEscape(bad), nil)
				if r.Status != http.StatusBadRequest {
					t.Errorf("redirect_uri %q: %d", bad, r.Status)
				}
				if loc := r.Header.Get("Location"); loc != "" {
					t.Errorf("redirect_uri %q: redirected to %s", bad, loc)
				}
			}
		})

		t.Run("case 6: unusable token responses persist nothing", func(t *testing.T) {
			for _, f := range []connectortest.Fault{connectortest.ErrorIn200(), connectortest.HTML200(), connectortest.NoAccessToken(), connectortest.Oversized()} {
				authURL := e.authorize(t, "platform=testcrm")
				redirect, err := e.p.Authorize(ctx, authURL, "bob")
				if err != nil {
					t.Fatal(err)
				}
				e.p.FailNext(connectortest.PathToken, f, 1)
				r := e.h.Do(t, http.MethodGet, "/oauth-callback?callbackUri="+url.QueryEscape(redirect.String()), nil)
				if r.Status < 400 || r.JSON(t)["jwtToken"] != nil {
					t.Errorf("%v: %d %s", f, r.Status, r.Body)
				}
			}
			// No record for bob was stored: a successful login now creates
			// the first (its version is the first version).
			authURL := e.authorize(t, "platform=testcrm")
			redirect, _ := e.p.Authorize(ctx, authURL, "bob")
			r := e.h.Do(t, http.MethodGet, "/oauth-callback?callbackUri="+url.QueryEscape(redirect.String()), nil)
			if r.Status != http.StatusOK {
				t.Fatalf("good login: %d %s", r.Status, r.Body)
			}
			u := storedUser(t, e.h, r.JSON(t)["jwtToken"].(string))
			if u.Version != 1 {
				t.Errorf("bob's record version %d: an earlier failed login stored something", u.Version)
			}
		})

		t.Run("unencoded callbackUri: top-level code and state", func(t *testing.T) {
			authURL := e.authorize(t, "platform=testcrm")
			redirect, err := e.p.Authorize(ctx, authURL, "alice")
			if err != nil {
				t.Fatal(err)
			}
			q := redirect.Query()
			raw := "/oauth-callback?callbackUri=" + clientRedirect + "?code=" + url.QueryEscape(q.Get("code")) + "&state=" + url.QueryEscape(q.Get("state"))
			r := e.h.Do(t, http.MethodGet, raw, nil)
			if r.Status != http.StatusOK || r.JSON(t)["jwtToken"] == nil {
				t.Errorf("unencoded form: %d %s", r.Status, r.Body)
			}
		})
	})
}

// Refresh failures seen through App Connect's routes (cases 8 and 9).
func TestRefreshFailuresOverHTTP(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newOAuthEnv(t, backend, connectortest.ProviderOptions{RotateRefreshTokens: true}, connectortest.OAuthConnectorOptions{}, true)
		jwt, _ := e.login(t, "alice")
		before := storedUser(t, e.h, jwt)
		// Within the margin but still valid, a failed refresh serves the
		// current token; once it has expired the caller gets 503.
		e.clock.Advance(59 * time.Minute)
		e.p.FailNext(connectortest.PathToken, connectortest.Status5xx(500), 1)
		if r := e.h.Do(t, http.MethodGet, "/authValidation", nil, bearer(jwt)...); r.Status != http.StatusOK {
			t.Fatalf("refresh failure while the token is still valid: %d %s", r.Status, r.Body)
		}
		e.clock.Advance(2*time.Minute + 5*time.Second)

		e.p.FailNext(connectortest.PathToken, connectortest.Status5xx(503), 1)
		r := e.h.Do(t, http.MethodGet, "/authValidation", nil, bearer(jwt)...)
		if r.Status != http.StatusServiceUnavailable {
			t.Fatalf("provider 503: got %d %s, want 503", r.Status, r.Body)
		}
		kept := storedUser(t, e.h, jwt)
		if kept.RefreshToken != before.RefreshToken || kept.Status == store.StatusNeedsReauth {
			t.Errorf("503 changed the record: status %s", kept.Status)
		}

		e.clock.Advance(5 * time.Second) // past this replica's back-off
		e.p.FailNext(connectortest.PathToken, connectortest.InvalidGrant(), 1)
		r = e.h.Do(t, http.MethodGet, "/authValidation", nil, bearer(jwt)...)
		body := r.JSON(t)
		if r.Status != http.StatusUnauthorized || body["errorCode"] != "CRM_SESSION_REVOKED" || body["successful"] != false {
			t.Fatalf("invalid_grant: %d %s", r.Status, r.Body)
		}
		refreshes := e.p.RefreshCount()
		r = e.h.Do(t, http.MethodGet, "/authValidation", nil, bearer(jwt)...)
		if r.Status != http.StatusUnauthorized || e.p.RefreshCount() != refreshes {
			t.Errorf("needs_reauth retried upstream: %d, refreshes %d -> %d", r.Status, refreshes, e.p.RefreshCount())
		}
	})
}

// Tokens of other kinds, forged or oversized tokens -> 401 (case 14 over
// HTTP; core/session tests every claim).
func TestSessionTokenRejections(t *testing.T) {
	e := newOAuthEnv(t, "sqlite", connectortest.ProviderOptions{}, connectortest.OAuthConnectorOptions{}, true)
	jwt, _ := e.login(t, "alice")
	ctx := context.Background()
	u := storedUser(t, e.h, jwt)
	plugin, _, err := e.h.Sessions.IssuePlugin(ctx, "some-plugin", store.HostIdentity{Kind: "ringcentral", AccountID: "acc-1"}, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	identity, _, err := e.h.Sessions.IssueIdentity(ctx, store.HostIdentity{Kind: "operator", AccountID: "a1", UserID: "u1"}, true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(jwt, ".")
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
	for name, tok := range map[string]string{
		"plugin bearer":       plugin,
		"operator identity":   identity,
		"identity w/o prefix": strings.TrimPrefix(identity, "cdi_"),
		"alg none":            none,
		"stripped signature":  parts[0] + "." + parts[1] + ".",
		"9k characters":       strings.Repeat("a", 9_000),
		"garbage":             "not-a-jwt",
	} {
		r := e.h.Do(t, http.MethodGet, "/authValidation", nil, "Authorization", "Bearer "+tok)
		if r.Status != http.StatusUnauthorized {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
		}
	}
	// A 100k-character header never reaches the handler (bounded memory).
	if r := e.h.Do(t, http.MethodGet, "/authValidation", nil, "Authorization", "Bearer "+strings.Repeat("a", 100_000)); r.Status != http.StatusRequestHeaderFieldsTooLarge && r.Status != http.StatusUnauthorized {
		t.Errorf("100k token: %d", r.Status)
	}
	if r := e.h.Do(t, http.MethodGet, "/authValidation", nil); r.Status != http.StatusUnauthorized {
		t.Errorf("no token: %d", r.Status)
	}
}

// An unchanged App Connect client whose manifest authUrl points at
// /oauth/authorize appends its own state=platform=X, client_id and
// redirect_uri; connectd replaces the state with a flow id.
func TestAuthorizeFromUnchangedClient(t *testing.T) {
	e := newOAuthEnv(t, "sqlite", connectortest.ProviderOptions{RequirePKCE: true}, connectortest.OAuthConnectorOptions{}, true)
	r := e.h.Do(t, http.MethodGet, "/oauth/authorize?response_type=code&client_id=test-client&state=platform=testcrm&redirect_uri="+url.QueryEscape(clientRedirect), nil)
	if r.Status != http.StatusFound {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	loc, err := url.Parse(r.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), e.p.AuthURL()) {
		t.Fatalf("Location = %v", r.Header.Get("Location"))
	}
	if st := loc.Query().Get("state"); st == "" || strings.Contains(st, "platform") {
		t.Errorf("state sent to the CRM = %q, want an opaque flow id", st)
	}
	if loc.Query().Get("redirect_uri") != clientRedirect {
		t.Errorf("redirect_uri = %q", loc.Query().Get("redirect_uri"))
	}
	redirect, err := e.p.Authorize(context.Background(), loc.String(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if r := e.h.Do(t, http.MethodGet, "/oauth-callback?callbackUri="+url.QueryEscape(redirect.String()), nil); r.Status != http.StatusOK {
		t.Errorf("callback: %d %s", r.Status, r.Body)
	}
}
