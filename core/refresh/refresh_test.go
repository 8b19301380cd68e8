package refresh_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/jobs"
	"github.com/connectd/connectd/core/outbound"
	"github.com/connectd/connectd/core/refresh"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/encryption"
)

const platform = "testcrm"

// margin is the refresh margin of the test connector.
const margin = 120 * time.Second

// ---- a tiny OAuth connector against connectortest.Provider ----

type testConn struct {
	prov *connectortest.Provider
	// unauthorized records the users handed to Unauthorize.
	mu           sync.Mutex
	unauthorized []connector.User
	unauthErr    error
}

var (
	_ connector.OAuthConnector = (*testConn)(nil)
	_ connector.Unauthorizer   = (*testConn)(nil)
)

func (c *testConn) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthOAuth, nil
}

func (c *testConn) UserInfo(context.Context, connector.UserInfoRequest) (connector.UserInfoResult, error) {
	return connector.UserInfoResult{}, errors.New("not used by these tests")
}

func (c *testConn) OAuthInfo(context.Context, connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	o := c.prov.Options()
	return connector.OAuthInfo{
		ClientID: o.ClientID, ClientSecret: connector.Secret(o.ClientSecret),
		TokenURL: c.prov.TokenURL(), AuthURL: c.prov.AuthURL(),
		AuthStyle: oauth2.AuthStyleInParams,
	}, nil
}

// Unauthorize revokes the refresh token, then the access token (RFC 7009),
// authenticating as the client itself.
func (c *testConn) Unauthorize(ctx context.Context, req connector.UserRequest) (connector.Result, error) {
	c.mu.Lock()
	c.unauthorized = append(c.unauthorized, req.User)
	err := c.unauthErr
	c.mu.Unlock()
	if err != nil {
		return connector.Result{}, err
	}
	for _, tok := range []connector.Secret{req.User.RefreshToken, req.User.AccessToken} {
		if tok == "" {
			continue
		}
		r, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.prov.RevokeURL(),
			strings.NewReader(url.Values{"token": {tok.Reveal()}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.SetBasicAuth(req.OAuth.ClientID, req.OAuth.ClientSecret.Reveal())
		resp, err := req.HTTPClient.Do(r)
		if err != nil {
			return connector.Result{}, err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return connector.Result{}, fmt.Errorf("revoke: status %d", resp.StatusCode)
		}
	}
	return connector.Result{Successful: true}, nil
}

// refresherConn refreshes through connector.TokenRefresher, with a hook
// that runs before its answer.
type refresherConn struct {
	*testConn
	hook   func(ctx context.Context)
	answer func(ctx context.Context, req connector.RefreshRequest) (*oauth2.Token, error)
}

func (c *refresherConn) RefreshToken(ctx context.Context, req connector.RefreshRequest) (*oauth2.Token, error) {
	if c.hook != nil {
		c.hook(ctx)
	}
	return c.answer(ctx, req)
}

// apiKeyConn is an API-key connector.
type apiKeyConn struct{}

func (apiKeyConn) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthAPIKey, nil
}
func (apiKeyConn) UserInfo(context.Context, connector.UserInfoRequest) (connector.UserInfoResult, error) {
	return connector.UserInfoResult{}, errors.New("not used")
}
func (apiKeyConn) BasicAuth(apiKey string) string {
	return base64.StdEncoding.EncodeToString([]byte(apiKey + ":"))
}

// ---- harness ----

// hookTransport runs after (when set) once the provider has answered a
// token request, before the answer reaches x/oauth2: the moment a caller
// disconnects or a user logs out "after the provider answered".
type hookTransport struct {
	base  http.RoundTripper
	mu    sync.Mutex
	after func(*http.Response)
}

func (h *hookTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := h.base.RoundTrip(r)
	h.mu.Lock()
	after := h.after
	h.after = nil
	h.mu.Unlock()
	if err == nil && after != nil {
		after(resp)
	}
	return resp, err
}

func (h *hookTransport) set(f func(*http.Response)) {
	h.mu.Lock()
	h.after = f
	h.mu.Unlock()
}

type env struct {
	t       testing.TB
	backend string
	url     string
	sealer  gormstore.Sealer
	clk     *clock.Fake
	st      *gormstore.Store
	prov    *connectortest.Provider
	conn    connector.Connector
	base    *testConn
	hook    *hookTransport
	svc     *refresh.Service
	reg     *prometheus.Registry
	opts    refresh.Options
}

type envOptions struct {
	provider connectortest.ProviderOptions
	service  func(*refresh.Options)
	conn     func(*testConn) connector.Connector
}

func newEnv(t testing.TB, backend string, eo envOptions) *env {
	t.Helper()
	clk := clock.NewFake(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	e := &env{t: t, backend: backend, clk: clk, sealer: newSealer(t)}
	e.url = storetest.NewURL(t, backend)
	e.st = storetest.OpenStoreWith(t, gormstore.Options{URL: e.url, Sealer: e.sealer, Clock: clk})
	po := eo.provider
	po.Clock = clk
	e.prov = connectortest.NewProvider(t, po)
	e.base = &testConn{prov: e.prov}
	e.conn = connector.Connector(e.base)
	if eo.conn != nil {
		e.conn = eo.conn(e.base)
	}
	e.hook = &hookTransport{base: http.DefaultTransport}
	e.opts = refresh.Options{
		Users: e.st, Jobs: e.st,
		Connectors: refresh.ConnectorSourceFunc(func(p string) (connector.Connector, time.Duration, error) {
			if p != platform {
				return nil, 0, failure.Newf(failure.NotFound, "Platform not found.")
			}
			return e.conn, margin, nil
		}),
		HTTP:  outbound.NewClient(outbound.Options{AllowPrivate: true, NoRedirects: true, Transport: e.hook}),
		Clock: clk, Logger: storetest.TestLogger(t),
		WaitPoll: 2 * time.Millisecond,
	}
	e.reg = prometheus.NewRegistry()
	e.opts.Registerer = e.reg
	if eo.service != nil {
		eo.service(&e.opts)
	}
	svc, err := refresh.New(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	return e
}

// replica is a second Service on its own store connection pool against the
// same database (another replica).
func (e *env) replica() *refresh.Service {
	e.t.Helper()
	st := storetest.OpenStoreWith(e.t, gormstore.Options{URL: e.url, Sealer: e.sealer, Clock: e.clk})
	o := e.opts
	o.Users, o.Jobs, o.Registerer = st, st, nil
	svc, err := refresh.New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return svc
}

// seed stores a login of login ("alice") with tokens the provider issued,
// its access token expiring at expiry (relative to the fake clock).
func (e *env) seed(login string, expiresIn time.Duration) *store.User {
	e.t.Helper()
	tok := e.prov.IssueTokens(login, "")
	exp := e.clk.Now().Add(expiresIn)
	u, err := e.st.UpsertUser(context.Background(), &store.User{
		Platform: platform, CRMUserID: login, AppConnectID: login + "-" + platform,
		Host:        store.HostIdentity{Kind: "ringcentral", AccountID: "acc-1", UserID: login},
		AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenExpiry: &exp,
		Status: store.StatusActive,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.prov.Reset()
	return u
}

func (e *env) get(id string) *store.User {
	e.t.Helper()
	u, err := e.st.GetUser(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

func (e *env) outcome(name string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != "connectd_token_refresh_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == name {
					v += m.GetCounter().GetValue()
				}
			}
		}
	}
	return v
}

func newSealer(t testing.TB) gormstore.Sealer {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	ring, err := encryption.ParseKeyRing("1:" + base64.StdEncoding.EncodeToString(key))
	if err != nil {
		t.Fatal(err)
	}
	return encryption.NewAEAD(ring, nil)
}

func wantCode(t testing.TB, err error, code failure.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if got := failure.CodeOf(err); got != code {
		t.Fatalf("error code = %s (%v), want %s", got, err, code)
	}
}

// waitFor polls cond (no timing is asserted; the deadline only stops a
// hung test).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ---- tests ----

func TestNewValidates(t *testing.T) {
	t.Parallel()
	st := storetest.OpenStore(t, storetest.SQLite, nil)
	src := refresh.ConnectorSourceFunc(func(string) (connector.Connector, time.Duration, error) { return nil, 0, nil })
	hc := outbound.NewClient(outbound.Options{NoRedirects: true})
	for name, tc := range map[string]struct {
		o    refresh.Options
		want string
	}{
		"no users":      {refresh.Options{Jobs: st, Connectors: src, HTTP: hc}, "Users"},
		"no jobs":       {refresh.Options{Users: st, Connectors: src, HTTP: hc}, "Jobs"},
		"no connectors": {refresh.Options{Users: st, Jobs: st, HTTP: hc}, "Connectors"},
		"no http":       {refresh.Options{Users: st, Jobs: st, Connectors: src}, "HTTP"},
		"upstream timeout outlives the lease": {refresh.Options{Users: st, Jobs: st, Connectors: src, HTTP: hc,
			LeaseTTL: 2 * time.Second, UpstreamTimeout: 1800 * time.Millisecond}, "UpstreamTimeout"},
		"default upstream timeout vs short lease": {refresh.Options{Users: st, Jobs: st, Connectors: src, HTTP: hc,
			LeaseTTL: 10 * time.Second}, "UpstreamTimeout"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := refresh.New(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error naming %s", err, tc.want)
			}
		})
	}
	if _, err := refresh.New(refresh.Options{Users: st, Jobs: st, Connectors: src, HTTP: hc,
		LeaseTTL: 2 * time.Second, UpstreamTimeout: 1500 * time.Millisecond}); err != nil {
		t.Fatalf("valid options refused: %v", err)
	}
}

func TestFreshNotDue(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{})
		for name, exp := range map[string]time.Duration{"an hour left": time.Hour, "just outside the margin": margin + time.Second} {
			t.Run(name, func(t *testing.T) {
				u := e.seed("alice", exp)
				got, err := e.svc.Fresh(context.Background(), u.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.AccessToken != u.AccessToken || got.Version != u.Version {
					t.Fatalf("record changed: version %d -> %d", u.Version, got.Version)
				}
				if n := e.prov.Count(connectortest.PathToken); n != 0 {
					t.Fatalf("%d token requests, want 0", n)
				}
			})
		}
	})
}

