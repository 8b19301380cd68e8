package admin_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
)

func TestManagedOAuthApp(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend)
		seedRC(e)
		ctx := context.Background()
		oauthState := func(tok string) map[string]any {
			t.Helper()
			r := e.do(http.MethodGet, "/oauthManagedAuthState?platform=oauthcrm", nil, rcTok(tok))
			if r.Status != 200 {
				t.Fatalf("oauth state: %d %s", r.Status, r.Raw)
			}
			return r.Body
		}
		userOf := func(r resp) *store.User {
			t.Helper()
			jwt, _ := r.Body["jwtToken"].(string)
			cl, err := e.sessions.VerifyAppConnect(ctx, jwt)
			if err != nil {
				t.Fatalf("login did not return a session: %s", r.Raw)
			}
			u, err := e.store.GetUser(ctx, cl.Subject)
			if err != nil {
				t.Fatal(err)
			}
			return u
		}

		r := e.do(http.MethodPost, "/admin/managedOAuth/cache", map[string]any{"platform": "oauthcrm", "values": map[string]any{
			"clientId": "managed-client", "clientSecret": canaryClientSecret, "accessTokenUri": e.mgd.TokenURL(),
			"authorizationUri": e.mgd.AuthURL(), "redirectUri": redirectURI, "scopes": "contacts.read contacts.write",
		}}, rcTok(tokAdminA))
		if r.Status != 200 || getMap(r.Body, "pendingValues", "clientSecret", "hasValue") != true {
			t.Fatalf("cache: %d %s", r.Status, r.Raw)
		}

		st := oauthState(tokAdminA)
		if st["isAdmin"] != true || st["hasPendingOAuth"] != true || st["hasAccountOAuth"] != false ||
			getMap(st, "pendingValues", "clientId") != "managed-client" || getMap(st, "pendingValues", "clientSecret", "hasValue") != true {
			t.Fatalf("admin state = %v", st)
		}
		if st := oauthState(tokUserA); st["isAdmin"] != false || st["hasPendingOAuth"] != true || st["pendingValues"] != nil {
			t.Fatalf("user state = %v", st)
		}
		if st := oauthState(tokAdminB); st["hasPendingOAuth"] != false {
			t.Fatalf("account B sees A's app: %v", st)
		}

		t.Run("anonymous flow uses the connector's app and promotes nothing", func(t *testing.T) {
			r := e.oauthLogin("", "alice")
			if r.Status != 200 {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
			if u := userOf(r); u.OAuthAppRef != "" {
				t.Fatalf("anonymous login used app %q", u.OAuthAppRef)
			}
			if e.mgd.Count("/token") != 0 || oauthState(tokAdminA)["hasPendingOAuth"] != true {
				t.Fatal("anonymous login touched the managed app")
			}
		})
		t.Run("another account's flow does not promote", func(t *testing.T) {
			r := e.oauthLogin(tokAdminB, "bob")
			if r.Status != 200 || userOf(r).OAuthAppRef != "" {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
			if oauthState(tokAdminA)["hasAccountOAuth"] != false {
				t.Fatal("promoted by another account")
			}
		})
		t.Run("a denied flow of the account does not promote", func(t *testing.T) {
			r := e.oauthLogin(tokUserA, "")
			if r.Status == 200 && r.Body["jwtToken"] != nil {
				t.Fatalf("denied login succeeded: %s", r.Raw)
			}
			if st := oauthState(tokAdminA); st["hasAccountOAuth"] != false || st["hasPendingOAuth"] != true {
				t.Fatalf("after denied login: %v", st)
			}
		})

		var managedUser *store.User
		t.Run("a successful flow of the account promotes in place", func(t *testing.T) {
			pending, _, err := e.store.CurrentOAuthApps(ctx, "ringcentral", "100", "oauthcrm")
			if err != nil || pending == nil {
				t.Fatalf("pending app: %v %v", pending, err)
			}
			r := e.oauthLogin(tokUserA, "alice")
			if r.Status != 200 {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
			managedUser = userOf(r)
			if managedUser.OAuthAppRef != pending.ID {
				t.Fatalf("login used app %q, want the pending %q", managedUser.OAuthAppRef, pending.ID)
			}
			tr := e.mgd.TokenRequests()
			if len(tr) != 1 || tr[0].Grant() != "authorization_code" || (tr[0].BasicUser != "managed-client" && tr[0].Form.Get("client_id") != "managed-client") {
				t.Fatalf("managed provider token requests = %+v", tr)
			}
			_, active, err := e.store.CurrentOAuthApps(ctx, "ringcentral", "100", "oauthcrm")
			if err != nil || active == nil || active.ID != pending.ID || active.ClientSecret != canaryClientSecret || active.PromotedBy != "2" {
				t.Fatalf("active app = %+v, %v", active, err)
			}
			st := oauthState(tokAdminA)
			if st["hasAccountOAuth"] != true || st["hasPendingOAuth"] != false || getMap(st, "oauthValues", "clientSecret", "hasValue") != true {
				t.Fatalf("after promotion: %v", st)
			}
			// Later logins of the account use the active app.
			r = e.oauthLogin(tokUserA3, "bob")
			if r.Status != 200 || userOf(r).OAuthAppRef != pending.ID {
				t.Fatalf("later login: %d %s", r.Status, r.Raw)
			}
		})

		t.Run("refresh uses the managed app", func(t *testing.T) {
			if managedUser == nil {
				t.Skip("no managed login")
			}
			e.mgd.Reset()
			e.def.Reset()
			u, err := e.refresh.Fresh(ctx, managedUser.ID)
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if u.AccessToken == managedUser.AccessToken {
				t.Fatal("token not refreshed")
			}
			tr := e.mgd.TokenRequests()
			if len(tr) != 1 || tr[0].Grant() != "refresh_token" || (tr[0].BasicUser != "managed-client" && tr[0].Form.Get("client_id") != "managed-client") {
				t.Fatalf("managed provider refresh requests = %+v", tr)
			}
			if len(e.def.TokenRequests()) != 0 {
				t.Fatal("refresh went to the connector's own app")
			}
		})

		t.Run("URL guards", func(t *testing.T) {
			for name, vals := range map[string]map[string]any{
				"host outside the patterns": {"clientId": "c", "clientSecret": "s", "accessTokenUri": "https://evil.example.com/token"},
				"not a URL":                 {"clientId": "c", "clientSecret": "s", "accessTokenUri": "token"},
				"missing client id":         {"clientSecret": "s", "accessTokenUri": e.mgd.TokenURL()},
				"control char in secret":    {"clientId": "c", "clientSecret": "s\r\n", "accessTokenUri": e.mgd.TokenURL()},
				"javascript redirect":       {"clientId": "c", "clientSecret": "s", "accessTokenUri": e.mgd.TokenURL(), "redirectUri": "javascript:alert(1)"},
			} {
				r := e.do(http.MethodPost, "/admin/managedOAuth/cache", map[string]any{"platform": "oauthcrm", "values": vals}, rcTok(tokAdminA))
				if r.Status != 400 {
					t.Errorf("%s: %d %s", name, r.Status, r.Raw)
				}
			}
			if st := oauthState(tokAdminA); st["hasPendingOAuth"] != false {
				t.Fatalf("a rejected submission was stored: %v", st)
			}
		})

		t.Run("explicit deletes", func(t *testing.T) {
			r := e.do(http.MethodPost, "/admin/managedOAuth/cache", map[string]any{"platform": "oauthcrm", "values": map[string]any{
				"clientId": "managed-client", "accessTokenUri": e.mgd.TokenURL(),
			}}, rcTok(tokAdminA))
			if r.Status != 200 {
				t.Fatalf("resubmit without secret (kept from the active app): %d %s", r.Status, r.Raw)
			}
			pending, _, _ := e.store.CurrentOAuthApps(ctx, "ringcentral", "100", "oauthcrm")
			if pending == nil || pending.ClientSecret != canaryClientSecret {
				t.Fatalf("pending = %+v", pending)
			}
			if r := e.do(http.MethodDelete, "/admin/managedOAuth/cache?platform=oauthcrm", nil, rcTok(tokAdminB)); r.Status != 200 || r.Body["deleted"] != float64(0) {
				t.Fatalf("B deleting: %d %s", r.Status, r.Raw)
			}
			if r := e.do(http.MethodDelete, "/admin/managedOAuth/cache?platform=oauthcrm", nil, rcTok(tokAdminA)); r.Status != 200 || r.Body["deleted"] != float64(1) {
				t.Fatalf("delete pending: %d %s", r.Status, r.Raw)
			}
			if st := oauthState(tokAdminA); st["hasPendingOAuth"] != false || st["hasAccountOAuth"] != true {
				t.Fatalf("after deleting pending: %v", st)
			}
			if r := e.do(http.MethodDelete, "/admin/managedOAuth/account?platform=oauthcrm", nil, rcTok(tokAdminA)); r.Status != 200 || r.Body["deleted"] != float64(1) {
				t.Fatalf("delete account app: %d %s", r.Status, r.Raw)
			}
			if st := oauthState(tokAdminA); st["hasAccountOAuth"] != false {
				t.Fatalf("after deleting the account app: %v", st)
			}
			if managedUser != nil {
				cur, err := e.store.GetUser(ctx, managedUser.ID)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := e.refresh.ForceRefresh(ctx, managedUser.ID, cur.Version); !failure.Is(err, failure.Misconfigured) {
					t.Fatalf("refresh after deletion: %v, want misconfigured", err)
				}
			}
			r = e.do(http.MethodGet, "/admin/audit?platform=oauthcrm", nil, rcTok(tokAdminA))
			var actions []string
			for _, ev := range r.Body["events"].([]any) {
				actions = append(actions, ev.(map[string]any)["action"].(string))
			}
			want := "oauth_app.account_deleted oauth_app.pending_deleted oauth_app.pending_set oauth_app.promoted oauth_app.pending_set"
			if strings.Join(actions, " ") != want {
				t.Fatalf("audit actions = %v, want %s", actions, want)
			}
		})
	})
}
