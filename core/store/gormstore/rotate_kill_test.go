package gormstore_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/core/store/storetest"
)

const (
	envChildURL   = "CONNECTD_ROTATE_CHILD_URL"
	envChildBatch = "CONNECTD_ROTATE_CHILD_BATCH"
	envChildPace  = "CONNECTD_ROTATE_CHILD_PACE"
	childTestRun  = "^TestRotateChildProcess$"
)

// TestRotateChildProcess is the rotate process of rotateKill: it runs
// only when re-executed by it, and prints one progress line per batch
// until it is killed.
func TestRotateChildProcess(t *testing.T) {
	url := os.Getenv(envChildURL)
	if url == "" {
		t.Skip("run by TestRotateKillLight and TestFaultRotateKill")
	}
	batch, _ := strconv.Atoi(os.Getenv(envChildBatch))
	pace, _ := time.ParseDuration(os.Getenv(envChildPace))
	st := openWithRing(t, url, 2, 1)
	_, err := st.RotateSealed(context.Background(), batch, func(p store.RotateProgress) {
		fmt.Printf("progress %d %d %d %d\n", p.Done, p.Total, p.Resealed, p.Conflicts)
		time.Sleep(pace) // the light test slows the child so the kill lands mid-run
	})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("finished")
}

// rotateKill: 2*users sealed values under key 1; key 2 promoted; a rotate
// process (this test binary, re-executed) is killed with SIGKILL a third
// of the way through while a replica keeps rewriting tokens; a second
// rotation resumes and finishes; every value then opens under key 2 alone
// and no concurrent write was lost.
func rotateKill(t *testing.T, faultUsers, batch int, pace time.Duration) {
	storetest.Each(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		url := storetest.NewURL(t, backend)
		old := openWithRing(t, url, 1)
		start := time.Now()
		if err := gormstore.SeedUsers(ctx, old, "u", faultUsers); err != nil {
			t.Fatal(err)
		}
		before, err := old.KeyUsage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: seeded %d values in %s; keys status before: %v", backend, 2*faultUsers, time.Since(start).Round(time.Millisecond), before["encryption"])
		if before["encryption"][1] != int64(2*faultUsers) {
			t.Fatalf("usage before = %v", before)
		}

		// A replica already on key 2 rewrites access tokens throughout.
		replica := openWithRing(t, url, 2, 1)
		var (
			mu      sync.Mutex
			written = map[int]string{}
			writes  atomic.Int64
			stop    = make(chan struct{})
			wg      sync.WaitGroup
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(1, 2))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				i := rng.IntN(faultUsers)
				v := fmt.Sprintf("w%d-at-%d", n, i)
				// Hold the lock across the write so the map's value is the
				// row's value whatever order writes land in.
				mu.Lock()
				_, err := replica.UpsertUser(ctx, &store.User{Platform: "seed", CRMUserID: gormstore.UserSeedID("u", i), AccessToken: v, RefreshToken: fmt.Sprintf("rt-%d", i)})
				if err == nil {
					written[i] = v
				}
				mu.Unlock()
				if err != nil {
					t.Errorf("replica write: %v", err)
					return
				}
				writes.Add(1)
				time.Sleep(time.Millisecond)
			}
		}()

		// The rotate process, killed mid-run.
		cmd := exec.Command(os.Args[0], "-test.run", childTestRun, "-test.count=1")
		cmd.Env = append(os.Environ(), envChildURL+"="+url, envChildBatch+"="+strconv.Itoa(batch), envChildPace+"="+pace.String())
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		rotStart := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var lastDone, lastResealed, total int64
		killed := false
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 5 && f[0] == "progress" {
				lastDone, _ = strconv.ParseInt(f[1], 10, 64)
				total, _ = strconv.ParseInt(f[2], 10, 64)
				lastResealed, _ = strconv.ParseInt(f[3], 10, 64)
				if !killed && lastDone >= total/3 {
					if err := cmd.Process.Kill(); err != nil { // SIGKILL: no cleanup, mid-transaction
						t.Fatal(err)
					}
					killed = true
				}
			}
			if sc.Text() == "finished" {
				t.Fatal("the rotate process finished before it could be killed")
			}
		}
		werr := cmd.Wait()
		if !killed || werr == nil {
			t.Fatalf("rotate process not killed (killed=%v, wait=%v)", killed, werr)
		}
		childTime := time.Since(rotStart)
		mid, err := replica.KeyUsage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: killed the rotate process after %d/%d values (%d re-sealed) in %s; keys status after the kill: %v",
			backend, lastDone, total, lastResealed, childTime.Round(time.Millisecond), mid["encryption"])
		if mid["encryption"][2] < lastResealed || mid["encryption"][1] == 0 {
			t.Fatalf("after the kill: usage %v, child reported %d re-sealed", mid, lastResealed)
		}

		// Resume (a fresh process would do the same: the run only looks
		// at values still under another key) while the replica writes on.
		rot := openWithRing(t, url, 2, 1)
		resumeStart := time.Now()
		res, err := rot.RotateSealed(ctx, batch, nil)
		if err != nil {
			t.Fatal(err)
		}
		resumeTime := time.Since(resumeStart)
		close(stop)
		wg.Wait()
		if res.Failed != 0 {
			t.Fatalf("resume: %+v", res)
		}
		if res.Total > total-lastResealed {
			t.Fatalf("resume saw %d values to do, more than the %d left by the killed run", res.Total, total-lastResealed)
		}
		// Safe to re-run: nothing left.
		again, err := rot.RotateSealed(ctx, batch, nil)
		if err != nil || again.Total != 0 || again.Resealed != 0 {
			t.Fatalf("re-run: %+v %v", again, err)
		}
		after, err := rot.KeyUsage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: resumed run re-sealed %d (conflicts with the writer: %d) in %s (%.0f values/s); replica wrote %d times; keys status after: %v",
			backend, res.Resealed, res.Conflicts, resumeTime.Round(time.Millisecond), float64(res.Done)/resumeTime.Seconds(), writes.Load(), after["encryption"])
		if len(after["encryption"]) != 1 || after["encryption"][2] != int64(2*faultUsers) {
			t.Fatalf("usage after = %v, want all %d under key 2", after, 2*faultUsers)
		}

		// Key 1 gone: every value opens, every write of the replica stands.
		only2 := openWithRing(t, url, 2)
		for i := range faultUsers {
			u, err := only2.GetUser(ctx, gormstore.UserSeedID("u", i))
			if err != nil {
				t.Fatalf("user %d: %v", i, err)
			}
			want := fmt.Sprintf("at-%d", i)
			if w, ok := written[i]; ok {
				want = w
			}
			if u.AccessToken != want || u.RefreshToken != fmt.Sprintf("rt-%d", i) {
				t.Fatalf("user %d: access %q want %q (a concurrent write was overwritten)", i, u.AccessToken, want)
			}
		}
	})
}

// TestRotateKillLight is the normal-suite version of TestFaultRotateKill:
// 600 values, 25 per batch, the child slowed so the kill lands mid-run.
func TestRotateKillLight(t *testing.T) {
	rotateKill(t, 300, 25, 20*time.Millisecond)
}
