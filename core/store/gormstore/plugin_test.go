package gormstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
)

func TestPluginTasks(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		clk := clock.NewFake(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
		s := storetest.OpenStore(t, backend, clk)
		newTask := func(key string) *store.PluginTask {
			return &store.PluginTask{PluginID: "dropbox", OwnerKey: "bearer:s1", TaskKey: key, UserID: "u1",
				Host: store.HostIdentity{Kind: "ringcentral", AccountID: "acct-1"}, Payload: []byte(`{"data":{"note":"secret note"}}`),
				CallbackURL: "https://x.ringcentral.com/cb", Contract: "b", ExpiresAt: clk.Now().Add(7 * 24 * time.Hour)}
		}

		t1, created, err := s.CreatePluginTask(ctx, newTask("ac-1"))
		if err != nil || !created || t1.State != store.TaskAccepted || string(t1.Payload) != `{"data":{"note":"secret note"}}` || t1.Host.AccountID != "acct-1" {
			t.Fatalf("create = %+v, %v, %v", t1, created, err)
		}
		again, created, err := s.CreatePluginTask(ctx, newTask("ac-1"))
		if err != nil || created || again.ID != t1.ID {
			t.Fatalf("same (plugin, owner, key) must return the existing task: %+v %v %v", again, created, err)
		}
		other := newTask("ac-1")
		other.OwnerKey = "bearer:s2"
		t2, created, err := s.CreatePluginTask(ctx, other)
		if err != nil || !created || t2.ID == t1.ID {
			t.Fatalf("another owner's key is another task: %+v %v %v", t2, created, err)
		}

		if err := s.MarkPluginTaskRunning(ctx, t1.ID); err != nil {
			t.Fatal(err)
		}
		got, err := s.SavePluginTaskOutcome(ctx, t1.ID, true, "saved", []byte(`{"note":"n"}`))
		if err != nil || !got.Processed || !got.Successful || got.Message != "saved" || string(got.Result) != `{"note":"n"}` || got.State != store.TaskRunning {
			t.Fatalf("outcome = %+v, %v", got, err)
		}
		// A second outcome (a duplicate run) does not replace the first.
		got, err = s.SavePluginTaskOutcome(ctx, t1.ID, false, "other", nil)
		if err != nil || !got.Successful || got.Message != "saved" {
			t.Fatalf("second outcome replaced the first: %+v, %v", got, err)
		}
		if err := s.NotePluginTaskAttempt(ctx, t1.ID, "callback answered 503"); err != nil {
			t.Fatal(err)
		}
		if err := s.FinishPluginTask(ctx, t1.ID, store.TaskDelivered, ""); err != nil {
			t.Fatal(err)
		}
		if err := s.FinishPluginTask(ctx, t1.ID, store.TaskFailed, "late"); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("finishing a final task: %v, want ErrConflict", err)
		}
		if err := s.MarkPluginTaskRunning(ctx, t1.ID); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("running a final task: %v, want ErrConflict", err)
		}
		if err := s.MarkPluginTaskRunning(ctx, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown task: %v", err)
		}
		got, _ = s.GetPluginTask(ctx, t1.ID)
		if got.State != store.TaskDelivered || got.Attempts != 1 || got.LastError != "callback answered 503" || got.DoneAt == nil {
			t.Fatalf("delivered task = %+v", got)
		}

		// Expiry by the (injected) database clock.
		clk.Advance(7*24*time.Hour + time.Second)
		n, err := s.ExpirePluginTasks(ctx)
		if err != nil || n != 1 {
			t.Fatalf("expired %d, %v; want 1 (t2)", n, err)
		}
		if got, _ := s.GetPluginTask(ctx, t2.ID); got.State != store.TaskExpired {
			t.Fatalf("t2 = %s", got.State)
		}
		st, err := s.PluginTaskStats(ctx)
		if err != nil || st.ByState[store.TaskDelivered] != 1 || st.ByState[store.TaskExpired] != 1 || !st.OldestPending.IsZero() {
			t.Fatalf("stats = %+v, %v", st, err)
		}
		t3, _, _ := s.CreatePluginTask(ctx, newTask("ac-3"))
		if st, _ := s.PluginTaskStats(ctx); st.ByState[store.TaskAccepted] != 1 || !st.OldestPending.Equal(t3.CreatedAt) {
			t.Fatalf("stats with a pending task = %+v (created %v)", st, t3.CreatedAt)
		}
	})
}

func TestPluginTaskCreateConcurrent(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		s := storetest.OpenStore(t, backend, nil)
		var wg sync.WaitGroup
		ids := make(chan string, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tk, _, err := s.CreatePluginTask(ctx, &store.PluginTask{PluginID: "p", OwnerKey: "o", TaskKey: "same",
					Contract: "b", ExpiresAt: time.Now().Add(time.Hour)})
				if err != nil {
					t.Error(err)
					return
				}
				ids <- tk.ID
			}()
		}
		wg.Wait()
		close(ids)
		distinct := map[string]bool{}
		for id := range ids {
			distinct[id] = true
		}
		if len(distinct) != 1 {
			t.Fatalf("concurrent submissions of one asyncTaskId made %d tasks", len(distinct))
		}
	})
}

