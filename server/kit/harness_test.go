package kit_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/connectors/pipedrive"
	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/connectortest"
	corekit "github.com/connectd/connectd/core/kit"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/manifests"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/kit"
	"github.com/connectd/connectd/server/servertest"
)

// Kit's documented redirect URIs: authorize uses the first, token the second.
const (
	kitInstall = "https://app.kit.com/apps/install"
	kitApps    = "https://app.kit.com/apps"
)

// Upstream (fake Pipedrive) credentials: canaries that must never leak.
const (
	pdClientID     = "pd-client-for-kit"
	pdClientSecret = "pd-secret-canary-9f2c1e"
	pdAccess1      = "pd-access-canary-one-77aa"
	pdRefresh1     = "pd-refresh-canary-one-88bb"
	pdCRMUserID    = "4242"
	apiKeyCanary   = "testcrm-api-key-canary-5150"
)

// fakePipedrive plays oauth.pipedrive.com (a sign-in page, token, revoke)
// and the creator's company API (users/me, deals) on one server.
type fakePipedrive struct {
	t   testing.TB
	srv *httptest.Server

	mu          sync.Mutex
	redirectURI string // the one registered URI: <connectd>/oauth/callback
	codes       map[string]bool
	access      string
	refresh     string
	refreshes   int
	revoked     []string
	dealCalls   []string // Authorization header of each deals call
}

var signIn = `<!doctype html><html><head><title>Pipedrive sign in</title></head><body>
<h1>Sign in to Pipedrive</h1>
<form method="post" action="/oauth/authorize">
<input type="hidden" name="redirect_uri" value="%s"><input type="hidden" name="state" value="%s">
<label>Email <input id="email" name="email" value=""></label>
<button id="allow" type="submit">Allow and install</button>
</form></body></html>`

func newFakePipedrive(t testing.TB) *fakePipedrive {
	f := &fakePipedrive{t: t, codes: map[string]bool{}, access: pdAccess1, refresh: pdRefresh1}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oauth/authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f.mu.Lock()
		want := f.redirectURI
		f.mu.Unlock()
		if q.Get("client_id") != pdClientID || q.Get("redirect_uri") != want || q.Get("state") == "" || q.Get("response_type") != "code" {
			http.Error(w, "bad authorization request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, signIn, html.EscapeString(q.Get("redirect_uri")), html.EscapeString(q.Get("state")))
	})
	mux.HandleFunc("POST /oauth/authorize", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if r.PostForm.Get("email") == "" {
			http.Error(w, "sign in first", http.StatusUnauthorized)
			return
		}
		code := "pd-code-" + r.PostForm.Get("state")[:8]
		f.mu.Lock()
		f.codes[code] = true
		ru := f.redirectURI
		f.mu.Unlock()
		http.Redirect(w, r, ru+"?"+url.Values{"code": {code}, "state": {r.PostForm.Get("state")}}.Encode(), http.StatusFound)
	})
	mux.HandleFunc("POST /oauth/token", func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		_ = r.ParseForm()
		if !ok || id != pdClientID || secret != pdClientSecret {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		switch r.PostForm.Get("grant_type") {
		case "authorization_code":
			if !f.codes[r.PostForm.Get("code")] || r.PostForm.Get("redirect_uri") != f.redirectURI {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
				return
			}
			delete(f.codes, r.PostForm.Get("code"))
		case "refresh_token":
			if r.PostForm.Get("refresh_token") != f.refresh {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
				return
			}
			f.refreshes++
			f.access = fmt.Sprintf("pd-access-canary-%d-77aa", f.refreshes+1)
		default:
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": f.access, "refresh_token": f.refresh, "token_type": "Bearer",
			"expires_in": 3600, "scope": "deals:read", "api_domain": f.srv.URL})
	})
	mux.HandleFunc("POST /oauth/revoke", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		f.mu.Lock()
		f.revoked = append(f.revoked, r.PostForm.Get("token_type_hint"))
		f.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})
	authed := func(r *http.Request) bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return r.Header.Get("Authorization") == "Bearer "+f.access
	}
	mux.HandleFunc("GET /api/v1/users/me", func(w http.ResponseWriter, r *http.Request) {
		if !authed(r) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"success":true,"data":{"id":` + pdCRMUserID + `,"name":"Casey Creator","email":"casey@example.test","timezone_name":"Europe/Berlin","timezone_offset":"+01:00","company_id":9,"company_name":"Casey Co","company_domain":"casey"}}`))
	})
	mux.HandleFunc("GET /api/v1/deals", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.dealCalls = append(f.dealCalls, r.Header.Get("Authorization")+" "+r.URL.RawQuery)
		f.mu.Unlock()
		if !authed(r) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"success":true,"data":[{"id":1,"title":"Kit sponsorship","value":900,"currency":"EUR","org_name":"Casey Co","person_name":"Pat"}]}`))
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakePipedrive) setRedirect(u string) {
	f.mu.Lock()
	f.redirectURI = u
	f.mu.Unlock()
}

