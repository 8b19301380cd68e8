// Package config is connectd's runtime configuration: every variable of
// decisions.md's table as a flag with an environment equivalent. A flag set
// on the command line wins over the environment, which wins over the
// default. Validation errors are one line and never contain a secret (a key
// or a database password).
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// DefaultAppConnectOrigins are the App Connect server origins accepted for
// plugin callbacks when CONNECTD_APPCONNECT_ORIGINS is not set: RingCentral's
// own hosts over https.
const DefaultAppConnectOrigins = "https://*.ringcentral.com"

// Database kinds.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// Config is the whole runtime configuration. Secret fields (EncryptionKeys,
// SessionKeys, and the password inside DatabaseURL) are never printed by
// String.
type Config struct {
	Addr              string        // CONNECTD_ADDR
	PublicURL         string        // CONNECTD_PUBLIC_URL, without a trailing slash
	DataDir           string        // CONNECTD_DATA_DIR
	DatabaseURL       string        // CONNECTD_DATABASE_URL, resolved: never empty after Load
	DatabaseKind      string        // SQLite or Postgres, from DatabaseURL
	EncryptionKeys    string        // CONNECTD_ENCRYPTION_KEYS (key ring text; may be empty: see server/keys)
	SessionKeys       string        // CONNECTD_SESSION_KEYS
	ManifestsDir      string        // CONNECTD_MANIFESTS_DIR
	RedirectURIs      []string      // CONNECTD_REDIRECT_URIS
	CORSOrigins       []string      // CONNECTD_CORS_ORIGINS
	RingCentralServer string        // CONNECTD_RINGCENTRAL_SERVER
	AppConnectOrigins []string      // CONNECTD_APPCONNECT_ORIGINS
	TrustedProxies    []string      // CONNECTD_TRUSTED_PROXIES (CIDRs or single addresses)
	AllowPrivateURLs  bool          // CONNECTD_ALLOW_PRIVATE_URLS
	RateLimit         int           // CONNECTD_RATE_LIMIT, per minute; 0 disables
	MetricsAddr       string        // CONNECTD_METRICS_ADDR; empty: /metrics on the main listener
	LogLevel          hclog.Level   // CONNECTD_LOG_LEVEL
	LogFormat         string        // CONNECTD_LOG_FORMAT: text or json
	Demo              bool          // CONNECTD_DEMO
	SessionTTL        time.Duration // CONNECTD_SESSION_TTL
	JanitorInterval   time.Duration // CONNECTD_JANITOR_INTERVAL
	JobRetention      time.Duration // CONNECTD_JOB_RETENTION
	AuditRetention    time.Duration // CONNECTD_AUDIT_RETENTION
}

// Var describes one configuration variable.
type Var struct {
	Flag    string
	Env     string
	Default string
	Usage   string
	// Secret values are never echoed in errors or help.
	Secret bool
}

