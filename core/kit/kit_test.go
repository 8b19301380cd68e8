package kit_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/kit"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/encryption"
)

const redirect = "https://app.kit.com/apps/install"

// fixture: a store whose "database clock" is db, a service whose clock is
// svc (both fake), one app and one creator login.
type fixture struct {
	st      *gormstore.Store
	db, svc *clock.Fake
	app     *store.KitApp
	secret  string
	userID  string
	ring    *encryption.KeyRing
	ended   chan string
}

func newFixture(t *testing.T, backend string) *fixture {
	t.Helper()
	now := time.Now()
	f := &fixture{db: clock.NewFake(now), svc: clock.NewFake(now), ended: make(chan string, 64)}
	f.st = storetest.OpenStore(t, backend, f.db)
	ctx := context.Background()
	var err error
	if f.app, f.secret, err = kit.CreateApp(ctx, f.st, kit.AppInput{Name: "A", Connector: "pipedrive", RedirectURIs: []string{redirect, "https://app.kit.com/apps"}}); err != nil {
		t.Fatal(err)
	}
	u, err := f.st.UpsertUser(ctx, &store.User{Platform: "pipedrive", CRMUserID: "1", Host: store.HostIdentity{Kind: "kit", AccountID: f.app.ID, UserID: "i"}, Status: store.StatusActive, AccessToken: "x"})
	if err != nil {
		t.Fatal(err)
	}
	f.userID = u.ID
	key, _ := encryption.GenerateKey(nil)
	if f.ring, err = encryption.NewKeyRing(1, key); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) service(t *testing.T, ring *encryption.KeyRing, o kit.Options) *kit.Service {
	t.Helper()
	o.Store, o.Keys, o.Clock = f.st, ring, f.svc
	o.GrantEnded = func(_ context.Context, g *store.KitGrant) { f.ended <- g.ID }
	s, err := kit.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *fixture) issue(t *testing.T, s *kit.Service) (string, *store.KitGrant) {
	t.Helper()
	code, g, err := s.IssueCode(context.Background(), f.app, "", f.userID, redirect)
	if err != nil {
		t.Fatal(err)
	}
	return code, g
}

func isGrantErr(err error) bool {
	var oe *kit.OAuthError
	return errors.As(err, &oe) && oe.Code == kit.ErrInvalidGrant
}

