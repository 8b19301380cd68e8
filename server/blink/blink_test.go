package blink_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/blink"
	"github.com/connectd/connectd/server/servertest"
)

const (
	appName       = "crm-app"
	authID        = "auth-123"
	proxySecret   = "proxy-secret-canary-5d1f0c2a"
	prevSecret    = "previous-secret-canary-77ab"
	apiToken      = "blink-api-token-canary-93e1"
	blinkUser     = "blink-user-1"
	otherUser     = "blink-user-2"
	secretEnv     = "BLINK_PROXY_SECRET"
	prevSecretEnv = "BLINK_PROXY_SECRET_OLD"
	tokenEnv      = "BLINK_API_TOKEN"
)

// fakeBlink is Blink's API: it records every call and can be down.
type fakeBlink struct {
	srv   *httptest.Server
	mu    sync.Mutex
	calls []blinkCall
	down  bool
	next  int
	// refuse answers POSTs with this status; noID answers them 200
	// without an id.
	refuse int
	noID   bool
}

type blinkCall struct {
	Method, Path, Auth, IdempotencyKey string
	Body                               map[string]any
}

func newFakeBlink(t *testing.T) *fakeBlink {
	f := &fakeBlink{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		call := blinkCall{Method: r.Method, Path: r.URL.Path, Auth: r.Header.Get("Authorization"), IdempotencyKey: r.Header.Get("Idempotency-Key")}
		if len(data) > 0 {
			if err := json.Unmarshal(data, &call.Body); err != nil {
				t.Errorf("fake blink: body is not JSON: %s", data)
			}
		}
		f.mu.Lock()
		f.calls = append(f.calls, call)
		down, refuse, noID := f.down, f.refuse, f.noID
		f.next++
		id := f.next
		f.mu.Unlock()
		if down {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost && refuse != 0 {
			w.WriteHeader(refuse)
			_ = json.NewEncoder(w).Encode(map[string]any{"code": "BAD_REQUEST", "message": "refused"})
			return
		}
		if r.Method == http.MethodPost && noID {
			_ = json.NewEncoder(w).Encode(map[string]any{"code": "OK"})
			return
		}
		if r.Method == http.MethodPost {
			_ = json.NewEncoder(w).Encode(map[string]any{"code": "OK", "data": map[string]any{"id": "la-" + strconv.Itoa(id)}})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"code": "OK"})
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeBlink) setDown(d bool) {
	f.mu.Lock()
	f.down = d
	f.mu.Unlock()
}

func (f *fakeBlink) Calls() []blinkCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]blinkCall(nil), f.calls...)
}

type env struct {
	h     *servertest.Harness
	p     *connectortest.Provider
	blink *fakeBlink
	surf  *blink.Surface
	reg   *prometheus.Registry
	clk   *clock.Fake
	app   *store.BlinkApp
	vars  map[string]string
}

type envOptions struct {
	shareTokens bool
	previous    bool
	connector   string // default "testcrm" (OAuth); "keycrm" is API-key
}

const goodKey = "key-0123456789-secret-canary"