// Vars returns the configuration table, in documentation order. The
// README's table is checked against it by a test.
func Vars() []Var {
	return []Var{
		{"addr", "CONNECTD_ADDR", "127.0.0.1:8080", "listen address (host:port)", false},
		{"public-url", "CONNECTD_PUBLIC_URL", "http://localhost:8080", "external base URL: JWT iss and callback URLs", false},
		{"data-dir", "CONNECTD_DATA_DIR", "./data", "directory for the embedded database and generated keys", false},
		{"database-url", "CONNECTD_DATABASE_URL", "", "postgres://... URL, or a SQLite path / sqlite:// URL (default: SQLite file <data dir>/connectd.db)", true},
		{"encryption-keys", "CONNECTD_ENCRYPTION_KEYS", "", "encryption key ring ID:BASE64[,ID:BASE64...], first is primary (default: generated into <data dir>/keys.env on SQLite; required on PostgreSQL)", true},
		{"session-keys", "CONNECTD_SESSION_KEYS", "", "session signing key ring, same grammar and default as the encryption keys", true},
		{"manifests-dir", "CONNECTD_MANIFESTS_DIR", "", "directory of extra operator manifests (default: none)", false},
		{"redirect-uris", "CONNECTD_REDIRECT_URIS", "", "comma-separated extra allowed client redirect URIs (default: none)", false},
		{"cors-origins", "CONNECTD_CORS_ORIGINS", "", "comma-separated allowed browser origins, e.g. chrome-extension://abc (default: none; no wildcard)", false},
		{"ringcentral-server", "CONNECTD_RINGCENTRAL_SERVER", "https://platform.ringcentral.com", "RingCentral API base URL", false},
		{"appconnect-origins", "CONNECTD_APPCONNECT_ORIGINS", DefaultAppConnectOrigins, "comma-separated allowed App Connect server origins for plugin callbacks; a leading *. matches subdomains", false},
		{"trusted-proxies", "CONNECTD_TRUSTED_PROXIES", "", "comma-separated CIDRs whose X-Forwarded-For is believed (default: none)", false},
		{"allow-private-urls", "CONNECTD_ALLOW_PRIVATE_URLS", "false", "let outbound calls reach loopback/private hosts (tests, local development)", false},
		{"rate-limit", "CONNECTD_RATE_LIMIT", "60", "login attempts per minute per IP and per account; 0 disables", false},
		{"metrics-addr", "CONNECTD_METRICS_ADDR", "", "separate listener for /metrics (default: served on the main listener)", false},
		{"log-level", "CONNECTD_LOG_LEVEL", "info", "log level: trace, debug, info, warn, error", false},
		{"log-format", "CONNECTD_LOG_FORMAT", "text", "log format: text or json", false},
		{"demo", "CONNECTD_DEMO", "false", "serve the demo (local development only)", false},
		{"session-ttl", "CONNECTD_SESSION_TTL", "336h", "lifetime of App Connect sessions and plugin bearers (Go duration)", false},
		{"janitor-interval", "CONNECTD_JANITOR_INTERVAL", "5m", "how often the (leased) janitor deletes expired flows, sessions, Kit codes and tokens (Go duration)", false},
		{"job-retention", "CONNECTD_JOB_RETENTION", "168h", "how long finished jobs and plugin tasks are kept (Go duration)", false},
		{"audit-retention", "CONNECTD_AUDIT_RETENTION", "9600h", "how long managed-credential audit rows are kept (Go duration; default 400 days)", false},
	}
}

// Flags binds every configuration variable to fs. Call Load after fs.Parse.
type Flags struct {
	fs     *flag.FlagSet
	values map[string]*string
}

// Register defines the configuration flags on fs and sets fs's usage to a
// help text listing each flag with its environment variable and default.
func Register(fs *flag.FlagSet, summary string) *Flags {
	f := &Flags{fs: fs, values: make(map[string]*string, len(Vars()))}
	for _, v := range Vars() {
		// The flag default is empty so that "not set on the command line"
		// can fall back to the environment; the real default is applied in
		// Load and shown in the help text.
		f.values[v.Flag] = fs.String(v.Flag, "", v.Usage)
	}
	fs.Usage = func() { f.WriteHelp(fs.Output(), summary) }
	return f
}

// WriteHelp writes the help text for the flags.
func (f *Flags) WriteHelp(w io.Writer, summary string) {
	fmt.Fprintf(w, "%s\n\nFlags (each also read from its environment variable; a flag wins over the environment):\n", summary)
	for _, v := range Vars() {
		def := v.Default
		if def == "" {
			def = "none"
		}
		fmt.Fprintf(w, "  --%s  (%s, default %s)\n      %s\n", v.Flag, v.Env, def, v.Usage)
	}
	fmt.Fprintf(w, "  --help\n      show this help\n")
}

// Load resolves every variable (flag, then getenv, then default) and
// validates the result.
func (f *Flags) Load(getenv func(string) string) (*Config, error) {
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	raw := make(map[string]string, len(Vars()))
	for _, v := range Vars() {
		switch {
		case set[v.Flag]:
			raw[v.Env] = *f.values[v.Flag]
		case getenv != nil && getenv(v.Env) != "":
			raw[v.Env] = getenv(v.Env)
		default:
			raw[v.Env] = v.Default
		}
	}
	return FromMap(raw)
}

