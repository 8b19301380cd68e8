// Package jobs runs connectd's one durable queue (store.Jobs): a Runner
// claims due jobs under a lease, runs the handler registered for their
// kind, and records the outcome (done, retry later with backoff, or
// failed). RunJanitor purges what has expired.
//
// Delivery is at least once: a worker that dies (or overruns its lease)
// leaves the job to be claimed again, so handlers must be idempotent. A
// handler's context ends before its lease does, so a well-behaved handler
// stops before another worker can take the job over.
package jobs

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/store"
	"github.com/hashicorp/go-hclog"
)

// Handler does one job. A nil error completes the job with result; an
// error wrapped with Permanent fails it for good; any other error retries
// it after a backoff (until MaxAttempts or expiry). The handler must
// respect ctx: it ends before the job's lease does.
type Handler func(ctx context.Context, job *store.Job) (result []byte, err error)

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying (e.g. the upstream answered
// 400). Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err (or an error it wraps) was marked with
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// RunnerOptions configures a Runner. Zero values pick the defaults.
type RunnerOptions struct {
	// Owner identifies this worker in leases (default: random per Runner).
	Owner string
	// Lease is how long a claimed job is ours (default 1 minute). The
	// handler's context ends at 90% of it.
	Lease time.Duration
	// PollInterval is the pause between claims when the queue is idle
	// (default 1 second).
	PollInterval time.Duration
	// Concurrency bounds handlers running at once (default 4).
	Concurrency int
	// Backoff gives the delay before retry number attempt (1 = after the
	// first failure). Default ExponentialBackoff(time.Second, 10*time.Minute).
	Backoff func(attempt int) time.Duration
	// Clock computes retry times (default the wall clock). Leases and
	// expiry are judged by the store's clock.
	Clock clock.Clock
}

// ExponentialBackoff returns base*2^(attempt-1) capped at max, with
// "equal jitter": a uniformly random delay in [d/2, d], so workers that
// failed together do not retry in lockstep.
func ExponentialBackoff(base, max time.Duration) func(attempt int) time.Duration {
	return func(attempt int) time.Duration {
		if attempt < 1 {
			attempt = 1
		}
		d := base
		for i := 1; i < attempt && d < max; i++ {
			d *= 2
		}
		if d > max || d <= 0 {
			d = max
		}
		half := d / 2
		if half <= 0 {
			return d
		}
		return half + rand.N(d-half+1)
	}
}

// Runner executes jobs of the kinds registered with Handle.
type Runner struct {
	store    store.Jobs
	log      hclog.Logger
	owner    string
	lease    time.Duration
	poll     time.Duration
	conc     int
	backoff  func(int) time.Duration
	clock    clock.Clock
	mu       sync.Mutex
	handlers map[string]Handler
}

// NewRunner returns a runner over s. Register handlers with Handle before
// calling Run or RunOnce.
func NewRunner(s store.Jobs, logger hclog.Logger, o RunnerOptions) *Runner {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	r := &Runner{
		store:    s,
		owner:    o.Owner,
		lease:    o.Lease,
		poll:     o.PollInterval,
		conc:     o.Concurrency,
		backoff:  o.Backoff,
		clock:    o.Clock,
		handlers: map[string]Handler{},
	}
	if r.owner == "" {
		r.owner = newOwner("worker")
	}
	if r.lease <= 0 {
		r.lease = time.Minute
	}
	if r.poll <= 0 {
		r.poll = time.Second
	}
	if r.conc <= 0 {
		r.conc = 4
	}
	if r.backoff == nil {
		r.backoff = ExponentialBackoff(time.Second, 10*time.Minute)
	}
	if r.clock == nil {
		r.clock = clock.Real{}
	}
	r.log = logger.Named("jobs").With("owner", r.owner)
	return r
}

// newOwner returns a random lease owner id.
func newOwner(prefix string) string {
	b := make([]byte, 8)
	_, _ = cryptorand.Read(b) // never fails (Go 1.24+)
	return prefix + "-" + hex.EncodeToString(b)
}

// Owner returns the lease owner this runner claims jobs as.
func (r *Runner) Owner() string { return r.owner }

// Handle registers h for jobs of kind. Registering a kind twice, an empty
// kind or a nil handler is a programming error and panics.
func (r *Runner) Handle(kind string, h Handler) {
	if kind == "" || h == nil {
		panic("jobs: Handle needs a kind and a handler")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.handlers[kind]; dup {
		panic(fmt.Sprintf("jobs: handler for kind %q registered twice", kind))
	}
	r.handlers[kind] = h
}

func (r *Runner) kinds() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	kinds := make([]string, 0, len(r.handlers))
	for k := range r.handlers {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	return kinds
}

func (r *Runner) handler(kind string) Handler {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.handlers[kind]
}

// RunOnce claims up to Concurrency due jobs, runs them, records their
// outcomes and returns how many it ran. Errors recording an outcome are
// logged (the lease then expires and the job runs again); the returned
// error is the claim's.
func (r *Runner) RunOnce(ctx context.Context) (int, error) {
	kinds := r.kinds()
	if len(kinds) == 0 {
		return 0, nil
	}
	jobs, err := r.store.ClaimJobs(ctx, kinds, r.owner, r.lease, r.conc)
	if err != nil {
		return 0, fmt.Errorf("jobs: claim: %w", err)
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.execute(ctx, j)
		}()
	}
	wg.Wait()
	return len(jobs), nil
}

// Run keeps up to Concurrency handlers busy until ctx ends, claiming as
// slots free up and polling every PollInterval when idle. It waits for
// running handlers before returning nil.
func (r *Runner) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, r.conc)
	done := make(chan struct{}, r.conc)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-done:
		}
		// When every slot is busy, the next claim waits for one to free
		// (done) or for the poll interval.
		if free := r.conc - len(slots); free > 0 {
			if kinds := r.kinds(); len(kinds) > 0 {
				jobs, err := r.store.ClaimJobs(ctx, kinds, r.owner, r.lease, free)
				switch {
				case err != nil && ctx.Err() != nil:
					return nil
				case err != nil:
					r.log.Warn("claiming jobs failed", "error", err)
				default:
					for _, j := range jobs {
						slots <- struct{}{}
						wg.Add(1)
						go func() {
							defer wg.Done()
							defer func() {
								<-slots
								select {
								case done <- struct{}{}:
								default:
								}
							}()
							r.execute(ctx, j)
						}()
					}
				}
			}
		}
		timer.Stop()
		timer.Reset(r.poll)
	}
}

