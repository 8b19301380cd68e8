package session

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/encryption"
)

const issuer = "https://connectd.example.com"

var (
	t0     = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	rcHost = store.HostIdentity{Kind: "ringcentral", AccountID: "123", UserID: "456"}
	opHost = store.HostIdentity{Kind: "operator", AccountID: "123", UserID: "ops-1"}
)

func key(seed byte) []byte {
	k := make([]byte, encryption.KeySize)
	for i := range k {
		k[i] = seed*17 + byte(i)*3 + 5
	}
	return k
}

func ring(t testing.TB, ids ...uint32) *encryption.KeyRing {
	t.Helper()
	r, err := encryption.NewKeyRing(ids[0], key(byte(ids[0])))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids[1:] {
		if r, err = r.Add(id, key(byte(id))); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

type fixture struct {
	m     *Manager
	clock *clock.Fake
	store *fakeSessions
}

func newFixture(t testing.TB, keys *encryption.KeyRing) *fixture {
	t.Helper()
	c := clock.NewFake(t0)
	s := newFakeSessions(c)
	m, err := New(Options{Keys: keys, Issuer: issuer, Sessions: s, Clock: c})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{m: m, clock: c, store: s}
}

// manager returns another Manager (a replica, or a restart with other keys)
// over the same store and clock.
func (f *fixture) manager(t testing.TB, keys *encryption.KeyRing, sessions store.Sessions) *Manager {
	t.Helper()
	if sessions == nil {
		sessions = f.store
	}
	m, err := New(Options{Keys: keys, Issuer: issuer, Sessions: sessions, Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (f *fixture) appConnect(t testing.TB) (string, *Claims) {
	t.Helper()
	tok, c, err := f.m.IssueAppConnect(context.Background(), "user-1", "crm-77-pipedrive", "pipedrive", rcHost)
	if err != nil {
		t.Fatal(err)
	}
	return tok, c
}

// decode returns a token's header and payload as maps.
func decode(t testing.TB, tok string) (map[string]any, map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	var h, p map[string]any
	for i, dst := range []*map[string]any{&h, &p} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			t.Fatal(err)
		}
	}
	return h, p
}

// forge builds a JWT by hand, so tests can produce what our Issue never
// would: other algorithms, missing claims, foreign keys.
func forge(t testing.TB, header, payload map[string]any, signKey []byte) string {
	t.Helper()
	hj, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	pj, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	input := base64.RawURLEncoding.EncodeToString(hj) + "." + base64.RawURLEncoding.EncodeToString(pj)
	var h func() hash.Hash
	switch header["alg"] {
	case "HS256", "RS256":
		h = sha256.New
	case "HS512":
		h = sha512.New
	default:
		return input + "."
	}
	mac := hmac.New(h, signKey)
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func clone(m map[string]any) map[string]any {
	n := make(map[string]any, len(m))
	for k, v := range m {
		n[k] = v
	}
	return n
}

// assertInvalid checks err is the 401 kind and does not quote the token.
func assertInvalid(t *testing.T, err error, tok string) {
	t.Helper()
	if err == nil {
		t.Fatal("token accepted")
	}
	if !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("error %v does not wrap ErrInvalidToken", err)
	}
	t.Logf("rejected: %v", err)
	if code := failure.CodeOf(err); code != failure.Unauthenticated {
		t.Errorf("code = %s, want %s", code, failure.Unauthenticated)
	}
	if errors.Is(err, ErrWrongAudience) {
		t.Errorf("error %v is also ErrWrongAudience", err)
	}
	if len(tok) > 20 && strings.Contains(err.Error(), tok[len(tok)-20:]) {
		t.Errorf("error %q quotes the token", err)
	}
	if strings.Contains(failure.MessageOf(err), "kid") || strings.Contains(failure.MessageOf(err), "sig") {
		t.Errorf("user-facing message %q explains the failure", failure.MessageOf(err))
	}
}

func TestIssueAndVerify(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, ring(t, 4, 9))

	t.Run("app connect", func(t *testing.T) {
		tok, c := f.appConnect(t)
		h, p := decode(t, tok)
		if h["alg"] != "HS256" || h["kid"] != "4" {
			t.Errorf("header = %v, want HS256 with kid 4", h)
		}
		wantPayload := map[string]any{
			"iss": issuer, "sub": "user-1", "aud": []any{"appconnect"}, "typ": "session",
			"sid": c.SessionID, "id": "crm-77-pipedrive", "platform": "pipedrive",
			"host_kind": "ringcentral", "host_account": "123", "host_user": "456",
			"iat": float64(t0.Unix()), "exp": float64(t0.Add(DefaultLifetime).Unix()),
		}
		for k, v := range wantPayload {
			if got, _ := json.Marshal(p[k]); string(got) != mustJSON(t, v) {
				t.Errorf("claim %s = %s, want %s", k, got, mustJSON(t, v))
			}
		}
		if len(p) != len(wantPayload) {
			t.Errorf("payload has extra claims: %v", p)
		}
		row := f.store.row(c.SessionID)
		wantRow := store.Session{ID: c.SessionID, Kind: "session", UserID: "user-1", Host: rcHost,
			Subject: "crm-77-pipedrive", ExpiresAt: t0.Add(DefaultLifetime), CreatedAt: t0}
		if row != wantRow {
			t.Errorf("row = %+v, want %+v", row, wantRow)
		}
		got, err := f.m.VerifyAppConnect(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		want := Claims{Kind: "session", SessionID: c.SessionID, Subject: "user-1", AppConnectID: "crm-77-pipedrive",
			Platform: "pipedrive", Host: rcHost, IssuedAt: t0, ExpiresAt: t0.Add(DefaultLifetime), KeyID: 4}
		if !claimsEqual(*got, want) || !claimsEqual(*c, want) {
			t.Errorf("claims = %+v / issued %+v, want %+v", *got, *c, want)
		}
	})

	t.Run("plugin", func(t *testing.T) {
		tok, c, err := f.m.IssuePlugin(ctx, "plugin-a", rcHost, "user-1")
		if err != nil {
			t.Fatal(err)
		}
		_, p := decode(t, tok)
		if p["typ"] != "plugin" || mustJSON(t, p["aud"]) != `["plugin:plugin-a"]` || p["plugin"] != "plugin-a" {
			t.Errorf("payload = %v", p)
		}
		row := f.store.row(c.SessionID)
		if row.Kind != "plugin" || row.Subject != "plugin-a" || row.Host != rcHost || row.UserID != "user-1" {
			t.Errorf("row = %+v", row)
		}
		got, err := f.m.VerifyPlugin(ctx, tok, "plugin-a")
		if err != nil {
			t.Fatal(err)
		}
		want := Claims{Kind: "plugin", SessionID: c.SessionID, Subject: "user-1", Host: rcHost, PluginID: "plugin-a",
			IssuedAt: t0, ExpiresAt: t0.Add(DefaultLifetime), KeyID: 4}
		if !claimsEqual(*got, want) {
			t.Errorf("claims = %+v, want %+v", *got, want)
		}
	})

	t.Run("identity", func(t *testing.T) {
		tok, c, err := f.m.IssueIdentity(ctx, opHost, true, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tok, "cdi_") {
			t.Fatalf("identity token %q lacks cdi_", tok[:8])
		}
		_, p := decode(t, strings.TrimPrefix(tok, "cdi_"))
		if p["typ"] != "identity" || mustJSON(t, p["aud"]) != `["host"]` || p["admin"] != true || p["host_kind"] != "operator" {
			t.Errorf("payload = %v", p)
		}
		got, err := f.m.VerifyIdentity(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		want := Claims{Kind: "identity", SessionID: c.SessionID, Host: opHost, Admin: true,
			IssuedAt: t0, ExpiresAt: t0.Add(DefaultIdentityLifetime), KeyID: 4}
		if !claimsEqual(*got, want) {
			t.Errorf("claims = %+v, want %+v", *got, want)
		}
		if row := f.store.row(c.SessionID); row.Kind != "identity" || row.ExpiresAt != t0.Add(time.Hour) {
			t.Errorf("row = %+v", row)
		}
		// Not admin, explicit ttl.
		tok, _, err = f.m.IssueIdentity(ctx, store.HostIdentity{AccountID: "9", UserID: "u"}, false, 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		got, err = f.m.VerifyIdentity(ctx, tok)
		if err != nil || got.Admin || got.Host.Kind != "operator" || !got.ExpiresAt.Equal(t0.Add(10*time.Minute)) {
			t.Errorf("non-admin identity = %+v, %v", got, err)
		}
	})

	t.Run("every session id differs", func(t *testing.T) {
		seen := map[string]bool{}
		for range 100 {
			_, c := f.appConnect(t)
			if seen[c.SessionID] || len(c.SessionID) < 32 {
				t.Fatalf("session id %q repeated or short", c.SessionID)
			}
			seen[c.SessionID] = true
		}
	})
}

func TestIssueRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, ring(t, 1))
	tests := []struct {
		name string
		call func() error
	}{
		{"app connect without user", func() error {
			_, _, err := f.m.IssueAppConnect(ctx, "", "x-p", "p", rcHost)
			return err
		}},
		{"app connect without platform", func() error {
			_, _, err := f.m.IssueAppConnect(ctx, "u", "x-p", "", rcHost)
			return err
		}},
		{"plugin without id", func() error {
			_, _, err := f.m.IssuePlugin(ctx, "", rcHost, "u")
			return err
		}},
		{"plugin without host account", func() error {
			_, _, err := f.m.IssuePlugin(ctx, "p", store.HostIdentity{Kind: "ringcentral"}, "u")
			return err
		}},
		{"identity for a ringcentral host", func() error {
			_, _, err := f.m.IssueIdentity(ctx, rcHost, true, 0)
			return err
		}},
		{"identity without user", func() error {
			_, _, err := f.m.IssueIdentity(ctx, store.HostIdentity{Kind: "operator", AccountID: "1"}, true, 0)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err == nil {
				t.Error("accepted")
			}
			if n := len(f.store.rows); n != 0 {
				t.Errorf("%d session rows created", n)
			}
		})
	}
	t.Run("store failure", func(t *testing.T) {
		f.store.setFail(store.ErrUnavailable)
		defer f.store.setFail(nil)
		tok, _, err := f.m.IssueAppConnect(ctx, "u", "x-p", "p", rcHost)
		if !errors.Is(err, store.ErrUnavailable) || tok != "" {
			t.Errorf("issue with the store down = %q, %v", tok, err)
		}
	})
}

func TestNew(t *testing.T) {
	s := newFakeSessions(clock.Real{})
	tests := []struct {
		name string
		o    Options
	}{
		{"no keys", Options{Issuer: issuer, Sessions: s}},
		{"no issuer", Options{Keys: ring(t, 1), Sessions: s}},
		{"no store", Options{Keys: ring(t, 1), Issuer: issuer}},
		{"negative lifetime", Options{Keys: ring(t, 1), Issuer: issuer, Sessions: s, Lifetime: -time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if m, err := New(tt.o); err == nil || m != nil {
				t.Errorf("New = %v, %v; want an error", m, err)
			}
		})
	}
	m, err := New(Options{Keys: ring(t, 1), Issuer: issuer, Sessions: s})
	if err != nil {
		t.Fatal(err)
	}
	if m.lifetime != DefaultLifetime || m.renewWithin != DefaultRenewWithin {
		t.Errorf("defaults: lifetime %v, renew %v", m.lifetime, m.renewWithin)
	}
	// The real clock works end to end.
	tok, _, err := m.IssueAppConnect(context.Background(), "u", "c-p", "p", rcHost)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.VerifyAppConnect(context.Background(), tok); err != nil {
		t.Errorf("verify with the real clock: %v", err)
	}
}

// TestRejects is security.md case 14: every malformed, forged, expired or
// revoked token is a 401 that never quotes the token.
func TestRejects(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, ring(t, 1, 2))
	good, c := f.appConnect(t)
	header, payload := decode(t, good)
	k1 := key(1)

	with := func(changes map[string]any) map[string]any {
		p := clone(payload)
		for k, v := range changes {
			if v == nil {
				delete(p, k)
			} else {
				p[k] = v
			}
		}
		return p
	}
	hdr := func(alg string, kid any) map[string]any {
		h := map[string]any{"alg": alg, "typ": "JWT"}
		if kid != nil {
			h["kid"] = kid
		}
		return h
	}
	parts := strings.Split(good, ".")
	tamperedPayload := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(
		mustJSON(t, payload), `"sub":"user-1"`, `"sub":"user-2"`, 1)))

	tests := []struct {
		name string
		tok  string
	}{
		{"empty", ""},
		{"garbage", "not a token"},
		{"two parts", parts[0] + "." + parts[1]},
		{"stripped signature", parts[0] + "." + parts[1] + "."},
		{"signature of another token", parts[0] + "." + parts[1] + "." + strings.Split(f.mustOther(t), ".")[2]},
		{"tampered payload", parts[0] + "." + tamperedPayload + "." + parts[2]},
		{"bit-flipped signature", parts[0] + "." + parts[1] + "." + flipLast(parts[2])},
		{"alg none", forge(t, hdr("none", "1"), payload, nil)},
		{"alg None", forge(t, hdr("None", "1"), payload, nil)},
		{"alg HS512 with the right key", forge(t, hdr("HS512", "1"), payload, k1)},
		{"alg RS256 header with an HMAC signature", forge(t, hdr("RS256", "1"), payload, k1)},
		{"unknown kid", forge(t, hdr("HS256", "3"), payload, key(3))},
		{"kid of another key", forge(t, hdr("HS256", "2"), payload, k1)},
		{"foreign key with a known kid", forge(t, hdr("HS256", "1"), payload, key(7))},
		{"no kid", forge(t, hdr("HS256", nil), payload, k1)},
		{"numeric kid", forge(t, hdr("HS256", 1), payload, k1)},
		{"padded kid", forge(t, hdr("HS256", "01"), payload, k1)},
		{"negative kid", forge(t, hdr("HS256", "-1"), payload, k1)},
		{"missing exp", forge(t, header, with(map[string]any{"exp": nil}), k1)},
		{"expired", forge(t, header, with(map[string]any{"exp": t0.Add(-time.Minute).Unix()}), k1)},
		{"string exp", forge(t, header, with(map[string]any{"exp": "later"}), k1)},
		{"missing iat", forge(t, header, with(map[string]any{"iat": nil}), k1)},
		{"issued in the future", forge(t, header, with(map[string]any{"iat": t0.Add(time.Hour).Unix()}), k1)},
		{"not before in the future", forge(t, header, with(map[string]any{"nbf": t0.Add(time.Hour).Unix()}), k1)},
		{"wrong aud", forge(t, header, with(map[string]any{"aud": []string{"host"}}), k1)},
		{"missing aud", forge(t, header, with(map[string]any{"aud": nil}), k1)},
		{"wrong iss", forge(t, header, with(map[string]any{"iss": "https://evil.example.com"}), k1)},
		{"missing iss", forge(t, header, with(map[string]any{"iss": nil}), k1)},
		{"wrong typ", forge(t, header, with(map[string]any{"typ": "plugin"}), k1)},
		{"missing sid", forge(t, header, with(map[string]any{"sid": nil}), k1)},
		{"unknown sid", forge(t, header, with(map[string]any{"sid": "00000000-0000-4000-8000-000000000000"}), k1)},
		{"other user than the session", forge(t, header, with(map[string]any{"sub": "user-2"}), k1)},
		{"other host than the session", forge(t, header, with(map[string]any{"host_account": "999"}), k1)},
		{"other App Connect id than the session", forge(t, header, with(map[string]any{"id": "crm-1-pipedrive"}), k1)},
		{"missing platform", forge(t, header, with(map[string]any{"platform": nil}), k1)},
		{"identity prefix on a session token", "cdi_" + good},
		{"100k characters", strings.Repeat("a", 100_000)},
		{"100k-character valid-looking token", parts[0] + "." + base64.RawURLEncoding.EncodeToString(
			[]byte(strings.Replace(mustJSON(t, payload), `"sub"`, `"pad":"`+strings.Repeat("x", 75_000)+`","sub"`, 1))) + "." + parts[2]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.m.VerifyAppConnect(ctx, tt.tok)
			if got != nil {
				t.Errorf("claims returned: %+v", got)
			}
			assertInvalid(t, err, tt.tok)
		})
	}

	t.Run("the good token still verifies", func(t *testing.T) {
		if _, err := f.m.VerifyAppConnect(ctx, good); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("oversized token is rejected before parsing or reading the store", func(t *testing.T) {
		big := strings.Repeat("a", 50_000) + "." + strings.Repeat("b", 50_000) + "." + parts[2]
		before := f.store.reads.Load()
		allocs := testing.AllocsPerRun(20, func() {
			if _, err := f.m.VerifyAppConnect(ctx, big); !errors.Is(err, ErrInvalidToken) {
				t.Fatal(err)
			}
			if _, err := f.m.VerifyIdentity(ctx, "cdi_"+big); !errors.Is(err, ErrInvalidToken) {
				t.Fatal(err)
			}
			if _, err := f.m.VerifyPlugin(ctx, big, "p"); !errors.Is(err, ErrInvalidToken) {
				t.Fatal(err)
			}
		})
		if f.store.reads.Load() != before {
			t.Error("the store was read for an oversized token")
		}
		// Only the error values are allocated (a handful per call), never
		// anything proportional to the token.
		if allocs > 20 {
			t.Errorf("%v allocations for three oversized tokens", allocs)
		}
	})

	t.Run("expiry by the clock", func(t *testing.T) {
		g := newFixture(t, ring(t, 1))
		tok, _ := g.appConnect(t)
		g.clock.Advance(DefaultLifetime - time.Second)
		if _, err := g.m.VerifyAppConnect(ctx, tok); err != nil {
			t.Fatalf("one second before expiry: %v", err)
		}
		g.clock.Advance(time.Second)
		_, err := g.m.VerifyAppConnect(ctx, tok)
		assertInvalid(t, err, tok)
		g.clock.Advance(time.Hour)
		_, err = g.m.VerifyAppConnect(ctx, tok)
		assertInvalid(t, err, tok)
	})

	t.Run("revoked session", func(t *testing.T) {
		tok, c2 := f.appConnect(t)
		if err := f.m.Revoke(ctx, c2.SessionID); err != nil {
			t.Fatal(err)
		}
		_, err := f.m.VerifyAppConnect(ctx, tok)
		assertInvalid(t, err, tok)
		if !strings.Contains(err.Error(), "revoked") {
			t.Errorf("log cause %q does not say revoked", err)
		}
	})

	t.Run("row expired before the token", func(t *testing.T) {
		tok, c2 := f.appConnect(t)
		row := f.store.row(c2.SessionID)
		row.ExpiresAt = t0
		f.store.put(row)
		_, err := f.m.VerifyAppConnect(ctx, tok)
		assertInvalid(t, err, tok)
	})

	t.Run("row of another kind", func(t *testing.T) {
		_, pc, err := f.m.IssuePlugin(ctx, "p", rcHost, "user-1")
		if err != nil {
			t.Fatal(err)
		}
		tok := forge(t, header, with(map[string]any{"sid": pc.SessionID}), k1)
		_, err = f.m.VerifyAppConnect(ctx, tok)
		assertInvalid(t, err, tok)
	})
	_ = c
}

// mustOther issues a second App Connect token.
func (f *fixture) mustOther(t testing.TB) string {
	tok, _, err := f.m.IssueAppConnect(context.Background(), "user-9", "crm-9-pipedrive", "pipedrive", rcHost)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func flipLast(s string) string {
	b := []byte(s)
	// Change a middle character: the last one may carry unused bits.
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// TestKindCrossUse: a verifier accepts only its own kind.
func TestKindCrossUse(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, ring(t, 1))
	session, _ := f.appConnect(t)
	plugin, _, err := f.m.IssuePlugin(ctx, "plugin-a", rcHost, "user-1")
	if err != nil {
		t.Fatal(err)
	}
	identity, _, err := f.m.IssueIdentity(ctx, opHost, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	bareIdentity := strings.TrimPrefix(identity, "cdi_")

	verifiers := map[string]func(string) (*Claims, error){
		"app connect": func(tok string) (*Claims, error) { return f.m.VerifyAppConnect(ctx, tok) },
		"plugin":      func(tok string) (*Claims, error) { return f.m.VerifyPlugin(ctx, tok, "plugin-a") },
		"identity":    func(tok string) (*Claims, error) { return f.m.VerifyIdentity(ctx, tok) },
	}
	tokens := map[string]string{
		"app connect": session,
		"plugin":      plugin,
		"identity":    identity,
	}
	for vname, verify := range verifiers {
		for tname, tok := range tokens {
			t.Run(tname+" token to "+vname+" verifier", func(t *testing.T) {
				c, err := verify(tok)
				if vname == tname {
					if err != nil {
						t.Fatalf("own kind rejected: %v", err)
					}
					return
				}
				if c != nil {
					t.Fatalf("accepted: %+v", c)
				}
				assertInvalid(t, err, tok)
			})
		}
	}
	t.Run("identity without cdi_ prefix", func(t *testing.T) {
		_, err := f.m.VerifyIdentity(ctx, bareIdentity)
		assertInvalid(t, err, bareIdentity)
	})
	t.Run("cdi_ stripped identity to other verifiers", func(t *testing.T) {
		_, err := f.m.VerifyAppConnect(ctx, bareIdentity)
		assertInvalid(t, err, bareIdentity)
		_, err = f.m.VerifyPlugin(ctx, bareIdentity, "plugin-a")
		assertInvalid(t, err, bareIdentity)
	})
	t.Run("plugin bearer for another plugin is 403", func(t *testing.T) {
		c, err := f.m.VerifyPlugin(ctx, plugin, "plugin-b")
		if c != nil || !errors.Is(err, ErrWrongAudience) {
			t.Fatalf("VerifyPlugin(other plugin) = %+v, %v; want ErrWrongAudience", c, err)
		}
		if errors.Is(err, ErrInvalidToken) {
			t.Error("wrong audience is also ErrInvalidToken (would answer 401)")
		}
		if failure.CodeOf(err) != failure.Forbidden {
			t.Errorf("code = %s, want forbidden", failure.CodeOf(err))
		}
	})
	t.Run("a forged plugin audience is 401, not 403", func(t *testing.T) {
		h, p := decode(t, plugin)
		p["aud"] = []string{"plugin:plugin-b"}
		tok := forge(t, h, p, key(1))
		_, err := f.m.VerifyPlugin(ctx, tok, "plugin-b")
		assertInvalid(t, err, tok)
		// A revoked bearer for another plugin is 401 too: liveness first.
		_, pc, _ := f.m.IssuePlugin(ctx, "plugin-a", rcHost, "")
		tok2, err := f.m.Reissue(ctx, pc)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.m.Revoke(ctx, pc.SessionID); err != nil {
			t.Fatal(err)
		}
		_, err = f.m.VerifyPlugin(ctx, tok2, "plugin-b")
		assertInvalid(t, err, tok2)
	})
	t.Run("operator identity with a ringcentral host claim", func(t *testing.T) {
		h, p := decode(t, bareIdentity)
		p["host_kind"] = "ringcentral"
		tok := "cdi_" + forge(t, h, p, key(1))
		_, err := f.m.VerifyIdentity(ctx, tok)
		assertInvalid(t, err, tok)
	})
}

// TestRotation: a token signed by an old key verifies after a new primary
// is promoted, and stops verifying once the old key is removed.
func TestRotation(t *testing.T) {
	ctx := context.Background()
	r1 := ring(t, 1)
	f := newFixture(t, r1)
	oldTok, _ := f.appConnect(t)

	// Every replica first learns key 2 as non-primary: still signs with 1,
	// and already verifies tokens signed by 2.
	r12, err := r1.Add(2, key(2))
	if err != nil {
		t.Fatal(err)
	}
	added := f.manager(t, r12, nil)
	tok, c, err := added.IssueAppConnect(ctx, "u", "c-p", "p", rcHost)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := decode(t, tok); h["kid"] != "1" || c.KeyID != 1 {
		t.Errorf("after Add, signed with kid %v", h["kid"])
	}

	// Then key 2 becomes primary.
	r21, err := r12.Promote(2)
	if err != nil {
		t.Fatal(err)
	}
	promoted := f.manager(t, r21, nil)
	newTok, nc, err := promoted.IssueAppConnect(ctx, "u", "c-p", "p", rcHost)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := decode(t, newTok); h["kid"] != "2" || nc.KeyID != 2 {
		t.Errorf("after Promote, signed with kid %v", h["kid"])
	}
	if got, err := promoted.VerifyAppConnect(ctx, oldTok); err != nil || got.KeyID != 1 {
		t.Errorf("old token after promotion: %+v, %v", got, err)
	}
	if got, err := added.VerifyAppConnect(ctx, newTok); err != nil || got.KeyID != 2 {
		t.Errorf("new token on a replica that only added key 2: %+v, %v", got, err)
	}
	// A replica that never learned key 2 rejects the new token.
	if _, err := f.m.VerifyAppConnect(ctx, newTok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("new token on a replica without key 2: %v", err)
	}

	// Finally key 1 is removed: its tokens stop verifying.
	r2, err := r21.Remove(1)
	if err != nil {
		t.Fatal(err)
	}
	removed := f.manager(t, r2, nil)
	_, err = removed.VerifyAppConnect(ctx, oldTok)
	assertInvalid(t, err, oldTok)
	if _, err := removed.VerifyAppConnect(ctx, newTok); err != nil {
		t.Errorf("new token after removing key 1: %v", err)
	}
}

func TestReissue(t *testing.T) {
	ctx := context.Background()

	t.Run("same sid, new exp, row extended", func(t *testing.T) {
		f := newFixture(t, ring(t, 1))
		ext := &extendingSessions{fakeSessions: f.store}
		m := f.manager(t, ring(t, 1), ext)
		tok, _, err := m.IssueAppConnect(ctx, "user-1", "crm-77-pipedrive", "pipedrive", rcHost)
		if err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(8 * 24 * time.Hour)
		c, err := m.VerifyAppConnect(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		if !m.NeedsRenewal(c) {
			t.Fatal("NeedsRenewal false with 6 days left")
		}
		fresh, err := m.Reissue(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if fresh == tok {
			t.Fatal("reissued token is the same string")
		}
		nc, err := m.VerifyAppConnect(ctx, fresh)
		if err != nil {
			t.Fatal(err)
		}
		now := t0.Add(8 * 24 * time.Hour)
		if nc.SessionID != c.SessionID || nc.Subject != c.Subject || nc.AppConnectID != c.AppConnectID ||
			nc.Platform != c.Platform || nc.Host != c.Host {
			t.Errorf("reissued claims %+v differ from %+v", nc, c)
		}
		if !nc.IssuedAt.Equal(now) || !nc.ExpiresAt.Equal(now.Add(DefaultLifetime)) {
			t.Errorf("reissued iat/exp = %v / %v", nc.IssuedAt, nc.ExpiresAt)
		}
		if m.NeedsRenewal(nc) {
			t.Error("fresh token needs renewal")
		}
		if row := f.store.row(c.SessionID); !row.ExpiresAt.Equal(now.Add(DefaultLifetime)) || ext.extends.Load() != 1 {
			t.Errorf("row expiry = %v after %d extends, want %v", row.ExpiresAt, ext.extends.Load(), now.Add(DefaultLifetime))
		}
		// The fresh token outlives the original login's lifetime.
		f.clock.Advance(10 * 24 * time.Hour)
		if _, err := m.VerifyAppConnect(ctx, fresh); err != nil {
			t.Errorf("reissued token 18 days after login: %v", err)
		}
		_, err = m.VerifyAppConnect(ctx, tok)
		assertInvalid(t, err, tok)

		// Revoke invalidates every copy (same sid).
		if err := m.Revoke(ctx, c.SessionID); err != nil {
			t.Fatal(err)
		}
		_, err = m.VerifyAppConnect(ctx, fresh)
		assertInvalid(t, err, fresh)
		if _, err := m.Reissue(ctx, nc); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("Reissue of a revoked session: %v", err)
		}
	})

	t.Run("refused", func(t *testing.T) {
		f := newFixture(t, ring(t, 1))
		_, ic, err := f.m.IssueIdentity(ctx, opHost, true, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.m.Reissue(ctx, ic); err == nil {
			t.Error("identity token reissued")
		}
		if _, err := f.m.Reissue(ctx, nil); err == nil {
			t.Error("nil claims reissued")
		}
		_, c := f.appConnect(t)
		forged := *c
		forged.Subject = "someone-else"
		if _, err := f.m.Reissue(ctx, &forged); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("claims not matching the row reissued: %v", err)
		}
	})
}

func TestNeedsRenewal(t *testing.T) {
	f := newFixture(t, ring(t, 1))
	_, c := f.appConnect(t)
	steps := []struct {
		advance time.Duration
		want    bool
	}{
		{0, false},
		{7*24*time.Hour - time.Second, false},
		{time.Second, true}, // exactly 7 days left
		{6 * 24 * time.Hour, true},
	}
	for _, s := range steps {
		f.clock.Advance(s.advance)
		if got := f.m.NeedsRenewal(c); got != s.want {
			t.Errorf("at %v: NeedsRenewal = %v, want %v", f.clock.Now().Sub(t0), got, s.want)
		}
	}
}

func TestRevoke(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, ring(t, 1))
	replica := f.manager(t, ring(t, 1), nil) // another server on the same database

	a1, c1 := f.appConnect(t)
	a2, c2 := f.appConnect(t) // same user, second device
	other := f.mustOther(t)   // user-9
	p, _, err := f.m.IssuePlugin(ctx, "plugin-a", rcHost, "user-1")
	if err != nil {
		t.Fatal(err)
	}

	if err := f.m.Revoke(ctx, c1.SessionID); err != nil {
		t.Fatal(err)
	}
	if row := f.store.row(c1.SessionID); row.RevokedAt == nil {
		t.Error("row not revoked")
	}
	// Seen at once by every replica: verification reads the row each time.
	for name, m := range map[string]*Manager{"this": f.m, "replica": replica} {
		_, err := m.VerifyAppConnect(ctx, a1)
		assertInvalid(t, err, a1)
		if _, err := m.VerifyAppConnect(ctx, a2); err != nil {
			t.Errorf("%s: other session of the user: %v", name, err)
		}
	}
	if err := f.m.Revoke(ctx, "no-such-session"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Revoke(unknown) = %v, want ErrNotFound", err)
	}

	n, err := f.m.RevokeUser(ctx, "user-1")
	if err != nil || n != 2 { // a2 and the plugin bearer (a1 already revoked)
		t.Fatalf("RevokeUser = %d, %v; want 2", n, err)
	}
	_, err = replica.VerifyAppConnect(ctx, a2)
	assertInvalid(t, err, a2)
	_, err = replica.VerifyPlugin(ctx, p, "plugin-a")
	assertInvalid(t, err, p)
	if _, err := replica.VerifyAppConnect(ctx, other); err != nil {
		t.Errorf("other user's session: %v", err)
	}
	_ = c2
}

func TestStoreUnavailable(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, ring(t, 1))
	tok, _ := f.appConnect(t)
	f.store.setFail(store.ErrUnavailable)
	_, err := f.m.VerifyAppConnect(ctx, tok)
	if errors.Is(err, ErrInvalidToken) {
		t.Fatalf("database outage reported as an invalid token (401): %v", err)
	}
	if !errors.Is(err, store.ErrUnavailable) || failure.CodeOf(err) != failure.Unavailable {
		t.Errorf("err = %v (code %s), want store.ErrUnavailable as %s", err, failure.CodeOf(err), failure.Unavailable)
	}
	f.store.setFail(nil)
	if _, err := f.m.VerifyAppConnect(ctx, tok); err != nil {
		t.Errorf("after recovery: %v", err)
	}
}

func TestConcurrentVerify(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, ring(t, 1, 2))
	tok, _ := f.appConnect(t)
	plugin, _, err := f.m.IssuePlugin(ctx, "p", rcHost, "")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if _, err := f.m.VerifyAppConnect(ctx, tok); err != nil {
					errs <- err
					return
				}
				if _, err := f.m.VerifyPlugin(ctx, plugin, "p"); err != nil {
					errs <- err
					return
				}
				if _, _, err := f.m.IssueAppConnect(ctx, "u", "c-p", "p", rcHost); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCheckValue(t *testing.T) {
	k := key(1)
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte("connectd session key check"))
	want := mac.Sum(nil)
	if got := CheckValue(k); !bytes.Equal(got, want) {
		t.Errorf("CheckValue = %x, want %x", got, want)
	}
	if bytes.Equal(CheckValue(key(1)), CheckValue(key(2))) {
		t.Error("different keys share a check value")
	}
	// Not the encryption check value of the same key: the labels differ.
	r, _ := encryption.NewKeyRing(1, k)
	enc, _ := r.CheckValue(1)
	if bytes.Equal(enc, CheckValue(k)) {
		t.Error("session and encryption check values coincide")
	}
}

func FuzzVerify(f *testing.F) {
	fx := newFixture(f, ring(f, 1, 2))
	ctx := context.Background()
	issued := map[string]bool{}
	session, _ := fx.appConnect(f)
	plugin, _, _ := fx.m.IssuePlugin(ctx, "p", rcHost, "u")
	identity, _, _ := fx.m.IssueIdentity(ctx, opHost, false, 0)
	for _, tok := range []string{session, plugin, identity} {
		issued[tok] = true
		f.Add(tok)
	}
	f.Add("")
	f.Add("cdi_")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add(strings.Repeat(".", 5000))
	f.Fuzz(func(t *testing.T, tok string) {
		ok := func(c *Claims, err error) {
			if err == nil {
				if c == nil {
					t.Fatal("nil claims without error")
				}
				// Only tokens this process issued may verify: the fuzzer
				// must never forge one.
				if !issued[tok] {
					t.Fatalf("forged token verified: %q -> %+v", tok, c)
				}
				return
			}
			if c != nil {
				t.Fatal("claims with an error")
			}
			if !errors.Is(err, ErrInvalidToken) && !errors.Is(err, ErrWrongAudience) {
				t.Fatalf("unexpected error class: %v", err)
			}
		}
		ok(fx.m.VerifyAppConnect(ctx, tok))
		ok(fx.m.VerifyPlugin(ctx, tok, "p"))
		ok(fx.m.VerifyPlugin(ctx, tok, "q"))
		ok(fx.m.VerifyIdentity(ctx, tok))
	})
}

func BenchmarkVerifyAppConnect(b *testing.B) {
	f := newFixture(b, ring(b, 1, 2))
	tok, _ := f.appConnect(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.m.VerifyAppConnect(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIssueAppConnect(b *testing.B) {
	f := newFixture(b, ring(b, 1))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := f.m.IssueAppConnect(ctx, "user-1", "crm-77-pipedrive", "pipedrive", rcHost); err != nil {
			b.Fatal(err)
		}
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func claimsEqual(a, b Claims) bool {
	return a.Kind == b.Kind && a.SessionID == b.SessionID && a.Subject == b.Subject &&
		a.AppConnectID == b.AppConnectID && a.Platform == b.Platform && a.Host == b.Host &&
		a.Admin == b.Admin && a.PluginID == b.PluginID && a.IssuedAt.Equal(b.IssuedAt) &&
		a.ExpiresAt.Equal(b.ExpiresAt) && a.KeyID == b.KeyID
}