// FromMap builds a Config from resolved values keyed by environment
// variable name; missing keys take their defaults.
func FromMap(raw map[string]string) (*Config, error) {
	get := func(env string) string {
		if v, ok := raw[env]; ok {
			return strings.TrimSpace(v)
		}
		for _, v := range Vars() {
			if v.Env == env {
				return v.Default
			}
		}
		return ""
	}
	c := &Config{
		Addr:           get("CONNECTD_ADDR"),
		DataDir:        get("CONNECTD_DATA_DIR"),
		EncryptionKeys: get("CONNECTD_ENCRYPTION_KEYS"),
		SessionKeys:    get("CONNECTD_SESSION_KEYS"),
		ManifestsDir:   get("CONNECTD_MANIFESTS_DIR"),
		MetricsAddr:    get("CONNECTD_METRICS_ADDR"),
	}
	var err error
	if err = checkAddr("CONNECTD_ADDR", c.Addr, false); err != nil {
		return nil, err
	}
	if err = checkAddr("CONNECTD_METRICS_ADDR", c.MetricsAddr, true); err != nil {
		return nil, err
	}
	if c.PublicURL, err = baseURL("CONNECTD_PUBLIC_URL", get("CONNECTD_PUBLIC_URL")); err != nil {
		return nil, err
	}
	if c.RingCentralServer, err = baseURL("CONNECTD_RINGCENTRAL_SERVER", get("CONNECTD_RINGCENTRAL_SERVER")); err != nil {
		return nil, err
	}
	if c.DataDir == "" {
		return nil, errors.New("CONNECTD_DATA_DIR: must not be empty")
	}
	if c.DatabaseURL, c.DatabaseKind, err = ResolveDatabaseURL(get("CONNECTD_DATABASE_URL"), c.DataDir); err != nil {
		return nil, err
	}
	if c.RedirectURIs, err = redirectURIs(split(get("CONNECTD_REDIRECT_URIS"))); err != nil {
		return nil, err
	}
	if c.CORSOrigins, err = corsOrigins(split(get("CONNECTD_CORS_ORIGINS"))); err != nil {
		return nil, err
	}
	if c.AppConnectOrigins, err = originPatterns(split(get("CONNECTD_APPCONNECT_ORIGINS"))); err != nil {
		return nil, err
	}
	if c.TrustedProxies, err = proxies(split(get("CONNECTD_TRUSTED_PROXIES"))); err != nil {
		return nil, err
	}
	if c.AllowPrivateURLs, err = parseBool("CONNECTD_ALLOW_PRIVATE_URLS", get("CONNECTD_ALLOW_PRIVATE_URLS")); err != nil {
		return nil, err
	}
	if c.Demo, err = parseBool("CONNECTD_DEMO", get("CONNECTD_DEMO")); err != nil {
		return nil, err
	}
	rl, err := strconv.Atoi(get("CONNECTD_RATE_LIMIT"))
	if err != nil || rl < 0 {
		return nil, fmt.Errorf("CONNECTD_RATE_LIMIT: %q is not a whole number >= 0", get("CONNECTD_RATE_LIMIT"))
	}
	c.RateLimit = rl
	lvl := strings.ToLower(get("CONNECTD_LOG_LEVEL"))
	switch lvl {
	case "trace", "debug", "info", "warn", "error":
		c.LogLevel = hclog.LevelFromString(lvl)
	default:
		return nil, fmt.Errorf("CONNECTD_LOG_LEVEL: %q is not one of trace, debug, info, warn, error", get("CONNECTD_LOG_LEVEL"))
	}
	c.LogFormat = strings.ToLower(get("CONNECTD_LOG_FORMAT"))
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return nil, fmt.Errorf("CONNECTD_LOG_FORMAT: %q is not text or json", get("CONNECTD_LOG_FORMAT"))
	}
	ttl := get("CONNECTD_SESSION_TTL")
	if c.SessionTTL, err = time.ParseDuration(ttl); err != nil || c.SessionTTL <= 0 {
		return nil, fmt.Errorf("CONNECTD_SESSION_TTL: %q is not a positive duration such as 24h or 90m", ttl)
	}
	for _, d := range []struct {
		env string
		min time.Duration
		dst *time.Duration
	}{
		{"CONNECTD_JANITOR_INTERVAL", 10 * time.Second, &c.JanitorInterval},
		{"CONNECTD_JOB_RETENTION", time.Hour, &c.JobRetention},
		{"CONNECTD_AUDIT_RETENTION", 24 * time.Hour, &c.AuditRetention},
	} {
		v := get(d.env)
		if *d.dst, err = time.ParseDuration(v); err != nil || *d.dst < d.min {
			return nil, fmt.Errorf("%s: %q is not a duration of at least %s", d.env, v, d.min)
		}
	}
	return c, nil
}

