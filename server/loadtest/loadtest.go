// Package loadtest is connectd's load harness: it starts N connectd
// replica processes (this binary re-executed) against SQLite or a fresh
// PostgreSQL database, with the conformance kit's fake OAuth provider
// (rotation + reuse detection) and an instant fake API-key CRM in the
// harness process, seeds K users through the real login flow, drives a mix
// of /authValidation, /apiKeyLogin and OAuth callbacks at a given
// concurrency for a bounded duration (loopback only), prints a progress
// line per second and a table, and writes the results as JSON.
//
// It also measures a bare net/http handler doing one primary-key read of
// the same database with the same driver and the same load driver: the
// ratio says how much the whole stack costs over the floor. A refresh
// storm mode checks that many concurrent requests on several replicas for
// an expired token cause exactly one upstream refresh.
//
// Figures are produced here, never asserted as timings in unit tests.
package loadtest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/manifest"
)

// MaxDuration bounds one phase (a 10-minute soak fits).
const MaxDuration = 15 * time.Minute

// Config is one harness run.
type Config struct {
	Replicas    int
	DB          string // "sqlite" or a postgres:// ADMIN URL (a fresh database is created)
	KeepDB      bool
	Users       int
	Concurrency int
	Duration    time.Duration
	Rate        float64        // requests/s overall; 0 = saturation
	Mix         map[string]int // op -> weight
	Bare        bool           // also measure the bare handler
	Storm       int            // > 0: refresh storm with this many concurrent requests per replica
	StormDelay  time.Duration  // fake provider latency on /token during the storm
	LogLevel    string
	JSONPath    string
	WorkDir     string // "" = a temporary directory, removed at the end
	CPUProfile  bool   // replicas write replica-<i>.cpu.pprof into WorkDir
	Scale       int    // extra synthetic user+session rows (scale run)
}

// Result is what a run measured (written as JSON).
type Result struct {
	Started     time.Time            `json:"started"`
	Command     string               `json:"command"`
	Backend     string               `json:"backend"`
	Replicas    int                  `json:"replicas"`
	Users       int                  `json:"users"`
	Concurrency int                  `json:"concurrency"`
	Rate        float64              `json:"rate"`
	DurationS   float64              `json:"duration_s"`
	SeedS       float64              `json:"seed_s"`
	Ops         map[string]*OpResult `json:"ops"`
	Bare        *OpResult            `json:"bare,omitempty"`
	BareRatio   float64              `json:"bare_ratio,omitempty"`
	Upstream    upstream             `json:"upstream"`
	Processes   []ProcResult         `json:"processes"`
	Storm       *StormResult         `json:"storm,omitempty"`
	ScaleRows   int                  `json:"scale_rows,omitempty"`
	Plans       []string             `json:"plans,omitempty"`
	CPUs        int                  `json:"cpus"`
}

// ProcResult is one process's resources.
type ProcResult struct {
	Name            string  `json:"name"`
	StartRSSMB      float64 `json:"start_rss_mb"` // ready, before any request
	IdleRSSMB       float64 `json:"idle_rss_mb"`  // after the seed, before the load
	PeakRSSMB       float64 `json:"peak_rss_mb"`
	CPUSeconds      float64 `json:"cpu_s"`
	CPUPercent      float64 `json:"cpu_percent"` // of one core, over the phase
	FDsBefore       int     `json:"fds_before"`
	FDsAfter        int     `json:"fds_after"`
	GoroutinesBefor int     `json:"goroutines_before"`
	GoroutinesAfter int     `json:"goroutines_after"`
}

// StormResult is the refresh storm's outcome.
type StormResult struct {
	Requests        int              `json:"requests"`
	Status          map[string]int64 `json:"status"`
	UpstreamRefresh int              `json:"upstream_refreshes"`
	UpstreamLatency float64          `json:"upstream_latency_ms"`
	P50ms           float64          `json:"p50_ms"`
	P99ms           float64          `json:"p99_ms"`
	MaxMs           float64          `json:"max_ms"`
}

