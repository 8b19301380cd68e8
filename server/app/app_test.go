package app_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/connectd/connectd/connectors"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/encryption"
	"github.com/connectd/connectd/server/app"
	"github.com/connectd/connectd/server/config"
)

// lockedBuffer collects a command's output; serve writes from several
// goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type result struct {
	code           int
	stdout, stderr string
}

// lastLine is the one-line reason a failed command prints last.
func (r result) lastLine() string {
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	return lines[len(lines)-1]
}

func run(t *testing.T, vars map[string]string, args ...string) result {
	t.Helper()
	var out, errb lockedBuffer
	code := app.Run(context.Background(), args, app.Env{Stdout: &out, Stderr: &errb, Getenv: getenv(vars), Manifests: fstest.MapFS{}}, nil)
	return result{code, out.String(), errb.String()}
}

func getenv(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// serveOnce starts serve, checks /isAlive answers OK, stops it and returns
// its result.
func serveOnce(t *testing.T, vars map[string]string) result {
	t.Helper()
	return serveWith(t, vars, fstest.MapFS{}, nil)
}

func serveWith(t *testing.T, vars map[string]string, manifestFS fs.FS, factories map[string]connector.Factory) result {
	t.Helper()
	vars["CONNECTD_ADDR"] = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	var out, errb lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- app.Run(ctx, []string{"serve"}, app.Env{Stdout: &out, Stderr: &errb, Getenv: getenv(vars), OnListen: func(a string) { addrc <- a }, Manifests: manifestFS}, factories)
	}()
	select {
	case addr := <-addrc:
		resp, err := http.Get("http://" + addr + "/isAlive")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "OK" {
			t.Fatalf("/isAlive = %d %q", resp.StatusCode, body)
		}
		cancel()
		return result{<-done, out.String(), errb.String()}
	case code := <-done:
		return result{code, out.String(), errb.String()}
	case <-time.After(60 * time.Second):
		t.Fatalf("serve neither listened nor exited; stderr:\n%s", errb.String())
	}
	return result{}
}

func keyRingText(t *testing.T, id string) string {
	t.Helper()
	k, err := encryption.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return id + ":" + base64.StdEncoding.EncodeToString(k)
}

func TestServeFreshDataDirGeneratesKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	vars := map[string]string{"CONNECTD_DATA_DIR": dir}
	r := serveOnce(t, vars)
	if r.code != 0 {
		t.Fatalf("serve exit %d:\n%s", r.code, r.stderr)
	}
	path := filepath.Join(dir, "keys.env")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("keys.env mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	for _, name := range []string{"CONNECTD_ENCRYPTION_KEYS", "CONNECTD_SESSION_KEYS"} {
		var line string
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, name+"=") {
				line = strings.TrimPrefix(l, name+"=")
			}
		}
		if _, err := encryption.ParseKeyRing(line); err != nil {
			t.Fatalf("keys.env %s does not parse: %v", name, err)
		}
		if strings.Contains(r.stderr, line) {
			t.Fatalf("the generated %s key appears in the log", name)
		}
	}
	if !strings.Contains(r.stderr, path) {
		t.Fatalf("log does not say where the keys went:\n%s", r.stderr)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".keys.env-*")); len(m) > 0 {
		t.Fatalf("temporary files left: %v", m)
	}

	// A second start reuses the file and its check values match.
	r = serveOnce(t, vars)
	if r.code != 0 {
		t.Fatalf("second serve exit %d:\n%s", r.code, r.stderr)
	}
	again, _ := os.ReadFile(path)
	if !bytes.Equal(again, data) {
		t.Fatal("keys.env rewritten on the second start")
	}
}

// TestServeShippedConnectors starts what `make run` starts: the embedded
// manifests and the shipped connector map, nothing configured.
func TestServeShippedConnectors(t *testing.T) {
	r := serveWith(t, map[string]string{"CONNECTD_DATA_DIR": filepath.Join(t.TempDir(), "data")}, nil, connectors.All())
	if r.code != 0 {
		t.Fatalf("serve exit %d:\n%s", r.code, r.stderr)
	}
}

