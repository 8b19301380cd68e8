package managed

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/connectd/connectd/core/auth"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/outbound"
	"github.com/connectd/connectd/core/store"
)

// Apps implements auth.OAuthApps (and core/refresh's AppResolver): the
// managed app of the caller's account when there is one, else the
// connector's own.
type Apps struct{ s *Service }

// Apps returns the engine's OAuth app resolver.
func (s *Service) Apps() *Apps { return &Apps{s: s} }

var (
	_ auth.OAuthApps = (*Apps)(nil)
	_ AppResolver    = (*Apps)(nil)
)

func appInfo(a *store.ManagedOAuthApp) connector.OAuthInfo {
	return connector.OAuthInfo{
		ClientID:     a.ClientID,
		ClientSecret: connector.Secret(a.ClientSecret),
		TokenURL:     a.TokenURL,
		AuthURL:      a.AuthURL,
		RedirectURI:  a.RedirectURI,
		Scopes:       a.Scopes,
		Hostname:     a.Hostname,
	}
}

func goneApp(cause error) error {
	return failure.New(failure.Misconfigured, "The OAuth app this login used no longer exists. Please connect again.", cause)
}

// ForLogin implements auth.OAuthApps. A flow started with a verified host
// identity uses its account's pending app (an admin testing a submission;
// a successful callback promotes it) or else its active app; a flow
// without one always uses the connector's app.
func (a *Apps) ForLogin(ctx context.Context, platform string, host *store.HostIdentity, req connector.OAuthInfoRequest) (connector.OAuthInfo, string, error) {
	if host == nil || host.Kind == "" || host.AccountID == "" {
		return a.s.o.Fallback.ForLogin(ctx, platform, nil, req)
	}
	pending, active, err := a.s.o.Store.CurrentOAuthApps(ctx, host.Kind, host.AccountID, platform)
	if err != nil {
		return connector.OAuthInfo{}, "", storeFailure(err)
	}
	switch {
	case pending != nil:
		return appInfo(pending), pending.ID, nil
	case active != nil:
		return appInfo(active), active.ID, nil
	}
	return a.s.o.Fallback.ForLogin(ctx, platform, host, req)
}

// ByRef implements auth.OAuthApps: the app a flow or login refers to, in
// any state (a retired app still refreshes the logins it issued). An app
// of another platform or account is treated as missing.
func (a *Apps) ByRef(ctx context.Context, platform, ref string, req connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	if ref == "" {
		return a.s.o.Fallback.ByRef(ctx, platform, "", req)
	}
	app, err := a.s.o.Store.GetManagedOAuthApp(ctx, ref)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return connector.OAuthInfo{}, goneApp(err)
		}
		return connector.OAuthInfo{}, storeFailure(err)
	}
	if app.Platform != platform || (req.HostAccountID != "" && req.HostAccountID != app.AccountID) {
		return connector.OAuthInfo{}, goneApp(fmt.Errorf("managed: app %s belongs to another platform or account", ref))
	}
	return appInfo(app), nil
}

// LoginSucceeded implements auth.OAuthApps: a successful callback of a
// flow that used a PENDING app, started with an identity of the app's own
// account, promotes it in place to the account's active app.
func (a *Apps) LoginSucceeded(ctx context.Context, platform, ref string, host store.HostIdentity) error {
	if ref == "" {
		return nil
	}
	app, err := a.s.o.Store.GetManagedOAuthApp(ctx, ref)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil // deleted meanwhile: nothing to promote
		}
		return storeFailure(err)
	}
	if app.State != store.OAuthAppPending {
		return nil
	}
	if app.Platform != platform || app.HostKind != host.Kind || app.AccountID != host.AccountID {
		return failure.New(failure.Forbidden, "This login cannot activate the OAuth app.", fmt.Errorf("managed: flow of %s/%s used app %s of another account", host.Kind, host.AccountID, ref))
	}
	if err := a.s.o.Store.PromoteOAuthApp(ctx, ref, host.UserID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil // promoted by a concurrent login, or expired
		}
		return storeFailure(err)
	}
	if err := a.s.o.Store.AppendAudit(ctx, &store.AuditEvent{Actor: host, Action: ActionPromoted, Platform: platform, Target: "oauth_app"}); err != nil {
		a.s.o.Logger.Warn("recording the promotion of a managed OAuth app failed", "platform", platform, "error", err)
	}
	return nil
}

