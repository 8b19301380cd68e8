package plugins_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connectd/connectd/connectors/redact"
	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/server/plugins"
)

// A call log as App Connect sends it, with personal data in the note.
const noteWithPII = "Call with jane.doe@example.com, call back on +1 (650) 555-0123. Card 4111 1111 1111 1111 expires soon; ref 4111 1111 1111 1112."

func callData(note string) map[string]any {
	return map[string]any{
		"logInfo": map[string]any{
			"id": "call-1", "sessionId": "s-42", "direction": "Inbound", "startTime": 1764150000000, "duration": 93,
			"result": "Call connected", "from": map[string]any{"phoneNumber": "+16505550123", "name": "Jane Doe"},
			"to": map[string]any{"phoneNumber": "+16505550100", "name": "Front desk"},
		},
		"contactId": "c-7", "contactName": "Jane Doe", "note": note, "additionalSubmission": map[string]any{},
	}
}

const wantRedacted = "Call with " + redact.EmailMark + ", call back on " + redact.PhoneMark + ". Card " + redact.CardMark + " expires soon; ref 4111 1111 1111 1112."

func TestContractBRegisterAndBearers(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{})

		t.Run("register refusals", func(t *testing.T) {
			for _, tc := range []struct {
				name   string
				body   any
				status int
				msg    string
			}{
				{"account mismatch", map[string]string{"rcAccessToken": rcTokenAcct1, "rcAccountId": "acct-2"}, 403, "rcAccountId mismatch"},
				{"unknown token", map[string]string{"rcAccessToken": "nope", "rcAccountId": "acct-1"}, 400, "Plugin registration failed"},
				{"missing account", map[string]string{"rcAccessToken": rcTokenAcct1}, 400, "Plugin registration failed"},
				{"operator identity token", map[string]string{"rcAccessToken": "cdi_x.y.z", "rcAccountId": "acct-1"}, 400, "Plugin registration failed"},
				{"RingCentral down", map[string]string{"rcAccessToken": "rc-down", "rcAccountId": "acct-1"}, 503, "unavailable"},
				{"not JSON", "rcAccessToken=x", 400, "JSON"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					r := e.h.Do(t, "POST", "/plugins/v2/redact/register", tc.body)
					if r.Status != tc.status || !strings.Contains(string(r.Body), tc.msg) {
						t.Fatalf("got %d %s, want %d containing %q", r.Status, r.Body, tc.status, tc.msg)
					}
				})
			}
		})

		redactA := e.register(t, "redact", rcTokenAcct1, "acct-1")
		redactB := e.register(t, "redact", rcTokenAcct1, "acct-1") // a second install of the same account
		boxBearer := e.register(t, "dropbox", rcTokenAcct1, "acct-1")
		installs, err := e.h.Store.ListPluginInstalls(context.Background(), "redact", store.HostIdentity{Kind: "ringcentral", AccountID: "acct-1"})
		if err != nil || len(installs) != 2 || installs[0].SessionID == installs[1].SessionID {
			t.Fatalf("installs = %+v, %v; want two distinct bearer sessions", installs, err)
		}

		t.Run("sync redact with each bearer", func(t *testing.T) {
			for _, tok := range []string{redactA, redactB} {
				r := e.h.Do(t, "POST", "/plugins/v2/redact/process",
					map[string]any{"data": callData(noteWithPII), "config": nil, "hashedExtensionId": "h-1"}, "Authorization", "Bearer "+tok)
				if r.Status != 200 {
					t.Fatalf("process: %d %s", r.Status, r.Body)
				}
				got := r.JSON(t)
				if got["note"] != wantRedacted {
					t.Fatalf("note = %q\nwant  %q", got["note"], wantRedacted)
				}
				if got["contactName"] != "Jane Doe" || got["contactId"] != "c-7" {
					t.Fatalf("payload not kept: %s", r.Body)
				}
				if _, wrapped := got["data"]; wrapped {
					t.Fatalf("contract B answers the bare payload, got %s", r.Body)
				}
			}
		})

		t.Run("bearer checks", func(t *testing.T) {
			session := e.session(t, "alice", "acct-1")
			for _, tc := range []struct {
				name, path, auth string
				status           int
				msg              string
			}{
				{"missing", "/plugins/v2/redact/process", "", 401, "Bearer token is required"},
				{"garbage", "/plugins/v2/redact/process", "Bearer not.a.jwt", 401, "Invalid bearer token"},
				{"App Connect session is not a plugin bearer", "/plugins/v2/redact/process", "Bearer " + session, 401, "Invalid bearer token"},
				{"redact bearer on dropbox", "/plugins/v2/dropbox/process", "Bearer " + redactA, 403, "another plugin"},
				{"dropbox bearer on redact", "/plugins/v2/redact/process", "Bearer " + boxBearer, 403, "another plugin"},
				{"dropbox bearer on redact licence", "/plugins/v2/redact/license", "Bearer " + boxBearer, 403, "another plugin"},
				{"unknown plugin", "/plugins/v2/nope/process", "Bearer " + redactA, 404, "not found"},
				{"a CRM is not a plugin", "/plugins/v2/testcrm/process", "Bearer " + redactA, 404, "not found"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					method := "POST"
					if strings.HasSuffix(tc.path, "/license") {
						method = "GET"
					}
					var hdr []string
					if tc.auth != "" {
						hdr = []string{"Authorization", tc.auth}
					}
					r := e.h.Do(t, method, tc.path, map[string]any{"data": callData("x")}, hdr...)
					if r.Status != tc.status || !strings.Contains(strings.ToLower(string(r.Body)), strings.ToLower(tc.msg)) {
						t.Fatalf("got %d %s, want %d containing %q", r.Status, r.Body, tc.status, tc.msg)
					}
				})
			}
		})

		t.Run("malformed bodies", func(t *testing.T) {
			for _, tc := range []struct {
				name, body, msg string
			}{
				{"empty", "", "A JSON body is required"},
				{"not JSON", "data=1", "JSON"},
				{"trailing garbage", `{"data": {}} {}`, "JSON"},
				{"no data", `{"config": {}}`, `"data" object`},
				{"data null", `{"data": null}`, `"data" object`},
				{"data array", `{"data": [1, 2]}`, `"data" must be a JSON object`},
				{"data string", `{"data": "note"}`, `"data" must be a JSON object`},
				{"config string", `{"data": {}, "config": "x"}`, `"config" must be a JSON object`},
				{"note not a string", `{"data": {"note": 5}}`, "note must be a string"},
				{"wrong type", `{"data": {}, "asyncTaskId": 5}`, "asyncTaskId"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					var body any
					if tc.body != "" {
						body = tc.body
					}
					r := e.h.Do(t, "POST", "/plugins/v2/redact/process", body, "Authorization", "Bearer "+redactA)
					if r.Status != 400 || !strings.Contains(str(r.JSON(t)["message"]), tc.msg) {
						t.Fatalf("got %d %s, want 400 containing %q", r.Status, r.Body, tc.msg)
					}
				})
			}
		})

		t.Run("oversize", func(t *testing.T) {
			big := `{"data": {"note": "` + strings.Repeat("a", plugins.DefaultBodyLimit+10) + `"}}`
			r := e.h.Do(t, "POST", "/plugins/v2/redact/process", big, "Authorization", "Bearer "+redactA)
			if r.Status != http.StatusRequestEntityTooLarge {
				t.Fatalf("got %d %s, want 413", r.Status, r.Body)
			}
		})

		t.Run("licence without requireLicense", func(t *testing.T) {
			r := e.h.Do(t, "GET", "/plugins/v2/redact/license", nil, "Authorization", "Bearer "+redactA)
			if r.Status != 200 || r.JSON(t)["licenseStatus"] != true {
				t.Fatalf("licence: %d %s", r.Status, r.Body)
			}
		})

		e.h.AssertNoLeak(t, rcTokenAcct1, rcTokenAcct2, boxClientSecret)
	})
}