// Case 7: a response without a new refresh token keeps the old one; with
// one, it replaces it. The request carries the stored refresh token.
func TestRefreshSavesTokens(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		for _, tc := range []struct {
			name    string
			opts    connectortest.ProviderOptions
			newRT   bool
			expires time.Duration
		}{
			{"rotation replaces the refresh token", connectortest.ProviderOptions{RotateRefreshTokens: true, ReuseDetection: true, AccessTokenTTL: time.Hour}, true, -time.Minute},
			{"omitted refresh token keeps the old one", connectortest.ProviderOptions{OmitRefreshTokenOnRefresh: true, AccessTokenTTL: time.Hour}, false, time.Minute},
			{"same refresh token re-sent", connectortest.ProviderOptions{AccessTokenTTL: time.Hour}, false, 0},
			{"no expires_in: no expiry stored", connectortest.ProviderOptions{RotateRefreshTokens: true}, true, -time.Hour},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, backend, envOptions{provider: tc.opts})
				u := e.seed("alice", tc.expires)
				got, err := e.svc.Fresh(context.Background(), u.ID)
				if err != nil {
					t.Fatal(err)
				}
				reqs := e.prov.TokenRequests()
				if len(reqs) != 1 {
					t.Fatalf("%d token requests, want 1", len(reqs))
				}
				f := reqs[0].Form
				if f.Get("grant_type") != "refresh_token" || f.Get("refresh_token") != u.RefreshToken || f.Get("client_id") != "test-client" {
					t.Fatalf("token request form: grant %q, refresh token sent = stored: %v, client %q",
						f.Get("grant_type"), f.Get("refresh_token") == u.RefreshToken, f.Get("client_id"))
				}
				stored := e.get(u.ID)
				if stored.AccessToken == u.AccessToken || stored.AccessToken != got.AccessToken {
					t.Fatal("access token not replaced by the refreshed one")
				}
				if !slices.Contains(e.prov.ActiveAccessTokens(), stored.AccessToken) {
					t.Fatal("stored access token is not one the provider accepts")
				}
				if tc.newRT == (stored.RefreshToken == u.RefreshToken) {
					t.Fatalf("refresh token replaced = %v, want %v", stored.RefreshToken != u.RefreshToken, tc.newRT)
				}
				if stored.Status != store.StatusActive || stored.Version != u.Version+1 {
					t.Fatalf("status %s version %d, want active %d", stored.Status, stored.Version, u.Version+1)
				}
				if tc.opts.AccessTokenTTL > 0 {
					if stored.TokenExpiry == nil || !stored.TokenExpiry.Equal(e.clk.Now().Add(tc.opts.AccessTokenTTL)) {
						t.Fatalf("expiry %v, want now+%s", stored.TokenExpiry, tc.opts.AccessTokenTTL)
					}
				} else if stored.TokenExpiry != nil {
					t.Fatalf("expiry %v, want none", stored.TokenExpiry)
				}
				if e.outcome(refresh.OutcomeRefreshed) != 1 {
					t.Fatal("refreshed outcome not counted")
				}
				// Fresh again: not due any more, no request.
				if _, err := e.svc.Fresh(context.Background(), u.ID); err != nil {
					t.Fatal(err)
				}
				if n := e.prov.RefreshCount(); n != 1 {
					t.Fatalf("%d refresh requests after a second Fresh, want 1", n)
				}
			})
		}
	})
}

