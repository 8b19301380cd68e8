package app

import (
	"context"
	"errors"
	"fmt"
	"github.com/connectd/connectd/connectors/declarative"
	"io/fs"
	"log/slog"
	"path/filepath"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/core/store/gormstore"
	"github.com/connectd/connectd/encryption"
	"github.com/connectd/connectd/manifests"
	"github.com/connectd/connectd/server/config"
	"github.com/connectd/connectd/server/keys"
	"github.com/connectd/connectd/server/logging"
)

// Deps is everything `serve` wires together, built once by Build in
// dependency order. Surfaces receive what they need from it (see
// Surfaces). It is the one place concrete implementations meet.
type Deps struct {
	Config *config.Config
	Logger hclog.Logger // the root logger
	Clock  clock.Clock
	Getenv func(string) string

	Keys      *keys.Set
	Sealer    *encryption.AEAD // seals with the encryption ring's primary
	Store     *gormstore.Store
	Sessions  *session.Manager
	Manifests *manifest.Set
	Registry  *registry.Registry
}

// Close releases what Build opened.
func (d *Deps) Close() error {
	if d == nil || d.Store == nil {
		return nil
	}
	return d.Store.Close()
}

// OpenStore resolves the key rings, opens and migrates the database and
// establishes the key check values (shared by serve and migrate). Order
// keeps "nothing half-written": configuration and keys.env are parsed
// before anything is created; generated keys are written (atomically) only
// after the database proved it holds nothing protected by other keys.
func OpenStore(ctx context.Context, cfg *config.Config, logger hclog.Logger) (*keys.Set, *encryption.AEAD, *gormstore.Store, error) {
	set, err := keys.Load(keys.LoadOptions{
		DataDir:        cfg.DataDir,
		EncryptionKeys: cfg.EncryptionKeys,
		SessionKeys:    cfg.SessionKeys,
		Generate:       cfg.DatabaseKind == config.SQLite,
		SessionCheck:   session.CheckValue,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	if set.Encryption.Generated() || set.Session.Generated() {
		if err := keys.EnsureDir(cfg.DataDir); err != nil {
			return nil, nil, nil, err
		}
	}
	if p := cfg.SQLitePath(); p != "" {
		if err := keys.EnsureDir(filepath.Dir(p)); err != nil {
			return nil, nil, nil, fmt.Errorf("database: %w", err)
		}
	}
	aead := encryption.NewAEAD(set.Encryption.Keys, nil)
	st, err := gormstore.Open(ctx, gormstore.Options{URL: cfg.DatabaseURL, Sealer: aead, Logger: logger.Named("store")})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open database: %w", err)
	}
	if err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, nil, nil, fmt.Errorf("migrate database: %w", err)
	}
	if err := keys.Establish(ctx, st, set, logger.Named("keys")); err != nil {
		st.Close()
		return nil, nil, nil, err
	}
	return set, aead, st, nil
}

// Build constructs every dependency of the server: key rings and store
// (OpenStore), the session manager, the manifests and the connector
// registry. The lead extends it with the engine services; on error,
// everything already opened is closed.
//
// manifestFS holds the connector manifests (*.json at its root); nil means
// the embedded manifests.FS.
func Build(ctx context.Context, cfg *config.Config, logger hclog.Logger, getenv func(string) string, manifestFS fs.FS, connectors map[string]connector.Factory) (d *Deps, err error) {
	d = &Deps{Config: cfg, Logger: logger, Clock: clock.Real{}, Getenv: getenv}
	defer func() {
		if err != nil {
			_ = d.Close()
			d = nil
		}
	}()
	if d.Keys, d.Sealer, d.Store, err = OpenStore(ctx, cfg, logger); err != nil {
		return d, err
	}
	if d.Sessions, err = session.New(session.Options{
		Keys:     d.Keys.Session.Keys,
		Issuer:   cfg.PublicURL,
		Sessions: d.Store,
		Clock:    d.Clock,
		Lifetime: cfg.SessionTTL,
	}); err != nil {
		return d, fmt.Errorf("sessions: %w", err)
	}
	if manifestFS == nil {
		manifestFS = manifests.FS
	}
	if cfg.Demo { // the demo CRM's manifest and connectors (demo.go)
		if manifestFS, connectors, err = withDemo(cfg, manifestFS, connectors); err != nil {
			return d, err
		}
	}
	if d.Manifests, err = manifest.Load(manifestFS, cfg.ManifestsDir); err != nil {
		return d, fmt.Errorf("manifests: %w", err)
	}
	connLog := logger.Named("connector")
	if d.Registry, err = registry.New(ctx, d.Manifests, connectors, registry.Config{
		Getenv:      getenv,
		Logger:      logger.Named("registry"),
		Declarative: declarative.New,
		ConnectorLogger: func(platform string) *slog.Logger {
			return logging.Slog(connLog.Named(platform))
		},
	}); err != nil {
		return d, err
	}
	return d, nil
}

// errUsage marks command-line mistakes (exit status 2).
var errUsage = errors.New("usage")
