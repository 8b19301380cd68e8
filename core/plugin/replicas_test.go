package plugin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/jobs"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/plugin"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/core/store/storetest"
)

type echo struct{}

func (echo) AuthType(context.Context) (connector.AuthType, error) { return "", nil }
func (echo) UserInfo(context.Context, connector.UserInfoRequest) (connector.UserInfoResult, error) {
	return connector.UserInfoResult{}, fmt.Errorf("no login")
}
func (echo) ProcessAsync(_ context.Context, r connector.PluginRequest) (connector.PluginResult, error) {
	if strings.Contains(string(r.Data), `"bad"`) {
		return connector.PluginResult{}, fmt.Errorf("%w: note is missing", connector.ErrInvalidPayload)
	}
	return connector.PluginResult{Successful: true, Message: "echo " + r.TaskID}, nil
}

// Two replicas (two stores, two runners) work one queue: every task is
// processed and delivered exactly once when nothing fails.
func TestReplicasNeverRunATaskTwice(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		const tasks = 30
		var mu sync.Mutex
		seen := map[string]int{}
		recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var b map[string]any
			_ = json.NewDecoder(r.Body).Decode(&b)
			mu.Lock()
			seen[fmt.Sprint(b["asyncTaskId"])]++
			mu.Unlock()
		}))
		t.Cleanup(recv.Close)
		origins, _ := plugin.ParseOrigins([]string{recv.URL})
		set, err := manifest.Load(fstest.MapFS{"e.json": &fstest.MapFile{Data: []byte(`{"platforms": {"echo": {"name": "echo", "isAsync": true, "connectd": {"kind": "plugin"}}}}`)}}, "")
		if err != nil {
			t.Fatal(err)
		}
		reg, err := registry.New(ctx, set, map[string]connector.Factory{"echo": func(connector.Config) (connector.Connector, error) { return echo{}, nil }}, registry.Config{})
		if err != nil {
			t.Fatal(err)
		}
		url := storetest.NewURL(t, backend)
		sealer := storetest.NewSealer(t)
		var svcs []*plugin.Service
		var runners []*jobs.Runner
		var stores []*gormstore.Store
		for i := 0; i < 2; i++ {
			st := storetest.OpenStoreWith(t, gormstore.Options{URL: url, Sealer: sealer})
			svc, err := plugin.New(plugin.Options{Store: st, Registry: reg, Origins: origins, AllowPrivate: true})
			if err != nil {
				t.Fatal(err)
			}
			r := jobs.NewRunner(st, nil, jobs.RunnerOptions{Concurrency: 3})
			svc.RegisterJobs(r)
			svcs, runners, stores = append(svcs, svc), append(runners, r), append(stores, st)
		}
		p, err := svcs[0].Lookup("echo")
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < tasks; i++ {
			if _, err := svcs[i%2].Submit(ctx, p, plugin.Call{PluginID: "echo", OwnerKey: "o", Contract: plugin.ContractB,
				Data: json.RawMessage(`{}`), TaskKey: fmt.Sprintf("t-%02d", i), CallbackURL: recv.URL + "/cb"}); err != nil {
				t.Fatal(err)
			}
		}
		ran := make([]int, 2)
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			var wg sync.WaitGroup
			for i, r := range runners {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n, err := r.RunOnce(ctx)
					if err != nil {
						t.Error(err)
					}
					ran[i] += n
				}()
			}
			wg.Wait()
			if st, _ := stores[0].PluginTaskStats(ctx); st.ByState[store.TaskDelivered] == tasks {
				break
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != tasks {
			t.Fatalf("delivered %d distinct tasks, want %d", len(seen), tasks)
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("task %s delivered %d times", id, n)
			}
		}
		if ran[0]+ran[1] != tasks {
			t.Fatalf("jobs run %v, want %d in total", ran, tasks)
		}
		t.Logf("%s: replica 1 ran %d, replica 2 ran %d", backend, ran[0], ran[1])
	})
}

