// Package clio is connectd's connector for Clio Manage (API v4).
//
// Auth: OAuth 2.0 authorization code. Clio runs four separate regions (US
// app.clio.com, EU eu.app.clio.com, CA ca.app.clio.com, AU au.app.clio.com):
// a token is valid only in its region, OAuth and API share the region's host,
// and developer applications (client ids) are registered per region. The
// user's hostname picks the region, and with it the authorize, token and API
// host; any other hostname is refused. The client authenticates with
// client_id/client_secret in the form body, as Clio's docs show. No scope
// parameter, no PKCE (not documented; the manifest opts out). Logout
// deauthorizes the grant (POST /oauth/deauthorize).
//
// Documentation followed:
//   - https://docs.developers.clio.com/api-docs/authorization (authorize,
//     token, refresh, deauthorize)
//   - https://docs.developers.clio.com/api-reference/ (regions, Users
//     who_am_i, fields)
//   - https://docs.developers.clio.com/api-docs/rate-limits (429)
//
// Settings (read through connector.Config.Getenv). Each region has its own
// OAuth app; configure those you serve (at least one, each with both id and
// secret):
//   - CLIO_CLIENT_ID, CLIO_CLIENT_SECRET: US (app.clio.com)
//   - CLIO_EU_CLIENT_ID, CLIO_EU_CLIENT_SECRET: EU
//   - CLIO_CA_CLIENT_ID, CLIO_CA_CLIENT_SECRET: CA
//   - CLIO_AU_CLIENT_ID, CLIO_AU_CLIENT_SECRET: AU
//   - CLIO_BASE_URL, CLIO_EU_BASE_URL, CLIO_CA_BASE_URL, CLIO_AU_BASE_URL:
//     replace a region's https://<host> (tests and staging only; the
//     hostname users select stays the region's real host).
package clio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/oauth2"

	"github.com/connectd/connectd/core/connector"
)

const maxResponseBytes = 1 << 20

// Capabilities, checked at compile time.
var (
	_ connector.OAuthConnector = (*Connector)(nil)
	_ connector.Unauthorizer   = (*Connector)(nil)
	_ connector.AuthValidator  = (*Connector)(nil)
)

// region is one Clio data region.
type region struct {
	Code string // "US", "EU", "CA", "AU"
	Host string // the region's host, e.g. "eu.app.clio.com"
	// envPrefix prefixes the region's settings ("CLIO" or "CLIO_EU").
	envPrefix string
}

// regions returns Clio's data regions, US (the default) first.
func regions() []region {
	return []region{
		{Code: "US", Host: "app.clio.com", envPrefix: "CLIO"},
		{Code: "EU", Host: "eu.app.clio.com", envPrefix: "CLIO_EU"},
		{Code: "CA", Host: "ca.app.clio.com", envPrefix: "CLIO_CA"},
		{Code: "AU", Host: "au.app.clio.com", envPrefix: "CLIO_AU"},
	}
}

// regionApp is one region's OAuth app and base URL.
type regionApp struct {
	region       region
	clientID     string
	clientSecret connector.Secret
	// Endpoints, full URLs: OAuth and API share the region's host, but
	// they are separate fields so a test can point the OAuth ones at a
	// conformance kit's provider and the API at a fake CRM.
	authURL, tokenURL, deauthURL string
	apiBase                      string // no trailing slash
}

// Connector talks to Clio. Build it with New.
type Connector struct {
	apps   map[string]*regionApp // by region host; only configured regions
	logger *slog.Logger
}

// New builds the Clio connector; it matches connector.Factory. Without any
// region's OAuth app, or with half of one, it is unavailable.
func New(cfg connector.Config) (connector.Connector, error) {
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	c := &Connector{apps: map[string]*regionApp{}, logger: cfg.Logger}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	for _, r := range regions() {
		idVar, secretVar, baseVar := r.envPrefix+"_CLIENT_ID", r.envPrefix+"_CLIENT_SECRET", r.envPrefix+"_BASE_URL"
		id := strings.TrimSpace(getenv(idVar))
		secret := strings.TrimSpace(getenv(secretVar))
		switch {
		case id == "" && secret == "":
			continue
		case id == "":
			return nil, fmt.Errorf("%w: %s is set but %s is not", connector.ErrUnavailable, secretVar, idVar)
		case secret == "":
			return nil, fmt.Errorf("%w: %s is not set", connector.ErrUnavailable, secretVar)
		}
		base := "https://" + r.Host
		if v := strings.TrimSpace(getenv(baseVar)); v != "" {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
				return nil, fmt.Errorf("%w: %s must be an absolute http(s) URL", connector.ErrUnavailable, baseVar)
			}
			base = u.Scheme + "://" + u.Host
		}
		c.apps[r.Host] = &regionApp{
			region: r, clientID: id, clientSecret: connector.Secret(secret),
			authURL: base + "/oauth/authorize", tokenURL: base + "/oauth/token", deauthURL: base + "/oauth/deauthorize",
			apiBase: base,
		}
	}
	if len(c.apps) == 0 {
		return nil, fmt.Errorf("%w: CLIO_CLIENT_ID and CLIO_CLIENT_SECRET are not set (nor a regional CLIO_EU_/CLIO_CA_/CLIO_AU_ pair)", connector.ErrUnavailable)
	}
	return c, nil
}