func newEnv(t *testing.T, backend string, o envOptions) *env {
	t.Helper()
	// The engine's clock runs a minute behind the database: a job retried
	// after a backoff is due at once (the jobs runner computes retry times
	// with this clock, the store judges them by its own), so tests never
	// sleep. Flows and start links still live minutes.
	clk := clock.NewFake(time.Now().Add(-time.Minute))
	p := connectortest.NewProvider(t, connectortest.ProviderOptions{RequirePKCE: true, RotateRefreshTokens: true, AccessTokenTTL: time.Hour})
	e := &env{p: p, blink: newFakeBlink(t), clk: clk, reg: prometheus.NewRegistry()}
	e.vars = map[string]string{secretEnv: proxySecret, tokenEnv: apiToken}
	if o.previous {
		e.vars[prevSecretEnv] = prevSecret
	}
	getenv := func(k string) string { return e.vars[k] }
	crm := connectortest.NewCRM(t)
	crm.Handle(http.MethodGet, "/me", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Basic "+base64.StdEncoding.EncodeToString([]byte(goodKey+":")) {
			connectortest.WriteJSON(w, http.StatusUnauthorized, map[string]any{"error": "bad key"})
			return
		}
		connectortest.WriteJSON(w, http.StatusOK, map[string]any{"id": 4711, "name": "Key User"})
	})
	if o.connector == "" {
		o.connector = "testcrm"
	}
	e.h = servertest.New(t, servertest.Options{
		Backend: backend,
		Manifests: [][]byte{
			connectortest.OAuthManifest("testcrm", []string{"https://client.example/redirect.html"}, true),
			connectortest.APIKeyManifest("keycrm", false),
		},
		Connectors: map[string]connector.Factory{
			"testcrm": connectortest.OAuthConnector(p, connectortest.OAuthConnectorOptions{}),
			"keycrm":  connectortest.APIKeyConnector(crm.URL()),
		},
		Clock: clk,
		Surfaces: func(h *servertest.Harness) []server.Surface {
			s, err := blink.New(blink.Options{
				Store: h.Store, Engine: h.Engine.Auth, Connect: h.Engine.Connect, HTTP: h.Engine.HTTP,
				PublicURL: h.URL, Getenv: getenv, Clock: clk, Registerer: e.reg,
				Logger: hclog.New(&hclog.LoggerOptions{Name: "blink", Output: h.Logs, JSONFormat: true, Level: hclog.Debug}),
			})
			if err != nil {
				t.Fatalf("blink.New: %v", err)
			}
			s.RegisterJobs(h.Engine.Jobs)
			e.surf = s
			return []server.Surface{s}
		},
	})
	args := []string{"app", "create", "--name", appName, "--connector", o.connector, "--auth-id", authID,
		"--proxy-secret-env", secretEnv, "--api-url", e.blink.srv.URL + "/v1", "--api-token-env", tokenEnv}
	if o.shareTokens {
		args = append(args, "--share-tokens")
	}
	if o.previous {
		args = append(args, "--previous-proxy-secret-env", prevSecretEnv)
	}
	var out, errOut bytes.Buffer
	if code := blink.Command(context.Background(), args, blink.CommandEnv{Stdout: &out, Stderr: &errOut, Getenv: getenv}, e.h.Store); code != 0 {
		t.Fatalf("blink app create: %d %s", code, errOut.String())
	}
	app, err := e.h.Store.GetBlinkAppByName(context.Background(), appName)
	if err != nil {
		t.Fatal(err)
	}
	e.app = app
	return e
}

func (e *env) proxied(t *testing.T, method, path, secret, user string) servertest.Response {
	t.Helper()
	var hdr []string
	if secret != "" {
		hdr = append(hdr, blink.HeaderProxySecret, secret)
	}
	if user != "" {
		hdr = append(hdr, blink.HeaderUserID, user)
	}
	return e.h.Do(t, method, "/blink/"+appName+path, nil, hdr...)
}

