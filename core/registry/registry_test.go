package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/manifest"
)

// base is the smallest connector: AuthType and UserInfo only.
type base struct{ auth connector.AuthType }

func (b base) AuthType(context.Context) (connector.AuthType, error) { return b.auth, nil }
func (b base) UserInfo(context.Context, connector.UserInfoRequest) (connector.UserInfoResult, error) {
	return connector.UserInfoResult{Successful: true, User: connector.PlatformUser{ID: "1", Name: "Ann"}}, nil
}

type oauthConn struct{ base }

func (oauthConn) OAuthInfo(context.Context, connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	return connector.OAuthInfo{ClientID: "id"}, nil
}

type apiKeyConn struct{ base }

func (apiKeyConn) BasicAuth(k string) string { return k + ":" }

// fullConn implements every capability.
type fullConn struct{ oauthConn }

func (fullConn) Unauthorize(context.Context, connector.UserRequest) (connector.Result, error) {
	return connector.Result{Successful: true}, nil
}
func (fullConn) OverrideTokenRequest(context.Context, string, connector.OAuthInfo) (connector.TokenRequestOverride, error) {
	return connector.TokenRequestOverride{}, nil
}
func (fullConn) ValidateAuth(context.Context, connector.UserRequest) (connector.ValidationResult, error) {
	return connector.ValidationResult{Successful: true}, nil
}
func (fullConn) RefreshUserInfo(context.Context, connector.UserRequest) (connector.UserInfoResult, error) {
	return connector.UserInfoResult{Successful: true}, nil
}
func (fullConn) LicenseStatus(context.Context, connector.UserRequest) (connector.LicenseStatus, error) {
	return connector.LicenseStatus{IsLicenseValid: true}, nil
}
func (fullConn) ManagedAuthOptions(context.Context, connector.ManagedAuthOptionsRequest) ([]connector.Option, error) {
	return nil, nil
}
func (fullConn) PostSaveUserInfo(_ context.Context, u connector.PlatformUser) (connector.PlatformUser, error) {
	return u, nil
}

// errAuthType fails AuthType.
type errAuthType struct{ oauthConn }

func (errAuthType) AuthType(context.Context) (connector.AuthType, error) {
	return "", errors.New("boom")
}

func platformJSON(name, authType string, extra string) string {
	auth := `"auth":{"type":"oauth","oauth":{"authUrl":"https://x.example.com/a"}}`
	if authType == "apiKey" {
		auth = `"auth":{"type":"apiKey","apiKey":{"page":{"content":[{"const":"apiKey","type":"string","required":true}]}}}`
	}
	if authType == "" {
		auth = `"connectd":{"kind":"plugin"}`
	}
	if extra != "" {
		auth += "," + extra
	}
	return fmt.Sprintf(`%q:{"name":%q,"displayName":"%s CRM",%s}`, name, name, strings.ToUpper(name[:1])+name[1:], auth)
}

