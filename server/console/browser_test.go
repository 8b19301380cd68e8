package console_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/connectd/connectd/server/servertest/browsertest"

	"github.com/connectd/connectd/core/store"
)

func chromiumPath(t *testing.T) string { return browsertest.Chromium(t) }

func artifactDir(t *testing.T) string { return browsertest.ArtifactDir(t, "connectd-console-browser-") }

// browser is one headless Chromium tab; console errors (CSP violations,
// failed loads, exceptions) are collected.
type browser struct {
	t        *testing.T
	root     context.Context
	ctx      context.Context
	mu       sync.Mutex
	problems []string
}

func newBrowser(t *testing.T) *browser {
	chrome := chromiumPath(t)
	actx, cancelAlloc := browsertest.NewAllocator(t, chrome, 1200, 1000)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	ctx, cancel := context.WithTimeout(bctx, 120*time.Second)
	t.Cleanup(func() { cancel(); cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b := &browser{t: t, root: bctx, ctx: ctx}
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			// Pages of other packages (the connect flow's API-key form)
			// have no icon; Chromium's automatic favicon request is not
			// something the page did.
			if strings.Contains(m.URL, "/favicon.ico") {
				continue
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.mu.Lock()
				b.problems = append(b.problems, m.String()+" ("+m.URL+")")
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// fail saves a screenshot and fails the test.
func (b *browser) fail(step string, err error) {
	b.t.Helper()
	sctx, cancel := context.WithTimeout(b.root, 10*time.Second)
	defer cancel()
	if png, serr := chromedp.Run(sctx, chromedp.FullScreenshot(90)); serr == nil && len(png) > 0 {
		name := filepath.Join(artifactDir(b.t), strings.NewReplacer("/", "_", " ", "_").Replace(b.t.Name())+".jpg")
		if werr := os.WriteFile(name, png, 0o644); werr == nil {
			b.t.Logf("screenshot saved to %s", name)
		}
	}
	if html, herr := chromedp.Run(sctx, chromedp.OuterHTML(chromedp.CSS("body"))); herr == nil {
		b.t.Logf("page body:\n%.3000s", html)
	}
	b.t.Fatalf("%s: %v", step, err)
}

// snapshot saves a screenshot when CONNECTD_TEST_ARTIFACTS is set (CI
// keeps them, so a reviewer sees the pages).
func (b *browser) snapshot(name string) {
	b.t.Helper()
	dir := os.Getenv("CONNECTD_TEST_ARTIFACTS")
	if dir == "" {
		return
	}
	if png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100)); err == nil && os.MkdirAll(dir, 0o755) == nil {
		_ = os.WriteFile(filepath.Join(dir, "console-"+name+".png"), png, 0o644)
	}
}

func (b *browser) do(step string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.fail(step, err)
	}
}

func (b *browser) eval(step, js string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](js))
	if err != nil {
		b.fail(step, err)
	}
	return v
}

// poll evaluates js until it is true. Evaluations interrupted by a
// navigation (the login redirects) are retried.
func (b *browser) poll(step, js string) {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool]("Boolean("+js+")"))
		if err == nil && ok {
			return
		}
		if err != nil {
			last = err
		}
		if b.ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if last == nil {
		last = errors.New("condition not met within 30s: " + js)
	}
	b.fail(step, last)
}

func (b *browser) location() string {
	b.t.Helper()
	return b.eval("location", `location.href`)
}

func (b *browser) checkConsole() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.problems) > 0 {
		b.fail("browser console", errors.New(strings.Join(b.problems, "\n")))
	}
}

// card is a JS expression for the console's session card of platform.
func card(platform string) string {
	return `document.querySelector('article.session[data-platform="` + platform + `"]')`
}

func field(platform, name string) string {
	return `((` + card(platform) + ` || document).querySelector('[data-field=` + name + `]') || {}).textContent || ""`
}

