// Package app is the connectd command line: serve, migrate, keys generate,
// version. It is a package rather than code in main so that operators can
// build their own binary with their own connector map:
//
//	func main() { os.Exit(app.Main(os.Args[1:], myconnectors.All())) }
//
// Every command takes --help; a bad command or flag exits with status 2 and
// one line saying why; a startup failure exits with status 1 and one line.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/config"
	"github.com/connectd/connectd/server/logging"
)

// Env is the process environment a command sees; tests supply their own.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// OnListen, when set, is called by serve with the main listener's
	// address once it accepts connections (tests listen on port 0).
	OnListen func(addr string)
	// Manifests replaces the embedded manifests (manifests.FS) when set:
	// a binary built with another connector map ships its own manifests.
	Manifests fs.FS
}

// Main runs the command line with the process environment and stops
// serve on SIGINT/SIGTERM. It returns the exit status.
func Main(args []string, connectors map[string]connector.Factory) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}, connectors)
}

const usage = `connectd - one engine for CRM credentials, many host surfaces

Usage:
  connectd serve [flags]                     run the server (migrates the database first)
  connectd migrate [flags]                   apply database migrations and exit
  connectd keys generate                     print fresh key ring lines for both rings
  connectd keys add|promote|rotate|status|remove ...
                                             online key rotation (see connectd keys --help)
  connectd doctor [--online]                 check the installation: OK / WARN / FAIL with fixes
  connectd users list|show|revoke ...        stored logins and sessions (never their secrets)
  connectd manifest validate [FILE...]       validate manifests, every problem with its path
  connectd identity token|revoke ...         operator-issued host identity tokens (cdi_...)
  connectd license set|delete|list ...       plugin licences per host account
  connectd blink app create|list|delete ...  Blink authenticated apps; connectd blink status
  connectd kit app create|list|rotate-secret|delete ...
                                             Kit OAuth clients (secret printed once)
  connectd connector new NAME --auth oauth|apiKey
                                             scaffold a connector package, manifest and test
  connectd version                           print the version

Run "connectd <command> --help" for a command's flags.
`

// Run runs one command line (without the program name) and returns the
// exit status.
func Run(ctx context.Context, args []string, env Env, connectors map[string]connector.Factory) int {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], env, connectors)
	case "migrate":
		err = migrate(ctx, args[1:], env)
	case "keys":
		err = keysCmd(ctx, args[1:], env)
	case "doctor":
		err = doctorCmd(ctx, args[1:], env, connectors)
	case "users":
		err = usersCmd(ctx, args[1:], env, connectors)
	case "manifest":
		err = manifestCmd(args[1:], env)
	case "identity":
		err = identityCmd(ctx, args[1:], env)
	case "license":
		err = licenseCmd(ctx, args[1:], env)
	case "blink":
		err = blinkCmd(ctx, args[1:], env)
	case "kit":
		err = kitCmd(ctx, args[1:], env, connectors)
	case "connector":
		err = connectorCmd(args[1:], env)
	case "version":
		err = versionCmd(args[1:], env)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(env.Stdout, usage)
		return 0
	default:
		err = fmt.Errorf("%w: unknown command %q (run connectd --help)", errUsage, args[0])
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errSilentUsage):
		return 2
	case errors.Is(err, errSilent):
		return 1
	case errors.Is(err, errUsage):
		fmt.Fprintf(env.Stderr, "connectd: %s\n", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return 2
	default:
		fmt.Fprintf(env.Stderr, "connectd: %s\n", err)
		return 1
	}
}

// parse parses args into fs, printing help to stdout on --help and turning
// any other flag error into one errUsage line.
func parse(fs *flag.FlagSet, args []string, env Env) error {
	fs.SetOutput(io.Discard)
	usage := fs.Usage
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(env.Stdout)
		usage()
		return flag.ErrHelp
	}
	if err != nil {
		return fmt.Errorf("%w: %s %v (run connectd %s --help)", errUsage, fs.Name(), err, fs.Name())
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: %s: unexpected argument %q (run connectd %s --help)", errUsage, fs.Name(), fs.Arg(0), fs.Name())
	}
	return nil
}

func loadConfig(name, summary string, args []string, env Env) (*config.Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	flags := config.Register(fs, summary)
	if err := parse(fs, args, env); err != nil {
		return nil, err
	}
	cfg, err := flags.Load(env.Getenv)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

func serve(ctx context.Context, args []string, env Env, connectors map[string]connector.Factory) error {
	cfg, err := loadConfig("serve", "Usage: connectd serve [flags]\n\nRuns the server: migrates the database, checks the keys, serves HTTP until SIGINT/SIGTERM.", args, env)
	if err != nil {
		return err
	}
	logger := logging.New(env.Stderr, cfg.LogLevel, cfg.LogFormat)
	logger.Info("starting", "version", Version(), "config", cfg.String())
	d, err := Build(ctx, cfg, logger, env.Getenv, env.Manifests, connectors)
	if err != nil {
		return err
	}
	defer d.Close()
	reg := prometheus.NewRegistry()
	w, err := Wire(d, reg)
	if err != nil {
		return err
	}
	srv, err := server.New(server.Options{
		Registry:       reg,
		Addr:           cfg.Addr,
		MetricsAddr:    cfg.MetricsAddr,
		Logger:         logger,
		TrustedProxies: cfg.TrustedProxies,
		CORSOrigins:    cfg.CORSOrigins,
		RateLimit:      cfg.RateLimit,
		Clock:          d.Clock,
		Ready:          d.Store.Ping,
		Version:        Version(),
	}, w.Surfaces...)
	if err != nil {
		return err
	}
	bgCtx, stopBackground := context.WithCancel(ctx)
	var bg sync.WaitGroup
	for _, run := range w.Background {
		bg.Add(1)
		go func() {
			defer bg.Done()
			run(bgCtx)
		}()
	}
	defer func() {
		stopBackground()
		bg.Wait()
	}()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	var mln net.Listener
	if cfg.MetricsAddr != "" {
		if mln, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s (metrics): %w", cfg.MetricsAddr, err)
		}
	}
	if env.OnListen != nil {
		env.OnListen(ln.Addr().String())
	}
	if err := srv.Serve(ctx, ln, mln); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

func migrate(ctx context.Context, args []string, env Env) error {
	cfg, err := loadConfig("migrate", "Usage: connectd migrate [flags]\n\nApplies database migrations (under a lock, so replicas may run it together), checks or stores the key check values, and exits.", args, env)
	if err != nil {
		return err
	}
	logger := logging.New(env.Stderr, cfg.LogLevel, cfg.LogFormat)
	_, _, st, err := OpenStore(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	v, err := st.MigrationVersion(ctx)
	if err != nil {
		return fmt.Errorf("read migration version: %w", err)
	}
	logger.Info("database migrated", "version", v, "dialect", st.Dialect())
	fmt.Fprintf(env.Stdout, "database at migration version %d\n", v)
	return nil
}

func versionCmd(args []string, env Env) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), "Usage: connectd version\n\nPrints the version.\n") }
	if err := parse(fs, args, env); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "connectd %s\n", Version())
	return nil
}

// Version is the module version and VCS revision the binary was built
// from, as recorded by the Go toolchain.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
		if s.Key == "vcs.modified" && s.Value == "true" {
			v += "-dirty"
		}
	}
	return v
}
