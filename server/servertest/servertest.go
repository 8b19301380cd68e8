// Package servertest runs a whole connectd server for tests: a real store
// (SQLite or PostgreSQL via core/store/storetest), real key rings, the
// production wiring (app.Assemble) and a real HTTP listener. Every log line
// and every response body it sees is recorded by a leak guard
// (server/servertest/leakcheck): secrets a test registers (h.Leaks.Secret,
// AssertNoLeak), and the session key itself, are checked when the test
// ends, so a leak fails the test that caused it.
package servertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/encryption"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/app"
	"github.com/connectd/connectd/server/servertest/leakcheck"
)

// Options configure New.
type Options struct {
	// Backend is "sqlite" or "postgres" (see storetest.Each).
	Backend string
	// Manifests are App Connect manifest documents (JSON).
	Manifests [][]byte
	// Connectors is the connector map.
	Connectors map[string]connector.Factory
	// Getenv is handed to connector factories.
	Getenv func(string) string
	// Clock drives expiry in the engine (nil: real). The store judges
	// leases and single use by the database clock either way.
	Clock clock.Clock
	// RateLimit per minute (0: off).
	RateLimit int
	// RedirectURIs are extra allowed client redirect URIs.
	RedirectURIs []string
	// Engine adjusts the engine options before assembly (managed
	// credentials, host verifiers, lease timings, ...).
	Engine func(h *Harness, o *app.EngineOptions)
	// Surfaces adds surfaces after the engine's (plugins, Kit, Blink, admin).
	Surfaces func(h *Harness) []server.Surface
}

// Harness is a running server.
type Harness struct {
	URL string
	// DatabaseURL is the test's own database (fault tests lock tables
	// through a connection of their own).
	DatabaseURL string
	Store       *gormstore.Store
	Sessions    *session.Manager
	Manifests   *manifest.Set
	Registry    *registry.Registry
	Engine      *app.Engine
	Server      *server.Server
	SessionKeys *encryption.KeyRing
	// Client talks to the server with a cookie jar; it never follows
	// redirects (tests look at them).
	Client *http.Client
	// Logs holds every log line the server wrote (the leak guard's sink).
	Logs *Buffer
	// Leaks is the test's leak guard: register secrets with
	// Leaks.Secret / LogSecret / Dynamic; it checks them when the test
	// ends.
	Leaks *leakcheck.Guard
}

// Buffer is a concurrency-safe log sink.
type Buffer = leakcheck.Buffer

// New starts a server; it is stopped at t.Cleanup.
func New(t testing.TB, o Options) *Harness {
	t.Helper()
	ctx := context.Background()
	if o.Backend == "" {
		o.Backend = "sqlite"
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	h := &Harness{Leaks: leakcheck.New(t)}
	h.Logs = h.Leaks.Logs()
	logger := hclog.New(&hclog.LoggerOptions{Name: "connectd", Level: hclog.Debug, Output: h.Logs, JSONFormat: true})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("servertest: listen: %v", err)
	}
	h.URL = "http://" + ln.Addr().String()

	h.DatabaseURL = storetest.NewURL(t, o.Backend)
	h.Store = storetest.OpenStoreURL(t, h.DatabaseURL, nil)
	key, err := encryption.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.SessionKeys, err = encryption.NewKeyRing(1, key); err != nil {
		t.Fatal(err)
	}
	h.Leaks.Secret(string(key)) // raw bytes and, through the guard's forms, base64
	if h.Sessions, err = session.New(session.Options{Keys: h.SessionKeys, Issuer: h.URL, Sessions: h.Store, Clock: o.Clock}); err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{}
	for i, doc := range o.Manifests {
		fsys[fmt.Sprintf("test-%02d.json", i)] = &fstest.MapFile{Data: doc}
	}
	if h.Manifests, err = manifest.Load(fsys, ""); err != nil {
		t.Fatalf("servertest: manifests: %v", err)
	}
	getenv := o.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if h.Registry, err = registry.New(ctx, h.Manifests, o.Connectors, registry.Config{Getenv: getenv, Logger: logger.Named("registry")}); err != nil {
		t.Fatalf("servertest: registry: %v", err)
	}
	eo := app.EngineOptions{
		Store:        h.Store,
		Sessions:     h.Sessions,
		Manifests:    h.Manifests,
		Registry:     h.Registry,
		PublicURL:    h.URL,
		RedirectURIs: o.RedirectURIs,
		AllowPrivate: true,
		Clock:        o.Clock,
		Logger:       logger,
	}
	if o.Engine != nil {
		o.Engine(h, &eo)
	}
	if h.Engine, err = app.Assemble(eo); err != nil {
		t.Fatalf("servertest: assemble: %v", err)
	}
	surfaces := h.Engine.Surfaces()
	if o.Surfaces != nil {
		surfaces = append(surfaces, o.Surfaces(h)...)
	}
	h.Server, err = server.New(server.Options{
		Logger:    logger,
		RateLimit: o.RateLimit,
		Clock:     o.Clock,
		Ready:     h.Store.Ping,
	}, surfaces...)
	if err != nil {
		t.Fatalf("servertest: server: %v", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = h.Server.Serve(sctx, ln, nil)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("servertest: server did not stop")
		}
	})
	jar, _ := cookiejar.New(nil)
	h.Client = &http.Client{
		Jar:           jar,
		Transport:     h.Leaks.Transport(http.DefaultTransport),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
	return h
}

// RunJobs runs one pass of the jobs runner (revocation retries, ...).
func (h *Harness) RunJobs(t testing.TB) int {
	t.Helper()
	n, err := h.Engine.Jobs.RunOnce(context.Background())
	if err != nil {
		t.Fatalf("servertest: jobs: %v", err)
	}
	return n
}

// Response is a finished request.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a map.
func (r Response) JSON(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("servertest: body is not a JSON object (%d): %s", r.Status, r.Body)
	}
	return m
}

// Do sends a request (body: nil, []byte, string or a value to encode as
// JSON) with headers given as key, value pairs.
func (h *Harness) Do(t testing.TB, method, path string, body any, headers ...string) Response {
	t.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
		ct = "application/json"
	case string:
		rd = strings.NewReader(b)
		ct = "application/json"
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
		ct = "application/json"
	}
	url := path
	if !strings.HasPrefix(path, "http") {
		url = h.URL + path
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := h.Client.Do(req)
	if err != nil {
		t.Fatalf("servertest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// AssertNoLeak fails the test when any canary (a secret value the test
// planted: client secret, refresh token, API key, code, ...) appears in a
// log line or in any response body or header the harness saw, plain or
// encoded. The canaries stay registered: the check runs again when the
// test ends, covering what happens after this call.
func (h *Harness) AssertNoLeak(t testing.TB, canaries ...string) {
	t.Helper()
	h.Leaks.Secret(canaries...)
	h.Leaks.Check(t)
}
