// Package encryption seals connectd's secrets at rest: a key ring of 32-byte
// keys (one primary that seals, every key opens) and AES-256-GCM with
// mandatory associated data, so a ciphertext copied to another row or field
// does not open.
//
// Ciphertext format (decisions.md, security.md "Secrets at rest"):
//
//	version(1) = 1 | key id(4, big endian) | nonce(12) | sealed (with 16-byte tag)
//
// The package imports nothing from the project and only the standard
// library, so key handling can be read and audited on its own.
package encryption

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
)

// KeySize is the size of every key in a ring: AES-256 keys and HMAC-SHA256
// session signing keys alike.
const KeySize = 32

// encryptionCheckLabel is MACed by CheckValue; a constant so a stored check
// value can be recomputed at start.
const encryptionCheckLabel = "connectd encryption key check"

// entry is one key of a ring with its AES-GCM instance built once, because
// building the AES key schedule on every Seal/Open would dominate the hot
// path.
type entry struct {
	id   uint32
	key  []byte
	aead cipher.AEAD
}

// KeyRing is an immutable set of keys with one primary. Methods that change
// it return a new ring (copy-on-write), so a ring can be shared between
// goroutines without locks and swapped atomically by its owner.
//
// A KeyRing never prints its key material: String, GoString and LogValue
// list only the ids. Build one with ParseKeyRing or NewKeyRing; the zero
// KeyRing holds no key and is not usable.
type KeyRing struct {
	entries []entry // primary first
}

// ParseKeyRing parses the key ring grammar `ID:BASE64[,ID:BASE64...]`: ID a
// decimal uint32, BASE64 standard encoding with padding of exactly 32 bytes.
// The first entry is the primary. Spaces around entries are ignored.
// Errors name the entry by position (and id, once parsed) and say what is
// wrong; they never contain key material.
func ParseKeyRing(text string) (*KeyRing, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, errors.New("encryption: key ring is empty (want ID:BASE64[,ID:BASE64...])")
	}
	parts := strings.Split(text, ",")
	r := &KeyRing{entries: make([]entry, 0, len(parts))}
	for i, part := range parts {
		pos := i + 1
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("encryption: key ring entry %d: empty entry", pos)
		}
		idText, keyText, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("encryption: key ring entry %d: missing ':' between id and key (want ID:BASE64)", pos)
		}
		// The id text is not echoed: a malformed entry might be key material
		// in the wrong place.
		id, err := strconv.ParseUint(strings.TrimSpace(idText), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("encryption: key ring entry %d: id is not a decimal number in 0..4294967295", pos)
		}
		key, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSpace(keyText))
		if err != nil {
			return nil, fmt.Errorf("encryption: key ring entry %d (id %d): key is not valid standard base64 with padding", pos, id)
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("encryption: key ring entry %d (id %d): key is %d bytes, want %d", pos, id, len(key), KeySize)
		}
		if err := r.checkNew(uint32(id), key); err != nil {
			return nil, fmt.Errorf("encryption: key ring entry %d (id %d): %w", pos, id, err)
		}
		e, err := newEntry(uint32(id), key)
		if err != nil {
			return nil, fmt.Errorf("encryption: key ring entry %d (id %d): %w", pos, id, err)
		}
		r.entries = append(r.entries, e)
	}
	return r, nil
}

// GenerateKey returns KeySize random bytes from r (crypto/rand when nil).
func GenerateKey(r io.Reader) ([]byte, error) {
	if r == nil {
		r = rand.Reader
	}
	key := make([]byte, KeySize)
	if _, err := io.ReadFull(r, key); err != nil {
		return nil, fmt.Errorf("encryption: generate key: %w", err)
	}
	return key, nil
}

// NewKeyRing returns a ring holding one key, which is its primary.
func NewKeyRing(id uint32, key []byte) (*KeyRing, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("encryption: key id %d: key is %d bytes, want %d", id, len(key), KeySize)
	}
	e, err := newEntry(id, key)
	if err != nil {
		return nil, fmt.Errorf("encryption: key id %d: %w", id, err)
	}
	return &KeyRing{entries: []entry{e}}, nil
}

