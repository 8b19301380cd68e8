package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/store"
)

// Opener returns a fresh, migrated, empty store whose "now" is clk (nil =
// the database clock). It must register its own cleanup.
type Opener func(t *testing.T, clk clock.Clock) store.Store

// RawAccess reads and overwrites sealed columns without sealing, so the
// suite can check what is at rest. gormstore.Store implements it; a
// backend must, to pass the suite.
type RawAccess interface {
	RawColumn(ctx context.Context, table, column, id string) ([]byte, error)
	SetRawColumn(ctx context.Context, table, column, id string, value []byte) error
}

// Start is the fake clock's start in the suite: any fixed instant works;
// a realistic one keeps millisecond values in range on both backends.
var start = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// Run is the conformance suite: every store.Store method's behaviour,
// including races (leases, single use, claims) and what is at rest.
func Run(t *testing.T, open Opener) {
	parallel(t, "Users", func(t *testing.T) { runUsers(t, open) })
	parallel(t, "Sessions", func(t *testing.T) { runSessions(t, open) })
	parallel(t, "Flows", func(t *testing.T) { runFlows(t, open) })
	parallel(t, "Jobs", func(t *testing.T) { runJobs(t, open) })
	parallel(t, "Keys", func(t *testing.T) { runKeys(t, open) })
	parallel(t, "Janitor", func(t *testing.T) { runJanitor(t, open) })
	parallel(t, "SealedAtRest", func(t *testing.T) { runSealed(t, open) })
	parallel(t, "ConcurrentWriters", func(t *testing.T) { runConcurrentWriters(t, open) })
	parallel(t, "DatabaseClock", func(t *testing.T) { runDatabaseClock(t, open) })
	parallel(t, "Ping", func(t *testing.T) {
		s := open(t, nil)
		if err := s.Ping(t.Context()); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
}

// parallel runs fn as a parallel subtest. Every such subtest opens its own
// database, so they cannot interfere; PostgreSQL database creation (an
// fsync-bound ~0.5s) is what makes running them in parallel worthwhile.
func parallel(t *testing.T, name string, fn func(t *testing.T)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		fn(t)
	})
}

func fakeClock() *clock.Fake { return clock.NewFake(start) }

func ptrTime(t time.Time) *time.Time { return &t }

// sampleUser is a full login record; n varies the unique key.
func sampleUser(n int) *store.User {
	return &store.User{
		Platform:       "clio",
		CRMUserID:      fmt.Sprintf("crm-%d", n),
		Host:           store.HostIdentity{Kind: "ringcentral", AccountID: "acct-1", UserID: fmt.Sprintf("ext-%d", n)},
		Hostname:       "app.clio.com",
		AppConnectID:   fmt.Sprintf("crm-%d-clio", n),
		DisplayName:    "Ada Lovelace",
		TimezoneName:   "Europe/London",
		TimezoneOffset: "+00:00",
		AccessToken:    fmt.Sprintf("access-token-plaintext-%d", n),
		RefreshToken:   fmt.Sprintf("refresh-token-plaintext-%d", n),
		TokenExpiry:    ptrTime(start.Add(time.Hour)),
		APIKey:         "",
		AdditionalInfo: map[string]any{"region": "us", "count": float64(3)},
		Secrets:        map[string]string{"password": fmt.Sprintf("hunter2-%d", n)},
		OAuthAppRef:    "",
	}
}

func mustUpsert(t *testing.T, s store.Store, u *store.User) *store.User {
	t.Helper()
	got, err := s.UpsertUser(t.Context(), u)
	if err != nil {
		t.Fatalf("UpsertUser: %v", err)
	}
	return got
}

func mustGetUser(t *testing.T, s store.Store, id string) *store.User {
	t.Helper()
	got, err := s.GetUser(t.Context(), id)
	if err != nil {
		t.Fatalf("GetUser(%s): %v", id, err)
	}
	return got
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error = %v, want %v", what, err, target)
	}
}

func wantStatus(t *testing.T, s store.Store, id string, want store.UserStatus) *store.User {
	t.Helper()
	u := mustGetUser(t, s, id)
	if u.Status != want {
		t.Fatalf("user %s status = %q, want %q", id, u.Status, want)
	}
	return u
}