// String describes the configuration without secrets.
func (c *Config) String() string {
	keys := func(s string) string {
		if s == "" {
			return "unset"
		}
		return "set"
	}
	return fmt.Sprintf("addr=%s public_url=%s data_dir=%s database=%s (%s) encryption_keys=%s session_keys=%s metrics_addr=%q rate_limit=%d",
		c.Addr, c.PublicURL, c.DataDir, c.DatabaseKind, RedactURL(c.DatabaseURL), keys(c.EncryptionKeys), keys(c.SessionKeys), c.MetricsAddr, c.RateLimit)
}

// ResolveDatabaseURL validates a CONNECTD_DATABASE_URL value and returns
// the URL to open with its kind. Empty means the SQLite file
// <dataDir>/connectd.db. A plain path is a SQLite file. Errors never
// contain the URL (it may hold a password).
func ResolveDatabaseURL(raw, dataDir string) (string, string, error) {
	if raw == "" {
		return "sqlite://" + filepath.Join(dataDir, "connectd.db"), SQLite, nil
	}
	lower := strings.ToLower(raw)
	switch {
	case lower == ":memory:" || lower == "sqlite::memory:" || lower == "sqlite://:memory:":
		return "sqlite::memory:", SQLite, nil
	case !strings.Contains(raw, "://") && (strings.HasPrefix(lower, "sqlite:") || strings.HasPrefix(lower, "file:")):
		_, rest, _ := strings.Cut(raw, ":")
		if rest == "" || strings.Contains(rest, "?") {
			return "", "", errors.New("CONNECTD_DATABASE_URL: malformed: a SQLite URL needs a path and no query parameters")
		}
		return "sqlite://" + rest, SQLite, nil
	}
	scheme, rest, hasScheme := strings.Cut(raw, "://")
	if !hasScheme {
		if strings.Contains(raw, ":") && !filepath.IsAbs(raw) && !strings.HasPrefix(raw, ".") {
			return "", "", errors.New("CONNECTD_DATABASE_URL: malformed: want postgres://user@host:port/db or a SQLite path or sqlite://path")
		}
		return "sqlite://" + raw, SQLite, nil
	}
	switch strings.ToLower(scheme) {
	case "sqlite", "sqlite3", "file":
		if rest == "" || strings.Contains(rest, "?") {
			return "", "", errors.New("CONNECTD_DATABASE_URL: malformed: a sqlite:// URL needs a path and no query parameters")
		}
		return "sqlite://" + rest, SQLite, nil
	case "postgres", "postgresql":
		u, err := url.Parse(raw)
		if err != nil {
			return "", "", errors.New("CONNECTD_DATABASE_URL: malformed PostgreSQL URL (bad host, port or escape); want postgres://user:password@host:port/database")
		}
		if u.Host == "" || u.Hostname() == "" {
			return "", "", errors.New("CONNECTD_DATABASE_URL: malformed PostgreSQL URL: no host; want postgres://user:password@host:port/database")
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return "", "", errors.New("CONNECTD_DATABASE_URL: malformed PostgreSQL URL: port out of range")
			}
		}
		if strings.Trim(u.Path, "/") == "" {
			return "", "", errors.New("CONNECTD_DATABASE_URL: malformed PostgreSQL URL: no database name")
		}
		return raw, Postgres, nil
	default:
		return "", "", fmt.Errorf("CONNECTD_DATABASE_URL: unsupported scheme %q (want postgres:// or sqlite://)", redactScheme(scheme))
	}
}

