package kit_test

import (
	"context"
	"errors"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	corekit "github.com/connectd/connectd/core/kit"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/server/servertest"
)

// TestInstallEndToEnd: a fake Kit client performs the whole install:
// authorize -> connect page -> upstream login -> code -> token -> plugin
// call -> refresh -> plugin call -> revoke -> plugin call rejected.
func TestInstallEndToEnd(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend)
		ctx := context.Background()

		back := e.install(t, "opaque/state+with spaces")
		if back.Scheme+"://"+back.Host+back.Path != kitInstall {
			t.Fatalf("redirected to %s, want %s", back, kitInstall)
		}
		if back.Query().Get("state") != "opaque/state+with spaces" {
			t.Fatalf("state changed: %q", back.Query().Get("state"))
		}
		code := back.Query().Get("code")

		// The token request names the OTHER registered redirect URI, as
		// Kit's docs do.
		tk := e.exchange(t, code)
		if tk.ExpiresIn != 7200 {
			t.Errorf("expires_in = %v, want 7200", tk.ExpiresIn)
		}
		if int64(tk.CreatedAt) != e.clock.Now().Unix() {
			t.Errorf("created_at = %v, want %d", tk.CreatedAt, e.clock.Now().Unix())
		}

		// The creator's connector login: its own host identity, CRM tokens
		// stored (sealed), scoped to this app.
		b, err := e.h.Store.GetKitBearer(ctx, corekit.Hash(tk.Access))
		if err != nil {
			t.Fatalf("bearer lookup by hash: %v", err)
		}
		u, err := e.h.Store.GetUser(ctx, b.Grant.UserID)
		if err != nil {
			t.Fatal(err)
		}
		if u.Platform != "pipedrive" || u.CRMUserID != pdCRMUserID || u.Host.Kind != "kit" || u.Host.AccountID != e.app.ID || u.Host.UserID != b.Grant.ID || u.AccessToken != pdAccess1 {
			t.Fatalf("creator login: %+v %s %s grant=%s access=%q", u.Host, u.Platform, u.CRMUserID, b.Grant.ID, u.AccessToken)
		}
		// Only hashes: the plaintext tokens are not keys of any row.
		if _, err := e.h.Store.GetKitBearer(ctx, tk.Access); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("token stored in the clear? lookup by plaintext: %v", err)
		}

		r := e.plugin(t, "pipedrive", "deals", tk.Access)
		if r.Status != http.StatusOK {
			t.Fatalf("plugin call: %d %s", r.Status, r.Body)
		}
		m := r.JSON(t)
		if m["code"] != float64(200) || !strings.Contains(m["html"].(string), "Kit sponsorship") {
			t.Fatalf("plugin answer: %s", r.Body)
		}
		_, _, deals := e.pd.snapshot()
		if len(deals) != 1 || deals[0] != "Bearer "+pdAccess1+" limit=3&sort=add_time+DESC&start=0&status=open" {
			t.Fatalf("upstream deals calls = %q", deals)
		}

		// The upstream token expires (1 h): the next plugin call refreshes
		// it through the engine. Kit's own access token is still good (2 h).
		e.clock.Advance(70 * time.Minute)
		r = e.plugin(t, "pipedrive", "deals", tk.Access)
		if r.Status != http.StatusOK {
			t.Fatalf("plugin call after upstream expiry: %d %s", r.Status, r.Body)
		}
		if n, _, deals := e.pd.snapshot(); n != 1 || !strings.HasPrefix(deals[len(deals)-1], "Bearer pd-access-canary-2-77aa ") {
			t.Fatalf("upstream refreshes = %d, last deals call %q", n, deals[len(deals)-1])
		}

		// Kit refreshes (no client secret) and uses the new token.
		e.clock.Advance(55 * time.Minute)
		tk2 := decodeTokens(t, e.refresh(t, tk.Refresh))
		if tk2.Access == tk.Access || tk2.Refresh == tk.Refresh {
			t.Fatal("refresh did not rotate the tokens")
		}
		if r := e.plugin(t, "pipedrive", "deals", tk2.Access); r.Status != http.StatusOK {
			t.Fatalf("plugin call with refreshed token: %d %s", r.Status, r.Body)
		}
		// The first access token has expired (2 h) by now.
		e.clock.Advance(10 * time.Minute)
		if r := e.plugin(t, "pipedrive", "deals", tk.Access); r.Status != http.StatusUnauthorized {
			t.Fatalf("expired access token: %d %s", r.Status, r.Body)
		}

		// Uninstall: revoke (real form encoding this time).
		r = e.post(t, "/kit/oauth/revoke", "application/x-www-form-urlencoded", url.Values{
			"client_id": {e.app.ClientID}, "client_secret": {e.secret}, "token": {tk2.Refresh},
		}.Encode())
		if r.Status != http.StatusOK {
			t.Fatalf("revoke: %d %s", r.Status, r.Body)
		}
		r = e.plugin(t, "pipedrive", "deals", tk2.Access)
		if r.Status != http.StatusUnauthorized || !strings.Contains(r.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("plugin call after revoke: %d %s %q", r.Status, r.Body, r.Header.Get("WWW-Authenticate"))
		}
		if m := r.JSON(t); m["code"] != float64(401) {
			t.Errorf("rejected plugin call body: %s", r.Body)
		}
		if oauthErrorOf(t, e.refresh(t, tk2.Refresh)) != "invalid_grant" {
			t.Error("refresh after revoke was not invalid_grant")
		}
		// The creator's CRM login went with the grant, upstream too.
		u, err = e.h.Store.GetUser(ctx, b.Grant.UserID)
		if err != nil || u.Status != store.StatusRevoked || u.AccessToken != "" {
			t.Fatalf("creator login after uninstall: %v %v", u.Status, err)
		}
		if _, revoked, _ := e.pd.snapshot(); len(revoked) != 2 {
			t.Errorf("upstream revocations = %v, want refresh and access", revoked)
		}
		e.h.AssertNoLeak(t, pdClientSecret, pdAccess1, pdRefresh1, "pd-access-canary-2-77aa", e.secret)
		// What connectd issued to Kit appears in its answers, never in a log.
		assertNotLogged(t, e, code, tk.Access, tk.Refresh, tk2.Access, tk2.Refresh)
	})
}

