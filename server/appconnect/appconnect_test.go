package appconnect_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/server/servertest"
)

const clientRedirect = "https://client.example/redirect.html"

// oauthEnv is connectd + a fake OAuth CRM.
type oauthEnv struct {
	h     *servertest.Harness
	p     *connectortest.Provider
	clock *clock.Fake
}

func newOAuthEnv(t testing.TB, backend string, po connectortest.ProviderOptions, co connectortest.OAuthConnectorOptions, pkce bool) *oauthEnv {
	t.Helper()
	clk := clock.NewFake(time.Now())
	po.Clock = clk
	if len(po.RedirectURIs) == 0 {
		po.RedirectURIs = []string{clientRedirect}
	}
	if po.AccessTokenTTL == 0 {
		po.AccessTokenTTL = time.Hour
	}
	p := connectortest.NewProvider(t, po)
	h := servertest.New(t, servertest.Options{
		Backend:    backend,
		Manifests:  [][]byte{connectortest.OAuthManifest("testcrm", po.RedirectURIs, pkce)},
		Connectors: map[string]connector.Factory{"testcrm": connectortest.OAuthConnector(p, co)},
		Clock:      clk,
	})
	// Leak canaries for every test using this environment, checked when
	// the test ends: the client secret and every refresh token the
	// provider issued must appear in no log line and no answer.
	h.Leaks.Secret(p.Options().ClientSecret)
	h.Leaks.Dynamic(p.ActiveRefreshTokens)
	return &oauthEnv{h: h, p: p, clock: clk}
}

// authorize asks connectd for the authorize URL (JSON form).
func (e *oauthEnv) authorize(t testing.TB, query string) string {
	t.Helper()
	r := e.h.Do(t, http.MethodGet, "/oauth/authorize?"+query, nil, "Accept", "application/json")
	if r.Status != http.StatusOK {
		t.Fatalf("authorize: %d %s", r.Status, r.Body)
	}
	u, _ := r.JSON(t)["authUrl"].(string)
	if u == "" {
		t.Fatalf("authorize: no authUrl: %s", r.Body)
	}
	return u
}

// login runs the whole App Connect OAuth login and returns the JWT.
func (e *oauthEnv) login(t testing.TB, user string) (jwt string, body map[string]any) {
	t.Helper()
	authURL := e.authorize(t, "platform=testcrm&redirect_uri="+url.QueryEscape(clientRedirect))
	redirect, err := e.p.Authorize(context.Background(), authURL, user)
	if err != nil {
		t.Fatalf("provider authorize: %v", err)
	}
	r := e.h.Do(t, http.MethodGet, "/oauth-callback?callbackUri="+url.QueryEscape(redirect.String()), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("oauth-callback: %d %s", r.Status, r.Body)
	}
	body = r.JSON(t)
	jwt, _ = body["jwtToken"].(string)
	if jwt == "" {
		t.Fatalf("oauth-callback: no jwtToken: %s", r.Body)
	}
	return jwt, body
}

func bearer(jwt string) []string { return []string{"Authorization", "Bearer " + jwt} }

