package console_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/connectors"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/server/app"
	"github.com/connectd/connectd/server/config"
	"github.com/connectd/connectd/server/connect"
)

// oauthLogin logs in to demo-oauth through the console exactly as the page
// does: the console's login call, the demo CRM's sign-in page, the shared
// /oauth/callback, back to the console.
func (e *env) oauthLogin(t *testing.T, login, lifetime string) {
	t.Helper()
	r := e.api(t, "login", map[string]string{"platform": "demo-oauth"})
	if r.status != http.StatusOK {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	authURL := r.json(t)["url"].(string)
	if !strings.HasPrefix(authURL, e.base+"/demo/crm/oauth/authorize?") {
		t.Fatalf("login URL %s", authURL)
	}
	u, _ := url.Parse(e.base)
	if !strings.Contains(cookieNames(e.client.Jar.Cookies(u)), connect.CookieName) {
		t.Fatal("the login call did not set the connect flow's binding cookie")
	}
	page := e.do(t, http.MethodGet, authURL, nil)
	if page.status != http.StatusOK || !strings.Contains(string(page.body), "DEMO CRM") || !strings.Contains(string(page.body), "Sign in as") {
		t.Fatalf("sign-in page: %d %s", page.status, page.body)
	}
	f := formOf(page.body)
	f.Set("login", login)
	f.Set("lifetime", lifetime)
	f.Set("action", "allow")
	r = e.do(t, http.MethodPost, "/demo/crm/oauth/authorize", strings.NewReader(f.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	if r.status != http.StatusFound || !strings.HasPrefix(r.header.Get("Location"), e.base+"/oauth/callback?") {
		t.Fatalf("sign in: %d %s", r.status, r.header.Get("Location"))
	}
	final, hops := e.follow(t, r)
	if final.status != http.StatusOK || len(hops) != 2 || !strings.HasPrefix(hops[1], e.base+"/console#session-") {
		t.Fatalf("after sign-in: %d via %v: %s", final.status, hops, final.body)
	}
}

func cookieNames(cs []*http.Cookie) string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return strings.Join(names, ",")
}

func one(t *testing.T, ss []map[string]any, platform string) map[string]any {
	t.Helper()
	var found []map[string]any
	for _, s := range ss {
		if s["platform"] == platform {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s session, have %v", platform, ss)
	}
	return found[0]
}

// userOf reads the login record behind a console session.
func (e *env) userOf(t *testing.T, sid string) *store.User {
	t.Helper()
	ctx := context.Background()
	row, err := e.deps.Store.GetSession(ctx, sid)
	if err != nil {
		t.Fatalf("session %s: %v", sid, err)
	}
	u, err := e.deps.Store.GetUser(ctx, row.UserID)
	if err != nil {
		t.Fatalf("user of session %s: %v", sid, err)
	}
	return u
}

// TestDemoOAuthThroughTheConsole: the newcomer's path with demo-oauth, on
// SQLite and PostgreSQL: log in at the demo CRM, see the user, force a
// refresh (rotation at the CRM, the expiry moves), validate, log out (the
// CRM revokes, the session is gone).
func TestDemoOAuthThroughTheConsole(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := start(t, envOptions{backend: backend, demo: true})

		page := e.do(t, http.MethodGet, "/console", nil)
		if page.status != http.StatusOK {
			t.Fatalf("console: %d", page.status)
		}
		for _, want := range []string{`id="connector-demo-oauth"`, `id="connector-demo-apikey"`, "Demo mode", `href="/admin"`, `id="connector-pipedrive" data-platform="pipedrive" data-available="false"`, "PIPEDRIVE_CLIENT_ID"} {
			if !strings.Contains(string(page.body), want) {
				t.Fatalf("console page lacks %q", want)
			}
		}
		if csp := page.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Fatalf("console CSP %q", csp)
		}
		// 127.0.0.1 is sent to the public URL's host, where the cookies live.
		if r := e.do(t, http.MethodGet, e.ip+"/console", nil); r.status != http.StatusFound || r.header.Get("Location") != e.base+"/console" {
			t.Fatalf("loopback alias: %d %s", r.status, r.header.Get("Location"))
		}

		e.oauthLogin(t, "alice", "3600")
		s := one(t, e.sessions(t), "demo-oauth")
		if s["user"] != "Alice Demo" || s["crmUserId"] != "demo-1001" || s["status"] != "active" || s["hasRefreshToken"] != true ||
			s["credentialVersion"] != float64(1) || s["tokenExpiry"] == "" || s["demo"] != true || s["authType"] != "oauth" {
			t.Fatalf("session after login: %v", s)
		}
		page = e.do(t, http.MethodGet, "/console", nil)
		if !strings.Contains(string(page.body), "Alice Demo") || !strings.Contains(string(page.body), `data-platform="demo-oauth"`) {
			t.Fatal("the console page does not show the login")
		}
		first := e.userOf(t, s["id"].(string))
		if first.Host != (store.HostIdentity{}) || e.crm.TokenState(first.AccessToken) != "active" {
			t.Fatalf("stored login: host %+v, CRM says %s", first.Host, e.crm.TokenState(first.AccessToken))
		}

		// Force a refresh: the engine spends the refresh token at the CRM.
		r := e.api(t, "refresh", map[string]string{"session": s["id"].(string)})
		if r.status != http.StatusOK {
			t.Fatalf("refresh: %d %s", r.status, r.body)
		}
		m := r.json(t)
		after := m["session"].(map[string]any)
		if m["result"].(map[string]any)["successful"] != true || after["credentialVersion"] != float64(2) ||
			after["tokenExpiryMs"].(float64) <= s["tokenExpiryMs"].(float64) {
			t.Fatalf("refresh did not move the expiry: before %v after %v", s, m)
		}
		second := e.userOf(t, s["id"].(string))
		if second.RefreshToken == first.RefreshToken || e.crm.TokenState(first.RefreshToken) != "rotated" || e.crm.TokenState(second.AccessToken) != "active" {
			t.Fatalf("rotation: old refresh token %s, new access token %s", e.crm.TokenState(first.RefreshToken), e.crm.TokenState(second.AccessToken))
		}

		r = e.api(t, "validate", map[string]string{"session": s["id"].(string)})
		if r.status != http.StatusOK || r.json(t)["result"].(map[string]any)["successful"] != true {
			t.Fatalf("validate: %d %s", r.status, r.body)
		}

		r = e.api(t, "logout", map[string]string{"session": s["id"].(string)})
		if r.status != http.StatusOK || r.json(t)["removed"] != s["id"] {
			t.Fatalf("logout: %d %s", r.status, r.body)
		}
		if ss := e.sessions(t); len(ss) != 0 {
			t.Fatalf("sessions after logout: %v", ss)
		}
		gone, err := e.deps.Store.GetUser(context.Background(), second.ID)
		if err != nil || gone.Status != store.StatusRevoked || gone.AccessToken != "" || gone.RefreshToken != "" {
			t.Fatalf("stored login after logout: %+v %v", gone, err)
		}
		if e.crm.TokenState(second.AccessToken) != "revoked" || e.crm.TokenState(second.RefreshToken) != "revoked" {
			t.Fatal("the demo CRM did not revoke the grant on logout")
		}
		if r := e.api(t, "validate", map[string]string{"session": s["id"].(string)}); r.status != http.StatusNotFound {
			t.Fatalf("validate after logout: %d", r.status)
		}
		if strings.Contains(string(e.do(t, http.MethodGet, "/console", nil).body), "Alice Demo") {
			t.Fatal("the console still shows the logged-out login")
		}
		e.assertNoLeak(t, first.AccessToken, first.RefreshToken, second.AccessToken, second.RefreshToken, "connectd-demo-secret")
	})
}