// Command parses the harness flags and runs it; it returns the exit
// status.
func Command(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("connectd-loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c Config
	var mix string
	fs.IntVar(&c.Replicas, "replicas", 1, "connectd replica processes")
	fs.StringVar(&c.DB, "db", "sqlite", "sqlite, or a postgres:// ADMIN URL (a fresh database connectd_load_* is created and dropped)")
	fs.BoolVar(&c.KeepDB, "keep-db", false, "do not drop the PostgreSQL database at the end")
	fs.IntVar(&c.Users, "users", 200, "users seeded through the OAuth login (K)")
	fs.IntVar(&c.Concurrency, "c", 64, "concurrent connections (workers)")
	fs.DurationVar(&c.Duration, "d", 10*time.Second, "duration of the load phase (max 15m)")
	fs.Float64Var(&c.Rate, "rate", 0, "fixed offered rate in requests/s (0: saturation)")
	fs.StringVar(&mix, "mix", "authValidation=1", "operation weights: authValidation, apiKeyLogin, oauthCallback")
	fs.BoolVar(&c.Bare, "bare", false, "also drive the bare net/http handler (one indexed read) and print the ratio")
	fs.IntVar(&c.Storm, "storm", 0, "refresh storm: concurrent requests per replica on one expired token (0: off)")
	fs.DurationVar(&c.StormDelay, "storm-latency", 100*time.Millisecond, "fake provider latency on the token endpoint during the storm")
	fs.StringVar(&c.LogLevel, "log-level", "info", "replicas' CONNECTD_LOG_LEVEL (their logs go to files in the work dir)")
	fs.StringVar(&c.JSONPath, "json", "", "write the results as JSON to this file")
	fs.StringVar(&c.WorkDir, "workdir", "", "keep logs and the SQLite file here (default: a temporary directory, removed)")
	fs.IntVar(&c.Scale, "scale", 0, "add this many synthetic user + session rows (batched INSERT ... SELECT) before the load, and print the hot reads' query plans")
	fs.BoolVar(&c.CPUProfile, "cpuprofile", false, "replicas write replica-<i>.cpu.pprof into -workdir (go tool pprof)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var err error
	if c.Mix, err = parseMix(mix); err != nil {
		fmt.Fprintf(stderr, "connectd-loadtest: -mix: %v\n", err)
		return 2
	}
	res, err := Run(context.Background(), c, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "connectd-loadtest: %v\n", err)
		return 1
	}
	res.Command = "connectd-loadtest " + strings.Join(args, " ")
	PrintTable(stdout, res)
	if c.JSONPath != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(c.JSONPath, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintf(stderr, "connectd-loadtest: write %s: %v\n", c.JSONPath, err)
			return 1
		}
	}
	return 0
}

func parseMix(s string) (map[string]int, error) {
	m := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			v = "1"
		}
		switch k {
		case OpAuthValidation, OpAPIKeyLogin, OpOAuthCallback:
		default:
			return nil, fmt.Errorf("unknown operation %q (want authValidation, apiKeyLogin, oauthCallback)", k)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("weight of %s: %q is not a whole number >= 0", k, v)
		}
		m[k] = n
	}
	total := 0
	for _, n := range m {
		total += n
	}
	if total == 0 {
		return nil, errors.New("no operation with a weight above 0")
	}
	return m, nil
}

func (c *Config) validate() error {
	switch {
	case c.Replicas < 1 || c.Replicas > 16:
		return errors.New("-replicas: 1..16")
	case c.Users < 1:
		return errors.New("-users: at least 1")
	case c.Concurrency < 1 || c.Concurrency > 4096:
		return errors.New("-c: 1..4096")
	case c.Duration <= 0 || c.Duration > MaxDuration:
		return fmt.Errorf("-d: above 0 and at most %s", MaxDuration)
	case c.Rate < 0:
		return errors.New("-rate: >= 0")
	case c.Storm < 0 || c.Storm > 2000:
		return errors.New("-storm: 0..2000")
	case c.Scale < 0 || c.Scale > 10_000_000:
		return errors.New("-scale: 0..10000000")
	case c.CPUProfile && c.WorkDir == "":
		return errors.New("-cpuprofile needs -workdir (the profiles are kept there)")
	}
	return nil
}

