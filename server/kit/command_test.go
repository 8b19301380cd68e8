package kit_test

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	corekit "github.com/connectd/connectd/core/kit"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/encryption"
	"github.com/connectd/connectd/server/kit"
)

func TestAppCommand(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		st := storetest.OpenStore(t, backend, nil)
		var ended []string
		run := func(args ...string) (int, string, string) {
			var out, errb bytes.Buffer
			code := kit.AppCommand(ctx, args, &out, &errb, kit.CommandOptions{Store: st, Connectors: []string{"pipedrive", "clio"}, EndLogin: func(_ context.Context, id string) error {
				ended = append(ended, id)
				return nil
			}})
			return code, out.String(), errb.String()
		}
		code, out, _ := run("create", "--name", "Deals", "--connector", "pipedrive", "--redirect-uri", "https://app.kit.com/apps/install", "--redirect-uri", "https://app.kit.com/apps")
		if code != 0 {
			t.Fatalf("create: %d %s", code, out)
		}
		secret := regexp.MustCompile(`client secret: (\S+)`).FindStringSubmatch(out)
		cid := regexp.MustCompile(`client id:     (\S+)`).FindStringSubmatch(out)
		if secret == nil || cid == nil {
			t.Fatalf("create output: %s", out)
		}
		a, err := st.GetKitAppByClientID(ctx, cid[1])
		if err != nil || a.ClientSecretHash != corekit.Hash(secret[1]) || strings.Contains(a.ClientSecretHash, secret[1]) || len(a.RedirectURIs) != 2 {
			t.Fatalf("stored app: %+v %v", a, err)
		}
		code, out, _ = run("list")
		if code != 0 || !strings.Contains(out, cid[1]) || strings.Contains(out, secret[1]) || strings.Contains(out, a.ClientSecretHash) {
			t.Fatalf("list: %d %s", code, out)
		}
		code, out, _ = run("rotate-secret", "--app", cid[1])
		ns := regexp.MustCompile(`client secret: (\S+)`).FindStringSubmatch(out)
		if code != 0 || ns == nil || ns[1] == secret[1] {
			t.Fatalf("rotate: %d %s", code, out)
		}
		a2, _ := st.GetKitApp(ctx, a.ID)
		if a2.ClientSecretHash != corekit.Hash(ns[1]) {
			t.Fatal("rotated secret not stored")
		}
		for _, bad := range [][]string{
			{"create", "--name", "X", "--connector", "nope", "--redirect-uri", "https://a.example/"},
			{"create", "--name", "X", "--connector", "pipedrive"},
			{"create", "--name", "X", "--connector", "pipedrive", "--redirect-uri", "http://evil.example/cb"},
			{"delete"},
			{"frobnicate"},
		} {
			if code, _, errs := run(bad...); code == 0 || errs == "" {
				t.Errorf("%v: exit %d", bad, code)
			}
		}
		// An install: deleting the app ends its creator's login.
		u, err := st.UpsertUser(ctx, &store.User{Platform: "pipedrive", CRMUserID: "9", Host: store.HostIdentity{Kind: "kit", AccountID: a.ID, UserID: "g"}, Status: store.StatusActive})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := corekit.New(corekit.Options{Store: st, Keys: testRing(t)})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := svc.IssueCode(ctx, a2, "", u.ID, "https://app.kit.com/apps"); err != nil {
			t.Fatal(err)
		}
		if code, out, errs := run("delete", "--app", a.ID); code != 0 || !strings.Contains(out, "1 install(s) ended") {
			t.Fatalf("delete: %d %s %s", code, out, errs)
		}
		if len(ended) != 1 || ended[0] != u.ID {
			t.Fatalf("ended logins = %v, want %s", ended, u.ID)
		}
		if _, err := st.GetKitApp(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("app still there: %v", err)
		}
		if code, _, _ := run("delete", "--app", a.ID); code != 1 {
			t.Fatalf("second delete: %d", code)
		}
	})
}

func testRing(t *testing.T) *encryption.KeyRing {
	t.Helper()
	key, err := encryption.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := encryption.NewKeyRing(1, key)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
