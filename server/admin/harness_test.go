package admin_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connectd/connectd/core/auth"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/identity"
	"github.com/connectd/connectd/core/managed"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/refresh"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/encryption"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/admin"
	"github.com/connectd/connectd/server/appconnect"
)

// Canary secrets: seeded into the system; no response body may contain
// them (security.md case 24).
const (
	canaryAPIKey       = "CANARY-apikey-5d1f0c9e"
	canaryTenant       = "CANARY-tenant-77aa31"
	canaryRegion       = "CANARY-region-user-901"
	canaryClientSecret = "CANARY-client-secret-b42e"
	redirectURI        = "https://ringcentral.github.io/ringcentral-embeddable/redirect.html"
)

// The manifest of the test platforms: "acme" (API key, managed fields of
// both scopes, one non-secret) and "oauthcrm" (OAuth, hosts 127.0.0.1 so
// the fake providers pass the URL guard with private URLs allowed).
const testManifest = `{
  "serverUrl": "http://localhost:8080",
  "redirectUri": "` + redirectURI + `",
  "author": {"name": "test", "websiteUrl": "https://example.com"},
  "version": "0.0.1",
  "platforms": {
    "acme": {
      "name": "acme", "displayName": "Acme CRM",
      "auth": {"type": "apiKey", "apiKey": {"page": {"title": "Acme", "content": [
        {"const": "apiKey", "title": "API key", "type": "string", "required": true, "managed": true, "managedScope": "account", "hidden": true},
        {"const": "tenantId", "title": "Tenant", "type": "string", "required": true, "managed": true, "managedScope": "account", "hidden": true},
        {"const": "region", "title": "Region", "type": "string", "required": true, "managed": true, "managedScope": "user"},
        {"const": "siteName", "title": "Site", "type": "string", "required": false, "managed": true, "managedScope": "account", "managedFieldType": "dynamic"},
        {"const": "note", "title": "Note", "type": "string", "required": false}
      ]}}},
      "connectd": {"fields": {"siteName": {"secret": false}}}
    },
    "oauthcrm": {
      "name": "oauthcrm", "displayName": "OAuth CRM",
      "auth": {"type": "oauth", "oauth": {"authUrl": "http://127.0.0.1/authorize", "redirectUri": "` + redirectURI + `"}},
      "connectd": {"hosts": ["127.0.0.1"], "refresh": {"marginSeconds": 7200}}
    }
  }
}`

// acmeConnector logs in at the fake Acme API with Basic auth and the tenant
// and region as headers.
type acmeConnector struct{ api string }

func (acmeConnector) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthAPIKey, nil
}
func (acmeConnector) BasicAuth(k string) string {
	return base64.StdEncoding.EncodeToString([]byte(k + ":"))
}
func (a acmeConnector) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	r, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.api+"/me", nil)
	r.Header.Set("Authorization", req.AuthHeader)
	r.Header.Set("X-Tenant", req.AdditionalInfo["tenantId"])
	r.Header.Set("X-Region", req.AdditionalInfo["region"])
	resp, err := req.HTTPClient.Do(r)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return connector.UserInfoResult{Successful: false, ReturnMessage: &connector.ReturnMessage{Message: "Acme refused the credentials.", MessageType: "warning"}}, nil
	}
	var me struct{ ID, Name string }
	if err := json.NewDecoder(resp.Body).Decode(&me); err != nil {
		return connector.UserInfoResult{}, err
	}
	return connector.UserInfoResult{Successful: true, User: connector.PlatformUser{ID: me.ID, Name: me.Name}}, nil
}
func (acmeConnector) ManagedAuthOptions(_ context.Context, req connector.ManagedAuthOptionsRequest) ([]connector.Option, error) {
	// Options depend on the account's stored tenant (never echoed).
	if req.AccountValues["tenantId"] == "" {
		return []connector.Option{}, nil
	}
	return []connector.Option{{Value: "site-a", Label: "Site A"}, {Value: "site-b", Label: "Site B"}}, nil
}

// oauthConnector uses the "default" provider as its own app and reads the
// user at whichever provider issued the token.
type oauthConnector struct {
	def *connectortest.Provider
}

func (oauthConnector) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthOAuth, nil
}
func (o oauthConnector) OAuthInfo(context.Context, connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	return connector.OAuthInfo{ClientID: "default-client", ClientSecret: "default-secret", TokenURL: o.def.TokenURL(), AuthURL: o.def.AuthURL(), RedirectURI: redirectURI}, nil
}
func (o oauthConnector) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	// The token's issuer is the provider whose token URL the login used.
	base := o.def.URL()
	if req.Token != nil {
		if iss, ok := req.Token.Extra("test_issuer").(string); ok && iss != "" {
			base = iss
		}
	}
	r, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+connectortest.PathUserInfo, nil)
	r.Header.Set("Authorization", req.AuthHeader)
	resp, err := req.HTTPClient.Do(r)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return connector.UserInfoResult{Successful: false}, nil
	}
	var me struct{ ID, Name string }
	if err := json.NewDecoder(resp.Body).Decode(&me); err != nil {
		return connector.UserInfoResult{}, err
	}
	return connector.UserInfoResult{Successful: true, User: connector.PlatformUser{ID: me.ID, Name: me.Name}}, nil
}

