package outbound

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connectd/connectd/core/failure"
)

func TestCheckURL(t *testing.T) {
	patterns := []string{"*.pipedrive.com", "api.example.com", "127.0.0.1", "10.1.2.3", "169.254.169.254", "localhost"}
	tests := []struct {
		name         string
		raw          string
		allowPrivate bool
		wantErr      string // substring of the safe message; "" = accepted
		wantHost     string
	}{
		{name: "https on a wildcard host", raw: "https://acme.pipedrive.com/oauth/token", wantHost: "acme.pipedrive.com"},
		{name: "deep wildcard", raw: "https://a.b.pipedrive.com/x", wantHost: "a.b.pipedrive.com"},
		{name: "exact host, upper case", raw: "HTTPS://API.EXAMPLE.COM/v1", wantHost: "api.example.com"},
		{name: "explicit port", raw: "https://api.example.com:8443/v1", wantHost: "api.example.com"},
		{name: "apex does not match wildcard", raw: "https://pipedrive.com/", wantErr: "not one this connector may call"},
		{name: "suffix trick", raw: "https://evilpipedrive.com/", wantErr: "not one this connector may call"},
		{name: "pattern as prefix", raw: "https://api.example.com.evil.com/", wantErr: "not one this connector may call"},
		{name: "trailing dot", raw: "https://acme.pipedrive.com./", wantErr: "not one this connector may call"},
		{name: "plain http", raw: "http://acme.pipedrive.com/", wantErr: "must use https"},
		{name: "javascript scheme", raw: "javascript:alert(1)", wantErr: "absolute"},
		{name: "relative", raw: "//acme.pipedrive.com/x", wantErr: "absolute"},
		{name: "userinfo", raw: "https://good@acme.pipedrive.com/", wantErr: "user name or password"},
		{name: "userinfo hiding the real host", raw: "https://acme.pipedrive.com@evil.com/", wantErr: "user name or password"},
		{name: "empty", raw: "", wantErr: "empty"},
		{name: "control character", raw: "https://acme.pipedrive.com/\x00", wantErr: "control characters"},
		{name: "space", raw: "https://acme.pipedrive.com /", wantErr: "control characters"},
		{name: "bad port", raw: "https://api.example.com:99999/", wantErr: "port"},
		{name: "too long", raw: "https://api.example.com/" + strings.Repeat("a", maxURLLength), wantErr: "longer than"},
		{name: "loopback v4", raw: "https://127.0.0.1/token", wantErr: "loopback, private or link-local"},
		{name: "loopback v6", raw: "https://[::1]/token", wantErr: "loopback, private or link-local"},
		{name: "private 10/8", raw: "https://10.1.2.3/token", wantErr: "loopback, private or link-local"},
		{name: "cloud metadata", raw: "https://169.254.169.254/latest/meta-data", wantErr: "loopback, private or link-local"},
		{name: "v4-mapped loopback", raw: "https://[::ffff:127.0.0.1]/", wantErr: "loopback, private or link-local"},
		{name: "localhost name", raw: "https://localhost/", wantErr: "loopback name"},
		{name: "localhost subdomain", raw: "https://a.localhost/", wantErr: "loopback name"},
		{name: "public IP not in patterns", raw: "https://8.8.8.8/", wantErr: "not one this connector may call"},
		{name: "allowed: loopback literal", raw: "https://127.0.0.1:8443/token", allowPrivate: true, wantHost: "127.0.0.1"},
		{name: "allowed: plain http", raw: "http://127.0.0.1:8080/token", allowPrivate: true, wantHost: "127.0.0.1"},
		{name: "allowed: metadata literal when matched", raw: "http://169.254.169.254/", allowPrivate: true, wantHost: "169.254.169.254"},
		{name: "allowed: localhost", raw: "http://localhost:9999/", allowPrivate: true, wantHost: "localhost"},
		{name: "allowed still needs a pattern", raw: "http://10.9.9.9/", allowPrivate: true, wantErr: "not one this connector may call"},
		{name: "allowed still refuses ftp", raw: "ftp://127.0.0.1/", allowPrivate: true, wantErr: "https or http"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := CheckURL(tc.raw, patterns, tc.allowPrivate)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckURL(%q) = %v, want accepted", tc.raw, err)
				}
				if u.Hostname() != tc.wantHost && strings.ToLower(u.Hostname()) != tc.wantHost {
					t.Fatalf("host = %q, want %q", u.Hostname(), tc.wantHost)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckURL(%q) accepted, want error containing %q", tc.raw, tc.wantErr)
			}
			if failure.CodeOf(err) != failure.InvalidRequest {
				t.Fatalf("code = %s, want %s", failure.CodeOf(err), failure.InvalidRequest)
			}
			if msg := failure.MessageOf(err); !strings.Contains(msg, tc.wantErr) {
				t.Fatalf("message %q does not contain %q", msg, tc.wantErr)
			}
		})
	}
	t.Run("no patterns match nothing", func(t *testing.T) {
		if _, err := CheckURL("https://api.example.com/", nil, false); err == nil {
			t.Fatal("accepted a URL with no host patterns")
		}
	})
}

