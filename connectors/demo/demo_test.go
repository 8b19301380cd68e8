package demo

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"golang.org/x/oauth2"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/server"
	democrm "github.com/connectd/connectd/server/demo"
)

func TestManifest(t *testing.T) {
	cases := []struct {
		name, publicURL string
		wantErr         bool
	}{
		{"localhost", "http://localhost:8080", false},
		{"trailing slash trimmed", "http://127.0.0.1:9999/", false},
		{"a path prefix", "https://dev.example.test/connectd", false},
		{"not a URL", "localhost:8080", true},
		{"a query", "http://localhost:8080/?x=1", true},
		{"ftp", "ftp://localhost", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := Manifest(tc.publicURL)
			if tc.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			set, err := manifest.Parse(ManifestName, doc)
			if err != nil {
				t.Fatalf("the demo manifest does not validate: %v", err)
			}
			base := strings.TrimRight(tc.publicURL, "/")
			if got := set.Names(); len(got) != 2 {
				t.Fatalf("platforms %v", got)
			}
			for _, name := range Platforms() {
				p, ok := set.Platform(name)
				if !ok || !IsDemo(name) {
					t.Fatalf("platform %s missing", name)
				}
				if !strings.Contains(p.DisplayName, "DEMO") {
					t.Fatalf("%s is not labelled demo: %q", name, p.DisplayName)
				}
			}
			p, _ := set.Platform(OAuthPlatform)
			if p.Auth.OAuth.AuthURL != base+"/demo/crm/oauth/authorize" || !p.PKCE() || p.RefreshMargin().Seconds() != 60 {
				t.Fatalf("demo-oauth: authUrl %q pkce %v margin %v", p.Auth.OAuth.AuthURL, p.PKCE(), p.RefreshMargin())
			}
			if !strings.Contains(string(doc), `"serverUrl": "`+base+`"`) {
				t.Fatal("serverUrl does not point at the public URL")
			}
		})
	}
	if IsDemo("pipedrive") {
		t.Fatal("pipedrive is not a demo")
	}
}

