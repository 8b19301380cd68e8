// Package conformance is the conformance kit's entry point: Run puts a
// connector through the real engine (server/servertest: real store, the
// production wiring, a real listener) against the kit's fake OAuth
// provider or a fake CRM, and reports every promise a connector makes as
// its own subtest, so an author sees exactly which one broke:
//
//	OAuth:   login, user info, refresh, concurrent refresh, logout,
//	         faults/{token 5xx at login, 429 on refresh, slow refresh,
//	         invalid_grant, 200 with error, lost response}
//	API key: login, user info, wrong key, validation, logout,
//	         faults/{5xx, 429, slow, lost response}
//
// It is a package of its own (not part of core/connectortest) because it
// imports server/servertest, which imports the engine; the engine's own
// internal tests import core/connectortest, and an import of the engine
// from there would be a cycle.
//
// The connector is pointed at the kit through its test settings
// (Options.Env): every OAuth path and every API path lives at Kit.URL, a
// front server that forwards the connector's OAuth paths (Options.OAuthPaths)
// to the provider and everything else to Kit.CRM, where Options.CRM
// registers the service's user API. Handlers find the signed-in user with
// Kit.OAuthUser (bearer tokens the provider issued) or Kit.APIKeyUser (keys
// the kit handed out).
package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/refresh"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/server/app"
	"github.com/connectd/connectd/server/servertest"
)

// ClientRedirect is the App Connect client redirect URI the kit logs in
// with; the kit registers it at the provider and allows it at the engine.
const ClientRedirect = "https://client.conformance.test/redirect.html"

// upstreamTimeout is the engine's token-request timeout during the kit's
// run: short, so the "slow" fault ends quickly.
const upstreamTimeout = 750 * time.Millisecond

// Options describe the connector under test.
type Options struct {
	// Platform is the platform name (the manifest's key under "platforms").
	Platform string
	// Factory builds the connector (what the connector map holds).
	Factory connector.Factory
	// Manifest is the connector's manifest document (manifests/NAME.json).
	Manifest []byte
	// ManifestFor, when set, replaces Manifest: a manifest that needs the
	// kit's URLs (a declarative one names its endpoints).
	ManifestFor func(k *Kit) []byte
	// AuthType is the manifest's auth.type when ManifestFor is used
	// (default oauth); with Manifest it is read from the manifest.
	AuthType connector.AuthType
	// ManifestDir, when set, makes the engine load its manifests from
	// this directory as operator manifests (CONNECTD_MANIFESTS_DIR), the
	// way a declarative connector is deployed; ManifestFor writes the
	// file there.
	ManifestDir string
	// Declarative, when set, builds connectors of declarative platforms
	// (registry.Config.Declarative); Factory may then be nil.
	Declarative registry.DeclarativeFactory
	// Backend is "sqlite" (default) or "postgres" (see storetest).
	Backend string
	// Env returns the settings the connector reads (client id and secret,
	// test base URLs pointing at k.URL). The kit's client id and secret
	// are k.ClientID and k.ClientSecret.
	Env func(k *Kit) map[string]string
	// CRM registers the service's API on k.CRM: at least the user-info
	// call the connector makes, answering as the service documents for
	// the user k.OAuthUser / k.APIKeyUser finds (401 otherwise).
	CRM func(k *Kit)
	// Hostname is sent with logins (the user's CRM host), if the
	// connector needs one.
	Hostname string

	// OAuth connectors.

	// Provider configures the fake provider: ClientAuth, RequirePKCE,
	// RotateRefreshTokens, ReuseDetection, AccessTokenTTL (default 1h).
	// The kit sets ClientID, ClientSecret, RedirectURIs, Users and Clock.
	Provider connectortest.ProviderOptions
	// OAuthPaths maps the connector's OAuth paths at k.URL to the
	// provider's (connectortest.PathAuthorize, PathToken, PathRevoke).
	// Nil: the provider's own paths.
	OAuthPaths map[string]string
	// TokenExtra adds fields to every successful token answer (for
	// example Pipedrive's api_domain).
	TokenExtra func(k *Kit) map[string]any

	// API-key connectors.

	// APIKeyLogin returns the /apiKeyLogin body fields (besides platform)
	// logging in with key; nil sends {"apiKey": key, "hostname": Hostname}.
	APIKeyLogin func(k *Kit, key string) map[string]any
}