// TestDemoAPIKeyThroughTheConsole: demo-apikey through the manifest's form
// (a wrong key first), then validate, no refresh, log out.
func TestDemoAPIKeyThroughTheConsole(t *testing.T) {
	e := start(t, envOptions{demo: true})
	r := e.api(t, "login", map[string]string{"platform": "demo-apikey"})
	if r.status != http.StatusOK {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	formURL := r.json(t)["url"].(string)
	if !strings.HasPrefix(formURL, e.base+"/connect/apikey?state=") {
		t.Fatalf("form URL %s", formURL)
	}
	page := e.do(t, http.MethodGet, formURL, nil)
	if page.status != http.StatusOK || !strings.Contains(string(page.body), "DEMO") || !strings.Contains(string(page.body), `name="apiKey"`) {
		t.Fatalf("API-key form: %d %s", page.status, page.body)
	}
	state := formOf(page.body).Get("state")
	submit := func(key string) response {
		f := url.Values{"state": {state}, "apiKey": {key}}
		return e.do(t, http.MethodPost, "/connect/apikey", strings.NewReader(f.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	}
	if r := submit("demo-key-wrong"); r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "does not know this API key") {
		t.Fatalf("wrong key: %d %s", r.status, r.body)
	}
	r = submit("demo-key-bob")
	if r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/console#session-") {
		t.Fatalf("right key: %d %s", r.status, r.header.Get("Location"))
	}
	s := one(t, e.sessions(t), "demo-apikey")
	if s["user"] != "Bob Demo" || s["authType"] != "apiKey" || s["tokenExpiry"] != "" || s["hasRefreshToken"] != false || s["refreshable"] != false {
		t.Fatalf("session: %v", s)
	}
	if r := e.api(t, "refresh", map[string]string{"session": s["id"].(string)}); r.status != http.StatusBadRequest {
		t.Fatalf("refresh of an API key: %d %s", r.status, r.body)
	}
	if r := e.api(t, "validate", map[string]string{"session": s["id"].(string)}); r.status != http.StatusOK || r.json(t)["result"].(map[string]any)["successful"] != true {
		t.Fatalf("validate: %d %s", r.status, r.body)
	}
	u := e.userOf(t, s["id"].(string))
	if u.APIKey != "demo-key-bob" {
		t.Fatal("the key was not stored")
	}
	if r := e.api(t, "logout", map[string]string{"session": s["id"].(string)}); r.status != http.StatusOK {
		t.Fatalf("logout: %d %s", r.status, r.body)
	}
	if ss := e.sessions(t); len(ss) != 0 {
		t.Fatalf("sessions after logout: %v", ss)
	}
	if u, _ := e.deps.Store.GetUser(context.Background(), u.ID); u.APIKey != "" || u.Status != store.StatusRevoked {
		t.Fatalf("after logout: %+v", u)
	}
	// The form page legitimately names the demo keys; the console and the
	// logs never show the stored one.
	for _, b := range [][]byte{[]byte(e.logs.String()), e.do(t, http.MethodGet, "/console", nil).body} {
		if strings.Contains(string(b), "demo-key-bob") {
			t.Fatal("the API key leaked")
		}
	}
	e.assertNoLeak(t)
}

// TestShortTokenLifetimeRefreshesOnUse: the demo CRM's short lifetime
// (45 s, under the manifest's 60 s refresh margin) makes every use refresh
// through the engine - authValidation here.
func TestShortTokenLifetimeRefreshesOnUse(t *testing.T) {
	e := start(t, envOptions{demo: true})
	e.oauthLogin(t, "bob", "45")
	s := one(t, e.sessions(t), "demo-oauth")
	before := e.userOf(t, s["id"].(string))
	last := float64(1)
	for range 2 {
		r := e.api(t, "validate", map[string]string{"session": s["id"].(string)})
		if r.status != http.StatusOK {
			t.Fatalf("validate: %d %s", r.status, r.body)
		}
		// The token is due on every use (its lifetime is under the
		// margin): each call refreshes at least once.
		v := r.json(t)["session"].(map[string]any)["credentialVersion"].(float64)
		if v <= last {
			t.Fatalf("credential version %v after %v: the due token was not refreshed", v, last)
		}
		last = v
	}
	if e.crm.TokenState(before.RefreshToken) != "rotated" {
		t.Fatal("the refresh did not go through the CRM's rotation")
	}
}

// TestConsoleRefuses: bad calls get clear errors.
func TestConsoleRefuses(t *testing.T) {
	e := start(t, envOptions{demo: true})
	post := func(path, body string, header ...string) response {
		return e.do(t, http.MethodPost, "/console/api/"+path, strings.NewReader(body), header...)
	}
	cases := []struct {
		name   string
		r      func() response
		status int
		code   failure.Code
	}{
		{"another origin", func() response {
			return post("login", `{"platform":"demo-oauth"}`, "Content-Type", "application/json", "Origin", "https://evil.example")
		}, 403, failure.Forbidden},
		{"a cross-site fetch", func() response {
			return post("login", `{"platform":"demo-oauth"}`, "Content-Type", "application/json", "Sec-Fetch-Site", "cross-site")
		}, 403, failure.Forbidden},
		{"a form post", func() response {
			return post("login", `platform=demo-oauth`, "Content-Type", "application/x-www-form-urlencoded")
		}, 415, failure.InvalidRequest},
		{"unknown fields", func() response {
			return post("login", `{"platform":"demo-oauth","x":1}`, "Content-Type", "application/json")
		}, 400, failure.InvalidRequest},
		{"unknown platform", func() response {
			return post("login", `{"platform":"nope"}`, "Content-Type", "application/json")
		}, 404, failure.NotFound},
		{"an unavailable connector", func() response {
			return post("login", `{"platform":"pipedrive"}`, "Content-Type", "application/json")
		}, 503, failure.ConnectorUnavailable},
		{"a session this browser does not hold", func() response {
			return post("logout", `{"session":"00000000-0000-0000-0000-000000000000"}`, "Content-Type", "application/json")
		}, 404, failure.NotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.r()
			if r.status != tc.status || r.json(t)["error"] != string(tc.code) {
				t.Fatalf("%d %s", r.status, r.body)
			}
		})
	}
}