// Case 8: 500/503/429/timeout -> tokens kept, 503 (UpstreamUnavailable),
// record not marked broken; back off, then recover.
func TestTemporaryFailuresKeepTokens(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		for _, tc := range []struct {
			name       string
			fault      connectortest.Fault
			wantStatus store.UserStatus
			backoff    time.Duration
		}{
			{"500", connectortest.Status5xx(500), store.StatusActive, refresh.DefaultFailureBackoff},
			{"503", connectortest.Status5xx(503), store.StatusActive, refresh.DefaultFailureBackoff},
			{"429 with Retry-After", connectortest.TooMany429(7 * time.Second), store.StatusActive, 7 * time.Second},
			// No answer after the request went out: the provider may have
			// rotated, so the record says refresh_uncertain (not broken:
			// tokens kept, the next attempt tries once).
			{"timeout", connectortest.Slow(time.Minute), store.StatusRefreshUncertain, refresh.DefaultFailureBackoff},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, backend, envOptions{
					provider: connectortest.ProviderOptions{RotateRefreshTokens: true, ReuseDetection: true, AccessTokenTTL: time.Hour},
					service:  func(o *refresh.Options) { o.UpstreamTimeout = 300 * time.Millisecond },
				})
				u := e.seed("alice", -time.Minute)
				e.prov.FailNext(connectortest.PathToken, tc.fault, 1)

				_, err := e.svc.Fresh(context.Background(), u.ID)
				wantCode(t, err, failure.UpstreamUnavailable)
				stored := e.get(u.ID)
				if stored.AccessToken != u.AccessToken || stored.RefreshToken != u.RefreshToken || stored.Version != u.Version {
					t.Fatal("tokens changed after a temporary failure")
				}
				if stored.Status != tc.wantStatus {
					t.Fatalf("status %s, want %s", stored.Status, tc.wantStatus)
				}
				if e.prov.RefreshCount() != 1 {
					t.Fatalf("%d refresh requests, want 1", e.prov.RefreshCount())
				}

				// Backing off: no new request until the back-off passed.
				e.clk.Advance(tc.backoff - time.Second)
				_, err = e.svc.Fresh(context.Background(), u.ID)
				wantCode(t, err, failure.UpstreamUnavailable)
				if e.prov.RefreshCount() != 1 {
					t.Fatalf("token endpoint called while backing off")
				}
				e.clk.Advance(2 * time.Second)
				got, err := e.svc.Fresh(context.Background(), u.ID)
				if err != nil {
					t.Fatalf("after the back-off: %v", err)
				}
				if got.Status != store.StatusActive || got.Version != u.Version+1 || got.AccessToken == u.AccessToken {
					t.Fatalf("not refreshed after recovery: status %s version %d", got.Status, got.Version)
				}
				if e.prov.RefreshCount() != 2 {
					t.Fatalf("%d refresh requests, want 2", e.prov.RefreshCount())
				}
			})
		}
		t.Run("token still valid within the margin is served", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{provider: connectortest.ProviderOptions{AccessTokenTTL: time.Hour}})
			u := e.seed("alice", time.Minute) // due (margin 2 min) but not expired
			e.prov.FailNext(connectortest.PathToken, connectortest.Status5xx(502), 1)
			got, err := e.svc.Fresh(context.Background(), u.ID)
			if err != nil {
				t.Fatalf("Fresh = %v, want the still-valid token", err)
			}
			if got.AccessToken != u.AccessToken || e.get(u.ID).Status != store.StatusActive {
				t.Fatal("still-valid token not served as it was")
			}
		})
	})
}

