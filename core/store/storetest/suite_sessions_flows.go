package storetest

import (
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/connectd/connectd/core/store"
)

func runSessions(t *testing.T, open Opener) {
	parallel(t, "CreateGetRoundTrip", func(t *testing.T) {
		s := open(t, fakeClock())
		u := mustUpsert(t, s, sampleUser(1))
		in := &store.Session{
			Kind:      store.SessionAppConnect,
			UserID:    u.ID,
			Host:      store.HostIdentity{Kind: "ringcentral", AccountID: "acct-1", UserID: "ext-1"},
			Subject:   "subject-1",
			ExpiresAt: start.Add(24 * time.Hour),
		}
		if err := s.CreateSession(t.Context(), in); err != nil {
			t.Fatalf("CreateSession: %v", err)
		}
		if in.ID == "" || !in.CreatedAt.Equal(start) {
			t.Fatalf("CreateSession must fill ID and CreatedAt: %q %v", in.ID, in.CreatedAt)
		}
		got, err := s.GetSession(t.Context(), in.ID)
		if err != nil {
			t.Fatalf("GetSession: %v", err)
		}
		want := *in
		if !reflect.DeepEqual(got, &want) {
			t.Fatalf("session round trip:\n got  %+v\n want %+v", got, &want)
		}
	})

	parallel(t, "PluginSessionWithoutUser", func(t *testing.T) {
		s := open(t, fakeClock())
		in := &store.Session{ID: "plugin-sid-1", Kind: store.SessionPlugin, Subject: "plugin-x",
			Host: store.HostIdentity{Kind: "ringcentral", AccountID: "a"}, ExpiresAt: start.Add(time.Hour)}
		if err := s.CreateSession(t.Context(), in); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetSession(t.Context(), "plugin-sid-1")
		if err != nil || got.UserID != "" || got.Subject != "plugin-x" || got.Kind != store.SessionPlugin {
			t.Fatalf("GetSession: %+v %v", got, err)
		}
	})

	parallel(t, "ExtendSession", func(t *testing.T) {
		s := open(t, fakeClock())
		in := &store.Session{ID: "extend-sid-1", Kind: store.SessionAppConnect, ExpiresAt: start.Add(time.Hour)}
		if err := s.CreateSession(t.Context(), in); err != nil {
			t.Fatal(err)
		}
		later := start.Add(14 * 24 * time.Hour)
		if err := s.ExtendSession(t.Context(), in.ID, later); err != nil {
			t.Fatalf("ExtendSession: %v", err)
		}
		got, err := s.GetSession(t.Context(), in.ID)
		if err != nil || !got.ExpiresAt.Equal(later) {
			t.Fatalf("after extend: %+v %v", got, err)
		}
		if err := s.RevokeSession(t.Context(), in.ID); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "extend revoked", s.ExtendSession(t.Context(), in.ID, later.Add(time.Hour)), store.ErrNotFound)
		wantErr(t, "extend unknown", s.ExtendSession(t.Context(), "nope", later), store.ErrNotFound)
	})

	parallel(t, "Errors", func(t *testing.T) {
		s := open(t, fakeClock())
		_, err := s.GetSession(t.Context(), "nope")
		wantErr(t, "get unknown", err, store.ErrNotFound)
		wantErr(t, "revoke unknown", s.RevokeSession(t.Context(), "nope"), store.ErrNotFound)
		in := &store.Session{ID: "dup", Kind: store.SessionIdentity, ExpiresAt: start.Add(time.Hour)}
		if err := s.CreateSession(t.Context(), in); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "duplicate id", s.CreateSession(t.Context(), &store.Session{ID: "dup", Kind: store.SessionIdentity, ExpiresAt: start.Add(time.Hour)}), store.ErrConflict)
		err = s.CreateSession(t.Context(), &store.Session{Kind: store.SessionAppConnect, UserID: "5f0e0e0e-0000-4000-8000-000000000000", ExpiresAt: start.Add(time.Hour)})
		wantErr(t, "unknown user", err, store.ErrNotFound)
		if err := s.CreateSession(t.Context(), &store.Session{Kind: store.SessionAppConnect}); err == nil {
			t.Fatal("session without expiry accepted")
		}
	})

	parallel(t, "Revoke", func(t *testing.T) {
		clk := fakeClock()
		s := open(t, clk)
		u := mustUpsert(t, s, sampleUser(1))
		other := mustUpsert(t, s, sampleUser(2))
		var mine []string
		for range 3 {
			sess := &store.Session{Kind: store.SessionAppConnect, UserID: u.ID, ExpiresAt: start.Add(time.Hour)}
			if err := s.CreateSession(t.Context(), sess); err != nil {
				t.Fatal(err)
			}
			mine = append(mine, sess.ID)
		}
		theirs := &store.Session{Kind: store.SessionAppConnect, UserID: other.ID, ExpiresAt: start.Add(time.Hour)}
		if err := s.CreateSession(t.Context(), theirs); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Minute)
		if err := s.RevokeSession(t.Context(), mine[0]); err != nil {
			t.Fatal(err)
		}
		got, _ := s.GetSession(t.Context(), mine[0])
		if got.RevokedAt == nil || !got.RevokedAt.Equal(start.Add(time.Minute)) {
			t.Fatalf("revoked at = %v, want %v", got.RevokedAt, start.Add(time.Minute))
		}
		clk.Advance(time.Minute)
		if err := s.RevokeSession(t.Context(), mine[0]); err != nil {
			t.Fatalf("revoking twice: %v", err)
		}
		got, _ = s.GetSession(t.Context(), mine[0])
		if !got.RevokedAt.Equal(start.Add(time.Minute)) {
			t.Fatal("revoking again moved the revocation time")
		}
		n, err := s.RevokeUserSessions(t.Context(), u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Fatalf("RevokeUserSessions revoked %d, want the 2 still live", n)
		}
		for _, id := range mine {
			got, _ := s.GetSession(t.Context(), id)
			if got.RevokedAt == nil {
				t.Fatalf("session %s of the user not revoked", id)
			}
		}
		got, _ = s.GetSession(t.Context(), theirs.ID)
		if got.RevokedAt != nil {
			t.Fatal("another user's session was revoked")
		}
	})
}

