// Package keys brings connectd's two key rings (encryption and session
// signing) up at start: from configuration (flags/environment), else from
// <data dir>/keys.env, else - on SQLite only - freshly generated into
// keys.env. It then proves every configured key against the check value
// stored for it, so a wrong or missing key fails at start, not on the first
// request.
//
// Order matters for "nothing half-written": generated keys are written to
// keys.env (atomically, mode 0600) only after the database has been checked
// and before any check value for them is stored, so a database never holds
// checks for keys nobody has.
package keys

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/encryption"
)

// FileName is the generated keys file inside the data dir.
const FileName = "keys.env"

// Ring names, as stored in store.KeyCheck.Ring.
const (
	EncryptionRing = "encryption"
	SessionRing    = "session"
)

// Environment variable names (also the keys.env line names).
const (
	EncryptionEnv = "CONNECTD_ENCRYPTION_KEYS"
	SessionEnv    = "CONNECTD_SESSION_KEYS"
)

// Ring is one named key ring and where it came from.
type Ring struct {
	Name string // EncryptionRing or SessionRing
	Env  string // EncryptionEnv or SessionEnv
	Keys *encryption.KeyRing
	// Source is "configuration", "<path>" (keys.env) or "generated".
	Source string
	// Check computes the check value of the key with id. The encryption
	// ring uses (*encryption.KeyRing).CheckValue; the session ring the
	// session package's own (a different label, so the two never collide).
	Check func(id uint32) ([]byte, error)
}

// Generated reports whether the ring was generated at this start.
func (r *Ring) Generated() bool { return r.Source == "generated" }

// Set is the two rings of a server.
type Set struct {
	Encryption *Ring
	Session    *Ring
	dataDir    string
	fileLines  map[string]string // keys.env content as read
}

// Rings returns both rings, encryption first.
func (s *Set) Rings() []*Ring { return []*Ring{s.Encryption, s.Session} }

// Path is the keys.env path.
func (s *Set) Path() string { return filepath.Join(s.dataDir, FileName) }

// LoadOptions says where keys may come from.
type LoadOptions struct {
	DataDir        string
	EncryptionKeys string // configured text (flag/env); empty: not configured
	SessionKeys    string
	// Generate allows generating missing rings (SQLite). When false a
	// missing ring is an error (PostgreSQL).
	Generate bool
	// SessionCheck computes a session key's check value from its bytes
	// (core/session's CheckValue).
	SessionCheck func(key []byte) []byte
	// Rand is the randomness for generated keys (crypto/rand when nil).
	Rand io.Reader
}

