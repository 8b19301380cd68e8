//go:build faults

package appconnect_test

import (
	"context"
	"database/sql"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/connectd/connectd/core/store/storetest"
)

// envPGCtl is set by .ci/private-pg (make test-faults): a command that,
// given "stop" or "start", stops (pg_ctl stop -m immediate) or starts the
// PRIVATE cluster the tests run on. Never the shared server.
const envPGCtl = "CONNECTD_FAULTS_PGCTL"

func pgctl(t *testing.T, action string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", os.Getenv(envPGCtl)+" "+action)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", envPGCtl, action, err, out)
	}
}

// TestFaultPostgresStopsMidRequest: an API-key login is blocked inside
// PostgreSQL (another connection holds an exclusive lock on sessions, so
// the login has saved its user row and waits to insert its session); the
// server is stopped with pg_ctl stop -m immediate. The blocked request
// must answer 503 (not hang past the request deadline, not 500), leave no
// partial rows (no session without its login's user, the user row still
// opens), and after PostgreSQL starts again the same server recovers:
// ready, old sessions valid, new logins work.
func TestFaultPostgresStopsMidRequest(t *testing.T) {
	if os.Getenv(envPGCtl) == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set: run through make test-faults (private PostgreSQL cluster)", envPGCtl)
		}
		t.Skipf("%s not set: run make test-faults", envPGCtl)
	}
	h, crm := newAPIKeyEnv(t, storetest.Postgres)
	login := func(t *testing.T) (int, string) {
		t.Helper()
		r := h.Do(t, http.MethodPost, "/apiKeyLogin", map[string]any{"platform": "keycrm", "apiKey": goodKey})
		if r.Status != http.StatusOK {
			return r.Status, string(r.Body)
		}
		jwt, _ := r.JSON(t)["jwtToken"].(string)
		return r.Status, jwt
	}
	st, before := login(t)
	if st != http.StatusOK || before == "" {
		t.Fatalf("first login: %d %s", st, before)
	}
	h.Leaks.LogSecret(before)
	ctx := context.Background()
	countSessions := func(t *testing.T) int {
		t.Helper()
		db, err := sql.Open("pgx", h.DatabaseURL)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sessions`).Scan(&n); err != nil {
			t.Fatalf("count sessions: %v", err)
		}
		return n
	}
	sessionsBefore := countSessions(t)

	// Hold an exclusive lock on sessions from a connection of our own.
	locker, err := sql.Open("pgx", h.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close()
	tx, err := locker.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		status  int
		body    string
		elapsed time.Duration
	}
	done := make(chan answer, 1)
	start := time.Now()
	go func() {
		r, err := h.Client.Post(h.URL+"/apiKeyLogin", "application/json",
			stringsReader(`{"platform":"keycrm","apiKey":"`+goodKey+`"}`))
		if err != nil {
			done <- answer{status: -1, body: err.Error(), elapsed: time.Since(start)}
			return
		}
		defer r.Body.Close()
		b := make([]byte, 4096)
		n, _ := r.Body.Read(b)
		done <- answer{status: r.StatusCode, body: string(b[:n]), elapsed: time.Since(start)}
	}()
	// Wait until the login is blocked on our lock inside PostgreSQL.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting int
		if err := locker.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case a := <-done:
			t.Fatalf("the login finished before it blocked: %d %s", a.status, a.body)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the login never blocked on the lock")
		}
		time.Sleep(20 * time.Millisecond)
	}

	pgctl(t, "stop")
	stopped := true
	defer func() {
		if stopped {
			pgctl(t, "start") // leave the cluster up for the next test
		}
	}()
	var a answer
	select {
	case a = <-done:
	case <-time.After(90 * time.Second): // beyond the server's 60 s write deadline
		t.Fatal("the blocked request did not answer after PostgreSQL stopped")
	}
	t.Logf("blocked login answered %d after %v", a.status, a.elapsed.Round(time.Millisecond))
	if a.status != http.StatusServiceUnavailable {
		t.Fatalf("blocked login answered %d %s, want 503", a.status, a.body)
	}
	// While PostgreSQL is down: not ready, and requests fail closed.
	if r := h.Do(t, http.MethodGet, "/readyz", nil); r.Status == http.StatusOK {
		t.Errorf("/readyz answered 200 with PostgreSQL down")
	}
	if r := h.Do(t, http.MethodGet, "/authValidation", nil, bearer(before)...); r.Status == http.StatusOK {
		// A cached session row may still be served, but the user row
		// read must fail: never a 200 without the database.
		t.Errorf("/authValidation answered 200 with PostgreSQL down")
	}

	pgctl(t, "start")
	stopped = false
	ready := time.Now().Add(60 * time.Second)
	for h.Do(t, http.MethodGet, "/readyz", nil).Status != http.StatusOK {
		if time.Now().After(ready) {
			t.Fatal("not ready again after PostgreSQL started")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// No partial rows: the interrupted login's session never landed (its
	// transaction died with the server), every session row belongs to a
	// user row that opens.
	if n := countSessions(t); n != sessionsBefore {
		t.Errorf("%d sessions after the interrupted login, want %d", n, sessionsBefore)
	}
	db, err := sql.Open("pgx", h.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var orphans int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sessions s LEFT JOIN users u ON u.id = s.user_id
		WHERE s.user_id IS NOT NULL AND u.id IS NULL`).Scan(&orphans); err != nil {
		t.Fatal(err)
	}
	if orphans != 0 {
		t.Errorf("%d sessions without a user", orphans)
	}
	rows, err := db.QueryContext(ctx, `SELECT id FROM users`)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		u, err := h.Store.GetUser(ctx, id)
		if err != nil || u.APIKey != goodKey {
			t.Errorf("user %s after the crash: %v (key intact: %v)", id, err, err == nil && u.APIKey == goodKey)
		}
	}
	// Recovery: the old session still works, a new login works.
	if r := h.Do(t, http.MethodGet, "/authValidation", nil, bearer(before)...); r.Status != http.StatusOK {
		t.Fatalf("old session after recovery: %d %s", r.Status, r.Body)
	}
	st, after := login(t)
	if st != http.StatusOK {
		t.Fatalf("login after recovery: %d %s", st, after)
	}
	h.Leaks.LogSecret(after)
	if r := h.Do(t, http.MethodGet, "/authValidation", nil, bearer(after)...); r.Status != http.StatusOK {
		t.Fatalf("new session after recovery: %d %s", r.Status, r.Body)
	}
	if crm.Count("/me") < 3 {
		t.Errorf("CRM saw %d logins, want at least 3", crm.Count("/me"))
	}
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }
