package admin_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
)

// Host tokens at the fake RingCentral.
const (
	tokAdminA = "rc-admin-a"
	tokUserA  = "rc-user-a"
	tokUserA3 = "rc-user-a3"
	tokAdminB = "rc-admin-b"
	tokUserB  = "rc-user-b"
)

func seedRC(e *env) {
	e.rc.add(tokAdminA, rcUser{Account: "100", Ext: "1", Name: "Ada Admin", Admin: true})
	e.rc.add(tokUserA, rcUser{Account: "100", Ext: "2", Name: "Uma User"})
	e.rc.add(tokUserA3, rcUser{Account: "100", Ext: "3", Name: "Theo Third"})
	e.rc.add(tokAdminB, rcUser{Account: "200", Ext: "9", Name: "Bea Admin", Admin: true})
	e.rc.add(tokUserB, rcUser{Account: "200", Ext: "8", Name: "Ben User"})
}

// setFields posts an admin edit and fails the test unless it answers want.
func (e *env) setFields(tok string, want int, body map[string]any) resp {
	e.t.Helper()
	r := e.do(http.MethodPost, "/admin/managedAuth", body, rcTok(tok))
	if r.Status != want {
		e.t.Fatalf("POST /admin/managedAuth: status %d, want %d: %s", r.Status, want, r.Raw)
	}
	return r
}

func TestAdminAuthorization(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend)
		seedRC(e)
		e.setFields(tokAdminA, http.StatusOK, map[string]any{"platform": "acme", "scope": "org", "values": map[string]any{"tenantId": canaryTenant, "siteName": "site-a"}})

		cases := []struct {
			name, method, path string
			body               any
			hdr                map[string]string
			want               int
			code               string
		}{
			{"no token", http.MethodGet, "/admin/managedAuth?platform=acme", nil, nil, 401, "unauthenticated"},
			{"unknown RC token", http.MethodGet, "/admin/managedAuth?platform=acme", nil, rcTok("nope"), 401, "unauthenticated"},
			{"non-admin read", http.MethodGet, "/admin/managedAuth?platform=acme", nil, rcTok(tokUserA), 403, "forbidden"},
			{"non-admin write", http.MethodPost, "/admin/managedAuth", map[string]any{"platform": "acme", "values": map[string]any{"tenantId": "x"}}, rcTok(tokUserA), 403, "forbidden"},
			{"non-admin oauth cache", http.MethodPost, "/admin/managedOAuth/cache", map[string]any{"platform": "oauthcrm", "values": map[string]any{"clientId": "x"}}, rcTok(tokUserA), 403, "forbidden"},
			{"non-admin delete", http.MethodDelete, "/admin/managedOAuth/account?platform=oauthcrm", nil, rcTok(tokUserA), 403, "forbidden"},
			{"non-admin audit", http.MethodGet, "/admin/audit?platform=acme", nil, rcTok(tokUserA), 403, "forbidden"},
			{"non-admin operator", http.MethodGet, "/admin/managedAuth?platform=acme", nil, rcTok(e.operatorToken("100", "2", false)), 403, "forbidden"},
			{"platform required without session", http.MethodGet, "/admin/managedAuth", nil, rcTok(tokAdminA), 400, "invalid_request"},
			{"unknown platform", http.MethodGet, "/admin/managedAuth?platform=nope", nil, rcTok(tokAdminA), 404, "not_found"},
			{"bad session", http.MethodGet, "/admin/managedAuth?platform=acme", nil, map[string]string{"X-RC-Access-Token": tokAdminA, "Authorization": "Bearer not-a-jwt"}, 401, "unauthenticated"},
			{"state needs identity", http.MethodGet, "/apiKeyManagedAuthState?platform=acme", nil, nil, 401, "unauthenticated"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := e.do(tc.method, tc.path, tc.body, tc.hdr)
				if r.Status != tc.want || r.Body["error"] != tc.code || r.Body["successful"] != false {
					t.Fatalf("status %d body %s; want %d %s", r.Status, r.Raw, tc.want, tc.code)
				}
			})
		}

		t.Run("admin of B cannot read A", func(t *testing.T) {
			r := e.do(http.MethodGet, "/admin/managedAuth?platform=acme", nil, rcTok(tokAdminB))
			if r.Status != 200 {
				t.Fatalf("status %d %s", r.Status, r.Raw)
			}
			if ov := getMap(r.Body, "orgValues").(map[string]any); len(ov) != 0 || r.Body["hasManagedAuth"] != false {
				t.Fatalf("B sees A's values: %s", r.Raw)
			}
		})
		t.Run("operator account with the same id is another account", func(t *testing.T) {
			r := e.do(http.MethodGet, "/admin/managedAuth?platform=acme", nil, rcTok(e.operatorToken("100", "1", true)))
			if r.Status != 200 || len(getMap(r.Body, "orgValues").(map[string]any)) != 0 {
				t.Fatalf("operator 100 sees ringcentral 100: %d %s", r.Status, r.Raw)
			}
		})
		t.Run("admin of B writes only B", func(t *testing.T) {
			e.setFields(tokAdminB, 200, map[string]any{"platform": "acme", "scope": "org", "values": map[string]any{"tenantId": "tenant-of-b"}, "fieldsToRemove": []string{"siteName"}})
			a := e.do(http.MethodGet, "/admin/managedAuth?platform=acme", nil, rcTok(tokAdminA))
			if getMap(a.Body, "orgValues", "siteName", "value") != "site-a" || getMap(a.Body, "orgValues", "tenantId", "hasValue") != true {
				t.Fatalf("A's values changed by B: %s", a.Raw)
			}
			vals, err := e.store.ManagedValuesFor(context.Background(), "ringcentral", "100", "acme", "")
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, v := range vals {
				got[v.Field] = v.Value
			}
			if got["tenantId"] != canaryTenant || got["siteName"] != "site-a" {
				t.Fatalf("stored A values = %v", got)
			}
		})
		t.Run("session of the same account names the platform", func(t *testing.T) {
			hostA := store.HostIdentity{Kind: "ringcentral", AccountID: "100", UserID: "1"}
			u, err := e.store.UpsertUser(context.Background(), &store.User{Platform: "acme", CRMUserID: "a1", AppConnectID: "a1-acme", Host: hostA, APIKey: "k", Status: store.StatusActive})
			if err != nil {
				t.Fatal(err)
			}
			tok, _, err := e.sessions.IssueAppConnect(context.Background(), u.ID, u.AppConnectID, "acme", hostA)
			if err != nil {
				t.Fatal(err)
			}
			r := e.do(http.MethodGet, "/admin/managedAuth", nil, map[string]string{"X-RC-Access-Token": tokAdminA, "Authorization": "Bearer " + tok})
			if r.Status != 200 || r.Body["platform"] != "acme" || getMap(r.Body, "orgValues", "tenantId", "hasValue") != true {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
			r = e.do(http.MethodGet, "/admin/managedAuth?platform=oauthcrm", nil, map[string]string{"X-RC-Access-Token": tokAdminA, "Authorization": "Bearer " + tok})
			if r.Status != 400 {
				t.Fatalf("platform other than the session's: %d %s", r.Status, r.Raw)
			}
		})
		t.Run("session of account B with admin A's identity", func(t *testing.T) {
			hostB := store.HostIdentity{Kind: "ringcentral", AccountID: "200", UserID: "8"}
			u, err := e.store.UpsertUser(context.Background(), &store.User{Platform: "acme", CRMUserID: "b1", AppConnectID: "b1-acme", Host: hostB, APIKey: "k", Status: store.StatusActive})
			if err != nil {
				t.Fatal(err)
			}
			tok, _, err := e.sessions.IssueAppConnect(context.Background(), u.ID, u.AppConnectID, "acme", hostB)
			if err != nil {
				t.Fatal(err)
			}
			r := e.do(http.MethodGet, "/admin/managedAuth", nil, map[string]string{"X-RC-Access-Token": tokAdminA, "Authorization": "Bearer " + tok})
			if r.Status != 403 {
				t.Fatalf("status %d %s", r.Status, r.Raw)
			}
		})
	})
}

