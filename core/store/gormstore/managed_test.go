package gormstore_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	_ "github.com/glebarez/go-sqlite" // database/sql driver "sqlite" for raw access

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
)

// rawDB opens the test database behind the store's back, to look at and
// tamper with sealed columns.
func rawDB(t *testing.T, backend, dbURL string) *sql.DB {
	t.Helper()
	driver, dsn := "pgx", dbURL
	if backend == storetest.SQLite {
		driver, dsn = "sqlite", strings.TrimPrefix(dbURL, "sqlite://")
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func q(backend, s string) string {
	if backend != storetest.Postgres {
		return s
	}
	// $1, $2 ... for pgx.
	var b strings.Builder
	n := 0
	for _, r := range s {
		if r == '?' {
			n++
			b.WriteString("$")
			b.WriteByte(byte('0' + n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func TestManagedSealing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		dbURL := storetest.NewURL(t, backend)
		s := storetest.OpenStoreURL(t, dbURL, nil)
		raw := rawDB(t, backend, dbURL)

		keyA := store.ManagedKey{HostKind: "ringcentral", AccountID: "A", Platform: "acme", Scope: store.ManagedScopeAccount}
		keyB := store.ManagedKey{HostKind: "ringcentral", AccountID: "B", Platform: "acme", Scope: store.ManagedScopeAccount}
		keyAU := store.ManagedKey{HostKind: "ringcentral", AccountID: "A", Platform: "acme", Scope: store.ManagedScopeUser, UserID: "7"}
		for k, v := range map[store.ManagedKey]string{keyA: "secret-of-a", keyB: "secret-of-b", keyAU: "secret-of-a-user"} {
			if err := s.ApplyManagedChange(ctx, store.ManagedChange{Key: k, Set: map[string]string{"tenantId": v}, SetBy: "admin"}); err != nil {
				t.Fatal(err)
			}
		}
		rows, err := raw.QueryContext(ctx, "SELECT value FROM managed_values")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var v []byte
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(v, []byte("secret-of")) {
				t.Fatal("plaintext at rest")
			}
			n++
		}
		rows.Close()
		if n != 3 {
			t.Fatalf("%d rows", n)
		}
		get := func(account, user, field string) []byte {
			var v []byte
			if err := raw.QueryRowContext(ctx, q(backend, "SELECT value FROM managed_values WHERE host_account_id = ? AND host_user_id = ? AND field_const = ?"), account, user, field).Scan(&v); err != nil {
				t.Fatal(err)
			}
			return v
		}
		put := func(account, user string, v []byte) {
			if _, err := raw.ExecContext(ctx, q(backend, "UPDATE managed_values SET value = ? WHERE host_account_id = ? AND host_user_id = ?"), v, account, user); err != nil {
				t.Fatal(err)
			}
		}
		t.Run("a value moved to another account does not open", func(t *testing.T) {
			orig := get("B", "", "tenantId")
			put("B", "", get("A", "", "tenantId"))
			if _, err := s.ManagedValuesFor(ctx, "ringcentral", "B", "acme", ""); !errors.Is(err, store.ErrDecrypt) {
				t.Fatalf("got %v", err)
			}
			put("B", "", orig)
			vals, err := s.ManagedValuesFor(ctx, "ringcentral", "B", "acme", "")
			if err != nil || len(vals) != 1 || vals[0].Value != "secret-of-b" {
				t.Fatalf("%v %v", vals, err)
			}
		})
		t.Run("an account value moved to a user does not open", func(t *testing.T) {
			orig := get("A", "7", "tenantId")
			put("A", "7", get("A", "", "tenantId"))
			if _, err := s.ListManagedValues(ctx, "ringcentral", "A", "acme"); !errors.Is(err, store.ErrDecrypt) {
				t.Fatalf("got %v", err)
			}
			put("A", "7", orig)
		})
		t.Run("user filter", func(t *testing.T) {
			vals, err := s.ManagedValuesFor(ctx, "ringcentral", "A", "acme", "7")
			if err != nil || len(vals) != 2 {
				t.Fatalf("%v %v", vals, err)
			}
			vals, err = s.ManagedValuesFor(ctx, "ringcentral", "A", "acme", "8")
			if err != nil || len(vals) != 1 || vals[0].Key.Scope != store.ManagedScopeAccount {
				t.Fatalf("%v %v", vals, err)
			}
			if vals, _ := s.ManagedValuesFor(ctx, "operator", "A", "acme", "7"); len(vals) != 0 {
				t.Fatal("host kinds met")
			}
		})
		t.Run("client secret bound to its app row", func(t *testing.T) {
			a := &store.ManagedOAuthApp{HostKind: "ringcentral", AccountID: "A", Platform: "crm", ClientID: "ca", ClientSecret: "cs-a", TokenURL: "https://x/t"}
			b := &store.ManagedOAuthApp{HostKind: "ringcentral", AccountID: "B", Platform: "crm", ClientID: "cb", ClientSecret: "cs-b", TokenURL: "https://x/t"}
			for _, app := range []*store.ManagedOAuthApp{a, b} {
				if err := s.PutPendingOAuthApp(ctx, app, nil); err != nil {
					t.Fatal(err)
				}
			}
			var ct []byte
			if err := raw.QueryRowContext(ctx, q(backend, "SELECT client_secret FROM managed_oauth_apps WHERE id = ?"), a.ID).Scan(&ct); err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(ct, []byte("cs-a")) {
				t.Fatal("plaintext client secret at rest")
			}
			if _, err := raw.ExecContext(ctx, q(backend, "UPDATE managed_oauth_apps SET client_secret = ? WHERE id = ?"), ct, b.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetManagedOAuthApp(ctx, b.ID); !errors.Is(err, store.ErrDecrypt) {
				t.Fatalf("got %v", err)
			}
			// Promotion keeps the row, so the secret still opens.
			if err := s.PromoteOAuthApp(ctx, a.ID, "u1"); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetManagedOAuthApp(ctx, a.ID)
			if err != nil || got.State != store.OAuthAppActive || got.ClientSecret != "cs-a" || got.PromotedBy != "u1" || got.ExpiresAt != nil {
				t.Fatalf("%+v %v", got, err)
			}
			if err := s.PromoteOAuthApp(ctx, a.ID, "u1"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("second promotion: %v", err)
			}
		})
	})
}

func TestManagedAppsAndAudit(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		clk := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
		s := storetest.OpenStore(t, backend, clk)
		exp := clk.Now().Add(time.Hour)
		put := func(id string) *store.ManagedOAuthApp {
			a := &store.ManagedOAuthApp{HostKind: "operator", AccountID: "A", Platform: "crm", ClientID: id, ClientSecret: "s-" + id, TokenURL: "https://x/t", Scopes: []string{"a", "b"}, ExpiresAt: &exp}
			if err := s.PutPendingOAuthApp(ctx, a, &store.AuditEvent{Actor: store.HostIdentity{Kind: "operator", AccountID: "A", UserID: "admin"}, Action: "oauth_app.pending_set", Platform: "crm", Fields: []string{"clientId"}}); err != nil {
				t.Fatal(err)
			}
			return a
		}
		first := put("one")
		second := put("two")
		if first.ID != second.ID {
			t.Fatal("a second pending submission made a second pending row")
		}
		pending, active, err := s.CurrentOAuthApps(ctx, "operator", "A", "crm")
		if err != nil || active != nil || pending == nil || pending.ClientID != "two" || pending.ClientSecret != "s-two" || strings.Join(pending.Scopes, ",") != "a,b" {
			t.Fatalf("%+v %+v %v", pending, active, err)
		}
		clk.Advance(2 * time.Hour)
		if pending, _, _ := s.CurrentOAuthApps(ctx, "operator", "A", "crm"); pending != nil {
			t.Fatal("expired pending app listed")
		}
		if err := s.PromoteOAuthApp(ctx, second.ID, "u"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("expired promotion: %v", err)
		}
		if n, err := s.DeleteOAuthApps(ctx, "operator", "A", "crm", []string{store.OAuthAppPending}, nil); err != nil || n != 1 {
			t.Fatalf("delete: %d %v", n, err)
		}

		for i, act := range []string{"a1", "a2", "a3"} {
			clk.Advance(time.Second)
			if err := s.AppendAudit(ctx, &store.AuditEvent{Actor: store.HostIdentity{Kind: "operator", AccountID: "A", UserID: "admin"}, Action: act, Platform: []string{"crm", "crm", "other"}[i], Fields: []string{"set:x"}}); err != nil {
				t.Fatal(err)
			}
		}
		evs, err := s.ListAudit(ctx, store.AuditQuery{HostKind: "operator", AccountID: "A", Platform: "crm", Limit: 10})
		if err != nil || len(evs) != 4 || evs[0].Action != "a2" || evs[1].Action != "a1" || evs[3].Action != "oauth_app.pending_set" || evs[0].Fields[0] != "set:x" {
			t.Fatalf("%+v %v", evs, err)
		}
		if evs, _ := s.ListAudit(ctx, store.AuditQuery{HostKind: "ringcentral", AccountID: "A"}); len(evs) != 0 {
			t.Fatal("audit crossed host kinds")
		}
		// Strictly older than the cutoff: the two pending_set events; a1 sits
		// exactly at the cutoff and stays.
		n, err := s.PurgeAudit(ctx, clk.Now().Add(-2*time.Second))
		if err != nil || n != 2 {
			t.Fatalf("purge: %d %v", n, err)
		}
		if evs, _ := s.ListAudit(ctx, store.AuditQuery{HostKind: "operator", AccountID: "A"}); len(evs) != 3 || evs[2].Action != "a1" {
			t.Fatalf("after purge: %+v", evs)
		}
	})
}