// Case 9: invalid_grant -> re-read; nobody else refreshed -> needs_reauth,
// no retry loop; later calls make no upstream call.
func TestInvalidGrant(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		t.Run("marks needs_reauth", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{provider: connectortest.ProviderOptions{RotateRefreshTokens: true, AccessTokenTTL: time.Hour}})
			u := e.seed("alice", -time.Minute)
			e.prov.FailNext(connectortest.PathToken, connectortest.InvalidGrant(), 1)
			_, err := e.svc.Fresh(context.Background(), u.ID)
			wantCode(t, err, failure.NeedsReauth)
			stored := e.get(u.ID)
			if stored.Status != store.StatusNeedsReauth {
				t.Fatalf("status %s, want needs_reauth", stored.Status)
			}
			for range 3 {
				_, err = e.svc.Fresh(context.Background(), u.ID)
				wantCode(t, err, failure.NeedsReauth)
				_, err = e.svc.ForceRefresh(context.Background(), u.ID, stored.Version)
				wantCode(t, err, failure.NeedsReauth)
			}
			if n := e.prov.RefreshCount(); n != 1 {
				t.Fatalf("%d refresh requests, want exactly 1 (no retry loop)", n)
			}
			if e.outcome(refresh.OutcomeNeedsReauth) != 1 {
				t.Fatal("needs_reauth outcome not counted")
			}
		})
		t.Run("someone else refreshed meanwhile: use theirs", func(t *testing.T) {
			var e *env
			var relogin *store.User
			e = newEnv(t, backend, envOptions{
				provider: connectortest.ProviderOptions{AccessTokenTTL: time.Hour},
				conn: func(b *testConn) connector.Connector {
					return &refresherConn{testConn: b,
						hook: func(ctx context.Context) {
							// The user logs in again while our request is out.
							tok := e.prov.IssueTokens("alice", "")
							exp := e.clk.Now().Add(time.Hour)
							var err error
							relogin, err = e.st.UpsertUser(ctx, &store.User{
								Platform: platform, CRMUserID: "alice", AppConnectID: "alice-" + platform,
								Host:        store.HostIdentity{Kind: "ringcentral", AccountID: "acc-1", UserID: "alice"},
								AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenExpiry: &exp, Status: store.StatusActive,
							})
							if err != nil {
								t.Error(err)
							}
						},
						answer: func(context.Context, connector.RefreshRequest) (*oauth2.Token, error) {
							return nil, &oauth2.RetrieveError{ErrorCode: "invalid_grant"}
						}}
				},
			})
			u := e.seed("alice", -time.Minute)
			got, err := e.svc.Fresh(context.Background(), u.ID)
			if err != nil {
				t.Fatalf("Fresh = %v, want the re-logged-in record", err)
			}
			if relogin == nil || got.AccessToken != relogin.AccessToken || got.Version != relogin.Version {
				t.Fatal("did not return the record another login saved")
			}
			if st := e.get(u.ID).Status; st != store.StatusActive {
				t.Fatalf("status %s, want active", st)
			}
		})
	})
}

// Case 6: unusable 200 answers -> UpstreamInvalid, nothing saved.
func TestUnusableTokenResponses(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		for _, tc := range []struct {
			name  string
			fault connectortest.Fault
		}{
			{"200 with error", connectortest.ErrorIn200()},
			{"HTML", connectortest.HTML200()},
			{"no access_token", connectortest.NoAccessToken()},
			{"over 1 MiB", connectortest.Oversized()},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, backend, envOptions{provider: connectortest.ProviderOptions{RotateRefreshTokens: true, AccessTokenTTL: time.Hour}})
				u := e.seed("alice", -time.Minute)
				e.prov.FailNext(connectortest.PathToken, tc.fault, 1)
				_, err := e.svc.Fresh(context.Background(), u.ID)
				wantCode(t, err, failure.UpstreamInvalid)
				stored := e.get(u.ID)
				if stored.AccessToken != u.AccessToken || stored.RefreshToken != u.RefreshToken || stored.Version != u.Version {
					t.Fatal("something was saved from an unusable response")
				}
				if stored.Status != store.StatusActive {
					t.Fatalf("status %s, want active (restored)", stored.Status)
				}
				if e.prov.RefreshCount() != 1 {
					t.Fatalf("%d refresh requests, want 1", e.prov.RefreshCount())
				}
				if strings.Contains(err.Error(), "oversized-token") || strings.Contains(err.Error(), "<html") {
					t.Fatal("error text carries the response body")
				}
			})
		}
	})
}

// Lost response: the provider rotated and the answer never arrived. The
// record is refresh_uncertain, tokens kept; the next attempt tries once,
// meets invalid_grant (the stored refresh token was rotated away, and
// replaying it revoked the grant) and ends needs_reauth.
func TestLostResponseThenInvalidGrant(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{provider: connectortest.ProviderOptions{RotateRefreshTokens: true, ReuseDetection: true, AccessTokenTTL: time.Hour}})
		u := e.seed("alice", -time.Minute)
		e.prov.FailNext(connectortest.PathToken, connectortest.LostResponse(), 1)
		_, err := e.svc.Fresh(context.Background(), u.ID)
		wantCode(t, err, failure.UpstreamUnavailable)
		stored := e.get(u.ID)
		if stored.Status != store.StatusRefreshUncertain || stored.RefreshToken != u.RefreshToken {
			t.Fatalf("status %s (want refresh_uncertain), refresh token kept %v", stored.Status, stored.RefreshToken == u.RefreshToken)
		}
		if info, _ := e.prov.TokenInfo(u.RefreshToken); !info.Rotated {
			t.Fatal("precondition: the provider should have rotated the refresh token")
		}
		e.clk.Advance(refresh.DefaultFailureBackoff + time.Second)
		_, err = e.svc.Fresh(context.Background(), u.ID)
		wantCode(t, err, failure.NeedsReauth)
		if st := e.get(u.ID).Status; st != store.StatusNeedsReauth {
			t.Fatalf("status %s, want needs_reauth", st)
		}
		if n := e.prov.RefreshCount(); n != 2 {
			t.Fatalf("%d refresh requests, want 2 (the lost one and one retry)", n)
		}
	})
}

// Case 11: the lease holder died (lease taken, never saved or released):
// others wait without calling the provider, then take over once the lease
// expired, trying once.
func TestLeaseHolderDies(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{provider: connectortest.ProviderOptions{RotateRefreshTokens: true, ReuseDetection: true, AccessTokenTTL: time.Hour}})
		u := e.seed("alice", -time.Minute)
		if _, err := e.st.AcquireUserLease(context.Background(), u.ID, "dead-replica", refresh.DefaultLeaseTTL); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := e.svc.Fresh(ctx, u.ID)
		cancel()
		wantCode(t, err, failure.UpstreamUnavailable)
		if n := e.prov.RefreshCount(); n != 0 {
			t.Fatalf("a waiting replica called the token endpoint %d times", n)
		}
		e.clk.Advance(refresh.DefaultLeaseTTL + time.Second)
		got, err := e.svc.Fresh(context.Background(), u.ID)
		if err != nil {
			t.Fatalf("take-over: %v", err)
		}
		if got.Status != store.StatusActive || got.Version != u.Version+1 || got.RefreshToken == u.RefreshToken {
			t.Fatalf("take-over did not save: status %s version %d", got.Status, got.Version)
		}
		if n := e.prov.RefreshCount(); n != 1 {
			t.Fatalf("%d refresh requests, want 1", n)
		}
	})
}

