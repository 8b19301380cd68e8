package gormstore_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/encryption"
)

// ringOf builds a ring whose keys are derived from their ids (tests only):
// the first id is the primary.
func ringOf(t testing.TB, ids ...uint32) *encryption.KeyRing {
	t.Helper()
	var r *encryption.KeyRing
	for _, id := range ids {
		key := make([]byte, 32)
		for i := range key {
			key[i] = byte(id*31 + uint32(i))
		}
		var err error
		if r == nil {
			r, err = encryption.NewKeyRing(id, key)
		} else {
			r, err = r.Add(id, key)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func openWithRing(t testing.TB, url string, ids ...uint32) *gormstore.Store {
	t.Helper()
	return storetest.OpenStoreWith(t, gormstore.Options{URL: url, Sealer: encryption.NewAEAD(ringOf(t, ids...), nil)})
}

// TestSealedColumnsMatchSchema: every BLOB/bytea column except the key
// check values is a sealed column rotation knows, and the reverse - a
// sealed column added without teaching rotation fails here.
func TestSealedColumnsMatchSchema(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		st := openWithRing(t, storetest.NewURL(t, backend), 1)
		blobs, err := gormstore.BlobColumns(context.Background(), st)
		if err != nil {
			t.Fatal(err)
		}
		blobs = slices.DeleteFunc(blobs, func(c string) bool { return c == "key_checks.check_value" })
		want := gormstore.SealedColumns()
		slices.Sort(want)
		if !slices.Equal(blobs, want) {
			t.Fatalf("sealed columns known to rotation:\n%v\nBLOB columns in the schema:\n%v", want, blobs)
		}
	})
}

// seedOthers stores one value in each sealed column besides users' and
// returns a check that reads them all back through the normal API.
func seedOthers(t *testing.T, st *gormstore.Store) func(t *testing.T, st *gormstore.Store) {
	t.Helper()
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	flow := &store.OAuthFlow{Platform: "p", PKCEVerifier: "verifier-secret", ExpiresAt: exp}
	if err := st.CreateFlow(ctx, flow); err != nil {
		t.Fatal(err)
	}
	job, _, err := st.EnqueueJob(ctx, &store.Job{Kind: "k", Payload: []byte("job-payload"), ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	mk := store.ManagedKey{HostKind: "operator", AccountID: "acc/1", Platform: "p", Scope: store.ManagedScopeUser, UserID: "u 1"}
	if err := st.ApplyManagedChange(ctx, store.ManagedChange{Key: mk, Set: map[string]string{"apiKey": "managed-secret"}, SetBy: "op"}); err != nil {
		t.Fatal(err)
	}
	app := &store.ManagedOAuthApp{HostKind: "operator", AccountID: "acc", Platform: "p", ClientID: "cid", ClientSecret: "client-secret",
		TokenURL: "https://t.example.com/token", AuthURL: "https://t.example.com/auth", ExpiresAt: &exp, SetBy: "op"}
	if err := st.PutPendingOAuthApp(ctx, app, nil); err != nil {
		t.Fatal(err)
	}
	task, _, err := st.CreatePluginTask(ctx, &store.PluginTask{PluginID: "pl", OwnerKey: "o", Contract: "a", Payload: []byte("task-payload"), ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SavePluginTaskOutcome(ctx, task.ID, true, "ok", []byte("task-result")); err != nil {
		t.Fatal(err)
	}
	return func(t *testing.T, st *gormstore.Store) {
		t.Helper()
		f, err := st.GetFlow(ctx, flow.ID)
		if err != nil || f.PKCEVerifier != "verifier-secret" {
			t.Errorf("flow after rotation: %v %v", f, err)
		}
		jobs, err := st.GetJob(ctx, job.ID)
		if err != nil || string(jobs.Payload) != "job-payload" {
			t.Errorf("job after rotation: %v", err)
		}
		vals, err := st.ManagedValuesFor(ctx, mk.HostKind, mk.AccountID, mk.Platform, mk.UserID)
		if err != nil || len(vals) != 1 || vals[0].Value != "managed-secret" {
			t.Errorf("managed values after rotation: %v %v", len(vals), err)
		}
		a, err := st.GetManagedOAuthApp(ctx, app.ID)
		if err != nil || a.ClientSecret != "client-secret" {
			t.Errorf("managed app after rotation: %v", err)
		}
		tk, err := st.GetPluginTask(ctx, task.ID)
		if err != nil || string(tk.Payload) != "task-payload" || string(tk.Result) != "task-result" {
			t.Errorf("plugin task after rotation: %v", err)
		}
	}
}

// TestRotateSealedLight is the normal-suite rotation test: a few hundred
// values in every sealed column, a concurrent writer on the new primary
// and one still on the old primary, a corrupt value, then re-runs.
func TestRotateSealedLight(t *testing.T) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		url := storetest.NewURL(t, backend)
		old := openWithRing(t, url, 1)
		const users = 150
		if err := gormstore.SeedUsers(ctx, old, "u", users); err != nil {
			t.Fatal(err)
		}
		check := seedOthers(t, old)
		const others = 7 // flow, job payload, managed value, app secret, task payload + result... counted below
		usage, err := old.KeyUsage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total := usage["encryption"][1]
		if total < 2*users+others-1 || len(usage["encryption"]) != 1 {
			t.Fatalf("usage before = %v, want only key 1 with >= %d values", usage, 2*users+others-1)
		}

		// Promote key 2 on the rotating process and one replica; another
		// replica still seals with key 1.
		rot := openWithRing(t, url, 2, 1)
		newWriter := openWithRing(t, url, 2, 1)
		oldWriter := openWithRing(t, url, 1, 2)
		// A corrupt value under key 1: counted as failed, left alone.
		bad := gormstore.UserSeedID("u", users-1)
		garbage := append([]byte{1, 0, 0, 0, 1}, make([]byte, 40)...)
		if err := rot.SetRawColumn(ctx, "users", "api_key", bad, garbage); err != nil {
			t.Fatal(err)
		}

		var wg sync.WaitGroup
		written := map[int]string{}
		var mu sync.Mutex
		writer := func(st *gormstore.Store, from, to int, tag string) {
			defer wg.Done()
			for i := from; i < to; i++ {
				v := fmt.Sprintf("%s-at-%d", tag, i)
				u := &store.User{Platform: "seed", CRMUserID: gormstore.UserSeedID("u", i), AccessToken: v, RefreshToken: "rt-" + fmt.Sprint(i)}
				if _, err := st.UpsertUser(ctx, u); err != nil {
					t.Errorf("writer: %v", err)
					return
				}
				mu.Lock()
				written[i] = v
				mu.Unlock()
			}
		}
		var reports []store.RotateProgress
		wg.Add(2)
		go writer(newWriter, 0, 40, "new")
		go writer(oldWriter, 40, 60, "old")
		res, err := rot.RotateSealed(ctx, 25, func(p store.RotateProgress) { reports = append(reports, p) })
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if res.PrimaryKeyID != 2 || res.Failed != 1 || len(res.FailedRefs) != 1 || res.FailedRefs[0] != "users.api_key "+bad {
			t.Fatalf("result = %+v", res)
		}
		if res.Done != res.Resealed+res.Conflicts+res.Failed || res.Done > res.Total {
			t.Fatalf("result counts = %+v", res)
		}
		if len(reports) < 2 || reports[len(reports)-1].Done != res.Done {
			t.Fatalf("progress reports = %d, last %+v", len(reports), reports[len(reports)-1])
		}
		for i := 1; i < len(reports); i++ {
			if reports[i].Done < reports[i-1].Done {
				t.Fatalf("progress went backwards: %+v then %+v", reports[i-1], reports[i])
			}
		}

		// Re-run until only the old writer's stragglers and the corrupt
		// value remain; then everything readable is under key 2.
		res2, err := rot.RotateSealed(ctx, 25, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res2.Failed != 1 || res2.Conflicts != 0 {
			t.Fatalf("second run = %+v", res2)
		}
		res3, err := rot.RotateSealed(ctx, 25, nil)
		if err != nil || res3.Resealed != 0 || res3.Total != 1 {
			t.Fatalf("third run (nothing left but the corrupt value) = %+v, %v", res3, err)
		}
		usage, err = rot.KeyUsage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if usage["encryption"][1] != 1 || len(usage["encryption"]) != 2 {
			t.Fatalf("usage after = %v, want key 1 only for the corrupt value", usage)
		}

		// Key 1 gone: everything (but the corrupt value) opens, and every
		// concurrent write survived.
		if err := rot.SetRawColumn(ctx, "users", "api_key", bad, nil); err != nil {
			t.Fatal(err)
		}
		only2 := openWithRing(t, url, 2)
		for i := 0; i < users; i++ {
			u, err := only2.GetUser(ctx, gormstore.UserSeedID("u", i))
			if err != nil {
				t.Fatalf("user %d: %v", i, err)
			}
			want := fmt.Sprintf("at-%d", i)
			if w, ok := written[i]; ok {
				want = w
			}
			if u.AccessToken != want || u.RefreshToken != fmt.Sprintf("rt-%d", i) {
				t.Fatalf("user %d access token = %q, want %q (a concurrent write was overwritten?)", i, u.AccessToken, want)
			}
		}
		check(t, only2)
	})
}