func redactScheme(s string) string {
	if len(s) > 20 {
		return s[:20] + "..."
	}
	return s
}

// SQLitePath returns the file of a resolved SQLite URL ("" for PostgreSQL
// and in-memory databases).
func (c *Config) SQLitePath() string {
	if c.DatabaseKind != SQLite || !strings.HasPrefix(c.DatabaseURL, "sqlite://") {
		return ""
	}
	return strings.TrimPrefix(c.DatabaseURL, "sqlite://")
}

// RedactURL returns u with any password replaced, for logs.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable)"
	}
	return u.Redacted()
}

func checkAddr(name, v string, optional bool) error {
	if v == "" {
		if optional {
			return nil
		}
		return fmt.Errorf("%s: must not be empty (want host:port)", name)
	}
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%s: %q is not host:port", name, v)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%s: %q has an invalid port", name, v)
	}
	return nil
}

func baseURL(name, v string) (string, error) {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("%s: %q is not an http(s) base URL such as https://connectd.example.com", name, v)
	}
	return strings.TrimRight(v, "/"), nil
}

func split(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func redirectURIs(list []string) ([]string, error) {
	for _, v := range list {
		u, err := url.Parse(v)
		if err != nil || u.Scheme == "" || u.Fragment != "" || strings.EqualFold(u.Scheme, "javascript") || strings.EqualFold(u.Scheme, "data") {
			return nil, fmt.Errorf("CONNECTD_REDIRECT_URIS: %q is not an absolute redirect URI without a fragment", v)
		}
		if (u.Scheme == "http" || u.Scheme == "https") && u.Host == "" {
			return nil, fmt.Errorf("CONNECTD_REDIRECT_URIS: %q has no host", v)
		}
	}
	return list, nil
}

// corsOrigins accepts exact origins only (scheme://host[:port]): CORS with
// credentials must never use a wildcard.
func corsOrigins(list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	for _, v := range list {
		if strings.Contains(v, "*") || v == "null" {
			return nil, fmt.Errorf("CONNECTD_CORS_ORIGINS: %q: wildcards and null are not allowed (credentials are sent); list exact origins", v)
		}
		u, err := url.Parse(v)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("CONNECTD_CORS_ORIGINS: %q is not an origin such as https://app.example.com or chrome-extension://id", v)
		}
		out = append(out, strings.ToLower(u.Scheme+"://"+u.Host))
	}
	return out, nil
}

// originPatterns accepts https origins whose host may start with "*.".
func originPatterns(list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	for _, v := range list {
		u, err := url.Parse(strings.Replace(v, "*.", "wildcard.", 1))
		bad := err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil
		if !bad && strings.Count(v, "*") > 0 && !strings.HasPrefix(v, "https://*.") {
			bad = true
		}
		if !bad && strings.Count(v, "*") > 1 {
			bad = true
		}
		if bad {
			return nil, fmt.Errorf("CONNECTD_APPCONNECT_ORIGINS: %q is not an https origin (a leading *. may match subdomains)", v)
		}
		out = append(out, strings.ToLower(strings.TrimRight(v, "/")))
	}
	return out, nil
}

func proxies(list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	for _, v := range list {
		if p, err := netip.ParsePrefix(v); err == nil {
			out = append(out, p.Masked().String())
			continue
		}
		if a, err := netip.ParseAddr(v); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()).String())
			continue
		}
		return nil, fmt.Errorf("CONNECTD_TRUSTED_PROXIES: %q is not a CIDR such as 10.0.0.0/8 or an IP address", v)
	}
	sort.Strings(out)
	return out, nil
}

func parseBool(name, v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s: %q is not true or false", name, v)
	}
	return b, nil
}
