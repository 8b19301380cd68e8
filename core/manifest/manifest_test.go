package manifest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/manifests"
)

// fixturePath finds App Connect's production manifest in /work/shared
// (beside the repository root). Outside CI a missing fixture skips the
// test; under CI=true it must exist.
func fixturePath(t testing.TB) string {
	t.Helper()
	for _, p := range []string{
		filepath.Join("..", "..", "..", "shared", "fixtures", "appconnect-manifest.json"),
		filepath.Join("..", "..", "shared", "fixtures", "appconnect-manifest.json"),
	} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("fixture ../shared/fixtures/appconnect-manifest.json is missing (it must exist under CI=true)")
	}
	t.Skip("fixture ../shared/fixtures/appconnect-manifest.json not found beside the repository; skipping")
	return ""
}

func readFixture(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(fixturePath(t))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func decode(t testing.TB, data []byte) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("decode %q: %v", data, err)
	}
	return v
}

func TestFixtureLoadsAndRoundTrips(t *testing.T) {
	data := readFixture(t)
	set, err := Parse("appconnect-manifest.json", data)
	if err != nil {
		t.Fatalf("the production manifest must load as it is: %v", err)
	}
	want := decode(t, data)
	wantPlatforms := want["platforms"].(map[string]any)

	names := set.Names()
	wantNames := []string{"bullhorn", "clio", "freshdesk", "gohighlevel", "googleSheets", "insightly", "netsuite", "pipedrive", "redtail"}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("names = %v, want %v", names, wantNames)
	}

	t.Run("ClientManifest equals the file", func(t *testing.T) {
		got, err := set.ClientManifest()
		if err != nil {
			t.Fatal(err)
		}
		if g := decode(t, got); !reflect.DeepEqual(g, want) {
			t.Fatalf("client manifest differs from the fixture")
		}
	})
	for _, name := range names {
		t.Run("ClientJSON "+name, func(t *testing.T) {
			got, err := set.ClientJSON(name)
			if err != nil {
				t.Fatal(err)
			}
			g := decode(t, got)
			for _, k := range []string{"serverUrl", "redirectUri", "author", "version"} {
				if !reflect.DeepEqual(g[k], want[k]) {
					t.Errorf("top-level %s = %v, want %v", k, g[k], want[k])
				}
			}
			gp := g["platforms"].(map[string]any)
			if len(gp) != 1 {
				t.Fatalf("platforms has %d entries, want only %s", len(gp), name)
			}
			if !reflect.DeepEqual(gp[name], wantPlatforms[name]) {
				t.Fatalf("platform %s is not preserved", name)
			}
		})
	}

	t.Run("server view", func(t *testing.T) {
		pd, _ := set.Platform("pipedrive")
		if pd.AuthType() != connector.AuthOAuth || pd.Auth.OAuth.AuthURL != "https://oauth.pipedrive.com/oauth/authorize" {
			t.Errorf("pipedrive auth = %+v", pd.Auth)
		}
		if pd.Environment.Type != "dynamic" || pd.Environment.URLIdentifier != "*.pipedrive.com" {
			t.Errorf("pipedrive environment = %+v", pd.Environment)
		}
		if pd.Kind() != KindCRM || !pd.PKCE() || pd.RefreshMargin() != 120*time.Second {
			t.Errorf("defaults: kind %q pkce %v margin %v", pd.Kind(), pd.PKCE(), pd.RefreshMargin())
		}
		wantURIs := []string{"https://ringcentral.github.io/ringcentral-embeddable/redirect.html", "https://unified-crm-extension.labs.ringcentral.com/pipedrive-redirect"}
		if got := pd.RedirectURIs(); !slices.Equal(got, wantURIs) {
			t.Errorf("pipedrive redirect URIs = %v, want %v", got, wantURIs)
		}
		ns, _ := set.Platform("netsuite")
		if ns.Auth.OAuth.Scope != "scope=restlets+rest_webservices" || ns.Auth.OAuth.CustomState != "fillerString,platform=netsuite" {
			t.Errorf("netsuite oauth = %+v", ns.Auth.OAuth)
		}
		clio, _ := set.Platform("clio")
		if len(clio.Environment.Selections) != 4 || clio.Environment.Selections[1].Const != "https://eu.app.clio.com" {
			t.Errorf("clio selections = %+v", clio.Environment.Selections)
		}
		ins, _ := set.Platform("insightly")
		fields := ins.APIKeyFields()
		var consts []string
		for _, f := range fields {
			consts = append(consts, f.Const)
		}
		if !slices.Equal(consts, []string{"insightlyGetApiKey", "apiKey", "apiUrl"}) {
			t.Errorf("insightly consts = %v", consts)
		}
		if fields[0].Required || !fields[1].Required || !fields[2].Required || !fields[1].Secret {
			t.Errorf("insightly fields = %+v", fields)
		}
		rt, _ := set.Platform("redtail")
		pw, ok := rt.Field("password")
		if !ok || !pw.Required || string(pw.UISchema) == "" || decode(t, pw.UISchema)["ui:widget"] != "password" {
			t.Errorf("redtail password = %+v", pw)
		}
		fd, _ := set.Platform("freshdesk")
		if fd.AuthType() != connector.AuthAPIKey || fd.Auth.OAuth == nil || fd.Auth.OAuth.AuthURL != "" {
			t.Errorf("freshdesk (apiKey with an empty oauth block) = %+v", fd.Auth)
		}
	})
}