// Losers of the lease wait for the winner and re-read; with two replicas
// and 50 callers on one expired token, exactly ONE token request.
func TestConcurrentRefreshAcrossReplicas(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{provider: connectortest.ProviderOptions{RotateRefreshTokens: true, ReuseDetection: true, AccessTokenTTL: time.Hour}})
		// Slow the provider down a little so the callers really overlap.
		e.prov.SetFault(connectortest.PathToken, connectortest.Latency(50*time.Millisecond))
		services := []*refresh.Service{e.svc, e.replica()}
		u := e.seed("alice", -time.Minute)

		const callers = 50
		var wg sync.WaitGroup
		tokens := make([]string, callers)
		errs := make([]error, callers)
		start := make(chan struct{})
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				got, err := services[i%2].Fresh(context.Background(), u.ID)
				errs[i] = err
				if err == nil {
					tokens[i] = got.AccessToken
				}
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("caller %d: %v", i, err)
			}
		}
		for i := range tokens {
			if tokens[i] != tokens[0] {
				t.Fatalf("callers got different tokens")
			}
		}
		if n := e.prov.RefreshCount(); n != 1 {
			t.Fatalf("%d refresh requests, want exactly 1", n)
		}
		stored := e.get(u.ID)
		if stored.AccessToken != tokens[0] || stored.Version != u.Version+1 || stored.Status != store.StatusActive {
			t.Fatal("stored record is not the one refresh")
		}
		if e.prov.FamilyRevoked(stored.RefreshToken) {
			t.Fatal("grant revoked: a rotated refresh token was replayed")
		}
	})
}

// signalUsers reports each AcquireUserLease that found the lease held.
type signalUsers struct {
	store.Users
	held chan struct{}
}

func (s signalUsers) AcquireUserLease(ctx context.Context, id, owner string, ttl time.Duration) (*store.User, error) {
	u, err := s.Users.AcquireUserLease(ctx, id, owner, ttl)
	if errors.Is(err, store.ErrLeaseHeld) {
		select {
		case s.held <- struct{}{}:
		default:
		}
	}
	return u, err
}

// A replica waiting for another one's refresh that then fails temporarily
// (the holder restores the status and releases) does not repeat the token
// request itself: it answers UpstreamUnavailable too. (A replica arriving
// only after the holder released may try again: that is a retry after a
// finished attempt, never a request racing an outstanding one.)
func TestLosersDoNotRepeatAFailedRefresh(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{provider: connectortest.ProviderOptions{RotateRefreshTokens: true, ReuseDetection: true, AccessTokenTTL: time.Hour}})
		u := e.seed("alice", -time.Minute)
		e.prov.FailNext(connectortest.PathToken, connectortest.Status5xx(503), 1)
		answered, release := make(chan struct{}), make(chan struct{})
		e.hook.set(func(*http.Response) { close(answered); <-release })

		held := make(chan struct{}, 1)
		other := storetest.OpenStoreWith(t, gormstore.Options{URL: e.url, Sealer: e.sealer, Clock: e.clk})
		o := e.opts
		o.Users, o.Jobs, o.Registerer = signalUsers{Users: other, held: held}, other, nil
		loser, err := refresh.New(o)
		if err != nil {
			t.Fatal(err)
		}

		winnerErr := make(chan error, 1)
		go func() { _, err := e.svc.Fresh(context.Background(), u.ID); winnerErr <- err }()
		<-answered // the winner holds the lease; the provider said 503
		loserErr := make(chan error, 1)
		go func() { _, err := loser.Fresh(context.Background(), u.ID); loserErr <- err }()
		<-held // the loser found the lease held and waits
		close(release)

		wantCode(t, <-winnerErr, failure.UpstreamUnavailable)
		wantCode(t, <-loserErr, failure.UpstreamUnavailable)
		if n := e.prov.RefreshCount(); n != 1 {
			t.Fatalf("%d refresh requests, want 1 (the loser must not repeat it)", n)
		}
		stored := e.get(u.ID)
		if stored.Status != store.StatusActive || stored.Version != u.Version || stored.RefreshToken != u.RefreshToken {
			t.Fatalf("status %s version %d: want active, tokens kept", stored.Status, stored.Version)
		}
	})
}

// Case 12: the caller disconnects after the provider answered: the tokens
// are still saved.
func TestCallerDisconnectStillSaves(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{provider: connectortest.ProviderOptions{RotateRefreshTokens: true, ReuseDetection: true, AccessTokenTTL: time.Hour}})
		u := e.seed("alice", -time.Minute)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		e.hook.set(func(*http.Response) { cancel() })
		_, err := e.svc.Fresh(ctx, u.ID)
		if err == nil {
			// The flight may win the race with the cancellation; either
			// way the save must have happened.
			t.Log("Fresh returned before noticing the cancellation")
		}
		waitFor(t, "the refreshed tokens to be saved", func() bool { return e.get(u.ID).Version == u.Version+1 })
		stored := e.get(u.ID)
		if stored.Status != store.StatusActive || stored.RefreshToken == u.RefreshToken ||
			!slices.Contains(e.prov.ActiveAccessTokens(), stored.AccessToken) {
			t.Fatal("saved record does not hold the provider's new tokens")
		}
		if n := e.prov.RefreshCount(); n != 1 {
			t.Fatalf("%d refresh requests, want 1", n)
		}
	})
}

