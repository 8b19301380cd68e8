package scaffold_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/server/scaffold"
)

// moduleRoot is the repository root (two levels up from this package).
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s", root)
	}
	return root
}

// scratchModule copies go.mod, go.sum and every package of this module the
// generated code and the connector list need (with their embedded files)
// into a temporary directory: a scratch copy of the module to generate
// into, built offline from the module cache.
func scratchModule(t *testing.T, root string) string {
	t.Helper()
	dst := t.TempDir()
	for _, f := range []string{"go.mod", "go.sum"} {
		copyFile(t, filepath.Join(root, f), filepath.Join(dst, f))
	}
	cmd := exec.Command("go", "list", "-deps", "-test", "-f", `{{if not .Standard}}{{.Dir}}{{range .EmbedFiles}}|{{.}}{{end}}{{end}}`,
		"./connectors/...", "./core/connectortest/conformance", "./manifests")
	cmd.Dir = root
	cmd.Env = offlineEnv()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderrOf(err))
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.Split(line, "|")
		dir := parts[0]
		rel, err := filepath.Rel(root, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // a dependency from the module cache
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Type().IsRegular() {
				copyFile(t, filepath.Join(dir, e.Name()), filepath.Join(dst, rel, e.Name()))
			}
		}
		for _, emb := range parts[1:] {
			copyFile(t, filepath.Join(dir, emb), filepath.Join(dst, rel, emb))
		}
	}
	return dst
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// offlineEnv builds with the module cache only.
func offlineEnv() []string {
	return append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly", "GOWORK=off")
}

// The subtests the kit must run for each auth type (none skipped).
var wantSubtests = map[string][]string{
	"oauth": {"login", "user_info", "refresh", "concurrent_refresh", "logout", "faults",
		"faults/token_endpoint_5xx_at_login", "faults/429_on_refresh", "faults/slow_refresh",
		"faults/lost_response", "faults/invalid_grant", "faults/200_with_error"},
	"apiKey": {"login", "user_info", "wrong_key", "validation", "logout", "faults",
		"faults/5xx", "faults/429", "faults/lost_response", "faults/slow"},
}

// The scaffold's output compiles, registers, validates and passes the
// conformance kit as generated, in a scratch copy of the module.
func TestGeneratedConnectorsPassTheKit(t *testing.T) {
	root := moduleRoot(t)
	dst := scratchModule(t, root)
	names := map[string]string{"oauth": "acmeoauth", "apiKey": "acmekey"}
	for _, auth := range []string{"oauth", "apiKey"} {
		var stdout, stderr bytes.Buffer
		if code := scaffold.ScaffoldCommand([]string{names[auth], "--auth", auth}, dst, &stdout, &stderr); code != 0 {
			t.Fatalf("scaffold %s: exit %d: %s", auth, code, stderr.String())
		}
		for _, f := range []string{"connectors/" + names[auth] + "/" + names[auth] + ".go", "connectors/" + names[auth] + "/" + names[auth] + "_test.go", "manifests/" + names[auth] + ".json", "connectors/connectors.go"} {
			if !strings.Contains(stdout.String(), "wrote "+f) {
				t.Errorf("scaffold %s did not report writing %s:\n%s", auth, f, stdout.String())
			}
		}
	}
	reg, _ := os.ReadFile(filepath.Join(dst, "connectors", "connectors.go"))
	for _, n := range names {
		if !regexp.MustCompile(`"`+n+`":\s+`+n+`\.New,`).Match(reg) || !strings.Contains(string(reg), `"github.com/connectd/connectd/connectors/`+n+`"`) {
			t.Errorf("connectors.go lacks the registration of %s:\n%s", n, reg)
		}
	}
	// `connectd manifest validate` on the generated manifests.
	if ps := manifest.ValidateFiles([]string{filepath.Join(dst, "manifests", names["oauth"]+".json"), filepath.Join(dst, "manifests", names["apiKey"]+".json")}); len(ps) > 0 {
		t.Fatalf("generated manifests do not validate: %v", ps)
	}

	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = dst
		cmd.Env = offlineEnv()
		out, err := cmd.CombinedOutput()
		if err != nil && args[0] != "test" {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	run("vet", "./connectors/...")
	// The registered list builds with the new connectors (and the embedded
	// manifests agree with it: the registry test below loads both).
	run("build", "./connectors")

	out := run("test", "-json", "-count=1", "./connectors/"+names["oauth"]+"/", "./connectors/"+names["apiKey"]+"/")
	results := map[string]map[string]string{} // package short name -> test -> action
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var raw []string
	for sc.Scan() {
		var e struct {
			Action, Test, Package, Output string
		}
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			raw = append(raw, sc.Text())
			continue
		}
		if e.Action == "output" {
			raw = append(raw, strings.TrimRight(e.Output, "\n"))
		}
		if e.Test == "" || (e.Action != "pass" && e.Action != "fail" && e.Action != "skip") {
			continue
		}
		pkg := e.Package[strings.LastIndex(e.Package, "/")+1:]
		if results[pkg] == nil {
			results[pkg] = map[string]string{}
		}
		results[pkg][e.Test] = e.Action
	}
	for auth, name := range names {
		got := results[name]
		if got["TestConformance"] != "pass" {
			t.Errorf("%s: TestConformance %q\n%s", name, got["TestConformance"], strings.Join(raw, "\n"))
			continue
		}
		for _, sub := range wantSubtests[auth] {
			if a := got["TestConformance/"+sub]; a != "pass" {
				t.Errorf("%s: kit subtest %s: %q, want pass (ran and not skipped)", name, sub, a)
			}
		}
		for test, a := range got {
			if a == "skip" {
				t.Errorf("%s: %s was skipped", name, test)
			}
		}
		var subs []string
		for test := range got {
			if strings.HasPrefix(test, "TestConformance/") {
				subs = append(subs, strings.TrimPrefix(test, "TestConformance/"))
			}
		}
		slices.Sort(subs)
		t.Logf("%s (%s): %d kit subtests passed: %v", name, auth, len(subs), subs)
	}
}