// TestDemoOffByDefault: without CONNECTD_DEMO there is no /demo/ route and
// no demo connector anywhere; the console still works for real connectors.
func TestDemoOffByDefault(t *testing.T) {
	e := start(t, envOptions{demo: false})
	if e.crm != nil {
		t.Fatal("the demo CRM is mounted")
	}
	for _, p := range []string{"/demo/crm/", "/demo/crm", "/demo/crm/oauth/authorize", "/demo/crm/api/me", "/demo/crm/apikey/me"} {
		if r := e.do(t, http.MethodGet, p, nil); r.status != http.StatusNotFound {
			t.Fatalf("GET %s: %d", p, r.status)
		}
	}
	if r := e.do(t, http.MethodPost, "/demo/crm/oauth/token", strings.NewReader("grant_type=x"), "Content-Type", "application/x-www-form-urlencoded"); r.status != http.StatusNotFound {
		t.Fatalf("POST token: %d", r.status)
	}
	for _, name := range []string{"demo-oauth", "demo-apikey"} {
		if _, err := e.deps.Registry.Get(name); !failure.Is(err, failure.NotFound) {
			t.Fatalf("registry has %s: %v", name, err)
		}
		if _, ok := e.deps.Manifests.Platform(name); ok {
			t.Fatalf("manifests hold %s", name)
		}
	}
	for _, p := range []string{"/crmManifest", "/console"} {
		r := e.do(t, http.MethodGet, p, nil)
		if r.status != http.StatusOK || strings.Contains(string(r.body), "demo-oauth") || strings.Contains(string(r.body), "Demo mode") {
			t.Fatalf("%s mentions the demo (%d)", p, r.status)
		}
	}
	if r := e.api(t, "login", map[string]string{"platform": "demo-oauth"}); r.status != http.StatusNotFound {
		t.Fatalf("login to demo-oauth: %d", r.status)
	}
	// The real connectors are listed with why they are unavailable.
	if page := string(e.do(t, http.MethodGet, "/console", nil).body); !strings.Contains(page, `id="connector-pipedrive"`) || !strings.Contains(page, "PIPEDRIVE_CLIENT_ID") {
		t.Fatal("the console does not list pipedrive with its reason")
	}
}

