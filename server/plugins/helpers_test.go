package plugins_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/connectd/connectd/connectors/dropbox"
	"github.com/connectd/connectd/connectors/dropbox/dropboxtest"
	"github.com/connectd/connectd/connectors/redact"
	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/plugin"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/manifests"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/plugins"
	"github.com/connectd/connectd/server/servertest"
)

const (
	boxClientID     = "dbx-client-id"
	boxClientSecret = "dbx-client-secret-canary-7f3a9c"
	rcTokenAcct1    = "rc-access-token-acct-1-canary"
	rcTokenAcct2    = "rc-access-token-acct-2-canary"
)

// fakeHosts is a tiny stand-in for core/identity's RingCentral verifier.
type fakeHosts map[string]store.HostIdentity

func (f fakeHosts) VerifyHost(_ context.Context, token string) (*store.HostIdentity, error) {
	if token == "rc-down" {
		return nil, failure.Newf(failure.UpstreamUnavailable, "RingCentral is unavailable.")
	}
	h, ok := f[token]
	if !ok {
		return nil, failure.Newf(failure.Unauthenticated, "Invalid RingCentral token.")
	}
	return &h, nil
}

func testHosts() fakeHosts {
	return fakeHosts{
		rcTokenAcct1: {Kind: "ringcentral", AccountID: "acct-1", UserID: "ext-11"},
		rcTokenAcct2: {Kind: "ringcentral", AccountID: "acct-2", UserID: "ext-21"},
	}
}

// callback is one POST the fake App Connect server received.
type callback struct {
	Body   map[string]any
	Header http.Header
}

// fakeAppConnect receives plugin callbacks. statuses are answered in
// order (then 200).
type fakeAppConnect struct {
	srv      *httptest.Server
	mu       sync.Mutex
	got      []callback
	statuses []int
}

func newFakeAppConnect(t *testing.T) *fakeAppConnect {
	f := &fakeAppConnect{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		f.mu.Lock()
		f.got = append(f.got, callback{Body: m, Header: r.Header.Clone()})
		status := http.StatusOK
		if len(f.statuses) > 0 {
			status, f.statuses = f.statuses[0], f.statuses[1:]
		}
		f.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAppConnect) callbacks() []callback {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]callback(nil), f.got...)
}

func (f *fakeAppConnect) failNext(statuses ...int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses = append(f.statuses, statuses...)
}

// env is a running connectd with the plugin surface.
type env struct {
	h    *servertest.Harness
	svc  *plugin.Service
	box  *dropboxtest.Fake
	ac   *fakeAppConnect
	reg  *prometheus.Registry
	surf *plugins.Surface
}

type envOptions struct {
	Clock          clock.Clock
	External       map[string]plugins.ExternalJWT
	Getenv         func(string) string
	StaticLicenses map[string]connector.PluginLicenseStatus
	BodyLimit      int64
}

