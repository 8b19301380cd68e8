package server_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	_ "github.com/glebarez/go-sqlite" // real database for /readyz
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/httpx"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

const canary = "canary-secret-7f3a9c"

// testSurface mounts routes that exercise the middleware.
func testSurface(r gin.IRouter, mw server.Middlewares) {
	r.POST("/echo", func(c *gin.Context) {
		var v struct {
			Name string `json:"name"`
		}
		if err := httpx.DecodeJSON(c, &v); err != nil {
			httpx.Fail(c, err)
			return
		}
		c.JSON(http.StatusOK, gin.H{"name": v.Name})
	})
	r.GET("/panic", func(c *gin.Context) {
		panic("boom with " + canary)
	})
	r.GET("/users/:id", func(c *gin.Context) { c.String(http.StatusOK, "user") })
	r.POST("/login", mw.Limiter.PerIP(), func(c *gin.Context) {
		if !mw.Limiter.CheckAccount(c, c.Query("account")) {
			return
		}
		c.String(http.StatusOK, "in")
	})
	r.GET("/dbfail", func(c *gin.Context) {
		httpx.Fail(c, failure.New(failure.Unavailable, "The database is not reachable.", errors.New("pq: password authentication failed for "+canary)))
	})
}

type running struct {
	url    string
	addr   string
	logs   *syncBuffer
	srv    *server.Server
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, opts server.Options) *running {
	t.Helper()
	logs := &syncBuffer{}
	opts.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})
	srv, err := server.New(opts, server.SurfaceFunc(testSurface))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mln net.Listener
	if srv.Metrics != nil {
		if mln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{url: "http://" + ln.Addr().String(), addr: ln.Addr().String(), logs: logs, srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Serve(ctx, ln, mln) }()
	if mln != nil {
		r.srv.Metrics.Addr = mln.Addr().String()
	}
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return r
}