// fakeRC is RingCentral's extension endpoint.
type fakeRC struct {
	srv   *httptest.Server
	mu    sync.Mutex
	users map[string]rcUser // token -> who
	calls atomic.Int64
	down  atomic.Bool
	seen  []string // Authorization headers received
}

type rcUser struct {
	Account, Ext, Name string
	Admin              bool
}

func newFakeRC(t *testing.T) *fakeRC {
	f := &fakeRC{users: map[string]rcUser{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		f.mu.Lock()
		f.seen = append(f.seen, r.Header.Get("Authorization"))
		f.mu.Unlock()
		if r.URL.Path != "/restapi/v1.0/account/~/extension/~" || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		if f.down.Load() {
			http.Error(w, `{"errorCode":"CMN-211"}`, http.StatusServiceUnavailable)
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		f.mu.Lock()
		u, known := f.users[tok]
		f.mu.Unlock()
		if !ok || !known {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errorCode":"TokenInvalid"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		// ids are JSON numbers, as RingCentral sends them.
		fmt.Fprintf(w, `{"id": %s, "name": %q, "account": {"id": %s}, "permissions": {"admin": {"enabled": %t}}}`, u.Ext, u.Name, u.Account, u.Admin)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeRC) add(token string, u rcUser) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users[token] = u
}

// fakeAcme is the Acme API: it accepts only the canary credentials.
type fakeAcme struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []http.Header
}

func newFakeAcme(t *testing.T) *fakeAcme {
	f := &fakeAcme{}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(canaryAPIKey+":"))
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Header.Clone())
		f.mu.Unlock()
		if r.Header.Get("Authorization") != want || r.Header.Get("X-Tenant") != canaryTenant || r.Header.Get("X-Region") == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		id := "acme-user-other"
		if r.Header.Get("X-Region") == canaryRegion {
			id = "acme-user-region"
		}
		fmt.Fprintf(w, `{"ID": %q, "Name": "Acme User"}`, id)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAcme) last() http.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		return nil
	}
	return f.reqs[len(f.reqs)-1]
}

// env is a running connectd with the App Connect and admin surfaces on a
// real store.
type env struct {
	t        *testing.T
	url      string
	client   *http.Client
	store    *gormstore.Store
	sessions *session.Manager
	rc       *fakeRC
	acme     *fakeAcme
	def      *connectortest.Provider // the connector's own OAuth app
	mgd      *connectortest.Provider // the admin-managed OAuth app
	refresh  *refresh.Service
	bodies   *bodyLog
}

// bodyLog keeps every response body our server sent, for the canary scan.
type bodyLog struct {
	mu     sync.Mutex
	bodies []string
}

type recordingTransport struct {
	base http.RoundTripper
	log  *bodyLog
}