// TestCase25 is security.md case 25.
func TestCase25(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend)

		t.Run("replayed code revokes what it issued", func(t *testing.T) {
			code := e.code(t)
			tk := e.exchange(t, code)
			if r := e.plugin(t, "pipedrive", "deals", tk.Access); r.Status != http.StatusOK {
				t.Fatalf("plugin call: %d %s", r.Status, r.Body)
			}
			r := e.kitJSON(t, "/kit/oauth/token", map[string]string{"client_id": e.app.ClientID, "client_secret": e.secret,
				"grant_type": "authorization_code", "code": code, "redirect_uri": kitApps})
			if r.Status != http.StatusBadRequest || oauthErrorOf(t, r) != "invalid_grant" {
				t.Fatalf("replay: %d %s", r.Status, r.Body)
			}
			if r := e.plugin(t, "pipedrive", "deals", tk.Access); r.Status != http.StatusUnauthorized {
				t.Fatalf("access token of a replayed code still works: %d", r.Status)
			}
			if oauthErrorOf(t, e.refresh(t, tk.Refresh)) != "invalid_grant" {
				t.Fatal("refresh token of a replayed code still works")
			}
		})

		t.Run("retried refresh within grace gets the same pair", func(t *testing.T) {
			tk := e.exchange(t, e.code(t))
			a := decodeTokens(t, e.refresh(t, tk.Refresh))
			e.clock.Advance(10 * time.Second)
			b := decodeTokens(t, e.refresh(t, tk.Refresh)) // the response to the first was "lost"
			if a != b {
				t.Fatalf("retry gave another pair:\n%+v\n%+v", a, b)
			}
			if r := e.plugin(t, "pipedrive", "deals", b.Access); r.Status != http.StatusOK {
				t.Fatalf("retried pair does not work: %d", r.Status)
			}
			// Once the successor is used, the old token is a reuse.
			c := decodeTokens(t, e.refresh(t, b.Refresh))
			if oauthErrorOf(t, e.refresh(t, tk.Refresh)) != "invalid_grant" {
				t.Fatal("reuse after the successor was used was accepted")
			}
			if r := e.plugin(t, "pipedrive", "deals", c.Access); r.Status != http.StatusUnauthorized {
				t.Fatalf("family not revoked after reuse: %d", r.Status)
			}
		})

		t.Run("reused rotated refresh token revokes the family", func(t *testing.T) {
			tk := e.exchange(t, e.code(t))
			next := decodeTokens(t, e.refresh(t, tk.Refresh))
			e.clock.Advance(31 * time.Second)
			r := e.refresh(t, tk.Refresh)
			if r.Status != http.StatusBadRequest || oauthErrorOf(t, r) != "invalid_grant" {
				t.Fatalf("reuse: %d %s", r.Status, r.Body)
			}
			if r := e.plugin(t, "pipedrive", "deals", next.Access); r.Status != http.StatusUnauthorized {
				t.Fatalf("family access token still works: %d", r.Status)
			}
			if oauthErrorOf(t, e.refresh(t, next.Refresh)) != "invalid_grant" {
				t.Fatal("family refresh token still works")
			}
		})

		t.Run("revoking an unknown token answers 200", func(t *testing.T) {
			for _, tok := range []string{"kitrt_unknown", "garbage", tokNotOurs} {
				r := e.kitJSON(t, "/kit/oauth/revoke", map[string]string{"client_id": e.app.ClientID, "client_secret": e.secret, "token": tok})
				if r.Status != http.StatusOK {
					t.Fatalf("revoke %q: %d %s", tok, r.Status, r.Body)
				}
			}
		})
		e.h.AssertNoLeak(t, e.secret, pdClientSecret, pdRefresh1)
	})
}

