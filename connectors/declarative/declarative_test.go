package declarative_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/connectd/connectd/connectors/declarative"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/connectortest/conformance"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/store/storetest"
)

// doc builds a declarative manifest for platform name.
func doc(name, authType string, hosts []string, decl map[string]any) []byte {
	auth := map[string]any{"type": authType}
	if authType == "oauth" {
		auth["oauth"] = map[string]any{"authUrl": "https://connectd.example/oauth/authorize", "clientId": "public-id"}
	} else {
		auth["apiKey"] = map[string]any{"page": map[string]any{"title": name, "content": []any{
			map[string]any{"const": "apiKey", "title": "API key", "type": "string", "required": true},
		}}}
	}
	d := map[string]any{
		"serverUrl": "https://connectd.example", "redirectUri": "https://client.example/redirect.html",
		"author": map[string]any{"name": "tests", "websiteUrl": "https://connectd.example"}, "version": "1.0.0",
		"platforms": map[string]any{name: map[string]any{
			"name": name, "displayName": "Declared " + name, "auth": auth,
			"connectd": map[string]any{"hosts": hosts, "declarative": decl},
		}},
	}
	if hosts == nil {
		delete(d["platforms"].(map[string]any)[name].(map[string]any)["connectd"].(map[string]any), "hosts")
	}
	b, _ := json.Marshal(d)
	return b
}

func platform(t *testing.T, data []byte, name string) *manifest.Platform {
	t.Helper()
	set, err := manifest.Parse(name+".json", data)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := set.Platform(name)
	return p
}

func userInfo(url string) map[string]any {
	return map[string]any{"url": url, "idPath": "data.user.id", "namePath": "data.user.display", "timezonePath": "data.user.tz"}
}

// writeManifest drops a manifest into dir, as an operator drops one into
// CONNECTD_MANIFESTS_DIR.
func writeManifest(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name+".json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// userAPI answers GET /api/me for a user found by who, in a nested shape
// the manifest's dot paths read.
func userAPI(k *conformance.Kit, who func(r *http.Request) (connectortest.ProviderUser, bool)) {
	k.CRM.Handle(http.MethodGet, "/api/me", func(w http.ResponseWriter, r *http.Request) {
		u, ok := who(r)
		if !ok {
			connectortest.WriteJSON(w, http.StatusUnauthorized, map[string]any{"error": "unauthorized"})
			return
		}
		var id json.Number = json.Number(u.ID)
		connectortest.WriteJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"user": map[string]any{"id": id, "display": u.Name, "tz": u.Timezone}}})
	})
}

// A manifest alone, loaded from an operator directory, is a working OAuth
// connector: the conformance kit logs in through the engine against the
// kit's provider ({{hostname}} in every URL, HTTP Basic client auth, PKCE,
// revocation, validation).
func TestDeclarativeOAuthThroughEngine(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		dir := t.TempDir()
		conformance.Run(t, conformance.Options{
			Backend:     backend,
			Platform:    "declared",
			Declarative: declarative.New,
			ManifestDir: dir,
			Hostname:    "127.0.0.1",
			Provider:    connectortest.ProviderOptions{ClientAuth: connectortest.ClientAuthBasic, RequirePKCE: true, RotateRefreshTokens: true, ReuseDetection: true},
			ManifestFor: func(k *conformance.Kit) []byte {
				u, _ := url.Parse(k.URL)
				base := "http://{{hostname}}:" + u.Port()
				data := doc("declared", "oauth", []string{"127.0.0.1"}, map[string]any{
					"oauth": map[string]any{
						"authorizationUrl": base + "/authorize", "tokenUrl": base + "/token", "revocationUrl": base + "/revoke",
						"clientIdEnv": "DECLARED_CLIENT_ID", "clientSecretEnv": "DECLARED_CLIENT_SECRET",
						"scopes": []string{"users.read"}, "clientAuth": "basic",
					},
					"userInfo": userInfo(base + "/api/me"),
					"validate": true,
				})
				writeManifest(t, dir, "declared", data)
				return data
			},
			Env: func(k *conformance.Kit) map[string]string {
				return map[string]string{"DECLARED_CLIENT_ID": k.ClientID, "DECLARED_CLIENT_SECRET": k.ClientSecret}
			},
			CRM: func(k *conformance.Kit) { userAPI(k, k.OAuthUser) },
		})
	})
}

