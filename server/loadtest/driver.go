package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Operation names (the -mix keys).
const (
	OpAuthValidation = "authValidation"
	OpAPIKeyLogin    = "apiKeyLogin"
	OpOAuthCallback  = "oauthCallback"
	OpBare           = "bare"
)

// OpResult is one operation's figures over a phase.
type OpResult struct {
	Requests int64            `json:"requests"`
	RPS      float64          `json:"rps"`
	P50ms    float64          `json:"p50_ms"`
	P95ms    float64          `json:"p95_ms"`
	P99ms    float64          `json:"p99_ms"`
	MaxMs    float64          `json:"max_ms"`
	Status   map[string]int64 `json:"status"` // by HTTP status, "transport" for no answer
	Errors   int64            `json:"errors"` // answers other than 2xx, and transport errors
}

// sample is one measured request.
type sample struct {
	op     string
	d      time.Duration
	status int // 0: transport error
}

// driver sends requests to targets.
type driver struct {
	client  *http.Client
	targets []string // base URLs, round-robin by worker
	tokens  []string // App Connect JWTs of seeded users
	sids    []string // their session ids (bare handler)
	users   int
	f       *fakes
	done    atomic.Int64
	failed  atomic.Int64
}

func newClient(conns int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			MaxIdleConns:        conns * 2,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
}

// do sends one request and drains the answer.
func (d *driver) do(ctx context.Context, method, u string, body []byte, hdr ...string) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

// op runs one operation against base and returns the samples it took
// (an OAuth callback is preceded by its authorize request, measured too).
func (d *driver) op(ctx context.Context, name, base string, rng *rand.Rand, out []sample) []sample {
	switch name {
	case OpAuthValidation:
		tok := d.tokens[rng.IntN(len(d.tokens))]
		t0 := time.Now()
		st, _, _ := d.do(ctx, http.MethodGet, base+"/authValidation", nil, "Authorization", "Bearer "+tok)
		return append(out, sample{name, time.Since(t0), st})
	case OpBare:
		sid := d.sids[rng.IntN(len(d.sids))]
		t0 := time.Now()
		st, _, _ := d.do(ctx, http.MethodGet, base+"/bare?id="+url.QueryEscape(sid), nil)
		return append(out, sample{name, time.Since(t0), st})
	case OpAPIKeyLogin:
		body, _ := json.Marshal(map[string]any{"platform": PlatformAPIKey, "apiKey": "key-" + strconv.Itoa(rng.IntN(max(d.users, 1)))})
		t0 := time.Now()
		st, _, _ := d.do(ctx, http.MethodPost, base+"/apiKeyLogin", body)
		return append(out, sample{name, time.Since(t0), st})
	case OpOAuthCallback:
		t0 := time.Now()
		st, _, err := d.login(ctx, base, fmt.Sprintf("u%d", rng.IntN(max(d.users, 1))), &out)
		if err != nil && st == 0 {
			st = 0
		}
		return append(out, sample{name, time.Since(t0), st})
	}
	panic("loadtest: unknown op " + name)
}

