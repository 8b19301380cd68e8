package connectortest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// CRM fakes a connector's service API: an httptest server whose routes a
// test registers with Handle or Expect. Every request is recorded; a request
// no route matches fails the test (404 to the client), so a connector
// cannot call an endpoint its author did not document.
type CRM struct {
	t   testing.TB
	srv *httptest.Server
	rec recorder
	now func() time.Time

	mu     sync.Mutex
	routes map[string]http.HandlerFunc // "METHOD /path"
}

// CRMOption configures NewCRM.
type CRMOption func(*crmConfig)

type crmConfig struct {
	tls bool
	now func() time.Time
}

// CRMWithTLS serves the fake over HTTPS; use Client() to trust it.
func CRMWithTLS() CRMOption { return func(c *crmConfig) { c.tls = true } }

// CRMWithClock stamps recorded requests with now() instead of time.Now.
func CRMWithClock(now func() time.Time) CRMOption { return func(c *crmConfig) { c.now = now } }

// NewCRM starts a fake CRM API, closed by t.Cleanup.
func NewCRM(t testing.TB, opts ...CRMOption) *CRM {
	t.Helper()
	cfg := crmConfig{now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	c := &CRM{t: t, now: cfg.now, routes: map[string]http.HandlerFunc{}}
	h := http.HandlerFunc(c.serve)
	if cfg.tls {
		c.srv = httptest.NewTLSServer(h)
	} else {
		c.srv = httptest.NewServer(h)
	}
	t.Cleanup(func() {
		c.srv.CloseClientConnections()
		c.srv.Close()
	})
	return c
}

// URL is the fake's base URL.
func (c *CRM) URL() string { return c.srv.URL }

// Client returns an HTTP client that trusts the fake (needed with TLS).
func (c *CRM) Client() *http.Client { return c.srv.Client() }

// Handle routes method + exact path to h, replacing an earlier route.
func (c *CRM) Handle(method, path string, h http.HandlerFunc) {
	c.mu.Lock()
	c.routes[method+" "+path] = h
	c.mu.Unlock()
}

// Expect routes method + path to h after checking the request against e:
// a request that differs from the documented one fails the test and is
// answered 400 {"error":"unexpected_request"} without calling h.
func (c *CRM) Expect(method, path string, e Expect, h http.HandlerFunc) {
	e.Method, e.Path = method, path
	c.Handle(method, path, func(w http.ResponseWriter, r *http.Request) {
		rec, _ := recordRequest(r, c.now())
		if err := e.Check(rec); err != nil {
			c.t.Errorf("connectortest: CRM %s %s: %v", method, path, err)
			WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "unexpected_request"})
			return
		}
		h(w, r)
	})
}

