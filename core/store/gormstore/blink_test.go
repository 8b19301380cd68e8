package gormstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/core/store/storetest"
)

func openBlinkStore(t *testing.T, backend string, clk clock.Clock) *gormstore.Store {
	t.Helper()
	return storetest.OpenStore(t, backend, clk)
}

func blinkApp(name string) *store.BlinkApp {
	return &store.BlinkApp{Name: name, Connector: "testcrm", AuthID: "auth-1", ProxySecretEnv: "S", APIURL: "https://blink.example", APITokenEnv: "T"}
}

func TestBlinkApps(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		s := openBlinkStore(t, backend, nil)
		a := blinkApp("b-app")
		a.ShareTokens = true
		a.PreviousProxySecretEnv = "S_OLD"
		a.API = store.BlinkAPISettings{AddPath: "/x/{user_id}", UpdateMethod: "none"}
		if err := s.CreateBlinkApp(ctx, a); err != nil {
			t.Fatal(err)
		}
		if a.ID == "" || a.CreatedAt.IsZero() {
			t.Fatalf("create did not fill id/time: %+v", a)
		}
		if err := s.CreateBlinkApp(ctx, blinkApp("b-app")); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("duplicate name: %v", err)
		}
		if err := s.CreateBlinkApp(ctx, &store.BlinkApp{Name: "x"}); err == nil {
			t.Fatalf("incomplete app accepted")
		}
		got, err := s.GetBlinkAppByName(ctx, "b-app")
		if err != nil || got.ID != a.ID || !got.ShareTokens || got.PreviousProxySecretEnv != "S_OLD" || got.API.AddPath != "/x/{user_id}" || got.API.UpdateMethod != "none" {
			t.Fatalf("by name: %+v %v", got, err)
		}
		if byID, err := s.GetBlinkApp(ctx, a.ID); err != nil || byID.Name != "b-app" {
			t.Fatalf("by id: %+v %v", byID, err)
		}
		if _, err := s.GetBlinkAppByName(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown: %v", err)
		}
		if err := s.CreateBlinkApp(ctx, blinkApp("a-app")); err != nil {
			t.Fatal(err)
		}
		list, err := s.ListBlinkApps(ctx)
		if err != nil || len(list) != 2 || list[0].Name != "a-app" || list[1].Name != "b-app" {
			t.Fatalf("list: %+v %v", list, err)
		}
		if _, err := s.UpsertBlinkLink(ctx, &store.BlinkLink{AppID: a.ID, BlinkUserID: "u1", UserID: "rec1", ExternalAccountID: "e1"}); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteBlinkApp(ctx, "b-app"); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("delete with links: %v", err)
		}
		if err := s.DeleteBlinkApp(ctx, "a-app"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteBlinkApp(ctx, "a-app"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("delete twice: %v", err)
		}
	})
}

func TestBlinkStartsSingleUse(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		clk := clock.NewFake(time.Now())
		s := openBlinkStore(t, backend, clk)
		mk := func(hash string, ttl time.Duration) {
			t.Helper()
			if err := s.CreateBlinkStart(ctx, &store.BlinkStart{TokenHash: hash, AppID: "app", BlinkUserID: "u1", AuthID: "a1", ExpiresAt: clk.Now().Add(ttl)}); err != nil {
				t.Fatal(err)
			}
		}
		mk("h1", time.Minute)
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := s.ConsumeBlinkStart(ctx, "h1")
				if err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
					if st.BlinkUserID != "u1" || st.AuthID != "a1" || st.AppID != "app" {
						t.Errorf("consumed start: %+v", st)
					}
				} else if !errors.Is(err, store.ErrNotFound) {
					t.Errorf("consume: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d concurrent consumers won, want 1", wins)
		}
		mk("h2", time.Minute)
		clk.Advance(2 * time.Minute)
		if _, err := s.ConsumeBlinkStart(ctx, "h2"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("expired start: %v", err)
		}
		if _, err := s.ConsumeBlinkStart(ctx, "unknown"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown start: %v", err)
		}
	})
}