// RegionHost maps what a user or the client sends as hostname ("" for the
// default US region, "eu.app.clio.com", "https://eu.app.clio.com/") to the
// region's host. Anything else is refused: the hostname picks where tokens
// and client secrets are sent.
func RegionHost(hostname string) (string, error) {
	h := strings.ToLower(strings.TrimSpace(hostname))
	if h == "" {
		return regions()[0].Host, nil
	}
	if strings.Contains(h, "://") {
		u, err := url.Parse(h)
		if err != nil || u.Scheme != "https" || u.User != nil || u.Port() != "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return "", fmt.Errorf("clio: %q is not a Clio region address", hostname)
		}
		h = u.Host
	}
	for _, r := range regions() {
		if h == r.Host {
			return r.Host, nil
		}
	}
	return "", fmt.Errorf("clio: %q is not a Clio region (app.clio.com, eu.app.clio.com, ca.app.clio.com, au.app.clio.com)", hostname)
}

// app returns the configured app of the hostname's region.
func (c *Connector) app(hostname string) (*regionApp, error) {
	host, err := RegionHost(hostname)
	if err != nil {
		return nil, err
	}
	a, ok := c.apps[host]
	if !ok {
		return nil, fmt.Errorf("clio: region %s is not configured on this server", host)
	}
	return a, nil
}

// AuthType implements connector.Connector.
func (c *Connector) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthOAuth, nil
}

// OAuthInfo implements connector.OAuthConnector: the region of
// req.Hostname picks the OAuth app and the authorize/token host. An unknown
// or unconfigured region aborts the login with a message.
func (c *Connector) OAuthInfo(_ context.Context, req connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	a, err := c.app(req.Hostname)
	if err != nil {
		return connector.OAuthInfo{FailMessage: &connector.ReturnMessage{
			Message:     strings.TrimPrefix(err.Error(), "clio: ") + ".",
			MessageType: connector.MessageWarning,
			TTL:         5000,
		}}, nil
	}
	return connector.OAuthInfo{
		ClientID:     a.clientID,
		ClientSecret: a.clientSecret,
		TokenURL:     a.tokenURL,
		AuthURL:      a.authURL,
		Hostname:     a.region.Host,
		// Clio's docs send client_id and client_secret in the form body.
		AuthStyle: oauth2.AuthStyleInParams,
	}, nil
}

// whoAmI is Clio's users/who_am_i answer with fields=id,name,time_zone.
type whoAmI struct {
	Data *struct {
		ID       json.Number `json:"id"`
		Name     string      `json:"name"`
		TimeZone string      `json:"time_zone"`
	} `json:"data"`
}

// statusErr is the error for an answer that is neither a success nor a
// refusal of the login.
func statusErr(what string, r connector.Response) error {
	if r.Status == http.StatusTooManyRequests {
		return fmt.Errorf("clio: %s rate limited (429, Retry-After %q)", what, r.Header.Get("Retry-After"))
	}
	return fmt.Errorf("clio: %s answered HTTP %d", what, r.Status)
}

// getWhoAmI calls GET /api/v4/users/who_am_i.json?fields=id,name,time_zone
// (without fields only id and etag come back).
func (c *Connector) getWhoAmI(ctx context.Context, client *http.Client, base, authHeader string) (connector.Response, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v4/users/who_am_i.json?fields=id,name,time_zone", nil)
	if err != nil {
		return connector.Response{}, fmt.Errorf("clio: who_am_i request: %w", err)
	}
	resp, err := connector.Call(client, hreq, authHeader, maxResponseBytes)
	if err != nil {
		return connector.Response{}, fmt.Errorf("clio: who_am_i: %w", err)
	}
	return resp, nil
}