// start plays Blink (POST /auth) and the Blink user's browser opening the
// start link; it returns where the browser is sent.
func (e *env) start(t *testing.T, user string) *url.URL {
	t.Helper()
	r := e.proxied(t, http.MethodPost, "/auth/"+authID, proxySecret, user)
	if r.Status != http.StatusOK {
		t.Fatalf("POST /auth: %d %s", r.Status, r.Body)
	}
	body := r.JSON(t)
	data, _ := body["data"].(map[string]any)
	startURL, _ := data["authorization_url"].(string)
	if body["code"] != "OK" || body["message"] != "OK" || !strings.HasPrefix(startURL, e.h.URL+"/blink/"+appName+"/connect?t=") {
		t.Fatalf("POST /auth answered %s", r.Body)
	}
	// The browser opens the start link: binding cookie + redirect to the CRM.
	r = e.h.Do(t, http.MethodGet, startURL, nil)
	if r.Status != http.StatusFound {
		t.Fatalf("start link: %d %s", r.Status, r.Body)
	}
	base, _ := url.Parse(e.h.URL)
	bound := false
	for _, c := range e.h.Client.Jar.Cookies(base) {
		bound = bound || c.Name == "connectd_connect"
	}
	if !bound {
		t.Fatalf("start link set no binding cookie")
	}
	loc, err := url.Parse(r.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// connect runs the whole OAuth connect (start, CRM sign-in as login,
// callback) and returns the completion page.
func (e *env) connect(t *testing.T, user, login string) servertest.Response {
	t.Helper()
	loc := e.start(t, user)
	if !strings.HasPrefix(loc.String(), e.p.AuthURL()) {
		t.Fatalf("start link redirects to %q, want the CRM", loc)
	}
	q := loc.Query()
	if q.Get("redirect_uri") != e.h.URL+"/oauth/callback" || q.Get("state") == "" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
		t.Fatalf("authorize request lacks state, PKCE or the connect callback: %s", loc.RawQuery)
	}
	// The user signs in at the CRM, which redirects back with a code.
	code := e.p.IssueCode(login, q.Get("redirect_uri"), q.Get("code_challenge"), "")
	return e.h.Do(t, http.MethodGet, "/oauth/callback?code="+url.QueryEscape(code)+"&state="+url.QueryEscape(q.Get("state")), nil)
}

func (e *env) links(t *testing.T) []store.BlinkLink {
	t.Helper()
	ls, err := e.h.Store.ListBlinkLinks(context.Background(), store.BlinkLinkQuery{AppID: e.app.ID})
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

func (e *env) onlyLink(t *testing.T) store.BlinkLink {
	t.Helper()
	ls := e.links(t)
	if len(ls) != 1 {
		t.Fatalf("links = %d, want 1: %+v", len(ls), ls)
	}
	return ls[0]
}

func TestConnectLinkDisconnect(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{})
		ctx := context.Background()

		page := e.connect(t, blinkUser, "alice")
		if page.Status != http.StatusOK || !bytes.Contains(page.Body, []byte("You can now return to Blink")) {
			t.Fatalf("completion page: %d %s", page.Status, page.Body)
		}
		if page.Header.Get("Cache-Control") != "no-store" || page.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("completion page headers: %v", page.Header)
		}

		// Credentials stored, scoped to this Blink user of this app.
		link := e.onlyLink(t)
		if link.State != store.BlinkLinkPending || link.BlinkUserID != blinkUser || link.ExternalAccountID != "1001" {
			t.Fatalf("link after login: %+v", link)
		}
		u, err := e.h.Store.GetUser(ctx, link.UserID)
		if err != nil {
			t.Fatal(err)
		}
		if u.Host != (store.HostIdentity{Kind: blink.HostKind, AccountID: e.app.ID, UserID: blinkUser}) || u.Status != store.StatusActive || u.AccessToken == "" || u.RefreshToken == "" {
			t.Fatalf("stored user: host %+v status %s", u.Host, u.Status)
		}
		if n := len(e.blink.Calls()); n != 0 {
			t.Fatalf("Blink called %d times before the jobs ran", n)
		}

		// The jobs pass delivers "Add User Linked Account".
		if n := e.h.RunJobs(t); n != 1 {
			t.Fatalf("jobs run = %d, want 1", n)
		}
		calls := e.blink.Calls()
		if len(calls) != 1 {
			t.Fatalf("Blink calls = %d, want 1", len(calls))
		}
		add := calls[0]
		if add.Method != http.MethodPost || add.Path != "/v1/users/"+blinkUser+"/linked-accounts" || add.Auth != "Bearer "+apiToken || add.IdempotencyKey == "" {
			t.Errorf("add call: %s %s auth %q key %q", add.Method, add.Path, add.Auth, add.IdempotencyKey)
		}
		want := map[string]any{"auth_id": authID, "external_account_id": "1001", "requires_reauth": false, "extra_info": "Alice Example"}
		if !jsonEqual(add.Body, want) {
			t.Errorf("add body = %v, want %v (no tokens: the app does not share them)", add.Body, want)
		}
		link = e.onlyLink(t)
		if link.State != store.BlinkLinkLinked || link.BlinkLinkedAccountID != "la-1" {
			t.Fatalf("link after add: %+v", link)
		}

		// Another Blink user cannot disconnect it: 404, nothing deleted.
		r := e.proxied(t, http.MethodDelete, "/linked-accounts/la-1", proxySecret, otherUser)
		if r.Status != http.StatusNotFound || r.JSON(t)["code"] != blink.CodeNotFound {
			t.Fatalf("other user's delete: %d %s", r.Status, r.Body)
		}
		if got, _ := e.h.Store.GetUser(ctx, link.UserID); got.Status != store.StatusActive || got.AccessToken == "" {
			t.Fatalf("other user's delete touched the credentials: %s", got.Status)
		}
		if l := e.onlyLink(t); l.State != store.BlinkLinkLinked {
			t.Fatalf("other user's delete touched the link: %+v", l)
		}

		// The owner disconnects: revoked upstream, credentials gone, then
		// the linked account deleted at Blink.
		r = e.proxied(t, http.MethodDelete, "/linked-accounts/la-1", proxySecret, blinkUser)
		if r.Status != http.StatusOK || !jsonEqual(r.JSON(t), map[string]any{"code": "OK", "message": "OK"}) {
			t.Fatalf("delete: %d %s", r.Status, r.Body)
		}
		got, err := e.h.Store.GetUser(ctx, link.UserID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != store.StatusRevoked || got.AccessToken != "" || got.RefreshToken != "" {
			t.Fatalf("after delete: status %s, credentials left", got.Status)
		}
		if !e.p.IsRevoked(u.RefreshToken) || !e.p.IsRevoked(u.AccessToken) {
			t.Errorf("tokens not revoked upstream")
		}
		e.h.RunJobs(t)
		calls = e.blink.Calls()
		if len(calls) != 2 {
			t.Fatalf("Blink calls = %d, want 2", len(calls))
		}
		del := calls[1]
		if del.Method != http.MethodDelete || del.Path != "/v1/users/"+blinkUser+"/linked-accounts/la-1" || del.Auth != "Bearer "+apiToken {
			t.Errorf("delete call: %s %s", del.Method, del.Path)
		}
		if ls := e.links(t); len(ls) != 0 {
			t.Errorf("links after delete = %+v", ls)
		}
		// Blink retrying the disconnect finds nothing.
		if r := e.proxied(t, http.MethodDelete, "/linked-accounts/la-1", proxySecret, blinkUser); r.Status != http.StatusNotFound {
			t.Errorf("repeated delete: %d", r.Status)
		}
		e.h.AssertNoLeak(t, proxySecret, apiToken, u.AccessToken, u.RefreshToken)
	})
}

