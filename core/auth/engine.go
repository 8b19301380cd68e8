// Package auth owns logins: it starts OAuth flows (state + PKCE bound to the
// platform, redirect URI, host identity and browser), completes them
// (atomic single-use state, code exchange, user info, upsert), runs API-key
// logins with managed-field resolution, and serves the per-user operations
// App Connect's routes need (validation, logout, user info refresh,
// licence). Every surface calls the same Engine; none talks to a connector's
// login directly.
package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/store"
)

// Store is what the engine needs from storage.
type Store interface {
	store.Users
	store.Flows
	store.Sessions
}

// Refresher keeps access tokens fresh and revokes upstream (core/refresh).
type Refresher interface {
	// Fresh returns the record with an access token not due within the
	// platform's margin, refreshing under the lease if needed.
	Fresh(ctx context.Context, userID string) (*store.User, error)
	// HTTPClient injects the user's credential and refreshes it.
	HTTPClient(userID string) *http.Client
	// EnqueueRevoke revokes u's credentials upstream, durably.
	EnqueueRevoke(ctx context.Context, u *store.User) error
}

// OAuthApps decides which OAuth app (client id/secret, endpoints) a login or
// a refresh uses: the connector's own (OAuthInfo) or an app an admin of the
// host account manages.
type OAuthApps interface {
	// ForLogin returns the app for a flow started with the verified host
	// identity host (nil: anonymous - always the connector's own app) and
	// its reference ("" = the connector's app).
	ForLogin(ctx context.Context, platform string, host *store.HostIdentity, req connector.OAuthInfoRequest) (connector.OAuthInfo, string, error)
	// ByRef returns the app a flow or user record refers to.
	ByRef(ctx context.Context, platform, ref string, req connector.OAuthInfoRequest) (connector.OAuthInfo, error)
	// LoginSucceeded is called after a successful callback of a flow that
	// used ref, started by host; a pending managed app is promoted here.
	LoginSucceeded(ctx context.Context, platform, ref string, host store.HostIdentity) error
}

// ManagedFields resolves admin-managed API-key fields (issue: managed
// credentials). The zero behaviour (nil) manages nothing.
type ManagedFields interface {
	// Resolve returns the field values to log in with (submitted values
	// merged with stored managed ones per the manifest) and the consts of
	// required fields still empty.
	Resolve(ctx context.Context, p *manifest.Platform, host *store.HostIdentity, submitted map[string]string) (values map[string]string, missing []string, err error)
	// LoginFailed marks (account, user) so the next state read falls back
	// to the manual form; LoginSucceeded clears it.
	LoginFailed(ctx context.Context, platform string, host store.HostIdentity) error
	LoginSucceeded(ctx context.Context, platform string, host store.HostIdentity) error
}

// Options configures an Engine.
type Options struct {
	Store     Store
	Registry  *registry.Registry
	Refresher Refresher
	// Apps defaults to the connectors' own apps (ConnectorApps).
	Apps OAuthApps
	// Managed may be nil.
	Managed ManagedFields
	// HTTP is the outbound client (SSRF guard, timeouts, size cap) handed
	// to connectors during logins; TokenHTTP the same without redirects.
	HTTP      *http.Client
	TokenHTTP *http.Client
	// PublicURL is connectd's external base URL: the connect flow's
	// redirect URI is PublicURL + "/oauth/callback".
	PublicURL string
	// RedirectURIs are extra allowed client redirect URIs
	// (CONNECTD_REDIRECT_URIS).
	RedirectURIs []string
	AllowPrivate bool
	Clock        clock.Clock
	Logger       hclog.Logger
	// FlowTTL bounds a login in progress (<= 10 min).
	FlowTTL time.Duration
}

// Engine runs logins.
type Engine struct {
	o Options
}

// MaxFlowTTL is the longest a state lives (RFC 9700 wants it short).
const MaxFlowTTL = 10 * time.Minute

// New returns an Engine.
func New(o Options) (*Engine, error) {
	if o.Store == nil || o.Registry == nil || o.Refresher == nil {
		return nil, errors.New("auth: Store, Registry and Refresher are required")
	}
	if o.HTTP == nil || o.TokenHTTP == nil {
		return nil, errors.New("auth: HTTP and TokenHTTP clients are required")
	}
	if o.Apps == nil {
		o.Apps = ConnectorApps{Registry: o.Registry}
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.FlowTTL <= 0 || o.FlowTTL > MaxFlowTTL {
		o.FlowTTL = MaxFlowTTL
	}
	o.PublicURL = strings.TrimRight(o.PublicURL, "/")
	return &Engine{o: o}, nil
}

// Registry returns the engine's registry.
func (e *Engine) Registry() *registry.Registry { return e.o.Registry }

// ConnectCallbackURL is the one redirect URI operators register at every
// CRM for browser connect flows.
func (e *Engine) ConnectCallbackURL() string { return e.o.PublicURL + "/oauth/callback" }

// entry returns an available connector or a failure.
func (e *Engine) entry(platform string) (registry.Entry, error) {
	if platform == "" {
		return registry.Entry{}, failure.Newf(failure.InvalidRequest, "platform is required.")
	}
	return e.o.Registry.Get(platform)
}

// ConnectorApps is the default OAuthApps: every login and refresh uses the
// connector's own app (its OAuthInfo).
type ConnectorApps struct {
	Registry *registry.Registry
}

// ForLogin implements OAuthApps.
func (a ConnectorApps) ForLogin(ctx context.Context, platform string, _ *store.HostIdentity, req connector.OAuthInfoRequest) (connector.OAuthInfo, string, error) {
	info, err := a.ByRef(ctx, platform, "", req)
	return info, "", err
}

// ByRef implements OAuthApps; only the connector's app ("") exists.
func (a ConnectorApps) ByRef(ctx context.Context, platform, ref string, req connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	if ref != "" {
		return connector.OAuthInfo{}, failure.New(failure.Misconfigured, "The OAuth app this login used no longer exists.", fmt.Errorf("auth: unknown oauth app ref %q", ref))
	}
	return ConnectorOAuthInfo(ctx, a.Registry, platform, req)
}

// LoginSucceeded implements OAuthApps (nothing to promote).
func (ConnectorApps) LoginSucceeded(context.Context, string, string, store.HostIdentity) error {
	return nil
}

// ConnectorOAuthInfo asks platform's connector for its OAuth app.
func ConnectorOAuthInfo(ctx context.Context, reg *registry.Registry, platform string, req connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	ent, err := reg.Get(platform)
	if err != nil {
		return connector.OAuthInfo{}, err
	}
	oc, ok := ent.Connector.(connector.OAuthConnector)
	if !ok {
		return connector.OAuthInfo{}, failure.Newf(failure.InvalidRequest, "%s does not use OAuth.", platform)
	}
	info, err := oc.OAuthInfo(ctx, req)
	if err != nil {
		return connector.OAuthInfo{}, failure.New(failure.Misconfigured, "The connector's OAuth settings could not be read.", err)
	}
	return info, nil
}

func revealSecrets(m map[string]connector.Secret) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v.Reveal()
	}
	return out
}