// TestDemoOnlyOnLoopback: the demo lets the engine call this server over
// loopback, so it refuses to start on a listener or public URL others
// could reach.
func TestDemoOnlyOnLoopback(t *testing.T) {
	cases := []struct{ name, addr, public string }{
		{"all interfaces", "0.0.0.0:0", "http://localhost:8080"},
		{"a public URL elsewhere", "127.0.0.1:0", "https://connectd.example.com"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.FromMap(map[string]string{
				"CONNECTD_ADDR": tc.addr, "CONNECTD_PUBLIC_URL": tc.public, "CONNECTD_DATA_DIR": t.TempDir(), "CONNECTD_DEMO": "true",
			})
			if err != nil {
				t.Fatal(err)
			}
			d, err := app.Build(context.Background(), cfg, hclog.NewNullLogger(), func(string) string { return "" }, nil, connectors.All())
			if err == nil {
				d.Close()
				t.Fatal("the demo started on a non-loopback server")
			}
			if !strings.Contains(err.Error(), "CONNECTD_DEMO") || !strings.Contains(err.Error(), "loopback") {
				t.Fatalf("error %q does not say why", err)
			}
		})
	}
}

// TestConsoleKeepsOneSessionPerLogin: logging in again to the same CRM
// account replaces the console's older session of it; other logins stay.
func TestConsoleKeepsOneSessionPerLogin(t *testing.T) {
	e := start(t, envOptions{demo: true})
	e.oauthLogin(t, "alice", "3600")
	firstID := one(t, e.sessions(t), "demo-oauth")["id"]
	e.oauthLogin(t, "alice", "3600")
	e.oauthLogin(t, "bob", "3600")
	ss := e.sessions(t)
	if len(ss) != 2 {
		t.Fatalf("want alice and bob, have %v", ss)
	}
	users := map[any]bool{}
	for _, s := range ss {
		users[s["user"]] = true
		if s["id"] == firstID {
			t.Fatal("the replaced session is still listed")
		}
	}
	if !users["Alice Demo"] || !users["Bob Demo"] {
		t.Fatalf("sessions %v", ss)
	}
	// Logging out of Alice leaves Bob.
	for _, s := range ss {
		if s["user"] == "Alice Demo" {
			if r := e.api(t, "logout", map[string]string{"session": s["id"].(string)}); r.status != http.StatusOK {
				t.Fatalf("logout: %d", r.status)
			}
		}
	}
	if ss := e.sessions(t); len(ss) != 1 || ss[0]["user"] != "Bob Demo" {
		t.Fatalf("after logging Alice out: %v", ss)
	}
}
