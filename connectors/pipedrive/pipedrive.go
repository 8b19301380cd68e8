// Package pipedrive is connectd's connector for Pipedrive.
//
// Auth: OAuth 2.0 authorization code at oauth.pipedrive.com, the client
// authenticating with HTTP Basic and form bodies only; PKCE is not
// documented, so the manifest opts out. The token response's api_domain
// (https://<company>.pipedrive.com) is where the user's API lives: it
// becomes the user's hostname, and only *.pipedrive.com hosts are accepted.
// Logout revokes the refresh token, then the access token (RFC 7009).
//
// Documentation followed:
//   - https://pipedrive.readme.io/docs/marketplace-oauth-authorization
//     (authorize, token exchange, refresh, response fields)
//   - https://developers.pipedrive.com/docs/api/v1/Oauth (the same, as API reference)
//   - https://pipedrive.readme.io/docs/app-uninstallation (token revocation)
//   - https://developers.pipedrive.com/docs/api/v1/Users#getCurrentUser (users/me)
//   - https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting (429)
//
// Settings (read through connector.Config.Getenv):
//   - PIPEDRIVE_CLIENT_ID, PIPEDRIVE_CLIENT_SECRET: the OAuth app (required).
//   - PIPEDRIVE_OAUTH_BASE_URL: replaces https://oauth.pipedrive.com (tests
//     and staging only).
//   - PIPEDRIVE_TEST_API_ORIGIN: one exact origin (scheme://host[:port])
//     accepted as api_domain besides https://*.pipedrive.com (tests and
//     staging only).
package pipedrive

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

// Environment variables the connector reads.
const (
	EnvClientID       = "PIPEDRIVE_CLIENT_ID"
	EnvClientSecret   = "PIPEDRIVE_CLIENT_SECRET"
	EnvOAuthBaseURL   = "PIPEDRIVE_OAUTH_BASE_URL"
	EnvTestAPIOrigin  = "PIPEDRIVE_TEST_API_ORIGIN"
	defaultOAuthBase  = "https://oauth.pipedrive.com"
	apiDomainSuffix   = ".pipedrive.com"
	maxResponseBytes  = 1 << 20
	platformName      = "pipedrive"
	displayName       = "Pipedrive"
	apiDomainExtraKey = "api_domain"
)

// Capabilities, checked at compile time.
var (
	_ connector.OAuthConnector = (*Connector)(nil)
	_ connector.Unauthorizer   = (*Connector)(nil)
	_ connector.AuthValidator  = (*Connector)(nil)
)

// Connector talks to Pipedrive. Build it with New.
type Connector struct {
	clientID     string
	clientSecret connector.Secret
	// The OAuth endpoints, full URLs (fields rather than one base so a
	// test can point each at a conformance kit's provider).
	authURL, tokenURL, revokeURL string
	testOrigin                   *url.URL
	logger                       *slog.Logger
}

// New builds the Pipedrive connector; it matches connector.Factory. A
// missing client id or secret makes it unavailable (connector.ErrUnavailable).
func New(cfg connector.Config) (connector.Connector, error) {
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	c := &Connector{
		clientID:     strings.TrimSpace(getenv(EnvClientID)),
		clientSecret: connector.Secret(strings.TrimSpace(getenv(EnvClientSecret))),
		logger:       cfg.Logger,
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if c.clientID == "" {
		return nil, fmt.Errorf("%w: %s is not set", connector.ErrUnavailable, EnvClientID)
	}
	if c.clientSecret == "" {
		return nil, fmt.Errorf("%w: %s is not set", connector.ErrUnavailable, EnvClientSecret)
	}
	oauthBase := defaultOAuthBase
	if v := strings.TrimSpace(getenv(EnvOAuthBaseURL)); v != "" {
		u, err := parseOrigin(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", connector.ErrUnavailable, EnvOAuthBaseURL, err)
		}
		oauthBase = strings.TrimSuffix(u.String(), "/")
	}
	c.authURL, c.tokenURL, c.revokeURL = oauthBase+"/oauth/authorize", oauthBase+"/oauth/token", oauthBase+"/oauth/revoke"
	if v := strings.TrimSpace(getenv(EnvTestAPIOrigin)); v != "" {
		u, err := parseOrigin(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", connector.ErrUnavailable, EnvTestAPIOrigin, err)
		}
		c.testOrigin = u
	}
	return c, nil
}

// parseOrigin parses an operator-set base URL (scheme and host, optional path).
func parseOrigin(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("not a URL")
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return nil, errors.New("want an absolute http(s) URL without credentials")
	}
	u.RawQuery, u.Fragment = "", ""
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

// AuthType implements connector.Connector.
func (c *Connector) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthOAuth, nil
}