func newEntry(id uint32, key []byte) (entry, error) {
	k := bytes.Clone(key)
	block, err := aes.NewCipher(k)
	if err != nil {
		return entry{}, fmt.Errorf("build cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return entry{}, fmt.Errorf("build cipher: %w", err)
	}
	return entry{id: id, key: k, aead: aead}, nil
}

// checkNew refuses a duplicate id, and the same key bytes under a second id
// (almost always a copy-paste mistake that would silently defeat rotation).
func (r *KeyRing) checkNew(id uint32, key []byte) error {
	for _, e := range r.entries {
		if e.id == id {
			return errors.New("duplicate key id")
		}
		if subtle.ConstantTimeCompare(e.key, key) == 1 {
			return fmt.Errorf("same key bytes as key id %d", e.id)
		}
	}
	return nil
}

func (r *KeyRing) find(id uint32) (*entry, bool) {
	for i := range r.entries {
		if r.entries[i].id == id {
			return &r.entries[i], true
		}
	}
	return nil, false
}

// Encode returns the ring in the text grammar, primary first. The result
// holds key material: write it only to the keys file or the operator's
// terminal.
func (r *KeyRing) Encode() string {
	var b strings.Builder
	for i, e := range r.entries {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(e.id), 10))
		b.WriteByte(':')
		b.WriteString(base64.StdEncoding.EncodeToString(e.key))
	}
	return b.String()
}

// String describes the ring without key material, e.g.
// "keyring(primary=1, ids=[1 2])". A value receiver so that printing a
// KeyRing value (not only a pointer) is safe too.
func (r KeyRing) String() string {
	if len(r.entries) == 0 {
		return "keyring(empty)"
	}
	return fmt.Sprintf("keyring(primary=%d, ids=%v)", r.entries[0].id, r.IDs())
}

// GoString is String, so %#v does not dump key bytes.
func (r KeyRing) GoString() string { return r.String() }

// LogValue is String, so slog never logs key bytes.
func (r KeyRing) LogValue() slog.Value { return slog.StringValue(r.String()) }

// PrimaryID returns the id of the key that seals and signs.
func (r *KeyRing) PrimaryID() uint32 { return r.entries[0].id }

// IDs returns every key id, primary first.
func (r KeyRing) IDs() []uint32 {
	ids := make([]uint32, len(r.entries))
	for i, e := range r.entries {
		ids[i] = e.id
	}
	return ids
}

// Key returns a copy of the key with id.
func (r *KeyRing) Key(id uint32) ([]byte, bool) {
	e, ok := r.find(id)
	if !ok {
		return nil, false
	}
	return bytes.Clone(e.key), true
}

// Len returns the number of keys.
func (r *KeyRing) Len() int { return len(r.entries) }

// Add returns a ring with key added as a NON-primary entry (it opens and
// verifies but does not seal or sign until promoted). Adding and promoting
// are separate steps so every replica can learn a key before any replica
// uses it.
func (r *KeyRing) Add(id uint32, key []byte) (*KeyRing, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("encryption: add key id %d: key is %d bytes, want %d", id, len(key), KeySize)
	}
	if err := r.checkNew(id, key); err != nil {
		return nil, fmt.Errorf("encryption: add key id %d: %w", id, err)
	}
	e, err := newEntry(id, key)
	if err != nil {
		return nil, fmt.Errorf("encryption: add key id %d: %w", id, err)
	}
	n := &KeyRing{entries: make([]entry, 0, len(r.entries)+1)}
	n.entries = append(n.entries, r.entries...)
	n.entries = append(n.entries, e)
	return n, nil
}

// Promote returns a ring whose primary is id (which must be in the ring);
// the previous primary stays as a non-primary entry.
func (r *KeyRing) Promote(id uint32) (*KeyRing, error) {
	if _, ok := r.find(id); !ok {
		return nil, fmt.Errorf("encryption: promote key id %d: no such key in %s", id, r)
	}
	n := &KeyRing{entries: make([]entry, 0, len(r.entries))}
	for _, e := range r.entries {
		if e.id == id {
			n.entries = append(n.entries, e)
		}
	}
	for _, e := range r.entries {
		if e.id != id {
			n.entries = append(n.entries, e)
		}
	}
	return n, nil
}

// Remove returns a ring without id. The primary cannot be removed: promote
// another key first.
func (r *KeyRing) Remove(id uint32) (*KeyRing, error) {
	if _, ok := r.find(id); !ok {
		return nil, fmt.Errorf("encryption: remove key id %d: no such key in %s", id, r)
	}
	if id == r.PrimaryID() {
		return nil, fmt.Errorf("encryption: remove key id %d: it is the primary; promote another key first", id)
	}
	n := &KeyRing{entries: make([]entry, 0, len(r.entries)-1)}
	for _, e := range r.entries {
		if e.id != id {
			n.entries = append(n.entries, e)
		}
	}
	return n, nil
}

// CheckValue returns HMAC-SHA256(key, "connectd encryption key check") for
// the key with id: deterministic, so the server can store it once and
// compare at every start, and revealing nothing about the key.
func (r *KeyRing) CheckValue(id uint32) ([]byte, error) {
	e, ok := r.find(id)
	if !ok {
		return nil, fmt.Errorf("encryption: check value of key id %d: no such key in %s", id, r)
	}
	m := hmac.New(sha256.New, e.key)
	m.Write([]byte(encryptionCheckLabel))
	return m.Sum(nil), nil
}
