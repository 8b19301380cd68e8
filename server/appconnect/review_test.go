package appconnect_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/server/app"
	"github.com/connectd/connectd/server/servertest"
)

// fakeHosts verifies "host-<account>-<user>" tokens.
type fakeHosts struct{}

func (fakeHosts) VerifyHost(_ context.Context, tok string) (*store.HostIdentity, error) {
	parts := strings.Split(tok, "-")
	if len(parts) != 3 || parts[0] != "host" {
		return nil, failure.Newf(failure.Unauthenticated, "bad host token")
	}
	return &store.HostIdentity{Kind: "ringcentral", AccountID: parts[1], UserID: parts[2]}, nil
}

func newHostEnv(t *testing.T) *oauthEnv {
	t.Helper()
	clk := clock.NewFake(time.Now())
	po := connectortest.ProviderOptions{RequirePKCE: true, RedirectURIs: []string{clientRedirect}, AccessTokenTTL: time.Hour, Clock: clk}
	p := connectortest.NewProvider(t, po)
	h := servertest.New(t, servertest.Options{
		Manifests:  [][]byte{connectortest.OAuthManifest("testcrm", po.RedirectURIs, true)},
		Connectors: map[string]connector.Factory{"testcrm": connectortest.OAuthConnector(p, connectortest.OAuthConnectorOptions{})},
		Clock:      clk,
		Engine:     func(_ *servertest.Harness, o *app.EngineOptions) { o.Hosts = fakeHosts{} },
	})
	return &oauthEnv{h: h, p: p, clock: clk}
}

// A flow started with a host identity completes only for that identity:
// a leaked redirect URL (code + state) is useless to anyone else, and the
// state survives the attempt.
func TestCallbackBoundToHostIdentity(t *testing.T) {
	e := newHostEnv(t)
	r := e.h.Do(t, http.MethodGet, "/oauth/authorize?platform=testcrm", nil, "Accept", "application/json", "X-RC-Access-Token", "host-acc1-u1")
	if r.Status != http.StatusOK {
		t.Fatalf("authorize: %d %s", r.Status, r.Body)
	}
	redirect, err := e.p.Authorize(context.Background(), r.JSON(t)["authUrl"].(string), "alice")
	if err != nil {
		t.Fatal(err)
	}
	cb := "/oauth-callback?callbackUri=" + url.QueryEscape(redirect.String())
	for name, hdr := range map[string][]string{
		"no identity":     nil,
		"another user":    {"X-RC-Access-Token", "host-acc1-u2"},
		"another account": {"X-RC-Access-Token", "host-acc2-u1"},
	} {
		if r := e.h.Do(t, http.MethodGet, cb, nil, hdr...); r.Status != http.StatusBadRequest || r.JSON(t)["jwtToken"] != nil {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
		}
	}
	if n := len(e.p.TokenRequests()); n != 0 {
		t.Fatalf("%d token requests for foreign callers", n)
	}
	r = e.h.Do(t, http.MethodGet, cb, nil, "X-RC-Access-Token", "host-acc1-u1")
	if r.Status != http.StatusOK || r.JSON(t)["jwtToken"] == nil {
		t.Fatalf("the starting user: %d %s", r.Status, r.Body)
	}
	u := storedUser(t, e.h, r.JSON(t)["jwtToken"].(string))
	if u.Host != (store.HostIdentity{Kind: "ringcentral", AccountID: "acc1", UserID: "u1"}) {
		t.Errorf("stored under %+v", u.Host)
	}
}

// Another surface's state sent to App Connect's callback is refused
// without being consumed.
func TestCallbackDoesNotBurnConnectFlows(t *testing.T) {
	e := newOAuthEnv(t, "sqlite", connectortest.ProviderOptions{}, connectortest.OAuthConnectorOptions{}, true)
	f := &store.OAuthFlow{ID: "connect-flow-state-0123456789abcdef", Platform: "testcrm", Purpose: store.PurposeConnect, Surface: "kit", BindingHash: "x", ExpiresAt: time.Now().Add(5 * time.Minute)}
	if err := e.h.Store.CreateFlow(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.callback(t, url.Values{"code": {"c"}, "state": {f.ID}}); st != http.StatusBadRequest {
		t.Fatalf("status %d", st)
	}
	if _, err := e.h.Store.GetFlow(context.Background(), f.ID); err != nil {
		t.Errorf("the connect flow was consumed by a foreign callback: %v", err)
	}
}

// A failed code exchange logs the status and error code only (never the
// provider's body, which may echo the request): neither the client secret
// nor the code appears in logs or responses.
func TestTokenErrorBodiesAreNotLogged(t *testing.T) {
	e := newOAuthEnv(t, "sqlite", connectortest.ProviderOptions{}, connectortest.OAuthConnectorOptions{}, true)
	authURL := e.authorize(t, "platform=testcrm")
	redirect, err := e.p.Authorize(context.Background(), authURL, "alice")
	if err != nil {
		t.Fatal(err)
	}
	code := redirect.Query().Get("code")
	e.p.FailNext(connectortest.PathToken, connectortest.Status5xx(502), 1)
	r := e.h.Do(t, http.MethodGet, "/oauth-callback?callbackUri="+url.QueryEscape(redirect.String()), nil)
	if r.Status < 500 {
		t.Fatalf("status %d", r.Status)
	}
	e.h.AssertNoLeak(t, e.p.Options().ClientSecret, code)
}

// redirectingRevoker revokes through the engine's client at a URL that
// redirects elsewhere.
type redirectingRevoker struct {
	connector.OAuthConnector
	revokeURL string
}

func (r redirectingRevoker) Unauthorize(ctx context.Context, req connector.UserRequest) (connector.Result, error) {
	hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.revokeURL, strings.NewReader("token=x"))
	hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := req.HTTPClient.Do(hr)
	if err != nil {
		return connector.Result{}, err
	}
	resp.Body.Close()
	return connector.Result{Successful: resp.StatusCode == http.StatusOK}, nil
}

// Logout's revocation never follows a redirect: the credential it carries
// must not reach another host.
func TestLogoutRevocationFollowsNoRedirect(t *testing.T) {
	var sawAuth []string
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawAuth = append(sawAuth, r.Header.Get("Authorization"))
	}))
	defer elsewhere.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/steal", http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()

	clk := clock.NewFake(time.Now())
	po := connectortest.ProviderOptions{RedirectURIs: []string{clientRedirect}, AccessTokenTTL: time.Hour, Clock: clk}
	p := connectortest.NewProvider(t, po)
	base := connectortest.OAuthConnector(p, connectortest.OAuthConnectorOptions{})
	h := servertest.New(t, servertest.Options{
		Manifests: [][]byte{connectortest.OAuthManifest("testcrm", po.RedirectURIs, true)},
		Connectors: map[string]connector.Factory{"testcrm": func(cfg connector.Config) (connector.Connector, error) {
			c, err := base(cfg)
			if err != nil {
				return nil, err
			}
			return redirectingRevoker{OAuthConnector: c.(connector.OAuthConnector), revokeURL: redirector.URL + "/revoke"}, nil
		}},
		Clock: clk,
	})
	e := &oauthEnv{h: h, p: p, clock: clk}
	jwt, _ := e.login(t, "alice")
	if r := h.Do(t, http.MethodPost, "/unAuthorize", nil, bearer(jwt)...); r.Status != http.StatusOK {
		t.Fatalf("unAuthorize: %d %s", r.Status, r.Body)
	}
	if len(sawAuth) != 0 {
		t.Fatalf("the revocation followed a redirect to another host (Authorization %q)", sawAuth)
	}
}