// login runs one App Connect OAuth login: GET /oauth/authorize (JSON), the
// provider's consent (in this process, not measured), GET /oauth-callback.
// It returns the callback's status and the JWT. The authorize request is
// appended to samples as "authorize" when samples is not nil.
func (d *driver) login(ctx context.Context, base, user string, samples *[]sample) (int, string, error) {
	t0 := time.Now()
	st, b, err := d.do(ctx, http.MethodGet, base+"/oauth/authorize?platform="+PlatformOAuth+"&redirect_uri="+url.QueryEscape(clientRedirect), nil, "Accept", "application/json")
	if samples != nil {
		*samples = append(*samples, sample{"authorize", time.Since(t0), st})
	}
	if err != nil || st != http.StatusOK {
		return st, "", fmt.Errorf("authorize: %d %s %v", st, b, err)
	}
	var a struct {
		AuthURL string `json:"authUrl"`
	}
	if err := json.Unmarshal(b, &a); err != nil || a.AuthURL == "" {
		return 0, "", fmt.Errorf("authorize: no authUrl in %s", b)
	}
	redirect, err := d.f.provider.Authorize(ctx, a.AuthURL, user)
	if err != nil {
		return 0, "", fmt.Errorf("provider authorize: %w", err)
	}
	st, b, err = d.do(ctx, http.MethodGet, base+"/oauth-callback?callbackUri="+url.QueryEscape(redirect.String()), nil)
	if err != nil || st != http.StatusOK {
		return st, "", fmt.Errorf("oauth-callback: %d %s %v", st, b, err)
	}
	var r struct {
		JWT string `json:"jwtToken"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.JWT == "" {
		return st, "", fmt.Errorf("oauth-callback: no jwtToken")
	}
	return st, r.JWT, nil
}

// mixPicker chooses an operation by weight.
type mixPicker struct {
	ops   []string
	cum   []int
	total int
}

func newPicker(mix map[string]int) mixPicker {
	var p mixPicker
	keys := make([]string, 0, len(mix))
	for k := range mix {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if mix[k] <= 0 {
			continue
		}
		p.total += mix[k]
		p.ops = append(p.ops, k)
		p.cum = append(p.cum, p.total)
	}
	return p
}

func (p mixPicker) pick(rng *rand.Rand) string {
	n := rng.IntN(p.total)
	for i, c := range p.cum {
		if n < c {
			return p.ops[i]
		}
	}
	return p.ops[len(p.ops)-1]
}

// phase drives the mix for dur with conc workers. rate > 0 is an open
// loop at that many requests per second overall (latency counted from the
// intended start, so a stall is not hidden by fewer requests); rate 0 is a
// closed loop at saturation. progress gets a line per second.
func (d *driver) phase(ctx context.Context, mix map[string]int, conc int, rate float64, dur time.Duration, progress io.Writer, label string) (map[string]*OpResult, time.Duration) {
	picker := newPicker(mix)
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	d.done.Store(0)
	d.failed.Store(0)
	results := make([][]sample, conc)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w)+1, uint64(start.UnixNano())))
			base := d.targets[w%len(d.targets)]
			out := make([]sample, 0, 4096)
			for k := 0; ; k++ {
				var intended time.Time
				if rate > 0 {
					intended = start.Add(time.Duration(float64(w+k*conc) / rate * float64(time.Second)))
					if wait := time.Until(intended); wait > 0 {
						select {
						case <-ctx.Done():
							results[w] = out
							return
						case <-time.After(wait):
						}
					}
				}
				if ctx.Err() != nil {
					break
				}
				n := len(out)
				out = d.op(ctx, picker.pick(rng), base, rng, out)
				if ctx.Err() != nil && n < len(out) && out[len(out)-1].status == 0 {
					out = out[:n] // cut off by the end of the phase, not a failure
					break
				}
				if rate > 0 {
					last := &out[len(out)-1]
					last.d = time.Since(intended)
				}
				for _, s := range out[n:] {
					if s.status < 200 || s.status > 299 {
						d.failed.Add(1)
					}
				}
				d.done.Add(int64(len(out) - n))
			}
			results[w] = out
		}()
	}
	stopProgress := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				n := d.done.Load()
				fmt.Fprintf(progress, "%s t=%4.0fs requests=%d (%d/s) errors=%d\n", label, time.Since(start).Seconds(), n, n-last, d.failed.Load())
				last = n
			}
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	close(stopProgress)
	pwg.Wait()
	return summarize(results, elapsed), elapsed
}

func summarize(results [][]sample, elapsed time.Duration) map[string]*OpResult {
	byOp := map[string][]time.Duration{}
	out := map[string]*OpResult{}
	for _, rs := range results {
		for _, s := range rs {
			r := out[s.op]
			if r == nil {
				r = &OpResult{Status: map[string]int64{}}
				out[s.op] = r
			}
			r.Requests++
			key := strconv.Itoa(s.status)
			if s.status == 0 {
				key = "transport"
			}
			r.Status[key]++
			if s.status < 200 || s.status > 299 {
				r.Errors++
			}
			byOp[s.op] = append(byOp[s.op], s.d)
		}
	}
	for op, ds := range byOp {
		slices.Sort(ds)
		r := out[op]
		r.RPS = float64(r.Requests) / elapsed.Seconds()
		r.P50ms = ms(pct(ds, 0.50))
		r.P95ms = ms(pct(ds, 0.95))
		r.P99ms = ms(pct(ds, 0.99))
		r.MaxMs = ms(ds[len(ds)-1])
	}
	return out
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
