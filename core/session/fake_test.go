package session

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/store"
)

// fakeSessions is an in-memory store.Sessions judged by the same fake clock
// as the Manager (the real backends use the database clock).
type fakeSessions struct {
	mu      sync.Mutex
	rows    map[string]store.Session
	clock   clock.Clock
	reads   atomic.Int64 // GetSession calls
	extends atomic.Int64 // ExtendSession calls
	fail    error        // returned by every call when set
}

func newFakeSessions(c clock.Clock) *fakeSessions {
	return &fakeSessions{rows: map[string]store.Session{}, clock: c}
}

func (f *fakeSessions) CreateSession(_ context.Context, s *store.Session) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	if _, dup := f.rows[s.ID]; dup {
		return fmt.Errorf("create %s: %w", s.ID, store.ErrConflict)
	}
	s.CreatedAt = f.clock.Now()
	f.rows[s.ID] = *s
	return nil
}

func (f *fakeSessions) GetSession(_ context.Context, id string) (*store.Session, error) {
	f.reads.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	s, ok := f.rows[id]
	if !ok {
		return nil, fmt.Errorf("session %s: %w", id, store.ErrNotFound)
	}
	return &s, nil
}

func (f *fakeSessions) RevokeSession(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	s, ok := f.rows[id]
	if !ok {
		return fmt.Errorf("session %s: %w", id, store.ErrNotFound)
	}
	now := f.clock.Now()
	s.RevokedAt = &now
	f.rows[id] = s
	return nil
}

func (f *fakeSessions) RevokeUserSessions(_ context.Context, userID string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return 0, f.fail
	}
	n := 0
	now := f.clock.Now()
	for id, s := range f.rows {
		if s.UserID == userID && s.RevokedAt == nil {
			s.RevokedAt = &now
			f.rows[id] = s
			n++
		}
	}
	return n, nil
}

func (f *fakeSessions) row(id string) store.Session {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rows[id]
}

func (f *fakeSessions) put(s store.Session) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rows[s.ID] = s
}

func (f *fakeSessions) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

// extendingSessions is fakeSessions (kept as a name for the tests that
// count extensions).
type extendingSessions struct {
	*fakeSessions
}

func (f *fakeSessions) ExtendSession(_ context.Context, id string, expiresAt time.Time) error {
	f.extends.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.rows[id]
	if !ok || s.RevokedAt != nil {
		return fmt.Errorf("session %s: %w", id, store.ErrNotFound)
	}
	s.ExpiresAt = expiresAt
	f.rows[id] = s
	return nil
}

var (
	_ store.Sessions = (*fakeSessions)(nil)
)
