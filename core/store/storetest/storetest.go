// Package storetest is the storage conformance suite (Run) and the test
// helpers every package uses to get a real, fresh, migrated database on
// each backend (Backends, Each, NewURL, OpenStore).
//
// SQLite always runs. PostgreSQL runs when CONNECTD_TEST_POSTGRES_URL is
// set (an admin URL, e.g.
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable); each test gets
// its own database, created and dropped through that URL. Under CI=true a
// missing or unreachable PostgreSQL fails the test instead of skipping it.
//
// Typical use in another package's tests:
//
//	func TestSomething(t *testing.T) {
//		storetest.Each(t, func(t *testing.T, backend string) {
//			clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
//			s := storetest.OpenStore(t, backend, clk) // fresh, migrated; closed and dropped at cleanup
//			...
//		})
//	}
//
// Creating a PostgreSQL database costs about half a second (fsync), so
// tests that open many stores should call t.Parallel in their subtests.
// Pass an untyped nil clock for the database clock.
package storetest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/hashicorp/go-hclog"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for the admin connection
)

// EnvPostgresURL names the environment variable holding the PostgreSQL
// admin URL for tests.
const EnvPostgresURL = "CONNECTD_TEST_POSTGRES_URL"

// Backend names.
const (
	SQLite   = gormstore.DialectSQLite
	Postgres = gormstore.DialectPostgres
)

// Backends returns the backends to run on: always "sqlite"; "postgres"
// when CONNECTD_TEST_POSTGRES_URL is set. A set but unreachable server
// fails the test; so does an unset variable under CI=true (never a silent
// skip in CI).
func Backends(t testing.TB) []string {
	t.Helper()
	backends := []string{SQLite}
	admin := os.Getenv(EnvPostgresURL)
	if admin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("storetest: CI=true but %s is not set: PostgreSQL tests must run in CI", EnvPostgresURL)
		}
		return backends
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	db, err := sql.Open("pgx", admin)
	if err == nil {
		err = db.PingContext(ctx)
		_ = db.Close()
	}
	if err != nil {
		t.Fatalf("storetest: PostgreSQL at %s (from %s) is unreachable: %v", redactURL(admin), EnvPostgresURL, err)
	}
	return append(backends, Postgres)
}

// Each runs fn as a subtest per backend, named after it.
func Each(t *testing.T, fn func(t *testing.T, backend string)) {
	t.Helper()
	for _, b := range Backends(t) {
		t.Run(b, func(t *testing.T) { fn(t, b) })
	}
}

// NewURL creates a fresh empty database for this test on backend and
// returns its URL. SQLite: a file in t.TempDir(). PostgreSQL: CREATE
// DATABASE connectd_test_<random> through the admin URL, dropped WITH
// (FORCE) when the test ends.
func NewURL(t testing.TB, backend string) string {
	t.Helper()
	switch backend {
	case SQLite:
		return "sqlite://" + filepath.Join(t.TempDir(), "connectd.db")
	case Postgres:
		admin := os.Getenv(EnvPostgresURL)
		if admin == "" {
			t.Fatalf("storetest: backend postgres needs %s", EnvPostgresURL)
		}
		u, err := url.Parse(admin)
		if err != nil {
			t.Fatalf("storetest: %s is not a valid URL", EnvPostgresURL)
		}
		name := "connectd_test_" + randomHex(t, 8)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		db, err := sql.Open("pgx", admin)
		if err != nil {
			t.Fatalf("storetest: open admin connection: %v", err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
			t.Fatalf("storetest: create database %s: %v", name, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			db, err := sql.Open("pgx", admin)
			if err != nil {
				t.Errorf("storetest: drop database %s: %v", name, err)
				return
			}
			defer db.Close()
			if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
				t.Errorf("storetest: drop database %s: %v", name, err)
			}
		})
		u.Path = "/" + name
		return u.String()
	default:
		t.Fatalf("storetest: unknown backend %q", backend)
		return ""
	}
}

// OpenStore opens and migrates a gormstore on a fresh database of backend,
// with a test sealer (NewSealer) and clk (pass an untyped nil for the
// database clock). Closed when the test ends.
func OpenStore(t testing.TB, backend string, clk clock.Clock) *gormstore.Store {
	t.Helper()
	return OpenStoreURL(t, NewURL(t, backend), clk)
}

// OpenStoreURL is OpenStore on an existing database URL (e.g. a second
// "replica" on the same database). Migrate runs every time; it is
// idempotent.
func OpenStoreURL(t testing.TB, dbURL string, clk clock.Clock) *gormstore.Store {
	t.Helper()
	return OpenStoreWith(t, gormstore.Options{URL: dbURL, Sealer: NewSealer(t), Clock: clk})
}

// OpenStoreWith opens and migrates a store with explicit options (a
// shared Sealer for replicas of one database); Logger defaults to a
// logger writing warnings and errors to the test log.
func OpenStoreWith(t testing.TB, o gormstore.Options) *gormstore.Store {
	t.Helper()
	if o.Logger == nil {
		o.Logger = TestLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := gormstore.Open(ctx, o)
	if err != nil {
		t.Fatalf("storetest: open store: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("storetest: close store: %v", err)
		}
	})
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("storetest: migrate: %v", err)
	}
	return s
}

// TestLogger returns an hclog logger writing warnings and errors to the
// test log.
func TestLogger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   t.Name(),
		Level:  hclog.Warn,
		Output: testWriter{t},
	})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// NewSealer returns an AES-256-GCM sealer with a random key for tests:
// nonce(12) | sealed. Open fails (ErrOpen) on any tampering or on
// different associated data.
func NewSealer(t testing.TB) gormstore.Sealer {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatalf("storetest: key: %v", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatalf("storetest: cipher: %v", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatalf("storetest: gcm: %v", err)
	}
	return &sealer{aead: aead}
}

// ErrOpen is returned by the test sealer's Open.
var ErrOpen = errors.New("storetest sealer: open failed")

type sealer struct{ aead cipher.AEAD }

func (s *sealer) Seal(plaintext, ad []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return s.aead.Seal(nonce, nonce, plaintext, ad), nil
}

func (s *sealer) Open(ct, ad []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(ct) < n+s.aead.Overhead() {
		return nil, ErrOpen
	}
	pt, err := s.aead.Open(nil, ct[:n], ct[n:], ad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("storetest: random: %v", err)
	}
	return hex.EncodeToString(b)
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
