package jobs

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/store"
	"github.com/hashicorp/go-hclog"
)

// JanitorKind is the job kind of the leased janitor's per-period jobs.
const JanitorKind = "connectd.janitor"

// JanitorStore is what the leased janitor needs: the queue (for the
// lease) and the purge.
type JanitorStore interface {
	store.Jobs
	store.Janitor
}

// JanitorPass runs the purge for the period containing now at most once
// across replicas: every replica enqueues the same job (idempotency key =
// the period's start) and tries to claim it; the claim lease lets exactly
// one run it. ran reports whether this call purged.
func JanitorPass(ctx context.Context, s JanitorStore, now time.Time, every, retention time.Duration, owner string) (ran bool, deleted int64, err error) {
	if every <= 0 || owner == "" {
		return false, 0, errors.New("jobs: janitor pass: a positive period and an owner are required")
	}
	period := now.UTC().Truncate(every)
	if _, _, err := s.EnqueueJob(ctx, &store.Job{
		Kind:           JanitorKind,
		IdempotencyKey: period.Format(time.RFC3339Nano),
		ExpiresAt:      period.Add(2 * every),
		MaxAttempts:    3,
	}); err != nil {
		return false, 0, fmt.Errorf("jobs: janitor pass: enqueue: %w", err)
	}
	lease := min(every, 10*time.Minute)
	claimed, err := s.ClaimJobs(ctx, []string{JanitorKind}, owner, lease, 1)
	if err != nil {
		return false, 0, fmt.Errorf("jobs: janitor pass: claim: %w", err)
	}
	if len(claimed) == 0 {
		return false, 0, nil // another replica has it (or it is done)
	}
	j := claimed[0]
	deleted, perr := s.PurgeExpired(ctx, retention)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if perr != nil {
		if err := s.RetryJob(rctx, j.ID, owner, perr.Error(), now.Add(every/10)); err != nil {
			return true, deleted, fmt.Errorf("jobs: janitor pass: purge: %w (and recording the retry: %w)", perr, err)
		}
		return true, deleted, fmt.Errorf("jobs: janitor pass: purge: %w", perr)
	}
	if err := s.CompleteJob(rctx, j.ID, owner, nil); err != nil {
		return true, deleted, fmt.Errorf("jobs: janitor pass: complete: %w", err)
	}
	return true, deleted, nil
}

// RunLeasedJanitor calls JanitorPass now and then every interval (with
// ±10% jitter) until ctx ends, so that each period one replica purges.
// clk nil = the wall clock.
func RunLeasedJanitor(ctx context.Context, s JanitorStore, every, retention time.Duration, logger hclog.Logger, clk clock.Clock) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if clk == nil {
		clk = clock.Real{}
	}
	if every <= 0 {
		every = 10 * time.Minute
	}
	log := logger.Named("janitor")
	owner := newOwner("janitor")
	for {
		ran, n, err := JanitorPass(ctx, s, clk.Now(), every, retention, owner)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			log.Warn("janitor pass failed", "error", err)
		case ran && n > 0:
			log.Info("purged expired rows", "rows", n)
		}
		if !sleepJitter(ctx, every) {
			return
		}
	}
}

// sleepJitter waits every±10%; false when ctx ended.
func sleepJitter(ctx context.Context, every time.Duration) bool {
	jitter := time.Duration(rand.Int64N(int64(every)/5+1)) - every/10
	t := time.NewTimer(every + jitter)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
