package app

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/connectd/connectd/core/auth"
	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/jobs"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/outbound"
	"github.com/connectd/connectd/core/refresh"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/appconnect"
	"github.com/connectd/connectd/server/connect"
)

// EngineStore is everything the engine services need from storage.
type EngineStore interface {
	store.Store
}

// EngineOptions are the pieces the engine services are assembled from.
// Production (Build) and the test harness (server/servertest) both go
// through Assemble, so tests exercise the production wiring.
type EngineOptions struct {
	Store        EngineStore
	Sessions     *session.Manager
	Manifests    *manifest.Set
	Registry     *registry.Registry
	PublicURL    string
	RedirectURIs []string
	AllowPrivate bool
	Clock        clock.Clock
	Logger       hclog.Logger
	// Registerer receives the engine's metrics (nil: none).
	Registerer prometheus.Registerer
	// LeaseTTL and UpstreamTimeout tune refresh (zero: defaults).
	LeaseTTL        time.Duration
	UpstreamTimeout time.Duration
	// Hosts verifies host identities (nil: none accepted).
	Hosts appconnect.HostVerifier
	// Apps and Managed plug in admin-managed credentials (nil: none).
	Apps    auth.OAuthApps
	Managed auth.ManagedFields
	// RefreshApps resolves the issuing app on refresh (nil: connector's).
	RefreshApps refresh.AppResolver
}

// Engine is the assembled engine and the surfaces built on it.
type Engine struct {
	Auth       *auth.Engine
	Refresh    *refresh.Service
	Jobs       *jobs.Runner
	Connect    *connect.Handler
	AppConnect *appconnect.Surface
	HTTP       *http.Client // outbound, for surfaces calling host platforms
}

// Assemble builds the engine services (outbound clients, refresh, login
// engine, jobs runner) and the App Connect and connect-flow surfaces.
func Assemble(o EngineOptions) (*Engine, error) {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	api := outbound.NewClient(outbound.Options{AllowPrivate: o.AllowPrivate})
	tokenHTTP := outbound.NewClient(outbound.Options{AllowPrivate: o.AllowPrivate, NoRedirects: true})

	rs, err := refresh.New(refresh.Options{
		Users:           o.Store,
		Jobs:            o.Store,
		Connectors:      refresh.FromRegistry(o.Registry),
		Apps:            o.RefreshApps,
		HTTP:            tokenHTTP,
		APIHTTP:         api,
		Clock:           o.Clock,
		Logger:          o.Logger.Named("refresh"),
		LeaseTTL:        o.LeaseTTL,
		UpstreamTimeout: o.UpstreamTimeout,
		Registerer:      o.Registerer,
	})
	if err != nil {
		return nil, fmt.Errorf("refresh: %w", err)
	}
	eng, err := auth.New(auth.Options{
		Store:        o.Store,
		Registry:     o.Registry,
		Refresher:    rs,
		Apps:         o.Apps,
		Managed:      o.Managed,
		HTTP:         api,
		TokenHTTP:    tokenHTTP,
		PublicURL:    o.PublicURL,
		RedirectURIs: o.RedirectURIs,
		AllowPrivate: o.AllowPrivate,
		Clock:        o.Clock,
		Logger:       o.Logger.Named("auth"),
	})
	if err != nil {
		return nil, err
	}
	runner := jobs.NewRunner(o.Store, o.Logger.Named("jobs"), jobs.RunnerOptions{Clock: o.Clock})
	runner.Handle(refresh.JobKindRevoke, rs.HandleRevokeJob)

	return &Engine{
		Auth:    eng,
		Refresh: rs,
		Jobs:    runner,
		HTTP:    api,
		Connect: &connect.Handler{
			Engine:       eng,
			Manifests:    o.Manifests,
			Completers:   map[string]connect.Completer{},
			SecureCookie: strings.HasPrefix(o.PublicURL, "https://"),
			Logger:       o.Logger.Named("connect"),
		},
		AppConnect: &appconnect.Surface{
			Engine:    eng,
			Sessions:  o.Sessions,
			Manifests: o.Manifests,
			Hosts:     o.Hosts,
			Logger:    o.Logger.Named("appconnect"),
			PublicURL: o.PublicURL,
		},
	}, nil
}

// Surfaces returns the engine's route sets.
func (e *Engine) Surfaces() []server.Surface {
	return []server.Surface{e.AppConnect, e.Connect}
}

// Run runs the background workers (jobs) until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	return e.Jobs.Run(ctx)
}
