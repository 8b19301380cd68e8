package connectortest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/oauth2"

	"github.com/connectd/connectd/core/connector"
)

// OAuthConnectorOptions configure the kit's reference OAuth connector.
type OAuthConnectorOptions struct {
	// Validate adds the AuthValidator capability (asks the provider's
	// userinfo endpoint with the engine's authenticated client).
	Validate bool
	// AuthStyle for the token endpoint (zero: auto-detect).
	AuthStyle oauth2.AuthStyle
}

// OAuthConnector returns a Factory for a connector of the provider p: the
// smallest correct OAuth connector, used by the engine's own tests and as
// the reference a connector author compares against.
func OAuthConnector(p *Provider, o OAuthConnectorOptions) connector.Factory {
	return func(cfg connector.Config) (connector.Connector, error) {
		base := &oauthConn{p: p, o: o}
		if o.Validate {
			return &validatingOAuthConn{base}, nil
		}
		return base, nil
	}
}

type oauthConn struct {
	p *Provider
	o OAuthConnectorOptions
}

var (
	_ connector.OAuthConnector = (*oauthConn)(nil)
	_ connector.Unauthorizer   = (*oauthConn)(nil)
	_ connector.AuthValidator  = (*validatingOAuthConn)(nil)
)

func (c *oauthConn) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthOAuth, nil
}

func (c *oauthConn) OAuthInfo(_ context.Context, _ connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	opts := c.p.Options()
	info := connector.OAuthInfo{
		ClientID:     opts.ClientID,
		ClientSecret: connector.Secret(opts.ClientSecret),
		TokenURL:     c.p.TokenURL(),
		AuthURL:      c.p.AuthURL(),
		AuthStyle:    c.o.AuthStyle,
	}
	if len(opts.RedirectURIs) > 0 {
		info.RedirectURI = opts.RedirectURIs[0]
	}
	return info, nil
}

// userinfo is the provider's /userinfo answer.
type userinfo struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Email    string `json:"email"`
	Timezone string `json:"timezone"`
}

func (c *oauthConn) fetchUser(ctx context.Context, client *http.Client, authHeader string) (userinfo, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.p.UserInfoURL(), nil)
	if err != nil {
		return userinfo{}, 0, err
	}
	if authHeader != "" {
		req.Header.Set("Authorization", authHeader)
	}
	resp, err := client.Do(req)
	if err != nil {
		return userinfo{}, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return userinfo{}, resp.StatusCode, nil
	}
	var u userinfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&u); err != nil {
		return userinfo{}, resp.StatusCode, fmt.Errorf("connectortest: userinfo: %w", err)
	}
	return u, resp.StatusCode, nil
}

func (c *oauthConn) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	u, status, err := c.fetchUser(ctx, req.HTTPClient, req.AuthHeader)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	if status != http.StatusOK || u.ID == "" {
		return connector.UserInfoResult{ReturnMessage: &connector.ReturnMessage{Message: "Could not load user information.", MessageType: connector.MessageWarning, TTL: 3000}}, nil
	}
	return connector.UserInfoResult{Successful: true, User: connector.PlatformUser{
		ID: u.ID, Name: u.Name, TimezoneName: u.Timezone,
		AdditionalInfo: map[string]any{"email": u.Email},
	}}, nil
}

// Unauthorize revokes the refresh token (which ends the grant), then the
// access token, as RFC 7009 suggests.
func (c *oauthConn) Unauthorize(ctx context.Context, req connector.UserRequest) (connector.Result, error) {
	info := req.OAuth
	if info.ClientID == "" {
		var err error
		if info, err = c.OAuthInfo(ctx, connector.OAuthInfoRequest{}); err != nil {
			return connector.Result{}, err
		}
	}
	for _, t := range []struct{ tok, hint string }{{req.User.RefreshToken.Reveal(), "refresh_token"}, {req.User.AccessToken.Reveal(), "access_token"}} {
		if t.tok == "" {
			continue
		}
		form := url.Values{"token": {t.tok}, "token_type_hint": {t.hint}}
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, c.p.RevokeURL(), strings.NewReader(form.Encode()))
		if err != nil {
			return connector.Result{}, err
		}
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.SetBasicAuth(url.QueryEscape(info.ClientID), url.QueryEscape(info.ClientSecret.Reveal()))
		// A plain client: the revocation carries its own credentials.
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			return connector.Result{}, err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return connector.Result{}, fmt.Errorf("connectortest: revoke answered %d", resp.StatusCode)
		}
	}
	return connector.Result{Successful: true, ReturnMessage: &connector.ReturnMessage{Message: "Logged out.", MessageType: connector.MessageSuccess, TTL: 1000}}, nil
}

type validatingOAuthConn struct{ *oauthConn }