// The same for an API-key service that wants "Authorization: Bearer <key>".
func TestDeclarativeAPIKeyThroughEngine(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		dir := t.TempDir()
		conformance.Run(t, conformance.Options{
			Backend:     backend,
			Platform:    "keyed",
			Declarative: declarative.New,
			ManifestDir: dir,
			AuthType:    connector.AuthAPIKey,
			ManifestFor: func(k *conformance.Kit) []byte {
				data := doc("keyed", "apiKey", nil, map[string]any{
					"apiKey":   map[string]any{"scheme": "Bearer"},
					"userInfo": userInfo(k.URL + "/api/me"),
					"validate": true,
				})
				writeManifest(t, dir, "keyed", data)
				return data
			},
			CRM: func(k *conformance.Kit) {
				userAPI(k, func(r *http.Request) (connectortest.ProviderUser, bool) {
					key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
					if !ok {
						return connectortest.ProviderUser{}, false
					}
					return k.APIKeyUser(key)
				})
			},
		})
	})
}

func TestNewUnavailableNamesTheVariable(t *testing.T) {
	p := platform(t, doc("d", "oauth", nil, map[string]any{
		"oauth":    map[string]any{"authorizationUrl": "https://a.example.com/authorize", "tokenUrl": "https://a.example.com/token", "clientIdEnv": "D_ID", "clientSecretEnv": "D_SECRET"},
		"userInfo": userInfo("https://a.example.com/me"),
	}), "d")
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no id", map[string]string{"D_SECRET": "s"}, "D_ID is not set"},
		{"no secret", map[string]string{"D_ID": "i"}, "D_SECRET is not set"},
		{"blank secret", map[string]string{"D_ID": "i", "D_SECRET": "  "}, "D_SECRET is not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := declarative.New(p, connector.Config{Getenv: func(k string) string { return tc.env[k] }})
			if !errors.Is(err, connector.ErrUnavailable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrUnavailable naming %q", err, tc.want)
			}
		})
	}
	c, err := declarative.New(p, connector.Config{Getenv: func(k string) string { return map[string]string{"D_ID": "i", "D_SECRET": "s3cret"}[k] }})
	if err != nil {
		t.Fatal(err)
	}
	// Capabilities follow the manifest: no revocationUrl, no validate.
	if _, ok := c.(connector.Unauthorizer); ok {
		t.Error("Unauthorizer without a revocationUrl")
	}
	if _, ok := c.(connector.AuthValidator); ok {
		t.Error("AuthValidator without validate")
	}
	info, err := c.(connector.OAuthConnector).OAuthInfo(context.Background(), connector.OAuthInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.ClientID != "i" || info.ClientSecret.Reveal() != "s3cret" || info.TokenAuthStyle() != oauth2.AuthStyleInHeader || info.TokenURL != "https://a.example.com/token" {
		t.Errorf("OAuthInfo = %+v", info)
	}
	if s := fmt.Sprint(info); strings.Contains(s, "s3cret") {
		t.Error("the client secret prints itself")
	}
}

// {{hostname}} takes only hosts matching connectd.hosts.
func TestHostnameTemplate(t *testing.T) {
	p := platform(t, doc("d", "oauth", []string{"*.crm.example.com"}, map[string]any{
		"oauth": map[string]any{"authorizationUrl": "https://{{hostname}}/oauth/authorize", "tokenUrl": "https://{{hostname}}/oauth/token",
			"clientIdEnv": "D_ID", "clientSecretEnv": "D_SECRET", "clientAuth": "body"},
		"userInfo": userInfo("https://{{hostname}}/api/me"),
	}), "d")
	c, err := declarative.New(p, connector.Config{Getenv: func(k string) string { return "x" }})
	if err != nil {
		t.Fatal(err)
	}
	oc := c.(connector.OAuthConnector)
	for _, tc := range []struct {
		host, wantTokenURL string
	}{
		{"acme.crm.example.com", "https://acme.crm.example.com/oauth/token"},
		{"ACME.crm.example.com", "https://acme.crm.example.com/oauth/token"},
		{"crm.example.com", ""},
		{"evil.com", ""},
		{"evil.com#.crm.example.com", ""},
		{"acme.crm.example.com:8443", ""},
		{"evil.com/x.crm.example.com", ""},
		{"", ""},
	} {
		t.Run(tc.host, func(t *testing.T) {
			info, err := oc.OAuthInfo(context.Background(), connector.OAuthInfoRequest{Hostname: tc.host})
			if tc.wantTokenURL == "" {
				if err == nil {
					t.Fatalf("hostname %q accepted: %s", tc.host, info.TokenURL)
				}
				return
			}
			if err != nil || info.TokenURL != tc.wantTokenURL || info.TokenAuthStyle() != oauth2.AuthStyleInParams {
				t.Fatalf("info %+v, err %v", info, err)
			}
		})
	}
}

