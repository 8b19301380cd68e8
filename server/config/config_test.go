package config_test

import (
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/server/config"
)

func load(t *testing.T, args []string, env map[string]string) (*config.Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	f := config.Register(fs, "test")
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f.Load(func(k string) string { return env[k] })
}

func TestDefaults(t *testing.T) {
	c, err := load(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := config.Config{
		Addr: "127.0.0.1:8080", PublicURL: "http://localhost:8080", DataDir: "./data",
		DatabaseURL: "sqlite://data/connectd.db", DatabaseKind: config.SQLite,
		RingCentralServer: "https://platform.ringcentral.com", RateLimit: 60,
		LogLevel: hclog.Info, LogFormat: "text", SessionTTL: 336 * time.Hour,
	}
	if c.Addr != want.Addr || c.PublicURL != want.PublicURL || c.DataDir != want.DataDir ||
		c.DatabaseURL != want.DatabaseURL || c.DatabaseKind != want.DatabaseKind ||
		c.RingCentralServer != want.RingCentralServer || c.RateLimit != want.RateLimit ||
		c.LogLevel != want.LogLevel || c.LogFormat != want.LogFormat || c.SessionTTL != want.SessionTTL ||
		c.Demo || c.AllowPrivateURLs || len(c.CORSOrigins) != 0 || len(c.TrustedProxies) != 0 || c.MetricsAddr != "" {
		t.Fatalf("defaults = %+v", c)
	}
	if strings.Join(c.AppConnectOrigins, ",") != config.DefaultAppConnectOrigins {
		t.Fatalf("app connect origins %v", c.AppConnectOrigins)
	}
	if c.SQLitePath() != "data/connectd.db" {
		t.Fatalf("SQLitePath %q", c.SQLitePath())
	}
}

func TestPrecedence(t *testing.T) {
	env := map[string]string{"CONNECTD_ADDR": "0.0.0.0:9000", "CONNECTD_RATE_LIMIT": "5"}
	c, err := load(t, []string{"--rate-limit", "7"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "0.0.0.0:9000" {
		t.Fatalf("env not used: addr %q", c.Addr)
	}
	if c.RateLimit != 7 {
		t.Fatalf("flag did not win: rate limit %d", c.RateLimit)
	}
}

func TestParsesLists(t *testing.T) {
	c, err := load(t, nil, map[string]string{
		"CONNECTD_CORS_ORIGINS":       "chrome-extension://AbC, https://App.example.com/",
		"CONNECTD_TRUSTED_PROXIES":    "10.1.2.3/8, 192.168.0.7",
		"CONNECTD_APPCONNECT_ORIGINS": "https://*.labs.ringcentral.com",
		"CONNECTD_REDIRECT_URIS":      "https://a.example.com/cb,myapp://callback",
		"CONNECTD_DATABASE_URL":       "postgres://u:p@db:5432/connectd?sslmode=require",
		"CONNECTD_LOG_LEVEL":          "DEBUG",
		"CONNECTD_DEMO":               "true",
		"CONNECTD_PUBLIC_URL":         "https://connectd.example.com/",
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.CORSOrigins, " ") != "chrome-extension://abc https://app.example.com" {
		t.Errorf("cors %v", c.CORSOrigins)
	}
	if strings.Join(c.TrustedProxies, " ") != "10.0.0.0/8 192.168.0.7/32" {
		t.Errorf("proxies %v", c.TrustedProxies)
	}
	if len(c.RedirectURIs) != 2 || c.DatabaseKind != config.Postgres || c.LogLevel != hclog.Debug || !c.Demo {
		t.Errorf("config %+v", c)
	}
	if c.PublicURL != "https://connectd.example.com" {
		t.Errorf("public url %q", c.PublicURL)
	}
	if s := c.String(); strings.Contains(s, ":p@") || !strings.Contains(s, "xxxxx") {
		t.Errorf("String leaks or hides too much: %s", s)
	}
}

func TestDatabaseURLs(t *testing.T) {
	cases := []struct {
		in, url, kind, err string
	}{
		{"", "sqlite://d/connectd.db", config.SQLite, ""},
		{"/var/lib/connectd/x.db", "sqlite:///var/lib/connectd/x.db", config.SQLite, ""},
		{"./x.db", "sqlite://./x.db", config.SQLite, ""},
		{"sqlite:///tmp/x.db", "sqlite:///tmp/x.db", config.SQLite, ""},
		{"sqlite:x.db", "sqlite://x.db", config.SQLite, ""},
		{":memory:", "sqlite::memory:", config.SQLite, ""},
		{"postgresql://u@h/db", "postgresql://u@h/db", config.Postgres, ""},
		{"postgres://u:secretpw@h:99999/db", "", "", "port out of range"},
		{"postgres://u:secretpw@h:x/db", "", "", "malformed PostgreSQL URL"},
		{"postgres://u:secret%zz@h/db", "", "", "malformed PostgreSQL URL"},
		{"postgres://u@h", "", "", "no database name"},
		{"postgres:///db", "", "", "no host"},
		{"mysql://u@h/db", "", "", "unsupported scheme"},
		{"sqlite://x.db?_pragma=1", "", "", "no query parameters"},
		{"host:5432/db", "", "", "malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			url, kind, err := config.ResolveDatabaseURL(tc.in, "d")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error leaks the URL or spans lines: %v", err)
				}
				return
			}
			if err != nil || url != tc.url || kind != tc.kind {
				t.Fatalf("= %q %q %v, want %q %q", url, kind, err, tc.url, tc.kind)
			}
		})
	}
}