// Case 13: logout during a refresh -> final state revoked, no tokens
// stored, and the tokens the refresh obtained are revoked upstream through
// the jobs mechanism.
func TestLogoutDuringRefresh(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{provider: connectortest.ProviderOptions{RotateRefreshTokens: true, ReuseDetection: true, AccessTokenTTL: time.Hour}})
		u := e.seed("alice", -time.Minute)
		var before *store.User
		e.hook.set(func(*http.Response) {
			// The provider has answered; the user logs out now (what the
			// /unAuthorize handler does: clear, then revoke upstream).
			var err error
			before, err = e.st.RevokeUser(context.Background(), u.ID)
			if err != nil {
				t.Error(err)
				return
			}
			if err := e.svc.EnqueueRevoke(context.Background(), before); err != nil {
				t.Error(err)
			}
		})
		_, err := e.svc.Fresh(context.Background(), u.ID)
		wantCode(t, err, failure.NeedsReauth)
		stored := e.get(u.ID)
		if stored.Status != store.StatusRevoked || stored.AccessToken != "" || stored.RefreshToken != "" {
			t.Fatalf("final state %s with tokens present: %v", stored.Status, stored.AccessToken != "" || stored.RefreshToken != "")
		}
		newTokens := e.prov.ActiveRefreshTokens()
		if len(newTokens) != 1 || newTokens[0] == u.RefreshToken {
			t.Fatalf("precondition: want the one refresh token the refresh obtained, got %d", len(newTokens))
		}
		if e.outcome(refresh.OutcomeLeaseLost) != 1 {
			t.Fatal("lease_lost outcome not counted")
		}

		// Two revocation jobs, the logout's (old tokens) and ours (new),
		// run by the jobs runner as the server does.
		runner := jobs.NewRunner(e.st, storetest.TestLogger(t), jobs.RunnerOptions{Clock: e.clk})
		runner.Handle(refresh.JobKindRevoke, e.svc.HandleRevokeJob)
		n, err := runner.RunOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Fatalf("%d revocation jobs ran, want 2", n)
		}
		counts, err := e.st.CountJobs(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if counts[refresh.JobKindRevoke][store.JobDone] != 2 {
			t.Fatalf("revocation jobs by state: %v, want 2 done", counts[refresh.JobKindRevoke])
		}
		if act := e.prov.ActiveRefreshTokens(); len(act) != 0 {
			t.Fatalf("%d refresh tokens still active upstream", len(act))
		}
		if act := e.prov.ActiveAccessTokens(); len(act) != 0 {
			t.Fatalf("%d access tokens still active upstream", len(act))
		}
		if n := e.prov.Count(connectortest.PathRevoke); n < 2 {
			t.Fatalf("%d revoke calls, want at least 2", n)
		}
	})
}

// Case 22-ish: the database fails -> failure.Unavailable; a save that fails
// after the provider answered leaves the record refresh_uncertain (written
// ahead), tokens kept.
func TestStoreUnavailable(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		t.Run("read fails", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{})
			u := e.seed("alice", time.Hour)
			other := storetest.OpenStoreWith(t, gormstore.Options{URL: e.url, Sealer: e.sealer, Clock: e.clk})
			o := e.opts
			o.Users, o.Jobs, o.Registerer = other, other, nil
			svc, err := refresh.New(o)
			if err != nil {
				t.Fatal(err)
			}
			if err := other.Close(); err != nil {
				t.Fatal(err)
			}
			_, err = svc.Fresh(context.Background(), u.ID)
			wantCode(t, err, failure.Unavailable)
		})
		t.Run("save fails after the provider answered", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{provider: connectortest.ProviderOptions{RotateRefreshTokens: true, AccessTokenTTL: time.Hour}})
			u := e.seed("alice", -time.Minute)
			other := storetest.OpenStoreWith(t, gormstore.Options{URL: e.url, Sealer: e.sealer, Clock: e.clk})
			o := e.opts
			o.Users, o.Jobs, o.Registerer = other, other, nil
			svc, err := refresh.New(o)
			if err != nil {
				t.Fatal(err)
			}
			e.hook.set(func(*http.Response) { _ = other.Close() })
			_, err = svc.Fresh(context.Background(), u.ID)
			wantCode(t, err, failure.Unavailable)
			stored := e.get(u.ID)
			if stored.Status != store.StatusRefreshUncertain || stored.RefreshToken != u.RefreshToken || stored.Version != u.Version {
				t.Fatalf("status %s version %d: want refresh_uncertain, tokens kept", stored.Status, stored.Version)
			}
		})
	})
}

func TestNeedsReauthAndRevokedMakeNoCall(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{})
		a := e.seed("alice", -time.Minute)
		if err := e.st.SetUserStatus(context.Background(), a.ID, 0, store.StatusNeedsReauth); err != nil {
			t.Fatal(err)
		}
		b := e.seed("bob", -time.Minute)
		if _, err := e.st.RevokeUser(context.Background(), b.ID); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{a.ID, b.ID} {
			_, err := e.svc.Fresh(context.Background(), id)
			wantCode(t, err, failure.NeedsReauth)
			_, err = e.svc.ForceRefresh(context.Background(), id, 0)
			wantCode(t, err, failure.NeedsReauth)
		}
		_, err := e.svc.Fresh(context.Background(), "00000000-0000-0000-0000-000000000000")
		wantCode(t, err, failure.NotFound)
		if n := e.prov.Count(connectortest.PathToken); n != 0 {
			t.Fatalf("%d token requests, want 0", n)
		}
	})
}

func TestForceRefresh(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, envOptions{provider: connectortest.ProviderOptions{RotateRefreshTokens: true, ReuseDetection: true, AccessTokenTTL: time.Hour}})
		u := e.seed("alice", time.Hour) // not due
		got, err := e.svc.ForceRefresh(context.Background(), u.ID, u.Version)
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != u.Version+1 || e.prov.RefreshCount() != 1 {
			t.Fatalf("version %d, %d requests: want a refresh", got.Version, e.prov.RefreshCount())
		}
		// The same stale version again: someone (we) refreshed, just re-read.
		again, err := e.svc.ForceRefresh(context.Background(), u.ID, u.Version)
		if err != nil {
			t.Fatal(err)
		}
		if again.Version != got.Version || again.AccessToken != got.AccessToken || e.prov.RefreshCount() != 1 {
			t.Fatal("a stale failed version caused another refresh")
		}
	})
}