func TestStartupRefusesBadInput(t *testing.T) {
	fileAsParent := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(fileAsParent, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		vars    map[string]string
		want    string
		secrets []string
	}{
		{
			name:    "malformed database URL",
			vars:    map[string]string{"CONNECTD_DATABASE_URL": "postgres://app:hunter2pw@db.example.com:notaport/connectd"},
			want:    "CONNECTD_DATABASE_URL: malformed PostgreSQL URL",
			secrets: []string{"hunter2pw"},
		},
		{
			name: "unsupported database scheme",
			vars: map[string]string{"CONNECTD_DATABASE_URL": "mysql://root@localhost/db"},
			want: `unsupported scheme "mysql"`,
		},
		{
			name:    "malformed encryption key",
			vars:    map[string]string{"CONNECTD_ENCRYPTION_KEYS": "1:c2hvcnQ-not-base64!!"},
			want:    "CONNECTD_ENCRYPTION_KEYS: encryption: key ring entry 1 (id 1): key is not valid",
			secrets: []string{"c2hvcnQ-not-base64"},
		},
		{
			name:    "short session key",
			vars:    map[string]string{"CONNECTD_SESSION_KEYS": "7:c2hvcnQ="},
			want:    "CONNECTD_SESSION_KEYS: encryption: key ring entry 1 (id 7): key is 5 bytes, want 32",
			secrets: []string{"c2hvcnQ="},
		},
		{
			name: "PostgreSQL without keys",
			vars: map[string]string{"CONNECTD_DATABASE_URL": "postgres://postgres@127.0.0.1:1/none"},
			want: "CONNECTD_ENCRYPTION_KEYS is required with PostgreSQL",
		},
		{
			name: "unwritable data dir",
			vars: map[string]string{"CONNECTD_DATA_DIR": filepath.Join(fileAsParent, "data")},
			want: "cannot be used: not a directory",
		},
		{
			name: "bad CIDR",
			vars: map[string]string{"CONNECTD_TRUSTED_PROXIES": "10.0.0.0/33"},
			want: `CONNECTD_TRUSTED_PROXIES: "10.0.0.0/33" is not a CIDR`,
		},
		{
			name: "bad duration",
			vars: map[string]string{"CONNECTD_SESSION_TTL": "forever"},
			want: `CONNECTD_SESSION_TTL: "forever" is not a positive duration`,
		},
		{
			name: "wildcard CORS origin",
			vars: map[string]string{"CONNECTD_CORS_ORIGINS": "*"},
			want: "wildcards and null are not allowed",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, ok := tc.vars["CONNECTD_DATA_DIR"]; !ok {
				tc.vars["CONNECTD_DATA_DIR"] = filepath.Join(t.TempDir(), "data")
			}
			tc.vars["CONNECTD_ADDR"] = "127.0.0.1:0"
			r := run(t, tc.vars, "serve")
			if r.code == 0 {
				t.Fatal("serve started")
			}
			if !strings.Contains(r.lastLine(), tc.want) || !strings.HasPrefix(r.lastLine(), "connectd: ") {
				t.Fatalf("last line %q, want it to contain %q; stderr:\n%s", r.lastLine(), tc.want, r.stderr)
			}
			for _, s := range tc.secrets {
				if strings.Contains(r.stderr, s) {
					t.Fatalf("output leaks %q:\n%s", s, r.stderr)
				}
			}
			if _, err := os.Stat(tc.vars["CONNECTD_DATA_DIR"]); err == nil {
				t.Fatalf("data dir created by a start that failed validation")
			}
		})
	}
}

