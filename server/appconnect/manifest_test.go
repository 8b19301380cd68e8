package appconnect_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/server/appconnect"
)

// The production App Connect manifest, served by connectd: every
// client-side key preserved; only serverUrl and OAuth authUrls point here.
func TestServedManifestPreservesFixture(t *testing.T) {
	path := filepath.Join("..", "..", "..", "shared", "fixtures", "appconnect-manifest.json")
	data, err := os.ReadFile(path)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("fixture missing in CI: %v", err)
		}
		t.Skipf("fixture not present: %v", err)
	}
	set, err := manifest.Parse("appconnect-manifest.json", data)
	if err != nil {
		t.Fatalf("fixture does not load: %v", err)
	}
	client, err := set.ClientManifest()
	if err != nil {
		t.Fatal(err)
	}
	served, err := appconnect.ServedManifest(client, "https://connectd.example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	var orig, got map[string]any
	if err := json.Unmarshal(data, &orig); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(served, &got); err != nil {
		t.Fatal(err)
	}
	if got["serverUrl"] != "https://connectd.example.com" {
		t.Errorf("serverUrl = %v", got["serverUrl"])
	}
	oauth := 0
	for name, p := range orig["platforms"].(map[string]any) {
		gp := got["platforms"].(map[string]any)[name].(map[string]any)
		op := p.(map[string]any)
		if a, ok := op["auth"].(map[string]any); ok && a["type"] == "oauth" {
			oauth++
			ga := gp["auth"].(map[string]any)["oauth"].(map[string]any)
			if ga["authUrl"] != "https://connectd.example.com/oauth/authorize" {
				t.Errorf("%s authUrl = %v", name, ga["authUrl"])
			}
			// everything else in auth.oauth untouched
			oo, _ := a["oauth"].(map[string]any)
			for k, v := range oo {
				if k != "authUrl" && !reflect.DeepEqual(ga[k], v) {
					t.Errorf("%s auth.oauth.%s changed", name, k)
				}
			}
			delete(op, "auth")
			delete(gp, "auth")
		}
		if !reflect.DeepEqual(op, gp) {
			t.Errorf("platform %s: client keys changed", name)
		}
	}
	if oauth == 0 {
		t.Fatal("fixture has no OAuth platform?")
	}
	delete(orig, "serverUrl")
	delete(got, "serverUrl")
	delete(orig, "platforms")
	delete(got, "platforms")
	if !reflect.DeepEqual(orig, got) {
		t.Errorf("top-level keys changed")
	}
}

func TestCRMManifestRoute(t *testing.T) {
	e := newOAuthEnv(t, "sqlite", connectortest.ProviderOptions{}, connectortest.OAuthConnectorOptions{}, true)
	r := e.h.Do(t, http.MethodGet, "/crmManifest?platformName=testcrm", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatal(err)
	}
	p := m["platforms"].(map[string]any)["testcrm"].(map[string]any)
	if _, ok := p["connectd"]; ok {
		t.Errorf("connectd block served to the client")
	}
	if m["serverUrl"] != e.h.URL {
		t.Errorf("serverUrl = %v, want %s", m["serverUrl"], e.h.URL)
	}
	if r := e.h.Do(t, http.MethodGet, "/crmManifest?platformName=nope", nil); r.Status != http.StatusBadRequest {
		t.Errorf("unknown platform: %d", r.Status)
	}
	r = e.h.Do(t, http.MethodGet, "/implementedInterfaces?platform=testcrm", nil)
	if r.Status != http.StatusOK || r.JSON(t)["unAuthorize"] != true || r.JSON(t)["authValidation"] != false {
		t.Errorf("implementedInterfaces: %d %s", r.Status, r.Body)
	}
}
