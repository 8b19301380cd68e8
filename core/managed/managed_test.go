package managed_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/managed"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/core/store/storetest"
)

const testManifest = `{
  "serverUrl": "http://localhost:8080", "redirectUri": "https://ringcentral.github.io/ringcentral-embeddable/redirect.html",
  "author": {"name": "t", "websiteUrl": "https://example.com"}, "version": "0.0.1",
  "platforms": {
    "keyed": {"name": "keyed", "auth": {"type": "apiKey", "apiKey": {"page": {"title": "K", "content": [
      {"const": "apiKey", "title": "Key", "type": "string", "required": true, "managed": true, "managedScope": "account"},
      {"const": "pin", "title": "PIN", "type": "string", "required": true, "managed": true, "managedScope": "user"},
      {"const": "extra", "title": "Extra", "type": "string", "required": false}
    ]}}}},
    "oauthy": {"name": "oauthy", "auth": {"type": "oauth", "oauth": {"authUrl": "https://login.oauthy.example/authorize"}},
      "connectd": {"hosts": ["*.oauthy.example"]}}
  }
}`

type keyed struct{}

func (keyed) AuthType(context.Context) (connector.AuthType, error) { return connector.AuthAPIKey, nil }
func (keyed) BasicAuth(k string) string                            { return k }
func (keyed) UserInfo(context.Context, connector.UserInfoRequest) (connector.UserInfoResult, error) {
	return connector.UserInfoResult{}, nil
}

type oauthy struct{}

func (oauthy) AuthType(context.Context) (connector.AuthType, error) { return connector.AuthOAuth, nil }
func (oauthy) UserInfo(context.Context, connector.UserInfoRequest) (connector.UserInfoResult, error) {
	return connector.UserInfoResult{}, nil
}
func (oauthy) OAuthInfo(context.Context, connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	return connector.OAuthInfo{ClientID: "own", ClientSecret: "own-secret", TokenURL: "https://api.oauthy.example/token"}, nil
}

