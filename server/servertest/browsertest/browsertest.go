// Package browsertest starts Debian's headless Chromium for the tests of
// connectd's pages (admin, console, Kit connect page), with the flags this
// closed network needs, so every browser test launches it the same way.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/chromedp/chromedp"
)

// Chromium finds the browser. Under CI=true a missing browser fails the
// test (.ci/run installs it); locally the test is skipped.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but chromium is not installed (apt-get install -y chromium)")
	}
	t.Skip("chromium not installed; the browser test runs in CI")
	return ""
}

// ArtifactDir is where failure screenshots go: $CONNECTD_TEST_ARTIFACTS,
// else a directory (named after prefix) that outlives the test.
func ArtifactDir(t testing.TB, prefix string) string {
	if d := os.Getenv("CONNECTD_TEST_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err == nil {
			return d
		}
	}
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		return t.TempDir()
	}
	return d
}

// Options are the allocator options of a headless run of the browser at
// path: a fresh profile, no background networking (the machine's network
// is closed), the given window size.
func Options(t testing.TB, path string, width, height int) []chromedp.ExecAllocatorOption {
	return []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	}
}

// NewAllocator starts an allocator for the browser at path.
func NewAllocator(t testing.TB, path string, width, height int) (context.Context, context.CancelFunc) {
	return chromedp.NewExecAllocator(context.Background(), Options(t, path, width, height)...)
}