// OAuthInfo implements connector.OAuthConnector. Pipedrive takes no scope
// parameter (scopes are set on the app) and authenticates the client with
// HTTP Basic.
func (c *Connector) OAuthInfo(_ context.Context, req connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	return connector.OAuthInfo{
		ClientID:     c.clientID,
		ClientSecret: c.clientSecret,
		TokenURL:     c.tokenURL,
		AuthURL:      c.authURL,
		Hostname:     req.Hostname,
		AuthStyle:    oauth2.AuthStyleInHeader,
	}, nil
}

// apiBase checks an api_domain (or a stored hostname turned back into a
// URL) and returns the API origin to call. Only https://*.pipedrive.com (or
// the configured test origin) passes: the value comes from the token
// response, and a token must never be sent anywhere else.
func (c *Connector) apiBase(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", errors.New("pipedrive: the token response has no api_domain")
	}
	if !strings.Contains(raw, "://") {
		// A stored hostname: the test origin's host keeps its own scheme.
		if c.testOrigin != nil && strings.EqualFold(raw, c.testOrigin.Host) {
			return c.testOrigin.Scheme + "://" + c.testOrigin.Host, nil
		}
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("pipedrive: api_domain %q is not a URL", raw)
	}
	if c.testOrigin != nil && u.Scheme == c.testOrigin.Scheme && strings.EqualFold(u.Host, c.testOrigin.Host) && u.User == nil {
		return c.testOrigin.Scheme + "://" + c.testOrigin.Host, nil
	}
	host := strings.ToLower(u.Hostname())
	company := strings.TrimSuffix(host, apiDomainSuffix)
	if u.Scheme != "https" || u.User != nil || u.Port() != "" ||
		company == host || company == "" || strings.HasPrefix(company, ".") || strings.HasSuffix(company, ".") {
		return "", fmt.Errorf("pipedrive: api_domain %q is not an https://*.pipedrive.com address; refusing to send the token there", raw)
	}
	return "https://" + host, nil
}

// hostOf returns the host the engine stores as the user's hostname.
func hostOf(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return ""
	}
	return u.Host
}

// meResponse is Pipedrive's users/me envelope.
type meResponse struct {
	Success bool `json:"success"`
	Data    *struct {
		ID             json.Number `json:"id"`
		Name           string      `json:"name"`
		Email          string      `json:"email"`
		Locale         string      `json:"locale"`
		TimezoneName   string      `json:"timezone_name"`
		TimezoneOffset string      `json:"timezone_offset"`
		CompanyID      json.Number `json:"company_id"`
		CompanyName    string      `json:"company_name"`
		CompanyDomain  string      `json:"company_domain"`
	} `json:"data"`
	Error string `json:"error"`
}

// UserInfo implements connector.Connector: GET {api_domain}/api/v1/users/me.
func (c *Connector) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	var domain string
	if req.Token != nil {
		if v, ok := req.Token.Extra(apiDomainExtraKey).(string); ok {
			domain = v
		}
	}
	base, err := c.apiBase(domain)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	resp, err := c.getMe(ctx, req.HTTPClient, base, req.AuthHeader)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	switch {
	case resp.status == http.StatusUnauthorized || resp.status == http.StatusForbidden:
		return connector.UserInfoResult{
			Successful: false,
			ReturnMessage: &connector.ReturnMessage{
				Message:     "Pipedrive did not accept the login. Please connect again.",
				MessageType: connector.MessageWarning,
				TTL:         5000,
			},
		}, nil
	case resp.status != http.StatusOK:
		return connector.UserInfoResult{}, resp.err()
	}
	me := resp.me
	if !me.Success || me.Data == nil || me.Data.ID.String() == "" {
		return connector.UserInfoResult{}, errors.New("pipedrive: users/me answered without success or data.id")
	}
	info := map[string]any{}
	if s := me.Data.CompanyID.String(); s != "" {
		info["companyId"] = s
	}
	if me.Data.CompanyName != "" {
		info["companyName"] = me.Data.CompanyName
	}
	if me.Data.CompanyDomain != "" {
		info["companyDomain"] = me.Data.CompanyDomain
	}
	return connector.UserInfoResult{
		Successful: true,
		User: connector.PlatformUser{
			ID:                 me.Data.ID.String(),
			Name:               me.Data.Name,
			TimezoneName:       me.Data.TimezoneName,
			TimezoneOffset:     me.Data.TimezoneOffset,
			AdditionalInfo:     info,
			OverridingHostname: hostOf(base),
		},
		ReturnMessage: &connector.ReturnMessage{
			Message:     "Connected to Pipedrive.",
			MessageType: connector.MessageSuccess,
			TTL:         3000,
		},
	}, nil
}

// meResult is one users/me exchange.
type meResult struct {
	status int
	header http.Header
	me     meResponse
}