// Kit is one conformance run's world.
type Kit struct {
	// URL is the front server: the connector's OAuth paths go to Provider,
	// every other path to CRM.
	URL      string
	Provider *connectortest.Provider
	CRM      *connectortest.CRM
	// Harness is the running connectd (nil while Options.Env runs).
	Harness *servertest.Harness
	Clock   *clock.Fake
	// ClientID and ClientSecret are the OAuth client the provider knows.
	ClientID, ClientSecret string

	opts  Options
	front *front
	auth  connector.AuthType

	mu   sync.Mutex
	keys map[string]string // api key -> login
}

// logins name every user the kit signs in as, one per subtest, so one
// subtest's state (back-off, revocation) never touches another's.
func logins(auth connector.AuthType) []string {
	if auth == connector.AuthAPIKey {
		return []string{"login", "validation", "logout", "k5xx", "rate", "slow", "lost"}
	}
	return []string{"login", "refresh", "concurrent", "logout", "login5xx", "rate", "slow", "grant", "err200", "lost"}
}

// Run runs the connector through the engine; see the package comment for
// the subtests.
func Run(t *testing.T, o Options) *Kit {
	t.Helper()
	if o.Platform == "" || (o.Factory == nil && o.Declarative == nil) || (len(o.Manifest) == 0 && o.ManifestFor == nil) {
		t.Fatal("conformance: Options need Platform, Factory (or Declarative) and Manifest (or ManifestFor)")
	}
	k := &Kit{Clock: clock.NewFake(time.Now()), keys: map[string]string{},
		ClientID: "conformance-client", ClientSecret: "conformance-secret-" + random()}
	// The auth type decides the provider's users before the manifest
	// (which may need the kit's URL) exists: read it from a first parse
	// when possible, else from the connector map entry's kind.
	authType := connector.AuthOAuth
	if len(o.Manifest) > 0 {
		set, err := manifest.Parse(o.Platform+".json", o.Manifest)
		if err != nil {
			t.Fatalf("conformance: the manifest does not validate: %v", err)
		}
		p, ok := set.Platform(o.Platform)
		if !ok {
			t.Fatalf("conformance: the manifest has no platform %q", o.Platform)
		}
		authType = p.AuthType()
	} else if o.AuthType != "" {
		authType = o.AuthType
	}
	k.auth = authType

	users := map[string]connectortest.ProviderUser{}
	k.opts = o
	for i, l := range logins(k.auth) {
		users[l] = connectortest.ProviderUser{
			ID: fmt.Sprintf("%d", 7100+i), Name: "Conformance " + strings.ToUpper(l[:1]) + l[1:],
			Email: l + "@conformance.test", Timezone: "Europe/Berlin",
		}
	}
	po := o.Provider
	po.ClientID, po.ClientSecret = k.ClientID, k.ClientSecret
	po.RedirectURIs = []string{ClientRedirect}
	po.Users = users
	po.Clock = k.Clock
	if po.AccessTokenTTL == 0 {
		po.AccessTokenTTL = time.Hour
	}
	k.Provider = connectortest.NewProvider(t, po)
	k.CRM = connectortest.NewCRM(t)
	paths := o.OAuthPaths
	if paths == nil {
		paths = map[string]string{connectortest.PathAuthorize: connectortest.PathAuthorize, connectortest.PathToken: connectortest.PathToken, connectortest.PathRevoke: connectortest.PathRevoke}
	}
	var extra func() map[string]any
	if o.TokenExtra != nil {
		extra = func() map[string]any { return o.TokenExtra(k) }
	}
	k.front = newFront(t, k.Provider, k.CRM, paths, extra)
	k.URL = k.front.srv.URL
	if o.CRM != nil {
		o.CRM(k)
	}
	env := map[string]string{}
	if o.Env != nil {
		env = o.Env(k)
	}
	getenv := func(key string) string { return env[key] }
	doc := o.Manifest
	if o.ManifestFor != nil {
		doc = o.ManifestFor(k)
	}
	factories := map[string]connector.Factory{}
	if o.Factory != nil {
		factories[o.Platform] = o.Factory
	}
	var set *manifest.Set
	var err error
	if o.ManifestDir != "" {
		set, err = manifest.Load(fstest.MapFS{}, o.ManifestDir)
	} else {
		set, err = manifest.Parse(o.Platform+".json", doc)
	}
	if err != nil {
		t.Fatalf("conformance: the manifest does not validate: %v", err)
	}
	p, ok := set.Platform(o.Platform)
	if !ok {
		t.Fatalf("conformance: the manifests have no platform %q", o.Platform)
	}
	if p.AuthType() != k.auth {
		t.Fatalf("conformance: auth.type %q: set Options.AuthType to match when using ManifestFor", p.AuthType())
	}
	// servertest builds its registry from Manifests and Connectors; the
	// kit builds the one the engine uses itself, so that declarative
	// connectors and operator manifest directories go through the
	// production registry code.
	reg, err := registry.New(context.Background(), set, factories, registry.Config{Getenv: getenv, Declarative: o.Declarative})
	if err != nil {
		t.Fatalf("conformance: registry: %v", err)
	}
	k.Harness = servertest.New(t, servertest.Options{
		Backend:      o.Backend,
		Clock:        k.Clock,
		Getenv:       getenv,
		RedirectURIs: []string{ClientRedirect},
		Engine: func(h *servertest.Harness, eo *app.EngineOptions) {
			eo.UpstreamTimeout = upstreamTimeout
			eo.Manifests, eo.Registry = set, reg
			h.Manifests, h.Registry = set, reg
		},
	})
	e, err := reg.Get(o.Platform)
	if err != nil {
		t.Fatalf("conformance: %s is not available: %v (check Options.Env)", o.Platform, err)
	}
	c := e.Connector

	switch k.auth {
	case connector.AuthOAuth:
		k.runOAuth(t, c, p)
	case connector.AuthAPIKey:
		k.runAPIKey(t)
	default:
		t.Fatalf("conformance: auth.type %q: the kit tests oauth and apiKey connectors", k.auth)
	}
	return k
}

