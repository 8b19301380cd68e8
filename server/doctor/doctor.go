// Package doctor checks a connectd installation without changing it:
// configuration, database reachability and migration version, key check
// values and which keys stored values use, manifests, each connector's
// availability (and, when asked, whether its OAuth endpoints answer),
// public URL and redirect URIs. `connectd doctor` prints the report as a
// table of OK / WARN / FAIL lines, each with how to fix it, and exits
// non-zero on any FAIL.
//
// The doctor never migrates, never writes key check values and never
// creates an SQLite file: it reads.
package doctor

import (
	"context"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/connectors/declarative"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/encryption"
	"github.com/connectd/connectd/server/config"
	"github.com/connectd/connectd/server/keys"
)

// Status of one check.
type Status string

// Statuses, from good to bad.
const (
	OK   Status = "OK"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

// Check is one line of the report. Detail and Fix never hold a secret.
type Check struct {
	Name   string
	Status Status
	Detail string
	Fix    string
}

// Report is the doctor's findings in the order they were made.
type Report struct {
	Checks []Check
}

// Failed reports whether any check failed.
func (r *Report) Failed() bool {
	return slices.ContainsFunc(r.Checks, func(c Check) bool { return c.Status == Fail })
}

// Count returns how many checks have status s.
func (r *Report) Count(s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

// Find returns the first check named name.
func (r *Report) Find(name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

func (r *Report) add(name string, s Status, detail, fix string) {
	r.Checks = append(r.Checks, Check{Name: name, Status: s, Detail: detail, Fix: fix})
}

// Write prints the report as a table and a summary line.
func (r *Report) Write(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tCHECK\tDETAIL")
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Status, c.Name, c.Detail)
		if c.Fix != "" && c.Status != OK {
			fmt.Fprintf(tw, "\t\tfix: %s\n", c.Fix)
		}
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\n%d OK, %d WARN, %d FAIL\n", r.Count(OK), r.Count(Warn), r.Count(Fail))
}

// Options say what to check.
type Options struct {
	// Getenv supplies the configuration (and connector settings).
	Getenv func(string) string
	// Args are configuration flags (as for serve); may be nil.
	Args []string
	// Manifests holds the built-in manifests (*.json at its root).
	Manifests fs.FS
	// Connectors is the binary's connector map.
	Connectors map[string]connector.Factory
	// Online also checks that each OAuth connector's endpoints answer.
	Online bool
	// HTTP is the client for online checks (default: 10s timeout).
	HTTP *http.Client
}

// Run performs every check. It never returns early on a failure unless
// later checks depend on what failed (no configuration: nothing else).
func Run(ctx context.Context, o Options) *Report {
	r := &Report{}
	if o.Getenv == nil {
		o.Getenv = func(string) string { return "" }
	}
	cfg := checkConfig(r, o)
	if cfg == nil {
		return r
	}
	checkPublicURL(r, cfg)
	ks := checkKeys(r, cfg)
	st := checkDatabase(ctx, r, cfg, ks)
	if st != nil {
		defer st.Close()
		if ks != nil {
			checkKeyChecks(ctx, r, st, ks)
			checkKeyUsage(ctx, r, st, ks)
		}
	}
	set := checkManifests(r, cfg, o)
	if set != nil {
		checkConnectors(ctx, r, cfg, o, set, st)
	}
	return r
}

func checkConfig(r *Report, o Options) *config.Config {
	fsys := newFlagSet()
	flags := config.Register(fsys, "")
	if err := fsys.Parse(o.Args); err != nil {
		r.add("configuration", Fail, err.Error(), "run connectd serve --help for the flags")
		return nil
	}
	cfg, err := flags.Load(o.Getenv)
	if err != nil {
		r.add("configuration", Fail, err.Error(), "fix the variable named above (see the configuration table in the README)")
		return nil
	}
	r.add("configuration", OK, fmt.Sprintf("database %s, data dir %s, log %s/%s", cfg.DatabaseKind, cfg.DataDir, strings.ToLower(cfg.LogLevel.String()), cfg.LogFormat), "")
	return cfg
}

func checkPublicURL(r *Report, cfg *config.Config) {
	u, err := url.Parse(cfg.PublicURL)
	if err != nil {
		r.add("public URL", Fail, "CONNECTD_PUBLIC_URL does not parse", "set CONNECTD_PUBLIC_URL to the external https base URL")
		return
	}
	host := u.Hostname()
	local := host == "localhost" || host == "127.0.0.1" || host == "::1"
	cb := cfg.PublicURL + "/oauth/callback"
	switch {
	case u.Scheme != "https" && !local:
		r.add("public URL", Warn, cfg.PublicURL+" is not https: cookies are not Secure and CRMs refuse http redirect URIs",
			"serve behind TLS and set CONNECTD_PUBLIC_URL=https://...")
	case local:
		r.add("public URL", Warn, cfg.PublicURL+" is local: fine for development, unreachable for CRMs and hosts",
			"set CONNECTD_PUBLIC_URL to the external URL in production")
	default:
		r.add("public URL", OK, cfg.PublicURL, "")
	}
	r.add("redirect URI", OK, "register "+cb+" at each CRM's OAuth app", "")
	for _, ru := range cfg.RedirectURIs {
		if pu, err := url.Parse(ru); err != nil || (pu.Scheme != "https" && pu.Hostname() != "localhost" && pu.Hostname() != "127.0.0.1") {
			r.add("client redirect URIs", Warn, ru+" is not https", "use https redirect URIs in CONNECTD_REDIRECT_URIS")
			return
		}
	}
	if len(cfg.RedirectURIs) > 0 {
		r.add("client redirect URIs", OK, fmt.Sprintf("%d allowed", len(cfg.RedirectURIs)), "")
	}
}

func checkKeys(r *Report, cfg *config.Config) *keys.Set {
	ks, err := keys.Load(keys.LoadOptions{
		DataDir:        cfg.DataDir,
		EncryptionKeys: cfg.EncryptionKeys,
		SessionKeys:    cfg.SessionKeys,
		Generate:       cfg.DatabaseKind == config.SQLite,
		SessionCheck:   session.CheckValue,
		Rand:           zeroReader{}, // a generated ring is only looked at, never used
	})
	if err != nil {
		r.add("keys", Fail, err.Error(), "set CONNECTD_ENCRYPTION_KEYS and CONNECTD_SESSION_KEYS (connectd keys generate) or restore keys.env")
		return nil
	}
	for _, ring := range ks.Rings() {
		src := ring.Source
		if ring.Generated() {
			r.add(ring.Name+" keys", Warn, "none configured and no "+keys.FileName+" yet: serve will generate them",
				"back up "+ks.Path()+" once it exists")
			continue
		}
		r.add(ring.Name+" keys", OK, fmt.Sprintf("%d key(s), primary %d, from %s", ring.Keys.Len(), ring.Keys.PrimaryID(), src), "")
	}
	return ks
}

func checkDatabase(ctx context.Context, r *Report, cfg *config.Config, ks *keys.Set) *gormstore.Store {
	if p := cfg.SQLitePath(); p != "" {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			r.add("database", Warn, "SQLite file "+p+" does not exist yet", "connectd serve (or connectd migrate) creates it")
			return nil
		}
	}
	var sealer gormstore.Sealer = noSealer{}
	if ks != nil && !ks.Encryption.Generated() {
		sealer = encryption.NewAEAD(ks.Encryption.Keys, nil)
	}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := gormstore.Open(octx, gormstore.Options{URL: cfg.DatabaseURL, Sealer: sealer, Logger: hclog.NewNullLogger(), MaxOpenConns: 2})
	if err != nil {
		r.add("database", Fail, fmt.Sprintf("%s database %s unreachable: %v", cfg.DatabaseKind, config.RedactURL(cfg.DatabaseURL), err),
			"check CONNECTD_DATABASE_URL and that the database server is running and reachable from here")
		return nil
	}
	r.add("database", OK, fmt.Sprintf("%s at %s answers", st.Dialect(), config.RedactURL(cfg.DatabaseURL)), "")
	v, err := st.MigrationVersion(octx)
	want := gormstore.SchemaVersion()
	switch {
	case err != nil:
		r.add("migrations", Fail, err.Error(), "check the database user's permissions")
	case v == 0:
		r.add("migrations", Warn, "the database is empty", "run connectd migrate (serve also migrates at start)")
	case v < want:
		r.add("migrations", Warn, fmt.Sprintf("database at version %d, this binary knows %d", v, want), "run connectd migrate (serve also migrates at start)")
	case v > want:
		r.add("migrations", Fail, fmt.Sprintf("database at version %d is newer than this binary (%d)", v, want), "run the release that migrated it, or newer")
	default:
		r.add("migrations", OK, fmt.Sprintf("version %d (current)", v), "")
	}
	return st
}

func checkKeyChecks(ctx context.Context, r *Report, st *gormstore.Store, ks *keys.Set) {
	for _, ring := range ks.Rings() {
		name := ring.Name + " key checks"
		stored, err := st.ListKeyChecks(ctx, ring.Name)
		if err != nil {
			r.add(name, Fail, err.Error(), "run connectd migrate")
			continue
		}
		if ring.Generated() {
			if len(stored) > 0 {
				r.add(name, Fail, fmt.Sprintf("the database holds values protected by %d %s key(s) but none is configured", len(stored), ring.Name),
					"set "+ring.Env+" or restore "+ks.Path())
			}
			continue
		}
		configured := ring.Keys.IDs()
		bad := false
		have := map[uint32]bool{}
		for _, kc := range stored {
			have[kc.KeyID] = true
			if !slices.Contains(configured, kc.KeyID) {
				r.add(name, Fail, fmt.Sprintf("stored values use %s key %d, which is not configured", ring.Name, kc.KeyID),
					fmt.Sprintf("add key %d back to %s (or, once nothing uses it, connectd keys remove %d)", kc.KeyID, ring.Env, kc.KeyID))
				bad = true
				continue
			}
			want, err := ring.Check(kc.KeyID)
			if err != nil || subtle.ConstantTimeCompare(want, kc.Check) != 1 {
				r.add(name, Fail, fmt.Sprintf("%s key %d does not match its stored check value: wrong key", ring.Name, kc.KeyID),
					fmt.Sprintf("restore the right value of key %d in %s", kc.KeyID, ring.Env))
				bad = true
			}
		}
		if bad {
			continue
		}
		var unchecked []string
		for _, id := range configured {
			if !have[id] {
				unchecked = append(unchecked, fmt.Sprint(id))
			}
		}
		if len(unchecked) > 0 {
			r.add(name, OK, "match; key(s) "+strings.Join(unchecked, ",")+" get a check value at the next start", "")
		} else {
			r.add(name, OK, fmt.Sprintf("%d key(s) match their stored check values", len(stored)), "")
		}
	}
}

func checkKeyUsage(ctx context.Context, r *Report, st *gormstore.Store, ks *keys.Set) {
	if ks.Encryption.Generated() {
		return
	}
	usage, err := st.KeyUsage(ctx)
	if err != nil {
		r.add("sealed values", Fail, err.Error(), "run connectd migrate")
		return
	}
	counts := usage["encryption"]
	primary := ks.Encryption.Keys.PrimaryID()
	configured := ks.Encryption.Keys.IDs()
	var total, old int64
	var missing []string
	for id, n := range counts {
		total += n
		if id != primary {
			old += n
		}
		if !slices.Contains(configured, id) {
			missing = append(missing, fmt.Sprintf("%d value(s) under key %d", n, id))
		}
	}
	slices.Sort(missing)
	switch {
	case len(missing) > 0:
		r.add("sealed values", Fail, strings.Join(missing, ", ")+": not configured, they cannot be opened",
			"add the missing key to CONNECTD_ENCRYPTION_KEYS (key id 0 means unreadable data)")
	case old > 0:
		r.add("sealed values", Warn, fmt.Sprintf("%d of %d value(s) are under an older key", old, total),
			"run connectd keys rotate (then connectd keys remove the old key)")
	default:
		r.add("sealed values", OK, fmt.Sprintf("%d value(s), all under the primary key %d", total, primary), "")
	}
}

func checkManifests(r *Report, cfg *config.Config, o Options) *manifest.Set {
	if o.Manifests == nil {
		r.add("manifests", Fail, "no built-in manifests", "")
		return nil
	}
	set, err := manifest.Load(o.Manifests, cfg.ManifestsDir)
	if err != nil {
		ps := manifest.Problems(err)
		detail := err.Error()
		if len(ps) > 0 {
			detail = fmt.Sprintf("%d problem(s); first: %s", len(ps), ps[0].String())
		}
		r.add("manifests", Fail, detail, "run connectd manifest validate FILE for every problem")
		return nil
	}
	r.add("manifests", OK, fmt.Sprintf("%d platform(s) valid", len(set.Names())), "")
	return set
}

func checkConnectors(ctx context.Context, r *Report, cfg *config.Config, o Options, set *manifest.Set, st *gormstore.Store) {
	reg, err := registry.New(ctx, set, o.Connectors, registry.Config{
		Getenv:          o.Getenv,
		Declarative:     declarative.New,
		ConnectorLogger: func(string) *slog.Logger { return slog.New(slog.DiscardHandler) },
	})
	if err != nil {
		r.add("connectors", Fail, err.Error(), "fix the connector map or the manifests named above")
		return
	}
	hc := o.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	for _, e := range reg.List() {
		name := "connector " + e.Name
		if !e.Available {
			logins := 0
			if st != nil {
				if us, err := st.ListUsers(ctx, store.UserFilter{Platform: e.Name, Limit: 1}); err == nil {
					logins = len(us)
				}
			}
			if logins > 0 {
				r.add(name, Fail, "unavailable and stored logins use it: "+strings.TrimPrefix(e.Reason, "connector unavailable: "), "set the variable named above and restart")
			} else {
				r.add(name, Warn, "unavailable: "+strings.TrimPrefix(e.Reason, "connector unavailable: "), "set the variable named above to offer this connector (ignore if unused)")
			}
			continue
		}
		oc, isOAuth := e.Connector.(connector.OAuthConnector)
		if !isOAuth || e.Platform.AuthType() != connector.AuthOAuth {
			r.add(name, OK, "available ("+authLabel(e.Platform.AuthType())+")", "")
			continue
		}
		info, err := oc.OAuthInfo(ctx, connector.OAuthInfoRequest{})
		if err != nil {
			r.add(name, Warn, "available; its OAuth settings depend on the caller (hostname): "+firstLine(err.Error()), "")
			continue
		}
		if info.ClientID == "" || info.ClientSecret == "" {
			r.add(name, Fail, "OAuth client id or secret is empty", "set the connector's client id and secret variables")
			continue
		}
		if !o.Online {
			r.add(name, OK, "available (oauth; client id and secret set)", "")
			continue
		}
		var down []string
		for _, u := range []string{info.AuthURL, info.TokenURL} {
			if u == "" {
				continue
			}
			if err := reachable(ctx, hc, u); err != nil {
				down = append(down, err.Error())
			}
		}
		if len(down) > 0 {
			r.add(name, Fail, "OAuth endpoint unreachable: "+strings.Join(down, "; "), "check outbound network access (proxy, firewall, DNS) to the CRM")
		} else {
			r.add(name, OK, "available (oauth; endpoints answer)", "")
		}
	}
}

func authLabel(t connector.AuthType) string {
	if t == "" {
		return "plugin"
	}
	return string(t)
}

// reachable: any HTTP answer counts (an authorize endpoint answers GET
// without parameters with 400 or a login page; a token endpoint answers
// 400/405). Only network failures and 5xx count against it.
func reachable(ctx context.Context, hc *http.Client, raw string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return fmt.Errorf("%s: bad URL", hostOf(raw))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %s", hostOf(raw), netReason(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("%s: HTTP %d", hostOf(raw), resp.StatusCode)
	}
	return nil
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	return u.Scheme + "://" + u.Host + u.Path
}

func netReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return firstLine(err.Error())
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// noSealer is used when no encryption key is configured: the doctor
// opens nothing.
type noSealer struct{}

func (noSealer) Seal([]byte, []byte) ([]byte, error) {
	return nil, errors.New("doctor: no encryption key")
}
func (noSealer) Open([]byte, []byte) ([]byte, error) {
	return nil, errors.New("doctor: no encryption key")
}

func newFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}
