package keys_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/encryption"
	"github.com/connectd/connectd/server/keys"
)

func ring(t *testing.T, id string) string {
	t.Helper()
	k, err := encryption.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return id + ":" + base64.StdEncoding.EncodeToString(k)
}

func openStore(t *testing.T, dir string) *gormstore.Store {
	t.Helper()
	k, _ := encryption.GenerateKey(nil)
	kr, _ := encryption.NewKeyRing(1, k)
	st, err := gormstore.Open(context.Background(), gormstore.Options{URL: "sqlite://" + filepath.Join(dir, "db.sqlite"), Sealer: encryption.NewAEAD(kr, nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

func checks(t *testing.T, st store.Keys, name string) map[uint32][]byte {
	t.Helper()
	list, err := st.ListKeyChecks(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint32][]byte{}
	for _, kc := range list {
		out[kc.KeyID] = kc.Check
	}
	return out
}

func TestGenerateThenReuse(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	opts := keys.LoadOptions{DataDir: dir, Generate: true, SessionCheck: session.CheckValue}
	s, err := keys.Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Encryption.Generated() || !s.Session.Generated() {
		t.Fatal("rings not generated")
	}
	if _, err := os.Stat(s.Path()); err == nil {
		t.Fatal("Load wrote keys.env; only Establish may")
	}
	if err := keys.Establish(context.Background(), st, s, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	enc := checks(t, st, keys.EncryptionRing)
	want, _ := s.Encryption.Keys.CheckValue(1)
	if !bytes.Equal(enc[1], want) || len(enc) != 1 {
		t.Fatalf("stored encryption checks %x, want key 1 = %x", enc, want)
	}
	k, _ := s.Session.Keys.Key(1)
	if ses := checks(t, st, keys.SessionRing); !bytes.Equal(ses[1], session.CheckValue(k)) {
		t.Fatal("session check value not stored")
	}
	if bytes.Equal(enc[1], session.CheckValue(k)) {
		t.Fatal("rings share keys")
	}

	// The second load reads the file; Establish passes and writes nothing.
	before, _ := os.ReadFile(s.Path())
	s2, err := keys.Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Encryption.Generated() || s2.Encryption.Keys.Encode() != s.Encryption.Keys.Encode() {
		t.Fatal("second load did not read keys.env")
	}
	if err := keys.Establish(context.Background(), st, s2, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(s.Path())
	if !bytes.Equal(before, after) {
		t.Fatal("keys.env rewritten")
	}
}

func TestConfiguredWinsOverFile(t *testing.T) {
	dir := t.TempDir()
	fileEnc, fileSes, envEnc := ring(t, "1"), ring(t, "1"), ring(t, "9")
	if err := keys.WriteFile(filepath.Join(dir, keys.FileName), map[string]string{keys.EncryptionEnv: fileEnc, keys.SessionEnv: fileSes}); err != nil {
		t.Fatal(err)
	}
	s, err := keys.Load(keys.LoadOptions{DataDir: dir, EncryptionKeys: envEnc, SessionCheck: session.CheckValue})
	if err != nil {
		t.Fatal(err)
	}
	if s.Encryption.Keys.PrimaryID() != 9 || s.Encryption.Source != "configuration" {
		t.Fatalf("encryption ring from %s, primary %d", s.Encryption.Source, s.Encryption.Keys.PrimaryID())
	}
	if s.Session.Source != s.Path() {
		t.Fatalf("session ring from %s, want the file", s.Session.Source)
	}
}

func TestLoadErrors(t *testing.T) {
	cases := []struct {
		name, file string
		opts       keys.LoadOptions
		want       string
	}{
		{name: "postgres without keys", want: "CONNECTD_ENCRYPTION_KEYS is required with PostgreSQL"},
		{name: "postgres without session keys", opts: keys.LoadOptions{EncryptionKeys: "1:" + base64.StdEncoding.EncodeToString(make([]byte, 32))}, want: "CONNECTD_SESSION_KEYS is required"},
		{name: "malformed configured ring", opts: keys.LoadOptions{EncryptionKeys: "1:AAAA,2"}, want: "CONNECTD_ENCRYPTION_KEYS: encryption: key ring entry 1 (id 1): key is 3 bytes"},
		{name: "malformed file ring", file: "CONNECTD_SESSION_KEYS=x:AAAA\n", opts: keys.LoadOptions{Generate: true}, want: "CONNECTD_SESSION_KEYS in "},
		{name: "unknown line in file", file: "PASSWORD=hunter2\n", opts: keys.LoadOptions{Generate: true}, want: "keys.env line 1: want CONNECTD_ENCRYPTION_KEYS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.file != "" {
				if err := os.WriteFile(filepath.Join(dir, keys.FileName), []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			tc.opts.DataDir = dir
			_, err := keys.Load(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "AAAA") {
				t.Fatalf("error echoes file content: %v", err)
			}
		})
	}
}

func TestEstablishRefuses(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	enc, ses := ring(t, "1"), ring(t, "1")
	load := func(e, s string) *keys.Set {
		set, err := keys.Load(keys.LoadOptions{DataDir: dir, EncryptionKeys: e, SessionKeys: s, SessionCheck: session.CheckValue})
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	if err := keys.Establish(context.Background(), st, load(enc, ses), hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, enc, ses, want string }{
		{"wrong encryption key", ring(t, "1"), ses, "encryption key 1 does not match the stored check value: wrong key?"},
		{"wrong session key", enc, ring(t, "1"), "session key 1 does not match the stored check value: wrong key?"},
		{"stored key missing", ring(t, "3"), ses, "stored values use encryption key 1, which is not configured"},
		{"old key kept as secondary but wrong", ring(t, "2") + "," + ring(t, "1"), ses, "encryption key 1 does not match"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := keys.Establish(context.Background(), st, load(tc.enc, tc.ses), hclog.NewNullLogger())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if c := checks(t, st, keys.EncryptionRing); len(c) != 1 {
				t.Fatalf("a refused start stored checks: %v", c)
			}
		})
	}
	// Rotation: a new primary in front of the old key is accepted and its
	// check stored.
	if err := keys.Establish(context.Background(), st, load(ring(t, "2")+","+enc, ses), hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	if c := checks(t, st, keys.EncryptionRing); len(c) != 2 {
		t.Fatalf("after adding key 2: checks for %d keys", len(c))
	}
}

func TestWriteFileIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, keys.FileName)
	if err := keys.WriteFile(path, map[string]string{keys.EncryptionEnv: "1:x"}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	// A directory where the file should go: the rename fails, the
	// temporary file is cleaned up.
	blocked := filepath.Join(dir, "blocked")
	if err := os.MkdirAll(filepath.Join(blocked, keys.FileName, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := keys.WriteFile(filepath.Join(blocked, keys.FileName), map[string]string{keys.EncryptionEnv: "1:x"}); err == nil {
		t.Fatal("write over a non-empty directory succeeded")
	}
	if m, _ := filepath.Glob(filepath.Join(blocked, ".keys.env-*")); len(m) != 0 {
		t.Fatalf("temporary files left: %v", m)
	}
}

func TestGenerateLines(t *testing.T) {
	out, err := keys.GenerateLines(nil)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], keys.EncryptionEnv+"=1:") || !strings.HasPrefix(lines[1], keys.SessionEnv+"=1:") {
		t.Fatalf("lines %q", lines)
	}
}