func TestContractBAsyncDropbox(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{})
		ctx := context.Background()
		bearer := e.register(t, "dropbox", rcTokenAcct1, "acct-1")
		auth := []string{"Authorization", "Bearer " + bearer}
		cbURL := e.ac.srv.URL + "/callbacks/ac-task-1"
		body := map[string]any{"data": callData("Customer asked for a quote."), "config": map[string]any{},
			"asyncTaskId": "ac-task-1", "callbackUrl": cbURL, "hashedExtensionId": "h-ext-1"}

		state := e.h.Do(t, "GET", "/plugins/v2/dropbox/auth-state", nil, auth...)
		if state.Status != 200 || state.JSON(t)["successful"] != false {
			t.Fatalf("auth-state before connect: %d %s", state.Status, state.Body)
		}
		if r := e.h.Do(t, "POST", "/plugins/v2/dropbox/process", body, auth...); r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "Connect") {
			t.Fatalf("process before connecting: %d %s, want 409", r.Status, r.Body)
		}

		// Connect Dropbox (the manifest's authorizationUrl, then the browser).
		r := e.h.Do(t, "GET", "/plugins/v2/dropbox/auth-url?pluginId=dropbox", nil, auth...)
		authURL, _ := r.JSON(t)["authUrl"].(string)
		if r.Status != 200 || !strings.HasPrefix(authURL, e.h.URL+"/plugins/connect/dropbox?ticket=") {
			t.Fatalf("auth-url: %d %s", r.Status, r.Body)
		}
		e.connectDropbox(t, authURL)
		ap := e.box.AuthorizeParams()
		if len(ap) != 1 || ap[0].Get("code_challenge_method") != "S256" || ap[0].Get("token_access_type") != "offline" ||
			ap[0].Get("redirect_uri") != e.h.URL+"/oauth/callback" {
			t.Fatalf("authorize request = %v", ap)
		}
		if tr := e.box.TokenRequests(); len(tr) != 1 || tr[0].Get("code_verifier") == "" {
			t.Fatalf("token request = %v; want PKCE verifier", tr)
		}
		if r := e.h.Do(t, "GET", authURL, nil); r.Status != 400 {
			t.Fatalf("reusing the Connect link: %d, want 400", r.Status)
		}
		if st := e.h.Do(t, "GET", "/plugins/v2/dropbox/auth-state", nil, auth...); st.JSON(t)["successful"] != true {
			t.Fatalf("auth-state after connect: %s", st.Body)
		}
		// Another install of the same account is another owner: not connected.
		other := e.register(t, "dropbox", rcTokenAcct1, "acct-1")
		if st := e.h.Do(t, "GET", "/plugins/v2/dropbox/auth-state", nil, "Authorization", "Bearer "+other); st.JSON(t)["successful"] != false {
			t.Fatalf("auth-state of another bearer: %s", st.Body)
		}

		if r := e.h.Do(t, "POST", "/plugins/v2/dropbox/token-sync", map[string]any{}, auth...); r.Status != 200 {
			t.Fatalf("token-sync: %d %s", r.Status, r.Body)
		}

		t.Run("callback origin allow-list", func(t *testing.T) {
			for _, u := range []string{"https://evil.example.com/cb", "http://169.254.169.254/latest", "ftp://x.ringcentral.com/", "https://ringcentral.com.evil.io/cb"} {
				b := map[string]any{"data": callData("x"), "asyncTaskId": "bad", "callbackUrl": u}
				r := e.h.Do(t, "POST", "/plugins/v2/dropbox/process", b, auth...)
				if r.Status != 400 || !strings.Contains(string(r.Body), "callbackUrl") {
					t.Fatalf("callback %s: %d %s, want 400", u, r.Status, r.Body)
				}
			}
		})

		acc := e.h.Do(t, "POST", "/plugins/v2/dropbox/process", body, auth...)
		if acc.Status != 200 {
			t.Fatalf("process: %d %s", acc.Status, acc.Body)
		}
		a := acc.JSON(t)
		taskID, _ := a["taskId"].(string)
		if a["accepted"] != true || a["asyncTaskId"] != "ac-task-1" || taskID == "" {
			t.Fatalf("accept answer: %s", acc.Body)
		}
		// App Connect retrying the same call gets the same task.
		if again := e.h.Do(t, "POST", "/plugins/v2/dropbox/process", body, auth...); again.JSON(t)["taskId"] != taskID {
			t.Fatalf("resubmission created another task: %s", again.Body)
		}
		if v := gauge(t, e.reg, "connectd_plugin_tasks", map[string]string{"state": "accepted"}); v != 1 {
			t.Fatalf("queue depth accepted = %v, want 1", v)
		}

		// First callback attempt: App Connect answers 503; the upload has
		// happened and is not repeated on the retry.
		e.ac.failNext(http.StatusServiceUnavailable)
		e.runJobs(t)
		if cbs := e.ac.callbacks(); len(cbs) != 1 {
			t.Fatalf("callbacks after first pass = %d", len(cbs))
		}
		task, err := e.h.Store.GetPluginTask(ctx, taskID)
		if err != nil || task.State != store.TaskRunning || !task.Processed || task.Attempts != 1 {
			t.Fatalf("task after failed callback = %+v, %v", task, err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for len(e.ac.callbacks()) < 2 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			e.runJobs(t)
		}
		cbs := e.ac.callbacks()
		if len(cbs) != 2 {
			t.Fatalf("callbacks = %d, want 2 (one refused, one acknowledged)", len(cbs))
		}
		wantMsg := "Call summary saved to Dropbox: /App Connect calls/call-ac-task-1.txt"
		for _, cb := range cbs {
			if cb.Body["asyncTaskId"] != "ac-task-1" || cb.Body["successful"] != true || cb.Body["message"] != wantMsg ||
				cb.Header.Get("Idempotency-Key") != "ac-task-1" {
				t.Fatalf("callback = %v %v", cb.Body, cb.Header)
			}
		}
		ups := e.box.Uploads()
		if len(ups) != 1 || ups[0].Mode != "overwrite" || ups[0].ContentType != "application/octet-stream" {
			t.Fatalf("uploads = %+v, want one overwrite upload", ups)
		}
		file := e.box.Files()["/app connect calls/call-ac-task-1.txt"]
		for _, want := range []string{"Contact: Jane Doe", "Direction: Inbound", "Duration (s): 93", "Customer asked for a quote."} {
			if !strings.Contains(file, want) {
				t.Fatalf("file lacks %q:\n%s", want, file)
			}
		}

		view := e.h.Do(t, "GET", "/plugins/v2/dropbox/tasks/"+taskID, nil, auth...)
		v := view.JSON(t)
		if view.Status != 200 || v["state"] != "delivered" || v["successful"] != true || v["asyncTaskId"] != "ac-task-1" || v["message"] != wantMsg {
			t.Fatalf("task view: %d %s", view.Status, view.Body)
		}
		if r := e.h.Do(t, "GET", "/plugins/v2/dropbox/tasks/"+taskID, nil, "Authorization", "Bearer "+other); r.Status != 404 {
			t.Fatalf("another owner's task read: %d, want 404", r.Status)
		}
		if v := gauge(t, e.reg, "connectd_plugin_tasks", map[string]string{"state": "delivered"}); v != 1 {
			t.Fatalf("delivered gauge = %v", v)
		}
		if v := gauge(t, e.reg, "connectd_plugin_callback_attempts_total", map[string]string{"result": "error"}); v != 1 {
			t.Fatalf("callback error counter = %v", v)
		}

		// Upstream 5xx on the upload is retried; the task is delivered.
		e.box.FailUploads(1, http.StatusInternalServerError)
		body2 := map[string]any{"data": callData("second"), "asyncTaskId": "ac-task-2", "callbackUrl": e.ac.srv.URL + "/callbacks/ac-task-2"}
		if r := e.h.Do(t, "POST", "/plugins/v2/dropbox/process", body2, auth...); r.Status != 200 {
			t.Fatalf("process 2: %d %s", r.Status, r.Body)
		}
		deadline = time.Now().Add(20 * time.Second)
		for len(e.ac.callbacks()) < 3 && time.Now().Before(deadline) {
			e.runJobs(t)
			time.Sleep(100 * time.Millisecond)
		}
		if cbs := e.ac.callbacks(); len(cbs) != 3 || cbs[2].Body["asyncTaskId"] != "ac-task-2" || cbs[2].Body["successful"] != true {
			t.Fatalf("callbacks = %+v", cbs)
		}

		// Logout: login deleted and revoked at Dropbox.
		if r := e.h.Do(t, "POST", "/plugins/v2/dropbox/logout", map[string]any{}, auth...); r.Status != 200 || r.JSON(t)["successful"] != true {
			t.Fatalf("logout: %d %s", r.Status, r.Body)
		}
		if len(e.box.Revoked()) != 1 {
			t.Fatalf("revoked at Dropbox = %v", e.box.Revoked())
		}
		if st := e.h.Do(t, "GET", "/plugins/v2/dropbox/auth-state", nil, auth...); st.JSON(t)["successful"] != false {
			t.Fatalf("auth-state after logout: %s", st.Body)
		}
		e.h.AssertNoLeak(t, boxClientSecret, rcTokenAcct1)
		for _, u := range ups {
			e.h.AssertNoLeak(t, u.Token)
		}
	})
}

