package opsmetrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/encryption"
	"github.com/connectd/connectd/server/opsmetrics"
)

func TestCollectorReportsDatabaseGauges(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		key, _ := encryption.GenerateKey(nil)
		ring, _ := encryption.NewKeyRing(3, key)
		st := storetest.OpenStoreWith(t, gormstore.Options{URL: storetest.NewURL(t, backend), Sealer: encryption.NewAEAD(ring, nil)})
		for i, p := range []string{"pipedrive", "pipedrive", "clio"} {
			u, err := st.UpsertUser(ctx, &store.User{Platform: p, CRMUserID: string(rune('a' + i)), AccessToken: "secret-at"})
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				if err := st.CreateSession(ctx, &store.Session{Kind: "appconnect", UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, _, err := st.EnqueueJob(ctx, &store.Job{Kind: "revoke", Payload: []byte("x"), ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		mk := store.ManagedKey{HostKind: "operator", AccountID: "a", Platform: "clio", Scope: store.ManagedScopeAccount}
		if err := st.ApplyManagedChange(ctx, store.ManagedChange{Key: mk, Set: map[string]string{"apiKey": "v"}, SetBy: "op",
			Audit: &store.AuditEvent{At: time.Now(), Actor: store.HostIdentity{Kind: "operator", AccountID: "a", UserID: "adm"}, Action: "managed_values.set", Platform: "clio"}}); err != nil {
			t.Fatal(err)
		}
		clk := clock.NewFake(time.Now())
		reg := prometheus.NewRegistry()
		reg.MustRegister(opsmetrics.New(opsmetrics.Options{Store: st, Clock: clk}))
		want := map[string]float64{
			`connectd_users{platform="clio",status="active"}`:           1,
			`connectd_users{platform="pipedrive",status="active"}`:      2,
			`connectd_sessions_live{kind="appconnect"}`:                 1,
			`connectd_jobs{kind="revoke",state="pending"}`:              1,
			`connectd_managed_changes_24h{action="managed_values.set"}`: 1,
			`connectd_sealed_values{key_id="3"}`:                        5,
			`connectd_ops_metrics_up`:                                   1,
		}
		check := func(want map[string]float64) {
			t.Helper()
			got := gather(t, reg)
			if len(got) != len(want) {
				t.Errorf("got %d series, want %d: %v", len(got), len(want), got)
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		}
		check(want)
		// Cached for 30s: a new login shows only after the TTL.
		if _, err := st.UpsertUser(ctx, &store.User{Platform: "clio", CRMUserID: "z"}); err != nil {
			t.Fatal(err)
		}
		check(want)
		clk.Advance(31 * time.Second)
		want[`connectd_users{platform="clio",status="active"}`] = 2
		check(want)
	})
}

// gather renders every series as name{label="v",...} -> value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			name := mf.GetName()
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			out[name] = m.GetGauge().GetValue()
		}
	}
	return out
}
