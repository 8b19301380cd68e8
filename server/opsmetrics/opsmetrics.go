// Package opsmetrics exports the gauges an operator watches that live in
// the database rather than in one process: stored logins by platform and
// status (revocations show as status revoked, broken grants as
// needs_reauth), live sessions, the jobs outbox by kind and state
// (revocation retries, plugin callbacks, Blink calls), managed-credential
// changes (audit rows of the last 24 hours by action) and sealed values
// per encryption key id (key rotation progress).
//
// Every replica reads the same database, so the gauges are the same on
// every replica: aggregate them with max, not sum. Reads are cached (30s
// for the counts, 5 minutes for the key scan) so frequent scrapes do not
// load the database.
package opsmetrics

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/store"
)

// Store is what the collector reads.
type Store interface {
	store.OperatorStats
	KeyUsage(ctx context.Context) (store.KeyUsage, error)
}

// Options configure New.
type Options struct {
	Store  Store
	Logger hclog.Logger
	Clock  clock.Clock
	// CountsTTL and KeysTTL cache the reads (defaults 30s and 5m).
	CountsTTL, KeysTTL time.Duration
}

// Collector is a prometheus.Collector reading the database on scrape.
type Collector struct {
	o Options

	users, sessions, jobs, audit, sealed, up *prometheus.Desc

	mu       sync.Mutex
	counts   store.OpsCounts
	countsAt time.Time
	keys     store.KeyUsage
	keysAt   time.Time
	ok       bool
}

var _ prometheus.Collector = (*Collector)(nil)

// New returns the collector; register it on the server's registry.
func New(o Options) *Collector {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.CountsTTL <= 0 {
		o.CountsTTL = 30 * time.Second
	}
	if o.KeysTTL <= 0 {
		o.KeysTTL = 5 * time.Minute
	}
	return &Collector{
		o:        o,
		users:    prometheus.NewDesc("connectd_users", "Stored CRM logins by platform and status (active, needs_reauth, refresh_uncertain, revoked).", []string{"platform", "status"}, nil),
		sessions: prometheus.NewDesc("connectd_sessions_live", "Unexpired, unrevoked sessions by kind.", []string{"kind"}, nil),
		jobs:     prometheus.NewDesc("connectd_jobs", "Durable jobs (the outbox) by kind and state.", []string{"kind", "state"}, nil),
		audit:    prometheus.NewDesc("connectd_managed_changes_24h", "Managed-credential changes (audit rows) in the last 24 hours by action.", []string{"action"}, nil),
		sealed:   prometheus.NewDesc("connectd_sealed_values", "Sealed values per encryption key id (after a promote, the old id falls to 0 as keys rotate runs).", []string{"key_id"}, nil),
		up:       prometheus.NewDesc("connectd_ops_metrics_up", "1 when the last database read for these gauges succeeded.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.users, c.sessions, c.jobs, c.audit, c.sealed, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.o.Clock.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if now.Sub(c.countsAt) >= c.o.CountsTTL || !c.ok {
		counts, err := c.o.Store.OpsCounts(ctx, now.Add(-24*time.Hour))
		c.ok = err == nil
		if err != nil {
			c.o.Logger.Warn("reading operator gauges failed", "error", err)
		} else {
			c.counts, c.countsAt = counts, now
		}
	}
	if c.ok && now.Sub(c.keysAt) >= c.o.KeysTTL {
		if ku, err := c.o.Store.KeyUsage(ctx); err != nil {
			c.o.Logger.Warn("reading sealed value counts failed", "error", err)
		} else {
			c.keys, c.keysAt = ku, now
		}
	}
	up := 0.0
	if c.ok {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
	for k, n := range c.counts.Users {
		ch <- prometheus.MustNewConstMetric(c.users, prometheus.GaugeValue, float64(n), k.A, k.B)
	}
	for k, n := range c.counts.LiveSessions {
		ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(n), k)
	}
	for k, n := range c.counts.Jobs {
		ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(n), k.A, k.B)
	}
	for k, n := range c.counts.Audit {
		ch <- prometheus.MustNewConstMetric(c.audit, prometheus.GaugeValue, float64(n), k)
	}
	for id, n := range c.keys["encryption"] {
		ch <- prometheus.MustNewConstMetric(c.sealed, prometheus.GaugeValue, float64(n), strconv.FormatUint(uint64(id), 10))
	}
}