// Load resolves both rings. Configuration wins over keys.env. Nothing is
// written here: generated rings are persisted by Establish.
func Load(opts LoadOptions) (*Set, error) {
	s := &Set{dataDir: opts.DataDir}
	path := s.Path()
	lines, err := readFile(path)
	if err != nil {
		return nil, err
	}
	s.fileLines = lines
	mk := func(name, env, configured string) (*Ring, error) {
		r := &Ring{Name: name, Env: env}
		text, src := configured, "configuration"
		if text == "" && lines[env] != "" {
			text, src = lines[env], path
		}
		if text == "" {
			if !opts.Generate {
				return nil, fmt.Errorf("%s is required with PostgreSQL: set it (generate one with `connectd keys generate`)", env)
			}
			key, err := encryption.GenerateKey(opts.Rand)
			if err != nil {
				return nil, fmt.Errorf("generate %s key: %w", name, err)
			}
			kr, err := encryption.NewKeyRing(1, key)
			if err != nil {
				return nil, fmt.Errorf("generate %s key: %w", name, err)
			}
			r.Keys, r.Source = kr, "generated"
			return r, nil
		}
		kr, err := encryption.ParseKeyRing(text)
		if err != nil {
			// ParseKeyRing names the entry, never the key.
			where := env
			if src != "configuration" {
				where = env + " in " + path
			}
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		r.Keys, r.Source = kr, src
		return r, nil
	}
	if s.Encryption, err = mk(EncryptionRing, EncryptionEnv, opts.EncryptionKeys); err != nil {
		return nil, err
	}
	if s.Session, err = mk(SessionRing, SessionEnv, opts.SessionKeys); err != nil {
		return nil, err
	}
	enc := s.Encryption.Keys
	s.Encryption.Check = enc.CheckValue
	ses := s.Session.Keys
	s.Session.Check = func(id uint32) ([]byte, error) {
		if opts.SessionCheck == nil {
			return nil, errors.New("keys: no session check function")
		}
		k, ok := ses.Key(id)
		if !ok {
			return nil, fmt.Errorf("session key %d is not in the ring", id)
		}
		return opts.SessionCheck(k), nil
	}
	return s, nil
}

// Establish checks every ring against the stored check values, writes
// generated rings to keys.env, then stores check values for configured keys
// that have none. It refuses (returning an error, having written nothing)
// when a configured key does not match its check value or when a stored
// check names a key id that is not configured.
func Establish(ctx context.Context, st store.Keys, s *Set, logger hclog.Logger) error {
	var missing []store.KeyCheck
	for _, r := range s.Rings() {
		stored, err := st.ListKeyChecks(ctx, r.Name)
		if err != nil {
			return fmt.Errorf("read %s key check values: %w", r.Name, err)
		}
		if r.Generated() && len(stored) > 0 {
			return fmt.Errorf("the database holds values protected by %s keys, but none is configured and %s has none: restore %s or set %s", r.Name, s.Path(), FileName, r.Env)
		}
		configured := r.Keys.IDs()
		have := map[uint32]bool{}
		for _, kc := range stored {
			have[kc.KeyID] = true
			if !slices.Contains(configured, kc.KeyID) {
				return fmt.Errorf("stored values use %s key %d, which is not configured (%s lists keys %s)", r.Name, kc.KeyID, r.Env, ids(configured))
			}
			want, err := r.Check(kc.KeyID)
			if err != nil {
				return fmt.Errorf("%s key %d: %w", r.Name, kc.KeyID, err)
			}
			if subtle.ConstantTimeCompare(want, kc.Check) != 1 {
				return fmt.Errorf("%s key %d does not match the stored check value: wrong key?", r.Name, kc.KeyID)
			}
		}
		for _, id := range configured {
			if have[id] {
				continue
			}
			c, err := r.Check(id)
			if err != nil {
				return fmt.Errorf("%s key %d: %w", r.Name, id, err)
			}
			missing = append(missing, store.KeyCheck{Ring: r.Name, KeyID: id, Check: c})
		}
	}
	if err := s.persistGenerated(logger); err != nil {
		return err
	}
	for _, kc := range missing {
		if err := st.PutKeyCheck(ctx, kc); err != nil {
			return fmt.Errorf("store %s key %d check value: %w", kc.Ring, kc.KeyID, err)
		}
		logger.Info("stored key check value", "ring", kc.Ring, "key_id", kc.KeyID)
	}
	return nil
}

func ids(list []uint32) string {
	parts := make([]string, len(list))
	for i, id := range list {
		parts[i] = fmt.Sprint(id)
	}
	return strings.Join(parts, ",")
}

// persistGenerated writes keys.env when a ring was generated, keeping the
// lines it already had.
func (s *Set) persistGenerated(logger hclog.Logger) error {
	var gen []*Ring
	for _, r := range s.Rings() {
		if r.Generated() {
			gen = append(gen, r)
		}
	}
	if len(gen) == 0 {
		return nil
	}
	lines := map[string]string{}
	for k, v := range s.fileLines {
		lines[k] = v
	}
	for _, r := range gen {
		lines[r.Env] = r.Keys.Encode()
	}
	if err := WriteFile(s.Path(), lines); err != nil {
		return err
	}
	for _, r := range gen {
		r.Source = s.Path()
		logger.Info("generated key ring; back this file up: without it stored secrets cannot be read", "ring", r.Name, "path", s.Path())
	}
	return nil
}

// EnsureDir creates dir (mode 0700) if needed and proves it is writable,
// leaving nothing behind.
func EnsureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir %s cannot be created: %w", dir, unwrapPath(err))
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, unwrapPath(err))
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("data dir %s: %w", dir, unwrapPath(err))
	}
	return nil
}

// unwrapPath drops the *fs.PathError wrapper (which repeats the path).
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// WriteFile writes a keys file atomically: a temporary file in the same
// directory (mode 0600), synced, then renamed over path. On any failure the
// temporary file is removed and path is untouched.
func WriteFile(path string, lines map[string]string) (err error) {
	dir := filepath.Dir(path)
	if err := EnsureDir(dir); err != nil {
		return err
	}
	var buf bytes.Buffer
	buf.WriteString("# connectd key rings (generated). Keep this file secret and backed up:\n# without it, stored secrets cannot be read and sessions cannot be verified.\n")
	names := make([]string, 0, len(lines))
	for k := range lines {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		fmt.Fprintf(&buf, "%s=%s\n", k, lines[k])
	}
	f, err := os.CreateTemp(dir, ".keys.env-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	if _, err = f.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // make the rename durable; best effort on filesystems without directory fsync
		d.Close()
	}
	return nil
}

// readFile parses keys.env: NAME=VALUE lines, # comments, blank lines. A
// missing file is empty. Errors name the line, never its value.
func readFile(path string) (map[string]string, error) {
	out := map[string]string{}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if errors.Is(err, syscall.ENOTDIR) {
		return nil, fmt.Errorf("data dir %s cannot be used: not a directory", filepath.Dir(path))
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, unwrapPath(err))
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		name = strings.TrimSpace(name)
		if !ok || (name != EncryptionEnv && name != SessionEnv) {
			return nil, fmt.Errorf("%s line %d: want %s=<ring> or %s=<ring>", path, n, EncryptionEnv, SessionEnv)
		}
		value = strings.Trim(strings.TrimSpace(value), `"'`)
		out[name] = value
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// GenerateLines returns fresh key ring lines for both rings, as
// `keys generate` prints them.
func GenerateLines(rand io.Reader) (string, error) {
	var b strings.Builder
	for _, env := range []string{EncryptionEnv, SessionEnv} {
		key, err := encryption.GenerateKey(rand)
		if err != nil {
			return "", err
		}
		kr, err := encryption.NewKeyRing(1, key)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s=%s\n", env, kr.Encode())
	}
	return b.String(), nil
}
