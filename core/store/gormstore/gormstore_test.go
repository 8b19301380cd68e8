package gormstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/encryption"
	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		storetest.Run(t, func(t *testing.T, clk clock.Clock) store.Store {
			return storetest.OpenStore(t, backend, clk)
		})
	})
}

func TestOpenRejectsBadURLsWithoutEchoingThem(t *testing.T) {
	tests := []struct {
		name, url, want string
	}{
		{"empty", "", "empty"},
		{"unknown scheme", "mysql://root:s3cr3tpw@db:3306/app", "unsupported database URL scheme \"mysql\""},
		{"malformed postgres", "postgres://user:s3cr3tpw@db:notaport/app", "malformed PostgreSQL URL"},
		{"postgres without database", "postgres://user:s3cr3tpw@db:5432", "no database name"},
		{"postgres without host", "postgres:///app", "no host"},
		{"sqlite with query", "sqlite:///tmp/x.db?_pragma=journal_mode(DELETE)", "must not carry query parameters"},
		{"sqlite without path", "sqlite://", "no file path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := gormstore.Open(t.Context(), gormstore.Options{URL: tc.url, Sealer: storetest.NewSealer(t)})
			if err == nil {
				t.Fatal("Open accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cr3tpw") {
				t.Fatalf("error echoes the password: %q", err)
			}
		})
	}
	t.Run("sealer required", func(t *testing.T) {
		_, err := gormstore.Open(t.Context(), gormstore.Options{URL: "sqlite::memory:"})
		if err == nil || !strings.Contains(err.Error(), "Sealer") {
			t.Fatalf("Open without a sealer: %v", err)
		}
	})
}

func TestOpenUnreachablePostgresIsUnavailable(t *testing.T) {
	// Port 1 on loopback refuses connections; no server needed.
	_, err := gormstore.Open(t.Context(), gormstore.Options{
		URL:    "postgres://connectd:s3cr3tpw@127.0.0.1:1/app?sslmode=disable&connect_timeout=2",
		Sealer: storetest.NewSealer(t),
	})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("error = %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "s3cr3tpw") {
		t.Fatalf("error echoes the password: %q", err)
	}
}

func TestSQLiteURLForms(t *testing.T) {
	dir := t.TempDir()
	for _, u := range []string{
		"sqlite::memory:",
		":memory:",
		"sqlite://" + filepath.Join(dir, "a.db"),
		"sqlite:" + filepath.Join(dir, "b.db"),
		filepath.Join(dir, "c.db"),
		"file:" + filepath.Join(dir, "d.db"),
	} {
		t.Run(u, func(t *testing.T) {
			s := storetest.OpenStoreURL(t, u, nil)
			if s.Dialect() != gormstore.DialectSQLite {
				t.Fatalf("dialect %q", s.Dialect())
			}
			created, err := s.UpsertUser(t.Context(), &store.User{Platform: "clio", CRMUserID: "1", RefreshToken: "r"})
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.GetUser(t.Context(), created.ID)
			if err != nil || got.RefreshToken != "r" {
				t.Fatalf("read back: %+v %v", got, err)
			}
		})
	}
}

func TestMigrate(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		dbURL := storetest.NewURL(t, backend)
		sealer := storetest.NewSealer(t)
		open := func() *gormstore.Store {
			s, err := gormstore.Open(t.Context(), gormstore.Options{URL: dbURL, Sealer: sealer})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		}
		s := open()
		if s.Dialect() != backend {
			t.Fatalf("Dialect() = %q, want %q", s.Dialect(), backend)
		}
		v, err := s.MigrationVersion(t.Context())
		if err != nil || v != 0 {
			t.Fatalf("fresh database: version %d, %v; want 0", v, err)
		}
		// Replicas starting together: every Migrate succeeds, each
		// migration applies once.
		const replicas = 6
		var wg sync.WaitGroup
		errs := make([]error, replicas)
		for i := range replicas {
			r := open()
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = r.Migrate(t.Context())
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("replica %d: Migrate: %v", i, err)
			}
		}
		v, err = s.MigrationVersion(t.Context())
		if err != nil || v != gormstore.SchemaVersion() || v < 104 {
			t.Fatalf("after migrate: version %d, %v; want SchemaVersion() = %d", v, err, gormstore.SchemaVersion())
		}
		if err := s.Migrate(t.Context()); err != nil {
			t.Fatalf("Migrate again: %v", err)
		}
		if _, err := s.UpsertUser(t.Context(), &store.User{Platform: "p", CRMUserID: "u"}); err != nil {
			t.Fatalf("schema unusable: %v", err)
		}
	})
}

