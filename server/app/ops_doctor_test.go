package app_test

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/connectd/connectd/connectors"
	"github.com/connectd/connectd/manifests"
	"github.com/connectd/connectd/server/app"
)

func runDoctor(t *testing.T, vars map[string]string, args ...string) result {
	t.Helper()
	var out, errb lockedBuffer
	code := app.Run(context.Background(), append([]string{"doctor"}, args...), app.Env{Stdout: &out, Stderr: &errb, Getenv: getenv(vars), Manifests: manifests.FS}, connectors.All())
	r := result{code, out.String(), errb.String()}
	t.Logf("connectd doctor (exit %d):\n%s", code, r.stdout)
	return r
}

// line finds the report line of a check and returns its status.
func line(t *testing.T, out, check string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^(OK|WARN|FAIL)\s+` + regexp.QuoteMeta(check) + `\s+(.*)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q line in:\n%s", check, out)
	}
	return m[1] + " " + m[2]
}

func TestDoctor(t *testing.T) {
	healthy := func(t *testing.T) map[string]string {
		vars, _ := started(t)
		vars["CONNECTD_PUBLIC_URL"] = "https://connectd.example.com"
		vars["PIPEDRIVE_CLIENT_ID"] = "pd-client"
		vars["PIPEDRIVE_CLIENT_SECRET"] = "pd-secret-canary"
		return vars
	}

	t.Run("healthy", func(t *testing.T) {
		vars := healthy(t)
		st := openStore(t, vars)
		seedLogins(t, st, "pipedrive", 2)
		st.Close()
		r := runDoctor(t, vars)
		if r.code != 0 || strings.Contains(r.stdout, "FAIL ") {
			t.Fatalf("healthy setup: exit %d", r.code)
		}
		for check, want := range map[string]string{
			"database":              "OK sqlite at ",
			"migrations":            "OK version ",
			"encryption key checks": "OK 1 key(s) match",
			"session key checks":    "OK 1 key(s) match",
			"sealed values":         "OK 4 value(s), all under the primary key 1",
			"manifests":             "OK ",
			"connector pipedrive":   "OK available (oauth; client id and secret set)",
			"connector insightly":   "OK available (apiKey)",
			"connector clio":        "WARN unavailable: ",
			"public URL":            "OK https://connectd.example.com",
			"redirect URI":          "OK register https://connectd.example.com/oauth/callback",
		} {
			if got := line(t, r.stdout, check); !strings.HasPrefix(got, want) {
				t.Errorf("%s: %q, want prefix %q", check, got, want)
			}
		}
		if !strings.Contains(r.stdout, "0 FAIL") || strings.Contains(r.stdout, "pd-secret-canary") {
			t.Errorf("summary or leak:\n%s", r.stdout)
		}
	})

	t.Run("wrong key", func(t *testing.T) {
		vars := healthy(t)
		vars["CONNECTD_ENCRYPTION_KEYS"] = keyRingText(t, "1")
		r := runDoctor(t, vars)
		if r.code != 1 {
			t.Fatalf("exit %d, want 1", r.code)
		}
		if got := line(t, r.stdout, "encryption key checks"); !strings.HasPrefix(got, "FAIL encryption key 1 does not match its stored check value: wrong key") {
			t.Errorf("got %q", got)
		}
		if !strings.Contains(r.stdout, "fix: restore the right value of key 1 in CONNECTD_ENCRYPTION_KEYS") {
			t.Errorf("no fix line")
		}
		if got := line(t, r.stdout, "session key checks"); !strings.HasPrefix(got, "OK") {
			t.Errorf("session checks: %q", got)
		}
	})

	t.Run("missing connector secret", func(t *testing.T) {
		vars := healthy(t)
		st := openStore(t, vars)
		seedLogins(t, st, "pipedrive", 1)
		st.Close()
		delete(vars, "PIPEDRIVE_CLIENT_SECRET")
		r := runDoctor(t, vars)
		if r.code != 1 {
			t.Fatalf("exit %d, want 1", r.code)
		}
		got := line(t, r.stdout, "connector pipedrive")
		if !strings.HasPrefix(got, "FAIL unavailable and stored logins use it") || !strings.Contains(got, "PIPEDRIVE_CLIENT_SECRET") {
			t.Errorf("got %q", got)
		}
	})

	t.Run("unreachable database", func(t *testing.T) {
		vars := healthy(t)
		vars["CONNECTD_DATABASE_URL"] = "postgres://connectd:hunter2pw@127.0.0.1:1/connectd?sslmode=disable&connect_timeout=2"
		vars["CONNECTD_ENCRYPTION_KEYS"] = keyRingText(t, "1")
		vars["CONNECTD_SESSION_KEYS"] = keyRingText(t, "1")
		r := runDoctor(t, vars)
		if r.code != 1 {
			t.Fatalf("exit %d, want 1", r.code)
		}
		got := line(t, r.stdout, "database")
		if !strings.HasPrefix(got, "FAIL postgres database postgres://connectd:xxxxx@127.0.0.1:1/connectd") || !strings.Contains(got, "unreachable") {
			t.Errorf("got %q", got)
		}
		if strings.Contains(r.stdout, "hunter2pw") {
			t.Error("the database password appears in the report")
		}
		// The checks that do not need the database still ran.
		if got := line(t, r.stdout, "manifests"); !strings.HasPrefix(got, "OK") {
			t.Errorf("manifests: %q", got)
		}
	})
}
