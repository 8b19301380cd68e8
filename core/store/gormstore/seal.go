package gormstore

import (
	"encoding/json"
	"fmt"

	"github.com/connectd/connectd/core/store"
)

// Logical table names used in associated data. They are part of the
// ciphertext binding: never change them, even if a SQL table is renamed.
const (
	adUsers = "users"
	adFlows = "oauth_flows"
	adJobs  = "jobs"
)

func associatedData(table, id, field string) []byte {
	return []byte(table + "/" + id + "/" + field)
}

// seal seals a non-empty value; empty -> nil (stored as NULL, no
// ciphertext of nothing).
func (s *Store) seal(table, id, field string, plaintext []byte) ([]byte, error) {
	if len(plaintext) == 0 {
		return nil, nil
	}
	ct, err := s.sealer.Seal(plaintext, associatedData(table, id, field))
	if err != nil {
		return nil, fmt.Errorf("gormstore: seal %s/%s/%s: %w", table, id, field, err)
	}
	return ct, nil
}

func (s *Store) sealString(table, id, field, v string) ([]byte, error) {
	return s.seal(table, id, field, []byte(v))
}

// open opens a stored value; NULL/empty -> nil. Any failure wraps
// store.ErrDecrypt (and the sealer's own error) and never returns
// partial plaintext.
func (s *Store) open(table, id, field string, ct []byte) ([]byte, error) {
	if len(ct) == 0 {
		return nil, nil
	}
	pt, err := s.sealer.Open(ct, associatedData(table, id, field))
	if err != nil {
		return nil, fmt.Errorf("gormstore: open %s/%s/%s: %w: %w", table, id, field, store.ErrDecrypt, err)
	}
	return pt, nil
}

func (s *Store) openString(table, id, field string, ct []byte) (string, error) {
	pt, err := s.open(table, id, field, ct)
	return string(pt), err
}

// sealSecrets seals a string map as one JSON value; empty map -> NULL.
func (s *Store) sealSecrets(table, id, field string, m map[string]string) ([]byte, error) {
	if len(m) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("gormstore: encode %s/%s/%s: %w", table, id, field, err)
	}
	return s.seal(table, id, field, b)
}

func (s *Store) openSecrets(table, id, field string, ct []byte) (map[string]string, error) {
	pt, err := s.open(table, id, field, ct)
	if err != nil || pt == nil {
		return nil, err
	}
	var m map[string]string
	if err := json.Unmarshal(pt, &m); err != nil {
		return nil, fmt.Errorf("gormstore: decode %s/%s/%s: %w", table, id, field, store.ErrDecrypt)
	}
	return m, nil
}

// encodeJSON stores a non-secret map as JSON text; empty -> NULL.
func encodeJSON[M ~map[string]V, V any](m M) (any, error) {
	if len(m) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("gormstore: encode JSON: %w", err)
	}
	return string(b), nil
}

func decodeJSON[M ~map[string]V, V any](text *string) (M, error) {
	if text == nil || *text == "" {
		return nil, nil
	}
	var m M
	if err := json.Unmarshal([]byte(*text), &m); err != nil {
		return nil, fmt.Errorf("gormstore: decode JSON column: %w", err)
	}
	return m, nil
}
