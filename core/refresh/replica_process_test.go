package refresh_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/outbound"
	"github.com/connectd/connectd/core/refresh"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/encryption"
)

// Environment of a replica child process.
const (
	envReplica        = "CONNECTD_REFRESH_REPLICA"
	envReplicaDB      = "CONNECTD_REFRESH_REPLICA_DB"
	envReplicaKeys    = "CONNECTD_REFRESH_REPLICA_KEYS"
	envReplicaToken   = "CONNECTD_REFRESH_REPLICA_TOKEN_URL"
	envReplicaClient  = "CONNECTD_REFRESH_REPLICA_CLIENT"
	envReplicaSecret  = "CONNECTD_REFRESH_REPLICA_SECRET"
	replicaLeaseTTL   = 3 * time.Second
	replicaUpstreamTO = 2 * time.Second
)

// procConn is the replica's connector: the provider runs in the parent.
type procConn struct{ info connector.OAuthInfo }

func (c procConn) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthOAuth, nil
}
func (c procConn) UserInfo(context.Context, connector.UserInfoRequest) (connector.UserInfoResult, error) {
	return connector.UserInfoResult{}, errors.New("not used")
}
func (c procConn) OAuthInfo(context.Context, connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	return c.info, nil
}

// TestReplicaProcess is not a test: it is one connectd replica, started
// by TestReplicaProcesses as a child process. It opens the store on the
// shared database, serves GET /fresh?user=ID (calling Service.Fresh) on
// 127.0.0.1:0, prints its port, and runs until its stdin closes or it is
// killed.
func TestReplicaProcess(t *testing.T) {
	if os.Getenv(envReplica) != "1" {
		t.Skip("helper process of TestReplicaProcesses")
	}
	ring, err := encryption.ParseKeyRing(os.Getenv(envReplicaKeys))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := gormstore.Open(ctx, gormstore.Options{URL: os.Getenv(envReplicaDB), Sealer: encryption.NewAEAD(ring, nil), MaxOpenConns: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	conn := procConn{info: connector.OAuthInfo{
		ClientID: os.Getenv(envReplicaClient), ClientSecret: connector.Secret(os.Getenv(envReplicaSecret)),
		TokenURL: os.Getenv(envReplicaToken), AuthStyle: oauth2.AuthStyleInParams,
	}}
	svc, err := refresh.New(refresh.Options{
		Users: st, Jobs: st,
		Connectors: refresh.ConnectorSourceFunc(func(string) (connector.Connector, time.Duration, error) {
			return conn, margin, nil
		}),
		HTTP:     outbound.NewClient(outbound.Options{AllowPrivate: true, NoRedirects: true}),
		LeaseTTL: replicaLeaseTTL, UpstreamTimeout: replicaUpstreamTO, WaitPoll: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /fresh", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		u, err := svc.Fresh(r.Context(), r.URL.Query().Get("user"))
		if err != nil {
			status := http.StatusServiceUnavailable
			if failure.CodeOf(err) == failure.NeedsReauth {
				status = http.StatusUnauthorized
			}
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(map[string]string{"code": string(failure.CodeOf(err))})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"accessToken": u.AccessToken, "version": u.Version})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Printf("PORT=%d\n", ln.Addr().(*net.TCPAddr).Port)
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = srv.Close()
}

type replica struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	base   string
	stderr *strings.Builder
}

// TestReplicaProcesses is security.md case 10 with real processes: three
// replicas on one PostgreSQL database, a provider with rotation and reuse
// detection. 200 concurrent requests on an expired token -> exactly one
// refresh request, 200/200 succeed with the same token. Then a replica is
// killed (-9) while it holds the lease in the middle of its token request:
// another takes over after the lease expires.
func TestReplicaProcesses(t *testing.T) {
	if !slices.Contains(storetest.Backends(t), storetest.Postgres) {
		t.Skipf("needs PostgreSQL: set %s (CI=true fails instead of skipping)", storetest.EnvPostgresURL)
	}
	if testing.Short() {
		t.Skip("starts processes")
	}
	dbURL := storetest.NewURL(t, storetest.Postgres)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	keys := "1:" + base64.StdEncoding.EncodeToString(key)
	ring, err := encryption.ParseKeyRing(keys)
	if err != nil {
		t.Fatal(err)
	}
	st := storetest.OpenStoreWith(t, gormstore.Options{URL: dbURL, Sealer: encryption.NewAEAD(ring, nil)})
	prov := connectortest.NewProvider(t, connectortest.ProviderOptions{
		RotateRefreshTokens: true, ReuseDetection: true, AccessTokenTTL: time.Hour,
	})
	po := prov.Options()

	replicas := make([]*replica, 3)
	for i := range replicas {
		replicas[i] = startReplica(t, []string{
			envReplica + "=1", envReplicaDB + "=" + dbURL, envReplicaKeys + "=" + keys,
			envReplicaToken + "=" + prov.TokenURL(), envReplicaClient + "=" + po.ClientID, envReplicaSecret + "=" + po.ClientSecret,
		})
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 300}, Timeout: 60 * time.Second}

	seed := func(t *testing.T, login, crmID string) *store.User {
		t.Helper()
		tok := prov.IssueTokens(login, "")
		exp := time.Now().Add(-time.Minute)
		u, err := st.UpsertUser(context.Background(), &store.User{
			Platform: platform, CRMUserID: crmID, Host: store.HostIdentity{Kind: "ringcentral", AccountID: "acc", UserID: crmID},
			AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenExpiry: &exp, Status: store.StatusActive,
		})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	type answer struct {
		status  int
		token   string
		errCode string
		err     error
	}
	call := func(r *replica, userID string) answer {
		resp, err := client.Get(r.base + "/fresh?user=" + userID)
		if err != nil {
			return answer{err: err}
		}
		defer resp.Body.Close()
		var body struct {
			AccessToken string `json:"accessToken"`
			Code        string `json:"code"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return answer{status: resp.StatusCode, err: err}
		}
		return answer{status: resp.StatusCode, token: body.AccessToken, errCode: body.Code}
	}
	fire := func(n int, targets []*replica, userID string) []answer {
		out := make([]answer, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				out[i] = call(targets[i%len(targets)], userID)
			}()
		}
		close(start)
		wg.Wait()
		return out
	}
	leaseHeld := func(t *testing.T, userID string) bool {
		t.Helper()
		db, err := sql.Open("pgx", dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var held bool
		// Schema detail of gormstore, read only to prove the precondition.
		err = db.QueryRow(`SELECT lease_owner IS NOT NULL AND lease_until_ms > CAST(extract(epoch from clock_timestamp())*1000 AS BIGINT)
			FROM users WHERE id = $1`, userID).Scan(&held)
		if err != nil {
			t.Fatal(err)
		}
		return held
	}

	t.Run("200 concurrent requests over 3 processes: one refresh", func(t *testing.T) {
		u := seed(t, "alice", "p-alice")
		prov.Reset()
		answers := fire(200, replicas, u.ID)
		for i, a := range answers {
			if a.err != nil || a.status != http.StatusOK {
				t.Fatalf("request %d: status %d, %v, code %q", i, a.status, a.err, a.errCode)
			}
			if a.token != answers[0].token {
				t.Fatalf("request %d got a different access token", i)
			}
		}
		if n := prov.RefreshCount(); n != 1 {
			t.Fatalf("%d refresh requests at the provider, want exactly 1", n)
		}
		stored, err := st.GetUser(context.Background(), u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if stored.AccessToken != answers[0].token || stored.Version != u.Version+1 || stored.Status != store.StatusActive {
			t.Fatalf("stored version %d status %s: want the one refresh saved", stored.Version, stored.Status)
		}
		if prov.FamilyRevoked(stored.RefreshToken) {
			t.Fatal("grant revoked: a rotated refresh token was replayed")
		}
	})

	// killHolder sends one request to victim, waits until its token
	// request is at the (slow) provider, kills the process with SIGKILL and
	// checks it died holding the lease.
	killHolder := func(t *testing.T, victim *replica, userID string, requestsBefore int) {
		t.Helper()
		prov.SetFault(connectortest.PathToken, connectortest.Slow(time.Minute))
		done := make(chan answer, 1)
		go func() { done <- call(victim, userID) }()
		waitFor(t, "the victim's token request", func() bool { return prov.RefreshCount() == requestsBefore+1 })
		if err := victim.cmd.Process.Kill(); err != nil { // SIGKILL
			t.Fatal(err)
		}
		_ = victim.cmd.Wait()
		if a := <-done; a.err == nil {
			t.Fatalf("the killed replica answered: status %d", a.status)
		}
		if !leaseHeld(t, userID) {
			t.Fatal("precondition: the killed replica should have died holding the lease")
		}
		prov.ClearFaults()
	}

	t.Run("holder killed, provider never completed its request: take-over refreshes", func(t *testing.T) {
		u := seed(t, "bob", "p-bob")
		prov.Reset()
		killHolder(t, replicas[0], u.ID, 0)
		// The killed request never completed at the provider (the client
		// went away during Slow): the stored refresh token is still good.
		if info, _ := prov.TokenInfo(u.RefreshToken); info.Rotated || info.Revoked {
			t.Fatal("precondition: the refresh token should not have rotated")
		}
		answers := fire(20, replicas[1:], u.ID)
		for i, a := range answers {
			if a.err != nil || a.status != http.StatusOK || a.token != answers[0].token {
				t.Fatalf("request %d: status %d, %v, code %q", i, a.status, a.err, a.errCode)
			}
		}
		if n := prov.RefreshCount(); n != 2 {
			t.Fatalf("%d refresh requests, want 2 (the killed one and one take-over)", n)
		}
		stored, err := st.GetUser(context.Background(), u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if stored.Version != u.Version+1 || stored.AccessToken != answers[0].token || stored.Status != store.StatusActive {
			t.Fatalf("version %d status %s: want exactly one new token saved", stored.Version, stored.Status)
		}
		if info, _ := prov.TokenInfo(u.RefreshToken); !info.Rotated {
			t.Fatal("the take-over did not use the stored refresh token")
		}
	})

	t.Run("holder killed after the provider rotated: take-over tries once, needs_reauth", func(t *testing.T) {
		u := seed(t, "alice", "p-alice-2")
		prov.Reset()
		killHolder(t, replicas[1], u.ID, 0)
		// As if the dead replica's request had been honoured and its answer
		// lost with the process: the stored refresh token is rotated away.
		ctx := context.WithValue(context.Background(), oauth2.HTTPClient, prov.Client())
		if _, err := prov.OAuth2Config().TokenSource(ctx, &oauth2.Token{RefreshToken: u.RefreshToken}).Token(); err != nil {
			t.Fatal(err)
		}
		answers := fire(20, replicas[2:], u.ID)
		for i, a := range answers {
			if a.err != nil || a.status != http.StatusUnauthorized || a.errCode != string(failure.NeedsReauth) {
				t.Fatalf("request %d: status %d, %v, code %q; want 401 needs_reauth", i, a.status, a.err, a.errCode)
			}
		}
		if n := prov.RefreshCount(); n != 3 {
			t.Fatalf("%d refresh requests, want 3 (killed, rotated elsewhere, one take-over attempt)", n)
		}
		stored, err := st.GetUser(context.Background(), u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if stored.Status != store.StatusNeedsReauth || stored.Version != u.Version {
			t.Fatalf("status %s version %d: want needs_reauth, nothing saved", stored.Status, stored.Version)
		}
	})
}

func startReplica(t *testing.T, env []string) *replica {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestReplicaProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{cmd: cmd, stdin: stdin, stderr: &strings.Builder{}}
	cmd.Stderr = &lockedWriter{w: r.stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("replica %d stderr:\n%s", cmd.Process.Pid, r.stderr.String())
		}
	})
	ports := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), "PORT="); ok {
				ports <- p
			}
		}
		close(ports)
	}()
	select {
	case p, ok := <-ports:
		if !ok {
			t.Fatalf("replica exited before listening: %s", r.stderr.String())
		}
		r.base = "http://127.0.0.1:" + p
	case <-time.After(60 * time.Second):
		t.Fatal("replica did not start")
	}
	return r
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
