package gormstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/connectd/connectd/core/store"
	"github.com/google/uuid"
)

const jobColumns = `id, kind, idempotency_key, payload, state, attempts, max_attempts, next_attempt_at_ms,
	expires_at_ms, last_error, result, created_at_ms, updated_at_ms, done_at_ms`

// maxLastError caps the stored error text.
const maxLastError = 2000

type jobRow struct {
	ID              string `gorm:"column:id"`
	Kind            string `gorm:"column:kind"`
	IdempotencyKey  string `gorm:"column:idempotency_key"`
	Payload         []byte `gorm:"column:payload"`
	State           string `gorm:"column:state"`
	Attempts        int    `gorm:"column:attempts"`
	MaxAttempts     int    `gorm:"column:max_attempts"`
	NextAttemptAtMS int64  `gorm:"column:next_attempt_at_ms"`
	ExpiresAtMS     int64  `gorm:"column:expires_at_ms"`
	LastError       string `gorm:"column:last_error"`
	Result          []byte `gorm:"column:result"`
	CreatedAtMS     int64  `gorm:"column:created_at_ms"`
	UpdatedAtMS     int64  `gorm:"column:updated_at_ms"`
	DoneAtMS        *int64 `gorm:"column:done_at_ms"`
}

func (s *Store) decodeJob(r *jobRow) (*store.Job, error) {
	j := &store.Job{
		ID:             r.ID,
		Kind:           r.Kind,
		IdempotencyKey: r.IdempotencyKey,
		State:          r.State,
		Attempts:       r.Attempts,
		MaxAttempts:    r.MaxAttempts,
		NextAttemptAt:  msTime(r.NextAttemptAtMS),
		ExpiresAt:      msTime(r.ExpiresAtMS),
		LastError:      r.LastError,
		CreatedAt:      msTime(r.CreatedAtMS),
		UpdatedAt:      msTime(r.UpdatedAtMS),
		DoneAt:         msTimePtr(r.DoneAtMS),
	}
	var err error
	if j.Payload, err = s.open(adJobs, r.ID, "payload", r.Payload); err != nil {
		return nil, err
	}
	if j.Result, err = s.open(adJobs, r.ID, "result", r.Result); err != nil {
		return nil, err
	}
	return j, nil
}

// EnqueueJob inserts j (ID generated when empty; IdempotencyKey defaults
// to the id, i.e. no deduplication; NextAttemptAt zero = now). When a job
// with the same (kind, idempotency key) exists, it is returned unchanged
// with created=false.
func (s *Store) EnqueueJob(ctx context.Context, j *store.Job) (*store.Job, bool, error) {
	if j == nil || j.Kind == "" || j.ExpiresAt.IsZero() || j.MaxAttempts < 0 {
		return nil, false, errors.New("gormstore: enqueue job: kind and expiry are required; max attempts must not be negative")
	}
	for attempt := 0; attempt < 3; attempt++ {
		id := j.ID
		if id == "" {
			id = uuid.NewString()
		}
		key := j.IdempotencyKey
		if key == "" {
			key = id
		}
		payload, err := s.seal(adJobs, id, "payload", j.Payload)
		if err != nil {
			return nil, false, err
		}
		var next any
		if !j.NextAttemptAt.IsZero() {
			next = j.NextAttemptAt.UnixMilli()
		}
		var rows []jobRow
		if _, err := s.query(ctx, s.w, &rows, `INSERT INTO jobs (id, kind, idempotency_key, payload, state, attempts, max_attempts,
				next_attempt_at_ms, expires_at_ms, last_error, created_at_ms, updated_at_ms)
			VALUES (@id, @kind, @key, @payload, 'pending', 0, @max, COALESCE(@next, {now}), @exp, '', {now}, {now})
			ON CONFLICT (kind, idempotency_key) DO NOTHING
			RETURNING `+jobColumns, args{
			"id": id, "kind": j.Kind, "key": key, "payload": blob(payload), "max": j.MaxAttempts,
			"next": next, "exp": j.ExpiresAt.UnixMilli(),
		}); err != nil {
			return nil, false, fmt.Errorf("gormstore: enqueue job: %w", err)
		}
		if len(rows) == 1 {
			stored, err := s.decodeJob(&rows[0])
			return stored, true, err
		}
		if _, err := s.query(ctx, s.r, &rows, `SELECT `+jobColumns+` FROM jobs WHERE kind = @kind AND idempotency_key = @key`,
			args{"kind": j.Kind, "key": key}); err != nil {
			return nil, false, fmt.Errorf("gormstore: enqueue job: %w", err)
		}
		if len(rows) == 1 {
			stored, err := s.decodeJob(&rows[0])
			return stored, false, err
		}
		// The duplicate vanished (purged) between the two statements.
	}
	return nil, false, fmt.Errorf("gormstore: enqueue job: %w", store.ErrConflict)
}