func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func newReq(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func decodeError(t *testing.T, body []byte) httpx.ErrorBody {
	t.Helper()
	var e httpx.ErrorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	if e.RequestID == "" || e.Error == "" || e.Message == "" {
		t.Fatalf("error body %q lacks error, message or requestId", body)
	}
	return e
}

func TestOperationalRoutes(t *testing.T) {
	r := start(t, server.Options{Version: "v-test"})
	resp, body := do(t, newReq(t, "GET", r.url+"/isAlive", nil))
	if resp.StatusCode != 200 || string(body) != "OK" {
		t.Fatalf("/isAlive = %d %q, want 200 OK", resp.StatusCode, body)
	}
	resp, body = do(t, newReq(t, "GET", r.url+"/healthz", nil))
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"status":"ok"`) || !strings.Contains(string(body), "v-test") {
		t.Fatalf("/healthz = %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, newReq(t, "GET", r.url+"/readyz", nil))
	if resp.StatusCode != 200 {
		t.Fatalf("/readyz without a Ready func = %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, newReq(t, "GET", r.url+"/nope", nil))
	if resp.StatusCode != 404 || decodeError(t, body).Error != "not_found" {
		t.Fatalf("unknown route = %d %s", resp.StatusCode, body)
	}
}

func TestReadyzFollowsDatabasePing(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+t.TempDir()+"/ready.db")
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, server.Options{Ready: db.PingContext})
	resp, body := do(t, newReq(t, "GET", r.url+"/readyz", nil))
	if resp.StatusCode != 200 {
		t.Fatalf("/readyz with a live database = %d %s", resp.StatusCode, body)
	}
	db.Close() // the database goes away
	resp, body = do(t, newReq(t, "GET", r.url+"/readyz", nil))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with a closed database = %d %s, want 503", resp.StatusCode, body)
	}
	if e := decodeError(t, body); e.Error != "unavailable" || strings.Contains(string(body), "sql:") {
		t.Fatalf("/readyz body %s: want code unavailable and no driver text", body)
	}
}

func TestBodyLimit(t *testing.T) {
	r := start(t, server.Options{})
	big := bytes.Repeat([]byte("a"), 10<<20)
	t.Run("declared 10 MB body", func(t *testing.T) {
		resp, body := do(t, newReq(t, "POST", r.url+"/echo", bytes.NewReader(big)))
		if resp.StatusCode != http.StatusRequestEntityTooLarge || decodeError(t, body).Error != "too_large" {
			t.Fatalf("got %d %s, want 413 too_large", resp.StatusCode, body)
		}
	})
	t.Run("streamed 10 MB body without length", func(t *testing.T) {
		// A reader of unknown size makes the client send it chunked, so
		// only the MaxBytesReader can stop it.
		req := newReq(t, "POST", r.url+"/echo", io.MultiReader(strings.NewReader(`{"name":"`), bytes.NewReader(big), strings.NewReader(`"}`)))
		req.ContentLength = -1
		resp, body := do(t, req)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || decodeError(t, body).Error != "too_large" {
			t.Fatalf("got %d %s, want 413 too_large", resp.StatusCode, body)
		}
	})
	t.Run("just under the limit", func(t *testing.T) {
		name := strings.Repeat("b", server.DefaultBodyLimit-20)
		resp, body := do(t, newReq(t, "POST", r.url+"/echo", strings.NewReader(`{"name":"`+name+`"}`)))
		if resp.StatusCode != 200 || !strings.Contains(string(body), name) {
			t.Fatalf("got %d (len %d), want 200 with the name", resp.StatusCode, len(body))
		}
	})
}

func TestJSONDecoding(t *testing.T) {
	r := start(t, server.Options{})
	cases := []struct {
		name, body string
		status     int
	}{
		{"valid", `{"name":"ann"}`, 200},
		{"valid with unknown member", `{"name":"ann","extra":1}`, 200},
		{"trailing garbage", `{"name":"ann"}garbage`, 400},
		{"second value", `{"name":"ann"} {"name":"bob"}`, 400},
		{"wrong type", `{"name":42}`, 400},
		{"array", `[1,2]`, 400},
		{"truncated", `{"name":"an`, 400},
		{"empty", ``, 400},
		{"trailing whitespace", "{\"name\":\"ann\"}\n  ", 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, newReq(t, "POST", r.url+"/echo", strings.NewReader(tc.body)))
			if resp.StatusCode != tc.status {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, body, tc.status)
			}
			if tc.status == 400 {
				if e := decodeError(t, body); e.Error != "invalid_request" {
					t.Fatalf("code %q, want invalid_request", e.Error)
				}
			} else if !strings.Contains(string(body), `"ann"`) {
				t.Fatalf("body %s does not echo the name", body)
			}
		})
	}
}

