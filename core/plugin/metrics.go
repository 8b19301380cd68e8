package plugin

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/connectd/connectd/core/store"
)

// metrics: queue depth and age are read from the task table at scrape
// time (every replica reports the same shared queue); outcomes are counted
// by the replica that saw them.
type metrics struct {
	outcomes  *prometheus.CounterVec
	callbacks *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, st store.PluginTasks) (*metrics, error) {
	m := &metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "connectd", Subsystem: "plugin", Name: "task_outcomes_total",
			Help: "Plugin call outcomes: accepted, processed, invalid, error, retried, delivered, failed, expired.",
		}, []string{"plugin", "outcome"}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "connectd", Subsystem: "plugin", Name: "callback_attempts_total",
			Help: "Async callback POSTs by result: acknowledged, refused, error.",
		}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.outcomes, m.callbacks, &queueCollector{st: st}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) outcome(plugin, outcome string) { m.outcomes.WithLabelValues(plugin, outcome).Inc() }
func (m *metrics) callback(result string)         { m.callbacks.WithLabelValues(result).Inc() }
func (m *metrics) expired(n int64)                { m.outcomes.WithLabelValues("", store.TaskExpired).Add(float64(n)) }

var (
	depthDesc = prometheus.NewDesc("connectd_plugin_tasks", "Plugin tasks by state (shared queue).", []string{"state"}, nil)
	ageDesc   = prometheus.NewDesc("connectd_plugin_task_oldest_pending_age_seconds", "Age of the oldest accepted or running plugin task (0 when none).", nil, nil)
)

// queueCollector reads the queue at scrape time.
type queueCollector struct{ st store.PluginTasks }

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- depthDesc
	ch <- ageDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, err := c.st.PluginTaskStats(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(depthDesc, err)
		return
	}
	for _, state := range []string{store.TaskAccepted, store.TaskRunning, store.TaskDelivered, store.TaskFailed, store.TaskExpired} {
		ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, float64(st.ByState[state]), state)
	}
	age := 0.0
	if !st.OldestPending.IsZero() {
		age = time.Since(st.OldestPending).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(ageDesc, prometheus.GaugeValue, age)
}