func random() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// User returns the provider account of a kit login name.
func (k *Kit) User(login string) connectortest.ProviderUser {
	return k.Provider.Options().Users[login]
}

// OAuthUser returns the account whose valid (issued, unexpired, unrevoked)
// access token r carries as "Authorization: Bearer".
func (k *Kit) OAuthUser(r *http.Request) (connectortest.ProviderUser, bool) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return connectortest.ProviderUser{}, false
	}
	return k.TokenUser(tok)
}

// TokenUser returns the account of a valid access token.
func (k *Kit) TokenUser(tok string) (connectortest.ProviderUser, bool) {
	info, ok := k.Provider.TokenInfo(tok)
	if !ok || info.Kind != connectortest.KindAccessToken || info.Revoked ||
		(!info.ExpiresAt.IsZero() && !k.Clock.Now().Before(info.ExpiresAt)) {
		return connectortest.ProviderUser{}, false
	}
	u, ok := k.Provider.Options().Users[info.Login]
	return u, ok
}

// APIKeyUser returns the account an API key the kit handed out belongs to.
func (k *Kit) APIKeyUser(key string) (connectortest.ProviderUser, bool) {
	k.mu.Lock()
	login, ok := k.keys[key]
	k.mu.Unlock()
	if !ok {
		return connectortest.ProviderUser{}, false
	}
	return k.User(login), true
}

// APIKey returns the API key of a kit login (made on first use).
func (k *Kit) APIKey(login string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	for key, l := range k.keys {
		if l == login {
			return key
		}
	}
	key := "ck-" + login + "-" + random()
	k.keys[key] = login
	return key
}