func TestBlinkDownDuringConnect(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{})
		ctx := context.Background()
		e.blink.setDown(true)
		if page := e.connect(t, blinkUser, "bob"); page.Status != http.StatusOK {
			t.Fatalf("login failed while Blink is down: %d %s", page.Status, page.Body)
		}
		link := e.onlyLink(t)
		u, err := e.h.Store.GetUser(ctx, link.UserID)
		if err != nil || u.Status != store.StatusActive || u.AccessToken == "" {
			t.Fatalf("login not stored: %v", err)
		}
		// Two failing passes: the job stays pending, visible in metrics.
		for i := 0; i < 2; i++ {
			if n := e.h.RunJobs(t); n != 1 {
				t.Fatalf("pass %d ran %d jobs", i, n)
			}
		}
		if l := e.onlyLink(t); l.State != store.BlinkLinkPending {
			t.Fatalf("link while Blink is down: %+v", l)
		}
		if v := gauge(t, e.reg, "connectd_blink_jobs", map[string]string{"kind": blink.JobAddLink, "state": store.JobPending}); v != 1 {
			t.Errorf("pending add jobs metric = %v, want 1", v)
		}
		if v := counter(t, e.reg, "connectd_blink_api_calls_total", map[string]string{"app": appName, "op": "add", "outcome": "5xx"}); v != 2 {
			t.Errorf("failed add calls metric = %v, want 2", v)
		}
		var out, errOut bytes.Buffer
		if code := blink.Command(ctx, []string{"status"}, blink.CommandEnv{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return e.vars[k] }}, e.h.Store); code != 0 {
			t.Fatalf("status: %d %s", code, errOut.String())
		}
		if !strings.Contains(out.String(), "blink_add_link") || !strings.Contains(out.String(), "pending") || !strings.Contains(out.String(), tokenEnv+" (set)") {
			t.Errorf("status output:\n%s", out.String())
		}

		// Blink returns: the next pass delivers it.
		e.blink.setDown(false)
		if n := e.h.RunJobs(t); n != 1 {
			t.Fatalf("recovery pass ran %d jobs", n)
		}
		l := e.onlyLink(t)
		if l.State != store.BlinkLinkLinked || l.BlinkLinkedAccountID == "" {
			t.Fatalf("link after Blink returned: %+v", l)
		}
		calls := e.blink.Calls()
		if len(calls) != 3 || calls[2].Body["external_account_id"] != "1002" {
			t.Fatalf("calls = %+v", calls)
		}
		if calls[0].IdempotencyKey != calls[2].IdempotencyKey {
			t.Errorf("retries changed the idempotency key: %q vs %q", calls[0].IdempotencyKey, calls[2].IdempotencyKey)
		}
		if v := gauge(t, e.reg, "connectd_blink_jobs", map[string]string{"kind": blink.JobAddLink, "state": store.JobDone}); v != 1 {
			t.Errorf("done add jobs metric = %v, want 1", v)
		}
		if n := e.h.RunJobs(t); n != 0 {
			t.Errorf("jobs left after delivery: %d", n)
		}

		// Disconnect while Blink is down: the credentials go at once, the
		// linked account is deleted at Blink when it returns.
		e.blink.setDown(true)
		if r := e.proxied(t, http.MethodDelete, "/linked-accounts/"+l.BlinkLinkedAccountID, proxySecret, blinkUser); r.Status != http.StatusOK {
			t.Fatalf("delete while Blink is down: %d %s", r.Status, r.Body)
		}
		if u, _ := e.h.Store.GetUser(ctx, l.UserID); u.Status != store.StatusRevoked || u.AccessToken != "" {
			t.Fatalf("credentials kept while Blink is down: %s", u.Status)
		}
		e.h.RunJobs(t)
		if l := e.onlyLink(t); l.State != store.BlinkLinkDeleting {
			t.Fatalf("link while Blink is down: %+v", l)
		}
		e.blink.setDown(false)
		e.h.RunJobs(t)
		if ls := e.links(t); len(ls) != 0 {
			t.Fatalf("links after Blink returned: %+v", ls)
		}
		calls = e.blink.Calls()
		if last := calls[len(calls)-1]; last.Method != http.MethodDelete || !strings.HasSuffix(last.Path, "/"+l.BlinkLinkedAccountID) {
			t.Fatalf("last call: %s %s", last.Method, last.Path)
		}
	})
}