func TestSlowHeadersAreCut(t *testing.T) {
	r := start(t, server.Options{ReadHeaderTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /isAlive HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	// Dribble one header byte at a time, never finishing the headers. The
	// server must close the connection; the loop stops at the first failed
	// write or after far more bytes than the timeout allows.
	closed := make(chan []byte, 1)
	go func() {
		got, _ := io.ReadAll(conn) // returns when the server closes
		closed <- got
	}()
	hdr := []byte("X-Slow: " + strings.Repeat("a", 200))
	var got []byte
	wait := time.After(30 * time.Second)
dribble:
	for i := 0; ; i++ {
		select {
		case got = <-closed:
			break dribble
		case <-wait:
			t.Fatal("server kept a connection with unfinished headers open for 30s")
		case <-time.After(50 * time.Millisecond):
			if _, err := conn.Write(hdr[i%len(hdr) : i%len(hdr)+1]); err != nil {
				got = <-closed
				break dribble
			}
		}
	}
	if bytes.Contains(got, []byte("200 OK")) {
		t.Fatalf("server answered a request whose headers never finished: %q", got)
	}
}

func TestPanicRecovery(t *testing.T) {
	r := start(t, server.Options{})
	req := newReq(t, "GET", r.url+"/panic", nil)
	req.Header.Set("Authorization", "Bearer "+canary+"-header")
	resp, body := do(t, req)
	if resp.StatusCode != 500 {
		t.Fatalf("panic answered %d %s, want 500", resp.StatusCode, body)
	}
	e := decodeError(t, body)
	if e.Error != "internal" || e.Message != "Internal error." {
		t.Fatalf("panic body %s", body)
	}
	if resp.Header.Get("X-Request-Id") != e.RequestID {
		t.Fatalf("request id header %q != body %q", resp.Header.Get("X-Request-Id"), e.RequestID)
	}
	for _, bad := range []string{canary, "goroutine", ".go:", "boom"} {
		if strings.Contains(string(body), bad) {
			t.Fatalf("panic body leaks %q: %s", bad, body)
		}
	}
	logs := r.logs.String()
	if !strings.Contains(logs, "panic in handler") || !strings.Contains(logs, e.RequestID) {
		t.Fatalf("panic not logged with its request id:\n%s", logs)
	}
	if strings.Contains(logs, canary+"-header") {
		t.Fatalf("log dumps request headers:\n%s", logs)
	}
	// The server still serves after a panic.
	if resp, _ := do(t, newReq(t, "GET", r.url+"/isAlive", nil)); resp.StatusCode != 200 {
		t.Fatalf("after panic /isAlive = %d", resp.StatusCode)
	}
}

func TestFailureNeverLeaksCause(t *testing.T) {
	r := start(t, server.Options{})
	resp, body := do(t, newReq(t, "GET", r.url+"/dbfail", nil))
	if resp.StatusCode != 503 || decodeError(t, body).Error != "unavailable" {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "pq:") || strings.Contains(string(body), canary) {
		t.Fatalf("body leaks the cause: %s", body)
	}
}

func TestRequestIDs(t *testing.T) {
	r := start(t, server.Options{})
	cases := []struct {
		name, in string
		kept     bool
	}{
		{"well formed is kept", "abc-123_x.y", true},
		{"absent is generated", "", false},
		{"injection is replaced", "a\"b c", false},
		{"too long is replaced", strings.Repeat("a", 65), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := newReq(t, "GET", r.url+"/isAlive", nil)
			if tc.in != "" {
				req.Header.Set("X-Request-Id", tc.in)
			}
			resp, _ := do(t, req)
			got := resp.Header.Get("X-Request-Id")
			if tc.kept && got != tc.in {
				t.Fatalf("id %q not kept: %q", tc.in, got)
			}
			if !tc.kept && (got == tc.in || len(got) != 32) {
				t.Fatalf("id %q: got %q, want a fresh 32-hex id", tc.in, got)
			}
		})
	}
}

func TestAccessLogHasNoQueryString(t *testing.T) {
	r := start(t, server.Options{})
	do(t, newReq(t, "GET", r.url+"/users/42?code="+canary+"&state=xyz", nil))
	logs := r.logs.String()
	if !strings.Contains(logs, "path=/users/42") || !strings.Contains(logs, "route=/users/:id") {
		t.Fatalf("access log lacks path/route:\n%s", logs)
	}
	if strings.Contains(logs, canary) || strings.Contains(logs, "state=xyz") {
		t.Fatalf("access log contains the query string:\n%s", logs)
	}
}

func TestSecurityHeaders(t *testing.T) {
	r := start(t, server.Options{})
	resp, _ := do(t, newReq(t, "GET", r.url+"/users/1", nil))
	want := map[string]string{
		"Cache-Control":           "no-store",
		"Referrer-Policy":         "no-referrer",
		"Content-Security-Policy": "frame-ancestors 'none'",
		"X-Content-Type-Options":  "nosniff",
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func TestCORS(t *testing.T) {
	const listed = "chrome-extension://abcdefgh"
	r := start(t, server.Options{CORSOrigins: []string{listed, "https://app.example.com"}})
	preflight := func(origin string) *http.Response {
		req := newReq(t, "OPTIONS", r.url+"/echo", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		resp, _ := do(t, req)
		return resp
	}
	t.Run("unlisted origin preflight", func(t *testing.T) {
		resp := preflight("https://evil.example.com")
		for k := range resp.Header {
			if strings.HasPrefix(strings.ToLower(k), "access-control-") {
				t.Fatalf("unlisted origin got %s: %q", k, resp.Header.Get(k))
			}
		}
	})
	t.Run("listed origin preflight", func(t *testing.T) {
		resp := preflight(listed)
		if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != listed {
			t.Fatalf("preflight = %d allow-origin %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
		}
		if resp.Header.Get("Access-Control-Allow-Credentials") != "true" || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Fatalf("preflight headers %v", resp.Header)
		}
	})
	t.Run("listed origin request exposes refreshed token", func(t *testing.T) {
		req := newReq(t, "POST", r.url+"/echo", strings.NewReader(`{"name":"a"}`))
		req.Header.Set("Origin", "https://app.example.com")
		resp, _ := do(t, req)
		if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
			t.Fatalf("allow-origin %q", resp.Header.Get("Access-Control-Allow-Origin"))
		}
		if !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "x-refreshed-jwt-token") {
			t.Fatalf("expose-headers %q", resp.Header.Get("Access-Control-Expose-Headers"))
		}
	})
	t.Run("unlisted origin request", func(t *testing.T) {
		req := newReq(t, "POST", r.url+"/echo", strings.NewReader(`{"name":"a"}`))
		req.Header.Set("Origin", "https://app.example.com.evil.io")
		resp, _ := do(t, req)
		if v := resp.Header.Get("Access-Control-Allow-Origin"); v != "" {
			t.Fatalf("unlisted origin allowed: %q", v)
		}
	})
}

func TestRateLimit(t *testing.T) {
	login := func(t *testing.T, r *running, xff, account string) *http.Response {
		req := newReq(t, "POST", r.url+"/login?account="+account, nil)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, _ := do(t, req)
		return resp
	}
	t.Run("per IP with spoofed X-Forwarded-For from an untrusted peer", func(t *testing.T) {
		r := start(t, server.Options{RateLimit: 3})
		for i := 0; i < 3; i++ {
			if resp := login(t, r, "203.0.113."+strconv.Itoa(i), ""); resp.StatusCode != 200 {
				t.Fatalf("attempt %d = %d, want 200", i+1, resp.StatusCode)
			}
		}
		resp := login(t, r, "198.51.100.77", "")
		if resp.StatusCode != 429 {
			t.Fatalf("4th attempt with a fresh spoofed X-Forwarded-For = %d, want 429", resp.StatusCode)
		}
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
			t.Fatalf("Retry-After = %q", resp.Header.Get("Retry-After"))
		}
	})
	t.Run("per IP behind a trusted proxy", func(t *testing.T) {
		r := start(t, server.Options{RateLimit: 1, TrustedProxies: []string{"127.0.0.1/32"}})
		if resp := login(t, r, "203.0.113.1", ""); resp.StatusCode != 200 {
			t.Fatalf("client 1 = %d", resp.StatusCode)
		}
		if resp := login(t, r, "203.0.113.2", ""); resp.StatusCode != 200 {
			t.Fatalf("client 2 (another real client behind the proxy) = %d, want 200", resp.StatusCode)
		}
		if resp := login(t, r, "203.0.113.1", ""); resp.StatusCode != 429 {
			t.Fatalf("client 1 again = %d, want 429", resp.StatusCode)
		}
	})
	t.Run("per account across IPs", func(t *testing.T) {
		r := start(t, server.Options{RateLimit: 2, TrustedProxies: []string{"127.0.0.1/32"}})
		for i := 0; i < 2; i++ {
			if resp := login(t, r, "203.0.113."+strconv.Itoa(10+i), "acct-1"); resp.StatusCode != 200 {
				t.Fatalf("attempt %d = %d", i+1, resp.StatusCode)
			}
		}
		if resp := login(t, r, "203.0.113.50", "acct-1"); resp.StatusCode != 429 {
			t.Fatalf("3rd attempt on the account from a new IP = %d, want 429", resp.StatusCode)
		}
		if resp := login(t, r, "203.0.113.51", "acct-2"); resp.StatusCode != 200 {
			t.Fatalf("another account = %d, want 200", resp.StatusCode)
		}
	})
	t.Run("0 disables", func(t *testing.T) {
		r := start(t, server.Options{RateLimit: 0})
		for i := 0; i < 100; i++ {
			if resp := login(t, r, "", "a"); resp.StatusCode != 200 {
				t.Fatalf("attempt %d = %d with limiting disabled", i+1, resp.StatusCode)
			}
		}
	})
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, body := do(t, newReq(t, "GET", url, nil))
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s = %d", url, resp.StatusCode)
	}
	return string(body)
}

