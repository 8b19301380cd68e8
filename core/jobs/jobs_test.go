package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/jobs"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
)

var start = time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)

func enqueue(t *testing.T, s store.Jobs, j *store.Job) *store.Job {
	t.Helper()
	if j.ExpiresAt.IsZero() {
		j.ExpiresAt = start.Add(24 * time.Hour)
	}
	got, _, err := s.EnqueueJob(t.Context(), j)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func getJob(t *testing.T, s store.Jobs, id string) *store.Job {
	t.Helper()
	j, err := s.GetJob(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// fixedBackoff makes retry times exact for assertions.
func fixedBackoff(attempt int) time.Duration { return time.Duration(attempt) * time.Minute }

func TestRunOnceOutcomes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		clk := clock.NewFake(start)
		s := storetest.OpenStore(t, backend, clk)
		r := jobs.NewRunner(s, storetest.TestLogger(t), jobs.RunnerOptions{Clock: clk, Backoff: fixedBackoff, Lease: time.Minute})

		var calls sync.Map // job id -> *atomic.Int32
		count := func(id string) int32 {
			v, _ := calls.LoadOrStore(id, new(atomic.Int32))
			return v.(*atomic.Int32).Load()
		}
		r.Handle("echo", func(ctx context.Context, j *store.Job) ([]byte, error) {
			v, _ := calls.LoadOrStore(j.ID, new(atomic.Int32))
			n := v.(*atomic.Int32).Add(1)
			if _, ok := ctx.Deadline(); !ok {
				return nil, jobs.Permanent(errors.New("handler context has no deadline"))
			}
			switch string(j.Payload) {
			case "ok":
				return []byte("result:" + string(j.Payload)), nil
			case "flaky":
				if n == 1 {
					return nil, errors.New("upstream 503")
				}
				return []byte("second time lucky"), nil
			case "bad":
				return nil, jobs.Permanent(errors.New("upstream 400"))
			case "panic":
				panic("boom")
			}
			return nil, fmt.Errorf("unknown payload %q", j.Payload)
		})
		ok := enqueue(t, s, &store.Job{Kind: "echo", Payload: []byte("ok")})
		flaky := enqueue(t, s, &store.Job{Kind: "echo", Payload: []byte("flaky")})
		bad := enqueue(t, s, &store.Job{Kind: "echo", Payload: []byte("bad")})
		pan := enqueue(t, s, &store.Job{Kind: "echo", Payload: []byte("panic")})
		other := enqueue(t, s, &store.Job{Kind: "not-registered", Payload: []byte("ok")})

		n, err := r.RunOnce(t.Context())
		if err != nil || n != 4 {
			t.Fatalf("RunOnce = %d, %v; want 4 jobs run", n, err)
		}
		if j := getJob(t, s, ok.ID); j.State != store.JobDone || string(j.Result) != "result:ok" {
			t.Fatalf("ok job: %+v", j)
		}
		if j := getJob(t, s, flaky.ID); j.State != store.JobPending || j.LastError != "upstream 503" || !j.NextAttemptAt.Equal(start.Add(time.Minute)) {
			t.Fatalf("flaky job after one failure: %+v", j)
		}
		if j := getJob(t, s, bad.ID); j.State != store.JobFailed || j.LastError != "upstream 400" || j.Attempts != 1 {
			t.Fatalf("permanent failure: %+v", j)
		}
		if j := getJob(t, s, pan.ID); j.State != store.JobPending || j.LastError != "jobs: handler panicked: boom" {
			t.Fatalf("panicking job: %+v", j)
		}
		if j := getJob(t, s, other.ID); j.State != store.JobPending || j.Attempts != 0 {
			t.Fatalf("a job of an unregistered kind was claimed: %+v", j)
		}

		// Nothing is due until the backoff has passed.
		if n, err := r.RunOnce(t.Context()); err != nil || n != 0 {
			t.Fatalf("RunOnce before backoff = %d, %v", n, err)
		}
		clk.Advance(time.Minute)
		if n, err := r.RunOnce(t.Context()); err != nil || n != 2 {
			t.Fatalf("RunOnce after backoff = %d, %v; want flaky and panic again", n, err)
		}
		if j := getJob(t, s, flaky.ID); j.State != store.JobDone || j.Attempts != 2 || string(j.Result) != "second time lucky" {
			t.Fatalf("flaky job after retry: %+v", j)
		}
		if j := getJob(t, s, pan.ID); j.Attempts != 2 || !j.NextAttemptAt.Equal(clk.Now().Add(2*time.Minute)) {
			t.Fatalf("second backoff must use attempt 2: %+v", j)
		}
		if count(ok.ID) != 1 || count(bad.ID) != 1 {
			t.Fatal("finished jobs ran again")
		}
	})
}

