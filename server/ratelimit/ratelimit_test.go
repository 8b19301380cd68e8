package ratelimit_test

import (
	"testing"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/server/ratelimit"
)

func TestTokenBucket(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l := ratelimit.New(6, clk) // one token every 10s, burst 6
	for i := 0; i < 6; i++ {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("attempt %d refused within the burst", i+1)
		}
	}
	ok, wait := l.Allow("a")
	if ok || wait != 10*time.Second {
		t.Fatalf("7th = %v wait %v, want refused with 10s", ok, wait)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key shares the bucket")
	}
	clk.Advance(4 * time.Second)
	if ok, wait := l.Allow("a"); ok || wait != 6*time.Second {
		t.Fatalf("after 4s = %v wait %v, want refused with 6s", ok, wait)
	}
	clk.Advance(6 * time.Second)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("refilled token refused")
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("only one token refilled")
	}
	clk.Advance(time.Hour)
	for i := 0; i < 6; i++ {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("bucket not full after an hour (attempt %d)", i+1)
		}
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("bucket over capacity after an hour")
	}
}

func TestDisabled(t *testing.T) {
	var nilLimiter *ratelimit.Limiter
	for _, l := range []*ratelimit.Limiter{ratelimit.New(0, nil), nilLimiter} {
		for i := 0; i < 1000; i++ {
			if ok, _ := l.Allow("a"); !ok {
				t.Fatal("disabled limiter refused")
			}
		}
	}
}
