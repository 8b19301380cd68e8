// Package ratelimit limits login attempts per client IP and per account
// with token buckets (capacity = the per-minute limit, refilled evenly over
// a minute). Buckets live in memory, so each replica counts on its own: with
// N replicas behind a load balancer an attacker gets up to N times the
// limit. That bound is accepted for now; a database-backed counter can
// replace Limiter behind the same middleware later.
//
// The client IP is gin's ClientIP, which believes X-Forwarded-For only from
// the configured trusted proxies, so a spoofed header from anyone else does
// not buy a fresh bucket.
package ratelimit

import (
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/server/httpx"
)

// maxBuckets bounds memory: past it, full (idle) buckets are swept.
const maxBuckets = 100_000

type bucket struct {
	tokens float64
	last   time.Time
}

// Limiter is a set of token buckets keyed by string. Safe for concurrent
// use. A nil *Limiter or a limit of 0 allows everything.
type Limiter struct {
	perMinute int
	clock     clock.Clock
	mu        sync.Mutex
	buckets   map[string]*bucket
}

// New returns a limiter allowing perMinute attempts per key per minute
// (bursts up to perMinute). perMinute 0 disables limiting. clk nil means
// the wall clock.
func New(perMinute int, clk clock.Clock) *Limiter {
	if clk == nil {
		clk = clock.Real{}
	}
	return &Limiter{perMinute: perMinute, clock: clk, buckets: map[string]*bucket{}}
}

// Allow takes one token from key's bucket. When none is left it returns
// false and how long until one is.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	if l == nil || l.perMinute <= 0 {
		return true, 0
	}
	now := l.clock.Now()
	rate := float64(l.perMinute) / float64(time.Minute) // tokens per nanosecond
	capacity := float64(l.perMinute)
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxBuckets {
			l.sweep(now, rate, capacity)
		}
		b = &bucket{tokens: capacity, last: now}
		l.buckets[key] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = math.Min(capacity, b.tokens+float64(el)*rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration(math.Ceil((1 - b.tokens) / rate))
	return false, wait
}

// sweep drops buckets that have refilled completely (they hold no
// information). Called with mu held.
func (l *Limiter) sweep(now time.Time, rate, capacity float64) {
	for k, b := range l.buckets {
		if b.tokens+float64(now.Sub(b.last))*rate >= capacity {
			delete(l.buckets, k)
		}
	}
}

// reject answers 429 with Retry-After in whole seconds (at least 1).
func reject(c *gin.Context, wait time.Duration) {
	secs := int(math.Ceil(wait.Seconds()))
	if secs < 1 {
		secs = 1
	}
	c.Header("Retry-After", strconv.Itoa(secs))
	httpx.WriteError(c, http.StatusTooManyRequests, failure.RateLimited, "Too many attempts. Try again later.")
}

// PerIP is a gin middleware limiting requests per client IP (gin's
// ClientIP, so trusted proxies only). Put it on login routes.
func (l *Limiter) PerIP() gin.HandlerFunc {
	return func(c *gin.Context) {
		if ok, wait := l.Allow("ip:" + clientKey(c.ClientIP())); !ok {
			reject(c, wait)
			return
		}
		c.Next()
	}
}

// PerKey is a gin middleware limiting requests per key(c) (for example an
// account id read from a header or path). An empty key is not limited.
func (l *Limiter) PerKey(name string, key func(*gin.Context) string) gin.HandlerFunc {
	return func(c *gin.Context) {
		if k := key(c); k != "" {
			if ok, wait := l.Allow(name + ":" + k); !ok {
				reject(c, wait)
				return
			}
		}
		c.Next()
	}
}

// CheckAccount is for handlers that learn the account only after parsing
// the body: it takes a token from the account's bucket and, when none is
// left, answers 429 and returns false (the handler must return).
func (l *Limiter) CheckAccount(c *gin.Context, account string) bool {
	if account == "" {
		return true
	}
	if ok, wait := l.Allow("account:" + account); !ok {
		reject(c, wait)
		return false
	}
	return true
}

// clientKey is the bucket of a client address: an IPv4 address, or the /64
// of an IPv6 one (a single host usually holds a whole /64, so per-address
// buckets would not limit it).
func clientKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Is4() || a.Is4In6() {
		return ip
	}
	p, err := a.Prefix(64)
	if err != nil {
		return ip
	}
	return p.String()
}