// ValidateAuth asks userinfo through the engine's authenticated client.
func (c *validatingOAuthConn) ValidateAuth(ctx context.Context, req connector.UserRequest) (connector.ValidationResult, error) {
	_, status, err := c.fetchUser(ctx, req.HTTPClient, "")
	if err != nil {
		return connector.ValidationResult{}, err
	}
	if status == http.StatusUnauthorized {
		return connector.ValidationResult{Successful: false, Status: status, ReturnMessage: &connector.ReturnMessage{Message: "The login was revoked at the service.", MessageType: connector.MessageWarning, TTL: 5000}}, nil
	}
	if status != http.StatusOK {
		return connector.ValidationResult{}, fmt.Errorf("connectortest: userinfo answered %d", status)
	}
	return connector.ValidationResult{Successful: true, Status: status}, nil
}

// OAuthManifest returns an App Connect manifest document for an OAuth test
// platform named name. pkce false opts out of PKCE.
func OAuthManifest(name string, redirectURIs []string, pkce bool) []byte {
	doc := map[string]any{
		"serverUrl":   "https://connectd.example",
		"redirectUri": firstOr(redirectURIs, "https://client.example/redirect.html"),
		"author":      map[string]any{"name": "connectd tests", "websiteUrl": "https://connectd.example"},
		"version":     "1.0.0",
		"platforms": map[string]any{name: map[string]any{
			"name":        name,
			"displayName": "Test CRM " + name,
			"auth":        map[string]any{"type": "oauth", "oauth": map[string]any{"authUrl": "https://connectd.example/oauth/authorize", "clientId": "test-client"}},
			"connectd": map[string]any{
				"oauth":        map[string]any{"pkce": pkce},
				"redirectUris": redirectURIs,
			},
		}},
	}
	b, _ := json.Marshal(doc)
	return b
}

// APIKeyConnector returns a Factory for an API-key connector whose user
// info is GET <crm>/me with Basic auth of the key as user name: the kit's
// reference API-key connector. The fake CRM answers with
// {"id","name"}; 401 when the key is wrong.
func APIKeyConnector(crmURL string) connector.Factory {
	return func(cfg connector.Config) (connector.Connector, error) {
		if crmURL == "" {
			return nil, fmt.Errorf("%w: no CRM URL", connector.ErrUnavailable)
		}
		return &apiKeyConn{base: strings.TrimRight(crmURL, "/")}, nil
	}
}

type apiKeyConn struct{ base string }

var _ connector.APIKeyConnector = (*apiKeyConn)(nil)

func (c *apiKeyConn) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthAPIKey, nil
}

func (c *apiKeyConn) BasicAuth(apiKey string) string {
	return basicValue(apiKey, "")
}

func (c *apiKeyConn) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/me", nil)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	r.Header.Set("Authorization", req.AuthHeader)
	if t := req.AdditionalInfo["tenant"]; t != "" {
		r.Header.Set("X-Tenant", t)
	}
	resp, err := req.HTTPClient.Do(r)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return connector.UserInfoResult{ReturnMessage: &connector.ReturnMessage{Message: "The API key was refused.", MessageType: connector.MessageWarning, TTL: 3000}}, nil
	}
	if resp.StatusCode != http.StatusOK {
		return connector.UserInfoResult{}, fmt.Errorf("connectortest: /me answered %d", resp.StatusCode)
	}
	var u struct {
		ID   json.Number `json:"id"`
		Name string      `json:"name"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&u); err != nil {
		return connector.UserInfoResult{}, fmt.Errorf("connectortest: /me: %w", err)
	}
	if u.ID == "" {
		return connector.UserInfoResult{}, errors.New("connectortest: /me without id")
	}
	return connector.UserInfoResult{Successful: true, User: connector.PlatformUser{ID: u.ID.String(), Name: u.Name}}, nil
}

// APIKeyManifest returns a manifest document for an API-key test platform
// with an apiKey field and an optional "tenant" field (managed at account
// scope when managedTenant).
func APIKeyManifest(name string, managedTenant bool) []byte {
	tenant := map[string]any{"const": "tenant", "title": "Tenant", "type": "string", "required": managedTenant}
	if managedTenant {
		tenant["managed"] = true
		tenant["managedScope"] = "account"
		tenant["hidden"] = true
	}
	doc := map[string]any{
		"serverUrl":   "https://connectd.example",
		"redirectUri": "https://client.example/redirect.html",
		"author":      map[string]any{"name": "connectd tests", "websiteUrl": "https://connectd.example"},
		"version":     "1.0.0",
		"platforms": map[string]any{name: map[string]any{
			"name":        name,
			"displayName": "Test API-key CRM " + name,
			"auth": map[string]any{"type": "apiKey", "apiKey": map[string]any{"page": map[string]any{
				"title":   name,
				"content": []any{map[string]any{"const": "apiKey", "title": "API key", "type": "string", "required": true}, tenant},
			}}},
		}},
	}
	b, _ := json.Marshal(doc)
	return b
}

func basicValue(user, pass string) string {
	return base64Std(user + ":" + pass)
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
