package app

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/connectd/connectd/core/identity"
	"github.com/connectd/connectd/core/jobs"
	"github.com/connectd/connectd/core/managed"
	"github.com/connectd/connectd/core/outbound"
	"github.com/connectd/connectd/core/plugin"
	"github.com/connectd/connectd/core/refresh"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/admin"
	"github.com/connectd/connectd/server/blink"
	"github.com/connectd/connectd/server/kit"
	"github.com/connectd/connectd/server/openapi"
	"github.com/connectd/connectd/server/opsmetrics"
	"github.com/connectd/connectd/server/plugins"
)

// pluginSweepTime is how often expired plugin tasks are marked.
const pluginSweepTime = time.Minute

// Wired is the whole server: the engine, the services around it and every
// surface, plus the background loops serve runs.
type Wired struct {
	Engine   *Engine
	Identity *identity.Service
	Managed  *managed.Service
	Plugins  *plugin.Service
	Blink    *blink.Surface
	Surfaces []server.Surface
	// Background loops (jobs runner, janitor, plugin sweeper); each returns
	// when ctx ends.
	Background []func(ctx context.Context)
}

// Wire builds every engine service and surface from d. It is the one place
// concrete implementations meet (with Build).
func Wire(d *Deps, reg prometheus.Registerer) (*Wired, error) {
	cfg := d.Config
	log := d.Logger
	api := outbound.NewClient(outbound.Options{AllowPrivate: cfg.AllowPrivateURLs})

	ids, err := identity.New(identity.Options{
		RingCentralServer: cfg.RingCentralServer,
		HTTP:              api,
		Tokens:            d.Sessions,
		Clock:             d.Clock,
		Logger:            log.Named("identity"),
	})
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	mgd, err := managed.New(managed.Options{
		Store:         d.Store,
		Registry:      d.Registry,
		ConnectorApps: refresh.ConnectorApps{Connectors: refresh.FromRegistry(d.Registry)},
		HTTP:          api,
		AllowPrivate:  cfg.AllowPrivateURLs,
		Clock:         d.Clock,
		Logger:        log.Named("managed"),
	})
	if err != nil {
		return nil, fmt.Errorf("managed credentials: %w", err)
	}
	eng, err := Assemble(EngineOptions{
		Store:        d.Store,
		Sessions:     d.Sessions,
		Manifests:    d.Manifests,
		Registry:     d.Registry,
		PublicURL:    cfg.PublicURL,
		RedirectURIs: cfg.RedirectURIs,
		AllowPrivate: cfg.AllowPrivateURLs || cfg.Demo, // the demo CRM is this loopback-only server (demo.go)
		Clock:        d.Clock,
		Logger:       log,
		Registerer:   reg,
		Hosts:        ids,
		Apps:         mgd.Apps(),
		Managed:      mgd.Fields(),
		RefreshApps:  mgd.Apps(),
	})
	if err != nil {
		return nil, err
	}
	w := &Wired{Engine: eng, Identity: ids, Managed: mgd}

	origins, err := plugin.ParseOrigins(cfg.AppConnectOrigins)
	if err != nil {
		return nil, fmt.Errorf("CONNECTD_APPCONNECT_ORIGINS: %w", err)
	}
	if w.Plugins, err = plugin.New(plugin.Options{
		Store:        d.Store,
		Registry:     d.Registry,
		Credentials:  eng.Refresh,
		HTTP:         api,
		Origins:      origins,
		AllowPrivate: cfg.AllowPrivateURLs,
		Clock:        d.Clock,
		Logger:       log.Named("plugin"),
		Registerer:   reg,
	}); err != nil {
		return nil, fmt.Errorf("plugins: %w", err)
	}
	w.Plugins.RegisterJobs(eng.Jobs)
	psurf, err := plugins.New(plugins.Options{
		Plugins:   w.Plugins,
		Auth:      eng.Auth,
		Connect:   eng.Connect,
		Sessions:  d.Sessions,
		Store:     d.Store,
		Hosts:     ids,
		PublicURL: cfg.PublicURL,
		Getenv:    d.Getenv,
		Clock:     d.Clock,
		Logger:    log.Named("plugins"),
	})
	if err != nil {
		return nil, fmt.Errorf("plugins: %w", err)
	}
	if w.Blink, err = blink.New(blink.Options{
		Store:      d.Store,
		Engine:     eng.Auth,
		Connect:    eng.Connect,
		HTTP:       api,
		PublicURL:  cfg.PublicURL,
		Getenv:     d.Getenv,
		Clock:      d.Clock,
		Logger:     log.Named("blink"),
		Registerer: reg,
	}); err != nil {
		return nil, fmt.Errorf("blink: %w", err)
	}
	w.Blink.RegisterJobs(eng.Jobs)
	bl := w.Blink
	eng.Refresh.OnChange(func(ctx context.Context, u *store.User) {
		if err := bl.UserChanged(ctx, u); err != nil {
			log.Named("blink").Warn("queueing the linked-account update failed", "user", u.ID, "error", err)
		}
	})

	ks, err := kit.New(kit.Options{
		Store:     d.Store,
		Users:     eng.Auth,
		Refresher: eng.Refresh,
		Registry:  d.Registry,
		Manifests: d.Manifests,
		Connect:   eng.Connect,
		Keys:      d.Keys.Session.Keys,
		Clock:     d.Clock,
		Logger:    log.Named("kit"),
	})
	if err != nil {
		return nil, fmt.Errorf("kit: %w", err)
	}

	cons, err := consoleSurface(d, eng)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	w.Surfaces = append(eng.Surfaces(),
		&admin.Surface{Identity: ids, Sessions: d.Sessions, Managed: mgd, Manifests: d.Manifests, Logger: log.Named("admin")},
		psurf,
		w.Blink,
		ks,
		cons,
		openapi.New(openapi.Options{Registry: d.Registry}),
	)
	if reg != nil {
		reg.MustRegister(opsmetrics.New(opsmetrics.Options{Store: d.Store, Logger: log.Named("metrics"), Clock: d.Clock}))
	}
	if cfg.Demo {
		demo, err := demoSurfaces(d)
		if err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		w.Surfaces = append(w.Surfaces, demo...)
	}
	st := d.Store
	w.Background = []func(ctx context.Context){
		func(ctx context.Context) { _ = eng.Run(ctx) },
		func(ctx context.Context) { w.Plugins.Run(ctx, pluginSweepTime) },
		func(ctx context.Context) {
			jobs.RunLeasedJanitor(ctx, st, cfg.JanitorInterval, cfg.JobRetention, log.Named("janitor"), d.Clock)
		},
		func(ctx context.Context) {
			t := time.NewTicker(time.Hour)
			defer t.Stop()
			for {
				if _, err := st.PurgeAudit(ctx, d.Clock.Now().Add(-cfg.AuditRetention)); err != nil && ctx.Err() == nil {
					log.Named("janitor").Warn("purging the audit log failed", "error", err)
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		},
	}
	return w, nil
}
