package blink

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/connectd/connectd/core/store"
)

// CommandStore is what the blink commands need.
type CommandStore interface {
	store.Blink
	CountJobs(ctx context.Context) (map[string]map[string]int, error)
}

// CommandEnv is what the blink commands see of the process.
type CommandEnv struct {
	Stdout, Stderr io.Writer
	// Getenv tells whether the named secret variables are set (values
	// are never printed).
	Getenv func(string) string
	// KnownConnector reports whether a connector name exists (nil: not
	// checked).
	KnownConnector func(name string) bool
}

const commandUsage = `Usage:
  connectd blink app create --name NAME --connector CONNECTOR --auth-id ID
      --proxy-secret-env VAR [--previous-proxy-secret-env VAR]
      --api-url URL --api-token-env VAR [--share-tokens]
      [--add-path P] [--delete-path P] [--update-path P] [--update-method M]
  connectd blink app list
  connectd blink app delete --name NAME
  connectd blink status
`

var envNameRe = regexp.MustCompile(`^[A-Z_][A-Z0-9_]{0,127}$`)

// Command runs "connectd blink ..." (args after "blink") and returns the
// exit status: 0 done, 1 failed, 2 usage error.
func Command(ctx context.Context, args []string, env CommandEnv, st CommandStore) int {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, commandUsage)
		return 2
	}
	var err error
	switch {
	case args[0] == "status":
		err = statusCmd(ctx, env, st)
	case args[0] == "app" && len(args) > 1 && args[1] == "create":
		err = createCmd(ctx, args[2:], env, st)
	case args[0] == "app" && len(args) > 1 && args[1] == "list":
		err = listCmd(ctx, env, st)
	case args[0] == "app" && len(args) > 1 && args[1] == "delete":
		err = deleteCmd(ctx, args[2:], env, st)
	case args[0] == "help" || args[0] == "--help" || args[0] == "-h":
		fmt.Fprint(env.Stdout, commandUsage)
		return 0
	default:
		fmt.Fprintf(env.Stderr, "connectd blink: unknown command %q\n%s", strings.Join(args, " "), commandUsage)
		return 2
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "connectd blink: %s\n", ue.msg)
		return 2
	default:
		fmt.Fprintf(env.Stderr, "connectd blink: %v\n", err)
		return 1
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{msg: fmt.Sprintf(format, a...)} }

func createCmd(ctx context.Context, args []string, env CommandEnv, st CommandStore) error {
	fs := flag.NewFlagSet("blink app create", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var app store.BlinkApp
	fs.StringVar(&app.Name, "name", "", "app name: its proxy path is /blink/<name> (lower case letters, digits, - and _)")
	fs.StringVar(&app.Connector, "connector", "", "connector (platform) name")
	fs.StringVar(&app.AuthID, "auth-id", "", "the integration's Auth ID in Blink's admin panel")
	fs.StringVar(&app.ProxySecretEnv, "proxy-secret-env", "", "environment variable holding Blink's proxy secret")
	fs.StringVar(&app.PreviousProxySecretEnv, "previous-proxy-secret-env", "", "environment variable holding the previous proxy secret (rotation)")
	fs.StringVar(&app.APIURL, "api-url", "", "Blink API base URL")
	fs.StringVar(&app.APITokenEnv, "api-token-env", "", "environment variable holding the Blink API token")
	fs.BoolVar(&app.ShareTokens, "share-tokens", false, "send the user's access token (never the refresh token) to Blink")
	fs.StringVar(&app.API.AddPath, "add-path", "", "Add User Linked Account path (default "+DefaultAddPath+")")
	fs.StringVar(&app.API.DeletePath, "delete-path", "", "Delete User Linked Account path (default "+DefaultDeletePath+")")
	fs.StringVar(&app.API.UpdatePath, "update-path", "", "update path for requires_reauth and shared tokens (default "+DefaultUpdatePath+")")
	fs.StringVar(&app.API.UpdateMethod, "update-method", "", "PATCH (default), PUT, POST or none")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if err := validateApp(&app, env); err != nil {
		return err
	}
	if err := st.CreateBlinkApp(ctx, &app); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("an app named %q exists already", app.Name)
		}
		return fmt.Errorf("create app: %w", err)
	}
	for _, v := range []string{app.ProxySecretEnv, app.PreviousProxySecretEnv, app.APITokenEnv} {
		if v != "" && env.Getenv(v) == "" {
			fmt.Fprintf(env.Stderr, "warning: %s is not set in this environment; set it on every server before Blink calls\n", v)
		}
	}
	fmt.Fprintf(env.Stdout, "created Blink app %s (id %s); Blink's proxy URL is <public URL>/blink/%s\n", app.Name, app.ID, app.Name)
	return nil
}