// Two stores on one database stand for two replicas (two processes).
func TestReplicasShareOneDatabase(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		dbURL := storetest.NewURL(t, backend)
		sealer := storetest.NewSealer(t)
		a := storetest.OpenStoreWith(t, gormstore.Options{URL: dbURL, Sealer: sealer})
		b := storetest.OpenStoreWith(t, gormstore.Options{URL: dbURL, Sealer: sealer})
		ctx := t.Context()
		u, err := a.UpsertUser(ctx, &store.User{Platform: "clio", CRMUserID: "1", RefreshToken: "r1"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.AcquireUserLease(ctx, u.ID, "replica-a", time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := b.AcquireUserLease(ctx, u.ID, "replica-b", time.Minute); !errors.Is(err, store.ErrLeaseHeld) {
			t.Fatalf("replica b took a held lease: %v", err)
		}
		if _, err := a.SaveLeasedTokens(ctx, u.ID, "replica-a", store.TokenUpdate{AccessToken: "a2", RefreshToken: "r2"}); err != nil {
			t.Fatal(err)
		}
		got, err := b.GetUser(ctx, u.ID)
		if err != nil || got.RefreshToken != "r2" {
			t.Fatalf("replica b reads %+v, %v", got, err)
		}
		// Writers in both "processes" at once: no "database is locked".
		var wg sync.WaitGroup
		errs := make(chan error, 60)
		for i := range 60 {
			s := a
			if i%2 == 1 {
				s = b
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.UpsertUser(ctx, &store.User{Platform: "clio", CRMUserID: fmt.Sprint("crm-", i), RefreshToken: "r"})
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent writer across replicas: %v", err)
			}
		}
	})
}

func TestLogsCarryNoParameterValues(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: lockedWriter{&mu, &buf}})
	s := storetest.OpenStoreWith(t, gormstore.Options{URL: "sqlite::memory:", Sealer: storetest.NewSealer(t), Logger: logger})
	u, err := s.UpsertUser(t.Context(), &store.User{Platform: "clio", CRMUserID: "crm-param-value-4711", RefreshToken: "refresh-secret-4711"})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = s.AcquireUserLease(t.Context(), u.ID, "owner-param-4711", time.Minute)
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, "INSERT INTO users") {
		t.Fatalf("trace log lacks the statement (is SQL logging wired?):\n%s", out)
	}
	for _, v := range []string{"crm-param-value-4711", "refresh-secret-4711", "owner-param-4711"} {
		if strings.Contains(out, v) {
			t.Fatalf("log contains the parameter value %q:\n%s", v, out)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestCanceledContextIsUnavailable(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		s := storetest.OpenStore(t, backend, nil)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := s.GetUser(ctx, "x")
		if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, context.Canceled) {
			t.Fatalf("error = %v, want ErrUnavailable wrapping context.Canceled", err)
		}
	})
}