// Run runs the harness. progress receives the progress lines.
func Run(ctx context.Context, c Config, progress io.Writer) (res *Result, err error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	res = &Result{Started: time.Now().UTC(), Replicas: c.Replicas, Users: c.Users, Concurrency: c.Concurrency, Rate: c.Rate, CPUs: numCPU()}
	dir := c.WorkDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "connectd-loadtest-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// Tokens live an hour (never due in a normal run); in a storm they
	// are due a few seconds after the login.
	accessTTL := time.Hour
	if c.Storm > 0 {
		accessTTL = manifest.DefaultRefreshMargin + 3*time.Second
	}
	f, err := newFakes(c.Users, accessTTL)
	if err != nil {
		return nil, err
	}
	defer f.close()
	dbURL, dropDB, err := database(ctx, c.DB, dir, c.KeepDB)
	if err != nil {
		return nil, err
	}
	defer dropDB()
	res.Backend = "sqlite"
	if !strings.HasPrefix(dbURL, "sqlite://") {
		res.Backend = "postgres"
	}
	encKeys, err := keyRing()
	if err != nil {
		return nil, err
	}
	sessKeys, err := keyRing()
	if err != nil {
		return nil, err
	}
	addrs := make([]string, c.Replicas)
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
			return nil, err
		}
	}
	public := "http://" + addrs[0]
	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	for i, addr := range addrs {
		env := []string{
			"CONNECTD_ADDR=" + addr,
			"CONNECTD_PUBLIC_URL=" + public, // one issuer for every replica
			"CONNECTD_DATA_DIR=" + filepath.Join(dir, fmt.Sprintf("replica-%d", i)),
			"CONNECTD_DATABASE_URL=" + dbURL,
			"CONNECTD_ENCRYPTION_KEYS=" + encKeys,
			"CONNECTD_SESSION_KEYS=" + sessKeys,
			"CONNECTD_RATE_LIMIT=0",
			"CONNECTD_ALLOW_PRIVATE_URLS=true",
			"CONNECTD_LOG_LEVEL=" + c.LogLevel,
			"CONNECTD_METRICS_ADDR=",
			envProviderURL + "=" + f.provider.URL(),
			envCRMURL + "=" + f.crm.URL(),
		}
		if c.CPUProfile {
			env = append(env, envCPUProfile+"="+filepath.Join(dir, fmt.Sprintf("replica-%d.cpu.pprof", i)))
		}
		p, err := startProc(ctx, fmt.Sprintf("replica-%d", i), ReplicaCommand, addr, filepath.Join(dir, fmt.Sprintf("replica-%d.log", i)), env)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	startRSS := make([]int64, len(procs))
	for i, p := range procs {
		st, _ := readProc(p.cmd.Process.Pid)
		startRSS[i] = st.RSSKB
	}
	d := &driver{client: newClient(max(c.Concurrency, c.Storm*c.Replicas) + 8), users: c.Users, f: f}
	for _, p := range procs {
		d.targets = append(d.targets, p.url)
	}
	// Seed K users through the real OAuth login (replica 0), 8 at a time.
	t0 := time.Now()
	nSeed := c.Users
	if c.Storm > 0 {
		nSeed = 1
	}
	if d.tokens, err = seed(ctx, d, nSeed); err != nil {
		return nil, err
	}
	res.SeedS = time.Since(t0).Seconds()
	for _, t := range d.tokens {
		d.sids = append(d.sids, sessionID(t))
	}
	fmt.Fprintf(progress, "seeded %d users in %.1fs on %d replica(s), %s\n", nSeed, res.SeedS, c.Replicas, res.Backend)
	if c.Scale > 0 {
		if res.Plans, err = scaleSeed(ctx, dbURL, c.Scale, progress); err != nil {
			return nil, err
		}
		res.ScaleRows = c.Scale
		for _, p := range res.Plans {
			fmt.Fprintf(progress, "plan: %s\n", p)
		}
	}

	before := make([]procStats, len(procs))
	gBefore := make([]int, len(procs))
	for i, p := range procs {
		before[i], _ = readProc(p.cmd.Process.Pid)
		gBefore[i] = goroutines(p.url)
	}
	up0 := f.upstream()
	var elapsed time.Duration
	if c.Storm > 0 {
		res.Storm, elapsed, err = storm(ctx, d, c, progress)
		if err != nil {
			return nil, err
		}
	} else {
		res.Ops, elapsed = d.phase(ctx, c.Mix, c.Concurrency, c.Rate, c.Duration, progress, "load")
	}
	res.DurationS = elapsed.Seconds()
	res.Upstream = f.upstream().minus(up0)
	// Let connections settle before counting descriptors and goroutines.
	d.client.CloseIdleConnections()
	time.Sleep(500 * time.Millisecond)
	for i, p := range procs {
		after, _ := readProc(p.cmd.Process.Pid)
		cpu := after.CPU - before[i].CPU
		res.Processes = append(res.Processes, ProcResult{
			Name: p.name, StartRSSMB: mb(startRSS[i]), IdleRSSMB: mb(before[i].RSSKB), PeakRSSMB: mb(after.PeakRSSKB),
			CPUSeconds: cpu.Seconds(), CPUPercent: 100 * cpu.Seconds() / elapsed.Seconds(),
			FDsBefore: before[i].FDs, FDsAfter: after.FDs,
			GoroutinesBefor: gBefore[i], GoroutinesAfter: goroutines(p.url),
		})
	}
	if c.Bare && c.Storm == 0 {
		for _, p := range procs {
			p.stop()
		}
		procs = nil
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		bp, err := startProc(ctx, "bare", BareCommand, addr, filepath.Join(dir, "bare.log"), []string{"CONNECTD_DATABASE_URL=" + dbURL, envBareAddr + "=" + addr})
		if err != nil {
			return nil, err
		}
		procs = []*proc{bp}
		bd := &driver{client: newClient(c.Concurrency + 8), targets: []string{bp.url}, sids: d.sids, f: f}
		b0, _ := readProc(bp.cmd.Process.Pid)
		ops, belapsed := bd.phase(ctx, map[string]int{OpBare: 1}, c.Concurrency, c.Rate, c.Duration, progress, "bare")
		b1, _ := readProc(bp.cmd.Process.Pid)
		res.Bare = ops[OpBare]
		if av := res.Ops[OpAuthValidation]; av != nil && res.Bare != nil && res.Bare.RPS > 0 {
			res.BareRatio = av.RPS / res.Bare.RPS
		}
		cpu := b1.CPU - b0.CPU
		res.Processes = append(res.Processes, ProcResult{Name: "bare", StartRSSMB: mb(b0.RSSKB), IdleRSSMB: mb(b0.RSSKB), PeakRSSMB: mb(b1.PeakRSSKB), CPUSeconds: cpu.Seconds(), CPUPercent: 100 * cpu.Seconds() / belapsed.Seconds(), FDsBefore: b0.FDs, FDsAfter: b1.FDs, GoroutinesBefor: -1, GoroutinesAfter: -1})
	}
	return res, nil
}