func TestPluginLoginsInstallsLicenses(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		s := storetest.OpenStore(t, backend, nil)

		if _, err := s.GetPluginLogin(ctx, "dropbox", "o1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("missing login: %v", err)
		}
		if prev, err := s.PutPluginLogin(ctx, "dropbox", "o1", "u1"); err != nil || prev != "" {
			t.Fatalf("put = %q, %v", prev, err)
		}
		if prev, err := s.PutPluginLogin(ctx, "dropbox", "o1", "u2"); err != nil || prev != "u1" {
			t.Fatalf("replace = %q, %v", prev, err)
		}
		if pl, err := s.GetPluginLogin(ctx, "dropbox", "o1"); err != nil || pl.UserID != "u2" {
			t.Fatalf("get = %+v, %v", pl, err)
		}
		if _, err := s.GetPluginLogin(ctx, "other", "o1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("logins are per plugin: %v", err)
		}
		if pl, err := s.DeletePluginLogin(ctx, "dropbox", "o1"); err != nil || pl.UserID != "u2" {
			t.Fatalf("delete = %+v, %v", pl, err)
		}
		if _, err := s.DeletePluginLogin(ctx, "dropbox", "o1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}

		acct := store.HostIdentity{Kind: "ringcentral", AccountID: "acct-1"}
		for _, sid := range []string{"s1", "s2"} {
			if err := s.AddPluginInstall(ctx, &store.PluginInstall{PluginID: "redact", Host: acct, SessionID: sid}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.AddPluginInstall(ctx, &store.PluginInstall{PluginID: "redact", Host: acct, SessionID: "s1"}); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("duplicate bearer session: %v", err)
		}
		ins, err := s.ListPluginInstalls(ctx, "redact", acct)
		if err != nil || len(ins) != 2 {
			t.Fatalf("installs = %+v, %v", ins, err)
		}
		if ins, _ := s.ListPluginInstalls(ctx, "redact", store.HostIdentity{Kind: "operator", AccountID: "acct-1"}); len(ins) != 0 {
			t.Fatalf("host kinds never meet: %+v", ins)
		}

		until := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
		l := &store.License{PluginID: "redact", HostKind: "ringcentral", HostAccountID: "acct-1", Valid: true, Description: "Team", ValidUntil: &until, SetBy: "ops"}
		if err := s.PutLicense(ctx, l); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetLicense(ctx, "redact", "ringcentral", "acct-1")
		if err != nil || !got.Valid || got.Description != "Team" || got.ValidUntil == nil || !got.ValidUntil.Equal(until) || got.SetBy != "ops" {
			t.Fatalf("licence = %+v, %v", got, err)
		}
		l.Valid, l.ValidUntil, l.ErrorMessage = false, nil, "Payment overdue"
		if err := s.PutLicense(ctx, l); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.GetLicense(ctx, "redact", "ringcentral", "acct-1"); got.Valid || got.ValidUntil != nil || got.ErrorMessage != "Payment overdue" {
			t.Fatalf("replaced licence = %+v", got)
		}
		if _, err := s.GetLicense(ctx, "redact", "operator", "acct-1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("other host kind: %v", err)
		}
		_ = s.PutLicense(ctx, &store.License{PluginID: "dropbox", HostKind: "ringcentral", HostAccountID: "acct-9", Valid: true})
		if all, _ := s.ListLicenses(ctx, ""); len(all) != 2 {
			t.Fatalf("list all = %+v", all)
		}
		if some, _ := s.ListLicenses(ctx, "dropbox"); len(some) != 1 || some[0].HostAccountID != "acct-9" {
			t.Fatalf("list dropbox = %+v", some)
		}
		if err := s.DeleteLicense(ctx, "dropbox", "ringcentral", "acct-9"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteLicense(ctx, "dropbox", "ringcentral", "acct-9"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
	})
}

func TestPluginTaskPayloadSealed(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		url := storetest.NewURL(t, backend)
		s := storetest.OpenStoreURL(t, url, nil)
		tk, _, err := s.CreatePluginTask(ctx, &store.PluginTask{PluginID: "p", OwnerKey: "o", Contract: "a",
			Payload: []byte(`{"note":"call jane@example.com"}`), ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		// Another key ring cannot open the payload: it is sealed at rest.
		other := storetest.OpenStoreURL(t, url, nil)
		if _, err := other.GetPluginTask(ctx, tk.ID); !errors.Is(err, store.ErrDecrypt) {
			t.Fatalf("read with another key: %v, want ErrDecrypt", err)
		}
	})
}