// How an API key travels, per scheme and header.
func TestAPIKeyHeaders(t *testing.T) {
	for _, tc := range []struct {
		scheme, header, wantName, wantValue string
	}{
		{"Basic", "", "Authorization", "Basic a2V5LTE6"},
		{"Bearer", "", "Authorization", "Bearer key-1"},
		{"Bearer", "X-Auth", "X-Auth", "Bearer key-1"},
		{"none", "X-Api-Key", "X-Api-Key", "key-1"},
	} {
		t.Run(tc.scheme+" "+tc.header, func(t *testing.T) {
			var got http.Header
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = r.Header.Clone()
				connectortest.WriteJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"user": map[string]any{"id": 5, "display": "Five"}}})
			}))
			defer srv.Close()
			ak := map[string]any{"scheme": tc.scheme}
			if tc.header != "" {
				ak["header"] = tc.header
			}
			p := platform(t, doc("k", "apiKey", nil, map[string]any{"apiKey": ak, "userInfo": userInfo(srv.URL + "/me")}), "k")
			c, err := declarative.New(p, connector.Config{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := c.UserInfo(context.Background(), connector.UserInfoRequest{HTTPClient: srv.Client(), APIKey: "key-1"})
			if err != nil || !res.Successful || res.User.ID != "5" || res.User.Name != "Five" {
				t.Fatalf("UserInfo = %+v, %v", res, err)
			}
			if got.Get(tc.wantName) != tc.wantValue {
				t.Errorf("%s = %q, want %q", tc.wantName, got.Get(tc.wantName), tc.wantValue)
			}
			if tc.wantName != "Authorization" && got.Get("Authorization") != "" {
				t.Errorf("Authorization sent too: %q", got.Get("Authorization"))
			}
		})
	}
}

func TestUserInfoAnswers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		status  int
		body    string
		wantOK  bool
		wantErr bool
	}{
		{"ok", 200, `{"data":{"user":{"id":"u-1","display":"U"}}}`, true, false},
		{"refused", 401, `{}`, false, false},
		{"forbidden", 403, `{}`, false, false},
		{"server error", 502, `{}`, false, true},
		{"no id", 200, `{"data":{"user":{"display":"U"}}}`, false, true},
		{"id is an object", 200, `{"data":{"user":{"id":{"x":1}}}}`, false, true},
		{"not json", 200, `<html>`, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			p := platform(t, doc("k", "apiKey", nil, map[string]any{"apiKey": map[string]any{"scheme": "Bearer"}, "userInfo": userInfo(srv.URL + "/me")}), "k")
			c, _ := declarative.New(p, connector.Config{})
			res, err := c.UserInfo(context.Background(), connector.UserInfoRequest{HTTPClient: srv.Client(), APIKey: "k"})
			if (err != nil) != tc.wantErr || res.Successful != tc.wantOK {
				t.Fatalf("res %+v err %v", res, err)
			}
			if !tc.wantOK && !tc.wantErr && (res.ReturnMessage == nil || res.ReturnMessage.MessageType != connector.MessageWarning) {
				t.Errorf("a refusal needs a warning message: %+v", res.ReturnMessage)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	var doc any
	dec := json.NewDecoder(strings.NewReader(`{"a":{"b":[{"c":"x"},{"c":12345678901234567890}],"t":true,"n":null,"o":{}}}`))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, want string
		ok         bool
	}{
		{"a.b.0.c", "x", true},
		{"a.b.1.c", "12345678901234567890", true},
		{"a.t", "true", true},
		{"a.n", "", false},
		{"a.o", "", false},
		{"a.b.2.c", "", false},
		{"a.b.-1.c", "", false},
		{"a.missing", "", false},
		{"a.t.x", "", false},
		{"", "", false},
	} {
		got, ok := declarative.Lookup(doc, tc.path)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Lookup(%q) = %q, %v; want %q, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
}
