package storetest

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/connectd/connectd/core/store"
)

func mustEnqueue(t *testing.T, s store.Store, j *store.Job) *store.Job {
	t.Helper()
	got, created, err := s.EnqueueJob(t.Context(), j)
	if err != nil {
		t.Fatalf("EnqueueJob: %v", err)
	}
	if !created {
		t.Fatalf("EnqueueJob(%s/%s): created = false, want a new job", j.Kind, j.IdempotencyKey)
	}
	return got
}

func mustClaim(t *testing.T, s store.Store, kinds []string, owner string, lease time.Duration, limit int) []*store.Job {
	t.Helper()
	jobs, err := s.ClaimJobs(t.Context(), kinds, owner, lease, limit)
	if err != nil {
		t.Fatalf("ClaimJobs: %v", err)
	}
	return jobs
}

func jobIDs(jobs []*store.Job) []string {
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.ID
	}
	return ids
}

func mustGetJob(t *testing.T, s store.Store, id string) *store.Job {
	t.Helper()
	j, err := s.GetJob(t.Context(), id)
	if err != nil {
		t.Fatalf("GetJob: %v", err)
	}
	return j
}

func runJobs(t *testing.T, open Opener) {
	const lease = time.Minute

	parallel(t, "EnqueueDedupesByIdempotencyKey", func(t *testing.T) {
		s := open(t, fakeClock())
		first := mustEnqueue(t, s, &store.Job{Kind: "revoke", IdempotencyKey: "user-1", Payload: []byte("first"), ExpiresAt: start.Add(time.Hour), MaxAttempts: 5})
		if first.State != store.JobPending || first.Attempts != 0 || !first.NextAttemptAt.Equal(start) || first.ID == "" {
			t.Fatalf("new job: %+v", first)
		}
		again, created, err := s.EnqueueJob(t.Context(), &store.Job{Kind: "revoke", IdempotencyKey: "user-1", Payload: []byte("second"), ExpiresAt: start.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if created || again.ID != first.ID || string(again.Payload) != "first" || again.MaxAttempts != 5 {
			t.Fatalf("duplicate enqueue: created=%v id %s payload %q; want the existing job unchanged", created, again.ID, again.Payload)
		}
		otherKind := mustEnqueue(t, s, &store.Job{Kind: "callback", IdempotencyKey: "user-1", ExpiresAt: start.Add(time.Hour)})
		if otherKind.ID == first.ID {
			t.Fatal("the idempotency key must be scoped by kind")
		}
		// No key: never deduplicated.
		a := mustEnqueue(t, s, &store.Job{Kind: "revoke", ExpiresAt: start.Add(time.Hour)})
		b := mustEnqueue(t, s, &store.Job{Kind: "revoke", ExpiresAt: start.Add(time.Hour)})
		if a.ID == b.ID {
			t.Fatal("jobs without idempotency keys were merged")
		}
		got := mustGetJob(t, s, first.ID)
		if !reflect.DeepEqual(got, first) {
			t.Fatalf("GetJob:\n got  %+v\n want %+v", got, first)
		}
		_, err = s.GetJob(t.Context(), "5f0e0e0e-0000-4000-8000-000000000000")
		wantErr(t, "get unknown", err, store.ErrNotFound)
		if _, _, err := s.EnqueueJob(t.Context(), &store.Job{Kind: "x"}); err == nil {
			t.Fatal("a job without expiry was accepted")
		}
	})

	parallel(t, "ClaimDueKindsAndLimit", func(t *testing.T) {
		clk := fakeClock()
		s := open(t, clk)
		j1 := mustEnqueue(t, s, &store.Job{Kind: "a", Payload: []byte("p1"), ExpiresAt: start.Add(time.Hour)})
		j2 := mustEnqueue(t, s, &store.Job{Kind: "a", ExpiresAt: start.Add(time.Hour), NextAttemptAt: start.Add(time.Second)})
		later := mustEnqueue(t, s, &store.Job{Kind: "a", ExpiresAt: start.Add(time.Hour), NextAttemptAt: start.Add(time.Minute)})
		otherKind := mustEnqueue(t, s, &store.Job{Kind: "b", ExpiresAt: start.Add(time.Hour)})
		clk.Advance(2 * time.Second)
		got := mustClaim(t, s, []string{"a"}, "w1", lease, 1)
		if !reflect.DeepEqual(jobIDs(got), []string{j1.ID}) {
			t.Fatalf("limit 1 claimed %v, want the oldest due job %s", jobIDs(got), j1.ID)
		}
		if got[0].Attempts != 1 || string(got[0].Payload) != "p1" {
			t.Fatalf("claimed job: attempts %d payload %q", got[0].Attempts, got[0].Payload)
		}
		got = mustClaim(t, s, []string{"a"}, "w2", lease, 10)
		if !reflect.DeepEqual(jobIDs(got), []string{j2.ID}) {
			t.Fatalf("claimed %v, want only the due unleased %s (not %s, not yet due)", jobIDs(got), j2.ID, later.ID)
		}
		if got := mustClaim(t, s, []string{"a"}, "w3", lease, 10); len(got) != 0 {
			t.Fatalf("leased jobs claimed again: %v", jobIDs(got))
		}
		got = mustClaim(t, s, []string{"b", "c"}, "w3", lease, 10)
		if !reflect.DeepEqual(jobIDs(got), []string{otherKind.ID}) {
			t.Fatalf("kind filter: claimed %v", jobIDs(got))
		}
	})

	parallel(t, "ConcurrentClaimersAreExclusive", func(t *testing.T) {
		s := open(t, fakeClock())
		const jobs, workers = 40, 10
		for i := range jobs {
			mustEnqueue(t, s, &store.Job{Kind: "c", IdempotencyKey: fmt.Sprint(i), ExpiresAt: start.Add(time.Hour)})
		}
		var mu sync.Mutex
		seen := map[string]string{}
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				owner := fmt.Sprintf("worker-%d", w)
				for {
					got, err := s.ClaimJobs(t.Context(), []string{"c"}, owner, lease, 3)
					if err != nil {
						errs <- err
						return
					}
					if len(got) == 0 {
						return
					}
					mu.Lock()
					for _, j := range got {
						if prev, dup := seen[j.ID]; dup {
							errs <- fmt.Errorf("job %s claimed by %s and %s", j.ID, prev, owner)
						}
						seen[j.ID] = owner
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if len(seen) != jobs {
			t.Fatalf("%d jobs claimed, want all %d", len(seen), jobs)
		}
	})

	parallel(t, "DeadWorkerJobIsReclaimedAndCompleted", func(t *testing.T) {
		clk := fakeClock()
		s := open(t, clk)
		j := mustEnqueue(t, s, &store.Job{Kind: "k", Payload: []byte("work"), ExpiresAt: start.Add(time.Hour)})
		if got := mustClaim(t, s, []string{"k"}, "dead", lease, 1); len(got) != 1 {
			t.Fatal("first claim failed")
		}
		clk.Advance(lease - time.Millisecond)
		if got := mustClaim(t, s, []string{"k"}, "heir", lease, 1); len(got) != 0 {
			t.Fatal("claimed before the lease expired")
		}
		clk.Advance(2 * time.Millisecond)
		got := mustClaim(t, s, []string{"k"}, "heir", lease, 1)
		if len(got) != 1 || got[0].ID != j.ID || got[0].Attempts != 2 {
			t.Fatalf("reclaim after lease expiry: %+v", got)
		}
		wantErr(t, "complete by the dead worker", s.CompleteJob(t.Context(), j.ID, "dead", []byte("late")), store.ErrLeaseLost)
		wantErr(t, "retry by the dead worker", s.RetryJob(t.Context(), j.ID, "dead", "x", start.Add(time.Hour)), store.ErrLeaseLost)
		wantErr(t, "fail by the dead worker", s.FailJob(t.Context(), j.ID, "dead", "x"), store.ErrLeaseLost)
		clk.Advance(time.Second)
		if err := s.CompleteJob(t.Context(), j.ID, "heir", []byte("the result")); err != nil {
			t.Fatalf("complete: %v", err)
		}
		done := mustGetJob(t, s, j.ID)
		if done.State != store.JobDone || string(done.Result) != "the result" || done.DoneAt == nil || !done.DoneAt.Equal(clk.Now()) {
			t.Fatalf("completed job: %+v", done)
		}
		wantErr(t, "complete twice", s.CompleteJob(t.Context(), j.ID, "heir", nil), store.ErrLeaseLost)
		wantErr(t, "complete unknown", s.CompleteJob(t.Context(), "5f0e0e0e-0000-4000-8000-000000000000", "heir", nil), store.ErrNotFound)
		clk.Advance(2 * lease)
		if got := mustClaim(t, s, []string{"k"}, "x", lease, 1); len(got) != 0 {
			t.Fatal("a done job was claimed")
		}
	})

	parallel(t, "RetryWithBackoff", func(t *testing.T) {
		clk := fakeClock()
		s := open(t, clk)
		j := mustEnqueue(t, s, &store.Job{Kind: "k", ExpiresAt: start.Add(time.Hour)})
		mustClaim(t, s, []string{"k"}, "w", lease, 1)
		next := start.Add(30 * time.Second)
		if err := s.RetryJob(t.Context(), j.ID, "w", "upstream 503", next); err != nil {
			t.Fatalf("retry: %v", err)
		}
		got := mustGetJob(t, s, j.ID)
		if got.State != store.JobPending || got.LastError != "upstream 503" || !got.NextAttemptAt.Equal(next) || got.Attempts != 1 {
			t.Fatalf("after retry: %+v", got)
		}
		if c := mustClaim(t, s, []string{"k"}, "w", lease, 1); len(c) != 0 {
			t.Fatal("claimed before its next attempt time")
		}
		clk.Set(next)
		c := mustClaim(t, s, []string{"k"}, "w2", lease, 1)
		if len(c) != 1 || c[0].Attempts != 2 || c[0].LastError != "upstream 503" {
			t.Fatalf("claim at next attempt: %+v", c)
		}
	})

	parallel(t, "MaxAttemptsExhausted", func(t *testing.T) {
		clk := fakeClock()
		s := open(t, clk)
		j := mustEnqueue(t, s, &store.Job{Kind: "k", ExpiresAt: start.Add(time.Hour), MaxAttempts: 2})
		mustClaim(t, s, []string{"k"}, "w", lease, 1)
		if err := s.RetryJob(t.Context(), j.ID, "w", "e1", start); err != nil {
			t.Fatal(err)
		}
		mustClaim(t, s, []string{"k"}, "w", lease, 1)
		if err := s.RetryJob(t.Context(), j.ID, "w", "e2", start); err != nil {
			t.Fatal(err)
		}
		got := mustGetJob(t, s, j.ID)
		if got.State != store.JobFailed || got.Attempts != 2 || got.LastError != "e2" || got.DoneAt == nil {
			t.Fatalf("after the last allowed attempt: %+v", got)
		}
		// A worker that dies on its last attempt: failed at the next claim.
		d := mustEnqueue(t, s, &store.Job{Kind: "k", ExpiresAt: start.Add(time.Hour), MaxAttempts: 1})
		mustClaim(t, s, []string{"k"}, "dies", lease, 1)
		clk.Advance(2 * lease)
		if c := mustClaim(t, s, []string{"k"}, "w", lease, 1); len(c) != 0 {
			t.Fatalf("claimed a job past its max attempts: %+v", c)
		}
		if got := mustGetJob(t, s, d.ID); got.State != store.JobFailed {
			t.Fatalf("exhausted job state = %q, want failed", got.State)
		}
	})

	parallel(t, "ExpiryFails", func(t *testing.T) {
		clk := fakeClock()
		s := open(t, clk)
		never := mustEnqueue(t, s, &store.Job{Kind: "k", ExpiresAt: start.Add(time.Minute), NextAttemptAt: start.Add(2 * time.Minute)})
		retried := mustEnqueue(t, s, &store.Job{Kind: "k", ExpiresAt: start.Add(10 * time.Minute)})
		c := mustClaim(t, s, []string{"k"}, "w", lease, 10)
		if !reflect.DeepEqual(jobIDs(c), []string{retried.ID}) {
			t.Fatalf("claimed %v", jobIDs(c))
		}
		// A retry that could only run after expiry gives the job up now.
		if err := s.RetryJob(t.Context(), retried.ID, "w", "boom", start.Add(10*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if got := mustGetJob(t, s, retried.ID); got.State != store.JobFailed || got.LastError != "boom" {
			t.Fatalf("retry past expiry: %+v", got)
		}
		clk.Advance(3 * time.Minute)
		if c := mustClaim(t, s, []string{"k"}, "w", lease, 10); len(c) != 0 {
			t.Fatalf("expired job claimed: %v", jobIDs(c))
		}
		got := mustGetJob(t, s, never.ID)
		if got.State != store.JobFailed || got.LastError != "expired" || got.DoneAt == nil {
			t.Fatalf("expired job: %+v", got)
		}
	})

	parallel(t, "FailJob", func(t *testing.T) {
		s := open(t, fakeClock())
		j := mustEnqueue(t, s, &store.Job{Kind: "k", ExpiresAt: start.Add(time.Hour)})
		mustClaim(t, s, []string{"k"}, "w", lease, 1)
		if err := s.FailJob(t.Context(), j.ID, "w", "permanent: 400"); err != nil {
			t.Fatal(err)
		}
		got := mustGetJob(t, s, j.ID)
		if got.State != store.JobFailed || got.LastError != "permanent: 400" || got.DoneAt == nil {
			t.Fatalf("failed job: %+v", got)
		}
		wantErr(t, "fail unknown", s.FailJob(t.Context(), "5f0e0e0e-0000-4000-8000-000000000000", "w", ""), store.ErrNotFound)
	})

	parallel(t, "CountJobs", func(t *testing.T) {
		s := open(t, fakeClock())
		for i := range 3 {
			mustEnqueue(t, s, &store.Job{Kind: "a", IdempotencyKey: fmt.Sprint(i), ExpiresAt: start.Add(time.Hour)})
		}
		mustEnqueue(t, s, &store.Job{Kind: "b", ExpiresAt: start.Add(time.Hour)})
		c := mustClaim(t, s, []string{"a"}, "w", lease, 2)
		if err := s.CompleteJob(t.Context(), c[0].ID, "w", nil); err != nil {
			t.Fatal(err)
		}
		if err := s.FailJob(t.Context(), c[1].ID, "w", "x"); err != nil {
			t.Fatal(err)
		}
		got, err := s.CountJobs(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]map[string]int{"a": {store.JobPending: 1, store.JobDone: 1, store.JobFailed: 1}, "b": {store.JobPending: 1}}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("CountJobs = %v, want %v", got, want)
		}
	})
}

func runKeys(t *testing.T, open Opener) {
	s := open(t, fakeClock())
	ctx := t.Context()
	if got, err := s.ListKeyChecks(ctx, "encryption"); err != nil || len(got) != 0 {
		t.Fatalf("empty ring: %v %v", got, err)
	}
	for _, kc := range []store.KeyCheck{
		{Ring: "encryption", KeyID: 7, Check: []byte("check-7")},
		{Ring: "encryption", KeyID: 2, Check: []byte("check-2")},
		{Ring: "session", KeyID: 7, Check: []byte("mac-7")},
		{Ring: "encryption", KeyID: 4294967295, Check: []byte("check-max")},
	} {
		if err := s.PutKeyCheck(ctx, kc); err != nil {
			t.Fatalf("PutKeyCheck: %v", err)
		}
	}
	if err := s.PutKeyCheck(ctx, store.KeyCheck{Ring: "encryption", KeyID: 2, Check: []byte("check-2b")}); err != nil {
		t.Fatalf("replace: %v", err)
	}
	got, err := s.ListKeyChecks(ctx, "encryption")
	if err != nil {
		t.Fatal(err)
	}
	want := []store.KeyCheck{
		{Ring: "encryption", KeyID: 2, Check: []byte("check-2b")},
		{Ring: "encryption", KeyID: 7, Check: []byte("check-7")},
		{Ring: "encryption", KeyID: 4294967295, Check: []byte("check-max")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ListKeyChecks = %+v, want %+v", got, want)
	}
	if err := s.DeleteKeyCheck(ctx, "encryption", 7); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteKeyCheck(ctx, "encryption", 12345); err != nil {
		t.Fatalf("deleting a missing check: %v", err)
	}
	got, _ = s.ListKeyChecks(ctx, "encryption")
	if len(got) != 2 || got[0].KeyID != 2 || got[1].KeyID != 4294967295 {
		t.Fatalf("after delete: %+v", got)
	}
	sess, _ := s.ListKeyChecks(ctx, "session")
	if len(sess) != 1 || string(sess[0].Check) != "mac-7" {
		t.Fatalf("session ring: %+v", sess)
	}
}

func runJanitor(t *testing.T, open Opener) {
	clk := fakeClock()
	s := open(t, clk)
	ctx := t.Context()
	const retention = 24 * time.Hour
	now := start.Add(48 * time.Hour) // the janitor runs then

	type flowCase struct {
		name string
		f    *store.OAuthFlow
		use  bool
		keep bool
	}
	// Flow and session times are absolute; create everything at start.
	flows := []flowCase{
		{"expired long ago", &store.OAuthFlow{ExpiresAt: now.Add(-2 * time.Hour)}, false, false},
		{"expired just now", &store.OAuthFlow{ExpiresAt: now.Add(-time.Minute)}, false, true},
		{"used long ago", &store.OAuthFlow{ExpiresAt: now.Add(time.Hour)}, true, false},
		{"live", &store.OAuthFlow{ExpiresAt: now.Add(time.Hour)}, false, true},
	}
	for _, fc := range flows {
		if err := s.CreateFlow(ctx, fc.f); err != nil {
			t.Fatal(err)
		}
		if fc.use {
			if _, err := s.ConsumeFlow(ctx, fc.f.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	u := mustUpsert(t, s, sampleUser(1))
	expired := &store.Session{Kind: store.SessionAppConnect, UserID: u.ID, ExpiresAt: now.Add(-time.Second)}
	live := &store.Session{Kind: store.SessionAppConnect, UserID: u.ID, ExpiresAt: now.Add(time.Hour)}
	revokedLive := &store.Session{Kind: store.SessionAppConnect, UserID: u.ID, ExpiresAt: now.Add(time.Hour)}
	for _, sess := range []*store.Session{expired, live, revokedLive} {
		if err := s.CreateSession(ctx, sess); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RevokeSession(ctx, revokedLive.ID); err != nil {
		t.Fatal(err)
	}
	// Jobs: finished at start (old) or at now-1h (recent).
	oldDone := mustEnqueue(t, s, &store.Job{Kind: "j", IdempotencyKey: "old-done", ExpiresAt: now.Add(time.Hour)})
	oldFailed := mustEnqueue(t, s, &store.Job{Kind: "j", IdempotencyKey: "old-failed", ExpiresAt: now.Add(time.Hour)})
	mustClaim(t, s, []string{"j"}, "w", time.Minute, 2)
	if err := s.CompleteJob(ctx, oldDone.ID, "w", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.FailJob(ctx, oldFailed.ID, "w", "x"); err != nil {
		t.Fatal(err)
	}
	oldPending := mustEnqueue(t, s, &store.Job{Kind: "p", ExpiresAt: now.Add(time.Hour)})
	clk.Set(now.Add(-time.Hour))
	recentDone := mustEnqueue(t, s, &store.Job{Kind: "j", IdempotencyKey: "recent", ExpiresAt: now.Add(time.Hour)})
	mustClaim(t, s, []string{"j"}, "w", time.Minute, 1)
	if err := s.CompleteJob(ctx, recentDone.ID, "w", nil); err != nil {
		t.Fatal(err)
	}

	clk.Set(now)
	n, err := s.PurgeExpired(ctx, retention)
	if err != nil {
		t.Fatalf("PurgeExpired: %v", err)
	}
	// flows: 2; sessions: 1; jobs: 2
	if n != 5 {
		t.Fatalf("PurgeExpired deleted %d rows, want 5", n)
	}
	raw := rawAccess(t, s)
	for _, fc := range flows {
		_, err := raw.RawColumn(ctx, "oauth_flows", "pkce_verifier", fc.f.ID)
		if exists := err == nil; exists != fc.keep {
			t.Errorf("flow %q: exists=%v, want %v (err %v)", fc.name, exists, fc.keep, err)
		}
	}
	_, err = s.GetSession(ctx, expired.ID)
	wantErr(t, "expired session", err, store.ErrNotFound)
	for _, sess := range []*store.Session{live, revokedLive} {
		if _, err := s.GetSession(ctx, sess.ID); err != nil {
			t.Errorf("live session deleted: %v", err)
		}
	}
	for _, id := range []string{oldDone.ID, oldFailed.ID} {
		_, err := s.GetJob(ctx, id)
		wantErr(t, "old finished job", err, store.ErrNotFound)
	}
	for _, id := range []string{recentDone.ID, oldPending.ID} {
		if _, err := s.GetJob(ctx, id); err != nil {
			t.Errorf("job %s deleted: %v", id, err)
		}
	}
	if _, err := s.GetUser(ctx, u.ID); err != nil {
		t.Fatalf("the janitor touched users: %v", err)
	}
	n, err = s.PurgeExpired(ctx, retention)
	if err != nil || n != 0 {
		t.Fatalf("second purge: %d %v, want 0 (idempotent)", n, err)
	}
}
