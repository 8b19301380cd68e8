package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/connectd/connectd/connectors"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/app"
	"github.com/connectd/connectd/server/config"
	democrm "github.com/connectd/connectd/server/demo"
	"github.com/connectd/connectd/server/keys"
	"github.com/connectd/connectd/server/servertest"
)

// env is a whole connectd started the way `connectd serve` starts it
// (config -> app.Build -> app.Wire -> server.New -> Serve) with the shipped
// connectors, on a loopback listener; PublicURL uses "localhost" like the
// default configuration, so the tests cross the same host names `make run`
// does.
type env struct {
	base   string // http://localhost:PORT (CONNECTD_PUBLIC_URL)
	ip     string // http://127.0.0.1:PORT (the listener)
	deps   *app.Deps
	wired  *app.Wired
	crm    *democrm.CRM // nil unless the demo is on
	logs   *servertest.Buffer
	client *http.Client // cookie jar, no redirects

	mu     sync.Mutex
	bodies [][]byte
}

type envOptions struct {
	backend string
	demo    bool
}

func start(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.backend == "" {
		o.backend = storetest.SQLite
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	e := &env{base: fmt.Sprintf("http://localhost:%d", port), ip: fmt.Sprintf("http://127.0.0.1:%d", port), logs: &servertest.Buffer{}}
	raw := map[string]string{
		"CONNECTD_ADDR":         ln.Addr().String(),
		"CONNECTD_PUBLIC_URL":   e.base,
		"CONNECTD_DATA_DIR":     t.TempDir(),
		"CONNECTD_DATABASE_URL": storetest.NewURL(t, o.backend),
		"CONNECTD_DEMO":         strconv.FormatBool(o.demo),
		"CONNECTD_RATE_LIMIT":   "0",
	}
	if o.backend == storetest.Postgres {
		lines, err := keys.GenerateLines(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSpace(lines), "\n") {
			k, v, _ := strings.Cut(l, "=")
			raw[k] = v
		}
	}
	cfg, err := config.FromMap(raw)
	if err != nil {
		t.Fatal(err)
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "connectd", Level: hclog.Debug, Output: e.logs, JSONFormat: true})
	ctx, cancel := context.WithCancel(context.Background())
	e.deps, err = app.Build(ctx, cfg, logger, func(string) string { return "" }, nil, connectors.All())
	if err != nil {
		cancel()
		t.Fatalf("build: %v", err)
	}
	reg := prometheus.NewRegistry()
	if e.wired, err = app.Wire(e.deps, reg); err != nil {
		t.Fatalf("wire: %v", err)
	}
	for _, s := range e.wired.Surfaces {
		if c, ok := s.(*democrm.CRM); ok {
			e.crm = c
		}
	}
	srv, err := server.New(server.Options{Registry: reg, Logger: logger, Clock: e.deps.Clock, Ready: e.deps.Store.Ping}, e.wired.Surfaces...)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, run := range e.wired.Background {
		wg.Add(1)
		go func() { defer wg.Done(); run(ctx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Serve(ctx, ln, nil) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = e.deps.Close()
	})
	jar, _ := cookiejar.New(nil)
	e.client = &http.Client{
		Jar:           jar,
		Transport:     recorder{e: e},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
	return e
}

// recorder keeps every response body and header for leak checks.
type recorder struct{ e *env }

func (r recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	r.e.mu.Lock()
	r.e.bodies = append(r.e.bodies, body)
	for k, vs := range resp.Header {
		if k != "Set-Cookie" { // the console cookie holds session tokens by design
			r.e.bodies = append(r.e.bodies, []byte(strings.Join(vs, "\n")))
		}
	}
	r.e.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// assertNoLeak fails when something that looks like a demo CRM token, or
// one of the given values, appears in a response or a log line.
func (e *env) assertNoLeak(t *testing.T, values ...string) {
	t.Helper()
	token := regexp.MustCompile(`demo_(at|rt|code)_[A-Za-z0-9_-]{20,}`)
	e.mu.Lock()
	all := append([][]byte{[]byte(e.logs.String())}, e.bodies...)
	e.mu.Unlock()
	for _, b := range all {
		if m := token.Find(b); m != nil {
			// Codes legitimately travel in the redirect to /oauth/callback
			// (a Location header); nothing else may carry a token.
			if bytes.HasPrefix(m, []byte("demo_code_")) && !bytes.Contains(b, []byte("<")) && !bytes.Contains(b, []byte("{")) {
				continue
			}
			t.Fatalf("a demo token leaked: %.80s", b)
		}
		for _, v := range values {
			if v != "" && bytes.Contains(b, []byte(v)) {
				t.Fatalf("%q leaked", v)
			}
		}
	}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("not JSON (%d): %s", r.status, r.body)
	}
	return m
}

func (e *env) do(t *testing.T, method, rawURL string, body io.Reader, header ...string) response {
	t.Helper()
	if strings.HasPrefix(rawURL, "/") {
		rawURL = e.base + rawURL
	}
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// api calls the console's JSON API as the page's script does.
func (e *env) api(t *testing.T, path string, body any) response {
	t.Helper()
	b, _ := json.Marshal(body)
	return e.do(t, http.MethodPost, "/console/api/"+path, bytes.NewReader(b),
		"Content-Type", "application/json", "Origin", e.base, "Sec-Fetch-Site", "same-origin")
}

func (e *env) sessions(t *testing.T) []map[string]any {
	t.Helper()
	r := e.do(t, http.MethodGet, "/console/api/sessions", nil)
	if r.status != http.StatusOK {
		t.Fatalf("sessions: %d %s", r.status, r.body)
	}
	var out struct {
		Sessions []map[string]any `json:"sessions"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatal(err)
	}
	return out.Sessions
}

// follow follows redirects (recording each hop) until a non-redirect.
func (e *env) follow(t *testing.T, r response) (response, []string) {
	t.Helper()
	var hops []string
	for i := 0; r.status >= 300 && r.status < 400; i++ {
		if i > 10 {
			t.Fatal("too many redirects")
		}
		loc := r.header.Get("Location")
		if strings.HasPrefix(loc, "/") {
			loc = e.base + loc
		}
		hops = append(hops, loc)
		r = e.do(t, http.MethodGet, loc, nil)
	}
	return r, hops
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// formOf reads the hidden inputs of an HTML page.
func formOf(page []byte) url.Values {
	f := url.Values{}
	for _, m := range hiddenInput.FindAllSubmatch(page, -1) {
		f.Set(string(m[1]), htmlUnescape(string(m[2])))
	}
	return f
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&#43;", "+", "&amp;", "&", "&#34;", `"`, "&#39;", "'", "&lt;", "<", "&gt;", ">").Replace(s)
}