func assertNotLogged(t *testing.T, e *env, secrets ...string) {
	t.Helper()
	logs := e.h.Logs.String()
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("secret %q... appears in the logs", s[:8])
		}
	}
}

const tokNotOurs = "kitat_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

// TestTokenEndpointErrors: client authentication, redirect URIs, expired
// codes and body encodings.
func TestTokenEndpointErrors(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend)

		t.Run("wrong client secret", func(t *testing.T) {
			code := e.code(t)
			for _, secret := range []string{e.secret + "x", "", "kits_" + strings.Repeat("A", 43)} {
				r := e.kitJSON(t, "/kit/oauth/token", map[string]string{"client_id": e.app.ClientID, "client_secret": secret,
					"grant_type": "authorization_code", "code": code, "redirect_uri": kitApps})
				if r.Status != http.StatusUnauthorized || oauthErrorOf(t, r) != "invalid_client" {
					t.Fatalf("secret %q: %d %s", secret, r.Status, r.Body)
				}
			}
			r := e.kitJSON(t, "/kit/oauth/token", map[string]string{"client_id": "kitc_unknown", "client_secret": e.secret,
				"grant_type": "authorization_code", "code": code, "redirect_uri": kitApps})
			if r.Status != http.StatusUnauthorized || oauthErrorOf(t, r) != "invalid_client" {
				t.Fatalf("unknown client: %d %s", r.Status, r.Body)
			}
			// A revoke with a wrong secret revokes nothing.
			tk := e.exchange(t, code) // the code was not consumed by the failures
			r = e.kitJSON(t, "/kit/oauth/revoke", map[string]string{"client_id": e.app.ClientID, "client_secret": "nope", "token": tk.Refresh})
			if r.Status != http.StatusUnauthorized {
				t.Fatalf("revoke with a wrong secret: %d", r.Status)
			}
			if r := e.plugin(t, "pipedrive", "deals", tk.Access); r.Status != http.StatusOK {
				t.Fatalf("grant gone after a refused revoke: %d", r.Status)
			}
		})

		t.Run("wrong redirect URI", func(t *testing.T) {
			code := e.code(t)
			for _, ru := range []string{"https://evil.example/apps", kitApps + "/", ""} {
				r := e.kitJSON(t, "/kit/oauth/token", map[string]string{"client_id": e.app.ClientID, "client_secret": e.secret,
					"grant_type": "authorization_code", "code": code, "redirect_uri": ru})
				if r.Status != http.StatusBadRequest {
					t.Fatalf("redirect %q: %d %s", ru, r.Status, r.Body)
				}
			}
			e.exchange(t, code) // still unused, with a registered URI

			// At authorize, an unregistered redirect URI is an error page:
			// the browser is NOT sent there.
			q := url.Values{"client_id": {e.app.ClientID}, "response_type": {"code"}, "redirect_uri": {"https://evil.example/cb"}, "state": {"s"}}
			r := e.h.Do(t, http.MethodGet, "/kit/oauth/authorize?"+q.Encode(), nil)
			if r.Status != http.StatusBadRequest || r.Header.Get("Location") != "" || !strings.Contains(string(r.Body), "not registered") {
				t.Fatalf("authorize with a foreign redirect: %d %q", r.Status, r.Header.Get("Location"))
			}
			r = e.h.Do(t, http.MethodGet, "/kit/oauth/connect?"+q.Encode(), nil)
			if r.Status != http.StatusBadRequest || r.Header.Get("Location") != "" {
				t.Fatalf("connect start with a foreign redirect: %d %q", r.Status, r.Header.Get("Location"))
			}
		})

		t.Run("expired code", func(t *testing.T) {
			code := e.code(t)
			e.clock.Advance(10*time.Minute + time.Second)
			r := e.kitJSON(t, "/kit/oauth/token", map[string]string{"client_id": e.app.ClientID, "client_secret": e.secret,
				"grant_type": "authorization_code", "code": code, "redirect_uri": kitApps})
			if r.Status != http.StatusBadRequest || oauthErrorOf(t, r) != "invalid_grant" {
				t.Fatalf("expired code: %d %s", r.Status, r.Body)
			}
		})

		t.Run("body encodings", func(t *testing.T) {
			cases := []struct {
				name, contentType string
				body              func(code string) string
			}{
				{"JSON labelled as a form (Kit's samples)", "application/x-www-form-urlencoded", func(c string) string {
					return `{"client_id":"` + e.app.ClientID + `","client_secret":"` + e.secret + `","grant_type":"authorization_code","code":"` + c + `","redirect_uri":"` + kitApps + `"}`
				}},
				{"JSON", "application/json", func(c string) string {
					return ` {"client_id":"` + e.app.ClientID + `","client_secret":"` + e.secret + `","grant_type":"authorization_code","code":"` + c + `","redirect_uri":"` + kitApps + `"}`
				}},
				{"JSON without content type", "", func(c string) string {
					return `{"client_id":"` + e.app.ClientID + `","client_secret":"` + e.secret + `","grant_type":"authorization_code","code":"` + c + `","redirect_uri":"` + kitApps + `"}`
				}},
				{"form", "application/x-www-form-urlencoded", func(c string) string {
					return url.Values{"client_id": {e.app.ClientID}, "client_secret": {e.secret}, "grant_type": {"authorization_code"}, "code": {c}, "redirect_uri": {kitApps}}.Encode()
				}},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					tk := decodeTokens(t, e.post(t, "/kit/oauth/token", tc.contentType, tc.body(e.code(t))))
					// Refresh as a real form too.
					decodeTokens(t, e.post(t, "/kit/oauth/refresh", "application/x-www-form-urlencoded", url.Values{
						"client_id": {e.app.ClientID}, "grant_type": {"refresh_token"}, "refresh_token": {tk.Refresh}}.Encode()))
				})
			}
			bad := []struct{ name, contentType, body, want string }{
				{"trailing garbage", "application/json", `{"grant_type":"authorization_code"} {}`, "invalid_request"},
				{"non-string value", "application/json", `{"client_id":["a"]}`, "invalid_request"},
				{"repeated form parameter", "application/x-www-form-urlencoded", "client_id=a&client_id=b", "invalid_request"},
				{"unsupported grant type", "application/json", `{"client_id":"` + e.app.ClientID + `","client_secret":"` + e.secret + `","grant_type":"password"}`, "unsupported_grant_type"},
				{"missing code", "application/json", `{"client_id":"` + e.app.ClientID + `","client_secret":"` + e.secret + `","grant_type":"authorization_code","redirect_uri":"` + kitApps + `"}`, "invalid_request"},
			}
			for _, tc := range bad {
				t.Run(tc.name, func(t *testing.T) {
					r := e.post(t, "/kit/oauth/token", tc.contentType, tc.body)
					if r.Status != http.StatusBadRequest || oauthErrorOf(t, r) != tc.want {
						t.Fatalf("%d %s, want %s", r.Status, r.Body, tc.want)
					}
				})
			}
		})

		t.Run("refresh bound to the client", func(t *testing.T) {
			other, _, err := corekit.CreateApp(context.Background(), e.h.Store, corekit.AppInput{Name: "Other", Connector: "pipedrive", RedirectURIs: []string{kitApps}})
			if err != nil {
				t.Fatal(err)
			}
			tk := e.exchange(t, e.code(t))
			r := e.kitJSON(t, "/kit/oauth/refresh", map[string]string{"client_id": other.ClientID, "grant_type": "refresh_token", "refresh_token": tk.Refresh})
			if oauthErrorOf(t, r) != "invalid_grant" {
				t.Fatalf("another client's refresh: %d %s", r.Status, r.Body)
			}
			decodeTokens(t, e.refresh(t, tk.Refresh)) // untouched for its own client
		})
		e.h.AssertNoLeak(t, e.secret, pdClientSecret, pdRefresh1, pdAccess1)
	})
}

