package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/connectors"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/manifests"
	"github.com/connectd/connectd/server/app"
	"github.com/connectd/connectd/server/config"
)

// openStore opens the configured database as serve does (key checks
// included) for test setup and inspection.
func openStore(t *testing.T, vars map[string]string) *gormstore.Store {
	t.Helper()
	cfg, err := config.FromMap(vars)
	if err != nil {
		t.Fatal(err)
	}
	_, _, st, err := app.OpenStore(context.Background(), cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

const canary = "canary-refresh-4f1d9"

// seedLogins stores n logins, each with an access and a refresh token.
func seedLogins(t *testing.T, st *gormstore.Store, platform string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		u, err := st.UpsertUser(context.Background(), &store.User{Platform: platform, CRMUserID: fmt.Sprint("crm-", i),
			Host:        store.HostIdentity{Kind: "operator", AccountID: "acc", UserID: fmt.Sprint("u", i)},
			AccessToken: fmt.Sprint("access-", i), RefreshToken: fmt.Sprint(canary, "-", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, u.ID)
	}
	return ids
}

func keysFile(t *testing.T, vars map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vars["CONNECTD_DATA_DIR"], "keys.env"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ringIDs returns the key ids of a ring line in keys.env, in order.
func ringIDs(t *testing.T, file, env string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + env + `=(.*)$`).FindStringSubmatch(file)
	if m == nil {
		t.Fatalf("no %s line in keys.env", env)
	}
	var ids []string
	for _, e := range strings.Split(m[1], ",") {
		ids = append(ids, strings.SplitN(e, ":", 2)[0])
	}
	return strings.Join(ids, ",")
}

func mustRun(t *testing.T, vars map[string]string, args ...string) result {
	t.Helper()
	r := run(t, vars, args...)
	if r.code != 0 {
		t.Fatalf("connectd %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// TestKeyRotationCommands walks the operator procedure on a keys.env
// installation: add, promote, remove refused, rotate, status, remove.
func TestKeyRotationCommands(t *testing.T) {
	vars, _ := started(t)
	st := openStore(t, vars)
	ids := seedLogins(t, st, "pipedrive", 120)
	st.Close()

	r := mustRun(t, vars, "keys", "status")
	if !regexp.MustCompile(`encryption\s+1\s+primary\s+stored\s+240`).MatchString(r.stdout) {
		t.Fatalf("status before:\n%s", r.stdout)
	}

	r = mustRun(t, vars, "keys", "add")
	if got := ringIDs(t, keysFile(t, vars), "CONNECTD_ENCRYPTION_KEYS"); got != "1,2" {
		t.Fatalf("after add, encryption ring ids = %s, want 1,2 (new key not primary)", got)
	}
	if !strings.Contains(r.stderr, "connectd keys promote 2") {
		t.Errorf("add does not say what is next:\n%s", r.stderr)
	}
	mustRun(t, vars, "keys", "promote", "2")
	if got := ringIDs(t, keysFile(t, vars), "CONNECTD_ENCRYPTION_KEYS"); got != "2,1" {
		t.Fatalf("after promote, ring ids = %s, want 2,1", got)
	}

	r = run(t, vars, "keys", "remove", "1")
	if r.code != 1 || !strings.Contains(r.lastLine(), "refused: 240 stored value(s) still use encryption key 1") {
		t.Fatalf("remove before rotate: %d %q", r.code, r.lastLine())
	}
	r = run(t, vars, "keys", "remove", "2")
	if r.code != 1 || !strings.Contains(r.lastLine(), "is the primary") {
		t.Fatalf("remove primary: %d %q", r.code, r.lastLine())
	}

	r = mustRun(t, vars, "keys", "rotate", "--batch", "50")
	if !strings.Contains(r.stdout, "re-sealed 240 value(s) under encryption key 2") {
		t.Fatalf("rotate stdout:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "100.0%") || !strings.Contains(r.stderr, "240/240") || !strings.Contains(r.stderr, "ETA 0s") {
		t.Fatalf("rotate progress bar:\n%q", r.stderr)
	}
	r = mustRun(t, vars, "keys", "status")
	if !regexp.MustCompile(`encryption\s+2\s+primary\s+stored\s+240`).MatchString(r.stdout) ||
		!regexp.MustCompile(`encryption\s+1\s+old\s+stored\s+0`).MatchString(r.stdout) {
		t.Fatalf("status after rotate:\n%s", r.stdout)
	}
	// Safe to re-run: nothing left to do.
	r = mustRun(t, vars, "keys", "rotate")
	if !strings.Contains(r.stdout, "re-sealed 0 value(s)") {
		t.Fatalf("second rotate:\n%s", r.stdout)
	}

	mustRun(t, vars, "keys", "remove", "1")
	if got := ringIDs(t, keysFile(t, vars), "CONNECTD_ENCRYPTION_KEYS"); got != "2" {
		t.Fatalf("after remove, ring ids = %s, want 2", got)
	}
	st = openStore(t, vars)
	checks, err := st.ListKeyChecks(context.Background(), "encryption")
	if err != nil || len(checks) != 1 || checks[0].KeyID != 2 {
		t.Fatalf("key checks after remove = %+v, %v", checks, err)
	}
	for i, id := range ids {
		u, err := st.GetUser(context.Background(), id)
		if err != nil || u.RefreshToken != fmt.Sprint(canary, "-", i) || u.AccessToken != fmt.Sprint("access-", i) {
			t.Fatalf("user %d after rotation: %v", i, err)
		}
	}

	// Session ring: add, promote, remove (refused while sessions live).
	mustRun(t, vars, "keys", "add", "--ring", "session")
	mustRun(t, vars, "keys", "promote", "2", "--ring", "session")
	if got := ringIDs(t, keysFile(t, vars), "CONNECTD_SESSION_KEYS"); got != "2,1" {
		t.Fatalf("session ring ids = %s, want 2,1", got)
	}
	if err := st.CreateSession(context.Background(), &store.Session{Kind: "appconnect", UserID: ids[0], ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	r = run(t, vars, "keys", "remove", "1", "--ring", "session")
	if r.code != 1 || !strings.Contains(r.lastLine(), "1 live session(s)") {
		t.Fatalf("session remove with live sessions: %d %q", r.code, r.lastLine())
	}
	mustRun(t, vars, "keys", "remove", "1", "--ring", "session", "--force")
	if got := ringIDs(t, keysFile(t, vars), "CONNECTD_SESSION_KEYS"); got != "2" {
		t.Fatalf("session ring ids = %s, want 2", got)
	}
	r = mustRun(t, vars, "keys", "rotate", "--ring", "session")
	if !strings.Contains(r.stdout, "nothing to re-seal") {
		t.Errorf("session rotate: %s", r.stdout)
	}
}

// TestKeysFromEnvironmentPrintValue: keys configured by the environment
// are never written to a file; the new ring is printed to deploy.
func TestKeysFromEnvironmentPrintValue(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	enc := keyRingText(t, "7")
	vars := map[string]string{"CONNECTD_DATA_DIR": dir, "CONNECTD_ENCRYPTION_KEYS": enc, "CONNECTD_SESSION_KEYS": keyRingText(t, "1")}
	mustRun(t, vars, "migrate")
	r := mustRun(t, vars, "keys", "add")
	if !strings.HasPrefix(r.stdout, "CONNECTD_ENCRYPTION_KEYS="+enc+",8:") || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("add printed %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "deploy this value to every replica") {
		t.Errorf("stderr: %s", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "keys.env")); err == nil {
		t.Fatal("keys.env written although the keys come from the environment")
	}
	r = mustRun(t, vars, "keys", "promote", "7")
	if !strings.Contains(r.stdout, "already the primary") {
		t.Errorf("promote primary: %s", r.stdout)
	}
}

// TestReplicaWithoutUsedKeyRefusesToStart: once values are sealed with
// key 2, a replica configured with key 1 only does not start.
func TestReplicaWithoutUsedKeyRefusesToStart(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		k1, k2 := keyRingText(t, "1"), keyRingText(t, "2")
		vars := map[string]string{"CONNECTD_DATA_DIR": t.TempDir(), "CONNECTD_DATABASE_URL": storetest.NewURL(t, backend),
			"CONNECTD_ENCRYPTION_KEYS": k2 + "," + k1, "CONNECTD_SESSION_KEYS": keyRingText(t, "1")}
		st := openStore(t, vars)
		seedLogins(t, st, "pipedrive", 3)
		st.Close()
		old := map[string]string{}
		for k, v := range vars {
			old[k] = v
		}
		old["CONNECTD_ENCRYPTION_KEYS"] = k1
		r := run(t, old, "migrate")
		if r.code != 1 || !strings.Contains(r.lastLine(), "stored values use encryption key 2, which is not configured") {
			t.Fatalf("replica without key 2: %d %q", r.code, r.lastLine())
		}
	})
}

func TestUsersCommands(t *testing.T) {
	vars, _ := started(t)
	st := openStore(t, vars)
	ids := seedLogins(t, st, "pipedrive", 3)
	if err := st.CreateSession(context.Background(), &store.Session{Kind: "appconnect", UserID: ids[1], ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	r := mustRun(t, vars, "users", "list", "--platform", "pipedrive")
	for _, id := range ids {
		if !strings.Contains(r.stdout, id) {
			t.Fatalf("list lacks %s:\n%s", id, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "access,refresh") {
		t.Errorf("list does not say which secrets are held:\n%s", r.stdout)
	}
	r = mustRun(t, vars, "users", "list", "--platform", "clio")
	if strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("filter ignored:\n%s", r.stdout)
	}
	r = mustRun(t, vars, "users", "show", ids[1])
	if !strings.Contains(r.stdout, "sessions (1)") || !regexp.MustCompile(`appconnect\s+live`).MatchString(r.stdout) {
		t.Fatalf("show:\n%s", r.stdout)
	}
	r = mustRun(t, vars, "users", "show", ids[1], "--json")
	if !strings.Contains(r.stdout, `"hasRefreshToken": true`) {
		t.Fatalf("show --json:\n%s", r.stdout)
	}
	r = run(t, vars, "users", "show", "nope")
	if r.code != 1 || !strings.Contains(r.lastLine(), `no user "nope"`) {
		t.Fatalf("show unknown: %d %q", r.code, r.lastLine())
	}

	var all strings.Builder
	r = mustRunWith(t, vars, "users", "revoke", ids[1])
	all.WriteString(r.stdout + r.stderr)
	if !strings.Contains(r.stdout, "revoked user "+ids[1]) {
		t.Fatalf("revoke: %s", r.stdout)
	}
	r = mustRun(t, vars, "users", "show", ids[1])
	all.WriteString(r.stdout + r.stderr)
	if !regexp.MustCompile(`status\s+revoked`).MatchString(r.stdout) || !regexp.MustCompile(`appconnect\s+revoked`).MatchString(r.stdout) ||
		!regexp.MustCompile(`holds\s+none`).MatchString(r.stdout) {
		t.Fatalf("after revoke:\n%s", r.stdout)
	}
	if strings.Contains(all.String(), canary) {
		t.Fatal("a stored secret appeared in the users commands' output")
	}
}

// mustRunWith runs with the shipped connectors and manifests (revoke
// builds the whole server).
func mustRunWith(t *testing.T, vars map[string]string, args ...string) result {
	t.Helper()
	var out, errb lockedBuffer
	code := app.Run(context.Background(), args, app.Env{Stdout: &out, Stderr: &errb, Getenv: getenv(vars), Manifests: manifests.FS}, connectors.All())
	r := result{code, out.String(), errb.String()}
	if code != 0 {
		t.Fatalf("connectd %s: exit %d\n%s\n%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	}
	return r
}