// HTTPClient: injects the credential, refreshes when due, retries once
// after a 401 and forces a refresh only when the version is unchanged.
func TestHTTPClient(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		type seen struct{ auth, body string }
		newCRM := func(t *testing.T, e *env, answer func(n int, r *http.Request) int) (*connectortest.CRM, func() []seen) {
			crm := connectortest.NewCRM(t)
			var mu sync.Mutex
			var got []seen
			handler := func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				got = append(got, seen{r.Header.Get("Authorization"), string(b)})
				n := len(got)
				mu.Unlock()
				w.WriteHeader(answer(n, r))
			}
			crm.Handle(http.MethodGet, "/api/contacts", handler)
			crm.Handle(http.MethodPost, "/api/contacts", handler)
			return crm, func() []seen { mu.Lock(); defer mu.Unlock(); return append([]seen(nil), got...) }
		}
		ok := func(int, *http.Request) int { return http.StatusOK }
		opts := connectortest.ProviderOptions{RotateRefreshTokens: true, ReuseDetection: true, AccessTokenTTL: time.Hour}

		t.Run("injects the stored token", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{provider: opts})
			u := e.seed("alice", time.Hour)
			crm, got := newCRM(t, e, ok)
			resp, err := e.svc.HTTPClient(u.ID).Get(crm.URL() + "/api/contacts")
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if s := got(); len(s) != 1 || s[0].auth != "Bearer "+u.AccessToken {
				t.Fatalf("CRM saw %d requests; Authorization correct: %v", len(s), len(s) == 1 && s[0].auth == "Bearer "+u.AccessToken)
			}
			if e.prov.RefreshCount() != 0 {
				t.Fatal("refreshed a token that was not due")
			}
		})
		t.Run("refreshes when due", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{provider: opts})
			u := e.seed("alice", -time.Minute)
			crm, got := newCRM(t, e, ok)
			resp, err := e.svc.HTTPClient(u.ID).Get(crm.URL() + "/api/contacts")
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			stored := e.get(u.ID)
			if s := got(); len(s) != 1 || s[0].auth != "Bearer "+stored.AccessToken || stored.AccessToken == u.AccessToken {
				t.Fatal("request did not carry the refreshed token")
			}
			if e.prov.RefreshCount() != 1 {
				t.Fatalf("%d refreshes, want 1", e.prov.RefreshCount())
			}
		})
		t.Run("401 with unchanged version: one forced refresh, one retry with the body", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{provider: opts})
			u := e.seed("alice", time.Hour)
			crm, got := newCRM(t, e, func(n int, _ *http.Request) int {
				if n == 1 {
					return http.StatusUnauthorized
				}
				return http.StatusOK
			})
			resp, err := e.svc.HTTPClient(u.ID).Post(crm.URL()+"/api/contacts", "application/json", strings.NewReader(`{"name":"Ada"}`))
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			stored := e.get(u.ID)
			s := got()
			if resp.StatusCode != 200 || len(s) != 2 {
				t.Fatalf("status %d after %d CRM requests, want 200 after 2", resp.StatusCode, len(s))
			}
			if s[0].auth != "Bearer "+u.AccessToken || s[1].auth != "Bearer "+stored.AccessToken || stored.Version != u.Version+1 {
				t.Fatal("retry did not carry the force-refreshed token")
			}
			if s[0].body != `{"name":"Ada"}` || s[1].body != s[0].body {
				t.Fatalf("bodies %q / %q: not replayed", s[0].body, s[1].body)
			}
			if e.prov.RefreshCount() != 1 {
				t.Fatalf("%d refreshes, want 1", e.prov.RefreshCount())
			}
		})
		t.Run("401 after another replica refreshed: re-read, no refresh", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{provider: opts})
			u := e.seed("alice", time.Hour)
			other := e.replica()
			crm, got := newCRM(t, e, func(n int, r *http.Request) int {
				if n == 1 {
					// Meanwhile another replica refreshed this user.
					if _, err := other.ForceRefresh(r.Context(), u.ID, u.Version); err != nil {
						t.Error(err)
					}
					return http.StatusUnauthorized
				}
				return http.StatusOK
			})
			resp, err := e.svc.HTTPClient(u.ID).Get(crm.URL() + "/api/contacts")
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			stored := e.get(u.ID)
			s := got()
			if resp.StatusCode != 200 || len(s) != 2 || s[1].auth != "Bearer "+stored.AccessToken {
				t.Fatalf("status %d, %d requests: retry without the other replica's token", resp.StatusCode, len(s))
			}
			if n := e.prov.RefreshCount(); n != 1 {
				t.Fatalf("%d refreshes, want 1 (the other replica's only)", n)
			}
		})
		t.Run("retries only once", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{provider: opts})
			u := e.seed("alice", time.Hour)
			crm, got := newCRM(t, e, func(int, *http.Request) int { return http.StatusUnauthorized })
			resp, err := e.svc.HTTPClient(u.ID).Get(crm.URL() + "/api/contacts")
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != 401 || len(got()) != 2 || e.prov.RefreshCount() != 1 {
				t.Fatalf("status %d, %d CRM requests, %d refreshes: want 401, 2, 1", resp.StatusCode, len(got()), e.prov.RefreshCount())
			}
		})
		t.Run("body without GetBody is not replayed", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{provider: opts})
			u := e.seed("alice", time.Hour)
			crm, got := newCRM(t, e, func(int, *http.Request) int { return http.StatusUnauthorized })
			req, _ := http.NewRequest(http.MethodPost, crm.URL()+"/api/contacts", io.NopCloser(strings.NewReader("x")))
			resp, err := e.svc.HTTPClient(u.ID).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != 401 || len(got()) != 1 || e.prov.RefreshCount() != 0 {
				t.Fatalf("status %d, %d CRM requests, %d refreshes: want 401, 1, 0", resp.StatusCode, len(got()), e.prov.RefreshCount())
			}
		})
		t.Run("connector's own Authorization is kept", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{provider: opts})
			u := e.seed("alice", -time.Minute)
			crm, got := newCRM(t, e, ok)
			req, _ := http.NewRequest(http.MethodGet, crm.URL()+"/api/contacts", nil)
			req.SetBasicAuth("client", "secret")
			resp, err := e.svc.HTTPClient(u.ID).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if s := got(); len(s) != 1 || !strings.HasPrefix(s[0].auth, "Basic ") || e.prov.RefreshCount() != 0 {
				t.Fatal("connector-set Authorization replaced")
			}
		})
		t.Run("needs_reauth: engine error, no CRM call", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{provider: opts})
			u := e.seed("alice", time.Hour)
			if err := e.st.SetUserStatus(context.Background(), u.ID, 0, store.StatusNeedsReauth); err != nil {
				t.Fatal(err)
			}
			crm, got := newCRM(t, e, ok)
			_, err := e.svc.HTTPClient(u.ID).Get(crm.URL() + "/api/contacts")
			var fe *failure.Error
			if !errors.As(err, &fe) || fe.Code != failure.NeedsReauth {
				t.Fatalf("err = %v, want a NeedsReauth failure", err)
			}
			if len(got()) != 0 {
				t.Fatal("CRM was called")
			}
		})
		t.Run("API key: Basic, no refresh on 401", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{conn: func(*testConn) connector.Connector { return apiKeyConn{} }})
			u, err := e.st.UpsertUser(context.Background(), &store.User{
				Platform: platform, CRMUserID: "k1", Host: store.HostIdentity{Kind: "ringcentral", AccountID: "acc-1", UserID: "k1"},
				APIKey: "key-123", Status: store.StatusActive,
			})
			if err != nil {
				t.Fatal(err)
			}
			crm, got := newCRM(t, e, func(int, *http.Request) int { return http.StatusUnauthorized })
			resp, err := e.svc.HTTPClient(u.ID).Get(crm.URL() + "/api/contacts")
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			want := "Basic " + base64.StdEncoding.EncodeToString([]byte("key-123:"))
			if s := got(); len(s) != 1 || s[0].auth != want {
				t.Fatalf("%d requests; Basic header correct: %v", len(s), len(s) == 1 && s[0].auth == want)
			}
		})
	})
}

func TestRevokeJobs(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, backend string) {
		t.Run("idempotent per user version, revokes upstream", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{provider: connectortest.ProviderOptions{RotateRefreshTokens: true, AccessTokenTTL: time.Hour}})
			u := e.seed("alice", time.Hour)
			before, err := e.st.RevokeUser(context.Background(), u.ID)
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := e.svc.EnqueueRevoke(context.Background(), before); err != nil {
					t.Fatal(err)
				}
			}
			claimed, err := e.st.ClaimJobs(context.Background(), []string{refresh.JobKindRevoke}, "w", time.Minute, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(claimed) != 1 {
				t.Fatalf("%d jobs, want 1", len(claimed))
			}
			if strings.Contains(string(claimed[0].IdempotencyKey), u.RefreshToken) {
				t.Fatal("idempotency key holds a token")
			}
			if _, err := e.svc.HandleRevokeJob(context.Background(), claimed[0]); err != nil {
				t.Fatal(err)
			}
			if !e.prov.IsRevoked(u.RefreshToken) || !e.prov.IsRevoked(u.AccessToken) {
				t.Fatal("tokens not revoked upstream")
			}
			if len(e.base.unauthorized) != 1 || e.base.unauthorized[0].RefreshToken.Reveal() != u.RefreshToken || e.base.unauthorized[0].ID != u.ID {
				t.Fatal("Unauthorize did not get the tokens to revoke")
			}
		})
		t.Run("nothing to revoke", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{})
			if err := e.svc.EnqueueRevoke(context.Background(), &store.User{ID: "x", Platform: platform}); err != nil {
				t.Fatal(err)
			}
			counts, err := e.st.CountJobs(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(counts[refresh.JobKindRevoke]) != 0 {
				t.Fatal("a job was enqueued for a record without credentials")
			}
		})
		t.Run("connector error is retried, missing Unauthorizer is permanent", func(t *testing.T) {
			e := newEnv(t, backend, envOptions{provider: connectortest.ProviderOptions{AccessTokenTTL: time.Hour}})
			u := e.seed("alice", time.Hour)
			if err := e.svc.EnqueueRevoke(context.Background(), u); err != nil {
				t.Fatal(err)
			}
			claimed, err := e.st.ClaimJobs(context.Background(), []string{refresh.JobKindRevoke}, "w", time.Minute, 10)
			if err != nil || len(claimed) != 1 {
				t.Fatalf("claim: %v, %d jobs", err, len(claimed))
			}
			e.base.unauthErr = errors.New("crm down")
			_, err = e.svc.HandleRevokeJob(context.Background(), claimed[0])
			if err == nil || isPermanent(err) {
				t.Fatalf("err = %v, want a retryable error", err)
			}
			e.conn = apiKeyConn{} // a connector without Unauthorizer
			_, err = e.svc.HandleRevokeJob(context.Background(), claimed[0])
			if err == nil || !isPermanent(err) {
				t.Fatalf("err = %v, want a permanent error", err)
			}
		})
	})
}

// BenchmarkFreshNotDue: a token that is not due costs one read and no
// upstream call.
func BenchmarkFreshNotDue(b *testing.B) {
	for _, backend := range storetest.Backends(b) {
		b.Run(backend, func(b *testing.B) {
			e := newEnv(b, backend, envOptions{})
			u := e.seed("alice", time.Hour)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := e.svc.Fresh(ctx, u.ID); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if e.prov.Count(connectortest.PathToken) != 0 {
				b.Fatal("token endpoint called")
			}
		})
	}
}

func isPermanent(err error) bool { return jobs.IsPermanent(err) }

// Listeners hear of every credential change a refresh makes: new tokens
// saved, and a login marked needs_reauth (surfaces push them to hosts).
func TestOnChangeListeners(t *testing.T) {
	e := newEnv(t, "sqlite", envOptions{provider: connectortest.ProviderOptions{RotateRefreshTokens: true, AccessTokenTTL: time.Hour}})
	var mu sync.Mutex
	var seen []store.User
	e.svc.OnChange(func(_ context.Context, u *store.User) {
		mu.Lock()
		seen = append(seen, *u)
		mu.Unlock()
	})
	u := e.seed("alice", -time.Minute)
	fresh, err := e.svc.Fresh(context.Background(), u.ID)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(seen) != 1 || seen[0].AccessToken != fresh.AccessToken || seen[0].Status != store.StatusActive {
		t.Fatalf("after refresh, listener saw %d changes", len(seen))
	}
	mu.Unlock()
	// not due: no change, no call
	if _, err := e.svc.Fresh(context.Background(), u.ID); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(2 * time.Hour)
	e.prov.FailNext(connectortest.PathToken, connectortest.InvalidGrant(), 1)
	_, err = e.svc.Fresh(context.Background(), u.ID)
	wantCode(t, err, failure.NeedsReauth)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[1].Status != store.StatusNeedsReauth || seen[1].ID != u.ID {
		t.Fatalf("after invalid_grant, listener saw %+v", len(seen))
	}
}
