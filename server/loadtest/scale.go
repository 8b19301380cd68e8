package loadtest

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"strings"
	"time"
)

// scaleSeed adds n synthetic user rows, each with one session row, in
// batches of one INSERT ... SELECT over a generated series (COPY-like
// speed, no round trip per row). The rows carry no credentials: they only
// make the tables and their indexes as large as a big deployment's, so
// the hot point reads are measured against that depth. It returns the
// query plans of the two hot reads (EXPLAIN) for the record.
func scaleSeed(ctx context.Context, dbURL string, n int, progress io.Writer) (plans []string, err error) {
	driver, dsn, pg := dbDriver(dbURL)
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	const batch = 100_000
	now := time.Now().UnixMilli()
	exp := time.Now().Add(24 * time.Hour).UnixMilli()
	start := time.Now()
	for lo := 1; lo <= n; lo += batch {
		hi := min(lo+batch-1, n)
		var users, sessions string
		if pg {
			users = fmt.Sprintf(`INSERT INTO users (id, platform, crm_user_id, status, created_at_ms, updated_at_ms)
				SELECT 'scale-u-' || g, 'loadoauth', 'scale-' || g, 'active', %d, %d FROM generate_series(%d, %d) AS g`, now, now, lo, hi)
			sessions = fmt.Sprintf(`INSERT INTO sessions (id, kind, user_id, expires_at_ms, created_at_ms, updated_at_ms)
				SELECT 'scale-s-' || g, 'session', 'scale-u-' || g, %d, %d, %d FROM generate_series(%d, %d) AS g`, exp, now, now, lo, hi)
		} else {
			series := fmt.Sprintf(`WITH RECURSIVE g(n) AS (SELECT %d UNION ALL SELECT n + 1 FROM g WHERE n < %d) `, lo, hi)
			users = series + fmt.Sprintf(`INSERT INTO users (id, platform, crm_user_id, status, created_at_ms, updated_at_ms)
				SELECT 'scale-u-' || n, 'loadoauth', 'scale-' || n, 'active', %d, %d FROM g`, now, now)
			sessions = series + fmt.Sprintf(`INSERT INTO sessions (id, kind, user_id, expires_at_ms, created_at_ms, updated_at_ms)
				SELECT 'scale-s-' || n, 'session', 'scale-u-' || n, %d, %d, %d FROM g`, exp, now, now)
		}
		if _, err := db.ExecContext(ctx, users); err != nil {
			return nil, fmt.Errorf("scale seed users: %w", err)
		}
		if _, err := db.ExecContext(ctx, sessions); err != nil {
			return nil, fmt.Errorf("scale seed sessions: %w", err)
		}
		fmt.Fprintf(progress, "scale: %d/%d rows (%.0fs)\n", hi, n, time.Since(start).Seconds())
	}
	analyze := "ANALYZE"
	if _, err := db.ExecContext(ctx, analyze); err != nil {
		return nil, fmt.Errorf("scale: %s: %w", analyze, err)
	}
	explain, ph := "EXPLAIN ", "$1"
	if !pg {
		explain, ph = "EXPLAIN QUERY PLAN ", "?"
	}
	for _, q := range []string{
		`SELECT ` + "id, status, access_token" + ` FROM users WHERE id = ` + ph,
		`SELECT ` + "id, kind, expires_at_ms" + ` FROM sessions WHERE id = ` + ph,
	} {
		rows, err := db.QueryContext(ctx, explain+q, "scale-u-1")
		if err != nil {
			return nil, fmt.Errorf("scale: explain: %w", err)
		}
		cols, _ := rows.Columns()
		var lines []string
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return nil, err
			}
			lines = append(lines, fmt.Sprint(vals[len(vals)-1]))
		}
		rows.Close()
		plans = append(plans, q+" => "+strings.Join(lines, " / "))
	}
	return plans, nil
}

// dbDriver maps a connectd database URL to a database/sql driver and DSN.
func dbDriver(dbURL string) (driver, dsn string, pg bool) {
	if path, ok := strings.CutPrefix(dbURL, "sqlite://"); ok {
		return "sqlite", "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)", false
	}
	return "pgx", dbURL, true
}