func readManifest(t *testing.T, name string) []byte {
	t.Helper()
	b, err := fs.ReadFile(manifests.FS, name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// paidManifest is redact under another name with requireLicense.
const paidManifest = `{"platforms": {"redactpaid": {"name": "redactpaid", "displayName": "Paid redaction",
	"requireLicense": true, "supportedLogTypes": ["call"], "connectd": {"kind": "plugin"}}}}`

func newEnv(t *testing.T, backend string, o envOptions) *env {
	t.Helper()
	e := &env{box: dropboxtest.New(t, boxClientID, boxClientSecret), ac: newFakeAppConnect(t), reg: prometheus.NewRegistry()}
	origins, err := plugin.ParseOrigins([]string{"https://*.ringcentral.com", e.ac.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	e.h = servertest.New(t, servertest.Options{
		Backend: backend,
		Clock:   o.Clock,
		Manifests: [][]byte{
			readManifest(t, "redact.json"), readManifest(t, "dropbox.json"), []byte(paidManifest),
		},
		Connectors: map[string]connector.Factory{
			"redact":     redact.New,
			"redactpaid": redact.New,
			"dropbox": func(cfg connector.Config) (connector.Connector, error) {
				return dropbox.NewPlugin(dropbox.Config{
					ClientID: boxClientID, ClientSecret: boxClientSecret,
					AuthURL: e.box.AuthURL(), TokenURL: e.box.TokenURL(), APIURL: e.box.URL(), ContentURL: e.box.URL(),
					Logger: cfg.Logger,
				})
			},
		},
		Surfaces: func(h *servertest.Harness) []server.Surface {
			var err error
			e.svc, err = plugin.New(plugin.Options{
				Store: h.Store, Registry: h.Registry, Credentials: h.Engine.Refresh, HTTP: h.Engine.HTTP,
				Origins: origins, AllowPrivate: true, StaticLicenses: o.StaticLicenses, Clock: o.Clock,
				Logger: hclogFrom(h), Registerer: e.reg,
			})
			if err != nil {
				t.Fatalf("plugin.New: %v", err)
			}
			e.svc.RegisterJobs(h.Engine.Jobs)
			e.surf, err = plugins.New(plugins.Options{
				Plugins: e.svc, Auth: h.Engine.Auth, Connect: h.Engine.Connect, Sessions: h.Sessions,
				Store: h.Store, Hosts: testHosts(), PublicURL: h.URL, External: o.External, Getenv: o.Getenv,
				BodyLimit: o.BodyLimit, Clock: o.Clock, Logger: hclogFrom(h),
			})
			if err != nil {
				t.Fatalf("plugins.New: %v", err)
			}
			return []server.Surface{e.surf}
		},
	})
	return e
}

// register performs contract B's install and returns the plugin bearer.
func (e *env) register(t *testing.T, pluginID, rcToken, account string) string {
	t.Helper()
	r := e.h.Do(t, "POST", "/plugins/v2/"+pluginID+"/register", map[string]string{"rcAccessToken": rcToken, "rcAccountId": account})
	if r.Status != 200 {
		t.Fatalf("register %s: %d %s", pluginID, r.Status, r.Body)
	}
	tok, _ := r.JSON(t)["jwtToken"].(string)
	if tok == "" {
		t.Fatalf("register: no jwtToken: %s", r.Body)
	}
	return tok
}

// session creates an App Connect user and session (contract A caller).
func (e *env) session(t *testing.T, crmUser, account string) string {
	t.Helper()
	ctx := context.Background()
	host := store.HostIdentity{Kind: "ringcentral", AccountID: account, UserID: "ext-" + crmUser}
	u, err := e.h.Store.UpsertUser(ctx, &store.User{Platform: "testcrm", CRMUserID: crmUser, Host: host,
		AppConnectID: crmUser + "-testcrm", AccessToken: "crm-token-" + crmUser, Status: store.StatusActive})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := e.h.Sessions.IssueAppConnect(ctx, u.ID, u.AppConnectID, "testcrm", host)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// connectDropbox plays the browser behind the Connect button: open the
// authUrl (connectd sets the binding cookie and redirects to Dropbox),
// sign in at the fake, follow the redirect back to /oauth/callback.
func (e *env) connectDropbox(t *testing.T, authURL string) {
	t.Helper()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	r := e.h.Do(t, "GET", authURL, nil)
	if r.Status != http.StatusFound || !strings.HasPrefix(r.Header.Get("Location"), e.box.AuthURL()) {
		t.Fatalf("connect start: %d %s %s", r.Status, r.Header.Get("Location"), r.Body)
	}
	resp, err := noFollow.Get(r.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(back, e.h.URL+"/oauth/callback") {
		t.Fatalf("dropbox authorize: %d %s", resp.StatusCode, back)
	}
	done := e.h.Do(t, "GET", back, nil)
	if done.Status != 200 || !strings.Contains(string(done.Body), "close this window") {
		t.Fatalf("callback: %d %s", done.Status, done.Body)
	}
}

func (e *env) runJobs(t *testing.T) {
	t.Helper()
	e.h.RunJobs(t)
}

func gauge(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
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
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
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

func str(v any) string { return fmt.Sprint(v) }

// hclogFrom logs into the harness' buffer, so AssertNoLeak sees it too.
func hclogFrom(h *servertest.Harness) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "connectd", Level: hclog.Debug, Output: h.Logs, JSONFormat: true})
}