// execute runs one claimed job and records the outcome under our lease.
func (r *Runner) execute(ctx context.Context, j *store.Job) {
	log := r.log.With("job_id", j.ID, "kind", j.Kind, "attempt", j.Attempts)
	h := r.handler(j.Kind)
	hctx, cancel := context.WithTimeout(ctx, r.lease*9/10)
	result, err := r.call(hctx, h, j)
	cancel()

	// Record the outcome even if ctx ended meanwhile (shutdown): a
	// detached context with its own short deadline.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer rcancel()
	var recErr error
	switch {
	case err == nil:
		recErr = r.store.CompleteJob(rctx, j.ID, r.owner, result)
		if recErr == nil {
			log.Debug("job done")
		}
	case IsPermanent(err):
		recErr = r.store.FailJob(rctx, j.ID, r.owner, err.Error())
		if recErr == nil {
			log.Warn("job failed permanently", "error", err)
		}
	default:
		delay := r.backoff(j.Attempts)
		next := r.clock.Now().Add(delay)
		recErr = r.store.RetryJob(rctx, j.ID, r.owner, err.Error(), next)
		if recErr == nil {
			log.Info("job will be retried", "error", err, "delay", delay)
		}
	}
	switch {
	case recErr == nil:
	case errors.Is(recErr, store.ErrLeaseLost):
		log.Warn("job lease was lost before its outcome was recorded; another worker owns it now", "outcome_error", err)
	default:
		log.Error("recording job outcome failed; it will run again when its lease expires", "error", recErr)
	}
}

// call runs the handler, turning a panic into a retryable error.
func (r *Runner) call(ctx context.Context, h Handler, j *store.Job) (result []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("job handler panicked", "job_id", j.ID, "kind", j.Kind, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			result, err = nil, fmt.Errorf("jobs: handler panicked: %v", p)
		}
	}()
	if h == nil {
		return nil, Permanent(fmt.Errorf("jobs: no handler for kind %q", j.Kind))
	}
	return h(ctx, j)
}

// RunJanitor purges expired rows (store.Janitor.PurgeExpired) now and
// then every interval (with ±10% jitter so replicas spread out), until ctx
// ends. Deletes are idempotent, so every replica may run it; errors are
// logged and retried at the next tick. RunLeasedJanitor does the same on
// one replica per period.
func RunJanitor(ctx context.Context, s store.Janitor, every, retention time.Duration, logger hclog.Logger) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	log := logger.Named("janitor")
	if every <= 0 {
		every = 10 * time.Minute
	}
	for {
		n, err := s.PurgeExpired(ctx, retention)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			log.Warn("purge failed", "error", err)
		case n > 0:
			log.Info("purged expired rows", "rows", n)
		}
		if !sleepJitter(ctx, every) {
			return
		}
	}
}