func TestMetrics(t *testing.T) {
	r := start(t, server.Options{})
	for _, id := range []string{"123", "456"} {
		do(t, newReq(t, "GET", r.url+"/users/"+id, nil))
	}
	do(t, newReq(t, "GET", r.url+"/nope/zzqq-unmatched", nil))
	text := scrape(t, r.url+"/metrics")
	for _, want := range []string{
		`connectd_http_requests_total{method="GET",route="/users/:id",status="200"} 2`,
		`connectd_http_requests_total{method="GET",route="unmatched",status="404"} 1`,
		`connectd_http_request_duration_seconds_count{method="GET",route="/users/:id",status="200"} 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(text, "/users/123") || strings.Contains(text, "zzqq") {
		t.Errorf("metrics are labelled by raw path")
	}

	// Two servers in one process keep separate registries.
	r2 := start(t, server.Options{})
	if strings.Contains(scrape(t, r2.url+"/metrics"), `route="/users/:id"`) {
		t.Fatal("second server sees the first server's counters")
	}
}

func TestMetricsOnSeparateListener(t *testing.T) {
	r := start(t, server.Options{MetricsAddr: "127.0.0.1:0"})
	resp, _ := do(t, newReq(t, "GET", r.url+"/metrics", nil))
	if resp.StatusCode != 404 {
		t.Fatalf("/metrics on the main listener = %d, want 404", resp.StatusCode)
	}
	do(t, newReq(t, "GET", r.url+"/isAlive", nil))
	if text := scrape(t, "http://"+r.srv.Metrics.Addr+"/metrics"); !strings.Contains(text, `route="/isAlive"`) {
		t.Fatalf("metrics listener lacks the main listener's counters")
	}
}

func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	srv, err := server.New(server.Options{}, server.SurfaceFunc(func(r gin.IRouter, _ server.Middlewares) {
		r.GET("/slow", func(c *gin.Context) {
			close(entered)
			<-release
			c.String(200, "done")
		})
	}))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, nil) }()

	type result struct {
		status int
		body   string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		res <- result{status: resp.StatusCode, body: string(b)}
	}()
	<-entered
	cancel() // SIGTERM arrives while a request is in flight
	close(release)
	got := <-res
	if got.err != nil || got.status != 200 || got.body != "done" {
		t.Fatalf("in-flight request during shutdown: %+v", got)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("listener still accepts after shutdown")
	}
}

func TestMaxHeaderBytes(t *testing.T) {
	r := start(t, server.Options{MaxHeaderBytes: 4 << 10})
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET /isAlive HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 64<<10)+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized headers = %d, want 431", resp.StatusCode)
	}
}

func TestSharedRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	engineCounter := prometheus.NewCounter(prometheus.CounterOpts{Name: "connectd_engine_test_total", Help: "test"})
	reg.MustRegister(engineCounter)
	engineCounter.Add(3)
	r := start(t, server.Options{Registry: reg})
	if text := scrape(t, r.url+"/metrics"); !strings.Contains(text, "connectd_engine_test_total 3") {
		t.Fatal("metrics registered before New are not served")
	}
}

// BenchmarkMiddlewareChain measures the global middleware (request id,
// access log, metrics, recovery, headers, CORS, body limit) around a
// trivial handler, without the network.
func BenchmarkMiddlewareChain(b *testing.B) {
	srv, err := server.New(server.Options{CORSOrigins: []string{"https://app.example.com"}}, server.SurfaceFunc(testSurface))
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/users/42", nil)
	req.Header.Set("Origin", "https://app.example.com")
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		srv.Engine.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}