// TestResourceServer: bearer checks on plugin routes.
func TestResourceServer(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend)
		tk := e.exchange(t, e.code(t))
		cases := []struct {
			name, path, auth string
			want             int
			wwwAuth          string
		}{
			{"no token", "/kit/plugins/pipedrive/deals", "", 401, `Bearer realm="connectd kit"`},
			{"other scheme", "/kit/plugins/pipedrive/deals", "Basic " + tk.Access, 401, `Bearer realm="connectd kit"`},
			{"unknown token", "/kit/plugins/pipedrive/deals", "Bearer " + tokNotOurs, 401, `error="invalid_token"`},
			{"refresh token as bearer", "/kit/plugins/pipedrive/deals", "Bearer " + tk.Refresh, 401, `error="invalid_token"`},
			{"grant for another connector", "/kit/plugins/testcrm/deals", "Bearer " + tk.Access, 403, `error="insufficient_scope"`},
			{"unknown plugin", "/kit/plugins/pipedrive/nope", "Bearer " + tk.Access, 404, ""},
			{"search input shape", "/kit/plugins/pipedrive/deal-search", "Bearer " + tk.Access, 200, ""},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				hdr := []string{}
				if tc.auth != "" {
					hdr = []string{"Authorization", tc.auth}
				}
				r := e.h.Do(t, http.MethodPost, tc.path, `{"query":"k"}`, hdr...)
				if r.Status != tc.want {
					t.Fatalf("%d %s", r.Status, r.Body)
				}
				if tc.wwwAuth != "" && !strings.Contains(r.Header.Get("WWW-Authenticate"), tc.wwwAuth) {
					t.Errorf("WWW-Authenticate = %q", r.Header.Get("WWW-Authenticate"))
				}
				m := r.JSON(t)
				if tc.want == 200 {
					if d, ok := m["data"].([]any); !ok || len(d) != 0 {
						t.Errorf("search input body = %s", r.Body)
					}
				} else if m["code"] != float64(tc.want) || m["errors"] == nil {
					t.Errorf("error body = %s", r.Body)
				}
			})
		}
	})
}

