package gormstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/connectd/connectd/core/store"
	"github.com/google/uuid"
)

const sessionColumns = `id, kind, user_id, host_kind, host_account_id, host_user_id, subject,
	expires_at_ms, revoked_at_ms, created_at_ms`

type sessionRow struct {
	ID            string  `gorm:"column:id"`
	Kind          string  `gorm:"column:kind"`
	UserID        *string `gorm:"column:user_id"`
	HostKind      string  `gorm:"column:host_kind"`
	HostAccountID string  `gorm:"column:host_account_id"`
	HostUserID    string  `gorm:"column:host_user_id"`
	Subject       string  `gorm:"column:subject"`
	ExpiresAtMS   int64   `gorm:"column:expires_at_ms"`
	RevokedAtMS   *int64  `gorm:"column:revoked_at_ms"`
	CreatedAtMS   int64   `gorm:"column:created_at_ms"`
}

func (r *sessionRow) session() *store.Session {
	s := &store.Session{
		ID:        r.ID,
		Kind:      r.Kind,
		Host:      store.HostIdentity{Kind: r.HostKind, AccountID: r.HostAccountID, UserID: r.HostUserID},
		Subject:   r.Subject,
		ExpiresAt: msTime(r.ExpiresAtMS),
		RevokedAt: msTimePtr(r.RevokedAtMS),
		CreatedAt: msTime(r.CreatedAtMS),
	}
	if r.UserID != nil {
		s.UserID = *r.UserID
	}
	return s
}

// CreateSession inserts sess, filling ID (when empty) and CreatedAt. A
// non-empty UserID must name an existing user record (ErrNotFound
// otherwise); an existing id is ErrConflict.
func (s *Store) CreateSession(ctx context.Context, sess *store.Session) error {
	if sess == nil || sess.Kind == "" || sess.ExpiresAt.IsZero() {
		return errors.New("gormstore: create session: kind and expiry are required")
	}
	if sess.ID == "" {
		sess.ID = uuid.NewString()
	}
	var userID any
	if sess.UserID != "" {
		userID = sess.UserID
	}
	var rows []sessionRow
	_, err := s.query(ctx, s.w, &rows, `INSERT INTO sessions (id, kind, user_id, host_kind, host_account_id, host_user_id, subject,
			expires_at_ms, created_at_ms, updated_at_ms)
		VALUES (@id, @kind, @uid, @hk, @ha, @hu, @sub, @exp, {now}, {now})
		RETURNING `+sessionColumns, args{
		"id": sess.ID, "kind": sess.Kind, "uid": userID, "hk": sess.Host.Kind, "ha": sess.Host.AccountID, "hu": sess.Host.UserID,
		"sub": sess.Subject, "exp": sess.ExpiresAt.UnixMilli(),
	})
	if err != nil {
		return fmt.Errorf("gormstore: create session: %w", err)
	}
	if len(rows) == 1 {
		sess.CreatedAt = msTime(rows[0].CreatedAtMS)
	}
	return nil
}

// GetSession is one primary-key read (it runs on every authenticated
// request).
//
// Rows are cached in this process for at most Options.SessionCacheTTL
// (sessioncache.go); revocations and extensions made through this Store
// drop the entry at once.
func (s *Store) GetSession(ctx context.Context, id string) (*store.Session, error) {
	if c, ok := s.sessions.get(id); ok {
		return c, nil
	}
	gen := s.sessions.generation()
	var row sessionRow
	found, err := s.readSessionRow(ctx, id, &row) // hotreads.go
	if err != nil {
		return nil, fmt.Errorf("gormstore: get session: %w", err)
	}
	if !found {
		return nil, fmt.Errorf("gormstore: session %s: %w", id, store.ErrNotFound)
	}
	out := row.session()
	s.sessions.put(gen, out)
	return out, nil
}

// RevokeSession marks a session revoked (idempotent: the first revocation
// time is kept). ErrNotFound for unknown ids.
func (s *Store) RevokeSession(ctx context.Context, id string) error {
	defer s.sessions.forget(id) // after the write: see sessionCache.gen
	n, err := s.exec(ctx, s.w, `UPDATE sessions SET revoked_at_ms = COALESCE(revoked_at_ms, {now}), updated_at_ms = {now}
		WHERE id = @id`, args{"id": id})
	if err != nil {
		return fmt.Errorf("gormstore: revoke session: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("gormstore: revoke session %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// ExtendSession slides an unrevoked session's expiry (a renewed App
// Connect token keeps its session id); ErrNotFound when missing or revoked.
func (s *Store) ExtendSession(ctx context.Context, id string, expiresAt time.Time) error {
	defer s.sessions.forget(id)
	n, err := s.exec(ctx, s.w, `UPDATE sessions SET expires_at_ms = @exp, updated_at_ms = {now}
		WHERE id = @id AND revoked_at_ms IS NULL`, args{"id": id, "exp": expiresAt.UnixMilli()})
	if err != nil {
		return fmt.Errorf("gormstore: extend session: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("gormstore: extend session %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// RevokeUserSessions revokes the user's sessions not yet revoked and
// returns how many it revoked.
func (s *Store) RevokeUserSessions(ctx context.Context, userID string) (int, error) {
	if userID == "" {
		return 0, errors.New("gormstore: revoke user sessions: user id is required")
	}
	defer s.sessions.forgetUser(userID)
	n, err := s.exec(ctx, s.w, `UPDATE sessions SET revoked_at_ms = {now}, updated_at_ms = {now}
		WHERE user_id = @uid AND revoked_at_ms IS NULL`, args{"uid": userID})
	if err != nil {
		return 0, fmt.Errorf("gormstore: revoke user sessions: %w", err)
	}
	return int(n), nil
}
