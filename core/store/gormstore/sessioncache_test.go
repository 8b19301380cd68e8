package gormstore_test

import (
	"testing"
	"time"

	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/core/store/storetest"
)

// TestSessionCacheRevocation: GetSession answers from a short per-process
// cache, so a revocation made through the same Store must be seen at once
// (revoke, revoke-all, extend), and one made by another replica (another
// Store on the database) must be seen once the cache entry ages out - the
// bound decisions.md promises (1 s). The test polls rather than asserting
// a time.
func TestSessionCacheRevocation(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		dbURL := storetest.NewURL(t, backend)
		sealer := storetest.NewSealer(t)
		a := storetest.OpenStoreWith(t, gormstore.Options{URL: dbURL, Sealer: sealer})
		b := storetest.OpenStoreWith(t, gormstore.Options{URL: dbURL, Sealer: sealer, SessionCacheTTL: 200 * time.Millisecond})
		ctx := t.Context()
		u, err := a.UpsertUser(ctx, &store.User{Platform: "clio", CRMUserID: "1", AccessToken: "a1"})
		if err != nil {
			t.Fatal(err)
		}
		newSession := func(t *testing.T) *store.Session {
			t.Helper()
			s := &store.Session{Kind: store.SessionAppConnect, UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour)}
			if err := a.CreateSession(ctx, s); err != nil {
				t.Fatal(err)
			}
			return s
		}
		warm := func(t *testing.T, st *gormstore.Store, id string) {
			t.Helper()
			got, err := st.GetSession(ctx, id)
			if err != nil || got.RevokedAt != nil {
				t.Fatalf("warm-up read: %+v, %v", got, err)
			}
		}

		t.Run("revoke here is seen at once", func(t *testing.T) {
			s := newSession(t)
			warm(t, a, s.ID)
			if err := a.RevokeSession(ctx, s.ID); err != nil {
				t.Fatal(err)
			}
			got, err := a.GetSession(ctx, s.ID)
			if err != nil || got.RevokedAt == nil {
				t.Fatalf("after revoke: %+v, %v", got, err)
			}
		})
		t.Run("revoke all of a user here is seen at once", func(t *testing.T) {
			s1, s2 := newSession(t), newSession(t)
			warm(t, a, s1.ID)
			warm(t, a, s2.ID)
			if _, err := a.RevokeUserSessions(ctx, u.ID); err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{s1.ID, s2.ID} {
				if got, err := a.GetSession(ctx, id); err != nil || got.RevokedAt == nil {
					t.Fatalf("after revoke-all: %+v, %v", got, err)
				}
			}
		})
		t.Run("extend here is seen at once", func(t *testing.T) {
			s := newSession(t)
			warm(t, a, s.ID)
			later := time.Now().Add(48 * time.Hour).Truncate(time.Millisecond)
			if err := a.ExtendSession(ctx, s.ID, later); err != nil {
				t.Fatal(err)
			}
			if got, err := a.GetSession(ctx, s.ID); err != nil || !got.ExpiresAt.Equal(later) {
				t.Fatalf("after extend: %+v, %v (want expiry %v)", got, err, later)
			}
		})
		t.Run("revoke on another replica is seen after the TTL", func(t *testing.T) {
			s := newSession(t)
			warm(t, b, s.ID)
			if err := a.RevokeSession(ctx, s.ID); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second) // generous: a loaded CI machine
			for {
				got, err := b.GetSession(ctx, s.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.RevokedAt != nil {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("replica b still serves the revoked session")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
		t.Run("cached copies are private", func(t *testing.T) {
			s := newSession(t)
			got, _ := a.GetSession(ctx, s.ID)
			got.Kind = "mutated"
			again, err := a.GetSession(ctx, s.ID)
			if err != nil || again.Kind != store.SessionAppConnect {
				t.Fatalf("a caller's change reached the cache: %+v, %v", again, err)
			}
		})
		t.Run("disabled cache reads through", func(t *testing.T) {
			c := storetest.OpenStoreWith(t, gormstore.Options{URL: dbURL, Sealer: sealer, SessionCacheTTL: -1})
			s := newSession(t)
			warm(t, c, s.ID)
			if err := a.RevokeSession(ctx, s.ID); err != nil {
				t.Fatal(err)
			}
			if got, err := c.GetSession(ctx, s.ID); err != nil || got.RevokedAt == nil {
				t.Fatalf("uncached replica: %+v, %v", got, err)
			}
		})
	})
}
