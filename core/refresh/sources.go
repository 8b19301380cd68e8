package refresh

import (
	"context"
	"fmt"
	"time"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/store"
)

// ConnectorSource finds the connector of a platform and how long before
// expiry its access tokens are refreshed (the manifest's
// connectd.refresh.marginSeconds). Errors should be *failure.Error
// (NotFound, ConnectorUnavailable).
type ConnectorSource interface {
	Connector(platform string) (connector.Connector, time.Duration, error)
}

// ConnectorSourceFunc adapts a function to ConnectorSource.
type ConnectorSourceFunc func(platform string) (connector.Connector, time.Duration, error)

// Connector implements ConnectorSource.
func (f ConnectorSourceFunc) Connector(platform string) (connector.Connector, time.Duration, error) {
	return f(platform)
}

// FromRegistry adapts the server's registry: the entry's connector and its
// manifest platform's RefreshMargin.
func FromRegistry(r *registry.Registry) ConnectorSource {
	return ConnectorSourceFunc(func(platform string) (connector.Connector, time.Duration, error) {
		e, err := r.Get(platform)
		if err != nil {
			return nil, 0, err
		}
		return e.Connector, e.Platform.RefreshMargin(), nil
	})
}

// AppResolver says which OAuth app issued a user's tokens: refresh and
// revocation must use that same app (client id, secret, token URL), or the
// provider refuses the refresh token.
type AppResolver interface {
	AppFor(ctx context.Context, u *store.User) (connector.OAuthInfo, error)
}

// ConnectorApps resolves users whose OAuthAppRef is "" to their
// connector's own OAuthInfo. Users of managed OAuth apps get a
// failure.Misconfigured error: managed apps are resolved by the managed
// credentials service, which wraps this resolver.
type ConnectorApps struct {
	Connectors ConnectorSource
}

// AppFor implements AppResolver.
func (a ConnectorApps) AppFor(ctx context.Context, u *store.User) (connector.OAuthInfo, error) {
	if u.OAuthAppRef != "" {
		return connector.OAuthInfo{}, failure.New(failure.Misconfigured,
			"The OAuth app that issued this login is not available.",
			fmt.Errorf("refresh: managed OAuth app %q cannot be resolved by ConnectorApps", u.OAuthAppRef))
	}
	c, _, err := a.Connectors.Connector(u.Platform)
	if err != nil {
		return connector.OAuthInfo{}, err
	}
	oc, ok := c.(connector.OAuthConnector)
	if !ok {
		return connector.OAuthInfo{}, failure.New(failure.Misconfigured,
			"This connector does not use OAuth.", fmt.Errorf("refresh: connector %s is not an OAuthConnector", u.Platform))
	}
	info, err := oc.OAuthInfo(ctx, connector.OAuthInfoRequest{Hostname: u.Hostname, HostAccountID: u.Host.AccountID})
	if err != nil {
		return connector.OAuthInfo{}, failure.New(failure.Misconfigured,
			"The connector's OAuth settings could not be read.", fmt.Errorf("refresh: %s OAuthInfo: %w", u.Platform, err))
	}
	if info.TokenURL == "" || info.ClientID == "" {
		return connector.OAuthInfo{}, failure.New(failure.Misconfigured,
			"The connector's OAuth settings are incomplete.", fmt.Errorf("refresh: %s OAuthInfo lacks a client id or token URL", u.Platform))
	}
	return info, nil
}
