package loadtest

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connectd/connectd/core/connectortest"
)

// fakeTB lets the conformance kit's fakes (which take a testing.TB so
// tests clean them up) run inside the harness process. Only the methods the
// kit calls are implemented; Fatal* panics with the message, which the
// harness recovers into an error. The embedded nil interface supplies
// testing.TB's unexported method; calling anything else panics loudly.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
}

func (t *fakeTB) Helper()                        {}
func (t *fakeTB) Name() string                   { return "connectd-loadtest" }
func (t *fakeTB) Logf(string, ...any)            {}
func (t *fakeTB) Log(...any)                     {}
func (t *fakeTB) Errorf(format string, a ...any) { panic(fmt.Sprintf("fake: "+format, a...)) }
func (t *fakeTB) Fatalf(format string, a ...any) { panic(fmt.Sprintf("fake: "+format, a...)) }
func (t *fakeTB) Fatal(a ...any)                 { panic(fmt.Sprint(append([]any{"fake: "}, a...)...)) }
func (t *fakeTB) Cleanup(f func())               { t.mu.Lock(); t.cleanups = append(t.cleanups, f); t.mu.Unlock() }

// close runs the cleanups, last first.
func (t *fakeTB) close() {
	t.mu.Lock()
	cs := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

// clientRedirect is the App Connect client's redirect URI the harness
// logins use (the extension's page; never fetched).
const clientRedirect = "https://client.example/redirect.html"

// fakes are the upstream services: an OAuth provider (rotation + reuse
// detection, the conformance kit's) and an instant API-key CRM.
type fakes struct {
	tb       *fakeTB
	provider *connectortest.Provider
	crm      *connectortest.CRM
	meCalls  atomic.Int64
}

// newFakes starts both fakes. users is how many provider logins exist
// ("u0".."u<n-1>"); accessTTL the provider's access token lifetime.
func newFakes(users int, accessTTL time.Duration) (f *fakes, err error) {
	f = &fakes{tb: &fakeTB{}}
	defer func() {
		if r := recover(); r != nil {
			f.tb.close()
			f, err = nil, fmt.Errorf("loadtest: start fakes: %v", r)
		}
	}()
	pu := make(map[string]connectortest.ProviderUser, users)
	for i := range users {
		id := fmt.Sprintf("u%d", i)
		pu[id] = connectortest.ProviderUser{ID: fmt.Sprintf("%d", 100000+i), Name: "Load User " + id, Email: id + "@example.com", Timezone: "UTC"}
	}
	f.provider = connectortest.NewProvider(f.tb, connectortest.ProviderOptions{
		RedirectURIs:        []string{clientRedirect},
		RequirePKCE:         true,
		AccessTokenTTL:      accessTTL,
		RotateRefreshTokens: true,
		ReuseDetection:      true,
		Users:               pu,
	})
	f.crm = connectortest.NewCRM(f.tb)
	// GET /me: the key "key-<n>" is user <n>; anything else is refused.
	f.crm.Handle(http.MethodGet, "/me", func(w http.ResponseWriter, r *http.Request) {
		f.meCalls.Add(1)
		key, ok := basicUser(r.Header.Get("Authorization"))
		n, found := strings.CutPrefix(key, "key-")
		if !ok || !found || n == "" {
			connectortest.WriteJSON(w, http.StatusUnauthorized, map[string]any{"error": "bad key"})
			return
		}
		connectortest.WriteJSON(w, http.StatusOK, map[string]any{"id": "7" + n, "name": "Key User " + n})
	})
	return f, nil
}

func basicUser(h string) (string, bool) {
	b64, ok := strings.CutPrefix(h, "Basic ")
	if !ok {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", false
	}
	user, _, ok := strings.Cut(string(raw), ":")
	return user, ok
}

func (f *fakes) close() { f.tb.close() }

// upstream counts the calls the replicas made to the fakes.
type upstream struct {
	ProviderToken   int   `json:"provider_token"`
	ProviderRefresh int   `json:"provider_refresh"`
	ProviderUser    int   `json:"provider_userinfo"`
	CRMMe           int64 `json:"crm_me"`
}

func (f *fakes) upstream() upstream {
	return upstream{
		ProviderToken:   f.provider.Count(connectortest.PathToken),
		ProviderRefresh: f.provider.RefreshCount(),
		ProviderUser:    f.provider.Count(connectortest.PathUserInfo),
		CRMMe:           f.meCalls.Load(),
	}
}

func (u upstream) minus(b upstream) upstream {
	return upstream{u.ProviderToken - b.ProviderToken, u.ProviderRefresh - b.ProviderRefresh, u.ProviderUser - b.ProviderUser, u.CRMMe - b.CRMMe}
}
