package gormstore

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// FlowGrace is how long expired or used OAuth flows are kept before the
// janitor deletes them (useful when investigating a failed login).
const FlowGrace = time.Hour

// PurgeExpired deletes, judged by the database clock: OAuth flows expired
// or used more than FlowGrace ago; sessions past their expiry (a revoked
// session is kept until then so its tokens stay refused); done and failed
// jobs finished more than retention ago. Idempotent, so every replica may
// run it.
func (s *Store) PurgeExpired(ctx context.Context, retention time.Duration) (int64, error) {
	if retention < 0 {
		return 0, errors.New("gormstore: purge expired: retention must not be negative")
	}
	var total int64
	steps := []struct {
		what string
		sql  string
		a    args
	}{
		{"oauth flows", `DELETE FROM oauth_flows WHERE expires_at_ms < {now} - CAST(@grace AS BIGINT)
			OR (used_at_ms IS NOT NULL AND used_at_ms < {now} - CAST(@grace AS BIGINT))`, args{"grace": FlowGrace.Milliseconds()}},
		{"sessions", `DELETE FROM sessions WHERE expires_at_ms < {now}`, nil},
		{"jobs", `DELETE FROM jobs WHERE state IN ('done', 'failed') AND done_at_ms IS NOT NULL
			AND done_at_ms < {now} - CAST(@retention AS BIGINT)`, args{"retention": retention.Milliseconds()}},
	}
	for _, st := range steps {
		n, err := s.exec(ctx, s.w, st.sql, st.a)
		if err != nil {
			return total, fmt.Errorf("gormstore: purge %s: %w", st.what, err)
		}
		total += n
	}
	n, err := s.PurgeExpiredKit(ctx, retention)
	total += n
	if err != nil {
		return total, err
	}
	return total, nil
}