func TestProxyAuthentication(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{previous: true})
		cases := []struct {
			name, method, path, secret, user string
			status                           int
			code                             string
		}{
			{"current secret", http.MethodPost, "/auth/" + authID, proxySecret, blinkUser, 200, "OK"},
			{"previous secret", http.MethodPost, "/auth/" + authID, prevSecret, blinkUser, 200, "OK"},
			{"wrong secret", http.MethodPost, "/auth/" + authID, "not-the-secret", blinkUser, 401, blink.CodeUnauthorized},
			{"secret prefix", http.MethodPost, "/auth/" + authID, proxySecret[:10], blinkUser, 401, blink.CodeUnauthorized},
			{"secret with suffix", http.MethodPost, "/auth/" + authID, proxySecret + "x", blinkUser, 401, blink.CodeUnauthorized},
			{"missing secret", http.MethodPost, "/auth/" + authID, "", blinkUser, 401, blink.CodeUnauthorized},
			{"wrong secret on delete", http.MethodDelete, "/linked-accounts/la-1", "nope", blinkUser, 401, blink.CodeUnauthorized},
			{"missing user id", http.MethodPost, "/auth/" + authID, proxySecret, "", 400, blink.CodeBadRequest},
			{"malformed user id", http.MethodPost, "/auth/" + authID, proxySecret, "a b<c>", 400, blink.CodeBadRequest},
			{"unknown auth id", http.MethodPost, "/auth/other-auth", proxySecret, blinkUser, 404, blink.CodeNotFound},
			{"malformed auth id", http.MethodPost, "/auth/bad%20id%3Cx%3E", proxySecret, blinkUser, 400, blink.CodeBadRequest},
			{"malformed linked account id", http.MethodDelete, "/linked-accounts/x%20y%3Cz%3E", proxySecret, blinkUser, 400, blink.CodeBadRequest},
			{"overlong linked account id", http.MethodDelete, "/linked-accounts/" + strings.Repeat("a", 200), proxySecret, blinkUser, 400, blink.CodeBadRequest},
			{"unknown linked account", http.MethodDelete, "/linked-accounts/la-404", proxySecret, blinkUser, 404, blink.CodeNotFound},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := e.proxied(t, tc.method, tc.path, tc.secret, tc.user)
				if r.Status != tc.status {
					t.Fatalf("status = %d, want %d: %s", r.Status, tc.status, r.Body)
				}
				body := r.JSON(t)
				if body["code"] != tc.code || body["message"] == "" {
					t.Errorf("envelope = %s, want code %s", r.Body, tc.code)
				}
			})
		}
		t.Run("unknown app", func(t *testing.T) {
			r := e.h.Do(t, http.MethodPost, "/blink/no-such-app/auth/"+authID, nil, blink.HeaderProxySecret, proxySecret, blink.HeaderUserID, blinkUser)
			if r.Status != http.StatusNotFound || r.JSON(t)["code"] != blink.CodeNotFound {
				t.Fatalf("unknown app: %d %s", r.Status, r.Body)
			}
		})
		t.Run("unset secret variable never matches", func(t *testing.T) {
			delete(e.vars, secretEnv)
			defer func() { e.vars[secretEnv] = proxySecret }()
			if r := e.proxied(t, http.MethodPost, "/auth/"+authID, "", blinkUser); r.Status != http.StatusUnauthorized {
				t.Fatalf("empty secret against unset variable: %d", r.Status)
			}
		})
		e.h.AssertNoLeak(t, proxySecret, prevSecret, apiToken)
	})
}