func TestAdminValuesNeverReturned(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend)
		seedRC(e)
		e.setFields(tokAdminA, 200, map[string]any{"platform": "acme", "scope": "org", "values": map[string]any{"apiKey": canaryAPIKey, "tenantId": canaryTenant, "siteName": "site-b"}})
		e.setFields(tokAdminA, 200, map[string]any{"platform": "acme", "scope": "user", "rcExtensionId": 2, "rcUserName": "Uma User", "values": map[string]any{"region": canaryRegion}})
		r := e.do(http.MethodGet, "/admin/managedAuth?platform=acme", nil, rcTok(tokAdminA))
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		for _, f := range []string{"apiKey", "tenantId"} {
			v := getMap(r.Body, "orgValues", f).(map[string]any)
			if v["hasValue"] != true || v["value"] != nil {
				t.Errorf("%s = %v, want {hasValue: true} only", f, v)
			}
		}
		if getMap(r.Body, "orgValues", "siteName", "value") != "site-b" {
			t.Errorf("non-secret siteName not shown: %s", r.Raw)
		}
		uv, _ := r.Body["userValues"].([]any)
		if len(uv) != 1 {
			t.Fatalf("userValues = %s", r.Raw)
		}
		u := uv[0].(map[string]any)
		if u["rcExtensionId"] != "2" || u["rcUserName"] != "Uma User" || getMap(u, "fields", "region", "hasValue") != true || getMap(u, "fields", "region", "value") != nil {
			t.Errorf("user values = %v", u)
		}
		if len(r.Body["orgFields"].([]any)) != 3 || len(r.Body["userFields"].([]any)) != 1 {
			t.Errorf("fields: %s", r.Raw)
		}

		bad := []struct {
			name string
			body map[string]any
		}{
			{"oversize", map[string]any{"platform": "acme", "values": map[string]any{"tenantId": strings.Repeat("x", 5000)}}},
			{"control character", map[string]any{"platform": "acme", "values": map[string]any{"tenantId": "a\nb"}}},
			{"NUL", map[string]any{"platform": "acme", "values": map[string]any{"tenantId": "a\x00b"}}},
			{"unmanaged field", map[string]any{"platform": "acme", "values": map[string]any{"note": "x"}}},
			{"unknown field", map[string]any{"platform": "acme", "values": map[string]any{"nope": "x"}}},
			{"user field at account scope", map[string]any{"platform": "acme", "scope": "org", "values": map[string]any{"region": "x"}}},
			{"user scope without extension", map[string]any{"platform": "acme", "scope": "user", "values": map[string]any{"region": "x"}}},
			{"nested value", map[string]any{"platform": "acme", "values": map[string]any{"tenantId": map[string]any{"a": 1}}}},
			{"nothing to change", map[string]any{"platform": "acme", "values": map[string]any{}}},
		}
		for _, tc := range bad {
			t.Run(tc.name, func(t *testing.T) {
				r := e.do(http.MethodPost, "/admin/managedAuth", tc.body, rcTok(tokAdminA))
				if r.Status != 400 || r.Body["error"] != "invalid_request" {
					t.Fatalf("%d %s", r.Status, r.Raw)
				}
			})
		}
		// Nothing changed by the rejected edits.
		vals, _ := e.store.ManagedValuesFor(context.Background(), "ringcentral", "100", "acme", "")
		for _, v := range vals {
			if v.Field == "tenantId" && v.Value != canaryTenant {
				t.Fatalf("tenantId changed to %q", v.Value)
			}
		}

		t.Run("dynamic options", func(t *testing.T) {
			r := e.do(http.MethodPost, "/admin/managedAuth/options", map[string]any{"platform": "acme", "fieldConst": "siteName"}, rcTok(tokAdminA))
			if r.Status != 200 || len(r.Body["options"].([]any)) != 2 {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
			r = e.do(http.MethodPost, "/admin/managedAuth/options", map[string]any{"platform": "acme", "fieldConst": "tenantId"}, rcTok(tokAdminA))
			if r.Status != 400 {
				t.Fatalf("options of an input field: %d %s", r.Status, r.Raw)
			}
		})

		t.Run("audit names fields, never values", func(t *testing.T) {
			r := e.do(http.MethodGet, "/admin/audit?platform=acme", nil, rcTok(tokAdminA))
			evs, _ := r.Body["events"].([]any)
			if r.Status != 200 || len(evs) != 2 {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
			newest := evs[0].(map[string]any)
			if newest["action"] != "managed_values.changed" || newest["target"] != "user:2" || newest["userId"] != "1" ||
				!slices.Equal(strs(newest["fields"]), []string{"set:region"}) {
				t.Errorf("newest event = %v", newest)
			}
			oldest := evs[1].(map[string]any)
			if !slices.Equal(strs(oldest["fields"]), []string{"set:apiKey", "set:siteName", "set:tenantId"}) || oldest["target"] != "account" {
				t.Errorf("oldest event = %v", oldest)
			}
			if strings.Contains(r.Raw, "site-b") {
				t.Errorf("audit leaks a value: %s", r.Raw)
			}
			other := e.do(http.MethodGet, "/admin/audit?platform=acme", nil, rcTok(tokAdminB))
			if evs, _ := other.Body["events"].([]any); other.Status != 200 || len(evs) != 0 {
				t.Errorf("B reads A's audit: %s", other.Raw)
			}
		})
	})
}

