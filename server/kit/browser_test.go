package kit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	corekit "github.com/connectd/connectd/core/kit"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/server/servertest/browsertest"
)

func chromiumPath(t *testing.T) string { return browsertest.Chromium(t) }

// fakeKit plays Kit: its install page receives the code, exchanges it
// server-side at connectd's token endpoint and calls the deals plugin.
type fakeKit struct {
	srv      *httptest.Server
	mu       sync.Mutex
	gotState string
}

func newFakeKit(t *testing.T, e *env, clientID, secret *string) *fakeKit {
	k := &fakeKit{}
	post := func(path string, body any, bearer string) (map[string]any, int) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, e.h.URL+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded") // as Kit's samples
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, 0
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		var m map[string]any
		_ = json.Unmarshal(data, &m)
		return m, resp.StatusCode
	}
	k.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/apps/install" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		k.mu.Lock()
		k.gotState = q.Get("state")
		k.mu.Unlock()
		tok, st := post("/kit/oauth/token", map[string]string{"client_id": *clientID, "client_secret": *secret,
			"grant_type": "authorization_code", "code": q.Get("code"), "redirect_uri": k.srv.URL + "/apps"}, "")
		access, _ := tok["access_token"].(string)
		result := "token exchange failed"
		if st == http.StatusOK && access != "" {
			blk, st := post("/kit/plugins/pipedrive/deals", map[string]any{"settings": map[string]any{"limit": 2}}, access)
			h, _ := blk["html"].(string)
			if st == http.StatusOK {
				result = "installed: " + h
			} else {
				result = "installed; plugin call " + http.StatusText(st)
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, `<!doctype html><title>Kit</title><p id="result">`+html.EscapeString(result)+`</p>`)
	}))
	t.Cleanup(k.srv.Close)
	return k
}

// TestBrowserInstall drives the connect page end to end in headless
// Chromium: Kit's authorize link -> connect page -> the fake Pipedrive's
// sign-in page (or connectd's API-key form) -> back to (fake) Kit with a
// code that Kit exchanges and uses on a plugin call.
func TestBrowserInstall(t *testing.T) {
	bin := chromiumPath(t)
	t.Run("upstream OAuth (pipedrive)", func(t *testing.T) {
		result := browserInstall(t, bin, "pipedrive", func(ctx context.Context, step func(string, func() error)) {
			step("pipedrive sign-in", func() error {
				return chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("email")), chromedp.SendKeys(chromedp.ID("email"), "casey@example.test"),
					chromedp.Click(chromedp.ID("allow")))
			})
		})
		if !strings.HasPrefix(result, "installed: ") || !strings.Contains(result, "Kit sponsorship") {
			t.Fatalf("fake Kit says %q", result)
		}
	})
	t.Run("API-key form (testcrm)", func(t *testing.T) {
		result := browserInstall(t, bin, "testcrm", func(ctx context.Context, step func(string, func() error)) {
			step("api key form", func() error {
				return chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("f-apiKey")), chromedp.SendKeys(chromedp.ID("f-apiKey"), apiKeyCanary),
					chromedp.Click(chromedp.CSS("button[type=submit]")))
			})
		})
		// testcrm has no plugins, and its grant is refused on pipedrive's.
		if result != "installed; plugin call Forbidden" {
			t.Fatalf("fake Kit says %q", result)
		}
	})
}

func browserInstall(t *testing.T, bin, connectorName string, signIn func(ctx context.Context, step func(string, func() error))) string {
	e := newEnv(t, storetest.SQLite)
	var clientID, secret string
	kitSrv := newFakeKit(t, e, &clientID, &secret)
	app, sec, err := corekit.CreateApp(context.Background(), e.h.Store, corekit.AppInput{
		Name: "Browser Deals", Connector: connectorName, RedirectURIs: []string{kitSrv.srv.URL + "/apps/install", kitSrv.srv.URL + "/apps"},
	})
	if err != nil {
		t.Fatal(err)
	}
	clientID, secret = app.ClientID, sec

	actx, cancel := browsertest.NewAllocator(t, bin, 1200, 900)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	state := "kit state/with+chars"
	authz := e.h.URL + "/kit/oauth/authorize?" + url.Values{"client_id": {app.ClientID}, "response_type": {"code"},
		"redirect_uri": {kitSrv.srv.URL + "/apps/install"}, "state": {state}}.Encode()
	var appName, service, result string
	step := func(name string, f func() error) {
		if err := f(); err != nil {
			if shot, serr := chromedp.Run(ctx, chromedp.FullScreenshot(90)); serr == nil && len(shot) > 0 {
				p := filepath.Join(os.TempDir(), "kit-browser-failure.png")
				_ = os.WriteFile(p, shot, 0o600)
				t.Logf("screenshot: %s", p)
			}
			t.Fatalf("browser: %s: %v", name, err)
		}
	}
	step("connect page", func() error {
		return chromedp.Do(ctx, chromedp.Navigate(authz), chromedp.WaitVisible(chromedp.ID("connect")))
	})
	step("read page", func() (err error) {
		if appName, err = chromedp.Run(ctx, chromedp.Text(chromedp.ID("app"))); err != nil {
			return err
		}
		service, err = chromedp.Run(ctx, chromedp.Text(chromedp.ID("service")))
		return err
	})
	step("connect", func() error {
		return chromedp.Do(ctx, chromedp.Click(chromedp.ID("connect")))
	})
	signIn(ctx, step)
	step("kit page", func() (err error) {
		if err = chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("result"))); err != nil {
			return err
		}
		result, err = chromedp.Run(ctx, chromedp.Text(chromedp.ID("result")))
		return err
	})
	want := map[string]string{"pipedrive": "Pipedrive", "testcrm": "Test API-key CRM testcrm"}[connectorName]
	if appName != "Browser Deals" || service != want {
		t.Errorf("connect page shows app %q, service %q", appName, service)
	}
	kitSrv.mu.Lock()
	got := kitSrv.gotState
	kitSrv.mu.Unlock()
	if got != state {
		t.Errorf("state came back as %q, want %q", got, state)
	}
	e.h.AssertNoLeak(t, pdClientSecret, pdAccess1, pdRefresh1, apiKeyCanary, secret)
	return result
}
