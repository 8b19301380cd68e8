// Package demo holds the two DEMO connectors, demo-oauth and demo-apikey,
// and their manifest. They talk to the demo CRM that connectd serves itself
// under <CONNECTD_PUBLIC_URL>/demo/crm/ (package server/demo) and exist only
// when CONNECTD_DEMO=true: their manifest is embedded here, not in
// manifests/, so a production server never loads them.
//
// They are ordinary connectors - the engine logs in, refreshes, validates
// and revokes through exactly the paths it uses for real CRMs - and serve
// as the smallest complete example of an OAuth and an API-key connector.
package demo

import (
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/connectd/connectd/core/connector"
)

// Platform names of the demo connectors.
const (
	OAuthPlatform  = "demo-oauth"
	APIKeyPlatform = "demo-apikey"
)

// ManifestName is the file name the demo manifest is loaded under.
const ManifestName = "demo.json"

// The demo CRM's endpoints, relative to the public URL (server/demo owns
// them; its tests pin the two sides together).
const (
	authorizePath = "/demo/crm/oauth/authorize"
	tokenPath     = "/demo/crm/oauth/token"
	revokePath    = "/demo/crm/oauth/revoke"
	userPath      = "/demo/crm/api/me"
	apiKeyPath    = "/demo/crm/apikey/me"
)

// The demo OAuth client registered at the demo CRM. Public demo values.
const (
	clientID     = "connectd-demo-client"
	clientSecret = "connectd-demo-secret"
)

//go:embed demo.json.tmpl
var manifestTemplate string

// Platforms returns the demo platform names.
func Platforms() []string { return []string{OAuthPlatform, APIKeyPlatform} }

// IsDemo reports whether platform is one of the demo connectors.
func IsDemo(platform string) bool {
	return platform == OAuthPlatform || platform == APIKeyPlatform
}

// checkPublicURL accepts an absolute http(s) base URL.
func checkPublicURL(publicURL string) (string, error) {
	u, err := url.Parse(publicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("demo: %q is not an http(s) base URL", publicURL)
	}
	return strings.TrimRight(publicURL, "/"), nil
}

// Manifest returns the demo manifest (both platforms) with its URLs
// pointing at the demo CRM under publicURL (CONNECTD_PUBLIC_URL).
func Manifest(publicURL string) ([]byte, error) {
	base, err := checkPublicURL(publicURL)
	if err != nil {
		return nil, err
	}
	quoted, err := json.Marshal(base)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	// The placeholder sits inside a JSON string: insert the URL escaped.
	escaped := strings.Trim(string(quoted), `"`)
	return []byte(strings.ReplaceAll(manifestTemplate, "{{PUBLIC_URL}}", escaped)), nil
}

// Factories returns the demo connectors for a server whose public URL is
// publicURL, to add to the connector map when CONNECTD_DEMO=true.
func Factories(publicURL string) map[string]connector.Factory {
	return map[string]connector.Factory{
		OAuthPlatform: func(cfg connector.Config) (connector.Connector, error) {
			base, err := checkPublicURL(publicURL)
			if err != nil {
				return nil, err
			}
			return &oauthConnector{base: base, log: logger(cfg)}, nil
		},
		APIKeyPlatform: func(cfg connector.Config) (connector.Connector, error) {
			base, err := checkPublicURL(publicURL)
			if err != nil {
				return nil, err
			}
			return &apiKeyConnector{base: base, log: logger(cfg)}, nil
		},
	}
}