// TestAuthorizePage: what the creator sees, and what it refuses.
func TestAuthorizePage(t *testing.T) {
	e := newEnv(t, storetest.SQLite)
	r := e.h.Do(t, http.MethodGet, e.authorizeURL("st"), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	body := string(r.Body)
	for _, want := range []string{"Deals for Kit", "Pipedrive", `id="connect"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if !strings.Contains(r.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") || r.Header.Get("X-Frame-Options") != "DENY" ||
		r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("page headers: %v", r.Header)
	}
	cases := []struct {
		name, query  string
		status       int
		locationHas  string
		bodyContains string
	}{
		{"unknown client", "client_id=kitc_nope&response_type=code&redirect_uri=" + url.QueryEscape(kitInstall), 400, "", "not registered"},
		{"missing redirect", "client_id=" + e.app.ClientID + "&response_type=code", 400, "", "redirect URI"},
		{"token response type", "client_id=" + e.app.ClientID + "&response_type=token&state=z&redirect_uri=" + url.QueryEscape(kitInstall), 302, "error=unsupported_response_type", ""},
		{"repeated client id", "client_id=a&client_id=b&response_type=code&redirect_uri=" + url.QueryEscape(kitInstall), 400, "", "repeats"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.h.Do(t, http.MethodGet, "/kit/oauth/authorize?"+tc.query, nil)
			if r.Status != tc.status || !strings.Contains(r.Header.Get("Location"), tc.locationHas) || !strings.Contains(string(r.Body), tc.bodyContains) {
				t.Fatalf("%d %q %s", r.Status, r.Header.Get("Location"), r.Body)
			}
			if tc.status == 302 && !strings.Contains(r.Header.Get("Location"), "state=z") {
				t.Errorf("error redirect lost the state: %s", r.Header.Get("Location"))
			}
		})
	}

	// A callback completed in another browser (no binding cookie) is
	// refused and issues no code.
	page := e.h.Do(t, http.MethodGet, e.authorizeURL("st"), nil)
	m := connectHref.FindSubmatch(page.Body)
	start := e.h.Do(t, http.MethodGet, strings.ReplaceAll(string(m[1]), "&amp;", "&"), nil)
	loc, _ := url.Parse(start.Header.Get("Location"))
	other := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := other.Get(e.h.URL + "/oauth/callback?state=" + url.QueryEscape(loc.Query().Get("state")) + "&code=pd-code-x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
		t.Fatalf("callback from another browser: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

var continueHref = regexp.MustCompile(`id="continue" href="([^"]+)"`)

// TestInstallWithAPIKeyForm: for an API-key connector the connect page
// leads to connectd's API-key form (from the manifest); after the form
// POST, the way back to Kit is a refresh page, not a cross-origin
// redirect of a form submission.
func TestInstallWithAPIKeyForm(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend)
		app, secret, err := corekit.CreateApp(context.Background(), e.h.Store, corekit.AppInput{Name: "Key app", Connector: "testcrm", RedirectURIs: []string{kitInstall, kitApps}})
		if err != nil {
			t.Fatal(err)
		}
		q := url.Values{"client_id": {app.ClientID}, "response_type": {"code"}, "redirect_uri": {kitInstall}, "state": {"k-state"}}
		page := e.h.Do(t, http.MethodGet, "/kit/oauth/authorize?"+q.Encode(), nil)
		m := connectHref.FindSubmatch(page.Body)
		if page.Status != http.StatusOK || m == nil || !strings.Contains(string(page.Body), "Test API-key CRM testcrm") {
			t.Fatalf("authorize page: %d %s", page.Status, page.Body)
		}
		start := e.h.Do(t, http.MethodGet, html.UnescapeString(string(m[1])), nil)
		loc, _ := url.Parse(start.Header.Get("Location"))
		if start.Status != http.StatusFound || loc.Path != "/connect/apikey" {
			t.Fatalf("start: %d %s", start.Status, start.Header.Get("Location"))
		}
		form := e.h.Do(t, http.MethodGet, loc.String(), nil)
		if form.Status != http.StatusOK || !strings.Contains(string(form.Body), `name="apiKey"`) {
			t.Fatalf("api key form: %d %s", form.Status, form.Body)
		}
		state := loc.Query().Get("state")
		submit := func(key string) servertest.Response {
			return e.post(t, "/connect/apikey", "application/x-www-form-urlencoded", url.Values{"state": {state}, "apiKey": {key}}.Encode())
		}
		if r := submit("wrong-key-123456"); r.Status != http.StatusBadRequest || strings.Contains(string(r.Body), "code=") {
			t.Fatalf("wrong key: %d %s", r.Status, r.Body)
		}
		r := submit(apiKeyCanary)
		mm := continueHref.FindSubmatch(r.Body)
		if r.Status != http.StatusOK || mm == nil || r.Header.Get("Location") != "" {
			t.Fatalf("submit: %d %q %s", r.Status, r.Header.Get("Location"), r.Body)
		}
		back, _ := url.Parse(html.UnescapeString(string(mm[1])))
		if back.Scheme+"://"+back.Host+back.Path != kitInstall || back.Query().Get("state") != "k-state" {
			t.Fatalf("back to %s", back)
		}
		tk := decodeTokens(t, e.kitJSON(t, "/kit/oauth/token", map[string]string{"client_id": app.ClientID, "client_secret": secret,
			"grant_type": "authorization_code", "code": back.Query().Get("code"), "redirect_uri": kitApps}))
		// This grant is for testcrm: pipedrive's routes refuse it, its own
		// connector has no plugins.
		if r := e.plugin(t, "pipedrive", "deals", tk.Access); r.Status != http.StatusForbidden {
			t.Fatalf("testcrm grant on pipedrive: %d %s", r.Status, r.Body)
		}
		if r := e.plugin(t, "testcrm", "deals", tk.Access); r.Status != http.StatusNotFound {
			t.Fatalf("testcrm plugin: %d %s", r.Status, r.Body)
		}
		e.h.AssertNoLeak(t, apiKeyCanary, secret)
	})
}