func TestOAuthLoginRefreshLogout(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newOAuthEnv(t, backend, connectortest.ProviderOptions{RequirePKCE: true, RotateRefreshTokens: true, ReuseDetection: true}, connectortest.OAuthConnectorOptions{}, true)
		jwt, body := e.login(t, "alice")
		if body["name"] != "Alice" && body["name"] == "" {
			t.Errorf("name = %v", body["name"])
		}
		rm, _ := body["returnMessage"].(map[string]any)
		if rm["messageType"] != "success" {
			t.Errorf("returnMessage = %v", rm)
		}

		// The authorize request carried S256 PKCE; the token request the
		// verifier and the identical redirect URI (security.md case 4).
		reqs := e.p.TokenRequests()
		if len(reqs) != 1 {
			t.Fatalf("token requests = %d, want 1", len(reqs))
		}
		if got := reqs[0].Form.Get("redirect_uri"); got != clientRedirect {
			t.Errorf("token redirect_uri = %q", got)
		}
		if reqs[0].Form.Get("code_verifier") == "" {
			t.Errorf("token request without code_verifier")
		}

		// The stored record: tokens sealed, App Connect id kept.
		first := storedUser(t, e.h, jwt)
		if !strings.HasSuffix(first.AppConnectID, "-testcrm") || first.AccessToken == "" || first.RefreshToken == "" || first.Status != store.StatusActive {
			t.Fatalf("stored user: app connect id %q, status %s", first.AppConnectID, first.Status)
		}

		// authValidation: token not due -> no upstream call.
		before := len(e.p.Requests())
		r := e.h.Do(t, http.MethodGet, "/authValidation", nil, bearer(jwt)...)
		if r.Status != http.StatusOK || r.JSON(t)["successful"] != true {
			t.Fatalf("authValidation: %d %s", r.Status, r.Body)
		}
		if n := len(e.p.Requests()); n != before {
			t.Errorf("authValidation made %d upstream calls, want 0", n-before)
		}
		// Legacy ?jwtToken= works too.
		if r := e.h.Do(t, http.MethodGet, "/authValidation?jwtToken="+url.QueryEscape(jwt), nil); r.Status != http.StatusOK {
			t.Fatalf("authValidation (query): %d %s", r.Status, r.Body)
		}

		// Expiry: within the margin -> exactly one refresh.
		e.clock.Advance(59 * time.Minute)
		r = e.h.Do(t, http.MethodGet, "/authValidation", nil, bearer(jwt)...)
		if r.Status != http.StatusOK || r.JSON(t)["successful"] != true {
			t.Fatalf("authValidation after expiry: %d %s", r.Status, r.Body)
		}
		if n := e.p.RefreshCount(); n != 1 {
			t.Fatalf("refreshes = %d, want 1", n)
		}
		after := storedUser(t, e.h, jwt)
		if after.AccessToken == first.AccessToken || after.RefreshToken == first.RefreshToken {
			t.Errorf("refresh did not replace the rotated tokens")
		}
		if r := e.h.Do(t, http.MethodGet, "/authValidation", nil, bearer(jwt)...); r.Status != http.StatusOK {
			t.Fatalf("second validation: %d", r.Status)
		}
		if n := e.p.RefreshCount(); n != 1 {
			t.Errorf("refreshes = %d after a fresh token, want 1", n)
		}

		// /hostname and /licenseStatus answer for the session.
		if r := e.h.Do(t, http.MethodGet, "/licenseStatus", nil, bearer(jwt)...); r.Status != http.StatusOK || r.JSON(t)["isLicenseValid"] != true {
			t.Errorf("licenseStatus: %d %s", r.Status, r.Body)
		}

		// Logout: upstream revocation (refresh token first), credentials
		// cleared, the JWT rejected afterwards.
		r = e.h.Do(t, http.MethodPost, "/unAuthorize", nil, bearer(jwt)...)
		if r.Status != http.StatusOK || r.JSON(t)["successful"] != true {
			t.Fatalf("unAuthorize: %d %s", r.Status, r.Body)
		}
		var revokes []string
		for _, rq := range e.p.Requests() {
			if rq.Path == connectortest.PathRevoke {
				revokes = append(revokes, rq.Form.Get("token_type_hint"))
			}
		}
		if len(revokes) != 2 || revokes[0] != "refresh_token" || revokes[1] != "access_token" {
			t.Errorf("revocations = %v, want [refresh_token access_token]", revokes)
		}
		if !e.p.IsRevoked(after.RefreshToken) {
			t.Errorf("refresh token not revoked at the provider")
		}
		gone, err := e.h.Store.GetUser(context.Background(), after.ID)
		if err != nil {
			t.Fatal(err)
		}
		if gone.Status != store.StatusRevoked || gone.AccessToken != "" || gone.RefreshToken != "" {
			t.Errorf("after logout: status %s, tokens cleared %v", gone.Status, gone.AccessToken == "" && gone.RefreshToken == "")
		}
		r = e.h.Do(t, http.MethodGet, "/authValidation", nil, bearer(jwt)...)
		if r.Status != http.StatusUnauthorized {
			t.Errorf("old JWT after logout: %d %s", r.Status, r.Body)
		}
		e.h.AssertNoLeak(t, after.AccessToken, after.RefreshToken, first.RefreshToken, e.p.Options().ClientSecret)
	})
}

// storedUser reads the record a session JWT names.
func storedUser(t testing.TB, h *servertest.Harness, jwt string) *store.User {
	t.Helper()
	c, err := h.Sessions.VerifyAppConnect(context.Background(), jwt)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	u, err := h.Store.GetUser(context.Background(), c.Subject)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