// started prepares a SQLite data dir by starting once with generated keys.
func started(t *testing.T) (map[string]string, []byte) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	vars := map[string]string{"CONNECTD_DATA_DIR": dir}
	if r := run(t, vars, "migrate"); r.code != 0 {
		t.Fatalf("first start: %d\n%s", r.code, r.stderr)
	}
	keys, err := os.ReadFile(filepath.Join(dir, "keys.env"))
	if err != nil {
		t.Fatal(err)
	}
	return vars, keys
}

func TestStartupRefusesWrongKeys(t *testing.T) {
	cases := []struct {
		name  string
		env   string
		ring  func(t *testing.T) string
		want  string
		setup func(t *testing.T, dir string)
	}{
		{"wrong encryption key", "CONNECTD_ENCRYPTION_KEYS", func(t *testing.T) string { return keyRingText(t, "1") },
			"encryption key 1 does not match the stored check value: wrong key?", nil},
		{"wrong session key", "CONNECTD_SESSION_KEYS", func(t *testing.T) string { return keyRingText(t, "1") },
			"session key 1 does not match the stored check value: wrong key?", nil},
		{"stored key not configured", "CONNECTD_ENCRYPTION_KEYS", func(t *testing.T) string { return keyRingText(t, "2") },
			"stored values use encryption key 1, which is not configured", nil},
		{"keys.env lost", "", nil,
			"the database holds values protected by encryption keys, but none is configured",
			func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "keys.env")) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vars, keysBefore := started(t)
			dir := vars["CONNECTD_DATA_DIR"]
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			if tc.env != "" {
				vars[tc.env] = tc.ring(t)
			}
			r := run(t, vars, "serve")
			if r.code != 1 || !strings.Contains(r.lastLine(), tc.want) {
				t.Fatalf("exit %d, last line %q; want 1 and %q", r.code, r.lastLine(), tc.want)
			}
			after, err := os.ReadFile(filepath.Join(dir, "keys.env"))
			if tc.setup != nil {
				if err == nil {
					t.Fatal("keys.env regenerated over a database that needs the lost keys")
				}
			} else if !bytes.Equal(after, keysBefore) {
				t.Fatal("keys.env changed by a refused start")
			}
			if tc.env != "" && strings.Contains(r.stderr, strings.SplitN(vars[tc.env], ":", 2)[1]) {
				t.Fatal("output contains the key")
			}
		})
	}
}

// TestKeyChecksOnEachBackend runs the key check rules through `connectd
// migrate` on SQLite and PostgreSQL with configured rings.
func TestKeyChecksOnEachBackend(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		dbURL := storetest.NewURL(t, backend)
		enc, ses := keyRingText(t, "1"), keyRingText(t, "1")
		vars := map[string]string{
			"CONNECTD_DATA_DIR":        filepath.Join(t.TempDir(), "data"),
			"CONNECTD_DATABASE_URL":    dbURL,
			"CONNECTD_ENCRYPTION_KEYS": enc,
			"CONNECTD_SESSION_KEYS":    ses,
		}
		r := run(t, vars, "migrate")
		if r.code != 0 || !strings.Contains(r.stdout, "database at migration version") {
			t.Fatalf("migrate: %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(vars["CONNECTD_DATA_DIR"], "keys.env")); err == nil {
			t.Fatal("keys.env written although keys were configured")
		}
		// Same keys again: fine. Rotation: a new primary plus the old key: fine.
		if r := run(t, vars, "migrate"); r.code != 0 {
			t.Fatalf("second migrate: %d\n%s", r.code, r.stderr)
		}
		vars["CONNECTD_ENCRYPTION_KEYS"] = keyRingText(t, "2") + "," + enc
		if r := run(t, vars, "migrate"); r.code != 0 {
			t.Fatalf("migrate with an added key: %d\n%s", r.code, r.stderr)
		}
		// Wrong key 1.
		vars["CONNECTD_ENCRYPTION_KEYS"] = keyRingText(t, "1")
		r = run(t, vars, "migrate")
		if r.code != 1 || !strings.Contains(r.lastLine(), "encryption key 1 does not match the stored check value") {
			t.Fatalf("wrong key: %d %q", r.code, r.lastLine())
		}
	})
}

