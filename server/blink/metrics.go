package blink

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	inbound *prometheus.CounterVec
	api     *prometheus.CounterVec
}

// newMetrics registers the Blink metrics with reg (nil: unregistered):
//
//	connectd_blink_requests_total{app,outcome}       proxied requests
//	connectd_blink_api_calls_total{app,op,outcome}   calls to Blink's API
//	connectd_blink_jobs{kind,state}                  the outbox (gauge)
//	connectd_blink_links{app,state}                  linked accounts (gauge)
func newMetrics(st Store, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		inbound: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connectd_blink_requests_total",
			Help: "Requests from Blink's proxy by app and outcome.",
		}, []string{"app", "outcome"}),
		api: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connectd_blink_api_calls_total",
			Help: "Calls to Blink's API by app, operation and outcome (status class, unreachable, misconfigured).",
		}, []string{"app", "op", "outcome"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.inbound, m.api, &outbox{st: st}} {
		if err := reg.Register(c); err != nil {
			return nil, errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// outbox reports the Blink jobs and links from the database at scrape
// time, so every replica reports the same shared state.
type outbox struct{ st Store }

var (
	jobsDesc  = prometheus.NewDesc("connectd_blink_jobs", "Blink API jobs by kind and state (pending = not delivered yet).", []string{"kind", "state"}, nil)
	linksDesc = prometheus.NewDesc("connectd_blink_links", "Blink linked accounts by app id and state.", []string{"app_id", "state"}, nil)
)

func (o *outbox) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- linksDesc
}

func (o *outbox) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if counts, err := o.st.CountJobs(ctx); err == nil {
		for _, kind := range []string{JobAddLink, JobUpdateLink, JobDeleteLink} {
			for state, n := range counts[kind] {
				ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(n), kind, state)
			}
		}
	}
	if counts, err := o.st.CountBlinkLinks(ctx); err == nil {
		for app, states := range counts {
			for state, n := range states {
				ch <- prometheus.MustNewConstMetric(linksDesc, prometheus.GaugeValue, float64(n), app, state)
			}
		}
	}
}