// AppFor implements core/refresh's AppResolver: the app that issued u's
// tokens, so a refresh uses the same client and token URL.
func (a *Apps) AppFor(ctx context.Context, u *store.User) (connector.OAuthInfo, error) {
	if u.OAuthAppRef == "" {
		if a.s.o.ConnectorApps != nil {
			return a.s.o.ConnectorApps.AppFor(ctx, u)
		}
		return auth.ConnectorOAuthInfo(ctx, a.s.o.Registry, u.Platform, connector.OAuthInfoRequest{Hostname: u.Hostname, HostAccountID: u.Host.AccountID})
	}
	app, err := a.s.o.Store.GetManagedOAuthApp(ctx, u.OAuthAppRef)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return connector.OAuthInfo{}, goneApp(err)
		}
		return connector.OAuthInfo{}, storeFailure(err)
	}
	if app.Platform != u.Platform || app.HostKind != u.Host.Kind || app.AccountID != u.Host.AccountID {
		return connector.OAuthInfo{}, goneApp(fmt.Errorf("managed: user %s refers to app %s of another account", u.ID, u.OAuthAppRef))
	}
	return appInfo(app), nil
}

// AppInput is an admin's OAuth app submission (App Connect's
// /admin/managedOAuth/cache values).
type AppInput struct {
	ClientID     string
	ClientSecret string
	TokenURL     string // accessTokenUri
	AuthURL      string // authorizationUri
	RedirectURI  string
	Scopes       []string
	Hostname     string
}

// AppView is a managed app as callers see it: never the secret.
type AppView struct {
	ClientID         string    `json:"clientId"`
	ClientSecret     ValueView `json:"clientSecret"`
	AccessTokenURI   string    `json:"accessTokenUri"`
	AuthorizationURI string    `json:"authorizationUri"`
	RedirectURI      string    `json:"redirectUri"`
	Scopes           string    `json:"scopes"`
	Hostname         string    `json:"hostname"`
	ExpiresAt        string    `json:"expiresAt,omitempty"`
}

func appView(a *store.ManagedOAuthApp) *AppView {
	if a == nil {
		return nil
	}
	v := &AppView{
		ClientID: a.ClientID, ClientSecret: ValueView{HasValue: a.ClientSecret != ""},
		AccessTokenURI: a.TokenURL, AuthorizationURI: a.AuthURL, RedirectURI: a.RedirectURI,
		Scopes: strings.Join(a.Scopes, " "), Hostname: a.Hostname,
	}
	if a.ExpiresAt != nil {
		v.ExpiresAt = a.ExpiresAt.UTC().Format("2006-01-02T15:04:05Z")
	}
	return v
}

// OAuthState is GET /oauthManagedAuthState's answer.
type OAuthState struct {
	IsAdmin         bool     `json:"isAdmin"`
	HasAccountOAuth bool     `json:"hasAccountOAuth"`
	HasPendingOAuth bool     `json:"hasPendingOAuth"`
	OAuthValues     *AppView `json:"oauthValues,omitempty"`
	PendingValues   *AppView `json:"pendingValues,omitempty"`
}

// OAuthState reports the managed OAuth apps of host's account; the
// (non-secret) values only to admins. Secrets are never returned.
func (s *Service) OAuthState(ctx context.Context, platform string, host store.HostIdentity, admin bool) (*OAuthState, error) {
	if _, err := s.platform(platform); err != nil {
		return nil, err
	}
	pending, active, err := s.o.Store.CurrentOAuthApps(ctx, host.Kind, host.AccountID, platform)
	if err != nil {
		return nil, storeFailure(err)
	}
	st := &OAuthState{IsAdmin: admin, HasAccountOAuth: active != nil, HasPendingOAuth: pending != nil}
	if admin {
		st.OAuthValues, st.PendingValues = appView(active), appView(pending)
	}
	return st, nil
}