func TestContractA(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{})
		ctx := context.Background()
		alice := e.session(t, "alice", "acct-1")
		bob := e.session(t, "bob", "acct-2")

		t.Run("sync with jwtToken query and bearer", func(t *testing.T) {
			for _, how := range []struct {
				path string
				hdr  []string
			}{
				{"/plugin/redact?jwtToken=" + alice, nil},
				{"/plugin/redact", []string{"Authorization", "Bearer " + alice}},
			} {
				r := e.h.Do(t, "POST", how.path, map[string]any{"data": callData(noteWithPII)}, how.hdr...)
				if r.Status != 200 || r.JSON(t)["note"] != wantRedacted {
					t.Fatalf("%s: %d %s", how.path, r.Status, r.Body)
				}
			}
		})
		t.Run("session required", func(t *testing.T) {
			pluginBearer := e.register(t, "redact", rcTokenAcct1, "acct-1")
			for _, path := range []string{"/plugin/redact", "/plugin/redact?jwtToken=bad", "/plugin/redact?jwtToken=" + pluginBearer} {
				if r := e.h.Do(t, "POST", path, map[string]any{"data": callData("x")}); r.Status != 401 {
					t.Fatalf("%s: %d %s, want 401", path, r.Status, r.Body)
				}
			}
			if r := e.h.Do(t, "GET", "/plugins/checkAuth/dropbox", nil); r.Status != 401 {
				t.Fatalf("checkAuth without session: %d", r.Status)
			}
		})

		q := "?jwtToken=" + alice
		if r := e.h.Do(t, "GET", "/plugins/checkAuth/dropbox"+q, nil); r.Status != 200 || r.JSON(t)["successful"] != false {
			t.Fatalf("checkAuth before: %d %s", r.Status, r.Body)
		}
		r := e.h.Do(t, "GET", "/plugins/generateAuthUrl/dropbox"+q, nil)
		authURL, _ := r.JSON(t)["authUrl"].(string)
		if r.Status != 200 || authURL == "" {
			t.Fatalf("generateAuthUrl: %d %s", r.Status, r.Body)
		}
		e.connectDropbox(t, authURL)
		if r := e.h.Do(t, "GET", "/plugins/checkAuth/dropbox"+q, nil); r.JSON(t)["successful"] != true {
			t.Fatalf("checkAuth after: %s", r.Body)
		}
		if r := e.h.Do(t, "GET", "/plugins/checkAuth/dropbox?jwtToken="+bob, nil); r.JSON(t)["successful"] != false {
			t.Fatalf("bob sees alice's login: %s", r.Body)
		}

		acc := e.h.Do(t, "POST", "/plugin/dropbox"+q, map[string]any{"data": callData("A-side note"), "callbackUrl": e.ac.srv.URL + "/cb"})
		a := acc.JSON(t)
		id, _ := a["asyncTaskId"].(string)
		if acc.Status != 200 || a["accepted"] != true || id == "" {
			t.Fatalf("async accept: %d %s", acc.Status, acc.Body)
		}
		if tv := e.h.Do(t, "GET", "/plugin/dropbox/tasks/"+id+q, nil); tv.JSON(t)["state"] != "accepted" {
			t.Fatalf("task before jobs: %s", tv.Body)
		}
		e.runJobs(t)
		cbs := e.ac.callbacks()
		if len(cbs) != 1 || cbs[0].Body["asyncTaskId"] != id || cbs[0].Body["successful"] != true {
			t.Fatalf("callbacks = %+v", cbs)
		}
		tv := e.h.Do(t, "GET", "/plugin/dropbox/tasks/"+id+q, nil)
		if tv.Status != 200 || tv.JSON(t)["state"] != "delivered" || !strings.Contains(str(tv.JSON(t)["message"]), "call-"+id+".txt") {
			t.Fatalf("task view: %d %s", tv.Status, tv.Body)
		}
		if r := e.h.Do(t, "GET", "/plugin/dropbox/tasks/"+id+"?jwtToken="+bob, nil); r.Status != 404 {
			t.Fatalf("bob reads alice's task: %d, want 404", r.Status)
		}
		if r := e.h.Do(t, "GET", "/plugin/dropbox/tasks/not-a-uuid"+q, nil); r.Status != 404 {
			t.Fatalf("bad task id: %d", r.Status)
		}

		// Logout with the body token (the seed's shape).
		if r := e.h.Do(t, "POST", "/plugins/logout/dropbox", map[string]string{"jwtToken": alice}); r.Status != 200 {
			t.Fatalf("logout: %d %s", r.Status, r.Body)
		}
		if r := e.h.Do(t, "GET", "/plugins/checkAuth/dropbox"+q, nil); r.JSON(t)["successful"] != false {
			t.Fatalf("checkAuth after logout: %s", r.Body)
		}
		if len(e.box.Revoked()) != 1 {
			t.Fatalf("revoked at Dropbox = %v", e.box.Revoked())
		}
		if r := e.h.Do(t, "POST", "/plugins/logout/dropbox", map[string]string{"jwtToken": "bad"}); r.Status != 401 {
			t.Fatalf("logout with a bad token: %d", r.Status)
		}

		t.Run("licence", func(t *testing.T) {
			if r := e.h.Do(t, "GET", "/plugins/licenseStatus/redact", nil); r.Status != 200 || r.JSON(t)["licenseStatus"] != true {
				t.Fatalf("redact licence without session: %d %s", r.Status, r.Body)
			}
			r := e.h.Do(t, "GET", "/plugins/licenseStatus/redactpaid", nil)
			if m := r.JSON(t); r.Status != 200 || m["licenseStatus"] != false || m["errorMessage"] == "" {
				t.Fatalf("paid licence without session: %d %s", r.Status, r.Body)
			}
			until := time.Now().Add(30 * 24 * time.Hour)
			if err := e.h.Store.PutLicense(ctx, &store.License{PluginID: "redactpaid", HostKind: "ringcentral", HostAccountID: "acct-1",
				Valid: true, Description: "License: Team", ValidUntil: &until}); err != nil {
				t.Fatal(err)
			}
			if m := e.h.Do(t, "GET", "/plugins/licenseStatus/redactpaid"+q, nil).JSON(t); m["licenseStatus"] != true || m["licenseStatusDescription"] != "License: Team" {
				t.Fatalf("acct-1 licence = %v", m)
			}
			if m := e.h.Do(t, "GET", "/plugins/licenseStatus/redactpaid?jwtToken="+bob, nil).JSON(t); m["licenseStatus"] != false {
				t.Fatalf("acct-2 licence = %v", m)
			}
			if r := e.h.Do(t, "POST", "/plugin/redactpaid"+q, map[string]any{"data": callData(noteWithPII)}); r.Status != 200 || r.JSON(t)["note"] != wantRedacted {
				t.Fatalf("licensed process: %d %s", r.Status, r.Body)
			}
			if r := e.h.Do(t, "POST", "/plugin/redactpaid?jwtToken="+bob, map[string]any{"data": callData(noteWithPII)}); r.Status != 403 || !strings.Contains(string(r.Body), "licence") {
				t.Fatalf("unlicensed process: %d %s", r.Status, r.Body)
			}
		})
		e.h.AssertNoLeak(t, boxClientSecret)
	})
}

