package gormstore

import (
	"sync"
	"time"

	"github.com/connectd/connectd/core/store"
)

// DefaultSessionCacheTTL is how long GetSession may answer from this
// process's memory. Every request that carries a token reads its session
// row; caching it for a fraction of a second takes that read off the hot
// path while keeping the promise that a revocation is seen by every
// replica within 1 second (decisions.md): a revocation made through this
// Store is seen here at once (the entry is dropped), one made by another
// replica within the TTL plus one read.
const DefaultSessionCacheTTL = 500 * time.Millisecond

// maxSessionCacheTTL bounds Options.SessionCacheTTL below the 1 s promise.
const maxSessionCacheTTL = 900 * time.Millisecond

// sessionCacheMax bounds the memory: at 100,000 entries the cache is
// emptied (simple, and an honest bound: a few hundred bytes per entry).
const sessionCacheMax = 100_000

// sessionCache holds recently read session rows by id. It measures age with
// the monotonic wall clock, never the injected store clock: the TTL bounds
// real propagation delay between replicas.
type sessionCache struct {
	ttl time.Duration

	mu sync.Mutex
	m  map[string]sessionEntry
	// gen moves on every invalidation; a read that started before an
	// invalidation must not store what it read (it may predate the
	// revocation).
	gen uint64
}

type sessionEntry struct {
	s  store.Session
	at time.Time
}

// newSessionCache returns nil (no caching) for ttl <= 0.
func newSessionCache(ttl time.Duration) *sessionCache {
	if ttl <= 0 {
		return nil
	}
	ttl = min(ttl, maxSessionCacheTTL)
	return &sessionCache{ttl: ttl, m: make(map[string]sessionEntry)}
}

// generation returns the token a reader passes back to put.
func (c *sessionCache) generation() uint64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// get returns a copy of a fresh entry.
func (c *sessionCache) get(id string) (*store.Session, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	e, ok := c.m[id]
	c.mu.Unlock()
	if !ok || time.Since(e.at) >= c.ttl {
		return nil, false
	}
	return copySession(&e.s), true
}

// put stores s if no invalidation happened since gen was taken.
func (c *sessionCache) put(gen uint64, s *store.Session) {
	if c == nil {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if len(c.m) >= sessionCacheMax {
		c.m = make(map[string]sessionEntry)
	}
	c.m[s.ID] = sessionEntry{s: *copySession(s), at: now}
}

// forget drops one session (revoked or extended here).
func (c *sessionCache) forget(id string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.m, id)
}

// forgetUser drops every session of a user record.
func (c *sessionCache) forgetUser(userID string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for id, e := range c.m {
		if e.s.UserID == userID {
			delete(c.m, id)
		}
	}
}

func copySession(s *store.Session) *store.Session {
	c := *s
	if s.RevokedAt != nil {
		t := *s.RevokedAt
		c.RevokedAt = &t
	}
	return &c
}
