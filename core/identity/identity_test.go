package identity_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/identity"
	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/encryption"
)

// fakeRC answers the extension endpoint per token.
type fakeRC struct {
	srv     *httptest.Server
	calls   atomic.Int64
	status  atomic.Int64 // forced status (0 = normal)
	mu      sync.Mutex
	headers []http.Header
	paths   []string
	hang    chan struct{}
}

func newFakeRC(t *testing.T) *fakeRC {
	f := &fakeRC{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		f.mu.Lock()
		f.headers = append(f.headers, r.Header.Clone())
		f.paths = append(f.paths, r.URL.Path)
		hang := f.hang
		f.mu.Unlock()
		if hang != nil {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			return
		}
		if s := f.status.Load(); s != 0 {
			w.WriteHeader(int(s))
			return
		}
		switch r.Header.Get("Authorization") {
		case "Bearer admin-token":
			fmt.Fprint(w, `{"id": 62012345001, "name": "Ada", "account": {"id": 37439510}, "permissions": {"admin": {"enabled": true}}}`)
		case "Bearer user-token":
			fmt.Fprint(w, `{"id": "62012345002", "account": {"id": "37439510"}, "permissions": {"admin": {"enabled": false}}}`)
		case "Bearer no-account":
			fmt.Fprint(w, `{"id": 1}`)
		case "Bearer html":
			fmt.Fprint(w, `<html>oops</html>`)
		default:
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func newSessions(t *testing.T) *session.Manager {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	ring, err := encryption.NewKeyRing(7, key)
	if err != nil {
		t.Fatal(err)
	}
	m, err := session.New(session.Options{Keys: ring, Issuer: "http://connectd.test", Sessions: storetest.OpenStore(t, storetest.SQLite, nil)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRingCentral(t *testing.T) {
	rc := newFakeRC(t)
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	svc, err := identity.New(identity.Options{RingCentralServer: rc.srv.URL + "/", Clock: clk, CacheTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	cases := []struct {
		name, token string
		want        *identity.Identity
		code        failure.Code
	}{
		{"admin with numeric ids", "admin-token", &identity.Identity{Host: hostOf("ringcentral", "37439510", "62012345001"), Admin: true, Name: "Ada"}, ""},
		{"user with string ids", "user-token", &identity.Identity{Host: hostOf("ringcentral", "37439510", "62012345002")}, ""},
		{"unknown token", "bogus", nil, failure.Unauthenticated},
		{"answer without account", "no-account", nil, failure.UpstreamInvalid},
		{"answer not JSON", "html", nil, failure.UpstreamInvalid},
		{"token with a space", "a b", nil, failure.Unauthenticated},
		{"huge token", strings.Repeat("x", identity.MaxTokenLength+1), nil, failure.Unauthenticated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := svc.Verify(ctx, tc.token)
			if tc.code != "" {
				if !failure.Is(err, tc.code) || got != nil {
					t.Fatalf("Verify = %+v, %v; want %s", got, err, tc.code)
				}
				if err != nil && strings.Contains(failure.MessageOf(err), tc.token) {
					t.Fatal("the error message repeats the token")
				}
				return
			}
			if err != nil || *got != *tc.want {
				t.Fatalf("Verify = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	rc.mu.Lock()
	if rc.paths[0] != "/restapi/v1.0/account/~/extension/~" || rc.headers[0].Get("Authorization") != "Bearer admin-token" {
		t.Fatalf("request = %s %v", rc.paths[0], rc.headers[0])
	}
	rc.mu.Unlock()

	t.Run("cached briefly", func(t *testing.T) {
		before := rc.calls.Load()
		for range 3 {
			if _, err := svc.Verify(ctx, "admin-token"); err != nil {
				t.Fatal(err)
			}
		}
		if n := rc.calls.Load() - before; n != 0 {
			t.Fatalf("%d upstream calls within the cache lifetime", n)
		}
		clk.Advance(61 * time.Second)
		if _, err := svc.Verify(ctx, "admin-token"); err != nil {
			t.Fatal(err)
		}
		if n := rc.calls.Load() - before; n != 1 {
			t.Fatalf("%d upstream calls after expiry, want 1", n)
		}
	})
	t.Run("failures are not cached", func(t *testing.T) {
		before := rc.calls.Load()
		_, _ = svc.Verify(ctx, "bogus")
		_, _ = svc.Verify(ctx, "bogus")
		if n := rc.calls.Load() - before; n != 2 {
			t.Fatalf("%d upstream calls for two failing verifications", n)
		}
	})
	t.Run("outage is unavailable, not unauthenticated", func(t *testing.T) {
		for _, st := range []int{500, 502, 503, 429} {
			rc.status.Store(int64(st))
			_, err := svc.Verify(ctx, fmt.Sprintf("fresh-%d", st))
			if !failure.Is(err, failure.UpstreamUnavailable) {
				t.Errorf("status %d: %v", st, err)
			}
		}
		rc.status.Store(0)
	})
	t.Run("server down", func(t *testing.T) {
		down, err := identity.New(identity.Options{RingCentralServer: "http://127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := down.Verify(ctx, "admin-token"); !failure.Is(err, failure.UpstreamUnavailable) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		rc.mu.Lock()
		rc.hang = make(chan struct{})
		rc.mu.Unlock()
		defer func() {
			rc.mu.Lock()
			close(rc.hang)
			rc.hang = nil
			rc.mu.Unlock()
		}()
		slow, err := identity.New(identity.Options{RingCentralServer: rc.srv.URL, HTTP: &http.Client{Timeout: 50 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := slow.Verify(ctx, "user-token"); !failure.Is(err, failure.UpstreamUnavailable) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("VerifyHost", func(t *testing.T) {
		h, err := svc.VerifyHost(ctx, "")
		if h != nil || err != nil {
			t.Fatalf("no token: %v %v", h, err)
		}
		h, err = svc.VerifyHost(ctx, "user-token")
		if err != nil || *h != hostOf("ringcentral", "37439510", "62012345002") {
			t.Fatalf("%v %v", h, err)
		}
	})
}

func hostOf(kind, account, user string) store.HostIdentity {
	return store.HostIdentity{Kind: kind, AccountID: account, UserID: user}
}

func TestOperatorTokens(t *testing.T) {
	rc := newFakeRC(t)
	sessions := newSessions(t)
	svc, err := identity.New(identity.Options{RingCentralServer: rc.srv.URL, Tokens: sessions})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var out, errOut bytes.Buffer
	if err := identity.TokenCommand(ctx, []string{"--account", "acme-1", "--user", "u7", "--admin", "--ttl", "2h"}, &out, &errOut, sessions); err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(out.String())
	if !strings.HasPrefix(tok, "cdi_") || !strings.Contains(errOut.String(), "revoke") {
		t.Fatalf("stdout %q stderr %q", tok, errOut.String())
	}
	id, err := svc.Verify(ctx, tok)
	if err != nil || id.Host != hostOf("operator", "acme-1", "u7") || !id.Admin {
		t.Fatalf("Verify = %+v, %v", id, err)
	}
	if n := rc.calls.Load(); n != 0 {
		t.Fatalf("an operator token reached RingCentral (%d calls)", n)
	}
	t.Run("tampered", func(t *testing.T) {
		if _, err := svc.Verify(ctx, tok[:len(tok)-2]+"xx"); !failure.Is(err, failure.Unauthenticated) {
			t.Fatalf("got %v", err)
		}
		if _, err := svc.Verify(ctx, "cdi_not-a-jwt"); !failure.Is(err, failure.Unauthenticated) {
			t.Fatalf("got %v", err)
		}
		if n := rc.calls.Load(); n != 0 {
			t.Fatalf("a cdi_ token reached RingCentral (%d calls)", n)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		sid := strings.Fields(errOut.String())[1]
		sid = strings.TrimSuffix(sid, ",")
		var rout bytes.Buffer
		if err := identity.RevokeCommand(ctx, []string{"--session", sid}, &rout, sessions); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Verify(ctx, tok); !failure.Is(err, failure.Unauthenticated) {
			t.Fatalf("revoked token verified: %v", err)
		}
	})
	t.Run("refused without a token verifier", func(t *testing.T) {
		noOp, _ := identity.New(identity.Options{RingCentralServer: rc.srv.URL})
		if _, err := noOp.Verify(ctx, tok); !failure.Is(err, failure.Unauthenticated) {
			t.Fatalf("got %v", err)
		}
		if n := rc.calls.Load(); n != 0 {
			t.Fatal("forwarded to RingCentral")
		}
	})
	t.Run("command usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"--user", "u"},
			{"--account", "a"},
			{"--account", "a", "--user", "u", "--ttl", "-1h"},
			{"--account", "a", "--user", "u", "--ttl", "9000h"},
			{"--account", "a", "--user", "u", "extra"},
			{"--bogus"},
		} {
			if err := identity.TokenCommand(ctx, args, &out, &errOut, sessions); !errors.Is(err, identity.ErrUsage) {
				t.Errorf("%v: %v", args, err)
			}
		}
		var help bytes.Buffer
		if err := identity.TokenCommand(ctx, []string{"--help"}, &help, &errOut, sessions); !errors.Is(err, flag.ErrHelp) || !strings.Contains(help.String(), "--account") {
			t.Errorf("help: %v %q", err, help.String())
		}
	})
}