func TestManagedAPIKeyLogin(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend)
		seedRC(e)
		state := func(tok string) map[string]any {
			t.Helper()
			r := e.do(http.MethodGet, "/apiKeyManagedAuthState?platform=acme", nil, rcTok(tok))
			if r.Status != 200 {
				t.Fatalf("state: %d %s", r.Status, r.Raw)
			}
			return r.Body
		}
		login := func(tok string, info map[string]any) resp {
			t.Helper()
			return e.do(http.MethodPost, "/apiKeyLogin", map[string]any{"platform": "acme", "additionalInfo": info}, rcTok(tok))
		}

		// Nothing managed yet: every required field is missing.
		st := state(tokUserA)
		if st["hasManagedAuth"] != false || st["visibleFieldConsts"] != nil || !slices.Equal(strs(st["missingRequiredFieldConsts"]), []string{"apiKey", "tenantId", "region"}) {
			t.Fatalf("initial state = %v", st)
		}
		r := login(tokUserA, nil)
		if r.Status != 400 || !slices.Equal(strs(r.Body["missingRequiredFieldConsts"]), []string{"apiKey", "tenantId", "region"}) ||
			getMap(r.Body, "returnMessage", "messageType") != "warning" || getMap(r.Body, "returnMessage", "message") != "Missing required authentication fields." {
			t.Fatalf("login without managed values: %d %s", r.Status, r.Raw)
		}

		e.setFields(tokAdminA, 200, map[string]any{"platform": "acme", "scope": "org", "values": map[string]any{"apiKey": canaryAPIKey, "tenantId": canaryTenant}})
		e.setFields(tokAdminA, 200, map[string]any{"platform": "acme", "scope": "user", "rcExtensionId": "2", "values": map[string]any{"region": canaryRegion}})

		t.Run("user without a user-scope value", func(t *testing.T) {
			st := state(tokUserA3)
			if st["hasManagedAuth"] != true || st["allRequiredFieldsSatisfied"] != false || !slices.Equal(strs(st["missingRequiredFieldConsts"]), []string{"region"}) {
				t.Fatalf("state = %v", st)
			}
			r := login(tokUserA3, nil)
			if r.Status != 400 || !slices.Equal(strs(getMap(r.Body, "returnMessage", "missingRequiredFieldConsts")), []string{"region"}) {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
		})

		t.Run("account and user values resolve", func(t *testing.T) {
			st := state(tokUserA)
			if st["hasManagedAuth"] != true || st["allRequiredFieldsSatisfied"] != true || st["fallbackToManualAuth"] != false ||
				!slices.Equal(strs(st["visibleFieldConsts"]), []string{"siteName", "note"}) || len(strs(st["missingRequiredFieldConsts"])) != 0 {
				t.Fatalf("state = %v", st)
			}
			// A submitted value does not override a stored one.
			r := login(tokUserA, map[string]any{"tenantId": "user-typed-tenant"})
			if r.Status != 200 || r.Body["jwtToken"] == nil || r.Body["name"] != "Acme User" {
				t.Fatalf("login: %d %s", r.Status, r.Raw)
			}
			h := e.acme.last()
			if h.Get("X-Tenant") != canaryTenant || h.Get("X-Region") != canaryRegion {
				t.Fatalf("upstream got tenant %q region %q", h.Get("X-Tenant"), h.Get("X-Region"))
			}
			if n := e.rc.calls.Load(); n > 5 {
				t.Errorf("RingCentral called %d times for 3 tokens: cache not used", n)
			}
		})

		t.Run("failure falls back, success clears it", func(t *testing.T) {
			e.setFields(tokAdminA, 200, map[string]any{"platform": "acme", "values": map[string]any{"tenantId": "stale-tenant"}})
			r := login(tokUserA, nil)
			if r.Status != 400 || r.Body["jwtToken"] != nil {
				t.Fatalf("login with a stale tenant: %d %s", r.Status, r.Raw)
			}
			st := state(tokUserA)
			if st["fallbackToManualAuth"] != true || st["visibleFieldConsts"] != nil {
				t.Fatalf("after failure: %v", st)
			}
			// Another user of the account is not in fallback.
			if state(tokUserA3)["fallbackToManualAuth"] != false {
				t.Fatal("fallback leaked to another user")
			}
			// In fallback, what the user types wins.
			r = login(tokUserA, map[string]any{"tenantId": canaryTenant})
			if r.Status != 200 {
				t.Fatalf("manual login: %d %s", r.Status, r.Raw)
			}
			if st := state(tokUserA); st["fallbackToManualAuth"] != false {
				t.Fatalf("after success: %v", st)
			}
		})

		t.Run("RingCentral outage is 503, not 401", func(t *testing.T) {
			e.rc.add("fresh-token", rcUser{Account: "100", Ext: "5", Admin: true})
			e.rc.down.Store(true)
			defer e.rc.down.Store(false)
			r := e.do(http.MethodGet, "/admin/managedAuth?platform=acme", nil, rcTok("fresh-token"))
			if r.Status != 503 || r.Body["error"] != string(failure.UpstreamUnavailable) {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
		})
	})
}