func TestScaffoldCommandUsage(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no name", []string{"--auth", "oauth"}, 2, "NAME is required"},
		{"bad auth", []string{"acme", "--auth", "saml"}, 2, `--auth must be "oauth" or "apiKey"`},
		{"no auth", []string{"acme"}, 2, `--auth must be`},
		{"upper case", []string{"Acme", "--auth", "oauth"}, 2, "lower-case"},
		{"path", []string{"../evil", "--auth", "oauth"}, 2, "lower-case"},
		{"keyword", []string{"func", "--auth", "oauth"}, 2, "lower-case"},
		{"extra", []string{"acme", "--auth", "oauth", "more"}, 2, "unexpected argument"},
		{"unknown flag", []string{"acme", "--auht", "oauth"}, 2, "flag provided but not defined"},
		{"no connector list", []string{"acme", "--auth", "oauth"}, 1, "connector list"},
		{"not a module", []string{"acme", "--auth", "oauth", "--root", filepath.Join(root, "nope")}, 1, "no go.mod"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := scaffold.ScaffoldCommand(tc.args, root, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", code, tc.code, stderr.String(), tc.want)
			}
		})
	}
	// Nothing was written by the failures.
	if _, err := os.Stat(filepath.Join(root, "connectors", "acme")); err == nil {
		t.Error("a failed scaffold left a package directory")
	}
}

// It never overwrites, and never registers twice.
func TestScaffoldRefusesToOverwrite(t *testing.T) {
	root := t.TempDir()
	copyFile(t, filepath.Join(moduleRoot(t), "go.mod"), filepath.Join(root, "go.mod"))
	copyFile(t, filepath.Join(moduleRoot(t), "connectors", "connectors.go"), filepath.Join(root, "connectors", "connectors.go"))
	var out, errb bytes.Buffer
	if code := scaffold.ScaffoldCommand([]string{"--auth", "apiKey", "acme"}, root, &out, &errb); code != 0 {
		t.Fatalf("first: %d %s", code, errb.String())
	}
	before, _ := os.ReadFile(filepath.Join(root, "connectors", "acme", "acme.go"))
	if err := os.WriteFile(filepath.Join(root, "connectors", "acme", "acme.go"), append(before, []byte("// edited\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	if code := scaffold.ScaffoldCommand([]string{"acme", "--auth", "apiKey"}, root, &out, &errb); code != 1 || !strings.Contains(errb.String(), "already exists") {
		t.Fatalf("second: %d %s", code, errb.String())
	}
	after, _ := os.ReadFile(filepath.Join(root, "connectors", "acme", "acme.go"))
	if !bytes.HasSuffix(after, []byte("// edited\n")) {
		t.Error("the author's edits were overwritten")
	}
	// Registration alone (package removed) is refused too.
	if err := os.RemoveAll(filepath.Join(root, "connectors", "acme")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "manifests", "acme.json")); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	if code := scaffold.ScaffoldCommand([]string{"acme", "--auth", "apiKey"}, root, &out, &errb); code != 1 || !strings.Contains(errb.String(), "already registered") {
		t.Fatalf("re-register: %d %s", code, errb.String())
	}
}
