package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/plugin"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/core/store/storetest"
)

func TestOrigins(t *testing.T) {
	origins, err := plugin.ParseOrigins([]string{"https://*.ringcentral.com", " http://127.0.0.1:8081 ", "https://appconnect.example.com:8443", ""})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		url   string
		allow bool
	}{
		{"https://unified-crm-extension.labs.ringcentral.com/plugin/callback?id=1", true},
		{"https://a.b.ringcentral.com:443/x", true},
		{"https://ringcentral.com/x", false}, // *.domain is not the bare domain
		{"https://ringcentral.com.evil.io/x", false},
		{"https://evilringcentral.com/x", false},
		{"http://x.ringcentral.com/x", false}, // scheme must match
		{"https://x.ringcentral.com:8443/x", false},
		{"http://127.0.0.1:8081/cb", true},
		{"http://127.0.0.1:8082/cb", false},
		{"http://localhost:8081/cb", false},
		{"https://appconnect.example.com:8443/cb", true},
		{"https://appconnect.example.com/cb", false},
		{"https://user:pw@x.ringcentral.com/cb", false},
		{"not a url", false},
	} {
		t.Run(tc.url, func(t *testing.T) {
			_, err := plugin.CheckCallbackURL(tc.url, origins, true)
			if (err == nil) != tc.allow {
				t.Fatalf("allowed=%v, want %v (err %v)", err == nil, tc.allow, err)
			}
			if err != nil && !failure.Is(err, failure.InvalidRequest) {
				t.Fatalf("error code = %s", failure.CodeOf(err))
			}
		})
	}
	t.Run("SSRF guard without private URLs", func(t *testing.T) {
		o, _ := plugin.ParseOrigins([]string{"https://*.example.com", "https://10.0.0.1"})
		for _, u := range []string{"https://10.0.0.1/cb", "http://x.example.com/cb"} {
			if _, err := plugin.CheckCallbackURL(u, o, false); err == nil {
				t.Fatalf("%s allowed", u)
			}
		}
	})
	for _, bad := range []string{"ftp://x.com", "https://*", "https://a.*.com", "https://x.com/path", "x.com", "https://u@x.com"} {
		if _, err := plugin.ParseOrigins([]string{bad}); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

// licensed is a plugin with its own licence source.
type licensed struct {
	st  connector.PluginLicenseStatus
	err error
	n   int
}

func (l *licensed) AuthType(context.Context) (connector.AuthType, error) { return "", nil }
func (l *licensed) UserInfo(context.Context, connector.UserInfoRequest) (connector.UserInfoResult, error) {
	return connector.UserInfoResult{}, errors.New("no login")
}
func (l *licensed) ProcessSync(_ context.Context, r connector.PluginRequest) (json.RawMessage, error) {
	return r.Data, nil
}
func (l *licensed) PluginLicense(context.Context, connector.PluginLicenseRequest) (connector.PluginLicenseStatus, error) {
	l.n++
	return l.st, l.err
}

// plain is a synchronous plugin without a licence source of its own.
type plain struct{}

func (plain) AuthType(context.Context) (connector.AuthType, error) { return "", nil }
func (plain) UserInfo(context.Context, connector.UserInfoRequest) (connector.UserInfoResult, error) {
	return connector.UserInfoResult{}, errors.New("no login")
}
func (plain) ProcessSync(_ context.Context, r connector.PluginRequest) (json.RawMessage, error) {
	return r.Data, nil
}

const licManifests = `{"platforms": {
	"own": {"name": "own", "requireLicense": true, "connectd": {"kind": "plugin"}},
	"static": {"name": "static", "requireLicense": true, "connectd": {"kind": "plugin"}},
	"paid": {"name": "paid", "requireLicense": true, "connectd": {"kind": "plugin"}},
	"free": {"name": "free", "connectd": {"kind": "plugin"}}}}`

func TestLicenseSources(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	st := storetest.OpenStore(t, storetest.SQLite, nil)
	set, err := manifest.Load(fstest.MapFS{"p.json": &fstest.MapFile{Data: []byte(licManifests)}}, "")
	if err != nil {
		t.Fatal(err)
	}
	own := &licensed{st: connector.PluginLicenseStatus{LicenseStatus: true, LicenseStatusDescription: "License: Personal"}}
	newPlain := func(connector.Config) (connector.Connector, error) { return plain{}, nil }
	reg, err := registry.New(ctx, set, map[string]connector.Factory{
		"own":    func(connector.Config) (connector.Connector, error) { return own, nil },
		"static": newPlain, "paid": newPlain, "free": newPlain,
	}, registry.Config{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := plugin.New(plugin.Options{Store: st, Registry: reg, Clock: clk, LicenseCacheTTL: time.Minute,
		StaticLicenses: map[string]connector.PluginLicenseStatus{"static": {LicenseStatus: true, LicenseStatusDescription: "Site licence"}}})
	if err != nil {
		t.Fatal(err)
	}
	acct := &store.HostIdentity{Kind: "ringcentral", AccountID: "acct-1"}
	lookup := func(id string) *plugin.Plugin {
		p, err := svc.Lookup(id)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	check := func(name string, got connector.PluginLicenseStatus, ok bool, desc string) {
		t.Helper()
		if got.LicenseStatus != ok || !strings.Contains(got.LicenseStatusDescription, desc) {
			t.Fatalf("%s: %+v, want status %v and description containing %q", name, got, ok, desc)
		}
	}
	check("free plugin", svc.License(ctx, lookup("free"), nil, ""), true, "No licence required")
	check("paid, no row", svc.License(ctx, lookup("paid"), acct, ""), false, "No licence found")
	check("static", svc.License(ctx, lookup("static"), acct, ""), true, "Site licence")
	check("plugin's own source", svc.License(ctx, lookup("own"), acct, ""), true, "Personal")
	check("plugin's own source, cached", svc.License(ctx, lookup("own"), acct, ""), true, "Personal")
	if own.n != 1 {
		t.Fatalf("plugin licence asked %d times; want 1 (cached)", own.n)
	}

	// The operator's table wins and is read per account.
	var out, errOut bytes.Buffer
	if code := plugin.LicenseCommand(ctx, []string{"set", "--plugin", "paid", "--account", "acct-2", "--valid", "--description", "License: Team", "--valid-until", "2026-12-31"}, &out, &errOut, st); code != 0 {
		t.Fatalf("license set: %d %s", code, errOut.String())
	}
	acct2 := &store.HostIdentity{Kind: "ringcentral", AccountID: "acct-2"}
	check("table row", svc.License(ctx, lookup("paid"), acct2, ""), true, "License: Team")
	clk.Advance(40 * 24 * time.Hour) // past the end of 2026-12-31 and the cache
	got := svc.License(ctx, lookup("paid"), acct2, "")
	check("expired row", got, false, "expired on 2027-01-01")
	if got.ErrorMessage == "" {
		t.Fatalf("expired licence has no errorMessage: %+v", got)
	}

	// A source that fails says so, and is not cached.
	own.err = errors.New("billing API down")
	clk.Advance(2 * time.Minute)
	check("unreadable", svc.License(ctx, lookup("own"), acct, ""), false, "could not be read")
	own.err = nil
	check("readable again", svc.License(ctx, lookup("own"), acct, ""), true, "Personal")

	out.Reset()
	if code := plugin.LicenseCommand(ctx, []string{"list"}, &out, &errOut, st); code != 0 || !strings.Contains(out.String(), "acct-2") || !strings.Contains(out.String(), "License: Team") {
		t.Fatalf("license list: %d %q", code, out.String())
	}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"set", "--plugin", "paid", "--valid"}, 1, "--account"},
		{[]string{"set", "--plugin", "paid", "--account", "a"}, 1, "exactly one of --valid and --invalid"},
		{[]string{"set", "--plugin", "paid", "--account", "a", "--invalid", "--valid-until", "soon"}, 1, "YYYY-MM-DD"},
		{[]string{"delete", "--plugin", "paid", "--account", "nobody"}, 1, "no licence"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{nil, 2, "usage"},
	} {
		errOut.Reset()
		if code := plugin.LicenseCommand(ctx, tc.args, &out, &errOut, st); code != tc.code || !strings.Contains(errOut.String(), tc.msg) {
			t.Errorf("%v: code %d %q, want %d containing %q", tc.args, code, errOut.String(), tc.code, tc.msg)
		}
	}
	if code := plugin.LicenseCommand(ctx, []string{"delete", "--plugin", "paid", "--account", "acct-2"}, &out, &errOut, st); code != 0 {
		t.Fatalf("delete: %d %s", code, errOut.String())
	}
	if _, err := st.GetLicense(ctx, "paid", "ringcentral", "acct-2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted licence still there: %v", err)
	}
}