func (c *CRM) serve(w http.ResponseWriter, r *http.Request) {
	rec, tooLarge := recordRequest(r, c.now())
	c.rec.add(rec)
	if tooLarge {
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	c.mu.Lock()
	h := c.routes[r.Method+" "+r.URL.Path]
	c.mu.Unlock()
	if h == nil {
		c.t.Errorf("connectortest: CRM got an unexpected request %s %s", r.Method, r.URL.Path)
		WriteJSON(w, http.StatusNotFound, map[string]string{"error": "no such route in the fake CRM"})
		return
	}
	h(w, r)
}

// Requests returns every request received, in arrival order.
func (c *CRM) Requests() []RecordedRequest { return c.rec.all() }

// Count returns how many requests path received (any method).
func (c *CRM) Count(path string) int {
	return len(c.rec.filter(func(r RecordedRequest) bool { return r.Path == path }))
}

// Last returns the most recent request to path, failing the test if none.
func (c *CRM) Last(path string) RecordedRequest {
	c.t.Helper()
	rs := c.rec.filter(func(r RecordedRequest) bool { return r.Path == path })
	if len(rs) == 0 {
		c.t.Fatalf("connectortest: CRM received no request for %s", path)
	}
	return rs[len(rs)-1]
}

// Reset forgets recorded requests; routes stay.
func (c *CRM) Reset() { c.rec.reset() }

// WriteJSON answers status with v encoded as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Expect describes a documented request. Zero-valued fields are not
// checked; a non-nil empty Query/Form demands that none be sent.
type Expect struct {
	// Method and Path are filled in by CRM.Expect; set them when calling
	// Check directly.
	Method, Path string
	// Header values must be equal (canonical names, each value in order).
	Header http.Header
	// NoHeader lists headers that must be absent.
	NoHeader []string
	// ContentType is the body's media type without parameters.
	ContentType string
	// Query must equal the query string exactly when non-nil.
	Query url.Values
	// Form must equal the form body exactly when non-nil (and the body must
	// be application/x-www-form-urlencoded).
	Form url.Values
	// JSON, when non-nil, must equal the body as JSON (compared after
	// decoding both, so key order and spacing do not matter). Give a string
	// or []byte of JSON, or any value json.Marshal accepts.
	JSON any
	// Bearer, when non-empty, must be the Authorization: Bearer token.
	Bearer string
	// BasicUser/BasicPassword, when BasicAuth is true, must be the decoded
	// HTTP Basic credentials.
	BasicAuth                bool
	BasicUser, BasicPassword string
}

// Check reports every way r differs from e, or nil.
func (e Expect) Check(r RecordedRequest) error {
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	if e.Method != "" && r.Method != e.Method {
		bad("method %s, want %s", r.Method, e.Method)
	}
	if e.Path != "" && r.Path != e.Path {
		bad("path %s, want %s", r.Path, e.Path)
	}
	names := make([]string, 0, len(e.Header))
	for k := range e.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if got := r.Header.Values(k); !slices.Equal(got, e.Header[k]) {
			bad("header %s = %q, want %q", k, redactHeader(k, got), redactHeader(k, e.Header[k]))
		}
	}
	for _, k := range e.NoHeader {
		if r.Header.Get(k) != "" {
			bad("header %s present, want absent", k)
		}
	}
	if e.ContentType != "" && r.ContentType != e.ContentType {
		bad("content type %q, want %q", r.ContentType, e.ContentType)
	}
	if e.Query != nil && !valuesEqual(r.Query, e.Query) {
		bad("query %q, want %q", r.Query.Encode(), e.Query.Encode())
	}
	if e.Form != nil {
		if r.ContentType != "application/x-www-form-urlencoded" {
			bad("body is %q, want a form", r.ContentType)
		} else if !valuesEqual(r.Form, e.Form) {
			bad("form %v, want %v", formKeys(r.Form), formKeys(e.Form))
		}
	}
	if e.JSON != nil {
		if err := jsonEqual(r.Body, e.JSON); err != nil {
			bad("%v", err)
		}
	}
	if e.Bearer != "" && r.Bearer != e.Bearer {
		bad("bearer token differs (got %d chars)", len(r.Bearer))
	}
	if e.BasicAuth {
		switch {
		case !r.BasicAuth:
			bad("no HTTP Basic credentials")
		case r.BasicUser != e.BasicUser:
			bad("HTTP Basic user %q, want %q", r.BasicUser, e.BasicUser)
		case r.BasicPassword != e.BasicPassword:
			bad("HTTP Basic password differs")
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("request differs from the documented one: %s", strings.Join(problems, "; "))
}

// redactHeader keeps credentials out of test failure messages.
func redactHeader(name string, vs []string) []string {
	if !strings.EqualFold(name, "Authorization") && !strings.EqualFold(name, "Cookie") {
		return vs
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		scheme, _, _ := strings.Cut(v, " ")
		out[i] = scheme + " REDACTED"
	}
	return out
}

// formKeys shows which fields differ without printing their (secret) values.
func formKeys(v url.Values) []string {
	keys := make([]string, 0, len(v))
	for k, vs := range v {
		keys = append(keys, fmt.Sprintf("%s(%d)", k, len(vs)))
	}
	sort.Strings(keys)
	return keys
}

func valuesEqual(a, b url.Values) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		if !slices.Equal(va, b[k]) {
			return false
		}
	}
	return true
}

func jsonEqual(body []byte, want any) error {
	var wantRaw []byte
	switch w := want.(type) {
	case string:
		wantRaw = []byte(w)
	case []byte:
		wantRaw = w
	case json.RawMessage:
		wantRaw = w
	default:
		b, err := json.Marshal(w)
		if err != nil {
			return fmt.Errorf("expected JSON does not encode: %w", err)
		}
		wantRaw = b
	}
	var got, exp any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		return fmt.Errorf("body is not JSON: %w", err)
	}
	if dec.More() {
		return fmt.Errorf("body has data after the JSON value")
	}
	dec = json.NewDecoder(bytes.NewReader(wantRaw))
	dec.UseNumber()
	if err := dec.Decode(&exp); err != nil {
		return fmt.Errorf("expected JSON is invalid: %w", err)
	}
	if !reflect.DeepEqual(got, exp) {
		return fmt.Errorf("JSON body %s, want %s", compactJSON(body), compactJSON(wantRaw))
	}
	return nil
}

func compactJSON(b []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return string(b)
	}
	return buf.String()
}

// ExpectRequest fails t when r differs from e.
func ExpectRequest(t testing.TB, r RecordedRequest, e Expect) {
	t.Helper()
	if err := e.Check(r); err != nil {
		t.Errorf("connectortest: %s %s: %v", r.Method, r.Path, err)
	}
}