func (f *fakePipedrive) snapshot() (refreshes int, revoked []string, deals []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refreshes, append([]string(nil), f.revoked...), append([]string(nil), f.dealCalls...)
}

// env is connectd (with the Kit surface) + a fake Pipedrive + a second,
// API-key connector ("testcrm").
type env struct {
	h     *servertest.Harness
	pd    *fakePipedrive
	clock *clock.Fake
	kit   *kit.Surface
	crm   *connectortest.CRM
	app   *store.KitApp
	// secret is the Kit app's client secret.
	secret string
}

func newEnv(t *testing.T, backend string) *env {
	t.Helper()
	e := &env{pd: newFakePipedrive(t), clock: clock.NewFake(time.Now())}
	pdManifest, err := fs.ReadFile(manifests.FS, "pipedrive.json")
	if err != nil {
		t.Fatal(err)
	}
	crm := connectortest.NewCRM(t)
	e.crm = crm
	crm.Handle(http.MethodGet, "/me", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Basic "+base64.StdEncoding.EncodeToString([]byte(apiKeyCanary+":")) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		connectortest.WriteJSON(w, http.StatusOK, map[string]any{"id": 77, "name": "Api User"})
	})
	getenv := func(k string) string {
		return map[string]string{
			pipedrive.EnvClientID: pdClientID, pipedrive.EnvClientSecret: pdClientSecret,
			pipedrive.EnvOAuthBaseURL: e.pd.srv.URL, pipedrive.EnvTestAPIOrigin: e.pd.srv.URL,
		}[k]
	}
	e.h = servertest.New(t, servertest.Options{
		Backend:   backend,
		Manifests: [][]byte{pdManifest, connectortest.APIKeyManifest("testcrm", false)},
		Connectors: map[string]connector.Factory{
			"pipedrive": pipedrive.New,
			"testcrm":   connectortest.APIKeyConnector(crm.URL()),
		},
		Getenv: getenv,
		Clock:  e.clock,
		Surfaces: func(h *servertest.Harness) []server.Surface {
			s, err := kit.New(kit.Options{
				Store: h.Store, Users: h.Engine.Auth, Refresher: h.Engine.Refresh, Registry: h.Registry,
				Manifests: h.Manifests, Connect: h.Engine.Connect, Keys: h.SessionKeys, Clock: e.clock,
				Logger: hclog.New(&hclog.LoggerOptions{Name: "kit", Output: h.Logs, JSONFormat: true, Level: hclog.Trace}),
			})
			if err != nil {
				t.Fatal(err)
			}
			e.kit = s
			return []server.Surface{s}
		},
	})
	e.pd.setRedirect(e.h.URL + "/oauth/callback")
	e.app, e.secret, err = corekit.CreateApp(context.Background(), e.h.Store, corekit.AppInput{
		Name: "Deals for Kit", Connector: "pipedrive", RedirectURIs: []string{kitInstall, kitApps},
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

var connectHref = regexp.MustCompile(`id="connect" class="button" href="([^"]+)"`)

// authorizeURL is what Kit sends the creator's browser to.
func (e *env) authorizeURL(state string) string {
	q := url.Values{"client_id": {e.app.ClientID}, "response_type": {"code"}, "redirect_uri": {kitInstall}}
	if state != "" {
		q.Set("state", state)
	}
	return "/kit/oauth/authorize?" + q.Encode()
}

// install plays the creator's browser from Kit's authorize link to the
// redirect back to Kit, and returns that redirect.
func (e *env) install(t testing.TB, state string) *url.URL {
	t.Helper()
	page := e.h.Do(t, http.MethodGet, e.authorizeURL(state), nil)
	if page.Status != http.StatusOK {
		t.Fatalf("authorize page: %d %s", page.Status, page.Body)
	}
	m := connectHref.FindSubmatch(page.Body)
	if m == nil {
		t.Fatalf("no connect button: %s", page.Body)
	}
	start := e.h.Do(t, http.MethodGet, html.UnescapeString(string(m[1])), nil)
	if start.Status != http.StatusFound {
		t.Fatalf("connect start: %d %s", start.Status, start.Body)
	}
	authURL := start.Header.Get("Location")
	if !strings.HasPrefix(authURL, e.pd.srv.URL+"/oauth/authorize?") {
		t.Fatalf("connect start redirected to %s", authURL)
	}
	// The creator's browser at Pipedrive: the sign-in page, then "Allow".
	pc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := pc.Get(authURL)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pipedrive sign-in page: %v %v", resp, err)
	}
	resp.Body.Close()
	au, _ := url.Parse(authURL)
	resp, err = pc.PostForm(e.pd.srv.URL+"/oauth/authorize", url.Values{
		"redirect_uri": {au.Query().Get("redirect_uri")}, "state": {au.Query().Get("state")}, "email": {"casey@example.test"},
	})
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("pipedrive allow: %v %v", resp, err)
	}
	resp.Body.Close()
	cb := e.h.Do(t, http.MethodGet, resp.Header.Get("Location"), nil)
	if cb.Status != http.StatusFound {
		t.Fatalf("callback: %d %s", cb.Status, cb.Body)
	}
	back, err := url.Parse(cb.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return back
}

// code installs and returns the authorization code Kit received.
func (e *env) code(t testing.TB) string {
	t.Helper()
	back := e.install(t, "kit-state-1")
	c := back.Query().Get("code")
	if c == "" {
		t.Fatalf("no code in %s", back)
	}
	return c
}

// post sends a token-endpoint request with a raw body and content type.
func (e *env) post(t testing.TB, path, contentType, body string) servertest.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.h.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.h.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return servertest.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// kitJSON posts the way Kit's samples do: a JSON body labelled as a form.
func (e *env) kitJSON(t testing.TB, path string, body map[string]string) servertest.Response {
	t.Helper()
	b, _ := json.Marshal(body)
	return e.post(t, path, "application/x-www-form-urlencoded", string(b))
}

type tokens struct {
	Access, Refresh string
	ExpiresIn       float64
	CreatedAt       float64
}

func decodeTokens(t testing.TB, r servertest.Response) tokens {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("token endpoint: %d %s", r.Status, r.Body)
	}
	m := r.JSON(t)
	tk := tokens{}
	tk.Access, _ = m["access_token"].(string)
	tk.Refresh, _ = m["refresh_token"].(string)
	tk.ExpiresIn, _ = m["expires_in"].(float64)
	tk.CreatedAt, _ = m["created_at"].(float64)
	if tk.Access == "" || tk.Refresh == "" || tk.ExpiresIn <= 0 || tk.CreatedAt <= 0 {
		t.Fatalf("token response lacks a field: %s", r.Body)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("token response Cache-Control = %q", r.Header.Get("Cache-Control"))
	}
	return tk
}

func (e *env) exchange(t testing.TB, code string) tokens {
	t.Helper()
	return decodeTokens(t, e.kitJSON(t, "/kit/oauth/token", map[string]string{
		"client_id": e.app.ClientID, "client_secret": e.secret, "grant_type": "authorization_code", "code": code, "redirect_uri": kitApps,
	}))
}

func (e *env) refresh(t testing.TB, refresh string) servertest.Response {
	t.Helper()
	return e.kitJSON(t, "/kit/oauth/refresh", map[string]string{"client_id": e.app.ClientID, "grant_type": "refresh_token", "refresh_token": refresh})
}

func (e *env) plugin(t testing.TB, connectorName, plugin, access string) servertest.Response {
	t.Helper()
	return e.h.Do(t, http.MethodPost, "/kit/plugins/"+connectorName+"/"+plugin, `{"settings":{"limit":"3"}}`, "Authorization", "Bearer "+access)
}

func oauthErrorOf(t testing.TB, r servertest.Response) string {
	t.Helper()
	m := r.JSON(t)
	if _, ok := m["error_description"].(string); !ok {
		t.Errorf("error response without error_description: %s", r.Body)
	}
	s, _ := m["error"].(string)
	return s
}
