package keys_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/connectd/connectd/encryption"
	"github.com/connectd/connectd/server/keys"
)

func TestReplace(t *testing.T) {
	k1, _ := encryption.GenerateKey(nil)
	k2, _ := encryption.GenerateKey(nil)
	r1, _ := encryption.NewKeyRing(1, k1)
	r12, err := r1.Add(2, k2)
	if err != nil {
		t.Fatal(err)
	}
	check := func([]byte) []byte { return []byte("c") }

	t.Run("from keys.env: rewritten, other ring kept", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, keys.FileName)
		if err := keys.WriteFile(path, map[string]string{keys.EncryptionEnv: r1.Encode(), keys.SessionEnv: r1.Encode()}); err != nil {
			t.Fatal(err)
		}
		s, err := keys.Load(keys.LoadOptions{DataDir: dir, SessionCheck: check})
		if err != nil {
			t.Fatal(err)
		}
		ring, err := s.Ring(keys.EncryptionRing)
		if err != nil {
			t.Fatal(err)
		}
		written, line, err := s.Replace(ring, r12)
		if err != nil || !written || line != keys.EncryptionEnv+"="+r12.Encode() {
			t.Fatalf("Replace = %v %v", written, err)
		}
		b, _ := os.ReadFile(path)
		if !strings.Contains(string(b), keys.EncryptionEnv+"="+r12.Encode()+"\n") || !strings.Contains(string(b), keys.SessionEnv+"="+r1.Encode()+"\n") {
			t.Fatal("keys.env does not hold the new encryption ring and the old session ring")
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v", fi.Mode().Perm())
		}
	})
	t.Run("from configuration: printed, nothing written", func(t *testing.T) {
		dir := t.TempDir()
		s, err := keys.Load(keys.LoadOptions{DataDir: dir, EncryptionKeys: r1.Encode(), SessionKeys: r1.Encode(), SessionCheck: check})
		if err != nil {
			t.Fatal(err)
		}
		ring, _ := s.Ring(keys.SessionRing)
		written, line, err := s.Replace(ring, r12)
		if err != nil || written || line != keys.SessionEnv+"="+r12.Encode() {
			t.Fatalf("Replace = %v %v %v", written, line != "", err)
		}
		if _, err := os.Stat(filepath.Join(dir, keys.FileName)); err == nil {
			t.Fatal("keys.env written for configured keys")
		}
	})
	t.Run("unknown ring", func(t *testing.T) {
		s, _ := keys.Load(keys.LoadOptions{DataDir: t.TempDir(), EncryptionKeys: r1.Encode(), SessionKeys: r1.Encode(), SessionCheck: check})
		if _, err := s.Ring("signing"); err == nil {
			t.Fatal("unknown ring accepted")
		}
	})
}