// Revoke revokes token at the provider (RFC 7009, as the kit's client),
// for fake endpoints that end a grant their own way (Clio's deauthorize).
func (k *Kit) Revoke(ctx context.Context, token string) error {
	form := url.Values{"token": {token}}
	body := k.Provider.Options().ClientAuth == connectortest.ClientAuthBody
	if body {
		form.Set("client_id", k.ClientID)
		form.Set("client_secret", k.ClientSecret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, k.Provider.RevokeURL(), strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if !body {
		req.SetBasicAuth(url.QueryEscape(k.ClientID), url.QueryEscape(k.ClientSecret))
	}
	resp, err := k.Provider.Client().Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("conformance: revoke answered %d", resp.StatusCode)
	}
	return nil
}

// FailCRM makes the next request to a CRM path (not an OAuth path) fail
// with fault (Status5xx, TooMany429, Slow, LostResponse).
func (k *Kit) FailCRM(f connectortest.Fault) { k.front.failCRM(f) }

// ---- the engine as App Connect's client drives it ----

func bearer(jwt string) []string { return []string{"Authorization", "Bearer " + jwt} }

// stored reads the record a session JWT names.
func (k *Kit) stored(t *testing.T, jwt string) *store.User {
	t.Helper()
	c, err := k.Harness.Sessions.VerifyAppConnect(context.Background(), jwt)
	if err != nil {
		t.Fatalf("conformance: the session token does not verify: %v", err)
	}
	u, err := k.Harness.Store.GetUser(context.Background(), c.Subject)
	if err != nil {
		t.Fatalf("conformance: reading the stored user: %v", err)
	}
	return u
}

// oauthLogin runs App Connect's OAuth login: /oauth/authorize, the
// provider's sign-in as login, /oauth-callback. It returns the response of
// the callback.
func (k *Kit) oauthLogin(t *testing.T, login string) servertest.Response {
	t.Helper()
	q := url.Values{"platform": {k.opts.Platform}, "redirect_uri": {ClientRedirect}}
	if k.opts.Hostname != "" {
		q.Set("hostname", k.opts.Hostname)
	}
	r := k.Harness.Do(t, http.MethodGet, "/oauth/authorize?"+q.Encode(), nil, "Accept", "application/json")
	if r.Status != http.StatusOK {
		t.Fatalf("conformance: /oauth/authorize: %d %s", r.Status, r.Body)
	}
	authURL, _ := r.JSON(t)["authUrl"].(string)
	u, err := url.Parse(authURL)
	if err != nil || authURL == "" {
		t.Fatalf("conformance: /oauth/authorize answered no authUrl: %s", r.Body)
	}
	// The connector's authorize URL must be at the kit (k.URL plus one of
	// its OAuth paths, or the provider itself): the browser step is played
	// at the provider.
	atFront := u.Scheme+"://"+u.Host == k.URL && k.front.paths[u.Path] == connectortest.PathAuthorize
	atProvider := u.Scheme+"://"+u.Host == k.Provider.URL() && u.Path == connectortest.PathAuthorize
	if !atFront && !atProvider {
		t.Fatalf("conformance: the connector's authorize URL %s://%s%s is not the kit's (%s + an OAuthPaths entry mapped to %s): check Options.Env and OAuthPaths",
			u.Scheme, u.Host, u.Path, k.URL, connectortest.PathAuthorize)
	}
	pu, _ := url.Parse(k.Provider.AuthURL())
	pu.RawQuery = u.RawQuery
	redirect, err := k.Provider.Authorize(context.Background(), pu.String(), login)
	if err != nil {
		t.Fatalf("conformance: the provider refused the authorization request: %v", err)
	}
	return k.Harness.Do(t, http.MethodGet, "/oauth-callback?callbackUri="+url.QueryEscape(redirect.String()), nil)
}

// mustOAuthLogin logs in and returns the session JWT.
func (k *Kit) mustOAuthLogin(t *testing.T, login string) string {
	t.Helper()
	r := k.oauthLogin(t, login)
	if r.Status != http.StatusOK {
		t.Fatalf("conformance: login as %s: /oauth-callback answered %d %s", login, r.Status, r.Body)
	}
	jwt, _ := r.JSON(t)["jwtToken"].(string)
	if jwt == "" {
		t.Fatalf("conformance: login as %s: no jwtToken: %s", login, r.Body)
	}
	return jwt
}

func (k *Kit) apiKeyBody(key string) map[string]any {
	var body map[string]any
	if k.opts.APIKeyLogin != nil {
		body = k.opts.APIKeyLogin(k, key)
	} else {
		body = map[string]any{"apiKey": key}
		if k.opts.Hostname != "" {
			body["hostname"] = k.opts.Hostname
		}
	}
	body["platform"] = k.opts.Platform
	return body
}

func (k *Kit) apiKeyLogin(t *testing.T, key string) servertest.Response {
	t.Helper()
	return k.Harness.Do(t, http.MethodPost, "/apiKeyLogin", k.apiKeyBody(key))
}

func (k *Kit) mustAPIKeyLogin(t *testing.T, login string) string {
	t.Helper()
	r := k.apiKeyLogin(t, k.APIKey(login))
	if r.Status != http.StatusOK {
		t.Fatalf("conformance: API-key login as %s: %d %s", login, r.Status, r.Body)
	}
	jwt, _ := r.JSON(t)["jwtToken"].(string)
	if jwt == "" {
		t.Fatalf("conformance: API-key login as %s: no jwtToken: %s", login, r.Body)
	}
	return jwt
}

// checkUser compares the stored record with the provider account.
func (k *Kit) checkUser(t *testing.T, u *store.User, login string) {
	t.Helper()
	want := k.User(login)
	if u.CRMUserID != want.ID {
		t.Errorf("stored CRM user id %q, want the service's id %q (UserInfo's User.ID)", u.CRMUserID, want.ID)
	}
	if u.AppConnectID != want.ID+"-"+k.opts.Platform {
		t.Errorf("stored App Connect id %q, want %q", u.AppConnectID, want.ID+"-"+k.opts.Platform)
	}
	if u.DisplayName != want.Name {
		t.Errorf("stored name %q, want the service's %q (UserInfo's User.Name)", u.DisplayName, want.Name)
	}
	if u.Platform != k.opts.Platform || u.Status != store.StatusActive {
		t.Errorf("stored platform %q status %s, want %q active", u.Platform, u.Status, k.opts.Platform)
	}
}

// loggedIn checks a login the fault subtests make went through (who the
// user is, is the "user info" subtest's business).
func (k *Kit) loggedIn(t *testing.T, jwt string) {
	t.Helper()
	if u := k.stored(t, jwt); u.Status != store.StatusActive {
		t.Errorf("status %s after a login, want active", u.Status)
	}
}

// refreshRequests returns the refresh_token grants the provider received.
func (k *Kit) refreshRequests() []connectortest.RecordedRequest {
	var out []connectortest.RecordedRequest
	for _, r := range k.Provider.TokenRequests() {
		if r.Grant() == "refresh_token" {
			out = append(out, r)
		}
	}
	return out
}

// expire moves the clock past the access token's lifetime.
func (k *Kit) expire() {
	k.Clock.Advance(k.Provider.Options().AccessTokenTTL + time.Minute)
}

// validate calls /authValidation, which refreshes a due token.
func (k *Kit) validate(t *testing.T, jwt string) servertest.Response {
	t.Helper()
	return k.Harness.Do(t, http.MethodGet, "/authValidation", nil, bearer(jwt)...)
}

func (k *Kit) runOAuth(t *testing.T, c connector.Connector, p *manifest.Platform) {
	var canaries []string
	addCanary := func(u *store.User) { canaries = append(canaries, u.AccessToken, u.RefreshToken) }

	t.Run("login", func(t *testing.T) {
		before := len(k.Provider.TokenRequests())
		jwt := k.mustOAuthLogin(t, "login")
		reqs := k.Provider.TokenRequests()[before:]
		if len(reqs) != 1 || reqs[0].Grant() != "authorization_code" {
			t.Fatalf("%d token requests at login, want exactly one authorization_code grant", len(reqs))
		}
		if got := reqs[0].Form.Get("redirect_uri"); got != ClientRedirect {
			t.Errorf("token request redirect_uri %q, want the authorize request's %q", got, ClientRedirect)
		}
		if pkce := reqs[0].Form.Get("code_verifier") != ""; pkce != p.PKCE() {
			t.Errorf("token request carries a PKCE verifier: %v, manifest says PKCE %v", pkce, p.PKCE())
		}
		u := k.stored(t, jwt)
		addCanary(u)
		active := k.Provider.ActiveAccessTokens()
		if u.AccessToken == "" || !slices.Contains(active, u.AccessToken) {
			t.Errorf("the stored access token is not the one the provider issued")
		}
		if u.RefreshToken == "" {
			t.Errorf("no refresh token stored")
		}
	})
	t.Run("user info", func(t *testing.T) {
		r := k.oauthLogin(t, "login")
		if r.Status != http.StatusOK {
			t.Fatalf("/oauth-callback: %d %s", r.Status, r.Body)
		}
		body := r.JSON(t)
		if body["name"] != k.User("login").Name {
			t.Errorf("login answered name %v, want %q", body["name"], k.User("login").Name)
		}
		jwt, _ := body["jwtToken"].(string)
		u := k.stored(t, jwt)
		k.checkUser(t, u, "login")
		addCanary(u)
	})
	t.Run("refresh", func(t *testing.T) {
		jwt := k.mustOAuthLogin(t, "refresh")
		first := k.stored(t, jwt)
		before := len(k.refreshRequests())
		if r := k.validate(t, jwt); r.Status != http.StatusOK {
			t.Fatalf("/authValidation with a fresh token: %d %s", r.Status, r.Body)
		}
		if n := len(k.refreshRequests()) - before; n != 0 {
			t.Fatalf("%d refreshes of a token that is not due, want 0", n)
		}
		k.expire()
		r := k.validate(t, jwt)
		if r.Status != http.StatusOK || r.JSON(t)["successful"] != true {
			t.Fatalf("/authValidation after expiry: %d %s", r.Status, r.Body)
		}
		reqs := k.refreshRequests()[before:]
		if len(reqs) != 1 {
			t.Fatalf("%d refresh requests after expiry, want 1", len(reqs))
		}
		if reqs[0].Form.Get("refresh_token") != first.RefreshToken {
			t.Errorf("the refresh did not present the stored refresh token")
		}
		after := k.stored(t, jwt)
		addCanary(after)
		if after.AccessToken == first.AccessToken || !slices.Contains(k.Provider.ActiveAccessTokens(), after.AccessToken) {
			t.Errorf("the refreshed access token was not stored")
		}
		if after.Status != store.StatusActive {
			t.Errorf("status %s after a refresh, want active", after.Status)
		}
	})
	t.Run("concurrent refresh", func(t *testing.T) {
		jwt := k.mustOAuthLogin(t, "concurrent")
		k.expire()
		before := len(k.refreshRequests())
		const callers = 16
		statuses := make([]int, callers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				statuses[i] = k.validate(t, jwt).Status
			}()
		}
		close(start)
		wg.Wait()
		for i, s := range statuses {
			if s != http.StatusOK {
				t.Errorf("caller %d: /authValidation answered %d", i, s)
			}
		}
		if n := len(k.refreshRequests()) - before; n != 1 {
			t.Errorf("%d callers on one expired token made %d refresh requests, want exactly 1", callers, n)
		}
		addCanary(k.stored(t, jwt))
	})
	t.Run("logout", func(t *testing.T) {
		jwt := k.mustOAuthLogin(t, "logout")
		u := k.stored(t, jwt)
		addCanary(u)
		r := k.Harness.Do(t, http.MethodPost, "/unAuthorize", nil, bearer(jwt)...)
		if r.Status != http.StatusOK || r.JSON(t)["successful"] != true {
			t.Fatalf("/unAuthorize: %d %s", r.Status, r.Body)
		}
		if _, ok := c.(connector.Unauthorizer); ok {
			if !k.Provider.IsRevoked(u.AccessToken) && !k.Provider.FamilyRevoked(u.AccessToken) {
				t.Errorf("the connector implements Unauthorize but the provider saw no revocation of the user's grant")
			}
		}
		gone, err := k.Harness.Store.GetUser(context.Background(), u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if gone.Status != store.StatusRevoked || gone.AccessToken != "" || gone.RefreshToken != "" {
			t.Errorf("after logout: status %s, credentials cleared %v", gone.Status, gone.AccessToken == "" && gone.RefreshToken == "")
		}
		if r := k.validate(t, jwt); r.Status != http.StatusUnauthorized {
			t.Errorf("the session after logout: %d, want 401", r.Status)
		}
	})
	t.Run("faults", func(t *testing.T) {
		t.Run("token endpoint 5xx at login", func(t *testing.T) {
			k.Provider.FailNext(connectortest.PathToken, connectortest.Status5xx(503), 1)
			r := k.oauthLogin(t, "login5xx")
			if r.Status < 500 || strings.Contains(string(r.Body), "jwtToken") {
				t.Errorf("login with the token endpoint answering 503: %d %s, want a 5xx without a session", r.Status, r.Body)
			}
			jwt := k.mustOAuthLogin(t, "login5xx")
			k.loggedIn(t, jwt)
		})
		temporary := func(name, login string, f connectortest.Fault, wantStatus store.UserStatus) {
			t.Run(name, func(t *testing.T) {
				jwt := k.mustOAuthLogin(t, login)
				before := k.stored(t, jwt)
				k.expire()
				n := len(k.refreshRequests())
				k.Provider.FailNext(connectortest.PathToken, f, 1)
				r := k.validate(t, jwt)
				if r.Status != http.StatusServiceUnavailable {
					t.Errorf("/authValidation with the refresh failing (%s): %d %s, want 503", f, r.Status, r.Body)
				}
				if got := len(k.refreshRequests()) - n; got != 1 {
					t.Errorf("%d refresh requests, want exactly 1 (no automatic replay)", got)
				}
				kept := k.stored(t, jwt)
				if kept.RefreshToken != before.RefreshToken || kept.AccessToken != before.AccessToken {
					t.Errorf("a temporary failure changed the stored tokens")
				}
				if kept.Status != wantStatus {
					t.Errorf("status %s, want %s", kept.Status, wantStatus)
				}
				if wantStatus == store.StatusActive {
					// Recovers once the back-off has passed.
					k.Clock.Advance(refresh.DefaultFailureBackoff + 30*time.Second)
					if r := k.validate(t, jwt); r.Status != http.StatusOK {
						t.Errorf("after the back-off: %d %s", r.Status, r.Body)
					}
				}
				addCanary(k.stored(t, jwt))
			})
		}
		temporary("429 on refresh", "rate", connectortest.TooMany429(time.Second), store.StatusActive)
		temporary("slow refresh", "slow", connectortest.Slow(time.Minute), store.StatusRefreshUncertain)
		temporary("lost response", "lost", connectortest.LostResponse(), store.StatusRefreshUncertain)
		t.Run("invalid_grant", func(t *testing.T) {
			jwt := k.mustOAuthLogin(t, "grant")
			k.expire()
			k.Provider.FailNext(connectortest.PathToken, connectortest.InvalidGrant(), 1)
			r := k.validate(t, jwt)
			if r.Status != http.StatusUnauthorized || r.JSON(t)["errorCode"] != "CRM_SESSION_REVOKED" {
				t.Fatalf("invalid_grant: %d %s, want 401 CRM_SESSION_REVOKED", r.Status, r.Body)
			}
			if st := k.stored(t, jwt).Status; st != store.StatusNeedsReauth {
				t.Errorf("status %s, want needs_reauth", st)
			}
			n := len(k.refreshRequests())
			if r := k.validate(t, jwt); r.Status != http.StatusUnauthorized {
				t.Errorf("again: %d, want 401", r.Status)
			}
			if len(k.refreshRequests()) != n {
				t.Errorf("a refused grant was presented again")
			}
		})
		t.Run("200 with error", func(t *testing.T) {
			jwt := k.mustOAuthLogin(t, "err200")
			before := k.stored(t, jwt)
			k.expire()
			k.Provider.FailNext(connectortest.PathToken, connectortest.ErrorIn200(), 1)
			r := k.validate(t, jwt)
			if r.Status < 500 || strings.Contains(string(r.Body), `"successful":true`) {
				t.Errorf("a 200 token answer carrying an error: %d %s, want a 5xx (it is not a token)", r.Status, r.Body)
			}
			kept := k.stored(t, jwt)
			if kept.AccessToken != before.AccessToken || kept.RefreshToken != before.RefreshToken {
				t.Errorf("a 200-with-error answer replaced the stored tokens")
			}
			if n := len(k.refreshRequests()); n == 0 {
				t.Errorf("no refresh request was made")
			}
		})
	})
	k.Harness.AssertNoLeak(t, append(canaries, k.ClientSecret)...)
}

func (k *Kit) runAPIKey(t *testing.T) {
	var canaries []string
	t.Run("login", func(t *testing.T) {
		key := k.APIKey("login")
		canaries = append(canaries, key)
		if given, _ := k.apiKeyBody(key)["apiKey"].(string); given != "" {
			canaries = append(canaries, given)
		}
		r := k.apiKeyLogin(t, key)
		if r.Status != http.StatusOK {
			t.Fatalf("/apiKeyLogin: %d %s", r.Status, r.Body)
		}
		jwt, _ := r.JSON(t)["jwtToken"].(string)
		if jwt == "" {
			t.Fatalf("/apiKeyLogin answered no jwtToken: %s", r.Body)
		}
		u := k.stored(t, jwt)
		if given, _ := k.apiKeyBody(key)["apiKey"].(string); u.APIKey != given {
			t.Errorf("the stored API key is not the one the login gave (its apiKey field)")
		}
		if u.Status != store.StatusActive {
			t.Errorf("status %s, want active", u.Status)
		}
	})
	t.Run("user info", func(t *testing.T) {
		r := k.apiKeyLogin(t, k.APIKey("login"))
		if r.Status != http.StatusOK {
			t.Fatalf("/apiKeyLogin: %d %s", r.Status, r.Body)
		}
		body := r.JSON(t)
		if body["name"] != k.User("login").Name {
			t.Errorf("login answered name %v, want %q", body["name"], k.User("login").Name)
		}
		jwt, _ := body["jwtToken"].(string)
		k.loggedIn(t, jwt)
	})
	t.Run("wrong key", func(t *testing.T) {
		wrong := "ck-unknown-" + random()
		canaries = append(canaries, wrong)
		r := k.apiKeyLogin(t, wrong)
		body := r.JSON(t)
		if r.Status != http.StatusBadRequest || body["jwtToken"] != nil || body["returnMessage"] == nil {
			t.Errorf("login with a key the service refuses: %d %s, want 400 with a returnMessage (UserInfo: Successful=false, not an error)", r.Status, r.Body)
		}
	})
	t.Run("validation", func(t *testing.T) {
		jwt := k.mustAPIKeyLogin(t, "validation")
		canaries = append(canaries, k.APIKey("validation"))
		r := k.validate(t, jwt)
		if r.Status != http.StatusOK || r.JSON(t)["successful"] != true {
			t.Errorf("/authValidation: %d %s", r.Status, r.Body)
		}
	})
	t.Run("logout", func(t *testing.T) {
		jwt := k.mustAPIKeyLogin(t, "logout")
		canaries = append(canaries, k.APIKey("logout"))
		u := k.stored(t, jwt)
		r := k.Harness.Do(t, http.MethodPost, "/unAuthorize", nil, bearer(jwt)...)
		if r.Status != http.StatusOK || r.JSON(t)["successful"] != true {
			t.Fatalf("/unAuthorize: %d %s", r.Status, r.Body)
		}
		gone, err := k.Harness.Store.GetUser(context.Background(), u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if gone.Status != store.StatusRevoked || gone.APIKey != "" || len(gone.Secrets) != 0 {
			t.Errorf("after logout: status %s, key cleared %v, secrets cleared %v", gone.Status, gone.APIKey == "", len(gone.Secrets) == 0)
		}
		if r := k.validate(t, jwt); r.Status != http.StatusUnauthorized {
			t.Errorf("the session after logout: %d, want 401", r.Status)
		}
	})
	t.Run("faults", func(t *testing.T) {
		failing := func(name, login string, f connectortest.Fault) {
			t.Run(name, func(t *testing.T) {
				key := k.APIKey(login)
				canaries = append(canaries, key)
				k.FailCRM(f)
				r := k.apiKeyLogin(t, key)
				if r.Status < 500 || strings.Contains(string(r.Body), "jwtToken") {
					t.Errorf("login with the service failing (%s): %d %s, want a 5xx without a session (UserInfo must return an error, not Successful=false)", f, r.Status, r.Body)
				}
				// Then it works.
				jwt := k.mustAPIKeyLogin(t, login)
				k.loggedIn(t, jwt)
			})
		}
		failing("5xx", "k5xx", connectortest.Status5xx(503))
		failing("429", "rate", connectortest.TooMany429(time.Second))
		t.Run("lost response", func(t *testing.T) {
			// The connection drops after the service did the work. Go's
			// transport may replay an idempotent GET once on a reused
			// connection, so the login either fails as a 5xx without a
			// session or succeeds for the right user; it is never taken
			// for a refusal (400) or a half-stored login.
			key := k.APIKey("lost")
			canaries = append(canaries, key)
			k.FailCRM(connectortest.LostResponse())
			r := k.apiKeyLogin(t, key)
			switch {
			case r.Status == http.StatusOK:
				jwt, _ := r.JSON(t)["jwtToken"].(string)
				k.loggedIn(t, jwt)
			case r.Status < 500 || strings.Contains(string(r.Body), "jwtToken"):
				t.Errorf("login with a lost response: %d %s, want a 5xx without a session (UserInfo must return an error, not Successful=false)", r.Status, r.Body)
			default:
				jwt := k.mustAPIKeyLogin(t, "lost")
				k.loggedIn(t, jwt)
			}
		})
		t.Run("slow", func(t *testing.T) {
			// A slow answer within the engine's timeouts still logs in.
			canaries = append(canaries, k.APIKey("slow"))
			k.FailCRM(connectortest.Slow(200 * time.Millisecond))
			jwt := k.mustAPIKeyLogin(t, "slow")
			k.loggedIn(t, jwt)
		})
	})
	k.Harness.AssertNoLeak(t, canaries...)
}