func TestBlinkLinks(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		s := openBlinkStore(t, backend, nil)
		a := blinkApp("app")
		if err := s.CreateBlinkApp(ctx, a); err != nil {
			t.Fatal(err)
		}
		l, err := s.UpsertBlinkLink(ctx, &store.BlinkLink{AppID: a.ID, BlinkUserID: "u1", UserID: "rec1", ExternalAccountID: "e1"})
		if err != nil || l.State != store.BlinkLinkPending || l.ID == "" || l.BlinkLinkedAccountID != "" {
			t.Fatalf("new link: %+v %v", l, err)
		}
		again, err := s.UpsertBlinkLink(ctx, &store.BlinkLink{AppID: a.ID, BlinkUserID: "u1", UserID: "rec1", ExternalAccountID: "e1"})
		if err != nil || again.ID != l.ID {
			t.Fatalf("upsert again made another link: %+v %v", again, err)
		}
		if err := s.SetBlinkLinkLinked(ctx, l.ID, "la-1", 3, false); err != nil {
			t.Fatal(err)
		}
		found, err := s.FindBlinkLink(ctx, a.ID, "la-1")
		if err != nil || found.ID != l.ID || found.State != store.BlinkLinkLinked || found.PushedVersion != 3 {
			t.Fatalf("find: %+v %v", found, err)
		}
		if _, err := s.FindBlinkLink(ctx, "other-app", "la-1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("found under another app: %v", err)
		}
		if _, err := s.FindBlinkLink(ctx, a.ID, ""); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("empty id: %v", err)
		}
		// Blink's id is unique per app.
		l2, err := s.UpsertBlinkLink(ctx, &store.BlinkLink{AppID: a.ID, BlinkUserID: "u2", UserID: "rec2", ExternalAccountID: "e2"})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetBlinkLinkLinked(ctx, l2.ID, "la-1", 1, false); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("duplicate Blink id: %v", err)
		}
		if err := s.SetBlinkLinkPushed(ctx, l.ID, 4, true); err != nil {
			t.Fatal(err)
		}
		if err := s.SetBlinkLinkPushed(ctx, l2.ID, 4, true); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("pushed on a pending link: %v", err)
		}

		if err := s.MarkBlinkLinkDeleting(ctx, l.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkBlinkLinkDeleting(ctx, l.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("mark deleting twice: %v", err)
		}
		if err := s.SetBlinkLinkLinked(ctx, l.ID, "la-9", 5, false); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("linked while deleting: %v", err)
		}
		counts, err := s.CountBlinkLinks(ctx)
		if err != nil || counts[a.ID][store.BlinkLinkDeleting] != 1 || counts[a.ID][store.BlinkLinkPending] != 1 {
			t.Fatalf("counts: %v %v", counts, err)
		}
		// Reconnecting resets a deleting link.
		reset, err := s.UpsertBlinkLink(ctx, &store.BlinkLink{AppID: a.ID, BlinkUserID: "u1", UserID: "rec1", ExternalAccountID: "e1"})
		if err != nil || reset.ID != l.ID || reset.State != store.BlinkLinkPending || reset.BlinkLinkedAccountID != "" || reset.PushedVersion != 0 || reset.PushedReauth {
			t.Fatalf("reset: %+v %v", reset, err)
		}
		if ok, err := s.DeleteBlinkLink(ctx, l.ID, store.BlinkLinkDeleting); err != nil || ok {
			t.Fatalf("delete of a link no longer deleting: %v %v", ok, err)
		}
		if ok, err := s.DeleteBlinkLink(ctx, l.ID, store.BlinkLinkPending); err != nil || !ok {
			t.Fatalf("delete: %v %v", ok, err)
		}
		if _, err := s.GetBlinkLink(ctx, l.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("deleted link: %v", err)
		}

		// Keyset pagination.
		for _, u := range []string{"u3", "u4", "u5"} {
			if _, err := s.UpsertBlinkLink(ctx, &store.BlinkLink{AppID: a.ID, BlinkUserID: u, UserID: "rec-" + u, ExternalAccountID: "e"}); err != nil {
				t.Fatal(err)
			}
		}
		var all []store.BlinkLink
		after := ""
		for {
			page, err := s.ListBlinkLinks(ctx, store.BlinkLinkQuery{AppID: a.ID, AfterID: after, Limit: 2})
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, page...)
			if len(page) < 2 {
				break
			}
			after = page[len(page)-1].ID
		}
		if len(all) != 4 {
			t.Fatalf("paged links = %d, want 4", len(all))
		}
		if pending, _ := s.ListBlinkLinks(ctx, store.BlinkLinkQuery{State: store.BlinkLinkPending}); len(pending) != 4 {
			t.Fatalf("pending links = %d", len(pending))
		}
	})
}
