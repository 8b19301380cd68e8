package keys

import (
	"errors"
	"fmt"

	"github.com/connectd/connectd/encryption"
)

// Ring returns the ring named name (EncryptionRing or SessionRing).
func (s *Set) Ring(name string) (*Ring, error) {
	for _, r := range s.Rings() {
		if r.Name == name {
			return r, nil
		}
	}
	return nil, fmt.Errorf("unknown key ring %q (want %s or %s)", name, EncryptionRing, SessionRing)
}

// FromFile reports whether r was read from (or generated into) keys.env,
// so that the operator commands may rewrite it.
func (s *Set) FromFile(r *Ring) bool { return r.Source == s.Path() || r.Generated() }

// Replace stores kr as ring r's new content. When the ring comes from
// keys.env the file is rewritten atomically (keeping the other ring's
// line) and written is true; otherwise nothing is written and line is
// the "NAME=RING" line the operator must deploy to every replica.
func (s *Set) Replace(r *Ring, kr *encryption.KeyRing) (written bool, line string, err error) {
	if r == nil || kr == nil {
		return false, "", errors.New("keys: replace: ring and key ring are required")
	}
	line = r.Env + "=" + kr.Encode()
	if !s.FromFile(r) {
		return false, line, nil
	}
	lines := map[string]string{}
	for k, v := range s.fileLines {
		lines[k] = v
	}
	lines[r.Env] = kr.Encode()
	if err := WriteFile(s.Path(), lines); err != nil {
		return false, "", err
	}
	s.fileLines = lines
	r.Keys, r.Source = kr, s.Path()
	return true, line, nil
}
