package loadtest

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing/fstest"
	"time"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/server/app"

	// The bare handler reads through the same drivers connectd uses.
	_ "github.com/glebarez/go-sqlite"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// Platform names of the harness connectors.
const (
	PlatformOAuth  = "loadoauth"
	PlatformAPIKey = "loadkey"
)

// Environment the parent hands to replica processes (besides CONNECTD_*).
const (
	envProviderURL = "LOADTEST_PROVIDER_URL"
	envCRMURL      = "LOADTEST_CRM_URL"
	envBareAddr    = "LOADTEST_BARE_ADDR"
	envCPUProfile  = "LOADTEST_CPUPROFILE"
)

// ReplicaCommand is the first argument that makes the harness binary act
// as one connectd replica (the parent re-executes itself with it).
const ReplicaCommand = "__replica"

// BareCommand makes the harness binary serve the bare net/http handler.
const BareCommand = "__bare"

// Main is the harness binary's main: the load driver, or (re-executed by
// it) a replica or the bare handler. It returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == ReplicaCommand {
		return replicaMain(stdout, stderr)
	}
	if len(args) > 0 && args[0] == BareCommand {
		return bareMain(stderr)
	}
	return Command(args, stdout, stderr)
}

// replicaMain runs `connectd serve` with the harness connectors.
func replicaMain(stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if path := os.Getenv(envCPUProfile); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintf(stderr, "replica: cpu profile: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "replica: cpu profile: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	return app.Run(ctx, []string{"serve"}, app.Env{
		Stdout: stdout, Stderr: stderr, Getenv: os.Getenv, Manifests: harnessManifests(),
	}, harnessConnectors(os.Getenv(envProviderURL), os.Getenv(envCRMURL)))
}

// harnessManifests are the two test platforms' App Connect manifests (the
// kit's reference manifests).
func harnessManifests() fs.FS {
	return fstest.MapFS{
		PlatformOAuth + ".json":  {Data: connectortest.OAuthManifest(PlatformOAuth, []string{clientRedirect}, true)},
		PlatformAPIKey + ".json": {Data: connectortest.APIKeyManifest(PlatformAPIKey, false)},
	}
}

func harnessConnectors(providerURL, crmURL string) map[string]connector.Factory {
	return map[string]connector.Factory{
		PlatformOAuth: func(connector.Config) (connector.Connector, error) {
			if providerURL == "" {
				return nil, fmt.Errorf("%w: %s not set", connector.ErrUnavailable, envProviderURL)
			}
			return &oauthConn{base: strings.TrimRight(providerURL, "/")}, nil
		},
		PlatformAPIKey: connectortest.APIKeyConnector(crmURL),
	}
}

// oauthConn is the kit's reference OAuth connector, configured by URL
// (the provider lives in the parent process).
type oauthConn struct{ base string }

var _ connector.OAuthConnector = (*oauthConn)(nil)

func (c *oauthConn) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthOAuth, nil
}

func (c *oauthConn) OAuthInfo(context.Context, connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	return connector.OAuthInfo{
		ClientID:     "test-client",
		ClientSecret: connector.Secret("test-secret"),
		AuthURL:      c.base + connectortest.PathAuthorize,
		TokenURL:     c.base + connectortest.PathToken,
	}, nil
}

func (c *oauthConn) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+connectortest.PathUserInfo, nil)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	r.Header.Set("Authorization", req.AuthHeader)
	resp, err := req.HTTPClient.Do(r)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	defer resp.Body.Close()
	var u struct{ ID, Name, Timezone string }
	if resp.StatusCode != http.StatusOK {
		return connector.UserInfoResult{ReturnMessage: &connector.ReturnMessage{Message: "Could not load user information.", MessageType: connector.MessageWarning, TTL: 3000}}, nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&u); err != nil || u.ID == "" {
		return connector.UserInfoResult{}, fmt.Errorf("loadtest: userinfo: %v", err)
	}
	return connector.UserInfoResult{Successful: true, User: connector.PlatformUser{ID: u.ID, Name: u.Name, TimezoneName: u.Timezone}}, nil
}

// bareMain serves GET /bare?id=<session id>: one primary-key read of the
// sessions table through database/sql with the driver connectd uses, and
// a small JSON answer. It is the ceiling the /authValidation figure is
// compared with (same driver, same database, same machine).
func bareMain(stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	driver, dsn, pg := dbDriver(os.Getenv("CONNECTD_DATABASE_URL"))
	q := `SELECT kind, expires_at_ms FROM sessions WHERE id = $1`
	if !pg {
		q = `SELECT kind, expires_at_ms FROM sessions WHERE id = ?`
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		fmt.Fprintf(stderr, "bare: open: %v\n", err)
		return 1
	}
	defer db.Close()
	db.SetMaxOpenConns(10)
	db.SetMaxIdleConns(10)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bare", func(w http.ResponseWriter, r *http.Request) {
		var kind string
		var exp int64
		err := db.QueryRowContext(r.Context(), q, r.URL.Query().Get("id")).Scan(&kind, &exp)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
			return
		case err != nil:
			http.Error(w, `{"error":"unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"successful":true}`))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	ln, err := net.Listen("tcp", os.Getenv(envBareAddr))
	if err != nil {
		fmt.Fprintf(stderr, "bare: listen: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(stderr, "bare: %v\n", err)
		return 1
	}
	return 0
}