func TestStartLink(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{})
		r := e.proxied(t, http.MethodPost, "/auth/"+authID, proxySecret, blinkUser)
		start := r.JSON(t)["data"].(map[string]any)["authorization_url"].(string)
		token := start[strings.LastIndex(start, "=")+1:]
		t.Run("another app's path", func(t *testing.T) {
			// Consumes nothing: the token is checked against its own app
			// only after consumption, so use a fresh token here.
			r := e.proxied(t, http.MethodPost, "/auth/"+authID, proxySecret, blinkUser)
			other := r.JSON(t)["data"].(map[string]any)["authorization_url"].(string)
			tok := other[strings.LastIndex(other, "=")+1:]
			if r := e.h.Do(t, http.MethodGet, "/blink/other-app/connect?t="+tok, nil); r.Status != http.StatusNotFound {
				t.Fatalf("start link under another app: %d", r.Status)
			}
		})
		for _, tc := range []struct{ name, path string }{
			{"malformed", "/blink/" + appName + "/connect?t=short"},
			{"missing", "/blink/" + appName + "/connect"},
			{"unknown", "/blink/" + appName + "/connect?t=" + strings.Repeat("A", 43)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := e.h.Do(t, http.MethodGet, tc.path, nil)
				if r.Status != http.StatusBadRequest || r.Header.Get("Location") != "" {
					t.Fatalf("%s: %d %s", tc.path, r.Status, r.Header.Get("Location"))
				}
			})
		}
		if r := e.h.Do(t, http.MethodGet, start, nil); r.Status != http.StatusFound {
			t.Fatalf("first open: %d %s", r.Status, r.Body)
		}
		if r := e.h.Do(t, http.MethodGet, start, nil); r.Status != http.StatusBadRequest || !bytes.Contains(r.Body, []byte("already used")) {
			t.Fatalf("second open: %d %s", r.Status, r.Body)
		}
		if strings.Contains(e.h.Logs.String(), token) {
			t.Errorf("the start token appears in the logs")
		}
		// The store keeps only a hash: the plaintext token is no key.
		if _, err := e.h.Store.ConsumeBlinkStart(context.Background(), token); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("the start token works as its own hash: %v", err)
		}
	})
}

func TestReauthAndSharedTokens(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{shareTokens: true})
		ctx := context.Background()
		e.connect(t, blinkUser, "alice")
		e.h.RunJobs(t)
		link := e.onlyLink(t)
		u, _ := e.h.Store.GetUser(ctx, link.UserID)
		add := e.blink.Calls()[0]
		if add.Body["access_token"] != u.AccessToken || add.Body["expires_at"] == nil {
			t.Errorf("shared app: add body lacks the access token or expiry: %v", keys(add.Body))
		}
		if _, ok := add.Body["refresh_token"]; ok {
			t.Errorf("the refresh token was sent to Blink")
		}
		// Nothing changed: Sync queues nothing.
		if n, err := e.surf.Sync(ctx); err != nil || n != 0 {
			t.Fatalf("sync with nothing to push: %d %v", n, err)
		}

		// A refresh replaced the access token: re-pushed, still without
		// the refresh token.
		owner := "test-owner"
		if _, err := e.h.Store.AcquireUserLease(ctx, u.ID, owner, time.Minute); err != nil {
			t.Fatal(err)
		}
		exp := time.Now().Add(time.Hour)
		if _, err := e.h.Store.SaveLeasedTokens(ctx, u.ID, owner, store.TokenUpdate{AccessToken: "new-access-token-canary", RefreshToken: "new-refresh-token-canary", TokenExpiry: &exp}); err != nil {
			t.Fatal(err)
		}
		if n, err := e.surf.Sync(ctx); err != nil || n != 1 {
			t.Fatalf("sync after refresh: %d %v", n, err)
		}
		e.h.RunJobs(t)
		calls := e.blink.Calls()
		upd := calls[len(calls)-1]
		if upd.Method != http.MethodPatch || upd.Path != "/v1/users/"+blinkUser+"/linked-accounts/la-1" || upd.Body["access_token"] != "new-access-token-canary" || upd.Body["requires_reauth"] != false {
			t.Fatalf("token re-push: %s %s %v", upd.Method, upd.Path, keys(upd.Body))
		}
		if _, ok := upd.Body["refresh_token"]; ok {
			t.Errorf("the refresh token was sent to Blink")
		}

		// needs_reauth: requires_reauth pushed (UserChanged, the hook's
		// entry point), and no token with it.
		if err := e.h.Store.SetUserStatus(ctx, u.ID, 0, store.StatusNeedsReauth); err != nil {
			t.Fatal(err)
		}
		cur, _ := e.h.Store.GetUser(ctx, u.ID)
		if err := e.surf.UserChanged(ctx, cur); err != nil {
			t.Fatal(err)
		}
		e.h.RunJobs(t)
		calls = e.blink.Calls()
		upd = calls[len(calls)-1]
		if upd.Body["requires_reauth"] != true {
			t.Fatalf("requires_reauth not pushed: %v", upd.Body)
		}
		if _, ok := upd.Body["access_token"]; ok {
			t.Errorf("a token was pushed for a login that needs reauth")
		}
		if n, err := e.surf.Sync(ctx); err != nil || n != 0 {
			t.Errorf("sync after the push: %d %v", n, err)
		}

		// Reconnecting clears it.
		e.connect(t, blinkUser, "alice")
		e.h.RunJobs(t)
		calls = e.blink.Calls()
		upd = calls[len(calls)-1]
		if upd.Body["requires_reauth"] != false || upd.Method != http.MethodPatch {
			t.Fatalf("reconnect did not clear requires_reauth: %s %v", upd.Method, upd.Body)
		}
		if ls := e.links(t); len(ls) != 1 {
			t.Errorf("reconnect created another link: %+v", ls)
		}
		e.h.AssertNoLeak(t, "new-refresh-token-canary", proxySecret, apiToken)
	})
}