// withConnectd adds a connectd block to the fixture's pipedrive platform.
func withConnectd(t *testing.T, data []byte, block string) []byte {
	t.Helper()
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var plats map[string]map[string]json.RawMessage
	if err := json.Unmarshal(doc["platforms"], &plats); err != nil {
		t.Fatal(err)
	}
	plats["pipedrive"]["connectd"] = json.RawMessage(block)
	doc["platforms"], _ = json.Marshal(plats)
	out, _ := json.Marshal(doc)
	return out
}

func TestConnectdBlockIsStrippedAndRead(t *testing.T) {
	data := readFixture(t)
	edited := withConnectd(t, data, `{"refresh":{"marginSeconds":300},"oauth":{"pkce":false},"hosts":["*.pipedrive.com","oauth.pipedrive.com"],"redirectUris":["https://app.example.com/cb"]}`)
	set, err := Parse("edited.json", edited)
	if err != nil {
		t.Fatal(err)
	}
	pd, _ := set.Platform("pipedrive")
	if pd.RefreshMargin() != 300*time.Second || pd.PKCE() {
		t.Errorf("margin %v pkce %v", pd.RefreshMargin(), pd.PKCE())
	}
	if !pd.HostAllowed("acme.pipedrive.com") || pd.HostAllowed("pipedrive.com.evil.com") {
		t.Errorf("host patterns not applied: %v", pd.Hosts())
	}
	if got := pd.RedirectURIs(); !slices.Contains(got, "https://app.example.com/cb") || len(got) != 3 {
		t.Errorf("redirect URIs = %v", got)
	}
	all, _ := set.ClientManifest()
	one, _ := set.ClientJSON("pipedrive")
	for _, b := range [][]byte{all, one, pd.ClientJSON()} {
		if bytes.Contains(b, []byte(`"connectd"`)) || bytes.Contains(b, []byte("marginSeconds")) {
			t.Fatalf("connectd block served to the client: %s", b[:200])
		}
	}
	want := decode(t, data)
	if got := decode(t, all); !reflect.DeepEqual(got, want) {
		t.Fatal("client manifest with connectd stripped differs from the original")
	}
}

