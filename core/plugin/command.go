package plugin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/connectd/connectd/core/store"
)

// LicenseCommand is `connectd license set|delete|list ...`: the operator's
// per-account plugin licences. It returns the process exit code.
//
//	connectd license set --plugin P --account A [--host-kind ringcentral]
//	    (--valid | --invalid) [--description TEXT] [--error TEXT]
//	    [--valid-until 2027-01-31] [--by NAME]
//	connectd license delete --plugin P --account A [--host-kind ringcentral]
//	connectd license list [--plugin P]
func LicenseCommand(ctx context.Context, args []string, stdout, stderr io.Writer, st store.Licenses) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: connectd license set|delete|list [flags]")
		return 2
	}
	fs := flag.NewFlagSet("license "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	plugin := fs.String("plugin", "", "plugin id (platform name)")
	account := fs.String("account", "", "host account id")
	kind := fs.String("host-kind", "ringcentral", "host kind")
	valid := fs.Bool("valid", false, "the account is licensed")
	invalid := fs.Bool("invalid", false, "the account is not licensed")
	desc := fs.String("description", "", "licenseStatusDescription (limited markdown)")
	errMsg := fs.String("error", "", "errorMessage shown on the plugin list page")
	until := fs.String("valid-until", "", "last day of validity (YYYY-MM-DD, UTC), or an RFC 3339 time")
	by := fs.String("by", "cli", "who set it (audit)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "connectd license:", err)
		return 1
	}
	switch args[0] {
	case "set":
		if *plugin == "" || *account == "" {
			return fail(errors.New("--plugin and --account are required"))
		}
		if *valid == *invalid {
			return fail(errors.New("give exactly one of --valid and --invalid"))
		}
		l := &store.License{PluginID: *plugin, HostKind: *kind, HostAccountID: *account, Valid: *valid,
			Description: *desc, ErrorMessage: *errMsg, SetBy: *by}
		if *until != "" {
			t, err := parseUntil(*until)
			if err != nil {
				return fail(err)
			}
			l.ValidUntil = &t
		}
		if err := st.PutLicense(ctx, l); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "licence of plugin %s for %s account %s set (valid=%t)\n", *plugin, *kind, *account, *valid)
		return 0
	case "delete":
		if *plugin == "" || *account == "" {
			return fail(errors.New("--plugin and --account are required"))
		}
		if err := st.DeleteLicense(ctx, *plugin, *kind, *account); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fail(fmt.Errorf("no licence of plugin %s for %s account %s", *plugin, *kind, *account))
			}
			return fail(err)
		}
		fmt.Fprintf(stdout, "licence of plugin %s for %s account %s deleted\n", *plugin, *kind, *account)
		return 0
	case "list":
		ls, err := st.ListLicenses(ctx, *plugin)
		if err != nil {
			return fail(err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PLUGIN\tHOST KIND\tACCOUNT\tVALID\tVALID UNTIL\tDESCRIPTION")
		for _, l := range ls {
			u := "-"
			if l.ValidUntil != nil {
				u = l.ValidUntil.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\t%s\n", l.PluginID, l.HostKind, l.HostAccountID, l.Valid, u, strings.ReplaceAll(l.Description, "\n", " "))
		}
		_ = tw.Flush()
		return 0
	default:
		fmt.Fprintf(stderr, "connectd license: unknown command %q (want set, delete or list)\n", args[0])
		return 2
	}
}

// parseUntil reads a date (valid through its last moment, UTC) or a time.
func parseUntil(v string) (time.Time, error) {
	if d, err := time.Parse("2006-01-02", v); err == nil {
		return d.Add(24 * time.Hour).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("--valid-until %q: want YYYY-MM-DD or an RFC 3339 time", v)
	}
	return t.UTC(), nil
}
