package gormstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/connectd/connectd/core/store"
)

// ListKeyChecks returns a ring's check values ordered by key id.
func (s *Store) ListKeyChecks(ctx context.Context, ring string) ([]store.KeyCheck, error) {
	var rows []struct {
		Ring  string `gorm:"column:ring"`
		KeyID int64  `gorm:"column:key_id"`
		Check []byte `gorm:"column:check_value"`
	}
	if _, err := s.query(ctx, s.r, &rows, `SELECT ring, key_id, check_value FROM key_checks WHERE ring = @ring ORDER BY key_id`,
		args{"ring": ring}); err != nil {
		return nil, fmt.Errorf("gormstore: list key checks: %w", err)
	}
	out := make([]store.KeyCheck, 0, len(rows))
	for _, r := range rows {
		out = append(out, store.KeyCheck{Ring: r.Ring, KeyID: uint32(r.KeyID), Check: r.Check})
	}
	return out, nil
}

// PutKeyCheck stores (or replaces) the check value of (ring, key id). The
// value is itself a sealed or MACed constant, so it is stored as is.
func (s *Store) PutKeyCheck(ctx context.Context, kc store.KeyCheck) error {
	if kc.Ring == "" || len(kc.Check) == 0 {
		return errors.New("gormstore: put key check: ring and check value are required")
	}
	if _, err := s.exec(ctx, s.w, `INSERT INTO key_checks (ring, key_id, check_value, created_at_ms, updated_at_ms)
		VALUES (@ring, @kid, @check, {now}, {now})
		ON CONFLICT (ring, key_id) DO UPDATE SET check_value = excluded.check_value, updated_at_ms = excluded.updated_at_ms`,
		args{"ring": kc.Ring, "kid": int64(kc.KeyID), "check": kc.Check}); err != nil {
		return fmt.Errorf("gormstore: put key check: %w", err)
	}
	return nil
}

// DeleteKeyCheck removes a check value; deleting a missing one is not an
// error (the key is gone either way).
func (s *Store) DeleteKeyCheck(ctx context.Context, ring string, keyID uint32) error {
	if _, err := s.exec(ctx, s.w, `DELETE FROM key_checks WHERE ring = @ring AND key_id = @kid`,
		args{"ring": ring, "kid": int64(keyID)}); err != nil {
		return fmt.Errorf("gormstore: delete key check: %w", err)
	}
	return nil
}
