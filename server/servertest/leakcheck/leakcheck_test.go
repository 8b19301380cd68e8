package leakcheck

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// failTB records Errorf instead of failing, so the self-test can prove the
// guard fails a test that leaked.
type failTB struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (f *failTB) Helper() {}
func (f *failTB) Errorf(format string, a ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errors = append(f.errors, fmt.Sprintf(format, a...))
}

const canary = "rt_canary_9f8e7d6c5b4a"

// TestPlantedCanaryIsCaught plants a canary in each place and encoding a
// leak can take and proves the check fails the test, naming where, and
// never printing the whole secret.
func TestPlantedCanaryIsCaught(t *testing.T) {
	cases := []struct {
		name      string
		plant     func(g *Guard)
		where     string
		form      string
		wantNoHit bool
	}{
		{name: "log line", where: "log", form: "plain", plant: func(g *Guard) {
			hclog.New(&hclog.LoggerOptions{Output: g.Logs(), JSONFormat: true}).Info("refreshed", "token", canary)
		}},
		{name: "response body via client transport", where: "response", form: "plain", plant: func(g *Guard) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, `{"refresh_token":%q}`, canary)
			}))
			defer srv.Close()
			c := &http.Client{Transport: g.Transport(nil)}
			resp, err := c.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body) // the caller still reads the body
			if !strings.Contains(string(b), canary) {
				t.Fatalf("transport ate the body: %q", b)
			}
		}},
		{name: "response header via handler", where: "response", form: "url", plant: func(g *Guard) {
			h := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Location", "https://x.example/cb?code="+url.QueryEscape("code_canary/+=="))
				w.WriteHeader(http.StatusFound)
			}))
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
			g.Secret("code_canary/+==") // characters URL escaping changes
		}},
		{name: "base64 in a log line", where: "log", form: "base64", plant: func(g *Guard) {
			fmt.Fprintf(g.Logs(), "auth=%s\n", base64.StdEncoding.EncodeToString([]byte(canary)))
		}},
		{name: "log-only secret returned is fine", wantNoHit: true, plant: func(g *Guard) {
			g.Record([]byte(`{"jwtToken":"eyJhbGciOi.jwt_canary_123456.sig"}`))
			g.LogSecret("eyJhbGciOi.jwt_canary_123456.sig")
		}},
		{name: "log-only secret logged is caught", where: "log", form: "plain", plant: func(g *Guard) {
			fmt.Fprintln(g.Logs(), "session eyJhbGciOi.jwt_canary_123456.sig")
			g.LogSecret("eyJhbGciOi.jwt_canary_123456.sig")
		}},
		{name: "dynamic secret", where: "response", form: "plain", plant: func(g *Guard) {
			g.Record([]byte("later: dyn_secret_0042"))
			g.Dynamic(func() []string { return []string{"dyn_secret_0042"} })
		}},
		{name: "too short to check", wantNoHit: true, plant: func(g *Guard) {
			fmt.Fprintln(g.Logs(), "id=abc")
			g.Secret("abc")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := &Guard{}
			g.Secret(canary)
			tc.plant(g)
			ft := &failTB{}
			g.Check(ft)
			if tc.wantNoHit {
				if len(ft.errors) != 0 {
					t.Fatalf("false positive: %v", ft.errors)
				}
				return
			}
			if len(ft.errors) == 0 {
				t.Fatalf("planted canary not caught")
			}
			leaks := g.Find()
			found := false
			for _, l := range leaks {
				found = found || (l.Where == tc.where && l.Form == tc.form)
			}
			if !found {
				t.Errorf("leaks = %+v, want one in a %s, %s form", leaks, tc.where, tc.form)
			}
			for _, e := range ft.errors {
				if strings.Contains(e, canary) || strings.Contains(e, "jwt_canary") {
					t.Errorf("the failure message repeats the secret: %s", e)
				}
			}
		})
	}
}

// TestCleanSuitePasses: a guard with canaries and clean output fails
// nothing, and New installs the check at the end of the test.
func TestCleanSuitePasses(t *testing.T) {
	ft := &failTB{TB: t}
	g := &Guard{}
	g.Secret(canary)
	fmt.Fprintln(g.Logs(), `{"@message":"refreshed","user_id":"u1"}`)
	g.Record([]byte(`{"successful":true}`))
	g.Check(ft)
	if len(ft.errors) != 0 {
		t.Fatalf("clean output flagged: %v", ft.errors)
	}

	var cleanups []func()
	ct := &cleanupTB{failTB: failTB{TB: t}, cleanups: &cleanups}
	g2 := New(ct)
	g2.Secret(canary)
	fmt.Fprintln(g2.Logs(), canary)
	if len(cleanups) != 1 {
		t.Fatalf("New registered %d cleanups, want 1", len(cleanups))
	}
	cleanups[0]()
	if len(ct.errors) == 0 {
		t.Fatalf("the check New installs did not fail the leaking test")
	}
}

type cleanupTB struct {
	failTB
	cleanups *[]func()
}

func (c *cleanupTB) Cleanup(f func()) { *c.cleanups = append(*c.cleanups, f) }