func sampleFlow() *store.OAuthFlow {
	return &store.OAuthFlow{
		Platform:     "clio",
		Purpose:      store.PurposeConnect,
		Surface:      "plugin",
		Hostname:     "app.clio.com",
		RedirectURI:  "https://connectd.example/oauth/callback",
		PKCEVerifier: "pkce-verifier-0123456789-abcdefghijklmnopqrstuvwxyz",
		OAuthAppRef:  "app-1",
		Host:         store.HostIdentity{Kind: "ringcentral", AccountID: "acct-1", UserID: "ext-1"},
		BindingHash:  "binding-hash",
		ReturnTo:     "https://app.example/done",
		Data:         map[string]string{"plugin": "p1"},
		ExpiresAt:    start.Add(10 * time.Minute),
	}
}

func runFlows(t *testing.T, open Opener) {
	parallel(t, "CreateGetConsume", func(t *testing.T) {
		clk := fakeClock()
		s := open(t, clk)
		in := sampleFlow()
		if err := s.CreateFlow(t.Context(), in); err != nil {
			t.Fatalf("CreateFlow: %v", err)
		}
		if len(in.ID) < 22 || !in.CreatedAt.Equal(start) {
			t.Fatalf("CreateFlow must fill a >= 128-bit ID and CreatedAt: %q %v", in.ID, in.CreatedAt)
		}
		got, err := s.GetFlow(t.Context(), in.ID)
		if err != nil {
			t.Fatalf("GetFlow: %v", err)
		}
		if !reflect.DeepEqual(got, in) {
			t.Fatalf("flow round trip:\n got  %+v\n want %+v", got, in)
		}
		if _, err := s.GetFlow(t.Context(), in.ID); err != nil {
			t.Fatalf("GetFlow consumed the flow: %v", err)
		}
		clk.Advance(time.Second)
		used, err := s.ConsumeFlow(t.Context(), in.ID)
		if err != nil {
			t.Fatalf("ConsumeFlow: %v", err)
		}
		if used.PKCEVerifier != in.PKCEVerifier || used.UsedAt == nil || !used.UsedAt.Equal(start.Add(time.Second)) {
			t.Fatalf("consumed flow: verifier ok=%v used at %v", used.PKCEVerifier == in.PKCEVerifier, used.UsedAt)
		}
		_, err = s.ConsumeFlow(t.Context(), in.ID)
		wantErr(t, "second consume", err, store.ErrNotFound)
		_, err = s.GetFlow(t.Context(), in.ID)
		wantErr(t, "get after consume", err, store.ErrNotFound)
	})

	parallel(t, "Expiry", func(t *testing.T) {
		clk := fakeClock()
		s := open(t, clk)
		a, b := sampleFlow(), sampleFlow()
		for _, f := range []*store.OAuthFlow{a, b} {
			if err := s.CreateFlow(t.Context(), f); err != nil {
				t.Fatal(err)
			}
		}
		clk.Set(a.ExpiresAt.Add(-time.Millisecond))
		if _, err := s.GetFlow(t.Context(), a.ID); err != nil {
			t.Fatalf("1ms before expiry: %v", err)
		}
		clk.Set(a.ExpiresAt)
		_, err := s.GetFlow(t.Context(), a.ID)
		wantErr(t, "get at expiry", err, store.ErrNotFound)
		_, err = s.ConsumeFlow(t.Context(), b.ID)
		wantErr(t, "consume at expiry", err, store.ErrNotFound)
	})

	parallel(t, "ConcurrentConsumeOneWinner", func(t *testing.T) {
		s := open(t, fakeClock())
		f := sampleFlow()
		if err := s.CreateFlow(t.Context(), f); err != nil {
			t.Fatal(err)
		}
		const n = 20
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.ConsumeFlow(t.Context(), f.ID)
			}()
		}
		wg.Wait()
		wins := 0
		for i, err := range errs {
			switch {
			case err == nil:
				wins++
			case errors.Is(err, store.ErrNotFound):
			default:
				t.Fatalf("consumer %d: %v", i, err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d consumers won a single-use flow, want exactly 1", wins)
		}
	})

	parallel(t, "Errors", func(t *testing.T) {
		s := open(t, fakeClock())
		_, err := s.GetFlow(t.Context(), "unknown-state-0123456789abcdef")
		wantErr(t, "get unknown", err, store.ErrNotFound)
		_, err = s.ConsumeFlow(t.Context(), "unknown-state-0123456789abcdef")
		wantErr(t, "consume unknown", err, store.ErrNotFound)
		f := sampleFlow()
		f.ID = "caller-chosen-state-0123456789abcdef"
		if err := s.CreateFlow(t.Context(), f); err != nil {
			t.Fatal(err)
		}
		dup := sampleFlow()
		dup.ID = f.ID
		wantErr(t, "duplicate id", s.CreateFlow(t.Context(), dup), store.ErrConflict)
		short := sampleFlow()
		short.ID = "short"
		if err := s.CreateFlow(t.Context(), short); err == nil {
			t.Fatal("a guessable (short) flow id was accepted")
		}
	})
}