// UserInfo implements connector.Connector.
func (c *Connector) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	a, err := c.app(req.Hostname)
	if err != nil {
		return connector.UserInfoResult{
			ReturnMessage: &connector.ReturnMessage{
				Message:     strings.TrimPrefix(err.Error(), "clio: ") + ".",
				MessageType: connector.MessageWarning,
				TTL:         5000,
			},
		}, nil
	}
	r, err := c.getWhoAmI(ctx, req.HTTPClient, a.apiBase, req.AuthHeader)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	switch r.Status {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return connector.UserInfoResult{
			ReturnMessage: &connector.ReturnMessage{
				Message:     "Clio did not accept the login. Please connect again.",
				MessageType: connector.MessageWarning,
				TTL:         5000,
			},
		}, nil
	default:
		return connector.UserInfoResult{}, statusErr("who_am_i", r)
	}
	var me whoAmI
	if err := json.Unmarshal(r.Body, &me); err != nil {
		return connector.UserInfoResult{}, fmt.Errorf("clio: who_am_i answered malformed JSON: %w", err)
	}
	if me.Data == nil || me.Data.ID.String() == "" {
		return connector.UserInfoResult{}, errors.New("clio: who_am_i answered without data.id")
	}
	return connector.UserInfoResult{
		Successful: true,
		User: connector.PlatformUser{
			ID:   me.Data.ID.String(),
			Name: me.Data.Name,
			// Clio's time_zone as given (a Rails zone name such as
			// "Eastern Time (US & Canada)" or an IANA name).
			TimezoneName:       me.Data.TimeZone,
			AdditionalInfo:     map[string]any{"region": a.region.Code},
			OverridingHostname: a.region.Host,
		},
		ReturnMessage: &connector.ReturnMessage{
			Message:     "Connected to Clio.",
			MessageType: connector.MessageSuccess,
			TTL:         3000,
		},
	}, nil
}

// ValidateAuth implements connector.AuthValidator with who_am_i in the
// user's region; the engine's client injects (and refreshes) the token.
func (c *Connector) ValidateAuth(ctx context.Context, req connector.UserRequest) (connector.ValidationResult, error) {
	a, err := c.app(req.User.Hostname)
	if err != nil {
		return connector.ValidationResult{}, err
	}
	r, err := c.getWhoAmI(ctx, req.HTTPClient, a.apiBase, "")
	if err != nil {
		return connector.ValidationResult{}, err
	}
	switch r.Status {
	case http.StatusOK:
		return connector.ValidationResult{Successful: true, Status: http.StatusOK}, nil
	case http.StatusUnauthorized:
		return connector.ValidationResult{
			Status: http.StatusUnauthorized,
			ReturnMessage: &connector.ReturnMessage{
				Message:     "Clio session expired. Please connect again.",
				MessageType: connector.MessageWarning,
				TTL:         5000,
			},
		}, nil
	default:
		return connector.ValidationResult{}, statusErr("who_am_i", r)
	}
}

// Unauthorize implements connector.Unauthorizer: POST /oauth/deauthorize in
// the user's region with the access token as bearer (injected by the
// engine's client) and as form value. A 401 means the grant is already
// gone, so retries are harmless.
func (c *Connector) Unauthorize(ctx context.Context, req connector.UserRequest) (connector.Result, error) {
	done := connector.Result{
		Successful: true,
		ReturnMessage: &connector.ReturnMessage{
			Message:     "Logged out of Clio",
			MessageType: connector.MessageSuccess,
			TTL:         1000,
		},
	}
	token := req.User.AccessToken.Reveal()
	if token == "" {
		return done, nil
	}
	a, err := c.app(req.User.Hostname)
	if err != nil {
		return connector.Result{}, err
	}
	form := url.Values{"token": {token}}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, a.deauthURL, strings.NewReader(form.Encode()))
	if err != nil {
		return connector.Result{}, fmt.Errorf("clio: deauthorize request: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := connector.Call(req.HTTPClient, hreq, "", maxResponseBytes)
	if err != nil {
		return connector.Result{}, fmt.Errorf("clio: deauthorize: %w", err)
	}
	switch {
	case resp.Status >= 200 && resp.Status < 300:
		return done, nil
	case resp.Status == http.StatusUnauthorized:
		c.logger.Debug("clio grant already deauthorized")
		return done, nil
	default:
		return connector.Result{}, fmt.Errorf("clio: deauthorize answered HTTP %d", resp.Status)
	}
}