func TestIsPublic(t *testing.T) {
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "2606:4700:4700::1111": true, "1.1.1.1": true,
		"127.0.0.1": false, "127.9.9.9": false, "::1": false, "10.0.0.1": false, "172.16.5.4": false,
		"192.168.1.1": false, "169.254.169.254": false, "fe80::1": false, "fd00::1": false,
		"0.0.0.0": false, "::": false, "100.64.0.1": false, "224.0.0.1": false, "255.255.255.255": false,
		"::ffff:10.0.0.1": false, "64:ff9b::7f00:1": false, "2002:7f00:1::": false, "198.18.0.1": false,
	} {
		if got := IsPublic(netip.MustParseAddr(addr)); got != want {
			t.Errorf("IsPublic(%s) = %v, want %v", addr, got, want)
		}
	}
}

// TestDialGuard proves the guard sees the address actually dialled: IP
// literals and a NAME resolving to loopback are refused, before any
// connection is made, and allowed with AllowPrivate.
func TestDialGuard(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
	}))
	defer tlsSrv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(tlsSrv.URL, "https://"))

	blocked := []struct{ name, url string }{
		{"loopback v4", tlsSrv.URL + "/x"},
		{"loopback v6", "https://[::1]:" + port + "/x"},
		{"name resolving to loopback", "https://localhost:" + port + "/x"},
		{"private 10/8", "https://10.0.0.1:443/x"},
		{"cloud metadata", "https://169.254.169.254/latest/meta-data"},
		{"unspecified", "https://0.0.0.0:" + port + "/x"},
	}
	c := NewClient(Options{Timeout: 5 * time.Second})
	for _, tc := range blocked {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			resp, err := c.Get(tc.url)
			if err == nil {
				_ = resp.Body.Close()
				t.Fatalf("GET %s succeeded, want refused", tc.url)
			}
			if !errors.Is(err, ErrBlockedAddress) {
				t.Fatalf("GET %s: %v, want ErrBlockedAddress", tc.url, err)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("servers saw %d requests, want 0", n)
	}

	t.Run("plain http refused without AllowPrivate", func(t *testing.T) {
		_, err := c.Get(srv.URL)
		if !errors.Is(err, ErrInsecureScheme) {
			t.Fatalf("err = %v, want ErrInsecureScheme", err)
		}
	})

	allowed := NewClient(Options{AllowPrivate: true, Timeout: 5 * time.Second})
	for _, u := range []string{srv.URL + "/x", strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/x"} {
		t.Run("allowed/"+u, func(t *testing.T) {
			before := hits.Load()
			resp, err := allowed.Get(u)
			if err != nil {
				t.Fatalf("GET %s with AllowPrivate: %v", u, err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "ok" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			if hits.Load() != before+1 {
				t.Fatal("server did not see the request")
			}
		})
	}
}

func TestRedirects(t *testing.T) {
	var targetHits atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		targetHits.Add(1)
		_, _ = io.WriteString(w, "target")
	}))
	defer target.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/landed", http.StatusFound)
	}))
	defer redirector.Close()

	t.Run("NoRedirects returns the 3xx", func(t *testing.T) {
		c := NewClient(Options{AllowPrivate: true, NoRedirects: true})
		resp, err := c.Post(redirector.URL+"/token", "application/x-www-form-urlencoded", strings.NewReader("refresh_token=secret"))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("status = %d, want 302", resp.StatusCode)
		}
		if targetHits.Load() != 0 {
			t.Fatal("redirect target was called")
		}
	})
	t.Run("followed by default", func(t *testing.T) {
		c := NewClient(Options{AllowPrivate: true})
		resp, err := c.Get(redirector.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if string(body) != "target" || targetHits.Load() != 1 {
			t.Fatalf("body %q, target hits %d", body, targetHits.Load())
		}
	})
	t.Run("https redirected to http is refused", func(t *testing.T) {
		tlsRedirector := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/downgraded", http.StatusFound)
		}))
		defer tlsRedirector.Close()
		before := targetHits.Load()
		c := NewClient(Options{Transport: tlsRedirector.Client().Transport})
		_, err := c.Get(tlsRedirector.URL)
		if !errors.Is(err, ErrRedirect) || !errors.Is(err, ErrInsecureScheme) {
			t.Fatalf("err = %v, want ErrRedirect wrapping ErrInsecureScheme", err)
		}
		if targetHits.Load() != before {
			t.Fatal("downgraded target was called")
		}
	})
}

