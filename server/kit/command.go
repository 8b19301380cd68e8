package kit

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	corekit "github.com/connectd/connectd/core/kit"
	"github.com/connectd/connectd/core/store"
)

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }

func (m *multiFlag) Set(v string) error {
	*m = append(*m, v)
	return nil
}

const appUsage = `usage: connectd kit app <command> [flags]

commands:
  create --name NAME --connector PLATFORM --redirect-uri URI [--redirect-uri URI ...] [--after-install-url URL]
         prints the client id and the client secret (shown once; only its hash is stored)
  list
  rotate-secret --app ID|CLIENT_ID   prints the new secret; the old one stops working at once
  delete --app ID|CLIENT_ID          deletes the app and ends every install
`

// CommandOptions are what `connectd kit app` needs.
type CommandOptions struct {
	Store store.Kit
	// Connectors are the platform names an app may use.
	Connectors []string
	// EndLogin ends a creator's connector login when its app is deleted
	// (e.g. the engine's Logout, which also revokes upstream). Nil: the
	// logins are only listed.
	EndLogin func(ctx context.Context, userID string) error
}

// AppCommand runs `connectd kit app ...` (args start after "app"). It
// returns the exit code: 0 done, 1 failed, 2 usage.
func AppCommand(ctx context.Context, args []string, stdout, stderr io.Writer, o CommandOptions) int {
	st, connectors := o.Store, o.Connectors
	if len(args) == 0 {
		fmt.Fprint(stderr, appUsage)
		return 2
	}
	fs := flag.NewFlagSet("kit app "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	switch args[0] {
	case "create":
		var uris multiFlag
		name := fs.String("name", "", "app name shown on the connect page")
		conn := fs.String("connector", "", "connector (platform name)")
		after := fs.String("after-install-url", "", "optional: where Kit sends creators after install (informational)")
		fs.Var(&uris, "redirect-uri", "a redirect URI Kit uses (repeat)")
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
			fmt.Fprint(stderr, appUsage)
			return 2
		}
		if !slices.Contains(connectors, *conn) {
			fmt.Fprintf(stderr, "kit app create: unknown connector %q (known: %s)\n", *conn, strings.Join(connectors, ", "))
			return 2
		}
		a, secret, err := corekit.CreateApp(ctx, st, corekit.AppInput{Name: *name, Connector: *conn, RedirectURIs: uris, AfterInstallURL: *after})
		if err != nil {
			fmt.Fprintf(stderr, "kit app create: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "app id:        %s\nclient id:     %s\nclient secret: %s\n", a.ID, a.ClientID, secret)
		fmt.Fprintln(stdout, "The client secret is shown only now: store it in Kit's app settings.")
		return 0
	case "list":
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
			fmt.Fprint(stderr, appUsage)
			return 2
		}
		apps, err := st.ListKitApps(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "kit app list: %v\n", err)
			return 1
		}
		if len(apps) == 0 {
			fmt.Fprintln(stdout, "no kit apps")
		}
		for i := range apps {
			fmt.Fprintln(stdout, corekit.Describe(&apps[i]))
		}
		return 0
	case "rotate-secret", "delete":
		app := fs.String("app", "", "app id or client id")
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 || *app == "" {
			fmt.Fprint(stderr, appUsage)
			return 2
		}
		if args[0] == "rotate-secret" {
			a, secret, err := corekit.RotateSecret(ctx, st, *app)
			if err != nil {
				fmt.Fprintf(stderr, "kit app rotate-secret: %v\n", notFoundText(err))
				return 1
			}
			fmt.Fprintf(stdout, "client id:     %s\nclient secret: %s\n", a.ClientID, secret)
			fmt.Fprintln(stdout, "The client secret is shown only now; the previous one no longer works.")
			return 0
		}
		a, err := corekit.FindApp(ctx, st, *app)
		var users []string
		if err == nil {
			users, err = st.DeleteKitApp(ctx, a.ID)
		}
		if err != nil {
			fmt.Fprintf(stderr, "kit app delete: %v\n", notFoundText(err))
			return 1
		}
		fmt.Fprintf(stdout, "deleted kit app %s (%s); %d install(s) ended\n", a.ID, a.Name, len(users))
		failed := 0
		for _, u := range users {
			if o.EndLogin == nil {
				fmt.Fprintf(stdout, "creator login still holding credentials: %s\n", u)
				continue
			}
			if err := o.EndLogin(ctx, u); err != nil {
				fmt.Fprintf(stderr, "kit app delete: ending creator login %s: %v\n", u, err)
				failed++
			}
		}
		if failed > 0 {
			return 1
		}
		return 0
	default:
		fmt.Fprint(stderr, appUsage)
		return 2
	}
}

func notFoundText(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return errors.New("no such app")
	}
	return err
}
