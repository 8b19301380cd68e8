package gormstore

import (
	"strconv"
	"testing"
	"time"

	"github.com/connectd/connectd/core/store"
)

// TestSessionCacheGeneration: a read that started before an invalidation
// must not store what it read (it may predate the revocation); the TTL is
// capped below the 1 s promise; a full cache starts over.
func TestSessionCacheGeneration(t *testing.T) {
	c := newSessionCache(time.Hour)
	if c.ttl != maxSessionCacheTTL {
		t.Fatalf("ttl %v not capped at %v", c.ttl, maxSessionCacheTTL)
	}
	row := &store.Session{ID: "s1", UserID: "u1", Kind: "session"}

	gen := c.generation() // a reader starts
	c.forget("s1")        // a revocation lands meanwhile
	c.put(gen, row)       // the reader finishes
	if _, ok := c.get("s1"); ok {
		t.Fatalf("a read older than the revocation was cached")
	}

	gen = c.generation()
	c.forgetUser("someone-else")
	c.put(gen, row)
	if _, ok := c.get("s1"); ok {
		t.Fatalf("a read older than a revoke-all was cached")
	}

	c.put(c.generation(), row)
	if got, ok := c.get("s1"); !ok || got.UserID != "u1" {
		t.Fatalf("fresh put not served: %+v %v", got, ok)
	}
	c.forgetUser("u1")
	if _, ok := c.get("s1"); ok {
		t.Fatalf("forgetUser left the user's session")
	}

	if newSessionCache(0) != nil || newSessionCache(-1) != nil {
		t.Fatalf("ttl <= 0 must disable the cache")
	}
	var off *sessionCache
	off.put(off.generation(), row) // a nil cache is a no-op
	if _, ok := off.get("s1"); ok {
		t.Fatalf("nil cache answered")
	}

	small := newSessionCache(time.Second)
	for i := range sessionCacheMax + 1 {
		small.put(small.generation(), &store.Session{ID: strconv.Itoa(i)})
	}
	if n := len(small.m); n > sessionCacheMax {
		t.Fatalf("cache grew to %d entries", n)
	}
}