func logger(cfg connector.Config) *slog.Logger {
	if cfg.Logger != nil {
		return cfg.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// profile is the demo CRM's user document.
type profile struct {
	ID    string `json:"id"`
	Login string `json:"login"`
	Name  string `json:"name"`
	Email string `json:"email"`
}

// getProfile reads a profile with client (which adds or carries the
// credential). ok is false when the CRM refused the credential.
func getProfile(ctx context.Context, client *http.Client, endpoint, authHeader string) (p profile, ok bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return profile{}, false, fmt.Errorf("demo: %w", err)
	}
	if authHeader != "" {
		req.Header.Set("Authorization", authHeader)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return profile{}, false, fmt.Errorf("demo: read profile: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		_, _ = io.Copy(io.Discard, resp.Body)
		return profile{}, false, nil
	case resp.StatusCode != http.StatusOK:
		_, _ = io.Copy(io.Discard, resp.Body)
		return profile{}, false, fmt.Errorf("demo: read profile: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		return profile{}, false, fmt.Errorf("demo: decode profile: %w", err)
	}
	if p.ID == "" {
		return profile{}, false, errors.New("demo: profile without id")
	}
	return p, true, nil
}

func userOf(p profile) connector.PlatformUser {
	return connector.PlatformUser{
		ID:   p.ID,
		Name: p.Name,
		AdditionalInfo: map[string]any{
			"email": p.Email,
			"login": p.Login,
			"demo":  true,
		},
	}
}

func refused(what string) *connector.ReturnMessage {
	return &connector.ReturnMessage{Message: "The Demo CRM refused the " + what + ".", MessageType: connector.MessageWarning, TTL: 3000}
}

// oauthConnector is demo-oauth.
type oauthConnector struct {
	base string
	log  *slog.Logger
}

var (
	_ connector.OAuthConnector = (*oauthConnector)(nil)
	_ connector.AuthValidator  = (*oauthConnector)(nil)
	_ connector.Unauthorizer   = (*oauthConnector)(nil)
)

func (*oauthConnector) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthOAuth, nil
}

// OAuthInfo implements connector.OAuthConnector.
func (c *oauthConnector) OAuthInfo(context.Context, connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	return connector.OAuthInfo{
		ClientID:     clientID,
		ClientSecret: connector.Secret(clientSecret),
		AuthURL:      c.base + authorizePath,
		TokenURL:     c.base + tokenPath,
		Scopes:       []string{"demo"},
	}, nil
}

// UserInfo implements connector.Connector.
func (c *oauthConnector) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	p, ok, err := getProfile(ctx, req.HTTPClient, c.base+userPath, req.AuthHeader)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	if !ok {
		return connector.UserInfoResult{Successful: false, ReturnMessage: refused("access token")}, nil
	}
	return connector.UserInfoResult{
		Successful:    true,
		User:          userOf(p),
		ReturnMessage: &connector.ReturnMessage{Message: "Connected to the Demo CRM as " + p.Name + ".", MessageType: connector.MessageSuccess, TTL: 3000},
	}, nil
}

// ValidateAuth asks the demo CRM whether the access token works. The
// engine's client injects the token and refreshes it first when due.
func (c *oauthConnector) ValidateAuth(ctx context.Context, req connector.UserRequest) (connector.ValidationResult, error) {
	_, ok, err := getProfile(ctx, req.HTTPClient, c.base+userPath, "")
	if err != nil {
		return connector.ValidationResult{}, err
	}
	if !ok {
		return connector.ValidationResult{Successful: false, Status: http.StatusUnauthorized, ReturnMessage: refused("login")}, nil
	}
	return connector.ValidationResult{Successful: true, Status: http.StatusOK}, nil
}

// Unauthorize revokes the grant at the demo CRM (RFC 7009). Revoking the
// refresh token revokes every token of the grant; revoking an unknown
// token succeeds, so retries are harmless.
func (c *oauthConnector) Unauthorize(ctx context.Context, req connector.UserRequest) (connector.Result, error) {
	tok := req.User.RefreshToken.Reveal()
	hint := "refresh_token"
	if tok == "" {
		tok, hint = req.User.AccessToken.Reveal(), "access_token"
	}
	if tok == "" {
		return connector.Result{Successful: true}, nil
	}
	id, secret := req.OAuth.ClientID, req.OAuth.ClientSecret.Reveal()
	if id == "" {
		id, secret = clientID, clientSecret
	}
	form := url.Values{"token": {tok}, "token_type_hint": {hint}}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+revokePath, strings.NewReader(form.Encode()))
	if err != nil {
		return connector.Result{}, fmt.Errorf("demo: %w", err)
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := req.HTTPClient.Do(r)
	if err != nil {
		return connector.Result{}, fmt.Errorf("demo: revoke: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return connector.Result{}, fmt.Errorf("demo: revoke: HTTP %d", resp.StatusCode)
	}
	c.log.Debug("demo grant revoked")
	return connector.Result{Successful: true, ReturnMessage: &connector.ReturnMessage{Message: "Logged out of the Demo CRM.", MessageType: connector.MessageSuccess, TTL: 1000}}, nil
}

// apiKeyConnector is demo-apikey.
type apiKeyConnector struct {
	base string
	log  *slog.Logger
}

var (
	_ connector.APIKeyConnector = (*apiKeyConnector)(nil)
	_ connector.AuthValidator   = (*apiKeyConnector)(nil)
)

func (*apiKeyConnector) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthAPIKey, nil
}

// BasicAuth implements connector.APIKeyConnector: the key is the user name.
func (*apiKeyConnector) BasicAuth(apiKey string) string {
	return base64.StdEncoding.EncodeToString([]byte(apiKey + ":"))
}

// UserInfo implements connector.Connector.
func (c *apiKeyConnector) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	p, ok, err := getProfile(ctx, req.HTTPClient, c.base+apiKeyPath, req.AuthHeader)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	if !ok {
		return connector.UserInfoResult{Successful: false, ReturnMessage: &connector.ReturnMessage{
			Message: "The Demo CRM does not know this API key. Try demo-key-alice.", MessageType: connector.MessageWarning, TTL: 3000,
		}}, nil
	}
	return connector.UserInfoResult{Successful: true, User: userOf(p)}, nil
}

// ValidateAuth checks the stored key at the demo CRM.
func (c *apiKeyConnector) ValidateAuth(ctx context.Context, req connector.UserRequest) (connector.ValidationResult, error) {
	_, ok, err := getProfile(ctx, req.HTTPClient, c.base+apiKeyPath, "")
	if err != nil {
		return connector.ValidationResult{}, err
	}
	if !ok {
		return connector.ValidationResult{Successful: false, Status: http.StatusUnauthorized, ReturnMessage: refused("API key")}, nil
	}
	return connector.ValidationResult{Successful: true, Status: http.StatusOK}, nil
}
