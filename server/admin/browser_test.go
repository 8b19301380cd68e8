package admin_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/connectd/connectd/server/servertest/browsertest"

	"github.com/connectd/connectd/core/store/storetest"
)

func chromiumPath(t *testing.T) string { return browsertest.Chromium(t) }

func artifactDir(t *testing.T) string { return browsertest.ArtifactDir(t, "connectd-admin-browser-") }

// TestAdminPageInBrowser drives the admin page in headless Chromium: load,
// sign in with an operator identity token, set a secret value, see "set",
// reload, and the value is still not shown anywhere in the page.
func TestAdminPageInBrowser(t *testing.T) {
	chrome := chromiumPath(t)
	e := newEnv(t, storetest.SQLite)
	tok := e.operatorToken("500", "1", true)

	actx, cancelAlloc := browsertest.NewAllocator(t, chrome, 1200, 900)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()

	// Console errors (CSP violations, failed loads, exceptions) fail the
	// test; collected from the moment the tab exists.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	var mu sync.Mutex
	var problems []string
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				problems = append(problems, m.String()+" ("+m.URL+")")
				mu.Unlock()
			}
		}
	}()

	fail := func(step string, err error) {
		t.Helper()
		sctx, scancel := context.WithTimeout(bctx, 10*time.Second)
		defer scancel()
		if png, serr := chromedp.Run(sctx, chromedp.FullScreenshot(90)); serr == nil && len(png) > 0 {
			name := filepath.Join(artifactDir(t), strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+".jpg")
			if werr := os.WriteFile(name, png, 0o644); werr == nil {
				t.Logf("screenshot saved to %s", name)
			}
		}
		t.Fatalf("%s: %v", step, err)
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	status := `(document.querySelector("#org-tenantId .status") || {}).textContent`

	if err := chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/admin"),
		chromedp.WaitVisible(css("#token")),
	); err != nil {
		fail("load", err)
	}
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(css("#token"), tok),
		chromedp.Click(css("#signin")),
		chromedp.WaitVisible(css("#org-tenantId")),
	); err != nil {
		fail("sign in", err)
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](status))
	if err != nil || got != "not set" {
		fail("initial status", fmt.Errorf("tenantId status = %q (%v)", got, err))
	}
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(css("#value-tenantId"), canaryTenant),
		chromedp.Click(css("#set-tenantId")),
		chromedp.Poll[chromedp.Void](status+` === "set"`, chromedp.WithPollingTimeout(20*time.Second)),
	); err != nil {
		fail("set value", err)
	}

	if err := chromedp.Do(ctx,
		chromedp.Reload(),
		chromedp.Poll[chromedp.Void](`document.body.getAttribute("data-ready") === "true"`, chromedp.WithPollingTimeout(20*time.Second)),
	); err != nil {
		fail("reload", err)
	}
	got, err = chromedp.Run(ctx, chromedp.Evaluate[string](status))
	if err != nil || got != "set" {
		fail("status after reload", fmt.Errorf("tenantId status = %q (%v)", got, err))
	}
	inputValue, err := chromedp.Run(ctx, chromedp.Value(css("#value-tenantId")))
	if err != nil {
		fail("read input", err)
	}
	html, err := chromedp.Run(ctx, chromedp.OuterHTML(css("html")))
	if err != nil {
		fail("read page", err)
	}
	if inputValue != "" || strings.Contains(html, canaryTenant) {
		fail("secret in page", errString("the stored value appears in the page after reload"))
	}
	vals, err := e.store.ManagedValuesFor(context.Background(), "operator", "500", "acme", "")
	if err != nil || len(vals) != 1 || vals[0].Field != "tenantId" || vals[0].Value != canaryTenant {
		fail("stored value", errString("stored values are not what the page set"))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		fail("browser console", errString(strings.Join(problems, "\n")))
	}
}

type errString string

func (e errString) Error() string { return string(e) }
