package connectortest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/connectd/connectd/core/connectortest"
)

func rotatingProvider(t *testing.T) (*connectortest.Provider, *oauth2.Token) {
	t.Helper()
	o := baseOptions()
	o.RotateRefreshTokens, o.ReuseDetection = true, true
	o.AccessTokenTTL = time.Hour
	p := connectortest.NewProvider(t, o)
	return p, p.IssueTokens("alice", "")
}

// refreshVia refreshes with x/oauth2 as the engine does.
func refreshVia(ctx context.Context, p *connectortest.Provider, rt string) (*oauth2.Token, error) {
	cfg := p.OAuth2Config()
	cfg.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
	return cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
}

// postRefresh is a plain http.Client refresh returning the raw answer.
func postRefresh(ctx context.Context, p *connectortest.Provider, rt string) (*http.Response, []byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.TokenURL(), strings.NewReader(refreshForm(rt).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	o := p.Options()
	req.SetBasicAuth(url.QueryEscape(o.ClientID), url.QueryEscape(o.ClientSecret))
	resp, err := p.Client().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// TestFaultsLeaveStateUntouched: every answering fault refuses the refresh
// with the documented shape, x/oauth2 reports an error, and the refresh
// token was NOT rotated (it still works once the fault is gone).
func TestFaultsLeaveStateUntouched(t *testing.T) {
	tests := []struct {
		name       string
		fault      connectortest.Fault
		wantStatus int
		check      func(t *testing.T, resp *http.Response, body []byte)
		wantCode   string // x/oauth2 RetrieveError code, if any
	}{
		{"500", connectortest.Status5xx(500), 500, nil, ""},
		{"503", connectortest.Status5xx(503), 503, nil, ""},
		{"429", connectortest.TooMany429(1500 * time.Millisecond), 429, func(t *testing.T, resp *http.Response, _ []byte) {
			if got := resp.Header.Get("Retry-After"); got != "2" {
				t.Errorf("Retry-After %q, want 2", got)
			}
		}, ""},
		{"invalid_grant", connectortest.InvalidGrant(), 400, func(t *testing.T, _ *http.Response, body []byte) {
			if !strings.Contains(string(body), `"error":"invalid_grant"`) {
				t.Errorf("body %s", body)
			}
		}, "invalid_grant"},
		{"error in 200", connectortest.ErrorIn200(), 200, func(t *testing.T, _ *http.Response, body []byte) {
			if strings.TrimSpace(string(body)) != `{"error":"invalid_grant"}` {
				t.Errorf("body %s", body)
			}
		}, "invalid_grant"},
		{"HTML 200", connectortest.HTML200(), 200, func(t *testing.T, resp *http.Response, body []byte) {
			if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "<html>") {
				t.Errorf("not HTML: %q", resp.Header.Get("Content-Type"))
			}
		}, ""},
		{"no access_token", connectortest.NoAccessToken(), 200, func(t *testing.T, _ *http.Response, body []byte) {
			if strings.Contains(string(body), "access_token") || !strings.Contains(string(body), "token_type") {
				t.Errorf("body %s", body)
			}
		}, ""},
		{"oversized", connectortest.Oversized(), 200, func(t *testing.T, _ *http.Response, body []byte) {
			if len(body) <= 1<<20 || !strings.HasPrefix(string(body), `{"access_token":`) || !strings.HasSuffix(string(body), `"}`) {
				t.Errorf("body %d bytes, want a complete JSON object over 1 MiB", len(body))
			}
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, tok := rotatingProvider(t)
			p.FailNext(connectortest.PathToken, tc.fault, 2)

			resp, body, err := postRefresh(context.Background(), p, tok.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if tc.check != nil {
				tc.check(t, resp, body)
			}

			_, err = refreshVia(context.Background(), p, tok.RefreshToken)
			if err == nil {
				t.Fatalf("x/oauth2 accepted a %s answer", tc.fault)
			}
			if tc.wantCode != "" && retrieveErrorCode(err) != tc.wantCode {
				t.Errorf("x/oauth2 error %v, want code %s", err, tc.wantCode)
			}

			// Both faults used up: nothing rotated, the token still works.
			if info, _ := p.TokenInfo(tok.RefreshToken); info.Rotated || info.Revoked {
				t.Fatalf("fault changed state: %+v", info)
			}
			got, err := refreshVia(context.Background(), p, tok.RefreshToken)
			if err != nil {
				t.Fatalf("after the faults: %v", err)
			}
			if got.RefreshToken == tok.RefreshToken {
				t.Fatalf("not rotated after the faults")
			}
			if p.RefreshCount() != 3 {
				t.Errorf("RefreshCount %d, want 3 (faulted calls are recorded)", p.RefreshCount())
			}
		})
	}
}

// TestLostResponseReallyRotates: the provider rotates, the client gets no
// answer, and the old refresh token is now a reuse that revokes the grant -
// the refresh_uncertain case of security.md.
func TestLostResponseReallyRotates(t *testing.T) {
	p, tok := rotatingProvider(t)
	p.FailNext(connectortest.PathToken, connectortest.LostResponse(), 1)
	_, err := refreshVia(context.Background(), p, tok.RefreshToken)
	if err == nil {
		t.Fatal("client got an answer to a lost response")
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		t.Fatalf("got an HTTP answer (%v), want a transport error", err)
	}
	info, _ := p.TokenInfo(tok.RefreshToken)
	if !info.Rotated || info.Revoked {
		t.Fatalf("old refresh token %+v: want rotated by the lost call", info)
	}
	if n := len(p.ActiveRefreshTokens()); n != 1 {
		t.Fatalf("%d active refresh tokens, want the one the client never saw", n)
	}
	// Retrying with the old token is reuse: invalid_grant and the family dies.
	_, err = refreshVia(context.Background(), p, tok.RefreshToken)
	if retrieveErrorCode(err) != "invalid_grant" {
		t.Fatalf("retry: %v, want invalid_grant", err)
	}
	if !p.FamilyRevoked(tok.RefreshToken) || len(p.ActiveRefreshTokens()) != 0 {
		t.Fatal("family not revoked after replaying the lost-response token")
	}
}

func TestLostResponseOnRevokeStillRevokes(t *testing.T) {
	p, tok := rotatingProvider(t)
	p.FailNext(connectortest.PathRevoke, connectortest.LostResponse(), 1)
	req, _ := http.NewRequest(http.MethodPost, p.RevokeURL(), strings.NewReader(url.Values{"token": {tok.RefreshToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("client-1", url.QueryEscape("s3cret/with+specials"))
	if resp, err := p.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("revoke answered %d, want a dropped connection", resp.StatusCode)
	}
	if !p.FamilyRevoked(tok.RefreshToken) {
		t.Fatal("revocation not performed")
	}
}

func TestSlowRespectsClientDeadline(t *testing.T) {
	p, tok := rotatingProvider(t)
	p.FailNext(connectortest.PathToken, connectortest.Slow(time.Hour), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := refreshVia(ctx, p, tok.RefreshToken)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want deadline exceeded", err)
	}
	// The abandoned call performed nothing.
	if info, _ := p.TokenInfo(tok.RefreshToken); info.Rotated {
		t.Fatal("abandoned slow call rotated the token")
	}
	// A short Slow answers normally.
	p.FailNext(connectortest.PathToken, connectortest.Slow(time.Millisecond), 1)
	if _, err := refreshVia(context.Background(), p, tok.RefreshToken); err != nil {
		t.Fatalf("short slow: %v", err)
	}
	// The test ending closes the server, which waits for every handler:
	// a leaked hour-long wait would hang here.
}

// TestCleanupEndsPendingSlowCalls: a client without a deadline does not keep
// the provider (and the test) alive.
func TestCleanupEndsPendingSlowCalls(t *testing.T) {
	var wg sync.WaitGroup
	var callErr error
	t.Run("provider", func(t *testing.T) {
		p, tok := rotatingProvider(t)
		p.SetFault(connectortest.PathToken, connectortest.Slow(time.Hour))
		wg.Go(func() {
			_, callErr = refreshVia(context.Background(), p, tok.RefreshToken)
		})
		for p.RefreshCount() == 0 {
			time.Sleep(time.Millisecond) // wait for the request to arrive
		}
	})
	wg.Wait()
	if callErr == nil {
		t.Fatal("pending call succeeded after the provider closed")
	}
}

func TestFaultScheduling(t *testing.T) {
	t.Run("FailNext applies to exactly n calls, in order", func(t *testing.T) {
		p, tok := rotatingProvider(t)
		p.FailNext(connectortest.PathToken, connectortest.Status5xx(502), 2)
		p.FailNext(connectortest.PathToken, connectortest.TooMany429(time.Second), 1)
		var got []int
		for range 4 {
			resp, _, err := postRefresh(context.Background(), p, tok.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, resp.StatusCode)
		}
		if fmt.Sprint(got) != "[502 502 429 200]" {
			t.Fatalf("statuses %v", got)
		}
	})
	t.Run("SetFault lasts until ClearFaults; per path", func(t *testing.T) {
		p, tok := rotatingProvider(t)
		p.SetFault(connectortest.PathUserInfo, connectortest.Status5xx(503))
		for range 3 {
			if st, _ := userInfo(t, p, tok.AccessToken); st != 503 {
				t.Fatalf("userinfo %d, want 503", st)
			}
		}
		if resp, _, _ := postRefresh(context.Background(), p, tok.RefreshToken); resp.StatusCode != 200 {
			t.Fatalf("token endpoint affected by a userinfo fault: %d", resp.StatusCode)
		}
		p.ClearFaults()
		if st, _ := userInfo(t, p, tok.AccessToken); st != 200 {
			t.Fatalf("after ClearFaults: %d", st)
		}
	})
	t.Run("AllPaths and Latency combine with other faults", func(t *testing.T) {
		p, tok := rotatingProvider(t)
		p.SetFault(connectortest.AllPaths, connectortest.Latency(time.Millisecond))
		p.FailNext(connectortest.PathToken, connectortest.Status5xx(500), 1)
		resp, _, _ := postRefresh(context.Background(), p, tok.RefreshToken)
		if resp.StatusCode != 500 {
			t.Fatalf("first %d, want 500 behind the latency", resp.StatusCode)
		}
		resp, _, _ = postRefresh(context.Background(), p, tok.RefreshToken)
		if resp.StatusCode != 200 {
			t.Fatalf("second %d, want 200", resp.StatusCode)
		}
		if st, _ := userInfo(t, p, tok.AccessToken); st != 200 {
			t.Fatalf("userinfo behind latency: %d", st)
		}
		// Latency also respects the caller's deadline.
		p.SetFault(connectortest.AllPaths, connectortest.Latency(time.Hour))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if _, _, err := postRefresh(ctx, p, tok.RefreshToken); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want deadline exceeded", err)
		}
	})
	t.Run("invalid faults fail the test", func(t *testing.T) {
		for _, f := range []connectortest.Fault{connectortest.Status5xx(404), connectortest.Slow(0), {}} {
			ft := &fakeTB{TB: t}
			q := connectortest.NewProvider(ft, baseOptions())
			func() {
				defer func() { _ = recover() }()
				q.SetFault(connectortest.PathToken, f)
			}()
			if len(ft.errors()) == 0 {
				t.Errorf("fault %v accepted", f)
			}
		}
	})
}

func TestFaultString(t *testing.T) {
	tests := map[string]connectortest.Fault{
		"status 503":      connectortest.Status5xx(503),
		"too_many 2s":     connectortest.TooMany429(2 * time.Second),
		"lost_response":   connectortest.LostResponse(),
		"latency 1ms":     connectortest.Latency(time.Millisecond),
		"no_access_token": connectortest.NoAccessToken(),
	}
	for want, f := range tests {
		t.Run(want, func(t *testing.T) {
			if f.String() != want {
				t.Fatalf("%q, want %q", f.String(), want)
			}
		})
	}
}
