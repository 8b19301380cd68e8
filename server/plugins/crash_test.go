package plugins_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/jobs"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/plugin"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/encryption"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/app"
	"github.com/connectd/connectd/server/plugins"
)

// The crash test runs connectd as a child process (this test binary
// re-executed with TestHelperCrashChild), kills it with SIGKILL while a
// task's callback is in flight, starts another child on the same database
// and checks the task is delivered, to one distinct asyncTaskId.

const (
	envChild     = "CONNECTD_PLUGIN_CRASH_CHILD"
	envDB        = "CONNECTD_PLUGIN_CRASH_DB"
	envEncKeys   = "CONNECTD_PLUGIN_CRASH_ENC"
	envSessKeys  = "CONNECTD_PLUGIN_CRASH_SESS"
	envOrigin    = "CONNECTD_PLUGIN_CRASH_ORIGIN"
	envAddrFile  = "CONNECTD_PLUGIN_CRASH_ADDR"
	crashIssuer  = "http://connectd.crash.test"
	childLease   = 3 * time.Second
	echoManifest = `{"platforms": {"echo": {"name": "echo", "displayName": "Echo", "isAsync": true, "connectd": {"kind": "plugin"}}}}`
)

// echoPlugin is an asynchronous plugin without a login.
type echoPlugin struct{}

func (echoPlugin) AuthType(context.Context) (connector.AuthType, error) { return "", nil }
func (echoPlugin) UserInfo(context.Context, connector.UserInfoRequest) (connector.UserInfoResult, error) {
	return connector.UserInfoResult{}, fmt.Errorf("echo: no login")
}
func (echoPlugin) ProcessAsync(_ context.Context, req connector.PluginRequest) (connector.PluginResult, error) {
	var d struct {
		Note string `json:"note"`
	}
	if err := json.Unmarshal(req.Data, &d); err != nil {
		return connector.PluginResult{}, fmt.Errorf("%w: bad data", connector.ErrInvalidPayload)
	}
	return connector.PluginResult{Successful: true, Message: "echo: " + d.Note, Note: strings.ToUpper(d.Note)}, nil
}

// TestHelperCrashChild is the child server; it does nothing in a normal
// test run.
func TestHelperCrashChild(t *testing.T) {
	if os.Getenv(envChild) != "1" {
		t.Skip("helper process for TestCrashRestartDelivers")
	}
	if err := runChild(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(3)
	}
}

// runChild wires a server like production does: store, sessions,
// manifests, registry, app.Assemble, the plugin service and surface, a
// jobs runner, a real listener.
func runChild(ctx context.Context) error {
	logger := hclog.New(&hclog.LoggerOptions{Name: "child", Level: hclog.Info, Output: os.Stderr})
	encRing, err := encryption.ParseKeyRing(os.Getenv(envEncKeys))
	if err != nil {
		return err
	}
	sessRing, err := encryption.ParseKeyRing(os.Getenv(envSessKeys))
	if err != nil {
		return err
	}
	st, err := gormstore.Open(ctx, gormstore.Options{URL: os.Getenv(envDB), Sealer: encryption.NewAEAD(encRing, nil), Logger: logger.Named("store")})
	if err != nil {
		return err
	}
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	sess, err := session.New(session.Options{Keys: sessRing, Issuer: crashIssuer, Sessions: st})
	if err != nil {
		return err
	}
	set, err := manifest.Load(fstest.MapFS{"echo.json": &fstest.MapFile{Data: []byte(echoManifest)}}, "")
	if err != nil {
		return err
	}
	reg, err := registry.New(ctx, set, map[string]connector.Factory{
		"echo": func(connector.Config) (connector.Connector, error) { return echoPlugin{}, nil },
	}, registry.Config{Getenv: func(string) string { return "" }})
	if err != nil {
		return err
	}
	eng, err := app.Assemble(app.EngineOptions{Store: st, Sessions: sess, Manifests: set, Registry: reg,
		PublicURL: crashIssuer, AllowPrivate: true, Logger: logger})
	if err != nil {
		return err
	}
	origins, err := plugin.ParseOrigins([]string{os.Getenv(envOrigin)})
	if err != nil {
		return err
	}
	svc, err := plugin.New(plugin.Options{Store: st, Registry: reg, Credentials: eng.Refresh, HTTP: eng.HTTP,
		Origins: origins, AllowPrivate: true, Logger: logger.Named("plugin")})
	if err != nil {
		return err
	}
	surf, err := plugins.New(plugins.Options{Plugins: svc, Auth: eng.Auth, Connect: eng.Connect, Sessions: sess,
		Store: st, Hosts: testHosts(), PublicURL: crashIssuer, Logger: logger.Named("plugins")})
	if err != nil {
		return err
	}
	srv, err := server.New(server.Options{Logger: logger}, append(eng.Surfaces(), surf)...)
	if err != nil {
		return err
	}
	runner := jobs.NewRunner(st, logger, jobs.RunnerOptions{Lease: childLease, PollInterval: 100 * time.Millisecond})
	svc.RegisterJobs(runner)
	go func() { _ = runner.Run(ctx) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	tmp := os.Getenv(envAddrFile) + ".tmp"
	if err := os.WriteFile(tmp, []byte(ln.Addr().String()), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, os.Getenv(envAddrFile)); err != nil {
		return err
	}
	return srv.Serve(ctx, ln, nil)
}

type child struct {
	cmd  *exec.Cmd
	url  string
	logs *os.File
}

func startChild(t *testing.T, env []string, dir, name string) *child {
	t.Helper()
	addrFile := filepath.Join(dir, name+".addr")
	logs, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCrashChild$", "-test.v")
	cmd.Env = append(append(os.Environ(), env...), envAddrFile+"="+addrFile)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, logs: logs}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			t.Logf("%s output:\n%s", name, b)
		}
		logs.Close()
	})
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			c.url = "http://" + string(b)
			return c
		}
		if cmd.ProcessState != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(logs.Name())
	t.Fatalf("%s did not start:\n%s", name, b)
	return nil
}