// sameLogin compares what the caller stored with what came back.
func sameLogin(t *testing.T, got, want *store.User) {
	t.Helper()
	type view struct {
		Platform, CRMUserID, Hostname, AppConnectID, DisplayName, TZName, TZOffset string
		Host                                                                       store.HostIdentity
		Access, Refresh, APIKey, AppRef                                            string
		Expiry                                                                     *time.Time
		Info                                                                       map[string]any
		Secrets                                                                    map[string]string
	}
	mk := func(u *store.User) view {
		var exp *time.Time
		if u.TokenExpiry != nil {
			e := u.TokenExpiry.UTC().Truncate(time.Millisecond)
			exp = &e
		}
		return view{u.Platform, u.CRMUserID, u.Hostname, u.AppConnectID, u.DisplayName, u.TimezoneName, u.TimezoneOffset,
			u.Host, u.AccessToken, u.RefreshToken, u.APIKey, u.OAuthAppRef, exp, u.AdditionalInfo, u.Secrets}
	}
	if g, w := mk(got), mk(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("stored login differs:\n got  %+v\n want %+v", g, w)
	}
}

func runUsers(t *testing.T, open Opener) {
	parallel(t, "UpsertCreatesAndGetRoundTrips", func(t *testing.T) {
		clk := fakeClock()
		s := open(t, clk)
		in := sampleUser(1)
		in.APIKey = "api-key-plaintext"
		got := mustUpsert(t, s, in)
		if got.ID == "" || got.Version != 1 || got.Status != store.StatusActive {
			t.Fatalf("created user: id %q version %d status %q; want an id, version 1, active", got.ID, got.Version, got.Status)
		}
		if !got.CreatedAt.Equal(start) || !got.UpdatedAt.Equal(start) {
			t.Fatalf("timestamps = %v/%v, want the store clock %v", got.CreatedAt, got.UpdatedAt, start)
		}
		sameLogin(t, got, in)
		read := mustGetUser(t, s, got.ID)
		sameLogin(t, read, in)
		if read.Version != 1 || read.Status != store.StatusActive {
			t.Fatalf("read back version %d status %q", read.Version, read.Status)
		}
	})

	parallel(t, "UpsertWithCallerID", func(t *testing.T) {
		s := open(t, fakeClock())
		in := sampleUser(1)
		in.ID = "0b7e5c52-6f55-4a8e-9d0a-3c1f0e0e0001"
		got := mustUpsert(t, s, in)
		if got.ID != in.ID {
			t.Fatalf("id = %q, want the caller's %q", got.ID, in.ID)
		}
	})

	parallel(t, "UpsertSameLoginUpdatesInPlace", func(t *testing.T) {
		clk := fakeClock()
		s := open(t, clk)
		first := mustUpsert(t, s, sampleUser(1))
		if err := s.SetUserStatus(t.Context(), first.ID, 0, store.StatusNeedsReauth); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Minute)
		again := sampleUser(1)
		again.ID = "" // a new login knows no id
		again.AccessToken, again.RefreshToken = "new-access", "new-refresh"
		again.Secrets = nil
		again.DisplayName = "Ada L."
		got := mustUpsert(t, s, again)
		if got.ID != first.ID {
			t.Fatalf("id changed on re-login: %q -> %q", first.ID, got.ID)
		}
		if got.Version != 2 || got.Status != store.StatusActive {
			t.Fatalf("after re-login: version %d status %q, want 2 active", got.Version, got.Status)
		}
		if !got.CreatedAt.Equal(start) || !got.UpdatedAt.Equal(start.Add(time.Minute)) {
			t.Fatalf("created %v updated %v", got.CreatedAt, got.UpdatedAt)
		}
		sameLogin(t, mustGetUser(t, s, first.ID), again)
	})

	parallel(t, "UpsertRevokedLoginReactivates", func(t *testing.T) {
		s := open(t, fakeClock())
		first := mustUpsert(t, s, sampleUser(1))
		if _, err := s.RevokeUser(t.Context(), first.ID); err != nil {
			t.Fatal(err)
		}
		got := mustUpsert(t, s, sampleUser(1))
		if got.ID != first.ID || got.Status != store.StatusActive || got.RefreshToken != sampleUser(1).RefreshToken {
			t.Fatalf("re-login after revoke: id %q status %q", got.ID, got.Status)
		}
	})

	parallel(t, "HostIdentityScopesRecords", func(t *testing.T) {
		s := open(t, fakeClock())
		a := sampleUser(1)
		b := sampleUser(1)
		b.Host.Kind = "operator" // same account id, other host kind
		c := sampleUser(1)
		c.Host.AccountID = "acct-2"
		d := sampleUser(1)
		d.Platform = "pipedrive"
		ids := map[string]bool{}
		for _, u := range []*store.User{a, b, c, d} {
			ids[mustUpsert(t, s, u).ID] = true
		}
		if len(ids) != 4 {
			t.Fatalf("got %d distinct records for 4 distinct (platform, crm user, host) keys", len(ids))
		}
	})

	parallel(t, "UpsertValidates", func(t *testing.T) {
		s := open(t, fakeClock())
		for name, u := range map[string]*store.User{
			"no platform": {CRMUserID: "x"},
			"no crm user": {Platform: "clio"},
		} {
			if _, err := s.UpsertUser(t.Context(), u); err == nil {
				t.Errorf("%s: UpsertUser accepted it", name)
			}
		}
	})

	parallel(t, "ConcurrentUpsertOneRecord", func(t *testing.T) {
		s := open(t, fakeClock())
		const n = 20
		ids := make([]string, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				u := sampleUser(7)
				u.AccessToken = fmt.Sprintf("access-%d", i)
				got, err := s.UpsertUser(t.Context(), u)
				errs[i] = err
				if err == nil {
					ids[i] = got.ID
				}
			}()
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("upsert %d: %v", i, errs[i])
			}
			if ids[i] != ids[0] {
				t.Fatalf("concurrent upserts of one login made several records: %q and %q", ids[0], ids[i])
			}
		}
		u := mustGetUser(t, s, ids[0])
		if u.Version != n {
			t.Fatalf("version = %d after %d upserts, want %d", u.Version, n, n)
		}
	})

	parallel(t, "GetUnknown", func(t *testing.T) {
		s := open(t, fakeClock())
		u, err := s.GetUser(t.Context(), "5f0e0e0e-0000-4000-8000-000000000000")
		if u != nil {
			t.Fatalf("GetUser returned a record for an unknown id")
		}
		wantErr(t, "GetUser unknown", err, store.ErrNotFound)
	})

	parallel(t, "Lease", func(t *testing.T) { runLease(t, open) })

	parallel(t, "SetUserStatus", func(t *testing.T) {
		s := open(t, fakeClock())
		u := mustUpsert(t, s, sampleUser(1))
		ctx := t.Context()
		wantErr(t, "wrong version", s.SetUserStatus(ctx, u.ID, u.Version+1, store.StatusNeedsReauth), store.ErrConflict)
		wantStatus(t, s, u.ID, store.StatusActive)
		if err := s.SetUserStatus(ctx, u.ID, u.Version, store.StatusNeedsReauth); err != nil {
			t.Fatalf("right version: %v", err)
		}
		got := wantStatus(t, s, u.ID, store.StatusNeedsReauth)
		if got.Version != u.Version {
			t.Fatalf("a status change bumped the version %d -> %d", u.Version, got.Version)
		}
		if err := s.SetUserStatus(ctx, u.ID, 0, store.StatusActive); err != nil {
			t.Fatalf("version 0 = any: %v", err)
		}
		wantStatus(t, s, u.ID, store.StatusActive)
		wantErr(t, "unknown id", s.SetUserStatus(ctx, "5f0e0e0e-0000-4000-8000-000000000000", 0, store.StatusActive), store.ErrNotFound)
		if err := s.SetUserStatus(ctx, u.ID, 0, store.StatusRevoked); err == nil {
			t.Fatal("SetUserStatus(revoked) accepted: revoking must clear credentials (RevokeUser)")
		}
		if _, err := s.RevokeUser(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "revoked record", s.SetUserStatus(ctx, u.ID, 0, store.StatusActive), store.ErrConflict)
		wantStatus(t, s, u.ID, store.StatusRevoked)
	})

	parallel(t, "RevokeUser", func(t *testing.T) {
		s := open(t, fakeClock())
		in := sampleUser(1)
		in.APIKey = "api-key-plaintext"
		u := mustUpsert(t, s, in)
		before, err := s.RevokeUser(t.Context(), u.ID)
		if err != nil {
			t.Fatalf("RevokeUser: %v", err)
		}
		if before.RefreshToken != in.RefreshToken || before.AccessToken != in.AccessToken || before.APIKey != in.APIKey {
			t.Fatal("RevokeUser must return the credentials as they were (for upstream revocation)")
		}
		after := wantStatus(t, s, u.ID, store.StatusRevoked)
		if after.AccessToken != "" || after.RefreshToken != "" || after.APIKey != "" || after.Secrets != nil || after.TokenExpiry != nil {
			t.Fatalf("revoked record still holds credentials: %+v", after)
		}
		if after.Version != u.Version+1 {
			t.Fatalf("version %d after revoke, want %d", after.Version, u.Version+1)
		}
		if after.DisplayName != in.DisplayName || after.Platform != in.Platform {
			t.Fatal("revoke must keep the profile")
		}
		_, err = s.RevokeUser(t.Context(), "5f0e0e0e-0000-4000-8000-000000000000")
		wantErr(t, "revoke unknown", err, store.ErrNotFound)
	})

	parallel(t, "UpdateUserProfile", func(t *testing.T) {
		clk := fakeClock()
		s := open(t, clk)
		in := sampleUser(1)
		u := mustUpsert(t, s, in)
		clk.Advance(time.Second)
		info := map[string]any{"region": "eu", "nested": map[string]any{"a": "b"}}
		if err := s.UpdateUserProfile(t.Context(), u.ID, "Grace", "America/New_York", "-05:00", info); err != nil {
			t.Fatalf("UpdateUserProfile: %v", err)
		}
		got := mustGetUser(t, s, u.ID)
		if got.DisplayName != "Grace" || got.TimezoneName != "America/New_York" || got.TimezoneOffset != "-05:00" {
			t.Fatalf("profile not updated: %+v", got)
		}
		if !reflect.DeepEqual(got.AdditionalInfo, info) {
			t.Fatalf("additional info = %#v, want %#v", got.AdditionalInfo, info)
		}
		if got.Version != u.Version || got.RefreshToken != in.RefreshToken || got.AccessToken != in.AccessToken {
			t.Fatal("a profile update must not touch credentials or the version")
		}
		if !got.UpdatedAt.Equal(start.Add(time.Second)) {
			t.Fatalf("updated at %v", got.UpdatedAt)
		}
		wantErr(t, "unknown id", s.UpdateUserProfile(t.Context(), "5f0e0e0e-0000-4000-8000-000000000000", "x", "", "", nil), store.ErrNotFound)
	})
}