func TestLostLeaseIsNotRecorded(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		clk := clock.NewFake(start)
		s := storetest.OpenStore(t, backend, clk)
		const lease = time.Minute
		r := jobs.NewRunner(s, storetest.TestLogger(t), jobs.RunnerOptions{Owner: "slow", Clock: clk, Lease: lease})
		j := enqueue(t, s, &store.Job{Kind: "slow"})
		r.Handle("slow", func(ctx context.Context, job *store.Job) ([]byte, error) {
			// The worker stalls past its lease and another takes over.
			clk.Advance(2 * lease)
			if got, err := s.ClaimJobs(ctx, []string{"slow"}, "heir", lease, 1); err != nil || len(got) != 1 {
				return nil, fmt.Errorf("takeover: %v %d", err, len(got))
			}
			return []byte("stale result"), nil
		})
		if n, err := r.RunOnce(t.Context()); err != nil || n != 1 {
			t.Fatalf("RunOnce = %d, %v", n, err)
		}
		got := getJob(t, s, j.ID)
		if got.State != store.JobPending || got.Attempts != 2 || got.Result != nil {
			t.Fatalf("the stale worker's outcome was recorded over the heir's lease: %+v", got)
		}
		if err := s.CompleteJob(t.Context(), j.ID, "heir", []byte("fresh")); err != nil {
			t.Fatalf("the heir lost its lease: %v", err)
		}
	})
}