func BenchmarkUserReadOpen(b *testing.B) {
	for _, backend := range storetest.Backends(b) {
		b.Run(backend, func(b *testing.B) {
			s := storetest.OpenStore(b, backend, nil)
			u, err := s.UpsertUser(b.Context(), &store.User{
				Platform: "clio", CRMUserID: "bench", AccessToken: strings.Repeat("a", 200), RefreshToken: strings.Repeat("r", 200),
				APIKey: "k", Secrets: map[string]string{"password": "p"}, AdditionalInfo: map[string]any{"region": "us"},
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				got, err := s.GetUser(b.Context(), u.ID)
				if err != nil || got.RefreshToken == "" {
					b.Fatalf("GetUser: %v", err)
				}
			}
		})
	}
}

var _ gormstore.Sealer = (*encryption.AEAD)(nil)

// The real key ring end to end: rows sealed under an old primary still open
// after rotation, new writes use the new primary, and a ring missing a key
// in use fails with ErrDecrypt (never plaintext, never a panic).
func TestEncryptionKeyRotation(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := t.Context()
		newKey := func() []byte {
			k, err := encryption.GenerateKey(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			return k
		}
		k1, k2 := newKey(), newKey()
		ring1, err := encryption.NewKeyRing(1, k1)
		if err != nil {
			t.Fatal(err)
		}
		ring12, err := ring1.Add(2, k2)
		if err != nil {
			t.Fatal(err)
		}
		if ring12, err = ring12.Promote(2); err != nil {
			t.Fatal(err)
		}
		ring2, err := encryption.NewKeyRing(2, k2)
		if err != nil {
			t.Fatal(err)
		}
		dbURL := storetest.NewURL(t, backend)
		open := func(r *encryption.KeyRing) *gormstore.Store {
			return storetest.OpenStoreWith(t, gormstore.Options{URL: dbURL, Sealer: encryption.NewAEAD(r, nil)})
		}
		keyOf := func(s *gormstore.Store, id string) uint32 {
			ct, err := s.RawColumn(ctx, "users", "refresh_token", id)
			if err != nil {
				t.Fatal(err)
			}
			kid, err := encryption.KeyIDOf(ct)
			if err != nil {
				t.Fatal(err)
			}
			return kid
		}

		old := open(ring1)
		u1, err := old.UpsertUser(ctx, &store.User{Platform: "clio", CRMUserID: "1", RefreshToken: "refresh-1"})
		if err != nil {
			t.Fatal(err)
		}
		if kid := keyOf(old, u1.ID); kid != 1 {
			t.Fatalf("sealed with key %d, want 1", kid)
		}

		rotated := open(ring12)
		got, err := rotated.GetUser(ctx, u1.ID)
		if err != nil || got.RefreshToken != "refresh-1" {
			t.Fatalf("old row after rotation: %+v %v", got, err)
		}
		u2, err := rotated.UpsertUser(ctx, &store.User{Platform: "clio", CRMUserID: "2", RefreshToken: "refresh-2"})
		if err != nil {
			t.Fatal(err)
		}
		if kid := keyOf(rotated, u2.ID); kid != 2 {
			t.Fatalf("new row sealed with key %d, want the new primary 2", kid)
		}

		dropped := open(ring2)
		_, err = dropped.GetUser(ctx, u1.ID)
		if !errors.Is(err, store.ErrDecrypt) || !errors.Is(err, encryption.ErrUnknownKey) {
			t.Fatalf("row under a removed key: error %v, want ErrDecrypt and ErrUnknownKey", err)
		}
		if got, err := dropped.GetUser(ctx, u2.ID); err != nil || got.RefreshToken != "refresh-2" {
			t.Fatalf("row under the kept key: %+v %v", got, err)
		}
	})
}

func TestClosedStoreIsUnavailable(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		s := storetest.OpenStore(t, backend, nil)
		s2, err := gormstore.Open(t.Context(), gormstore.Options{URL: storetest.NewURL(t, backend), Sealer: storetest.NewSealer(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s2.Ping(t.Context()); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Ping on a closed store: %v, want ErrUnavailable", err)
		}
		if err := s.Ping(t.Context()); err != nil {
			t.Fatalf("Ping on an open store: %v", err)
		}
	})
}
