package gormstore

import (
	"context"
	"fmt"

	"github.com/connectd/connectd/core/store"
)

// checkRaw allows only the sealed columns, per SQL table: identifiers
// never reach SQL from callers unchecked.
func checkRaw(table, column string) error {
	ok := false
	switch table {
	case "users":
		ok = column == "access_token" || column == "refresh_token" || column == "api_key" || column == "secrets"
	case "oauth_flows":
		ok = column == "pkce_verifier"
	case "jobs":
		ok = column == "payload" || column == "result"
	}
	if !ok {
		return fmt.Errorf("gormstore: raw access: %s.%s is not a sealed column", table, column)
	}
	return nil
}

// RawColumn returns the stored bytes of a sealed column, unopened (nil for
// NULL). For conformance tests ("no plaintext at rest") and key rotation
// tooling; it never opens anything.
func (s *Store) RawColumn(ctx context.Context, table, column, id string) ([]byte, error) {
	if err := checkRaw(table, column); err != nil {
		return nil, err
	}
	var rows []struct {
		V []byte `gorm:"column:v"`
	}
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+column+` AS v FROM `+table+` WHERE id = @id`, args{"id": id}); err != nil {
		return nil, fmt.Errorf("gormstore: raw column: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: raw column %s/%s: %w", table, id, store.ErrNotFound)
	}
	return rows[0].V, nil
}

// SetRawColumn overwrites the stored bytes of a sealed column without
// sealing (tests: a ciphertext moved to another row must not open).
func (s *Store) SetRawColumn(ctx context.Context, table, column, id string, value []byte) error {
	if err := checkRaw(table, column); err != nil {
		return err
	}
	n, err := s.exec(ctx, s.w, `UPDATE `+table+` SET `+column+` = @v WHERE id = @id`, args{"id": id, "v": blob(value)})
	if err != nil {
		return fmt.Errorf("gormstore: set raw column: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("gormstore: set raw column %s/%s: %w", table, id, store.ErrNotFound)
	}
	return nil
}