func TestConcurrentEditsKeepEachOther(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend)
		seedRC(e)
		for round := range 5 {
			var wg sync.WaitGroup
			for _, f := range []string{"apiKey", "tenantId", "siteName"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := e.do(http.MethodPost, "/admin/managedAuth", map[string]any{"platform": "acme", "values": map[string]any{f: f + "-value"}}, rcTok(tokAdminA))
					if r.Status != 200 {
						t.Errorf("round %d %s: %d %s", round, f, r.Status, r.Raw)
					}
				}()
			}
			for i := range 5 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := e.do(http.MethodPost, "/admin/managedAuth", map[string]any{"platform": "acme", "scope": "user", "rcExtensionId": i + 10, "values": map[string]any{"region": "r"}}, rcTok(tokAdminA))
					if r.Status != 200 {
						t.Errorf("user %d: %d %s", i, r.Status, r.Raw)
					}
				}()
			}
			wg.Wait()
			r := e.do(http.MethodGet, "/admin/managedAuth?platform=acme", nil, rcTok(tokAdminA))
			if len(getMap(r.Body, "orgValues").(map[string]any)) != 3 || len(r.Body["userValues"].([]any)) != 5 {
				t.Fatalf("round %d lost an edit: %s", round, r.Raw)
			}
			e.setFields(tokAdminA, 200, map[string]any{"platform": "acme", "fieldsToRemove": []string{"apiKey", "tenantId", "siteName"}})
		}
	})
}

func TestAdminPageShell(t *testing.T) {
	e := newEnv(t, storetest.SQLite)
	req, _ := http.NewRequest(http.MethodGet, e.url+"/admin", nil)
	r, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b := make([]byte, 1<<16)
	n, _ := io.ReadFull(r.Body, b)
	html := string(b[:n])
	csp := r.Header.Get("Content-Security-Policy")
	if r.StatusCode != 200 || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") ||
		!strings.Contains(csp, "frame-ancestors 'none'") || r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("status %d headers %v", r.StatusCode, r.Header)
	}
	if strings.Contains(html, "<script>") || strings.Contains(html, " style=") || strings.Contains(html, "http://") && !strings.Contains(html, "xmlns") {
		t.Fatalf("inline script/style or external asset in page:\n%s", html)
	}
	if !strings.Contains(html, `<option value="acme" data-auth="apiKey">Acme CRM</option>`) || !strings.Contains(html, `<script src="/admin/assets/admin.js" defer></script>`) {
		t.Fatalf("page lacks platforms or script:\n%s", html)
	}
	for _, a := range []string{"/admin/assets/admin.js", "/admin/assets/admin.css", "/admin/assets/icon.svg"} {
		ar := e.do(http.MethodGet, a, nil, nil)
		if ar.Status != 200 || len(ar.Raw) < 50 {
			t.Errorf("%s: %d", a, ar.Status)
		}
	}
	if js := e.do(http.MethodGet, "/admin/assets/admin.js", nil, nil).Raw; strings.Contains(js, "innerHTML") {
		t.Error("admin.js renders with innerHTML")
	}
}