func TestCommands(t *testing.T) {
	st := storetest.OpenStore(t, storetest.SQLite, nil)
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := blink.Command(context.Background(), args, blink.CommandEnv{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" },
			KnownConnector: func(n string) bool { return n == "testcrm" }}, st)
		return code, out.String(), errOut.String()
	}
	good := []string{"app", "create", "--name", "a1", "--connector", "testcrm", "--auth-id", "x1", "--proxy-secret-env", "S1", "--api-url", "https://api.blink.example/v2", "--api-token-env", "T1"}
	with := func(k, v string) []string {
		out := append([]string(nil), good...)
		for i := range out {
			if out[i] == k {
				out[i+1] = v
				return out
			}
		}
		return append(out, k, v)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"bad name", with("--name", "Bad Name"), 2, "--name"},
		{"unknown connector", with("--connector", "nope"), 2, "not a connector"},
		{"CONNECTD_ env", with("--proxy-secret-env", "CONNECTD_SESSION_KEYS"), 2, "CONNECTD_"},
		{"bad env name", with("--api-token-env", "lower"), 2, "--api-token-env"},
		{"url with credentials", with("--api-url", "https://u:p@blink.example"), 2, "--api-url"},
		{"bad update method", with("--update-method", "GET"), 2, "--update-method"},
		{"delete path without id", with("--delete-path", "/x"), 2, "{linked_account_id}"},
		{"no args", nil, 2, "Usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := run(tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.msg) {
				t.Fatalf("code %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.msg)
			}
		})
	}
	if code, out, errOut := run(good...); code != 0 || !strings.Contains(out, "/blink/a1") || !strings.Contains(errOut, "S1 is not set") {
		t.Fatalf("create: %d %q %q", code, out, errOut)
	}
	if code, _, errOut := run(good...); code != 1 || !strings.Contains(errOut, "exists already") {
		t.Fatalf("duplicate create: %d %q", code, errOut)
	}
	if code, out, _ := run("app", "list"); code != 0 || !strings.Contains(out, "a1") || !strings.Contains(out, "https://api.blink.example/v2") {
		t.Fatalf("list: %d %q", code, out)
	}
	app, _ := st.GetBlinkAppByName(context.Background(), "a1")
	if _, err := st.UpsertBlinkLink(context.Background(), &store.BlinkLink{AppID: app.ID, BlinkUserID: "u", UserID: "x", ExternalAccountID: "e"}); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := run("app", "delete", "--name", "a1"); code != 1 || !strings.Contains(errOut, "linked accounts") {
		t.Fatalf("delete with links: %d %q", code, errOut)
	}
	if code, out, _ := run("status"); code != 0 || !strings.Contains(out, "a1") || !strings.Contains(out, "S1 (unset)") {
		t.Fatalf("status: %d %q", code, out)
	}
	if code, _, errOut := run("app", "delete", "--name", "zz"); code != 1 || !strings.Contains(errOut, "no app") {
		t.Fatalf("delete unknown: %d %q", code, errOut)
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func jsonEqual(a, b map[string]any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func gauge(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	return metricValue(t, reg, name, labels)
}

func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	return metricValue(t, reg, name, labels)
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestAPIKeyConnect(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{connector: "keycrm"})
		ctx := context.Background()
		loc := e.start(t, blinkUser)
		if loc.Path != "/connect/apikey" || loc.Query().Get("state") == "" {
			t.Fatalf("start link sends the browser to %s, want connectd's API-key form", loc)
		}
		if r := e.h.Do(t, http.MethodGet, loc.String(), nil); r.Status != http.StatusOK || !bytes.Contains(r.Body, []byte(`name="apiKey"`)) {
			t.Fatalf("form page: %d %s", r.Status, r.Body)
		}
		resp, err := e.h.Client.PostForm(e.h.URL+"/connect/apikey", url.Values{"state": {loc.Query().Get("state")}, "apiKey": {goodKey}})
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Contains(page, []byte("You can now return to Blink")) {
			t.Fatalf("form submit: %d %s", resp.StatusCode, page)
		}
		e.h.RunJobs(t)
		link := e.onlyLink(t)
		calls := e.blink.Calls()
		if link.State != store.BlinkLinkLinked || len(calls) != 1 || calls[0].Body["external_account_id"] != "4711" {
			t.Fatalf("link %+v, calls %+v", link, calls)
		}
		if r := e.proxied(t, http.MethodDelete, "/linked-accounts/"+link.BlinkLinkedAccountID, proxySecret, blinkUser); r.Status != http.StatusOK {
			t.Fatalf("delete: %d %s", r.Status, r.Body)
		}
		if u, _ := e.h.Store.GetUser(ctx, link.UserID); u.APIKey != "" || u.Status != store.StatusRevoked {
			t.Fatalf("API key left after disconnect (status %s)", u.Status)
		}
		e.h.RunJobs(t)
		if ls := e.links(t); len(ls) != 0 {
			t.Fatalf("links after disconnect: %+v", ls)
		}
		e.h.AssertNoLeak(t, goodKey, proxySecret, apiToken)
	})
}