func runLease(t *testing.T, open Opener) {
	const ttl = 30 * time.Second

	parallel(t, "AcquireMarksUncertainAndExcludesOthers", func(t *testing.T) {
		s := open(t, fakeClock())
		u := mustUpsert(t, s, sampleUser(1))
		got, err := s.AcquireUserLease(t.Context(), u.ID, "owner-a", ttl)
		if err != nil {
			t.Fatalf("acquire: %v", err)
		}
		if got.Status != store.StatusRefreshUncertain || got.RefreshToken != sampleUser(1).RefreshToken {
			t.Fatalf("leased record: status %q refresh %q", got.Status, got.RefreshToken)
		}
		wantStatus(t, s, u.ID, store.StatusRefreshUncertain) // written ahead, visible to all
		_, err = s.AcquireUserLease(t.Context(), u.ID, "owner-b", ttl)
		wantErr(t, "second owner", err, store.ErrLeaseHeld)
		if _, err := s.AcquireUserLease(t.Context(), u.ID, "owner-a", ttl); err != nil {
			t.Fatalf("re-acquire by the same owner: %v", err)
		}
		// Re-acquiring must not lose the status to restore.
		if err := s.ReleaseUserLease(t.Context(), u.ID, "owner-a", ""); err != nil {
			t.Fatal(err)
		}
		wantStatus(t, s, u.ID, store.StatusActive)
		if _, err := s.AcquireUserLease(t.Context(), u.ID, "owner-b", ttl); err != nil {
			t.Fatalf("acquire after release: %v", err)
		}
	})

	parallel(t, "AcquireUnknownOrRevoked", func(t *testing.T) {
		s := open(t, fakeClock())
		_, err := s.AcquireUserLease(t.Context(), "5f0e0e0e-0000-4000-8000-000000000000", "o", ttl)
		wantErr(t, "unknown", err, store.ErrNotFound)
		u := mustUpsert(t, s, sampleUser(1))
		if _, err := s.RevokeUser(t.Context(), u.ID); err != nil {
			t.Fatal(err)
		}
		_, err = s.AcquireUserLease(t.Context(), u.ID, "o", ttl)
		wantErr(t, "revoked", err, store.ErrNotFound)
	})

	parallel(t, "ConcurrentAcquireOneWinner", func(t *testing.T) {
		s := open(t, fakeClock())
		u := mustUpsert(t, s, sampleUser(1))
		const n = 20
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.AcquireUserLease(t.Context(), u.ID, fmt.Sprintf("owner-%d", i), ttl)
			}()
		}
		wg.Wait()
		winners := 0
		for i, err := range errs {
			switch {
			case err == nil:
				winners++
			case errors.Is(err, store.ErrLeaseHeld):
			default:
				t.Fatalf("acquirer %d: unexpected error %v", i, err)
			}
		}
		if winners != 1 {
			t.Fatalf("%d acquirers won the lease, want exactly 1", winners)
		}
	})

	parallel(t, "ExpiryTakeoverAndFencedSave", func(t *testing.T) {
		clk := fakeClock()
		s := open(t, clk)
		u := mustUpsert(t, s, sampleUser(1))
		if _, err := s.AcquireUserLease(t.Context(), u.ID, "owner-a", ttl); err != nil {
			t.Fatal(err)
		}
		clk.Advance(ttl - time.Millisecond)
		_, err := s.AcquireUserLease(t.Context(), u.ID, "owner-b", ttl)
		wantErr(t, "before expiry", err, store.ErrLeaseHeld)
		clk.Advance(2 * time.Millisecond)
		if _, err := s.AcquireUserLease(t.Context(), u.ID, "owner-b", ttl); err != nil {
			t.Fatalf("takeover after expiry: %v", err)
		}
		_, err = s.SaveLeasedTokens(t.Context(), u.ID, "owner-a", store.TokenUpdate{AccessToken: "stale", RefreshToken: "stale"})
		wantErr(t, "save by the old owner", err, store.ErrLeaseLost)
		// The old owner's release must not free the new owner's lease.
		if err := s.ReleaseUserLease(t.Context(), u.ID, "owner-a", store.StatusActive); err != nil {
			t.Fatal(err)
		}
		_, err = s.AcquireUserLease(t.Context(), u.ID, "owner-c", ttl)
		wantErr(t, "after a foreign release", err, store.ErrLeaseHeld)
		wantStatus(t, s, u.ID, store.StatusRefreshUncertain)
		exp := start.Add(2 * time.Hour)
		saved, err := s.SaveLeasedTokens(t.Context(), u.ID, "owner-b", store.TokenUpdate{
			AccessToken: "fresh-access", RefreshToken: "fresh-refresh", TokenExpiry: &exp, Hostname: "eu.app.clio.com",
		})
		if err != nil {
			t.Fatalf("save by the new owner: %v", err)
		}
		if saved.Version != u.Version+1 || saved.Status != store.StatusActive || saved.AccessToken != "fresh-access" ||
			saved.RefreshToken != "fresh-refresh" || saved.Hostname != "eu.app.clio.com" || !saved.TokenExpiry.Equal(exp) {
			t.Fatalf("saved record: %+v", saved)
		}
		got := mustGetUser(t, s, u.ID)
		if got.RefreshToken != "fresh-refresh" || got.Version != saved.Version {
			t.Fatal("saved tokens not visible on read")
		}
		// The save released the lease.
		if _, err := s.AcquireUserLease(t.Context(), u.ID, "owner-c", ttl); err != nil {
			t.Fatalf("acquire after save: %v", err)
		}
		_, err = s.SaveLeasedTokens(t.Context(), u.ID, "owner-b", store.TokenUpdate{AccessToken: "x"})
		wantErr(t, "second save by a released owner", err, store.ErrLeaseLost)
	})

	parallel(t, "SaveKeepsRefreshAndHostnameWhenEmpty", func(t *testing.T) {
		s := open(t, fakeClock())
		u := mustUpsert(t, s, sampleUser(1))
		if _, err := s.AcquireUserLease(t.Context(), u.ID, "o", ttl); err != nil {
			t.Fatal(err)
		}
		saved, err := s.SaveLeasedTokens(t.Context(), u.ID, "o", store.TokenUpdate{AccessToken: "new-access"})
		if err != nil {
			t.Fatal(err)
		}
		if saved.RefreshToken != sampleUser(1).RefreshToken || saved.Hostname != sampleUser(1).Hostname || saved.AccessToken != "new-access" {
			t.Fatalf("save with empty refresh/hostname: %+v", saved)
		}
		if saved.TokenExpiry != nil {
			t.Fatalf("expiry = %v, want nil (unknown) as given", saved.TokenExpiry)
		}
	})

	parallel(t, "RevokeDuringRefreshWins", func(t *testing.T) {
		s := open(t, fakeClock())
		u := mustUpsert(t, s, sampleUser(1))
		if _, err := s.AcquireUserLease(t.Context(), u.ID, "refresher", ttl); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RevokeUser(t.Context(), u.ID); err != nil { // does not wait for the lease
			t.Fatalf("revoke during a lease: %v", err)
		}
		_, err := s.SaveLeasedTokens(t.Context(), u.ID, "refresher", store.TokenUpdate{AccessToken: "a", RefreshToken: "r"})
		wantErr(t, "save after revoke", err, store.ErrLeaseLost)
		if err := s.ReleaseUserLease(t.Context(), u.ID, "refresher", store.StatusActive); err != nil {
			t.Fatal(err)
		}
		got := wantStatus(t, s, u.ID, store.StatusRevoked)
		if got.RefreshToken != "" || got.AccessToken != "" {
			t.Fatal("revoked record regained tokens")
		}
	})

	parallel(t, "UpsertBreaksLease", func(t *testing.T) {
		s := open(t, fakeClock())
		u := mustUpsert(t, s, sampleUser(1))
		if _, err := s.AcquireUserLease(t.Context(), u.ID, "refresher", ttl); err != nil {
			t.Fatal(err)
		}
		mustUpsert(t, s, sampleUser(1)) // the user logs in again meanwhile
		_, err := s.SaveLeasedTokens(t.Context(), u.ID, "refresher", store.TokenUpdate{AccessToken: "old-grant"})
		wantErr(t, "save after re-login", err, store.ErrLeaseLost)
		wantStatus(t, s, u.ID, store.StatusActive)
	})

	parallel(t, "ReleaseStatuses", func(t *testing.T) {
		tests := []struct {
			name   string
			prior  store.UserStatus
			status store.UserStatus
			want   store.UserStatus
		}{
			{"restore active", store.StatusActive, "", store.StatusActive},
			{"restore needs_reauth", store.StatusNeedsReauth, "", store.StatusNeedsReauth},
			{"invalid_grant", store.StatusActive, store.StatusNeedsReauth, store.StatusNeedsReauth},
			{"explicit active", store.StatusNeedsReauth, store.StatusActive, store.StatusActive},
			{"keep uncertain", store.StatusActive, store.StatusRefreshUncertain, store.StatusRefreshUncertain},
		}
		s := open(t, fakeClock())
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				u := mustUpsert(t, s, sampleUser(100+i))
				if tc.prior != store.StatusActive {
					if err := s.SetUserStatus(t.Context(), u.ID, 0, tc.prior); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := s.AcquireUserLease(t.Context(), u.ID, "o", ttl); err != nil {
					t.Fatal(err)
				}
				if err := s.ReleaseUserLease(t.Context(), u.ID, "o", tc.status); err != nil {
					t.Fatal(err)
				}
				got := wantStatus(t, s, u.ID, tc.want)
				if got.Version != u.Version {
					t.Fatal("release must not bump the version")
				}
				if _, err := s.AcquireUserLease(t.Context(), u.ID, "other", ttl); err != nil {
					t.Fatalf("lease not released: %v", err)
				}
			})
		}
		u := mustUpsert(t, s, sampleUser(999))
		if err := s.ReleaseUserLease(t.Context(), u.ID, "o", store.StatusRevoked); err == nil {
			t.Fatal("release with status revoked accepted")
		}
	})

	parallel(t, "TakeoverOfDeadOwnerKeepsUncertain", func(t *testing.T) {
		clk := fakeClock()
		s := open(t, clk)
		u := mustUpsert(t, s, sampleUser(1))
		if _, err := s.AcquireUserLease(t.Context(), u.ID, "dead", ttl); err != nil {
			t.Fatal(err)
		}
		clk.Advance(ttl + time.Second)
		if _, err := s.AcquireUserLease(t.Context(), u.ID, "heir", ttl); err != nil {
			t.Fatal(err)
		}
		// The heir gives up without calling upstream: the dead owner may
		// have rotated the token, so the record stays uncertain.
		if err := s.ReleaseUserLease(t.Context(), u.ID, "heir", ""); err != nil {
			t.Fatal(err)
		}
		wantStatus(t, s, u.ID, store.StatusRefreshUncertain)
	})
}