func post(t *testing.T, url string, body any, hdr ...string) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", url, strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	return resp.StatusCode, m
}

func keyRingText(t *testing.T) (string, *encryption.KeyRing) {
	t.Helper()
	key, err := encryption.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := encryption.NewKeyRing(1, key)
	if err != nil {
		t.Fatal(err)
	}
	return "1:" + base64.StdEncoding.EncodeToString(key), ring
}

func TestCrashRestartDelivers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	storetest.Each(t, func(t *testing.T, backend string) {
		dbURL := storetest.NewURL(t, backend)
		encText, encRing := keyRingText(t)
		sessText, _ := keyRingText(t)

		// The App Connect side: the first callback is held open (never
		// acknowledged) until the server that sent it has been killed.
		var mu sync.Mutex
		var ids []string
		firstSeen := make(chan struct{})
		release := make(chan struct{})
		receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var body map[string]any
			_ = json.NewDecoder(r.Body).Decode(&body)
			mu.Lock()
			ids = append(ids, fmt.Sprint(body["asyncTaskId"]))
			n := len(ids)
			mu.Unlock()
			if n == 1 {
				close(firstSeen)
				select {
				case <-release:
				case <-r.Context().Done():
				}
				return
			}
			if body["successful"] != true || body["message"] != "echo: resume me" || body["note"] != "RESUME ME" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusOK)
		}))
		t.Cleanup(receiver.Close)
		defer close(release)

		dir := t.TempDir()
		env := []string{envChild + "=1", envDB + "=" + dbURL, envEncKeys + "=" + encText, envSessKeys + "=" + sessText, envOrigin + "=" + receiver.URL}
		first := startChild(t, env, dir, "first")

		status, reg := post(t, first.url+"/plugins/v2/echo/register", map[string]string{"rcAccessToken": rcTokenAcct1, "rcAccountId": "acct-1"})
		bearer, _ := reg["jwtToken"].(string)
		if status != 200 || bearer == "" {
			t.Fatalf("register: %d %v", status, reg)
		}
		status, acc := post(t, first.url+"/plugins/v2/echo/process", map[string]any{
			"data": map[string]any{"note": "resume me"}, "asyncTaskId": "crash-task-1", "callbackUrl": receiver.URL + "/cb/crash-task-1",
		}, "Authorization", "Bearer "+bearer)
		taskID, _ := acc["taskId"].(string)
		if status != 200 || acc["accepted"] != true || acc["asyncTaskId"] != "crash-task-1" || taskID == "" {
			t.Fatalf("process: %d %v", status, acc)
		}

		select {
		case <-firstSeen:
		case <-time.After(60 * time.Second):
			t.Fatal("the first server never sent the callback")
		}
		// kill -9 while the callback is unacknowledged.
		if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = first.cmd.Wait()
		if ws, ok := first.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("first server did not die of SIGKILL: %v", first.cmd.ProcessState)
		}

		st := storetest.OpenStoreWith(t, gormstore.Options{URL: dbURL, Sealer: encryption.NewAEAD(encRing, nil)})
		ctx := context.Background()
		task, err := st.GetPluginTask(ctx, taskID)
		if err != nil || task.State != store.TaskRunning || !task.Processed {
			t.Fatalf("task after the kill = %+v, %v; want processed, running (not delivered)", task, err)
		}

		startChild(t, env, dir, "second")
		deadline := time.Now().Add(90 * time.Second)
		for time.Now().Before(deadline) {
			if task, err = st.GetPluginTask(ctx, taskID); err == nil && store.TaskTerminal(task.State) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if task == nil || task.State != store.TaskDelivered {
			t.Fatalf("task after restart = %+v, %v; want delivered", task, err)
		}
		mu.Lock()
		got := append([]string(nil), ids...)
		mu.Unlock()
		distinct := map[string]bool{}
		for _, id := range got {
			distinct[id] = true
		}
		if len(got) < 2 || len(distinct) != 1 || !distinct["crash-task-1"] {
			t.Fatalf("callbacks received = %v; want the lost one and a redelivery, one distinct asyncTaskId", got)
		}
		t.Logf("%s: callbacks received %d, distinct asyncTaskIds %d, task attempts %d", backend, len(got), len(distinct), task.Attempts)
	})
}