func TestCLI(t *testing.T) {
	t.Run("no command", func(t *testing.T) {
		if r := run(t, nil); r.code != 2 || !strings.Contains(r.stderr, "Usage:") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("unknown command", func(t *testing.T) {
		r := run(t, nil, "frobnicate")
		if r.code != 2 || r.stderr != "connectd: unknown command \"frobnicate\" (run connectd --help)\n" {
			t.Fatalf("%d %q", r.code, r.stderr)
		}
	})
	t.Run("unknown flag", func(t *testing.T) {
		r := run(t, nil, "serve", "--no-such-flag")
		if r.code != 2 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "no-such-flag") {
			t.Fatalf("%d %q", r.code, r.stderr)
		}
	})
	t.Run("stray argument", func(t *testing.T) {
		if r := run(t, nil, "version", "extra"); r.code != 2 || !strings.Contains(r.stderr, `unexpected argument "extra"`) {
			t.Fatalf("%d %q", r.code, r.stderr)
		}
	})
	t.Run("help everywhere", func(t *testing.T) {
		for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"migrate", "-h"}, {"keys", "--help"}, {"keys", "generate", "--help"}, {"version", "--help"}} {
			r := run(t, nil, args...)
			if r.code != 0 || !strings.Contains(r.stdout, "Usage") || r.stderr != "" {
				t.Fatalf("%v: %d stdout %q stderr %q", args, r.code, r.stdout, r.stderr)
			}
		}
	})
	t.Run("serve help lists every variable", func(t *testing.T) {
		r := run(t, nil, "serve", "--help")
		for _, v := range config.Vars() {
			if !strings.Contains(r.stdout, "--"+v.Flag) || !strings.Contains(r.stdout, v.Env) {
				t.Errorf("serve --help lacks %s / %s", v.Flag, v.Env)
			}
		}
	})
	t.Run("keys generate", func(t *testing.T) {
		r := run(t, nil, "keys", "generate")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if r.code != 0 || len(lines) != 2 {
			t.Fatalf("%d %q", r.code, r.stdout)
		}
		for i, name := range []string{"CONNECTD_ENCRYPTION_KEYS=", "CONNECTD_SESSION_KEYS="} {
			if !strings.HasPrefix(lines[i], name) {
				t.Fatalf("line %d = %q", i, lines[i])
			}
			if _, err := encryption.ParseKeyRing(strings.TrimPrefix(lines[i], name)); err != nil {
				t.Fatalf("line %d does not parse: %v", i, err)
			}
		}
		if again := run(t, nil, "keys", "generate"); again.stdout == r.stdout {
			t.Fatal("keys generate printed the same keys twice")
		}
	})
	t.Run("keys without subcommand", func(t *testing.T) {
		if r := run(t, nil, "keys"); r.code != 2 || !strings.Contains(r.stderr, "missing subcommand") {
			t.Fatalf("%d %q", r.code, r.stderr)
		}
	})
	t.Run("version", func(t *testing.T) {
		if r := run(t, nil, "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "connectd ") {
			t.Fatalf("%d %q", r.code, r.stdout)
		}
	})
	t.Run("flag wins over environment", func(t *testing.T) {
		// The env value is invalid; the flag's valid value must win.
		vars := map[string]string{"CONNECTD_RATE_LIMIT": "many", "CONNECTD_DATA_DIR": filepath.Join(t.TempDir(), "d")}
		if r := run(t, vars, "migrate"); r.code != 1 || !strings.Contains(r.lastLine(), "CONNECTD_RATE_LIMIT") {
			t.Fatalf("env not read: %d %q", r.code, r.lastLine())
		}
		if r := run(t, vars, "migrate", "--rate-limit", "5"); r.code != 0 {
			t.Fatalf("flag did not win: %d %q", r.code, r.lastLine())
		}
	})
}