func rawAccess(t *testing.T, s store.Store) RawAccess {
	t.Helper()
	r, ok := s.(RawAccess)
	if !ok {
		t.Fatalf("backend %T does not implement storetest.RawAccess: the suite cannot check what is at rest", s)
	}
	return r
}

func runSealed(t *testing.T, open Opener) {
	s := open(t, fakeClock())
	raw := rawAccess(t, s)
	ctx := t.Context()
	in := sampleUser(1)
	in.APIKey = "api-key-plaintext-1"
	u := mustUpsert(t, s, in)
	other := mustUpsert(t, s, sampleUser(2))

	t.Run("NoPlaintextAtRest", func(t *testing.T) {
		for col, secret := range map[string]string{
			"access_token":  in.AccessToken,
			"refresh_token": in.RefreshToken,
			"api_key":       in.APIKey,
			"secrets":       in.Secrets["password"],
		} {
			b, err := raw.RawColumn(ctx, "users", col, u.ID)
			if err != nil {
				t.Fatalf("raw %s: %v", col, err)
			}
			if len(b) == 0 {
				t.Fatalf("users.%s is empty at rest, want ciphertext", col)
			}
			if bytes.Contains(b, []byte(secret)) {
				t.Fatalf("users.%s holds the plaintext at rest", col)
			}
		}
	})

	t.Run("EmptySecretIsNull", func(t *testing.T) {
		b, err := raw.RawColumn(ctx, "users", "api_key", other.ID)
		if err != nil {
			t.Fatal(err)
		}
		if b != nil {
			t.Fatalf("empty api key stored as %d bytes, want NULL", len(b))
		}
	})

	t.Run("CiphertextMovedToAnotherRowFails", func(t *testing.T) {
		ct, err := raw.RawColumn(ctx, "users", "refresh_token", u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := raw.SetRawColumn(ctx, "users", "refresh_token", other.ID, ct); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetUser(ctx, other.ID)
		if got != nil {
			t.Fatal("GetUser returned a record holding a moved ciphertext")
		}
		wantErr(t, "moved row", err, store.ErrDecrypt)
	})

	t.Run("CiphertextMovedToAnotherFieldFails", func(t *testing.T) {
		ct, err := raw.RawColumn(ctx, "users", "refresh_token", u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := raw.SetRawColumn(ctx, "users", "access_token", u.ID, ct); err != nil {
			t.Fatal(err)
		}
		_, err = s.GetUser(ctx, u.ID)
		wantErr(t, "moved field", err, store.ErrDecrypt)
	})

	t.Run("TamperedFails", func(t *testing.T) {
		v := mustUpsert(t, s, sampleUser(3))
		ct, err := raw.RawColumn(ctx, "users", "secrets", v.ID)
		if err != nil {
			t.Fatal(err)
		}
		ct[len(ct)-1] ^= 1
		if err := raw.SetRawColumn(ctx, "users", "secrets", v.ID, ct); err != nil {
			t.Fatal(err)
		}
		_, err = s.GetUser(ctx, v.ID)
		wantErr(t, "tampered", err, store.ErrDecrypt)
	})

	t.Run("FlowAndJobColumns", func(t *testing.T) {
		f := &store.OAuthFlow{Platform: "clio", PKCEVerifier: "pkce-verifier-plaintext-0123456789", ExpiresAt: start.Add(10 * time.Minute)}
		if err := s.CreateFlow(ctx, f); err != nil {
			t.Fatal(err)
		}
		b, err := raw.RawColumn(ctx, "oauth_flows", "pkce_verifier", f.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 || bytes.Contains(b, []byte(f.PKCEVerifier)) {
			t.Fatal("oauth_flows.pkce_verifier is not sealed at rest")
		}
		j, _, err := s.EnqueueJob(ctx, &store.Job{Kind: "k", Payload: []byte("job-payload-plaintext"), ExpiresAt: start.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		b, err = raw.RawColumn(ctx, "jobs", "payload", j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 || bytes.Contains(b, []byte("job-payload-plaintext")) {
			t.Fatal("jobs.payload is not sealed at rest")
		}
		claimed, err := s.ClaimJobs(ctx, []string{"k"}, "w", time.Minute, 1)
		if err != nil || len(claimed) != 1 {
			t.Fatalf("claim: %v %d", err, len(claimed))
		}
		if err := s.CompleteJob(ctx, j.ID, "w", []byte("job-result-plaintext")); err != nil {
			t.Fatal(err)
		}
		b, err = raw.RawColumn(ctx, "jobs", "result", j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 || bytes.Contains(b, []byte("job-result-plaintext")) {
			t.Fatal("jobs.result is not sealed at rest")
		}
		// A payload moved onto the result field does not open.
		p, _ := raw.RawColumn(ctx, "jobs", "payload", j.ID)
		if err := raw.SetRawColumn(ctx, "jobs", "result", j.ID, p); err != nil {
			t.Fatal(err)
		}
		_, err = s.GetJob(ctx, j.ID)
		wantErr(t, "job payload moved to result", err, store.ErrDecrypt)
	})
}

// runConcurrentWriters: 50 goroutines writing at once (upserts, leases,
// saves, sessions, flows) must all succeed: on SQLite no "database is
// locked", on PostgreSQL no pool exhaustion errors.
func runConcurrentWriters(t *testing.T, open Opener) {
	s := open(t, nil)
	const n = 50
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				ctx := t.Context()
				u, err := s.UpsertUser(ctx, sampleUser(1000+i))
				if err != nil {
					return fmt.Errorf("upsert: %w", err)
				}
				owner := fmt.Sprintf("w%d", i)
				if _, err := s.AcquireUserLease(ctx, u.ID, owner, time.Minute); err != nil {
					return fmt.Errorf("acquire: %w", err)
				}
				if _, err := s.SaveLeasedTokens(ctx, u.ID, owner, store.TokenUpdate{AccessToken: "a", RefreshToken: "r"}); err != nil {
					return fmt.Errorf("save: %w", err)
				}
				if err := s.CreateSession(ctx, &store.Session{Kind: store.SessionAppConnect, UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
					return fmt.Errorf("session: %w", err)
				}
				f := &store.OAuthFlow{Platform: "clio", ExpiresAt: time.Now().Add(time.Hour), PKCEVerifier: "v"}
				if err := s.CreateFlow(ctx, f); err != nil {
					return fmt.Errorf("flow: %w", err)
				}
				if _, err := s.ConsumeFlow(ctx, f.ID); err != nil {
					return fmt.Errorf("consume: %w", err)
				}
				if _, _, err := s.EnqueueJob(ctx, &store.Job{Kind: "k", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
					return fmt.Errorf("enqueue: %w", err)
				}
				if _, err := s.GetUser(ctx, u.ID); err != nil {
					return fmt.Errorf("read: %w", err)
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent writer: %v", err)
		}
	}
	counts, err := s.CountJobs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if counts["k"][store.JobPending] != n {
		t.Fatalf("pending jobs = %d, want %d", counts["k"][store.JobPending], n)
	}
}

// runDatabaseClock checks the production path (no injected clock): the
// database decides expiry.
func runDatabaseClock(t *testing.T, open Opener) {
	s := open(t, nil)
	ctx := t.Context()
	past := &store.OAuthFlow{Platform: "clio", ExpiresAt: time.Now().Add(-time.Minute)}
	future := &store.OAuthFlow{Platform: "clio", ExpiresAt: time.Now().Add(time.Hour)}
	for _, f := range []*store.OAuthFlow{past, future} {
		if err := s.CreateFlow(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.ConsumeFlow(ctx, past.ID)
	wantErr(t, "expired by the database clock", err, store.ErrNotFound)
	if _, err := s.ConsumeFlow(ctx, future.ID); err != nil {
		t.Fatalf("unexpired flow: %v", err)
	}
	u := mustUpsert(t, s, sampleUser(1))
	if time.Since(u.CreatedAt).Abs() > time.Hour {
		t.Fatalf("created at %v is not the database's now", u.CreatedAt)
	}
	if _, err := s.AcquireUserLease(ctx, u.ID, "a", time.Hour); err != nil {
		t.Fatal(err)
	}
	_, err = s.AcquireUserLease(ctx, u.ID, "b", time.Hour)
	wantErr(t, "lease held by the database clock", err, store.ErrLeaseHeld)
}