func newService(t *testing.T, allowPrivate bool) (*managed.Service, *gormstore.Store, *manifest.Set, *clock.Fake) {
	t.Helper()
	set, err := manifest.Parse("m.json", []byte(testManifest))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(context.Background(), set, map[string]connector.Factory{
		"keyed":  func(connector.Config) (connector.Connector, error) { return keyed{}, nil },
		"oauthy": func(connector.Config) (connector.Connector, error) { return oauthy{}, nil },
	}, registry.Config{})
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Now())
	st := storetest.OpenStore(t, storetest.SQLite, clk)
	svc, err := managed.New(managed.Options{Store: st, Registry: reg, AllowPrivate: allowPrivate, Clock: clk, PendingTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return svc, st, set, clk
}

var (
	adminA = managed.Actor{Host: store.HostIdentity{Kind: "ringcentral", AccountID: "1", UserID: "10"}, Admin: true}
	userA  = store.HostIdentity{Kind: "ringcentral", AccountID: "1", UserID: "11"}
)

func TestAppURLGuards(t *testing.T) {
	svc, _, _, _ := newService(t, false)
	ctx := context.Background()
	good := managed.AppInput{ClientID: "c", ClientSecret: "s", TokenURL: "https://api.oauthy.example/token"}
	cases := []struct {
		name string
		edit func(*managed.AppInput)
		ok   bool
	}{
		{"valid", func(*managed.AppInput) {}, true},
		{"private IP token URL", func(a *managed.AppInput) { a.TokenURL = "https://10.0.0.5/token" }, false},
		{"loopback token URL", func(a *managed.AppInput) { a.TokenURL = "https://127.0.0.1/token" }, false},
		{"link-local token URL", func(a *managed.AppInput) { a.TokenURL = "https://169.254.169.254/latest" }, false},
		{"plain http", func(a *managed.AppInput) { a.TokenURL = "http://api.oauthy.example/token" }, false},
		{"host outside the patterns", func(a *managed.AppInput) { a.TokenURL = "https://oauthy.example.evil.com/token" }, false},
		{"user info in URL", func(a *managed.AppInput) { a.TokenURL = "https://x@api.oauthy.example/token" }, false},
		{"authorization URL elsewhere", func(a *managed.AppInput) { a.AuthURL = "https://evil.com/authorize" }, false},
		{"hostname elsewhere", func(a *managed.AppInput) { a.Hostname = "evil.com" }, false},
		{"hostname ok", func(a *managed.AppInput) { a.Hostname = "eu.oauthy.example" }, true},
		{"http redirect", func(a *managed.AppInput) { a.RedirectURI = "http://example.com/cb" }, false},
		{"oversize secret", func(a *managed.AppInput) { a.ClientSecret = string(make([]byte, managed.MaxValueLen+1)) }, false},
		{"control char in client id", func(a *managed.AppInput) { a.ClientID = "c\x07" }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := good
			tc.edit(&in)
			_, err := svc.PutPendingApp(ctx, adminA, "oauthy", in)
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !failure.Is(err, failure.InvalidRequest) {
				t.Fatalf("code = %s", failure.CodeOf(err))
			}
		})
	}
	t.Run("non-admin", func(t *testing.T) {
		if _, err := svc.PutPendingApp(ctx, managed.Actor{Host: userA}, "oauthy", good); !failure.Is(err, failure.Forbidden) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("api-key platform has no OAuth app", func(t *testing.T) {
		if _, err := svc.PutPendingApp(ctx, adminA, "keyed", good); !failure.Is(err, failure.InvalidRequest) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestResolve(t *testing.T) {
	svc, st, set, _ := newService(t, true)
	ctx := context.Background()
	p, _ := set.Platform("keyed")
	if _, _, err := svc.ApplyEdit(ctx, adminA, "keyed", managed.Edit{Scope: "org", Values: map[string]string{"apiKey": "stored-key"}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.ApplyEdit(ctx, adminA, "keyed", managed.Edit{Scope: "user", UserID: "11", Values: map[string]string{"pin": "1234"}}); err != nil {
		t.Fatal(err)
	}
	other := store.HostIdentity{Kind: "operator", AccountID: "1", UserID: "11"}
	cases := []struct {
		name      string
		host      *store.HostIdentity
		submitted map[string]string
		fallback  bool
		want      map[string]string
		missing   []string
	}{
		{"stored values win", &userA, map[string]string{"apiKey": "typed", "extra": "x"}, false, map[string]string{"apiKey": "stored-key", "pin": "1234", "extra": "x"}, nil},
		{"fallback lets the user type", &userA, map[string]string{"apiKey": "typed"}, true, map[string]string{"apiKey": "typed", "pin": "1234"}, nil},
		{"fallback keeps stored values for empty fields", &userA, map[string]string{}, true, map[string]string{"apiKey": "stored-key", "pin": "1234"}, nil},
		{"anonymous gets nothing managed", nil, map[string]string{}, false, map[string]string{}, []string{"apiKey", "pin"}},
		{"same account id, other host kind", &other, map[string]string{"pin": "9"}, false, map[string]string{"pin": "9"}, []string{"apiKey"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.host != nil {
				if tc.fallback {
					_ = st.MarkManagedLoginFailure(ctx, *tc.host, "keyed")
				} else {
					_ = st.ClearManagedLoginFailure(ctx, *tc.host, "keyed")
				}
			}
			got, missing, err := svc.Fields().Resolve(ctx, p, tc.host, tc.submitted)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			if len(got) != len(tc.want) || !slices.Equal(missing, tc.missing) {
				t.Errorf("got %v missing %v; want %v missing %v", got, missing, tc.want, tc.missing)
			}
		})
	}
}

func TestAppsResolution(t *testing.T) {
	svc, st, _, clk := newService(t, false)
	ctx := context.Background()
	apps := svc.Apps()
	if _, err := svc.PutPendingApp(ctx, adminA, "oauthy", managed.AppInput{ClientID: "mine", ClientSecret: "sec", TokenURL: "https://api.oauthy.example/t"}); err != nil {
		t.Fatal(err)
	}
	info, ref, err := apps.ForLogin(ctx, "oauthy", &userA, connector.OAuthInfoRequest{})
	if err != nil || ref == "" || info.ClientID != "mine" || info.ClientSecret.Reveal() != "sec" {
		t.Fatalf("ForLogin = %+v %q %v", info, ref, err)
	}
	if info, ref, _ := apps.ForLogin(ctx, "oauthy", nil, connector.OAuthInfoRequest{}); ref != "" || info.ClientID != "own" {
		t.Fatalf("anonymous ForLogin = %+v %q", info, ref)
	}
	t.Run("other account cannot promote or use it", func(t *testing.T) {
		b := store.HostIdentity{Kind: "ringcentral", AccountID: "2", UserID: "20"}
		if err := apps.LoginSucceeded(ctx, "oauthy", ref, b); !failure.Is(err, failure.Forbidden) {
			t.Fatalf("LoginSucceeded by B = %v", err)
		}
		if _, err := apps.ByRef(ctx, "oauthy", ref, connector.OAuthInfoRequest{HostAccountID: "2"}); !failure.Is(err, failure.Misconfigured) {
			t.Fatalf("ByRef for B = %v", err)
		}
		if _, err := apps.AppFor(ctx, &store.User{Platform: "oauthy", Host: b, OAuthAppRef: ref}); !failure.Is(err, failure.Misconfigured) {
			t.Fatalf("AppFor for B = %v", err)
		}
		if _, err := apps.ByRef(ctx, "keyed", ref, connector.OAuthInfoRequest{}); !failure.Is(err, failure.Misconfigured) {
			t.Fatalf("ByRef for another platform = %v", err)
		}
		pending, active, _ := st.CurrentOAuthApps(ctx, "ringcentral", "1", "oauthy")
		if pending == nil || active != nil {
			t.Fatal("promoted by another account")
		}
	})
	t.Run("expired pending is not used", func(t *testing.T) {
		clk.Advance(2 * time.Hour)
		if _, ref2, _ := apps.ForLogin(ctx, "oauthy", &userA, connector.OAuthInfoRequest{}); ref2 != "" {
			t.Fatalf("expired pending used: %q", ref2)
		}
		if err := apps.LoginSucceeded(ctx, "oauthy", ref, userA); err != nil {
			t.Fatalf("late success: %v", err)
		}
		if _, active, _ := st.CurrentOAuthApps(ctx, "ringcentral", "1", "oauthy"); active != nil {
			t.Fatal("an expired pending app was promoted")
		}
	})
	t.Run("promotion retires the previous active app, which still refreshes", func(t *testing.T) {
		first, err := svc.PutPendingApp(ctx, adminA, "oauthy", managed.AppInput{ClientID: "v1", ClientSecret: "s1", TokenURL: "https://api.oauthy.example/t"})
		if err != nil {
			t.Fatal(err)
		}
		_ = first
		_, ref1, _ := apps.ForLogin(ctx, "oauthy", &userA, connector.OAuthInfoRequest{})
		if err := apps.LoginSucceeded(ctx, "oauthy", ref1, userA); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.PutPendingApp(ctx, adminA, "oauthy", managed.AppInput{ClientID: "v2", ClientSecret: "s2", TokenURL: "https://api.oauthy.example/t"}); err != nil {
			t.Fatal(err)
		}
		_, ref2, _ := apps.ForLogin(ctx, "oauthy", &userA, connector.OAuthInfoRequest{})
		if ref2 == ref1 {
			t.Fatal("pending not preferred for a login of its account")
		}
		if err := apps.LoginSucceeded(ctx, "oauthy", ref2, userA); err != nil {
			t.Fatal(err)
		}
		_, active, _ := st.CurrentOAuthApps(ctx, "ringcentral", "1", "oauthy")
		if active == nil || active.ID != ref2 || active.ClientID != "v2" {
			t.Fatalf("active = %+v", active)
		}
		old, err := apps.AppFor(ctx, &store.User{Platform: "oauthy", Host: userA, OAuthAppRef: ref1})
		if err != nil || old.ClientID != "v1" || old.ClientSecret.Reveal() != "s1" {
			t.Fatalf("retired app for refresh = %+v, %v", old, err)
		}
		if n, err := svc.DeleteAccountApp(ctx, adminA, "oauthy"); err != nil || n != 2 {
			t.Fatalf("delete = %d, %v", n, err)
		}
		if _, err := apps.AppFor(ctx, &store.User{Platform: "oauthy", Host: userA, OAuthAppRef: ref1}); !failure.Is(err, failure.Misconfigured) {
			t.Fatalf("deleted app still resolves: %v", err)
		}
	})
}
