package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary act as a replica or the bare handler when
// the harness re-executes it (os.Executable is the test binary here).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == ReplicaCommand || os.Args[1] == BareCommand) {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestHarnessMix runs the whole harness briefly on SQLite with two
// replica processes and every operation, plus the bare handler, and checks
// what it reports against what the fakes saw: every operation ran without
// errors, upstream calls match the logins, both replicas and the bare
// handler report resources, and the JSON is complete. No timing asserted.
func TestHarnessMix(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	res, err := Run(context.Background(), Config{
		Replicas: 2, DB: "sqlite", Users: 5, Concurrency: 4, Duration: 1500 * time.Millisecond,
		Mix:  map[string]int{OpAuthValidation: 6, OpAPIKeyLogin: 2, OpOAuthCallback: 2},
		Bare: true, LogLevel: "warn",
	}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{OpAuthValidation, OpAPIKeyLogin, OpOAuthCallback, "authorize"} {
		r := res.Ops[op]
		if r == nil || r.Requests == 0 {
			t.Fatalf("operation %s did not run: %+v", op, res.Ops)
		}
		if r.Errors != 0 {
			t.Errorf("%s: %d errors: %v", op, r.Errors, r.Status)
		}
	}
	if res.Bare == nil || res.Bare.Requests == 0 || res.Bare.Errors != 0 {
		t.Errorf("bare handler: %+v", res.Bare)
	}
	// Every API-key login asked the CRM once; every callback exchanged a
	// code and read the user once (requests cut off at the end of the
	// phase may add a few upstream calls, never remove one).
	if got, want := res.Upstream.CRMMe, res.Ops[OpAPIKeyLogin].Requests; got < want {
		t.Errorf("CRM /me calls %d < apiKeyLogin requests %d", got, want)
	}
	if got, want := int64(res.Upstream.ProviderToken), res.Ops[OpOAuthCallback].Requests; got < want {
		t.Errorf("provider token calls %d < callbacks %d", got, want)
	}
	if res.Upstream.ProviderRefresh != 0 {
		t.Errorf("%d refreshes with hour-long tokens", res.Upstream.ProviderRefresh)
	}
	if len(res.Processes) != 3 {
		t.Fatalf("processes %+v, want 2 replicas + bare", res.Processes)
	}
	for _, p := range res.Processes {
		if p.PeakRSSMB <= 0 || p.CPUSeconds <= 0 {
			t.Errorf("%s: no resource figures: %+v", p.Name, p)
		}
	}
	var out bytes.Buffer
	PrintTable(&out, res)
	for _, want := range []string{"authValidation", "apiKeyLogin", "oauthCallback", "bare handler", "replica-1", "authValidation / bare handler"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil || back.Ops[OpAuthValidation].Requests != res.Ops[OpAuthValidation].Requests {
		t.Fatalf("JSON round trip: %v", err)
	}
}

// TestHarnessStorm: three replicas, concurrent requests on one expired
// token with the kit's rotating, reuse-detecting provider: exactly one
// upstream refresh and no failed request.
func TestHarnessStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	res, err := Run(context.Background(), Config{
		Replicas: 3, DB: "sqlite", Users: 1, Concurrency: 1, Duration: time.Second,
		Mix: map[string]int{OpAuthValidation: 1}, Storm: 20, StormDelay: 50 * time.Millisecond, LogLevel: "warn",
	}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Storm
	if s == nil || s.Requests != 60 {
		t.Fatalf("storm: %+v", s)
	}
	if s.UpstreamRefresh != 1 {
		t.Errorf("%d upstream refreshes, want exactly 1", s.UpstreamRefresh)
	}
	if s.Status["200"] != 60 {
		t.Errorf("statuses %v, want 60 x 200", s.Status)
	}
}

func TestParseMix(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    map[string]int
		wantErr string
	}{
		{in: "authValidation", want: map[string]int{OpAuthValidation: 1}},
		{in: "authValidation=8, apiKeyLogin=1,oauthCallback=1", want: map[string]int{OpAuthValidation: 8, OpAPIKeyLogin: 1, OpOAuthCallback: 1}},
		{in: "bogus=1", wantErr: "unknown operation"},
		{in: "authValidation=x", wantErr: "not a whole number"},
		{in: "authValidation=0", wantErr: "no operation"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseMix(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("got %v, %v", got, err)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %d, want %d", k, got[k], v)
				}
			}
		})
	}
}

func TestConfigBounds(t *testing.T) {
	ok := Config{Replicas: 1, Users: 1, Concurrency: 1, Duration: time.Second, Mix: map[string]int{OpAuthValidation: 1}}
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
	}{
		{"no replicas", func(c *Config) { c.Replicas = 0 }},
		{"too long", func(c *Config) { c.Duration = MaxDuration + time.Second }},
		{"negative rate", func(c *Config) { c.Rate = -1 }},
		{"profile without workdir", func(c *Config) { c.CPUProfile = true }},
		{"huge storm", func(c *Config) { c.Storm = 5000 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			if err := c.validate(); err == nil {
				t.Fatalf("accepted %+v", c)
			}
		})
	}
	if err := ok.validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
}