// crm serves the demo CRM on a test server whose URL is the public URL.
func crm(t *testing.T) (*democrm.CRM, string) {
	t.Helper()
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	c, err := democrm.New(democrm.Options{PublicURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	c.Register(r, server.Middlewares{})
	return c, srv.URL
}

func build(t *testing.T, base, name string) connector.Connector {
	t.Helper()
	c, err := Factories(base)[name](connector.Config{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The connector side and the CRM side agree on the client, the paths and
// the PKCE flow: a full login, validation and revocation.
func TestOAuthConnectorAgainstTheDemoCRM(t *testing.T) {
	ctx := context.Background()
	m, base := crm(t)
	c := build(t, base, OAuthPlatform).(*oauthConnector)
	info, err := c.OAuthInfo(ctx, connector.OAuthInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.ClientID != democrm.ClientID || info.ClientSecret.Reveal() != democrm.ClientSecret ||
		info.AuthURL != base+democrm.AuthorizePath || info.TokenURL != base+democrm.TokenPath {
		t.Fatalf("OAuthInfo %+v does not match the demo CRM", info)
	}
	// Play the browser: sign in as bob.
	cb := base + "/oauth/callback"
	verifier := oauth2.GenerateVerifier()
	sum := sha256.Sum256([]byte(verifier))
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.PostForm(info.AuthURL, url.Values{
		"response_type": {"code"}, "client_id": {info.ClientID}, "redirect_uri": {cb}, "state": {"s"},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
		"login": {"bob"}, "lifetime": {"3600"}, "action": {"allow"},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	cfg := oauth2.Config{ClientID: info.ClientID, ClientSecret: info.ClientSecret.Reveal(), RedirectURL: cb,
		Endpoint: oauth2.Endpoint{TokenURL: info.TokenURL, AuthStyle: info.TokenAuthStyle()}}
	tok, err := cfg.Exchange(ctx, loc.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}

	res, err := c.UserInfo(ctx, connector.UserInfoRequest{HTTPClient: http.DefaultClient, AuthHeader: "Bearer " + tok.AccessToken})
	if err != nil || !res.Successful || res.User.ID != "demo-1002" || res.User.Name != "Bob Demo" || res.User.AdditionalInfo["demo"] != true {
		t.Fatalf("UserInfo: %+v %v", res, err)
	}
	bad, err := c.UserInfo(ctx, connector.UserInfoRequest{HTTPClient: http.DefaultClient, AuthHeader: "Bearer nope"})
	if err != nil || bad.Successful || bad.ReturnMessage == nil {
		t.Fatalf("UserInfo with a bad token: %+v %v", bad, err)
	}

	authed := &http.Client{Transport: bearer{tok.AccessToken}}
	v, err := c.ValidateAuth(ctx, connector.UserRequest{HTTPClient: authed})
	if err != nil || !v.Successful || v.Status != 200 {
		t.Fatalf("ValidateAuth: %+v %v", v, err)
	}

	user := connector.User{AccessToken: connector.Secret(tok.AccessToken), RefreshToken: connector.Secret(tok.RefreshToken)}
	r, err := c.Unauthorize(ctx, connector.UserRequest{HTTPClient: http.DefaultClient, User: user, OAuth: info})
	if err != nil || !r.Successful {
		t.Fatalf("Unauthorize: %+v %v", r, err)
	}
	if got := m.TokenState(tok.AccessToken); got != "revoked" {
		t.Fatalf("after Unauthorize the access token is %s", got)
	}
	v, err = c.ValidateAuth(ctx, connector.UserRequest{HTTPClient: authed})
	if err != nil || v.Successful || v.Status != http.StatusUnauthorized {
		t.Fatalf("ValidateAuth after revocation: %+v %v", v, err)
	}
	// Revoking again is harmless (jobs may retry).
	if r, err := c.Unauthorize(ctx, connector.UserRequest{HTTPClient: http.DefaultClient, User: user}); err != nil || !r.Successful {
		t.Fatalf("second Unauthorize: %+v %v", r, err)
	}
}

type bearer struct{ tok string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return http.DefaultTransport.RoundTrip(r)
}

func TestAPIKeyConnectorAgainstTheDemoCRM(t *testing.T) {
	ctx := context.Background()
	_, base := crm(t)
	c := build(t, base, APIKeyPlatform).(*apiKeyConnector)
	cases := []struct {
		key  string
		ok   bool
		user string
	}{
		{"demo-key-alice", true, "Alice Demo"},
		{"demo-key-bob", true, "Bob Demo"},
		{"wrong", false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			res, err := c.UserInfo(ctx, connector.UserInfoRequest{HTTPClient: http.DefaultClient, AuthHeader: "Basic " + c.BasicAuth(tc.key)})
			if err != nil || res.Successful != tc.ok || res.User.Name != tc.user {
				t.Fatalf("UserInfo: %+v %v", res, err)
			}
			if !tc.ok && (res.ReturnMessage == nil || !strings.Contains(res.ReturnMessage.Message, "demo-key-alice")) {
				t.Fatalf("a refused key should say which keys work: %+v", res.ReturnMessage)
			}
		})
	}
	if got := c.BasicAuth("k"); got != base64.StdEncoding.EncodeToString([]byte("k:")) {
		t.Fatalf("BasicAuth %q", got)
	}
	// A CRM answering garbage is an error, not a refused login.
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"name": "no id"})
	}))
	defer garbage.Close()
	g := build(t, garbage.URL, APIKeyPlatform)
	if _, err := g.UserInfo(ctx, connector.UserInfoRequest{HTTPClient: http.DefaultClient, AuthHeader: "Basic x"}); err == nil {
		t.Fatal("a profile without id must be an error")
	}
}

func TestFactoriesRefuseABadPublicURL(t *testing.T) {
	for name, f := range Factories("not a url") {
		if _, err := f(connector.Config{Name: name}); err == nil {
			t.Fatalf("%s: want an error", name)
		}
	}
}
