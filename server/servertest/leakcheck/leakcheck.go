// Package leakcheck is the test suite's secret-leak canary: one log sink
// and one response recorder that every test helper installs (servertest
// does it for every server it starts), a set of known secret values the
// test planted (client secret, refresh token, API key, authorization
// code; JWTs as log-only canaries), and a check that runs when the test
// ends and fails it if any canary appears in a log line or a response.
//
// A canary is matched as a plain substring and also in the common
// encodings a leak takes on the way out (URL query escaping, JSON string
// escaping, standard and URL-safe base64), so "it was only encoded" is
// still a leak.
package leakcheck

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"sync"
	"testing"
)

// MinLength is the shortest value worth checking: shorter ones match by
// accident ("id", "1").
const MinLength = 6

// Guard collects what a test's servers said and the secrets they must not
// say. Safe for concurrent use.
type Guard struct {
	logs Buffer

	mu        sync.Mutex
	responses [][]byte
	secrets   []string          // nowhere
	logOnly   []string          // not in logs (may be returned, e.g. a JWT)
	dynamic   []func() []string // evaluated at Check time, nowhere
}

// New returns a Guard whose Check runs when t ends.
func New(t testing.TB) *Guard {
	g := &Guard{}
	t.Cleanup(func() { g.Check(t) })
	return g
}

// Secret adds values that must appear in no log line and no response.
func (g *Guard) Secret(values ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.secrets = append(g.secrets, values...)
}

// LogSecret adds values that must not be logged but may be returned (a
// session JWT is the answer of a login; logging it hands out the session).
func (g *Guard) LogSecret(values ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.logOnly = append(g.logOnly, values...)
}

// Dynamic adds a source of secrets read at Check time (e.g. every refresh
// token a fake provider issued during the test).
func (g *Guard) Dynamic(f func() []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dynamic = append(g.dynamic, f)
}

// Logs is the log sink: give it to every logger the test's servers use.
func (g *Guard) Logs() *Buffer { return &g.logs }

// Record keeps a response body or header value.
func (g *Guard) Record(b []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.responses = append(g.responses, bytes.Clone(b))
}

// RecordResponse keeps resp's headers and body and replaces the body with
// an in-memory copy the caller can still read.
func (g *Guard) RecordResponse(resp *http.Response) error {
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return err
	}
	g.Record(body)
	for _, vs := range resp.Header {
		for _, v := range vs {
			g.Record([]byte(v))
		}
	}
	return nil
}

// Transport wraps base (nil: http.DefaultTransport) so that every response
// a client receives is recorded.
func (g *Guard) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return transport{g: g, base: base}
}

type transport struct {
	g    *Guard
	base http.RoundTripper
}

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if err := t.g.RecordResponse(resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// Handler wraps a server handler so that every response it writes is
// recorded (for tests that call a handler directly, without a client).
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &recordingWriter{ResponseWriter: w}
		next.ServeHTTP(rw, r)
		g.Record(rw.body.Bytes())
		for _, vs := range w.Header() {
			for _, v := range vs {
				g.Record([]byte(v))
			}
		}
	})
}

type recordingWriter struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.body.Write(p)
	return w.ResponseWriter.Write(p)
}

func (w *recordingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Leak is one finding.
type Leak struct {
	Where  string // "log" or "response"
	Prefix string // the canary's first 4 characters (never the whole value)
	Form   string // "plain", "url", "json", "base64", "base64url"
}

// Find returns every canary found, without failing anything.
func (g *Guard) Find() []Leak {
	g.mu.Lock()
	secrets := append([]string(nil), g.secrets...)
	logOnly := append([]string(nil), g.logOnly...)
	dyn := append([]func() []string(nil), g.dynamic...)
	responses := append([][]byte(nil), g.responses...)
	g.mu.Unlock()
	for _, f := range dyn {
		secrets = append(secrets, f()...)
	}
	logs := []byte(g.logs.String())
	var out []Leak
	seen := map[string]bool{}
	check := func(c string, inResponses bool) {
		if len(c) < MinLength || seen[c+"\x00"+boolText(inResponses)] {
			return
		}
		seen[c+"\x00"+boolText(inResponses)] = true
		for _, f := range forms(c) {
			if bytes.Contains(logs, f.v) {
				out = append(out, Leak{Where: "log", Prefix: c[:4], Form: f.name})
				return
			}
			if !inResponses {
				continue
			}
			for _, b := range responses {
				if bytes.Contains(b, f.v) {
					out = append(out, Leak{Where: "response", Prefix: c[:4], Form: f.name})
					return
				}
			}
		}
	}
	for _, c := range secrets {
		check(c, true)
	}
	for _, c := range logOnly {
		check(c, false)
	}
	return out
}

// Check fails t for every canary found.
func (g *Guard) Check(t testing.TB) {
	t.Helper()
	for _, l := range g.Find() {
		t.Errorf("leakcheck: secret canary %q... appears in a %s (%s form)", l.Prefix, l.Where, l.Form)
	}
}

func boolText(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// form is one encoding of a canary.
type form struct {
	name string
	v    []byte
}

// forms are the encodings a leaked value is looked for in, plain first.
func forms(c string) []form {
	js, _ := json.Marshal(c)
	return []form{
		{"plain", []byte(c)},
		{"url", []byte(url.QueryEscape(c))},
		{"json", js[1 : len(js)-1]},
		{"base64", []byte(base64.StdEncoding.EncodeToString([]byte(c)))},
		{"base64url", []byte(base64.RawURLEncoding.EncodeToString([]byte(c)))},
	}
}

// Buffer is a concurrency-safe log sink.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