func TestClientJSONKeepsKeyOrderAndBytes(t *testing.T) {
	doc := `{"version":"1.0","serverUrl":"https://s.example.com","platforms":{"zeta":{"z":1,"name":"zeta","connectd":{"hosts":["a.example.com"]},"a":{"x":[1,2,3.50]},"auth":{"type":"oauth","oauth":{"authUrl":"https://a.example.com/auth"}}}}}`
	set, err := Parse("order.json", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := set.ClientJSON("zeta")
	want := `{"version":"1.0","serverUrl":"https://s.example.com","platforms":{"zeta":{"z":1,"name":"zeta","a":{"x":[1,2,3.50]},"auth":{"type":"oauth","oauth":{"authUrl":"https://a.example.com/auth"}}}}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

const validOAuth = `{"name":"%s","displayName":"X","auth":{"type":"oauth","oauth":{"authUrl":"https://x.example.com/auth","clientId":"id"}}}`

func TestBrokenManifestsReportEveryProblem(t *testing.T) {
	type want struct{ path, msg string }
	cases := []struct {
		name string
		doc  string
		want []want
	}{
		{"invalid JSON", "{\n  \"platforms\": {\n    \"a\": {,}\n  }\n}", []want{{"", "invalid JSON at line 3, column 11"}}},
		{"not an object", `[1,2]`, []want{{"", "must be a JSON object"}}},
		{"missing platforms", `{"serverUrl":"https://x"}`, []want{{"platforms", "is required"}}},
		{"empty platforms", `{"platforms":{}}`, []want{{"platforms", "at least 1"}}},
		{"bad platform name", `{"platforms":{"a b":{"connectd":{"kind":"plugin"}}}}`, []want{{`platforms["a b"]`, "invalid name"}}},
		{"wrong auth.type and more", `{"version": 3, "platforms":{"pipedrive":{"name":"pipedrive","auth":{"type":"oauth2","oauth":{"authUrl":"https://x","secret":"s"}}}}}`, []want{
			{"version", "must be a string, not integer"},
			{"platforms.pipedrive.auth.type", `must be one of "oauth", "apiKey"`},
			{"platforms.pipedrive.auth.oauth.secret", "unknown key"},
		}},
		{"duplicate keys", `{"version":"1","version":"2","platforms":{"a":{"connectd":{"kind":"plugin"}},"a":{"connectd":{"kind":"plugin"}}}}`, []want{
			{"version", "duplicate key"},
			{"platforms.a", "duplicate platform in this file"},
		}},
		{"missing auth", `{"platforms":{"crm":{"name":"crm"}}}`, []want{{"platforms.crm.auth", "is required for a CRM platform"}}},
		{"oauth without authUrl", `{"platforms":{"crm":{"auth":{"type":"oauth"}}}}`, []want{{"platforms.crm.auth.oauth.authUrl", "is required"}}},
		{"name differs from key", `{"platforms":{"crm":{"name":"other","auth":{"type":"oauth","oauth":{"authUrl":"https://x"}}}}}`, []want{{"platforms.crm.name", `must equal the platform's key "crm"`}}},
		{"unknown key inside connectd", `{"platforms":{"crm":{"auth":{"type":"oauth","oauth":{"authUrl":"https://x"}},"connectd":{"refrsh":{"marginSeconds":10},"refresh":{"marginSecond":5},"oauth":{"pkce":"no"}}}}}`, []want{
			{"platforms.crm.connectd.refrsh", "unknown key"},
			{"platforms.crm.connectd.refresh.marginSecond", "unknown key"},
			{"platforms.crm.connectd.oauth.pkce", "must be a boolean, not string"},
		}},
		{"managedScope org and duplicate const", `{"platforms":{"k":{"auth":{"type":"apiKey","apiKey":{"page":{"content":[{"const":"apiKey","type":"string","managed":true,"managedScope":"org"},{"const":"apiKey","type":"string"},{"title":"no const","type":"text"}]}}}}}}`, []want{
			{"platforms.k.auth.apiKey.page.content[0].managedScope", `must be one of "account", "user"`},
			{"platforms.k.auth.apiKey.page.content[1].const", `duplicate const "apiKey"`},
			{"platforms.k.auth.apiKey.page.content[2].const", "is required"},
			{"platforms.k.auth.apiKey.page.content[2].type", "must be one of"},
		}},
		{"bad hosts and redirect URIs", `{"platforms":{"crm":{"auth":{"type":"oauth","oauth":{"authUrl":"https://x","redirectUri":"/relative"}},"connectd":{"hosts":["*.com","evil.com:443","a.*.example.com","x.example.com.","ok.example.com"],"redirectUris":["https://ok.example.com/cb","https://x.example.com/#frag"]}}}}`, []want{
			{"platforms.crm.auth.oauth.redirectUri", "not an absolute URL"},
			{"platforms.crm.connectd.hosts[0]", "at least two labels"},
			{"platforms.crm.connectd.hosts[1]", "without scheme, port or path"},
			{"platforms.crm.connectd.hosts[2]", `only a leading "*." wildcard`},
			{"platforms.crm.connectd.hosts[3]", "no trailing dot"},
			{"platforms.crm.connectd.redirectUris[1]", "not an absolute URL"},
		}},
		{"declarative env names and urls", `{"platforms":{"d":{"auth":{"type":"oauth","oauth":{"authUrl":"https://connectd.example.com/oauth/authorize"}},"connectd":{"declarative":{
			"oauth":{"authorizationUrl":"https://{{hostname}}/oauth/authorize","tokenUrl":"ftp://x.example.com/t","clientIdEnv":"CONNECTD_SESSION_KEYS","clientSecretEnv":"lower_case","scopes":["a"],"clientAuth":"header"},
			"userInfo":{"url":"https://{{host}}/me","idPath":"data..id","namePath":"data.name","extra":1}}}}}}`, []want{
			{"platforms.d.connectd.declarative.oauth.authorizationUrl", "connectd.hosts is empty"},
			{"platforms.d.connectd.declarative.oauth.tokenUrl", "not an absolute http(s) URL"},
			{"platforms.d.connectd.declarative.oauth.clientIdEnv", "reserved for connectd"},
			{"platforms.d.connectd.declarative.oauth.clientSecretEnv", "environment variable name"},
			{"platforms.d.connectd.declarative.oauth.clientAuth", `must be one of "basic", "body"`},
			{"platforms.d.connectd.declarative.userInfo.url", "only placeholder is {{hostname}}"},
			{"platforms.d.connectd.declarative.userInfo.idPath", "empty segment"},
			{"platforms.d.connectd.declarative.userInfo.extra", "unknown key"},
		}},
		{"declarative both and wrong auth", `{"platforms":{"d":{"auth":{"type":"apiKey","apiKey":{"page":{"content":[]}}},"connectd":{"declarative":{"apiKey":{"scheme":"Token"},"oauth":{"authorizationUrl":"https://a.example.com","tokenUrl":"https://a.example.com/t","clientIdEnv":"D_ID","clientSecretEnv":"D_ID"},"userInfo":{"url":"https://a.example.com/me","idPath":"id","namePath":"name"}}}}}}`, []want{
			{"platforms.d.connectd.declarative", `not both`},
			{"platforms.d.connectd.declarative.apiKey.scheme", `must be one of "Basic", "Bearer", "none"`},
			{"platforms.d.connectd.declarative.oauth.clientSecretEnv", "must differ from clientIdEnv"},
		}},
		{"declarative lower-case connectd_ env", `{"platforms":{"d":{"auth":{"type":"oauth","oauth":{"authUrl":"https://x"}},"connectd":{"declarative":{"oauth":{"authorizationUrl":"https://a.example.com","tokenUrl":"https://a.example.com/t","clientIdEnv":"CONNECTD_X","clientSecretEnv":"D_SECRET","pkce":true},"userInfo":{"url":"https://a.example.com/me","idPath":"id","namePath":"name"}},"oauth":{"pkce":false}}}}}`, []want{
			{"platforms.d.connectd.declarative.oauth.clientIdEnv", `"CONNECTD_X": names starting with CONNECTD_ are reserved`},
			{"platforms.d.connectd.declarative.oauth.pkce", "disagrees with connectd.oauth.pkce"},
		}},
		{"connectd.fields", `{"platforms":{"r":{"auth":{"type":"apiKey","apiKey":{"page":{"content":[{"const":"apiKey","type":"string","managed":true},{"const":"user","type":"string"}]}}},"connectd":{"fields":{"nope":{"secret":false},"user":{"secret":false},"apiKey":{"secret":false,"x":1}}}}}}`, []want{
			{"platforms.r.connectd.fields.nope", "names no field"},
			{"platforms.r.connectd.fields.user", "only managed fields"},
			{"platforms.r.connectd.fields.apiKey.secret", "always secret"},
			{"platforms.r.connectd.fields.apiKey.x", "unknown key"},
		}},
		{"plugin fields", `{"platforms":{"p":{"isAsync":"yes","supportedLogTypes":["call","voicemail"],"endpointUrl":"https://p.example.com/x","connectd":{"kind":"addon"}}}}`, []want{
			{"platforms.p.isAsync", "must be a boolean"},
			{"platforms.p.supportedLogTypes[1]", `must be one of "call", "sms", "fax"`},
			{"platforms.p.connectd.kind", `must be one of "crm", "plugin"`},
		}},
		{"async plugin without tokenSyncUrl", `{"platforms":{"p":{"isAsync":true,"endpointUrl":"https://p.example.com/x","connectd":{"kind":"plugin"}}}}`, []want{
			{"platforms.p.tokenSyncUrl", "is required when isAsync is true"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, err := Parse("manifests/case.json", []byte(tc.doc))
			if err == nil {
				t.Fatalf("loaded a broken manifest: %v", set.Names())
			}
			ps := Problems(err)
			if len(ps) != len(tc.want) {
				t.Errorf("got %d problems, want %d:\n%v", len(ps), len(tc.want), err)
			}
			for _, w := range tc.want {
				found := false
				for _, p := range ps {
					if p.File == "manifests/case.json" && p.Path == w.path && strings.Contains(p.Message, w.msg) {
						found = true
					}
				}
				if !found {
					t.Errorf("missing problem %s: ...%s...\ngot:\n%v", w.path, w.msg, err)
				}
			}
			if !strings.Contains(err.Error(), "manifests/case.json: ") {
				t.Errorf("error does not name the file: %v", err)
			}
		})
	}
}

func TestPluginAndDeclarativeValues(t *testing.T) {
	doc := `{"platforms":{
	 "redact":{"name":"redact","displayName":"Redact","isAsync":false,"supportedLogTypes":["call","sms"],"requireLicense":true,"showAuthorizationButton":false,
	   "endpointUrl":"https://c.example.com/plugins/v2/redact/process","userRegisterEndpointUrl":"https://c.example.com/plugins/v2/redact/register","licenseStatusUrl":"https://c.example.com/plugins/v2/redact/license","configs":[{"const":"x"}],
	   "connectd":{"kind":"plugin"}},
	 "decl":{"name":"decl","auth":{"type":"oauth","oauth":{"authUrl":"https://c.example.com/oauth/authorize","clientId":"cid"}},
	   "connectd":{"hosts":["*.crm.example.com"],"refresh":{"marginSeconds":0},"declarative":{
	     "oauth":{"authorizationUrl":"https://{{hostname}}/oauth/authorize","tokenUrl":"https://{{hostname}}/oauth/token","clientIdEnv":"DECL_CLIENT_ID","clientSecretEnv":"DECL_CLIENT_SECRET","scopes":["read","write"],"pkce":false},
	     "userInfo":{"url":"https://{{hostname}}/api/me","idPath":"data.id","namePath":"data.name","timezonePath":"data.tz"},"validate":true}}},
	 "key":{"name":"key","auth":{"type":"apiKey","apiKey":{"page":{"title":"Key","content":[{"const":"apiKey","type":"string","required":true,"managed":true},{"const":"apiUrl","type":"string","managed":true,"managedScope":"user"}]}}},
	   "connectd":{"fields":{"apiUrl":{"secret":false}},"declarative":{"apiKey":{"scheme":"Bearer"},"userInfo":{"url":"https://api.key.example.com/me","method":"POST","idPath":"id","namePath":"name"}}}}}}`
	set, err := Parse("mix.json", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := set.Platform("redact")
	if p.Kind() != KindPlugin || p.AuthType() != "" || !p.RequireLicense || !slices.Equal(p.SupportedLogTypes, []string{"call", "sms"}) ||
		p.UserRegisterEndpointURL != "https://c.example.com/plugins/v2/redact/register" || p.IsDeclarative() {
		t.Errorf("plugin = %+v", p)
	}
	d, _ := set.Platform("decl")
	dd := d.Connectd.Declarative
	if !d.IsDeclarative() || d.PKCE() || d.RefreshMargin() != 0 || dd.OAuth.ClientAuthMethod() != "basic" || dd.UserInfo.HTTPMethod() != "GET" ||
		!slices.Equal(dd.OAuth.Scopes, []string{"read", "write"}) || dd.UserInfo.TimezonePath != "data.tz" || !dd.Validate || dd.OAuth.ClientSecretEnv != "DECL_CLIENT_SECRET" {
		t.Errorf("declarative oauth = %+v %+v", dd.OAuth, dd.UserInfo)
	}
	k, _ := set.Platform("key")
	kd := k.Connectd.Declarative
	if kd.APIKey.HeaderName() != "Authorization" || kd.APIKey.Scheme != "Bearer" || kd.UserInfo.HTTPMethod() != "POST" {
		t.Errorf("declarative apiKey = %+v", kd)
	}
	fields := k.APIKeyFields()
	if fields[0].ManagedScope != ScopeAccount || !fields[0].Secret || fields[1].ManagedScope != ScopeUser || fields[1].Secret {
		t.Errorf("fields = %+v", fields)
	}
	one, _ := set.ClientJSON("redact")
	if pl := decode(t, one)["platforms"].(map[string]any)["redact"].(map[string]any); pl["configs"] == nil || pl["connectd"] != nil {
		t.Errorf("plugin client JSON = %s", one)
	}
	if _, err := set.ClientJSON("nope"); err == nil || !strings.Contains(err.Error(), "unknown platform") {
		t.Errorf("unknown platform: %v", err)
	}
}

func TestLoadMergesEmbeddedAndOperatorManifests(t *testing.T) {
	embedded := fstest.MapFS{
		"a.json":              {Data: []byte(`{"serverUrl":"https://embedded.example.com","platforms":{"alpha":` + strings.Replace(validOAuth, "%s", "alpha", 1) + `}}`)},
		"b.json":              {Data: []byte(`{"platforms":{"beta":` + strings.Replace(validOAuth, "%s", "beta", 1) + `}}`)},
		"schema/ignored.json": {Data: []byte(`not a manifest`)},
		"manifests.go":        {Data: []byte(`package manifests`)},
	}
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("op.json", `{"serverUrl":"https://operator.example.com","platforms":{"gamma":`+strings.Replace(validOAuth, "%s", "gamma", 1)+`}}`)
	write("notes.txt", "not read")
	set, err := Load(embedded, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := set.Names(); !slices.Equal(got, []string{"alpha", "beta", "gamma"}) {
		t.Fatalf("names = %v", got)
	}
	g, _ := set.Platform("gamma")
	if g.Document.File != filepath.Join(dir, "op.json") {
		t.Errorf("gamma file = %q", g.Document.File)
	}
	a, _ := set.Platform("alpha")
	if a.Document.File != "manifests/a.json" {
		t.Errorf("alpha file = %q", a.Document.File)
	}
	all, _ := set.ClientManifest()
	m := decode(t, all)
	if m["serverUrl"] != "https://embedded.example.com" || len(m["platforms"].(map[string]any)) != 3 {
		t.Errorf("merged = %s", all)
	}

	t.Run("duplicate platform across files", func(t *testing.T) {
		write("dup.json", `{"platforms":{"beta":`+strings.Replace(validOAuth, "%s", "beta", 1)+`,"crm":{"auth":{"type":"x"}}}}`)
		_, err := Load(embedded, dir)
		ps := Problems(err)
		if len(ps) != 2 {
			t.Fatalf("want 2 problems, got %v", err)
		}
		if ps[0].File != filepath.Join(dir, "dup.json") || ps[0].Path != "platforms.beta" || !strings.Contains(ps[0].Message, `"beta" is already defined by manifests/b.json`) {
			t.Errorf("duplicate problem = %+v", ps[0])
		}
		if ps[1].Path != "platforms.crm.auth.type" {
			t.Errorf("second problem = %+v", ps[1])
		}
	})
	t.Run("missing operator dir", func(t *testing.T) {
		if _, err := Load(embedded, filepath.Join(dir, "nope")); err == nil {
			t.Fatal("a missing CONNECTD_MANIFESTS_DIR must fail")
		}
	})
	t.Run("LoadDir and LoadFile", func(t *testing.T) {
		d2 := t.TempDir()
		os.WriteFile(filepath.Join(d2, "x.json"), []byte(`{"platforms":{"x":`+strings.Replace(validOAuth, "%s", "x", 1)+`}}`), 0o600)
		s, err := LoadDir(d2)
		if err != nil || !slices.Equal(s.Names(), []string{"x"}) {
			t.Fatalf("LoadDir: %v", err)
		}
		s, err = LoadFile(filepath.Join(d2, "x.json"))
		if err != nil || !slices.Equal(s.Names(), []string{"x"}) {
			t.Fatalf("LoadFile: %v", err)
		}
		if _, err := LoadFile(filepath.Join(d2, "missing.json")); err == nil {
			t.Fatal("missing file loaded")
		}
	})
}

func TestValidateFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(good, []byte(`{"platforms":{"g":`+strings.Replace(validOAuth, "%s", "g", 1)+`}}`), 0o600)
	os.WriteFile(bad, []byte(`{"platforms":{"b":{"auth":{"type":"basic"}},"g":`+strings.Replace(validOAuth, "%s", "g", 1)+`}}`), 0o600)
	if ps := ValidateFiles([]string{good}); ps != nil {
		t.Fatalf("valid file: %v", ps)
	}
	ps := ValidateFiles([]string{good, bad, filepath.Join(dir, "missing.json")})
	var lines []string
	for _, p := range ps {
		lines = append(lines, p.String())
	}
	want := []string{
		bad + `: platforms.b.auth.type: must be one of "oauth", "apiKey"`,
		bad + `: platforms.g: platform "g" is already defined by ` + good,
	}
	for _, w := range want {
		if !slices.Contains(lines, w) {
			t.Errorf("missing %q in:\n%s", w, strings.Join(lines, "\n"))
		}
	}
	if len(ps) != 3 || ps[2].File != filepath.Join(dir, "missing.json") {
		t.Errorf("problems = %v", lines)
	}
}

func TestHostAllowed(t *testing.T) {
	patterns := []string{"*.pipedrive.com", "App.Clio.com"}
	cases := []struct {
		host string
		want bool
	}{
		{"acme.pipedrive.com", true},
		{"a.b.pipedrive.com", true},
		{"ACME.PipeDrive.COM", true},
		{"app.clio.com", true},
		{"pipedrive.com", false},
		{".pipedrive.com", false},
		{"a..pipedrive.com", false},
		{"evilpipedrive.com", false},
		{"acme.pipedrive.com.", false},
		{"acme.pipedrive.com:443", false},
		{"acme.pipedrive.com.evil.com", false},
		{"user@acme.pipedrive.com", false},
		{"evil.com#.pipedrive.com", false},
		{"evil.com/.pipedrive.com", false},
		{"eu.app.clio.com", false},
		{"", false},
		{"-a.pipedrive.com", false},
	}
	for _, tc := range cases {
		t.Run(tc.host, func(t *testing.T) {
			if got := HostAllowed(patterns, tc.host); got != tc.want {
				t.Errorf("HostAllowed(%q) = %v, want %v", tc.host, got, tc.want)
			}
		})
	}
	if HostAllowed([]string{"*.com"}, "evil.com") {
		t.Error("a wildcard over one label must match nothing")
	}
	if HostAllowed(nil, "a.example.com") || HostAllowed([]string{"*.example.com:80"}, "a.example.com") {
		t.Error("empty or malformed patterns must match nothing")
	}
}

func TestEmbeddedManifestsLoad(t *testing.T) {
	set, err := Load(manifests.FS, "")
	if err != nil {
		t.Fatalf("embedded manifests: %v", err)
	}
	for _, p := range set.Platforms() {
		if !strings.HasPrefix(p.Document.File, EmbeddedPrefix) {
			t.Errorf("%s labelled %q", p.Key, p.Document.File)
		}
	}
}

func TestLineCol(t *testing.T) {
	data := []byte("ab\ncd\nef")
	for _, tc := range []struct {
		off       int64
		line, col int
	}{{1, 1, 1}, {2, 1, 2}, {4, 2, 1}, {8, 3, 2}, {0, 1, 1}, {100, 3, 2}} {
		if l, c := lineCol(data, tc.off); l != tc.line || c != tc.col {
			t.Errorf("lineCol(%d) = %d:%d, want %d:%d", tc.off, l, c, tc.line, tc.col)
		}
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"platforms":{"a":{"auth":{"type":"oauth","oauth":{"authUrl":"https://x"}},"connectd":{"hosts":["*.a.com"]}}}}`))
	f.Add([]byte(`{"platforms":{"a":{"auth":{"type":"apiKey","apiKey":{"page":{"content":[{"const":"apiKey","type":"string","managed":true}]}}},"connectd":{"fields":{"apiKey":{}},"declarative":{"apiKey":{"scheme":"none"},"userInfo":{"url":"https://{{hostname}}/","idPath":"a","namePath":"b"}}}}}}`))
	f.Add([]byte(`{"platforms":{"a":1}}`))
	f.Add([]byte(`{"platforms":[]}`))
	f.Add([]byte(`{"a":1,"a":2}`))
	f.Add([]byte(`[`))
	f.Add([]byte(``))
	if p := filepath.Join("..", "..", "..", "shared", "fixtures", "appconnect-manifest.json"); true {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := Parse("fuzz.json", data)
		if err != nil {
			if len(Problems(err)) == 0 {
				t.Fatalf("error without problems: %v", err)
			}
			return
		}
		out, err := set.ClientManifest()
		if err != nil || !json.Valid(out) {
			t.Fatalf("client manifest invalid: %v %q", err, out)
		}
		for _, n := range set.Names() {
			b, err := set.ClientJSON(n)
			if err != nil || !json.Valid(b) {
				t.Fatalf("ClientJSON(%q) invalid: %v %q", n, err, b)
			}
		}
	})
}

func BenchmarkLoadEmbedded(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(manifests.FS, ""); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLoadFixture(b *testing.B) {
	data := readFixture(b)
	fsys := fstest.MapFS{"appconnect.json": {Data: data}}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Load(fsys, ""); err != nil {
			b.Fatal(err)
		}
	}
}