func (r meResult) err() error {
	if r.status == http.StatusTooManyRequests {
		return fmt.Errorf("pipedrive: users/me rate limited (429, x-ratelimit-reset %q)", r.header.Get("x-ratelimit-reset"))
	}
	return fmt.Errorf("pipedrive: users/me answered HTTP %d", r.status)
}

// getMe calls users/me. authHeader is set when non-empty (logins); per-user
// calls leave it empty and let the engine's client inject the credential.
func (c *Connector) getMe(ctx context.Context, client *http.Client, base, authHeader string) (meResult, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/users/me", nil)
	if err != nil {
		return meResult{}, fmt.Errorf("pipedrive: users/me request: %w", err)
	}
	resp, err := connector.Call(client, hreq, authHeader, maxResponseBytes)
	if err != nil {
		return meResult{}, fmt.Errorf("pipedrive: users/me: %w", err)
	}
	r := meResult{status: resp.Status, header: resp.Header}
	if resp.Status == http.StatusOK {
		if err := json.Unmarshal(resp.Body, &r.me); err != nil {
			return meResult{}, fmt.Errorf("pipedrive: users/me answered malformed JSON: %w", err)
		}
	}
	return r, nil
}

// ValidateAuth implements connector.AuthValidator with users/me at the
// user's company domain; the engine's client injects (and refreshes) the
// bearer token.
func (c *Connector) ValidateAuth(ctx context.Context, req connector.UserRequest) (connector.ValidationResult, error) {
	base, err := c.apiBase(req.User.Hostname)
	if err != nil {
		return connector.ValidationResult{}, err
	}
	resp, err := c.getMe(ctx, req.HTTPClient, base, "")
	if err != nil {
		return connector.ValidationResult{}, err
	}
	switch resp.status {
	case http.StatusOK:
		if !resp.me.Success {
			return connector.ValidationResult{}, errors.New("pipedrive: users/me answered 200 without success")
		}
		return connector.ValidationResult{Successful: true, Status: http.StatusOK}, nil
	case http.StatusUnauthorized:
		return connector.ValidationResult{
			Successful: false,
			Status:     http.StatusUnauthorized,
			ReturnMessage: &connector.ReturnMessage{
				Message:     "Pipedrive session expired. Please connect again.",
				MessageType: connector.MessageWarning,
				TTL:         5000,
			},
		}, nil
	default:
		return connector.ValidationResult{}, resp.err()
	}
}

// Unauthorize implements connector.Unauthorizer: revoke the refresh token
// (which revokes every token of the grant), then the access token. Tokens
// already unknown to Pipedrive count as revoked, so a retry is harmless.
//
// The revoke requests carry the client's Basic credentials themselves: the
// engine's client must leave an Authorization header the connector set.
func (c *Connector) Unauthorize(ctx context.Context, req connector.UserRequest) (connector.Result, error) {
	clientID, secret := req.OAuth.ClientID, req.OAuth.ClientSecret
	if clientID == "" {
		clientID, secret = c.clientID, c.clientSecret
	}
	if tok := req.User.RefreshToken.Reveal(); tok != "" {
		if err := c.revoke(ctx, req.HTTPClient, c.revokeURL, clientID, secret, tok, "refresh_token"); err != nil {
			return connector.Result{}, err
		}
	}
	if tok := req.User.AccessToken.Reveal(); tok != "" {
		if err := c.revoke(ctx, req.HTTPClient, c.revokeURL, clientID, secret, tok, "access_token"); err != nil {
			return connector.Result{}, err
		}
	}
	return connector.Result{
		Successful: true,
		ReturnMessage: &connector.ReturnMessage{
			Message:     "Logged out of Pipedrive",
			MessageType: connector.MessageSuccess,
			TTL:         1000,
		},
	}, nil
}

func (c *Connector) revoke(ctx context.Context, client *http.Client, revokeURL, clientID string, secret connector.Secret, token, hint string) error {
	form := url.Values{"token": {token}, "token_type_hint": {hint}}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, revokeURL, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("pipedrive: revoke request: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	hreq.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret.Reveal()))
	resp, err := connector.Call(client, hreq, "", maxResponseBytes)
	if err != nil {
		return fmt.Errorf("pipedrive: revoking the %s: %w", hint, err)
	}
	if resp.Status == http.StatusOK {
		return nil
	}
	// An already revoked or unknown token: nothing left to revoke.
	if resp.Status == http.StatusBadRequest {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(resp.Body, &e) == nil && (e.Error == "invalid_token" || e.Error == "invalid_grant") {
			c.logger.Debug("pipedrive token already revoked", "hint", hint)
			return nil
		}
	}
	return fmt.Errorf("pipedrive: revoking the %s answered HTTP %d", hint, resp.Status)
}