func TestRejects(t *testing.T) {
	cases := []struct{ env, value, want string }{
		{"CONNECTD_ADDR", "localhost", "CONNECTD_ADDR"},
		{"CONNECTD_ADDR", "localhost:http", "invalid port"},
		{"CONNECTD_METRICS_ADDR", "9090", "CONNECTD_METRICS_ADDR"},
		{"CONNECTD_PUBLIC_URL", "connectd.example.com", "not an http(s) base URL"},
		{"CONNECTD_PUBLIC_URL", "https://u:p@x.example.com", "not an http(s) base URL"},
		{"CONNECTD_RINGCENTRAL_SERVER", "ftp://x", "CONNECTD_RINGCENTRAL_SERVER"},
		{"CONNECTD_CORS_ORIGINS", "*", "wildcards"},
		{"CONNECTD_CORS_ORIGINS", "https://*.example.com", "wildcards"},
		{"CONNECTD_CORS_ORIGINS", "null", "wildcards"},
		{"CONNECTD_CORS_ORIGINS", "https://a.example.com/path", "not an origin"},
		{"CONNECTD_APPCONNECT_ORIGINS", "http://*.ringcentral.com", "not an https origin"},
		{"CONNECTD_APPCONNECT_ORIGINS", "https://a.*.ringcentral.com", "not an https origin"},
		{"CONNECTD_TRUSTED_PROXIES", "10.0.0.0/33", "not a CIDR"},
		{"CONNECTD_TRUSTED_PROXIES", "proxy.local", "not a CIDR"},
		{"CONNECTD_REDIRECT_URIS", "javascript:alert(1)", "CONNECTD_REDIRECT_URIS"},
		{"CONNECTD_REDIRECT_URIS", "/relative", "CONNECTD_REDIRECT_URIS"},
		{"CONNECTD_ALLOW_PRIVATE_URLS", "yes please", "not true or false"},
		{"CONNECTD_DEMO", "2", "not true or false"},
		{"CONNECTD_RATE_LIMIT", "-1", "whole number >= 0"},
		{"CONNECTD_RATE_LIMIT", "ten", "whole number >= 0"},
		{"CONNECTD_LOG_LEVEL", "loud", "CONNECTD_LOG_LEVEL"},
		{"CONNECTD_LOG_FORMAT", "xml", "not text or json"},
		{"CONNECTD_SESSION_TTL", "1 week", "not a positive duration"},
		{"CONNECTD_SESSION_TTL", "-5m", "not a positive duration"},
	}
	for _, tc := range cases {
		t.Run(tc.env+"="+tc.value, func(t *testing.T) {
			_, err := load(t, nil, map[string]string{tc.env: tc.value})
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err %v, want one line containing %q", err, tc.want)
			}
		})
	}
}

// TestREADMEDocumentsEveryVariable keeps the README's configuration table
// in step with the flags.
func TestREADMEDocumentsEveryVariable(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range config.Vars() {
		if !strings.Contains(string(data), "| `"+v.Env+"`") || !strings.Contains(string(data), "`--"+v.Flag+"`") {
			t.Errorf("README.md lacks a table row for %s (--%s)", v.Env, v.Flag)
		}
	}
}