func TestService(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := context.Background()

		t.Run("concurrent code redemption: one wins, the replay revokes it", func(t *testing.T) {
			f := newFixture(t, backend)
			s := f.service(t, f.ring, kit.Options{})
			code, g := f.issue(t, s)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var wins []*kit.TokenPair
			losses := 0
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p, err := s.ExchangeCode(ctx, f.app, code, "https://app.kit.com/apps")
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						wins = append(wins, p)
					case isGrantErr(err):
						losses++
					default:
						t.Errorf("exchange: %v", err)
					}
				}()
			}
			wg.Wait()
			if len(wins) != 1 || losses != 7 {
				t.Fatalf("wins %d, losses %d", len(wins), losses)
			}
			if _, err := s.Bearer(ctx, wins[0].AccessToken); err == nil {
				t.Fatal("the winner's token survived the replays")
			}
			if got := <-f.ended; got != g.ID {
				t.Fatalf("GrantEnded(%s), want %s", got, g.ID)
			}
		})

		t.Run("code expiry is decided by the database clock", func(t *testing.T) {
			f := newFixture(t, backend)
			s := f.service(t, f.ring, kit.Options{})
			code, _ := f.issue(t, s)
			f.db.Advance(10*time.Minute + time.Millisecond) // the service clock stays put
			if _, err := s.ExchangeCode(ctx, f.app, code, redirect); !isGrantErr(err) {
				t.Fatalf("expired code: %v", err)
			}
		})

		t.Run("another app cannot redeem the code", func(t *testing.T) {
			f := newFixture(t, backend)
			s := f.service(t, f.ring, kit.Options{})
			other, _, err := kit.CreateApp(ctx, f.st, kit.AppInput{Name: "B", Connector: "pipedrive", RedirectURIs: []string{redirect}})
			if err != nil {
				t.Fatal(err)
			}
			code, _ := f.issue(t, s)
			if _, err := s.ExchangeCode(ctx, other, code, redirect); !isGrantErr(err) {
				t.Fatalf("other app: %v", err)
			}
			if _, err := s.ExchangeCode(ctx, f.app, code, redirect); err != nil {
				t.Fatalf("own app after the refusal: %v", err)
			}
		})

		t.Run("concurrent retries of one refresh get one pair", func(t *testing.T) {
			f := newFixture(t, backend)
			s := f.service(t, f.ring, kit.Options{})
			code, _ := f.issue(t, s)
			p, err := s.ExchangeCode(ctx, f.app, code, redirect)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			results := make([]*kit.TokenPair, 6)
			errs := make([]error, 6)
			for i := range results {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[i], errs[i] = s.Refresh(ctx, f.app, p.RefreshToken)
				}()
			}
			wg.Wait()
			for i := range results {
				if errs[i] != nil {
					t.Fatalf("retry %d: %v", i, errs[i])
				}
				if *results[i] != *results[0] {
					t.Fatalf("retry %d got another pair", i)
				}
			}
			if _, err := s.Bearer(ctx, results[0].AccessToken); err != nil {
				t.Fatalf("new access token: %v", err)
			}
		})

		t.Run("grace window is judged by the database clock too", func(t *testing.T) {
			f := newFixture(t, backend)
			s := f.service(t, f.ring, kit.Options{})
			code, g := f.issue(t, s)
			p, _ := s.ExchangeCode(ctx, f.app, code, redirect)
			next, err := s.Refresh(ctx, f.app, p.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			f.db.Advance(31 * time.Second)
			if _, err := s.Refresh(ctx, f.app, p.RefreshToken); !isGrantErr(err) {
				t.Fatalf("reuse after grace: %v", err)
			}
			if _, err := s.Bearer(ctx, next.AccessToken); err == nil {
				t.Fatal("family survived a reuse")
			}
			if got := <-f.ended; got != g.ID {
				t.Fatalf("GrantEnded(%s), want %s", got, g.ID)
			}
		})

		t.Run("a retry after the signing key was promoted still gets the same pair", func(t *testing.T) {
			f := newFixture(t, backend)
			s := f.service(t, f.ring, kit.Options{})
			code, _ := f.issue(t, s)
			p, _ := s.ExchangeCode(ctx, f.app, code, redirect)
			first, err := s.Refresh(ctx, f.app, p.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			k2, _ := encryption.GenerateKey(nil)
			ring2, err := f.ring.Add(2, k2)
			if err != nil {
				t.Fatal(err)
			}
			if ring2, err = ring2.Promote(2); err != nil {
				t.Fatal(err)
			}
			again, err := f.service(t, ring2, kit.Options{}).Refresh(ctx, f.app, p.RefreshToken)
			if err != nil || *again != *first {
				t.Fatalf("retry with a rotated ring: %+v %v", again, err)
			}
		})

		t.Run("family lifetime is absolute", func(t *testing.T) {
			f := newFixture(t, backend)
			s := f.service(t, f.ring, kit.Options{FamilyTTL: 3 * time.Hour, AccessTTL: time.Hour})
			code, _ := f.issue(t, s)
			p, _ := s.ExchangeCode(ctx, f.app, code, redirect)
			for range 2 {
				f.db.Advance(80 * time.Minute)
				f.svc.Advance(80 * time.Minute)
				if p, _ = s.Refresh(ctx, f.app, p.RefreshToken); p == nil {
					t.Fatal("refresh within the family lifetime failed")
				}
			}
			f.db.Advance(30 * time.Minute)
			f.svc.Advance(30 * time.Minute)
			if _, err := s.Refresh(ctx, f.app, p.RefreshToken); !isGrantErr(err) {
				t.Fatalf("refresh past the family lifetime: %v", err)
			}
		})

		t.Run("authenticate", func(t *testing.T) {
			f := newFixture(t, backend)
			s := f.service(t, f.ring, kit.Options{})
			if _, err := s.Authenticate(ctx, f.app.ClientID, f.secret); err != nil {
				t.Fatal(err)
			}
			for _, c := range [][2]string{{f.app.ClientID, f.secret[:len(f.secret)-1]}, {f.app.ClientID, ""}, {"kitc_x", f.secret}, {"", ""}} {
				var oe *kit.OAuthError
				if _, err := s.Authenticate(ctx, c[0], c[1]); !errors.As(err, &oe) || oe.Code != kit.ErrInvalidClient {
					t.Errorf("%q: %v", c, err)
				}
			}
		})

		t.Run("janitor", func(t *testing.T) {
			f := newFixture(t, backend)
			s := f.service(t, f.ring, kit.Options{})
			code, _ := f.issue(t, s)
			p, _ := s.ExchangeCode(ctx, f.app, code, redirect)
			if _, err := s.Revoke(ctx, f.app, p.AccessToken); err != nil {
				t.Fatal(err)
			}
			if n, err := f.st.PurgeExpiredKit(ctx, time.Hour); err != nil || n != 0 {
				t.Fatalf("purge before retention: %d %v", n, err)
			}
			f.db.Advance(2 * time.Hour)
			n, err := f.st.PurgeExpiredKit(ctx, time.Hour)
			if err != nil || n != 4 { // grant + code + 2 tokens
				t.Fatalf("purge: %d %v", n, err)
			}
		})
	})
}
