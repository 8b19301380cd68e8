package openapi_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/xeipuuv/gojsonschema"

	"github.com/connectd/connectd/connectors"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/app"
	"github.com/connectd/connectd/server/config"
	"github.com/connectd/connectd/server/openapi"
	"github.com/connectd/connectd/server/servertest"
)

// wiredRoutes builds the production server (app.Build + app.Wire on a
// fresh SQLite database, shipped connectors and manifests) and returns
// its gin routes. The openapi surface is added when Wire does not add it
// yet.
func wiredRoutes(t *testing.T) []openapi.Route {
	t.Helper()
	cfg, err := config.FromMap(map[string]string{"CONNECTD_DATA_DIR": filepath.Join(t.TempDir(), "data")})
	if err != nil {
		t.Fatal(err)
	}
	d, err := app.Build(context.Background(), cfg, hclog.NewNullLogger(), func(string) string { return "" }, nil, connectors.All())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	build := func(extra ...server.Surface) []openapi.Route {
		reg := prometheus.NewRegistry()
		w, err := app.Wire(d, reg)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := server.New(server.Options{Registry: reg}, append(w.Surfaces, extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		var out []openapi.Route
		for _, r := range srv.Engine.Routes() {
			out = append(out, openapi.Route{Method: r.Method, Path: r.Path})
		}
		return out
	}
	routes := build()
	if !slices.Contains(routes, openapi.Route{Method: "GET", Path: "/openapi.json"}) {
		routes = build(openapi.New(openapi.Options{Registry: d.Registry}))
	}
	return routes
}

// TestDocumentCoversEveryRoute fails when a route exists in the router but
// not in openapi.json, or the reverse.
func TestDocumentCoversEveryRoute(t *testing.T) {
	documented, err := openapi.Routes()
	if err != nil {
		t.Fatal(err)
	}
	routed := wiredRoutes(t)
	for _, r := range routed {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s %s is served but not in server/openapi/openapi.json", r.Method, r.Path)
		}
	}
	for _, r := range documented {
		if !slices.Contains(routed, r) {
			t.Errorf("openapi.json documents %s %s, which no surface serves", r.Method, r.Path)
		}
	}
	t.Logf("%d routes served, %d documented", len(routed), len(documented))
}

// TestDocumentIsWellFormed: every operation has a summary, responses, and
// every $ref resolves.
func TestDocumentIsWellFormed(t *testing.T) {
	var d map[string]any
	if err := json.Unmarshal(openapi.Document(), &d); err != nil {
		t.Fatal(err)
	}
	if d["openapi"] != "3.0.3" {
		t.Fatalf("openapi = %v", d["openapi"])
	}
	schemas := d["components"].(map[string]any)["schemas"].(map[string]any)
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				name := strings.TrimPrefix(ref, "#/components/schemas/")
				if _, ok := schemas[name]; !ok {
					t.Errorf("dangling $ref %s", ref)
				}
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(d)
	for p, ops := range d["paths"].(map[string]any) {
		for m, o := range ops.(map[string]any) {
			op := o.(map[string]any)
			if op["summary"] == "" || op["summary"] == nil || len(op["responses"].(map[string]any)) == 0 {
				t.Errorf("%s %s lacks a summary or responses", m, p)
			}
		}
	}
}

// validator checks recorded exchanges against the document. gojsonschema
// is imported by this test only: architecture.md makes core/manifest the
// only PRODUCTION importer (one schema engine in the binary); the binary
// does not link this file.
type validator struct {
	doc map[string]any
}

func newValidator(t *testing.T) *validator {
	t.Helper()
	v := &validator{}
	if err := json.Unmarshal(openapi.Document(), &v.doc); err != nil {
		t.Fatal(err)
	}
	return v
}

// operation finds the documented operation for a concrete request path.
func (v *validator) operation(method, path string) (map[string]any, string) {
	for tmpl, ops := range v.doc["paths"].(map[string]any) {
		if !matchPath(tmpl, path) {
			continue
		}
		if op, ok := ops.(map[string]any)[strings.ToLower(method)].(map[string]any); ok {
			return op, tmpl
		}
	}
	return nil, ""
}

func matchPath(tmpl, path string) bool {
	a, b := strings.Split(tmpl, "/"), strings.Split(path, "/")
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if strings.HasPrefix(a[i], "{") {
			if b[i] == "" {
				return false
			}
			continue
		}
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (v *validator) check(x servertest.Exchange) error {
	op, tmpl := v.operation(x.Method, x.Path)
	if op == nil {
		return fmt.Errorf("%s %s: no documented operation", x.Method, x.Path)
	}
	responses := op["responses"].(map[string]any)
	resp, ok := responses[strconv.Itoa(x.Status)].(map[string]any)
	if !ok {
		if resp, ok = responses["default"].(map[string]any); !ok {
			return fmt.Errorf("%s %s: status %d is not documented", x.Method, tmpl, x.Status)
		}
	}
	content, _ := resp["content"].(map[string]any)
	if len(content) == 0 {
		if len(x.Body) > 0 && x.Status != http.StatusFound && x.Status != http.StatusSeeOther {
			return fmt.Errorf("%s %s %d: documented without a body, got %d bytes", x.Method, tmpl, x.Status, len(x.Body))
		}
		return nil
	}
	mt, _, _ := mime.ParseMediaType(x.ContentType)
	media, ok := content[mt].(map[string]any)
	if !ok {
		return fmt.Errorf("%s %s %d: content type %q not documented", x.Method, tmpl, x.Status, mt)
	}
	if mt != "application/json" {
		return nil
	}
	// The operation's schema is validated inside a document that also
	// carries the components, so its "#/components/..." refs resolve.
	wrapped, _ := json.Marshal(map[string]any{"components": v.doc["components"], "allOf": []any{media["schema"]}})
	compiled, err := gojsonschema.NewSchema(gojsonschema.NewBytesLoader(wrapped))
	if err != nil {
		return fmt.Errorf("%s %s: schema: %w", x.Method, tmpl, err)
	}
	res, err := compiled.Validate(gojsonschema.NewBytesLoader(x.Body))
	if err != nil {
		return fmt.Errorf("%s %s %d: body is not JSON: %w", x.Method, tmpl, x.Status, err)
	}
	if !res.Valid() {
		var msgs []string
		for _, e := range res.Errors() {
			msgs = append(msgs, e.String())
		}
		return fmt.Errorf("%s %s %d: body %s does not match the document: %s", x.Method, tmpl, x.Status, x.Body, strings.Join(msgs, "; "))
	}
	return nil
}

const goodKey = "key-0123456789-secret"

// TestRecordedResponsesMatchDocument replays App Connect's API-key flow
// and the operational routes end to end and validates every response
// against the documented shapes.
func TestRecordedResponsesMatchDocument(t *testing.T) {
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
		Manifests:  [][]byte{connectortest.APIKeyManifest("keycrm", false)},
		Connectors: map[string]connector.Factory{"keycrm": connectortest.APIKeyConnector(crm.URL())},
		Surfaces: func(h *servertest.Harness) []server.Surface {
			return []server.Surface{openapi.New(openapi.Options{Registry: h.Registry})}
		},
	})
	rec := servertest.Record(h)

	for _, p := range []string{"/isAlive", "/healthz", "/readyz", "/openapi.json", "/connectors", "/crmManifest", "/implementedInterfaces?platform=keycrm"} {
		if r := h.Do(t, http.MethodGet, p, nil); r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p, r.Status, r.Body)
		}
	}
	r := h.Do(t, http.MethodGet, "/connectors", nil)
	if !strings.Contains(string(r.Body), `{"name":"keycrm","authType":"apiKey","available":true}`) {
		t.Errorf("/connectors = %s", r.Body)
	}
	h.Do(t, http.MethodPost, "/apiKeyLogin", map[string]any{"platform": "keycrm", "apiKey": "wrong-key-000000"})
	h.Do(t, http.MethodPost, "/apiKeyLogin", map[string]any{"platform": "keycrm"})
	h.Do(t, http.MethodPost, "/apiKeyLogin", "{not json")
	r = h.Do(t, http.MethodPost, "/apiKeyLogin", map[string]any{"platform": "keycrm", "apiKey": goodKey})
	if r.Status != http.StatusOK {
		t.Fatalf("login: %d %s", r.Status, r.Body)
	}
	jwt, _ := r.JSON(t)["jwtToken"].(string)
	bearer := []string{"Authorization", "Bearer " + jwt}
	h.Do(t, http.MethodGet, "/authValidation", nil, bearer...)
	h.Do(t, http.MethodGet, "/hostname", nil, bearer...)
	h.Do(t, http.MethodPost, "/user/refreshInfo", nil, bearer...)
	h.Do(t, http.MethodPost, "/unAuthorize", nil, bearer...)
	if r := h.Do(t, http.MethodGet, "/authValidation", nil, bearer...); r.Status != http.StatusUnauthorized {
		t.Errorf("after logout: %d", r.Status)
	}
	h.Do(t, http.MethodGet, "/authValidation", nil)
	h.Do(t, http.MethodGet, "/oauth/authorize?platform=nope", nil)

	v := newValidator(t)
	xs := rec.Exchanges()
	if len(xs) < 18 {
		t.Fatalf("recorded %d exchanges", len(xs))
	}
	statuses := map[int]int{}
	for _, x := range xs {
		statuses[x.Status]++
		if err := v.check(x); err != nil {
			t.Error(err)
		}
	}
	if statuses[200] == 0 || statuses[400] == 0 || statuses[401] == 0 {
		t.Errorf("flows did not cover success and errors: %v", statuses)
	}
	// Logging review: every log line is JSON, every access line carries
	// a request id and the http subsystem name, and no secret leaked.
	requests := 0
	for _, l := range strings.Split(strings.TrimSpace(h.Logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if m["@message"] == "request" {
			requests++
			if id, _ := m["request_id"].(string); len(id) < 16 || m["@module"] != "connectd.http" || m["route"] == nil {
				t.Errorf("access log line without request id, subsystem or route: %s", l)
			}
		}
	}
	if requests < len(xs) {
		t.Errorf("%d access log lines for %d requests", requests, len(xs))
	}
	h.AssertNoLeak(t, goodKey) // the session JWT is in the login response by design

	// The validator itself rejects a wrong shape.
	bad := servertest.Exchange{Method: "GET", Path: "/healthz", Status: 200, ContentType: "application/json", Body: []byte(`{"status":"fine"}`)}
	if err := v.check(bad); err == nil {
		t.Error("validator accepted a /healthz body without version and with a wrong status")
	}
	if err := v.check(servertest.Exchange{Method: "GET", Path: "/readyz", Status: 418}); err == nil {
		t.Error("validator accepted an undocumented status")
	}
}