func TestRunProcessesEverythingOnceAcrossRunners(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		s := storetest.OpenStore(t, backend, nil)
		const total, conc = 30, 3
		var mu sync.Mutex
		runs := map[string]int{}
		var inflight, maxInflight atomic.Int32
		h := func(ctx context.Context, j *store.Job) ([]byte, error) {
			n := inflight.Add(1)
			defer inflight.Add(-1)
			for {
				m := maxInflight.Load()
				if n <= m || maxInflight.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(time.Millisecond) // let handlers overlap
			mu.Lock()
			runs[j.ID]++
			mu.Unlock()
			return nil, nil
		}
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for i := range 2 {
			r := jobs.NewRunner(s, storetest.TestLogger(t), jobs.RunnerOptions{
				Owner: fmt.Sprintf("runner-%d", i), Concurrency: conc, PollInterval: 5 * time.Millisecond,
			})
			r.Handle("work", h)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := r.Run(ctx); err != nil {
					t.Errorf("Run: %v", err)
				}
			}()
		}
		var ids []string
		for i := range total {
			j := enqueue(t, s, &store.Job{Kind: "work", IdempotencyKey: fmt.Sprint(i), ExpiresAt: time.Now().Add(time.Hour)})
			ids = append(ids, j.ID)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			counts, err := s.CountJobs(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if counts["work"][store.JobDone] == total {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("jobs not all done: %v", counts)
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		wg.Wait()
		for _, id := range ids {
			if runs[id] != 1 {
				t.Fatalf("job %s ran %d times, want once", id, runs[id])
			}
		}
		if m := maxInflight.Load(); m > 2*conc {
			t.Fatalf("%d handlers ran at once, want at most %d (2 runners x %d)", m, 2*conc, conc)
		}
	})
}

func TestExponentialBackoff(t *testing.T) {
	b := jobs.ExponentialBackoff(time.Second, time.Minute)
	for attempt := -1; attempt <= 40; attempt++ {
		want := time.Second
		for i := 1; i < attempt && want < time.Minute; i++ {
			want *= 2
		}
		if want > time.Minute {
			want = time.Minute
		}
		for range 50 {
			d := b(attempt)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("400")
	p := jobs.Permanent(base)
	if !jobs.IsPermanent(p) || !errors.Is(p, base) || p.Error() != "400" {
		t.Fatalf("Permanent(%v) = %v", base, p)
	}
	if jobs.IsPermanent(base) || jobs.Permanent(nil) != nil {
		t.Fatal("plain errors are not permanent; Permanent(nil) is nil")
	}
	if !jobs.IsPermanent(fmt.Errorf("wrapped: %w", p)) {
		t.Fatal("a wrapped permanent error must stay permanent")
	}
}

func TestHandleRejectsDuplicates(t *testing.T) {
	r := jobs.NewRunner(nil, nil, jobs.RunnerOptions{})
	r.Handle("k", func(context.Context, *store.Job) ([]byte, error) { return nil, nil })
	defer func() {
		if recover() == nil {
			t.Fatal("registering a kind twice did not panic")
		}
	}()
	r.Handle("k", func(context.Context, *store.Job) ([]byte, error) { return nil, nil })
}

func TestRunJanitor(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		s := storetest.OpenStore(t, backend, nil)
		expired := &store.Session{Kind: store.SessionIdentity, ExpiresAt: time.Now().Add(-time.Minute)}
		live := &store.Session{Kind: store.SessionIdentity, ExpiresAt: time.Now().Add(time.Hour)}
		for _, sess := range []*store.Session{expired, live} {
			if err := s.CreateSession(t.Context(), sess); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			jobs.RunJanitor(ctx, s, 10*time.Millisecond, time.Hour, storetest.TestLogger(t))
		}()
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := s.GetSession(t.Context(), expired.ID)
			if errors.Is(err, store.ErrNotFound) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("janitor did not purge the expired session: %v", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		<-done
		if _, err := s.GetSession(t.Context(), live.ID); err != nil {
			t.Fatalf("janitor deleted a live session: %v", err)
		}
	})
}

func TestJanitorPassRunsOncePerPeriod(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		s := storetest.OpenStore(t, backend, nil)
		ctx := t.Context()
		expired := &store.Session{Kind: store.SessionIdentity, ExpiresAt: time.Now().Add(-time.Minute)}
		if err := s.CreateSession(ctx, expired); err != nil {
			t.Fatal(err)
		}
		const every = time.Hour
		now := time.Now()
		const replicas = 8
		var wg sync.WaitGroup
		ran := make([]bool, replicas)
		errs := make([]error, replicas)
		for i := range replicas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ran[i], _, errs[i] = jobs.JanitorPass(ctx, s, now, every, time.Hour, fmt.Sprintf("replica-%d", i))
			}()
		}
		wg.Wait()
		runs := 0
		for i := range replicas {
			if errs[i] != nil {
				t.Fatalf("replica %d: %v", i, errs[i])
			}
			if ran[i] {
				runs++
			}
		}
		if runs != 1 {
			t.Fatalf("%d replicas purged in one period, want exactly 1", runs)
		}
		if _, err := s.GetSession(ctx, expired.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("expired session still there: %v", err)
		}
		// Same period again: nobody runs. Next period: one does.
		if r, _, err := jobs.JanitorPass(ctx, s, now, every, time.Hour, "late"); err != nil || r {
			t.Fatalf("second pass in the same period: ran=%v err=%v", r, err)
		}
		if r, _, err := jobs.JanitorPass(ctx, s, now.Add(every), every, time.Hour, "next"); err != nil || !r {
			t.Fatalf("pass in the next period: ran=%v err=%v", r, err)
		}
		counts, err := s.CountJobs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := counts[jobs.JanitorKind][store.JobDone]; got != 2 {
			t.Fatalf("janitor jobs done = %d, want 2 (one per period): %v", got, counts)
		}
	})
}

func TestRunLeasedJanitor(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		s := storetest.OpenStore(t, backend, nil)
		expired := &store.Session{Kind: store.SessionIdentity, ExpiresAt: time.Now().Add(-time.Minute)}
		if err := s.CreateSession(t.Context(), expired); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			jobs.RunLeasedJanitor(ctx, s, 20*time.Millisecond, time.Hour, storetest.TestLogger(t), nil)
		}()
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := s.GetSession(t.Context(), expired.ID)
			if errors.Is(err, store.ErrNotFound) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("leased janitor did not purge: %v", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		<-done
	})
}