func TestResponseSizeCap(t *testing.T) {
	const limit = 1 << 20
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := limit
		switch r.URL.Path {
		case "/over":
			n = limit + 1
		case "/small":
			n = 10
		}
		if r.URL.Query().Get("chunked") == "1" && n > 100 {
			// Flushing before the end forces chunked encoding: no
			// Content-Length for the client to check up front.
			_, _ = w.Write(bytes.Repeat([]byte("a"), 100))
			w.(http.Flusher).Flush()
			n -= 100
		} else {
			w.Header().Set("Content-Length", itoa(n))
		}
		_, _ = w.Write(bytes.Repeat([]byte("a"), n))
	}))
	defer srv.Close()
	c := NewClient(Options{AllowPrivate: true})

	for _, chunked := range []string{"0", "1"} {
		for _, tc := range []struct {
			path    string
			wantErr bool
			wantLen int
		}{{"/small", false, 10}, {"/exact", false, limit}, {"/over", true, 0}} {
			t.Run(tc.path+"/chunked="+chunked, func(t *testing.T) {
				for _, reader := range []string{"ReadAll", "LimitReader"} {
					ctx, recorded := WithBodyErrorRecorder(context.Background())
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+tc.path+"?chunked="+chunked, nil)
					resp, err := c.Do(req)
					var body []byte
					if err == nil {
						var r io.Reader = resp.Body
						if reader == "LimitReader" {
							// What golang.org/x/oauth2 does: it stops at
							// 1 MiB itself and would parse a prefix.
							r = io.LimitReader(resp.Body, limit)
						}
						body, err = io.ReadAll(r)
						_ = resp.Body.Close()
					}
					if !tc.wantErr {
						if err != nil || len(body) != tc.wantLen {
							t.Fatalf("%s: err %v, %d bytes, want %d", reader, err, len(body), tc.wantLen)
						}
						if recorded() != nil {
							t.Fatalf("%s: recorded %v", reader, recorded())
						}
						continue
					}
					if !errors.Is(err, ErrResponseTooLarge) {
						t.Fatalf("%s: err = %v, want ErrResponseTooLarge", reader, err)
					}
					if chunked == "1" && !errors.Is(recorded(), ErrResponseTooLarge) {
						t.Fatalf("%s: recorder holds %v", reader, recorded())
					}
				}
			})
		}
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	c := NewClient(Options{AllowPrivate: true, Timeout: 50 * time.Millisecond})
	_, err := c.Get(srv.URL)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a timeout", err)
	}
}

func TestDefaults(t *testing.T) {
	c := NewClient(Options{})
	if c.Timeout != DefaultTimeout {
		t.Fatalf("timeout %v", c.Timeout)
	}
	ct, ok := c.Transport.(*capTransport)
	if !ok || ct.max != DefaultMaxResponseBytes {
		t.Fatalf("transport %T", c.Transport)
	}
	tr, ok := ct.base.(*http.Transport)
	if !ok || tr.Proxy != nil {
		t.Fatal("guarded transport must not use a proxy (the guard would check the proxy's address)")
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for n > 0 || i == len(b) {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
