package appconnect_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/server/servertest"
)

const goodKey = "key-0123456789-secret"

// newAPIKeyEnv is connectd + a fake API-key CRM whose GET /me accepts
// Basic base64("<goodKey>:").
func newAPIKeyEnv(t testing.TB, backend string) (*servertest.Harness, *connectortest.CRM) {
	t.Helper()
	crm := connectortest.NewCRM(t)
	crm.Handle(http.MethodGet, "/me", func(w http.ResponseWriter, r *http.Request) {
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte(goodKey+":"))
		if r.Header.Get("Authorization") != want {
			connectortest.WriteJSON(w, http.StatusUnauthorized, map[string]any{"error": "bad key"})
			return
		}
		connectortest.WriteJSON(w, http.StatusOK, map[string]any{"id": 4711, "name": "Key User"})
	})
	h := servertest.New(t, servertest.Options{
		Backend:    backend,
		Manifests:  [][]byte{connectortest.APIKeyManifest("keycrm", false)},
		Connectors: map[string]connector.Factory{"keycrm": connectortest.APIKeyConnector(crm.URL())},
	})
	// Leak canary: the API key must appear in no log line and no answer
	// of any test using this environment (checked when the test ends).
	h.Leaks.Secret(goodKey)
	return h, crm
}

func TestAPIKeyLoginValidateLogout(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		h, crm := newAPIKeyEnv(t, backend)

		// wrong key -> 400 {returnMessage}, nothing stored
		r := h.Do(t, http.MethodPost, "/apiKeyLogin", map[string]any{"platform": "keycrm", "apiKey": "wrong-key-000000"})
		if r.Status != http.StatusBadRequest || r.JSON(t)["returnMessage"] == nil || r.JSON(t)["jwtToken"] != nil {
			t.Fatalf("wrong key: %d %s", r.Status, r.Body)
		}
		// missing required apiKey -> warning with the const
		r = h.Do(t, http.MethodPost, "/apiKeyLogin", map[string]any{"platform": "keycrm"})
		body := r.JSON(t)
		rm, _ := body["returnMessage"].(map[string]any)
		if r.Status != http.StatusBadRequest || rm["message"] != "Missing required authentication fields." || rm["messageType"] != "warning" {
			t.Fatalf("missing key: %d %s", r.Status, r.Body)
		}
		if consts, _ := rm["missingRequiredFieldConsts"].([]any); len(consts) != 1 || consts[0] != "apiKey" {
			t.Errorf("missingRequiredFieldConsts = %v", rm["missingRequiredFieldConsts"])
		}

		r = h.Do(t, http.MethodPost, "/apiKeyLogin", map[string]any{"platform": "keycrm", "apiKey": goodKey, "additionalInfo": map[string]any{"tenant": "t1"}})
		if r.Status != http.StatusOK {
			t.Fatalf("login: %d %s", r.Status, r.Body)
		}
		body = r.JSON(t)
		jwt, _ := body["jwtToken"].(string)
		if jwt == "" || body["name"] != "Key User" {
			t.Fatalf("login body: %s", r.Body)
		}
		if got := crm.Last("/me").Header.Get("X-Tenant"); got != "t1" {
			t.Errorf("additionalInfo not passed to the connector: X-Tenant %q", got)
		}
		u := storedUser(t, h, jwt)
		if u.APIKey != goodKey || u.AppConnectID != "4711-keycrm" {
			t.Errorf("stored: app connect id %q, key stored %v", u.AppConnectID, u.APIKey == goodKey)
		}
		raw, err := h.Store.RawColumn(context.Background(), "users", "api_key", u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) == 0 || strings.Contains(string(raw), goodKey) {
			t.Errorf("api key not sealed at rest")
		}

		calls := crm.Count("/me")
		r = h.Do(t, http.MethodGet, "/authValidation", nil, bearer(jwt)...)
		if r.Status != http.StatusOK || r.JSON(t)["successful"] != true {
			t.Fatalf("authValidation: %d %s", r.Status, r.Body)
		}
		if crm.Count("/me") != calls {
			t.Errorf("authValidation called the CRM without a validation capability")
		}

		r = h.Do(t, http.MethodPost, "/unAuthorize", nil, bearer(jwt)...)
		if r.Status != http.StatusOK {
			t.Fatalf("unAuthorize: %d %s", r.Status, r.Body)
		}
		if r := h.Do(t, http.MethodGet, "/authValidation", nil, bearer(jwt)...); r.Status != http.StatusUnauthorized {
			t.Errorf("JWT after logout: %d", r.Status)
		}
		gone, _ := h.Store.GetUser(context.Background(), u.ID)
		if gone.APIKey != "" || gone.Status != store.StatusRevoked {
			t.Errorf("api key not cleared at logout")
		}
		h.AssertNoLeak(t, goodKey)
	})
}

func TestAPIKeyLoginHostileInput(t *testing.T) {
	h, _ := newAPIKeyEnv(t, "sqlite")
	cases := map[string]struct {
		body   string
		status int
	}{
		"trailing garbage": {`{"platform":"keycrm","apiKey":"x"} {}`, http.StatusBadRequest},
		"not json":         {`platform=keycrm`, http.StatusBadRequest},
		"array":            {`[1,2]`, http.StatusBadRequest},
		"unknown platform": {`{"platform":"nope","apiKey":"x"}`, http.StatusNotFound},
		"nested info":      {`{"platform":"keycrm","apiKey":"x","additionalInfo":{"a":{"b":1}}}`, http.StatusBadRequest},
		"control chars":    {`{"platform":"keycrm","apiKey":"a\u0000b"}`, http.StatusBadRequest},
		"oversized value":  {`{"platform":"keycrm","apiKey":"` + strings.Repeat("k", 5000) + `"}`, http.StatusBadRequest},
		"empty":            {``, http.StatusBadRequest},
		"oversized body":   {`{"platform":"keycrm","apiKey":"` + strings.Repeat("k", 2<<20) + `"}`, http.StatusRequestEntityTooLarge},
	}
	for name, c := range cases {
		r := h.Do(t, http.MethodPost, "/apiKeyLogin", c.body)
		if r.Status != c.status {
			t.Errorf("%s: %d, want %d (%s)", name, r.Status, c.status, r.Body)
			continue
		}
		if body := r.JSON(t); body["requestId"] == "" || body["jwtToken"] != nil {
			t.Errorf("%s: body %s", name, r.Body)
		}
	}
}

// A connector with a validation capability: a grant revoked at the
// provider makes authValidation false.
func TestAuthValidationCapability(t *testing.T) {
	e := newOAuthEnv(t, "sqlite", connectortest.ProviderOptions{}, connectortest.OAuthConnectorOptions{Validate: true}, true)
	jwt, _ := e.login(t, "alice")
	r := e.h.Do(t, http.MethodGet, "/authValidation", nil, bearer(jwt)...)
	if r.Status != http.StatusOK || r.JSON(t)["successful"] != true {
		t.Fatalf("valid grant: %d %s", r.Status, r.Body)
	}
	u := storedUser(t, e.h, jwt)
	// Revoke the grant at the provider behind connectd's back.
	form := "token=" + u.RefreshToken
	req, _ := http.NewRequest(http.MethodPost, e.p.RevokeURL(), strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(e.p.Options().ClientID, e.p.Options().ClientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r = e.h.Do(t, http.MethodGet, "/authValidation", nil, bearer(jwt)...)
	if r.JSON(t)["successful"] != false {
		t.Errorf("revoked grant still validates: %d %s", r.Status, r.Body)
	}
	_ = time.Second
}