func TestContractAExternalJWT(t *testing.T) {
	const secret = "shared-hs256-secret-of-app-connect-0123456789"
	e := newEnv(t, storetest.SQLite, envOptions{
		External: map[string]plugins.ExternalJWT{"redact": {SecretEnv: "EXT_APPCONNECT_SECRET", Issuer: "https://appconnect.example"}},
		Getenv: func(k string) string {
			if k == "EXT_APPCONNECT_SECRET" {
				return secret
			}
			return ""
		},
	})
	now := time.Now()
	sign := func(m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := jwt.MapClaims{"id": "12345-pipedrive", "platform": "pipedrive", "iss": "https://appconnect.example", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for kk, vv := range good {
			c[kk] = vv
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, good).SignedString(jwt.UnsafeAllowNoneSignatureType)
	for _, tc := range []struct {
		name   string
		path   string
		token  string
		status int
	}{
		{"valid", "/plugin/redact", sign(jwt.SigningMethodHS256, []byte(secret), good), 200},
		{"alg none", "/plugin/redact", none, 401},
		{"HS512", "/plugin/redact", sign(jwt.SigningMethodHS512, []byte(secret), good), 401},
		{"wrong secret", "/plugin/redact", sign(jwt.SigningMethodHS256, []byte(secret+"x"), good), 401},
		{"no exp", "/plugin/redact", sign(jwt.SigningMethodHS256, []byte(secret), with("exp", nil)), 401},
		{"expired", "/plugin/redact", sign(jwt.SigningMethodHS256, []byte(secret), with("exp", now.Add(-time.Hour).Unix())), 401},
		{"other issuer", "/plugin/redact", sign(jwt.SigningMethodHS256, []byte(secret), with("iss", "https://evil.example")), 401},
		{"no id", "/plugin/redact", sign(jwt.SigningMethodHS256, []byte(secret), with("id", nil)), 401},
		{"plugin not configured for external JWTs", "/plugin/redactpaid", sign(jwt.SigningMethodHS256, []byte(secret), good), 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.h.Do(t, "POST", tc.path+"?jwtToken="+tc.token, map[string]any{"data": callData(noteWithPII)})
			if r.Status != tc.status {
				t.Fatalf("got %d %s, want %d", r.Status, r.Body, tc.status)
			}
			if tc.status == 200 && r.JSON(t)["note"] != wantRedacted {
				t.Fatalf("note = %s", r.Body)
			}
		})
	}
	t.Run("short secret refused at start", func(t *testing.T) {
		_, err := plugins.New(plugins.Options{Plugins: e.svc, Auth: e.h.Engine.Auth, Connect: e.h.Engine.Connect,
			Sessions: e.h.Sessions, Store: e.h.Store, PublicURL: e.h.URL,
			External: map[string]plugins.ExternalJWT{"redact": {SecretEnv: "S"}}, Getenv: func(string) string { return "short" }})
		if err == nil || strings.Contains(err.Error(), "short") {
			t.Fatalf("err = %v; want a refusal that does not echo the secret", err)
		}
	})
	e.h.AssertNoLeak(t, secret)
}

func TestBearerRotation(t *testing.T) {
	clk := clock.NewFake(time.Now())
	e := newEnv(t, storetest.SQLite, envOptions{Clock: clk})
	tok := e.register(t, "redact", rcTokenAcct1, "acct-1")
	if r := e.h.Do(t, "POST", "/plugins/v2/redact/token-sync", map[string]any{}, "Authorization", "Bearer "+tok); r.Header.Get(plugins.RefreshedTokenHeader) != "" {
		t.Fatalf("a fresh bearer was rotated")
	}
	clk.Advance(8 * 24 * time.Hour) // a week or less left
	r := e.h.Do(t, "POST", "/plugins/v2/redact/token-sync", map[string]any{}, "Authorization", "Bearer "+tok)
	fresh := r.Header.Get(plugins.RefreshedTokenHeader)
	if r.Status != 200 || fresh == "" || fresh == tok {
		t.Fatalf("token-sync: %d, rotated=%q", r.Status, fresh)
	}
	for _, b := range []string{fresh, tok} {
		if r := e.h.Do(t, "POST", "/plugins/v2/redact/process", map[string]any{"data": callData("x")}, "Authorization", "Bearer "+b); r.Status != 200 {
			t.Fatalf("bearer after rotation: %d %s", r.Status, r.Body)
		}
	}
	clk.Advance(7 * 24 * time.Hour) // the old token has expired; the rotated one lives on
	if r := e.h.Do(t, "POST", "/plugins/v2/redact/process", map[string]any{"data": callData("x")}, "Authorization", "Bearer "+tok); r.Status != 401 {
		t.Fatalf("expired bearer: %d", r.Status)
	}
}