// TestConsoleInBrowser is the newcomer's first minute in headless
// Chromium, against the real wiring (app.Build + app.Wire) with the demo
// on: open the console (through 127.0.0.1, which is sent to the public
// URL), log in to demo-oauth on the demo CRM's sign-in page, see the user,
// force a refresh and see the expiry move, log out and see the session
// gone; then the same with demo-apikey through the manifest's form.
func TestConsoleInBrowser(t *testing.T) {
	e := start(t, envOptions{demo: true})
	b := newBrowser(t)
	ready := `document.body && document.body.dataset.ready === "true"`

	b.do("open the console", chromedp.Navigate(e.ip+"/console"))
	b.poll("console ready", ready)
	if loc := b.location(); loc != e.base+"/console" {
		b.fail("loopback alias", fmt.Errorf("the console is at %s, want %s", loc, e.base+"/console"))
	}
	if got := b.eval("demo banner", `(document.getElementById("demo-banner") || {}).textContent || ""`); !strings.Contains(got, "Demo mode") {
		b.fail("demo banner", fmt.Errorf("banner %q", got))
	}
	if got := b.eval("admin link", `document.getElementById("admin-link").getAttribute("href")`); got != "/admin" {
		b.fail("admin link", fmt.Errorf("href %q", got))
	}
	if got := b.eval("pipedrive row", `document.querySelector('#connector-pipedrive .reason').textContent`); !strings.Contains(got, "PIPEDRIVE_CLIENT_ID") {
		b.fail("pipedrive row", fmt.Errorf("reason %q", got))
	}

	// --- demo-oauth: the provider's sign-in page included.
	b.do("log in to demo-oauth",
		chromedp.Click(chromedp.CSS(`button[data-action=login][data-platform="demo-oauth"]`)),
		chromedp.WaitVisible(chromedp.CSS("#signin")),
	)
	if loc := b.location(); !strings.HasPrefix(loc, e.base+"/demo/crm/oauth/authorize?") {
		b.fail("sign-in page", fmt.Errorf("at %s", loc))
	}
	if got := b.eval("sign-in banner", `document.getElementById("demo-banner").textContent`); !strings.Contains(got, "DEMO CRM") {
		b.fail("sign-in banner", fmt.Errorf("banner %q", got))
	}
	b.snapshot("1-demo-crm-sign-in")
	b.do("sign in as Alice",
		chromedp.Click(chromedp.CSS("#user-alice")),
		chromedp.Click(chromedp.CSS("#signin")),
	)
	b.poll("back on the console with the session", ready+` && location.pathname === "/console" && !!`+card("demo-oauth"))
	if got := b.eval("user", field("demo-oauth", "user")); got != "Alice Demo" {
		b.fail("user", fmt.Errorf("user %q", got))
	}
	if got := b.eval("status", field("demo-oauth", "status")); got != "active" {
		b.fail("status", fmt.Errorf("status %q", got))
	}
	expiry := func() int64 {
		v := b.eval("expiry", `(`+card("demo-oauth")+`.querySelector('[data-field=tokenExpiry]').dataset.expiryMs) || "0"`)
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	before := expiry()
	shown := b.eval("expiry text", field("demo-oauth", "tokenExpiry"))
	if before == 0 || !strings.HasPrefix(shown, time.UnixMilli(before).UTC().Format("2006-01-02T15:04")) {
		b.fail("expiry", fmt.Errorf("expiry %d shown as %q", before, shown))
	}
	sid := b.eval("session id", card("demo-oauth")+`.dataset.session`)
	first := e.userOf(t, sid)

	b.do("force a refresh", chromedp.Click(chromedp.CSS(`article.session[data-platform="demo-oauth"] button[data-action=refresh]`)))
	b.poll("refreshed", field("demo-oauth", "result")+`.startsWith("Refreshed")`)
	if after := expiry(); after <= before {
		b.fail("expiry moved", fmt.Errorf("expiry %d -> %d", before, after))
	}
	if got := b.eval("version", field("demo-oauth", "credentialVersion")); got != "2" {
		b.fail("credential version", fmt.Errorf("version %q", got))
	}
	if shownAfter := b.eval("expiry text", field("demo-oauth", "tokenExpiry")); shownAfter == shown {
		b.fail("expiry text moved", fmt.Errorf("still %q", shown))
	}
	if e.crm.TokenState(first.RefreshToken) != "rotated" {
		b.fail("rotation", errors.New("the CRM did not rotate the refresh token"))
	}

	b.snapshot("2-console-after-refresh")
	b.do("validate", chromedp.Click(chromedp.CSS(`article.session[data-platform="demo-oauth"] button[data-action=validate]`)))
	b.poll("validated", field("demo-oauth", "result")+`.includes("valid")`)

	b.do("log out", chromedp.Click(chromedp.CSS(`article.session[data-platform="demo-oauth"] button[data-action=logout]`)))
	b.poll("session gone", `!`+card("demo-oauth")+` && !document.getElementById("no-sessions").hidden`)
	b.do("reload", chromedp.Reload())
	b.poll("reloaded", ready)
	if got := b.eval("after reload", `String(!!`+card("demo-oauth")+`)`); got != "false" {
		b.fail("session gone after reload", errors.New("the session came back"))
	}
	if u := e.userOf(t, sid); u.Status != store.StatusRevoked || e.crm.TokenState(u.AccessToken) == "active" {
		b.fail("logout", fmt.Errorf("stored status %s", u.Status))
	}

	// --- demo-apikey: through the manifest's form.
	b.do("log in to demo-apikey",
		chromedp.Click(chromedp.CSS(`button[data-action=login][data-platform="demo-apikey"]`)),
		chromedp.WaitVisible(chromedp.CSS("#f-apiKey")),
	)
	if loc := b.location(); !strings.HasPrefix(loc, e.base+"/connect/apikey?state=") {
		b.fail("API-key form", fmt.Errorf("at %s", loc))
	}
	b.snapshot("3-api-key-form")
	b.do("submit the demo key",
		chromedp.SendKeys(chromedp.CSS("#f-apiKey"), "demo-key-alice"),
		chromedp.Submit(chromedp.CSS("#f-apiKey")),
	)
	b.poll("back on the console with the API-key session", ready+` && location.pathname === "/console" && !!`+card("demo-apikey"))
	if got := b.eval("user", field("demo-apikey", "user")); got != "Alice Demo" {
		b.fail("API-key user", fmt.Errorf("user %q", got))
	}
	if got := b.eval("expiry", field("demo-apikey", "tokenExpiry")); got != "never (API key)" {
		b.fail("API-key expiry", fmt.Errorf("expiry %q", got))
	}
	if got := b.eval("refresh button", `String(!!`+card("demo-apikey")+`.querySelector('button[data-action=refresh]'))`); got != "false" {
		b.fail("API-key refresh", errors.New("an API-key login offers a refresh"))
	}
	if html := b.eval("page", `document.documentElement.outerHTML`); strings.Contains(html, "demo-key-alice") {
		b.fail("API key on the console", errors.New("the stored API key appears in the page"))
	}
	b.do("validate the key", chromedp.Click(chromedp.CSS(`article.session[data-platform="demo-apikey"] button[data-action=validate]`)))
	b.poll("key validated", field("demo-apikey", "result")+`.includes("valid")`)
	b.do("log out of demo-apikey", chromedp.Click(chromedp.CSS(`article.session[data-platform="demo-apikey"] button[data-action=logout]`)))
	b.poll("API-key session gone", `!`+card("demo-apikey"))
	b.do("reload", chromedp.Reload())
	b.poll("reloaded", ready)
	if got := b.eval("no sessions", `String(document.querySelectorAll("article.session").length)`); got != "0" {
		b.fail("sessions after logout", fmt.Errorf("%s sessions", got))
	}
	b.checkConsole()
	e.assertNoLeak(t)
}