// Final states: a refused callback fails the task, an invalid payload is
// reported as unsuccessful, an unacknowledged callback expires after the
// task's lifetime.
func TestTaskFinalStates(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Now())
	var mu sync.Mutex
	status := map[string]int{}
	got := map[string][]map[string]any{}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		_ = json.NewDecoder(r.Body).Decode(&b)
		id := fmt.Sprint(b["asyncTaskId"])
		mu.Lock()
		got[id] = append(got[id], b)
		code := status[id]
		mu.Unlock()
		if code != 0 {
			w.WriteHeader(code)
		}
	}))
	t.Cleanup(recv.Close)
	origins, _ := plugin.ParseOrigins([]string{recv.URL})
	set, _ := manifest.Load(fstest.MapFS{"e.json": &fstest.MapFile{Data: []byte(`{"platforms": {"echo": {"name": "echo", "isAsync": true, "connectd": {"kind": "plugin"}}}}`)}}, "")
	reg, err := registry.New(ctx, set, map[string]connector.Factory{"echo": func(connector.Config) (connector.Connector, error) { return echo{}, nil }}, registry.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st := storetest.OpenStore(t, storetest.SQLite, clk)
	svc, err := plugin.New(plugin.Options{Store: st, Registry: reg, Origins: origins, AllowPrivate: true, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	r := jobs.NewRunner(st, nil, jobs.RunnerOptions{Clock: clk})
	svc.RegisterJobs(r)
	p, _ := svc.Lookup("echo")
	submit := func(key, data string) *store.PluginTask {
		tk, err := svc.Submit(ctx, p, plugin.Call{PluginID: "echo", OwnerKey: "o", Contract: plugin.ContractB,
			Data: json.RawMessage(data), TaskKey: key, CallbackURL: recv.URL + "/cb"})
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	status["refused"], status["lost"] = http.StatusNotFound, http.StatusServiceUnavailable
	refused := submit("refused", `{}`)
	invalid := submit("invalid", `{"bad": true}`)
	lost := submit("lost", `{}`)
	noCallback, err := svc.Submit(ctx, p, plugin.Call{PluginID: "echo", OwnerKey: "o", Contract: plugin.ContractA, Data: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	state := func(tk *store.PluginTask) *store.PluginTask {
		v, err := svc.Task(ctx, "echo", "o", tk.ID)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := state(refused); v.State != store.TaskFailed || !strings.Contains(v.LastError, "404") || !v.Successful {
		t.Fatalf("refused callback: %+v", v)
	}
	if v := state(invalid); v.State != store.TaskFailed || v.Successful || !strings.Contains(v.Message, "note is missing") ||
		got["invalid"][0]["successful"] != false {
		t.Fatalf("invalid payload: %+v, callback %v", v, got["invalid"])
	}
	if v := state(noCallback); v.State != store.TaskDelivered || v.Message != "echo "+noCallback.TaskKey {
		t.Fatalf("task without callback: %+v", v)
	}
	if v := state(lost); v.State != store.TaskRunning || v.Attempts != 1 {
		t.Fatalf("unacknowledged: %+v", v)
	}
	if _, err := svc.Task(ctx, "echo", "someone else", lost.ID); !failure.Is(err, failure.NotFound) {
		t.Fatalf("another owner: %v", err)
	}
	clk.Advance(plugin.DefaultTaskTTL + time.Minute)
	if v := state(lost); v.State != store.TaskExpired {
		t.Fatalf("past expiry, before the sweep: %s", v.State)
	}
	if n, err := svc.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep = %d, %v", n, err)
	}
	if n, _ := r.RunOnce(ctx); n != 0 {
		t.Fatalf("an expired task ran again (%d jobs)", n)
	}
	if v, _ := st.GetPluginTask(ctx, lost.ID); v.State != store.TaskExpired || len(got["lost"]) != 1 {
		t.Fatalf("expired: %+v, callbacks %d", v, len(got["lost"]))
	}
}
