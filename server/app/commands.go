package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/identity"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/plugin"
	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/manifests"
	"github.com/connectd/connectd/server/blink"
	"github.com/connectd/connectd/server/kit"
	"github.com/connectd/connectd/server/logging"
	"github.com/connectd/connectd/server/scaffold"
)

// operatorStore opens the configured database (configuration from the
// environment only: the command's own flags are its arguments) with the
// key checks serve does, and hands it to fn.
func operatorStore(ctx context.Context, env Env, fn func(st *gormstore.Store, sessions *session.Manager) error) error {
	cfg, err := loadConfig("connectd", "", nil, env)
	if err != nil {
		return err
	}
	logger := logging.New(env.Stderr, cfg.LogLevel, cfg.LogFormat)
	ks, _, st, err := OpenStore(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	sm, err := session.New(session.Options{Keys: ks.Session.Keys, Issuer: cfg.PublicURL, Sessions: st, Lifetime: cfg.SessionTTL})
	if err != nil {
		return fmt.Errorf("sessions: %w", err)
	}
	return fn(st, sm)
}

// operatorServer builds the whole wired server (no listener) for an
// operator command that must act through the engine (logout revokes
// upstream), configuration from the environment, and hands it to fn.
func operatorServer(ctx context.Context, env Env, connectors map[string]connector.Factory, fn func(d *Deps, w *Wired) error) error {
	cfg, err := loadConfig("connectd", "", nil, env)
	if err != nil {
		return err
	}
	logger := logging.New(env.Stderr, cfg.LogLevel, cfg.LogFormat)
	d, err := Build(ctx, cfg, logger, env.Getenv, env.Manifests, connectors)
	if err != nil {
		return err
	}
	defer d.Close()
	w, err := Wire(d, nil)
	if err != nil {
		return err
	}
	return fn(d, w)
}

// exitCode turns a sub-command's exit status into Run's error convention.
func exitCode(code int) error {
	switch code {
	case 0:
		return nil
	case 2:
		return errSilentUsage
	default:
		return errSilent
	}
}

// errSilent and errSilentUsage carry an exit status whose message the
// sub-command already printed.
var (
	errSilent      = errors.New("silent")
	errSilentUsage = fmt.Errorf("%w: silent", errUsage)
)

// manifestCmd: connectd manifest validate FILE...
func manifestCmd(args []string, env Env) error {
	const help = `Usage: connectd manifest validate FILE...

Validates App Connect manifests (with connectd's server-side blocks) and
prints every problem with its file and JSON path. Exits non-zero on any.
Without FILE, validates the embedded manifests.
`
	if len(args) == 0 || (args[0] != "validate" && !isHelp(args[0])) {
		return fmt.Errorf("%w: manifest: expected \"validate\" (run connectd manifest --help)", errUsage)
	}
	if isHelp(args[0]) || (len(args) > 1 && isHelp(args[1])) {
		fmt.Fprint(env.Stdout, help)
		return nil
	}
	files := args[1:]
	var problems []manifest.Problem
	if len(files) == 0 {
		if _, err := manifest.Load(manifests.FS, ""); err != nil {
			problems = manifest.Problems(err)
			if len(problems) == 0 {
				return err
			}
		}
	} else {
		problems = manifest.ValidateFiles(files)
	}
	for _, p := range problems {
		fmt.Fprintln(env.Stdout, p.String())
	}
	if len(problems) > 0 {
		return fmt.Errorf("%d manifest problem(s)", len(problems))
	}
	n := len(files)
	if n == 0 {
		entries, _ := fs.Glob(manifests.FS, "*.json")
		n = len(entries)
	}
	fmt.Fprintf(env.Stdout, "%d manifest file(s) valid\n", n)
	return nil
}

// identityCmd: connectd identity token|revoke ...
func identityCmd(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprint(env.Stdout, "Usage: connectd identity token --account A --user U [--admin] [--ttl 24h]\n       connectd identity revoke SESSION_ID\n\nOperator-issued host identity tokens (prefix cdi_) for hosts other than\nRingCentral and for local use.\n")
		if len(args) == 0 {
			return errSilentUsage
		}
		return nil
	}
	return operatorStore(ctx, env, func(_ *gormstore.Store, sm *session.Manager) error {
		var err error
		switch args[0] {
		case "token":
			err = identity.TokenCommand(ctx, args[1:], env.Stdout, env.Stderr, sm)
		case "revoke":
			err = identity.RevokeCommand(ctx, args[1:], env.Stdout, sm)
		default:
			return fmt.Errorf("%w: identity: unknown subcommand %q", errUsage, args[0])
		}
		if errors.Is(err, identity.ErrUsage) {
			return fmt.Errorf("%w: %s", errUsage, strings.TrimPrefix(err.Error(), identity.ErrUsage.Error()+": "))
		}
		return err
	})
}

// licenseCmd: connectd license set|delete|list ...
func licenseCmd(ctx context.Context, args []string, env Env) error {
	return operatorStore(ctx, env, func(st *gormstore.Store, _ *session.Manager) error {
		return exitCode(plugin.LicenseCommand(ctx, args, env.Stdout, env.Stderr, st))
	})
}

// blinkCmd: connectd blink app create|list|delete, connectd blink status.
func blinkCmd(ctx context.Context, args []string, env Env) error {
	set, err := manifest.Load(manifestsFS(env), "")
	if err != nil {
		return err
	}
	return operatorStore(ctx, env, func(st *gormstore.Store, _ *session.Manager) error {
		return exitCode(blink.Command(ctx, args, blink.CommandEnv{
			Stdout: env.Stdout, Stderr: env.Stderr, Getenv: env.Getenv,
			KnownConnector: func(n string) bool { _, ok := set.Platform(n); return ok },
		}, st))
	})
}

// kitCmd: connectd kit app create|list|rotate-secret|delete ...
func kitCmd(ctx context.Context, args []string, env Env, connectors map[string]connector.Factory) error {
	if len(args) == 0 || args[0] != "app" {
		return fmt.Errorf("%w: usage: connectd kit app create|list|rotate-secret|delete (run connectd --help)", errUsage)
	}
	return operatorServer(ctx, env, connectors, func(d *Deps, w *Wired) error {
		return exitCode(kit.AppCommand(ctx, args[1:], env.Stdout, env.Stderr, kit.CommandOptions{
			Store:      d.Store,
			Connectors: d.Registry.Names(),
			EndLogin: func(ctx context.Context, id string) error {
				_, err := w.Engine.Auth.Logout(ctx, id)
				return err
			},
		}))
	})
}

// connectorCmd: connectd connector new NAME --auth oauth|apiKey
func connectorCmd(args []string, env Env) error {
	if len(args) == 0 || args[0] != "new" {
		return fmt.Errorf("%w: usage: connectd connector new NAME --auth oauth|apiKey", errUsage)
	}
	return exitCode(scaffold.ScaffoldCommand(args[1:], ".", env.Stdout, env.Stderr))
}

func manifestsFS(env Env) fs.FS {
	if env.Manifests != nil {
		return env.Manifests
	}
	return manifests.FS
}

func isHelp(s string) bool {
	switch s {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}