func set(t *testing.T, platforms ...string) *manifest.Set {
	t.Helper()
	s, err := manifest.Parse("test.json", []byte(`{"platforms":{`+strings.Join(platforms, ",")+`}}`))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func factoryOf(c connector.Connector) connector.Factory {
	return func(connector.Config) (connector.Connector, error) { return c, nil }
}

func TestNewBuildsAndServesEntries(t *testing.T) {
	s := set(t,
		platformJSON("oa", "oauth", ""),
		platformJSON("key", "apiKey", ""),
		platformJSON("full", "oauth", ""),
		platformJSON("off", "oauth", ""),
		platformJSON("plug", "", ""),
	)
	var got []connector.Config
	record := func(c connector.Connector) connector.Factory {
		return func(cfg connector.Config) (connector.Connector, error) {
			got = append(got, cfg)
			return c, nil
		}
	}
	env := map[string]string{"OA_CLIENT_ID": "cid"}
	r, err := New(context.Background(), s, map[string]connector.Factory{
		"oa":   record(oauthConn{base{connector.AuthOAuth}}),
		"key":  record(apiKeyConn{base{connector.AuthAPIKey}}),
		"full": record(fullConn{oauthConn{base{connector.AuthOAuth}}}),
		"off": func(connector.Config) (connector.Connector, error) {
			return nil, fmt.Errorf("%w: OFF_CLIENT_SECRET is not set", connector.ErrUnavailable)
		},
		"plug": record(base{connector.AuthOAuth}),
	}, Config{
		Getenv:          func(k string) string { return env[k] },
		ConnectorLogger: func(string) *slog.Logger { return slog.New(slog.DiscardHandler) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("factories called %d times, want 4", len(got))
	}
	for _, cfg := range got {
		if cfg.Name == "" || cfg.Logger == nil || cfg.Getenv("OA_CLIENT_ID") != "cid" {
			t.Errorf("factory config = %+v", cfg)
		}
	}

	var names []string
	for _, e := range r.List() {
		names = append(names, fmt.Sprintf("%s:%v", e.Name, e.Available))
	}
	if want := []string{"full:true", "key:true", "oa:true", "off:false", "plug:true"}; !slices.Equal(names, want) {
		t.Errorf("List = %v, want %v", names, want)
	}

	t.Run("Get available", func(t *testing.T) {
		e, err := r.Get("key")
		if err != nil || !e.Available || e.Platform.Key != "key" || e.Platform.AuthType() != connector.AuthAPIKey {
			t.Fatalf("Get(key) = %+v, %v", e, err)
		}
		if e.Connector.(connector.APIKeyConnector).BasicAuth("k") != "k:" {
			t.Error("wrong connector")
		}
	})
	t.Run("Get unavailable", func(t *testing.T) {
		e, err := r.Get("off")
		if !failure.Is(err, failure.ConnectorUnavailable) {
			t.Fatalf("err = %v", err)
		}
		if e.Available || e.Connector != nil || !strings.Contains(e.Reason, "OFF_CLIENT_SECRET is not set") {
			t.Errorf("entry = %+v", e)
		}
		if msg := failure.MessageOf(err); msg != "Off CRM is not available on this server." {
			t.Errorf("message = %q", msg)
		}
	})
	t.Run("Get unknown", func(t *testing.T) {
		if _, err := r.Get("nope"); !failure.Is(err, failure.NotFound) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("Implemented", func(t *testing.T) {
		all := []string{"getAuthType", "getOauthInfo", "getBasicAuth", "getUserInfo", "unAuthorize", "getOverridingOAuthOption",
			"authValidation", "refreshUserInfo", "getLicenseStatus", "getManagedAuthOptions", "postSaveUserInfo", "checkAndRefreshAccessToken"}
		full := r.Implemented("full")
		key := r.Implemented("key")
		for _, k := range all {
			if _, ok := full[k]; !ok {
				t.Errorf("missing key %s", k)
			}
		}
		if len(full) != len(all) {
			t.Errorf("keys = %v", full)
		}
		wantFull := map[string]bool{"getBasicAuth": false, "checkAndRefreshAccessToken": false}
		for _, k := range all {
			want, ok := wantFull[k]
			if !ok {
				want = true
			}
			if full[k] != want {
				t.Errorf("full[%s] = %v, want %v", k, full[k], want)
			}
		}
		wantKey := map[string]bool{"getAuthType": true, "getUserInfo": true, "getBasicAuth": true}
		for _, k := range all {
			if key[k] != wantKey[k] {
				t.Errorf("key[%s] = %v, want %v", k, key[k], wantKey[k])
			}
		}
		if r.Implemented("off") != nil || r.Implemented("nope") != nil {
			t.Error("unavailable/unknown must give nil")
		}
	})
}

func TestNewRefusesMismatchesWithOneMessage(t *testing.T) {
	s := set(t,
		platformJSON("nocode", "oauth", ""),
		platformJSON("notoauth", "oauth", ""),
		platformJSON("notkey", "apiKey", ""),
		platformJSON("disagree", "apiKey", ""),
		platformJSON("broken", "oauth", ""),
		platformJSON("autherr", "oauth", ""),
		platformJSON("nilconn", "oauth", ""),
		platformJSON("good", "oauth", ""),
	)
	_, err := New(context.Background(), s, map[string]connector.Factory{
		"notoauth": factoryOf(apiKeyConn{base{connector.AuthOAuth}}),
		"notkey":   factoryOf(oauthConn{base{connector.AuthAPIKey}}),
		"disagree": factoryOf(apiKeyConn{base{connector.AuthOAuth}}),
		"broken": func(connector.Config) (connector.Connector, error) {
			return nil, errors.New("bad region table")
		},
		"autherr": factoryOf(errAuthType{}),
		"nilconn": factoryOf(nil),
		"good":    factoryOf(oauthConn{base{connector.AuthOAuth}}),
		"orphan":  factoryOf(oauthConn{base{connector.AuthOAuth}}),
	}, Config{})
	var se *StartError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v", err)
	}
	want := []string{
		`platform "nocode" (test.json) has no connector`,
		`connector "notoauth": manifest auth.type is "oauth" but the connector does not implement connector.OAuthConnector`,
		`connector "notkey": manifest auth.type is "apiKey" but the connector does not implement connector.APIKeyConnector`,
		`connector "disagree": AuthType returns "oauth" but manifest auth.type is "apiKey"`,
		`connector "broken": bad region table`,
		`connector "autherr": AuthType: boom`,
		`connector "nilconn": its factory returned no connector and no error`,
		`connector "orphan" has no manifest`,
	}
	for _, w := range want {
		found := false
		for _, p := range se.Problems {
			if strings.HasPrefix(p, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("missing problem %q in:\n%v", w, err)
		}
	}
	if len(se.Problems) != 8 {
		t.Errorf("got %d problems, want 8:\n%v", len(se.Problems), err)
	}
	for _, p := range se.Problems {
		if strings.Contains(p, `"good"`) {
			t.Errorf("good connector reported: %s", p)
		}
	}
	if !strings.HasPrefix(err.Error(), "registry: connectors and manifests disagree (8 problems):\n  - ") {
		t.Errorf("message = %q", err.Error())
	}
}

func TestDeclarativePlatforms(t *testing.T) {
	decl := `"connectd":{"declarative":{"apiKey":{"scheme":"Bearer"},"userInfo":{"url":"https://api.example.com/me","idPath":"id","namePath":"name"}}}`
	s := set(t, platformJSON("decl", "apiKey", decl))

	t.Run("no hook: unavailable", func(t *testing.T) {
		r, err := New(context.Background(), s, nil, Config{})
		if err != nil {
			t.Fatal(err)
		}
		e, err := r.Get("decl")
		if !failure.Is(err, failure.ConnectorUnavailable) || !strings.Contains(e.Reason, "declarative connectors are not enabled") {
			t.Fatalf("entry %+v err %v", e, err)
		}
	})
	t.Run("hook builds it", func(t *testing.T) {
		var seen *manifest.Platform
		r, err := New(context.Background(), s, nil, Config{
			Getenv: func(string) string { return "v" },
			Declarative: func(p *manifest.Platform, cfg connector.Config) (connector.Connector, error) {
				seen = p
				if cfg.Name != "decl" || cfg.Getenv("X") != "v" {
					t.Errorf("cfg = %+v", cfg)
				}
				return apiKeyConn{base{connector.AuthAPIKey}}, nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if seen == nil || seen.Connectd.Declarative.APIKey.Scheme != "Bearer" {
			t.Fatalf("hook saw %+v", seen)
		}
		if e, err := r.Get("decl"); err != nil || !e.Available {
			t.Fatalf("Get = %+v %v", e, err)
		}
	})
	t.Run("hook result is checked", func(t *testing.T) {
		_, err := New(context.Background(), s, nil, Config{
			Declarative: func(*manifest.Platform, connector.Config) (connector.Connector, error) {
				return oauthConn{base{connector.AuthOAuth}}, nil
			},
		})
		if err == nil || !strings.Contains(err.Error(), "does not implement connector.APIKeyConnector") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("Go connector and declarative", func(t *testing.T) {
		_, err := New(context.Background(), s, map[string]connector.Factory{"decl": factoryOf(apiKeyConn{base{connector.AuthAPIKey}})}, Config{})
		if err == nil || !strings.Contains(err.Error(), "is declarative (connectd.declarative) and also has a Go connector") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestNilSet(t *testing.T) {
	if _, err := New(context.Background(), nil, nil, Config{}); err == nil {
		t.Fatal("nil set accepted")
	}
}