// seed logs n users in ("u0".."u<n-1>") and returns their JWTs.
func seed(ctx context.Context, d *driver, n int) ([]string, error) {
	toks := make([]string, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(8, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				_, jwt, err := d.login(ctx, d.targets[0], fmt.Sprintf("u%d", i), nil)
				if err != nil {
					errs <- fmt.Errorf("seed user u%d: %w", i, err)
					continue
				}
				toks[i] = jwt
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return toks, nil
}

// sessionID reads the sid claim of a JWT the harness just received (no
// verification: only to address the bare handler's read).
func sessionID(jwt string) string {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		SID string `json:"sid"`
	}
	_ = json.Unmarshal(b, &c)
	return c.SID
}

// storm waits until the one seeded user's token is due, then sends
// c.Storm concurrent /authValidation requests to every replica at once.
func storm(ctx context.Context, d *driver, c Config, progress io.Writer) (*StormResult, time.Duration, error) {
	// The token was issued with TTL margin+3s: due 3 s after the seed.
	fmt.Fprintf(progress, "storm: waiting 4s for the access token to fall due\n")
	select {
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	case <-time.After(4 * time.Second):
	}
	if c.StormDelay > 0 {
		d.f.provider.SetFault(connectortest.PathToken, connectortest.Latency(c.StormDelay))
	}
	refresh0 := d.f.provider.RefreshCount()
	total := c.Storm * len(d.targets)
	samples := make([]sample, total)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range total {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			base := d.targets[i%len(d.targets)]
			t0 := time.Now()
			st, _, _ := d.do(ctx, http.MethodGet, base+"/authValidation", nil, "Authorization", "Bearer "+d.tokens[0])
			samples[i] = sample{OpAuthValidation, time.Since(t0), st}
		}()
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	elapsed := time.Since(start)
	r := summarize([][]sample{samples}, elapsed)[OpAuthValidation]
	return &StormResult{
		Requests: total, Status: r.Status, UpstreamRefresh: d.f.provider.RefreshCount() - refresh0,
		UpstreamLatency: ms(c.StormDelay), P50ms: r.P50ms, P99ms: r.P99ms, MaxMs: r.MaxMs,
	}, elapsed, nil
}

func mb(kb int64) float64 { return float64(kb) / 1024 }

// PrintTable writes the human-readable summary.
func PrintTable(w io.Writer, r *Result) {
	fmt.Fprintf(w, "\n%s | backend %s | %d replica(s) | %d users | c=%d | rate %s | %.1fs | %d CPUs\n",
		r.Command, r.Backend, r.Replicas, r.Users, r.Concurrency, rateText(r.Rate), r.DurationS, r.CPUs)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	if len(r.Ops) > 0 || r.Bare != nil {
		fmt.Fprintln(tw, "operation\trequests\treq/s\tp50 ms\tp95 ms\tp99 ms\tmax ms\terrors\tstatus\t")
		ops := make([]string, 0, len(r.Ops))
		for k := range r.Ops {
			ops = append(ops, k)
		}
		sort.Strings(ops)
		row := func(name string, o *OpResult) {
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.1f\t%d\t%s\t\n", name, o.Requests, o.RPS, o.P50ms, o.P95ms, o.P99ms, o.MaxMs, o.Errors, statusText(o.Status))
		}
		for _, k := range ops {
			row(k, r.Ops[k])
		}
		if r.Bare != nil {
			row("bare handler", r.Bare)
		}
		tw.Flush()
		if r.BareRatio > 0 {
			fmt.Fprintf(w, "authValidation / bare handler: %.0f%%\n", 100*r.BareRatio)
		}
	}
	if s := r.Storm; s != nil {
		fmt.Fprintf(w, "refresh storm: %d requests, status %s, upstream refreshes %d, upstream latency %.0f ms, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
			s.Requests, statusText(s.Status), s.UpstreamRefresh, s.UpstreamLatency, s.P50ms, s.P99ms, s.MaxMs)
	}
	if r.ScaleRows > 0 {
		fmt.Fprintf(w, "scale: %d extra user + session rows; plans:\n", r.ScaleRows)
		for _, p := range r.Plans {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	fmt.Fprintf(w, "upstream calls: provider token %d (refresh %d), userinfo %d; CRM /me %d\n",
		r.Upstream.ProviderToken, r.Upstream.ProviderRefresh, r.Upstream.ProviderUser, r.Upstream.CRMMe)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "process\tstart RSS MB\tidle RSS MB\tpeak RSS MB\tCPU s\tCPU % of a core\tfds before/after\tgoroutines before/after\t")
	for _, p := range r.Processes {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\t%d/%d\t%d/%d\t\n", p.Name, p.StartRSSMB, p.IdleRSSMB, p.PeakRSSMB, p.CPUSeconds, p.CPUPercent, p.FDsBefore, p.FDsAfter, p.GoroutinesBefor, p.GoroutinesAfter)
	}
	tw.Flush()
}

func rateText(r float64) string {
	if r == 0 {
		return "saturation"
	}
	return fmt.Sprintf("%.0f/s", r)
}

func statusText(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