func validateApp(app *store.BlinkApp, env CommandEnv) error {
	switch {
	case !ValidAppName(app.Name):
		return usagef("--name must be 1-63 lower case letters, digits, - or _, starting with a letter or digit")
	case app.Connector == "":
		return usagef("--connector is required")
	case env.KnownConnector != nil && !env.KnownConnector(app.Connector):
		return usagef("--connector %q is not a connector of this server", app.Connector)
	case !idRe.MatchString(app.AuthID):
		return usagef("--auth-id is required (letters, digits, . _ : @ -)")
	case app.APIURL == "":
		return usagef("--api-url is required")
	}
	for flagName, v := range map[string]string{"--proxy-secret-env": app.ProxySecretEnv, "--api-token-env": app.APITokenEnv, "--previous-proxy-secret-env": app.PreviousProxySecretEnv} {
		if v == "" && flagName == "--previous-proxy-secret-env" {
			continue
		}
		if !envNameRe.MatchString(v) {
			return usagef("%s must name an environment variable (A-Z, 0-9, _)", flagName)
		}
		if strings.HasPrefix(v, "CONNECTD_") {
			return usagef("%s may not name a CONNECTD_ variable", flagName)
		}
	}
	if app.PreviousProxySecretEnv == app.ProxySecretEnv {
		return usagef("--previous-proxy-secret-env must differ from --proxy-secret-env")
	}
	u, err := url.Parse(app.APIURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return usagef("--api-url must be an http(s) URL without credentials, query or fragment")
	}
	app.APIURL = strings.TrimRight(app.APIURL, "/")
	for flagName, p := range map[string]string{"--add-path": app.API.AddPath, "--delete-path": app.API.DeletePath, "--update-path": app.API.UpdatePath} {
		if p != "" && (!strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?# ")) {
			return usagef("%s must be a path starting with /", flagName)
		}
	}
	if p := app.API.DeletePath; p != "" && !strings.Contains(p, "{linked_account_id}") {
		return usagef("--delete-path must contain {linked_account_id}")
	}
	switch strings.ToUpper(app.API.UpdateMethod) {
	case "", "PATCH", "PUT", "POST":
		app.API.UpdateMethod = strings.ToUpper(app.API.UpdateMethod)
	case "NONE":
		app.API.UpdateMethod = UpdateNone
	default:
		return usagef("--update-method must be PATCH, PUT, POST or none")
	}
	return nil
}

func listCmd(ctx context.Context, env CommandEnv, st CommandStore) error {
	apps, err := st.ListBlinkApps(ctx)
	if err != nil {
		return fmt.Errorf("list apps: %w", err)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCONNECTOR\tAUTH ID\tAPI URL\tSHARE TOKENS\tPROXY SECRET ENV\tPREVIOUS\tAPI TOKEN ENV")
	for _, a := range apps {
		prev := a.PreviousProxySecretEnv
		if prev == "" {
			prev = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%s\t%s\t%s\n", a.Name, a.Connector, a.AuthID, a.APIURL, a.ShareTokens, a.ProxySecretEnv, prev, a.APITokenEnv)
	}
	return tw.Flush()
}

func deleteCmd(ctx context.Context, args []string, env CommandEnv, st CommandStore) error {
	fs := flag.NewFlagSet("blink app delete", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	name := fs.String("name", "", "app name")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	if *name == "" {
		return usagef("--name is required")
	}
	switch err := st.DeleteBlinkApp(ctx, *name); {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("no app named %q", *name)
	case errors.Is(err, store.ErrConflict):
		return fmt.Errorf("app %q still has linked accounts: its users must disconnect in Blink first", *name)
	case err != nil:
		return fmt.Errorf("delete app: %w", err)
	}
	fmt.Fprintf(env.Stdout, "deleted Blink app %s\n", *name)
	return nil
}

func statusCmd(ctx context.Context, env CommandEnv, st CommandStore) error {
	apps, err := st.ListBlinkApps(ctx)
	if err != nil {
		return fmt.Errorf("list apps: %w", err)
	}
	links, err := st.CountBlinkLinks(ctx)
	if err != nil {
		return fmt.Errorf("count links: %w", err)
	}
	jobCounts, err := st.CountJobs(ctx)
	if err != nil {
		return fmt.Errorf("count jobs: %w", err)
	}
	set := func(v string) string {
		switch {
		case v == "":
			return "-"
		case env.Getenv(v) == "":
			return v + " (unset)"
		}
		return v + " (set)"
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tPENDING\tLINKED\tDELETING\tPROXY SECRET\tPREVIOUS\tAPI TOKEN")
	for _, a := range apps {
		c := links[a.ID]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\n", a.Name, c[store.BlinkLinkPending], c[store.BlinkLinkLinked], c[store.BlinkLinkDeleting],
			set(a.ProxySecretEnv), set(a.PreviousProxySecretEnv), set(a.APITokenEnv))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout)
	tw = tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB KIND\tSTATE\tCOUNT")
	for _, kind := range []string{JobAddLink, JobUpdateLink, JobDeleteLink} {
		states := make([]string, 0, len(jobCounts[kind]))
		for s := range jobCounts[kind] {
			states = append(states, s)
		}
		sort.Strings(states)
		for _, s := range states {
			fmt.Fprintf(tw, "%s\t%s\t%d\n", kind, s, jobCounts[kind][s])
		}
	}
	return tw.Flush()
}