// GetJob reads one job.
func (s *Store) GetJob(ctx context.Context, id string) (*store.Job, error) {
	var rows []jobRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+jobColumns+` FROM jobs WHERE id = @id`, args{"id": id}); err != nil {
		return nil, fmt.Errorf("gormstore: get job: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: job %s: %w", id, store.ErrNotFound)
	}
	return s.decodeJob(&rows[0])
}

// ClaimJobs first fails the jobs of these kinds that can never run again
// (expired, or a worker died on the last allowed attempt), then leases up
// to limit due jobs in one statement. PostgreSQL picks rows with FOR
// UPDATE SKIP LOCKED so concurrent claimers take different jobs; SQLite's
// single writer makes the one UPDATE exclusive by itself.
func (s *Store) ClaimJobs(ctx context.Context, kinds []string, owner string, lease time.Duration, limit int) ([]*store.Job, error) {
	if len(kinds) == 0 || owner == "" || lease <= 0 || limit <= 0 {
		return nil, errors.New("gormstore: claim jobs: kinds, owner, a positive lease and a positive limit are required")
	}
	if _, err := s.exec(ctx, s.w, `UPDATE jobs SET state = 'failed',
			last_error = CASE WHEN expires_at_ms <= {now} THEN 'expired' ELSE 'attempts exhausted' END
				|| CASE WHEN last_error = '' THEN '' ELSE ': ' || last_error END,
			lease_owner = NULL, lease_until_ms = NULL, done_at_ms = {now}, updated_at_ms = {now}
		WHERE state = 'pending' AND kind IN @kinds AND (lease_owner IS NULL OR lease_until_ms < {now})
			AND (expires_at_ms <= {now} OR (max_attempts > 0 AND attempts >= max_attempts))`,
		args{"kinds": kinds}); err != nil {
		return nil, fmt.Errorf("gormstore: claim jobs: fail expired: %w", err)
	}
	due := `state = 'pending' AND kind IN @kinds AND next_attempt_at_ms <= {now} AND expires_at_ms > {now}
		AND (max_attempts = 0 OR attempts < max_attempts) AND (lease_owner IS NULL OR lease_until_ms < {now})`
	pick := `id IN (SELECT id FROM jobs WHERE ` + due + ` ORDER BY next_attempt_at_ms, id LIMIT @limit)`
	if s.dialect == DialectPostgres {
		pick = `id = ANY(ARRAY(SELECT id FROM jobs WHERE ` + due + ` ORDER BY next_attempt_at_ms, id LIMIT @limit FOR UPDATE SKIP LOCKED))`
	}
	var rows []jobRow
	if _, err := s.query(ctx, s.w, &rows, `UPDATE jobs SET lease_owner = @owner, lease_until_ms = {now} + CAST(@lease AS BIGINT),
			attempts = attempts + 1, updated_at_ms = {now}
		WHERE `+pick+` AND `+due+`
		RETURNING `+jobColumns, args{"kinds": kinds, "owner": owner, "lease": lease.Milliseconds(), "limit": limit}); err != nil {
		return nil, fmt.Errorf("gormstore: claim jobs: %w", err)
	}
	sort.Slice(rows, func(i, k int) bool {
		if rows[i].NextAttemptAtMS != rows[k].NextAttemptAtMS {
			return rows[i].NextAttemptAtMS < rows[k].NextAttemptAtMS
		}
		return rows[i].ID < rows[k].ID
	})
	jobs := make([]*store.Job, 0, len(rows))
	for i := range rows {
		j, err := s.decodeJob(&rows[i])
		if err != nil {
			// A payload that cannot be opened will never run: give it up
			// now rather than retry it forever, and let the caller go on
			// with the others.
			s.log.Error("job payload cannot be opened; failing the job", "job_id", rows[i].ID, "kind", rows[i].Kind, "error", err)
			if ferr := s.FailJob(ctx, rows[i].ID, owner, "payload cannot be opened"); ferr != nil {
				s.log.Error("failing unopenable job", "job_id", rows[i].ID, "error", ferr)
			}
			continue
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// leasedJobMissed tells ErrNotFound from ErrLeaseLost after a fenced
// update matched nothing.
func (s *Store) leasedJobMissed(ctx context.Context, op, id string) error {
	var n int64
	if _, err := s.query(ctx, s.r, &n, `SELECT COUNT(*) FROM jobs WHERE id = @id`, args{"id": id}); err != nil {
		return fmt.Errorf("gormstore: %s: %w", op, err)
	}
	if n == 0 {
		return fmt.Errorf("gormstore: %s %s: %w", op, id, store.ErrNotFound)
	}
	return fmt.Errorf("gormstore: %s %s: %w", op, id, store.ErrLeaseLost)
}

func truncateError(s string) string {
	if len(s) <= maxLastError {
		return s
	}
	return s[:maxLastError]
}

// CompleteJob marks a leased job done with its (sealed) result.
func (s *Store) CompleteJob(ctx context.Context, id, owner string, result []byte) error {
	sealed, err := s.seal(adJobs, id, "result", result)
	if err != nil {
		return err
	}
	n, err := s.exec(ctx, s.w, `UPDATE jobs SET state = 'done', result = @result, lease_owner = NULL, lease_until_ms = NULL,
			done_at_ms = {now}, updated_at_ms = {now}
		WHERE id = @id AND lease_owner = @owner AND state = 'pending'`,
		args{"id": id, "owner": owner, "result": blob(sealed)})
	if err != nil {
		return fmt.Errorf("gormstore: complete job: %w", err)
	}
	if n == 0 {
		return s.leasedJobMissed(ctx, "complete job", id)
	}
	return nil
}

// RetryJob releases a leased job for another attempt at next. It fails
// the job instead when it has expired, when next is at or past its expiry
// (the retry could never run), or when MaxAttempts is used up.
func (s *Store) RetryJob(ctx context.Context, id, owner, lastError string, next time.Time) error {
	if next.IsZero() {
		return errors.New("gormstore: retry job: next attempt time is required")
	}
	giveUp := `(expires_at_ms <= {now} OR expires_at_ms <= @next OR (max_attempts > 0 AND attempts >= max_attempts))`
	n, err := s.exec(ctx, s.w, `UPDATE jobs SET
			state = CASE WHEN `+giveUp+` THEN 'failed' ELSE 'pending' END,
			done_at_ms = CASE WHEN `+giveUp+` THEN {now} ELSE NULL END,
			next_attempt_at_ms = @next, last_error = @err, lease_owner = NULL, lease_until_ms = NULL, updated_at_ms = {now}
		WHERE id = @id AND lease_owner = @owner AND state = 'pending'`,
		args{"id": id, "owner": owner, "err": truncateError(lastError), "next": next.UnixMilli()})
	if err != nil {
		return fmt.Errorf("gormstore: retry job: %w", err)
	}
	if n == 0 {
		return s.leasedJobMissed(ctx, "retry job", id)
	}
	return nil
}

// FailJob gives a leased job up for good.
func (s *Store) FailJob(ctx context.Context, id, owner, lastError string) error {
	n, err := s.exec(ctx, s.w, `UPDATE jobs SET state = 'failed', last_error = @err, lease_owner = NULL, lease_until_ms = NULL,
			done_at_ms = {now}, updated_at_ms = {now}
		WHERE id = @id AND lease_owner = @owner AND state = 'pending'`,
		args{"id": id, "owner": owner, "err": truncateError(lastError)})
	if err != nil {
		return fmt.Errorf("gormstore: fail job: %w", err)
	}
	if n == 0 {
		return s.leasedJobMissed(ctx, "fail job", id)
	}
	return nil
}

// CountJobs reports kind -> state -> count.
func (s *Store) CountJobs(ctx context.Context) (map[string]map[string]int, error) {
	var rows []struct {
		Kind  string `gorm:"column:kind"`
		State string `gorm:"column:state"`
		N     int    `gorm:"column:n"`
	}
	if _, err := s.query(ctx, s.r, &rows, `SELECT kind, state, COUNT(*) AS n FROM jobs GROUP BY kind, state`, nil); err != nil {
		return nil, fmt.Errorf("gormstore: count jobs: %w", err)
	}
	out := map[string]map[string]int{}
	for _, r := range rows {
		if out[r.Kind] == nil {
			out[r.Kind] = map[string]int{}
		}
		out[r.Kind][r.State] = r.N
	}
	return out, nil
}