// PutPendingApp validates and stores an admin's OAuth app as the
// account's PENDING app for platform (replacing an earlier pending one).
// Token and authorization URLs must be https, match the connector's host
// patterns and not name private addresses; the hostname must match the
// host patterns. An empty client secret keeps the secret of the current
// pending or active app with the same client id.
func (s *Service) PutPendingApp(ctx context.Context, a Actor, platform string, in AppInput) (*AppView, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	p, err := s.platform(platform)
	if err != nil {
		return nil, err
	}
	if p.AuthType() != connector.AuthOAuth {
		return nil, failure.Newf(failure.InvalidRequest, "%s does not use OAuth.", platform)
	}
	if in.ClientID == "" {
		return nil, failure.Newf(failure.InvalidRequest, "clientId is required.")
	}
	if err := checkText("clientId", in.ClientID, 512); err != nil {
		return nil, err
	}
	if err := checkText("clientSecret", in.ClientSecret, MaxValueLen); err != nil {
		return nil, err
	}
	if in.TokenURL == "" {
		return nil, failure.Newf(failure.InvalidRequest, "accessTokenUri is required.")
	}
	tu, err := outbound.CheckURL(in.TokenURL, p.Hosts(), s.o.AllowPrivate)
	if err != nil {
		return nil, failure.New(failure.InvalidRequest, "accessTokenUri: "+failure.MessageOf(err), err)
	}
	app := &store.ManagedOAuthApp{
		HostKind: a.Host.Kind, AccountID: a.Host.AccountID, Platform: platform,
		ClientID: in.ClientID, ClientSecret: in.ClientSecret, TokenURL: tu.String(), SetBy: a.Host.UserID,
	}
	if in.AuthURL != "" {
		au, err := outbound.CheckURL(in.AuthURL, p.Hosts(), s.o.AllowPrivate)
		if err != nil {
			return nil, failure.New(failure.InvalidRequest, "authorizationUri: "+failure.MessageOf(err), err)
		}
		app.AuthURL = au.String()
	}
	if in.RedirectURI != "" {
		if err := checkRedirectURI(in.RedirectURI, s.o.AllowPrivate); err != nil {
			return nil, err
		}
		app.RedirectURI = in.RedirectURI
	}
	if h := strings.ToLower(strings.TrimSpace(in.Hostname)); h != "" {
		if err := checkText("hostname", h, 253); err != nil {
			return nil, err
		}
		if strings.ContainsAny(h, "/@?#:\\ ") || !p.HostAllowed(h) {
			return nil, failure.Newf(failure.InvalidRequest, "hostname %q is not a %s host.", truncate(h, 80), platform)
		}
		app.Hostname = h
	}
	if len(in.Scopes) > MaxScopes {
		return nil, failure.Newf(failure.InvalidRequest, "Too many scopes.")
	}
	for _, sc := range in.Scopes {
		if sc == "" {
			continue
		}
		if err := checkText("scopes", sc, 256); err != nil {
			return nil, err
		}
		app.Scopes = append(app.Scopes, sc)
	}
	fields := []string{"clientId", "accessTokenUri"}
	if app.ClientSecret == "" {
		pending, active, err := s.o.Store.CurrentOAuthApps(ctx, a.Host.Kind, a.Host.AccountID, platform)
		if err != nil {
			return nil, storeFailure(err)
		}
		for _, cur := range []*store.ManagedOAuthApp{pending, active} {
			if cur != nil && cur.ClientID == app.ClientID && cur.ClientSecret != "" {
				app.ClientSecret = cur.ClientSecret
				break
			}
		}
		if app.ClientSecret == "" {
			return nil, failure.Newf(failure.InvalidRequest, "clientSecret is required.")
		}
	} else {
		fields = append(fields, "clientSecret")
	}
	for name, v := range map[string]string{"authorizationUri": app.AuthURL, "redirectUri": app.RedirectURI, "hostname": app.Hostname} {
		if v != "" {
			fields = append(fields, name)
		}
	}
	if len(app.Scopes) > 0 {
		fields = append(fields, "scopes")
	}
	exp := s.o.Clock.Now().Add(s.o.PendingTTL)
	app.ExpiresAt = &exp
	if err := s.o.Store.PutPendingOAuthApp(ctx, app, s.audit(a, ActionPendingSet, platform, "oauth_app", slices.Sorted(slices.Values(fields)))); err != nil {
		return nil, storeFailure(err)
	}
	return appView(app), nil
}

// DeletePendingApp deletes the account's pending app for platform.
func (s *Service) DeletePendingApp(ctx context.Context, a Actor, platform string) (int, error) {
	return s.deleteApps(ctx, a, platform, []string{store.OAuthAppPending}, ActionPendingDeleted)
}

// DeleteAccountApp deletes the account's active app for platform (and the
// retired ones it replaced). Logins it issued then need to connect again.
func (s *Service) DeleteAccountApp(ctx context.Context, a Actor, platform string) (int, error) {
	return s.deleteApps(ctx, a, platform, []string{store.OAuthAppActive, store.OAuthAppRetired}, ActionAccountDeleted)
}

func (s *Service) deleteApps(ctx context.Context, a Actor, platform string, states []string, action string) (int, error) {
	if err := a.check(); err != nil {
		return 0, err
	}
	if _, err := s.platform(platform); err != nil {
		return 0, err
	}
	n, err := s.o.Store.DeleteOAuthApps(ctx, a.Host.Kind, a.Host.AccountID, platform, states, s.audit(a, action, platform, "oauth_app", nil))
	if err != nil {
		return 0, storeFailure(err)
	}
	return n, nil
}