func (rt recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := rt.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	rt.log.mu.Lock()
	rt.log.bodies = append(rt.log.bodies, r.Method+" "+r.URL.Path+"\n"+string(b))
	rt.log.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

func newEnv(t *testing.T, backend string) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, rc: newFakeRC(t), acme: newFakeAcme(t), bodies: &bodyLog{}}
	e.def = connectortest.NewProvider(t, connectortest.ProviderOptions{ClientID: "default-client", ClientSecret: "default-secret", RedirectURIs: []string{redirectURI}, AccessTokenTTL: time.Hour})
	e.mgd = connectortest.NewProvider(t, connectortest.ProviderOptions{ClientID: "managed-client", ClientSecret: canaryClientSecret, RedirectURIs: []string{redirectURI}, AccessTokenTTL: time.Hour, RotateRefreshTokens: true})
	e.store = storetest.OpenStore(t, backend, nil)

	set, err := manifest.Parse("test.json", []byte(testManifest))
	if err != nil {
		t.Fatalf("manifest: %v", err)
	}
	reg, err := registry.New(ctx, set, map[string]connector.Factory{
		"acme":     func(connector.Config) (connector.Connector, error) { return acmeConnector{api: e.acme.srv.URL}, nil },
		"oauthcrm": func(connector.Config) (connector.Connector, error) { return oauthConnector{def: e.def}, nil },
	}, registry.Config{})
	if err != nil {
		t.Fatalf("registry: %v", err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	ring, err := encryption.NewKeyRing(1, key)
	if err != nil {
		t.Fatal(err)
	}
	e.sessions, err = session.New(session.Options{Keys: ring, Issuer: "http://connectd.test", Sessions: e.store})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := managed.New(managed.Options{Store: e.store, Registry: reg, AllowPrivate: true, Logger: storetest.TestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	httpc := &http.Client{Timeout: 10 * time.Second, Transport: issuerTransport{}}
	tokenc := &http.Client{Timeout: 10 * time.Second, Transport: issuerTransport{}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	e.refresh, err = refresh.New(refresh.Options{Users: e.store, Jobs: e.store, Connectors: refresh.FromRegistry(reg), Apps: svc.Apps(), HTTP: tokenc, Logger: storetest.TestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := auth.New(auth.Options{
		Store: e.store, Registry: reg, Refresher: e.refresh, Apps: svc.Apps(), Managed: svc.Fields(),
		HTTP: httpc, TokenHTTP: tokenc, PublicURL: "http://connectd.test", AllowPrivate: true, Logger: storetest.TestLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := identity.New(identity.Options{RingCentralServer: e.rc.srv.URL, Tokens: e.sessions})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{Logger: storetest.TestLogger(t)},
		&appconnect.Surface{Engine: eng, Sessions: e.sessions, Manifests: set, Hosts: ids, Logger: storetest.TestLogger(t)},
		&admin.Surface{Identity: ids, Sessions: e.sessions, Managed: svc, Manifests: set, Logger: storetest.TestLogger(t)},
	)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Engine)
	t.Cleanup(ts.Close)
	e.url = ts.URL
	e.client = &http.Client{Timeout: 20 * time.Second, Transport: recordingTransport{base: http.DefaultTransport, log: e.bodies},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(e.scanCanaries)
	return e
}

// issuerTransport tags token responses with the provider that issued them
// (test_issuer), so the test connector reads the user at the right fake.
type issuerTransport struct{}

func (issuerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil || r.URL.Path != connectortest.PathToken || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if json.Unmarshal(b, &m) == nil {
		m["test_issuer"] = r.URL.Scheme + "://" + r.URL.Host
		b, _ = json.Marshal(m)
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// scanCanaries fails the test when any response body contains a seeded
// secret.
func (e *env) scanCanaries() {
	e.bodies.mu.Lock()
	defer e.bodies.mu.Unlock()
	canaries := []string{canaryAPIKey, canaryTenant, canaryRegion, canaryClientSecret}
	for _, b := range e.bodies.bodies {
		for _, c := range canaries {
			if strings.Contains(b, c) {
				e.t.Errorf("canary %q leaked in a response body:\n%.400s", c, b)
			}
		}
	}
}

type resp struct {
	Status int
	Body   map[string]any
	Raw    string
}

// do sends a request; hdr holds extra headers (X-RC-Access-Token, ...).
func (e *env) do(method, path string, body any, hdr map[string]string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	r, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer r.Body.Close()
	raw, _ := io.ReadAll(r.Body)
	out := resp{Status: r.StatusCode, Raw: string(raw)}
	_ = json.Unmarshal(raw, &out.Body)
	return out
}

func rcTok(tok string) map[string]string { return map[string]string{"X-RC-Access-Token": tok} }

// operatorToken issues a cdi_ identity token.
func (e *env) operatorToken(account, user string, isAdmin bool) string {
	e.t.Helper()
	tok, _, err := e.sessions.IssueIdentity(context.Background(), store.HostIdentity{Kind: identity.KindOperator, AccountID: account, UserID: user}, isAdmin, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// oauthLogin runs App Connect's OAuth login as provider user login at
// whichever provider the authorize URL names, with the given host token
// ("" = anonymous). Returns the /oauth-callback response.
func (e *env) oauthLogin(hostToken, login string) resp {
	e.t.Helper()
	hdr := map[string]string{}
	if hostToken != "" {
		hdr["X-RC-Access-Token"] = hostToken
	}
	r := e.do(http.MethodGet, "/oauth/authorize?platform=oauthcrm", nil, hdr)
	if r.Status != http.StatusOK {
		e.t.Fatalf("authorize: %d %s", r.Status, r.Raw)
	}
	authURL, _ := r.Body["authUrl"].(string)
	p := e.def
	if strings.HasPrefix(authURL, e.mgd.URL()) {
		p = e.mgd
	}
	cb, err := p.Authorize(context.Background(), authURL, login)
	if err != nil {
		e.t.Fatalf("provider authorize: %v", err)
	}
	// The callback carries the same host token: a flow started with a host
	// identity completes only for it.
	return e.do(http.MethodGet, "/oauth-callback?callbackUri="+url.QueryEscape(cb.String()), nil, hdr)
}

func getMap(m map[string]any, keys ...string) any {
	var cur any = m
	for _, k := range keys {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[k]
	}
	return cur
}

func strs(v any) []string {
	arr, _ := v.([]any)
	out := []string{}
	for _, x := range arr {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}