// The start link binds the flow to the browser that opened it: a callback
// replayed from another browser (no binding cookie) logs nobody in.
func TestCallbackFromAnotherBrowser(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{})
		loc := e.start(t, blinkUser)
		q := loc.Query()
		code := e.p.IssueCode("alice", q.Get("redirect_uri"), q.Get("code_challenge"), "")
		other := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := other.Get(e.h.URL + "/oauth/callback?code=" + url.QueryEscape(code) + "&state=" + url.QueryEscape(q.Get("state")))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("callback from another browser: %d", resp.StatusCode)
		}
		if ls := e.links(t); len(ls) != 0 {
			t.Fatalf("a link was created: %+v", ls)
		}
		if n := e.p.Count(connectortest.PathToken); n != 0 {
			t.Fatalf("the code was exchanged %d times", n)
		}
	})
}

// A call Blink refuses for good is not retried forever: the job fails
// visibly (metrics, blink status) and the login stays stored.
func TestBlinkRefusesAdd(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		for _, tc := range []struct {
			name   string
			refuse int
			noID   bool
		}{
			{"400", http.StatusBadRequest, false},
			{"answer without id", 0, true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, backend, envOptions{})
				e.blink.mu.Lock()
				e.blink.refuse, e.blink.noID = tc.refuse, tc.noID
				e.blink.mu.Unlock()
				e.connect(t, blinkUser, "alice")
				e.h.RunJobs(t)
				if n := e.h.RunJobs(t); n != 0 {
					t.Fatalf("a refused call was retried (%d jobs)", n)
				}
				link := e.onlyLink(t)
				if u, _ := e.h.Store.GetUser(context.Background(), link.UserID); link.State != store.BlinkLinkPending || u.Status != store.StatusActive {
					t.Fatalf("link %+v, user %s", link, u.Status)
				}
				if v := gauge(t, e.reg, "connectd_blink_jobs", map[string]string{"kind": blink.JobAddLink, "state": store.JobFailed}); v != 1 {
					t.Errorf("failed add jobs metric = %v, want 1", v)
				}
				var out bytes.Buffer
				if code := blink.Command(context.Background(), []string{"status"}, blink.CommandEnv{Stdout: &out, Stderr: io.Discard}, e.h.Store); code != 0 || !strings.Contains(out.String(), "failed") {
					t.Errorf("status does not show the failure:\n%s", out.String())
				}
			})
		}
	})
}
