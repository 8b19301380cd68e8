package encryption

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Ciphertext layout.
const (
	// Version is the format version byte every ciphertext starts with.
	Version = 1

	versionSize = 1
	keyIDSize   = 4
	nonceSize   = 12
	tagSize     = 16
	headerSize  = versionSize + keyIDSize + nonceSize

	// Overhead is how many bytes Seal adds to a plaintext.
	Overhead = headerSize + tagSize
)

// ErrDecrypt is returned (wrapped) by every Open failure: tampered,
// truncated, moved (other associated data), wrong key or unknown key id.
// It deliberately says nothing about which, so an attacker learns nothing.
var ErrDecrypt = errors.New("encryption: decryption failed")

// ErrUnknownKey is additionally wrapped when a ciphertext names a key id that
// is not in the ring: the operator removed a key still in use, or the data
// came from elsewhere. errors.Is(err, ErrDecrypt) holds too.
var ErrUnknownKey = errors.New("encryption: unknown key id")

// errNoAssociatedData: associated data binds a ciphertext to its row and
// field; sealing without it would make a ciphertext movable.
var errNoAssociatedData = errors.New("encryption: associated data is required")

// AEAD seals with the ring's primary key and opens with any key of the ring.
// It is safe for concurrent use.
type AEAD struct {
	ring *KeyRing
	rand io.Reader
}

// NewAEAD returns an AEAD over ring. rand supplies nonces; nil means
// crypto/rand (tests inject a reader to prove nonces come from it).
func NewAEAD(ring *KeyRing, rand io.Reader) *AEAD {
	return &AEAD{ring: ring, rand: rand}
}

// KeyRing returns the ring the AEAD uses.
func (a *AEAD) KeyRing() *KeyRing { return a.ring }

// Seal encrypts plaintext with the primary key under a fresh random 96-bit
// nonce, bound to associatedData (required, e.g. "users/<id>/refresh_token").
func (a *AEAD) Seal(plaintext, associatedData []byte) ([]byte, error) {
	if len(associatedData) == 0 {
		return nil, errNoAssociatedData
	}
	if a.ring == nil || len(a.ring.entries) == 0 {
		return nil, errors.New("encryption: seal: no key ring")
	}
	e := &a.ring.entries[0]
	out := make([]byte, headerSize, headerSize+len(plaintext)+tagSize)
	out[0] = Version
	binary.BigEndian.PutUint32(out[versionSize:], e.id)
	nonce := out[versionSize+keyIDSize : headerSize]
	var err error
	if a.rand == nil {
		_, err = rand.Read(nonce)
	} else {
		_, err = io.ReadFull(a.rand, nonce)
	}
	if err != nil {
		return nil, fmt.Errorf("encryption: seal: read nonce: %w", err)
	}
	return e.aead.Seal(out, nonce, plaintext, associatedData), nil
}

// Open decrypts a ciphertext made by Seal with the same associatedData. Every
// failure wraps ErrDecrypt; an unknown key id also wraps ErrUnknownKey.
// Open never panics on any input.
func (a *AEAD) Open(ciphertext, associatedData []byte) ([]byte, error) {
	if len(associatedData) == 0 {
		return nil, fmt.Errorf("%w: %w", ErrDecrypt, errNoAssociatedData)
	}
	id, err := KeyIDOf(ciphertext)
	if err != nil {
		return nil, err
	}
	if len(ciphertext) < Overhead {
		return nil, fmt.Errorf("%w: ciphertext too short", ErrDecrypt)
	}
	if a.ring == nil {
		return nil, fmt.Errorf("%w: no key ring", ErrDecrypt)
	}
	e, ok := a.ring.find(id)
	if !ok {
		return nil, fmt.Errorf("%w: key id %d: %w", ErrDecrypt, id, ErrUnknownKey)
	}
	nonce := ciphertext[versionSize+keyIDSize : headerSize]
	pt, err := e.aead.Open(nil, nonce, ciphertext[headerSize:], associatedData)
	if err != nil {
		// The GCM error is dropped on purpose: it adds nothing and the
		// message stays generic.
		return nil, ErrDecrypt
	}
	return pt, nil
}

// KeyIDOf returns the key id a ciphertext was sealed with, without opening
// it (for re-sealing jobs and the start-up check that every stored key id is
// configured). Errors wrap ErrDecrypt.
func KeyIDOf(ciphertext []byte) (uint32, error) {
	if len(ciphertext) < versionSize+keyIDSize {
		return 0, fmt.Errorf("%w: ciphertext too short", ErrDecrypt)
	}
	if ciphertext[0] != Version {
		return 0, fmt.Errorf("%w: unknown format version %d", ErrDecrypt, ciphertext[0])
	}
	return binary.BigEndian.Uint32(ciphertext[versionSize:]), nil
}
