// Package declarative builds connectors from a manifest alone: a platform
// whose manifest carries connectd.declarative gets a working connector
// with no Go code, for services that follow plain OAuth 2.0 or API-key
// patterns.
//
// The block (validated by core/manifest, every problem named by its JSON
// path):
//
//	"declarative": {
//	  "oauth": {"authorizationUrl", "tokenUrl", "revocationUrl"?,
//	            "clientIdEnv", "clientSecretEnv", "scopes": [],
//	            "pkce": true, "clientAuth": "basic" | "body"},
//	  -- or --
//	  "apiKey": {"header": "Authorization", "scheme": "Basic" | "Bearer" | "none"},
//	  "userInfo": {"url", "method": "GET", "idPath", "namePath", "timezonePath"?},
//	  "validate": false
//	}
//
// URLs may contain {{hostname}}: the user's hostname (the login's hostname
// parameter, then the stored user's) is put in its place, and only host
// names matching connectd.hosts are accepted, so a user cannot point the
// connector (and with it a token or key) anywhere else. The client id and
// secret are read from the environment variables the manifest names
// (through connector.Config.Getenv); a missing one makes the connector
// unavailable with the variable's name as the reason.
//
// Capabilities: revocationUrl adds connector.Unauthorizer (RFC 7009: the
// refresh token, then the access token); validate adds
// connector.AuthValidator (user info called with the stored credential).
package declarative

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/manifest"
)

// maxResponseBytes bounds a user-info or revocation answer.
const maxResponseBytes = 1 << 20

// revokeTimeout bounds one revocation request.
const revokeTimeout = 30 * time.Second

const hostnamePlaceholder = "{{hostname}}"

// New builds the connector a declarative platform describes; it matches
// registry.DeclarativeFactory. The wiring is
// registry.Config{Declarative: declarative.New}.
func New(p *manifest.Platform, cfg connector.Config) (connector.Connector, error) {
	if p == nil || p.Connectd.Declarative == nil {
		return nil, errors.New("declarative: the platform has no connectd.declarative block")
	}
	d := p.Connectd.Declarative
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	label := p.DisplayName
	if label == "" {
		label = p.Key
	}
	b := &base{
		name:   p.Key,
		label:  label,
		hosts:  p.Hosts(),
		user:   d.UserInfo,
		logger: logger,
		// Revocation carries the client's own credentials, so it does
		// not go through the engine's credential-injecting client.
		plain: &http.Client{
			Timeout:       revokeTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	switch {
	case d.OAuth != nil:
		o := d.OAuth
		id := strings.TrimSpace(getenv(o.ClientIDEnv))
		secret := strings.TrimSpace(getenv(o.ClientSecretEnv))
		if o.ClientIDEnv == "" || o.ClientSecretEnv == "" {
			return nil, fmt.Errorf("declarative: %s: connectd.declarative.oauth needs clientIdEnv and clientSecretEnv", p.Key)
		}
		if id == "" {
			return nil, fmt.Errorf("%w: %s is not set", connector.ErrUnavailable, o.ClientIDEnv)
		}
		if secret == "" {
			return nil, fmt.Errorf("%w: %s is not set", connector.ErrUnavailable, o.ClientSecretEnv)
		}
		oc := &oauthConn{base: b, cfg: *o, clientID: id, clientSecret: connector.Secret(secret)}
		switch {
		case o.RevocationURL != "" && d.Validate:
			return &oauthRevokeValidate{oc}, nil
		case o.RevocationURL != "":
			return &oauthRevoke{oc}, nil
		case d.Validate:
			return &oauthValidate{oc}, nil
		}
		return oc, nil
	case d.APIKey != nil:
		kc := &apiKeyConn{base: b, cfg: *d.APIKey}
		if d.Validate {
			return &apiKeyValidate{kc}, nil
		}
		return kc, nil
	}
	return nil, fmt.Errorf("declarative: %s: connectd.declarative needs \"oauth\" or \"apiKey\"", p.Key)
}

// base is what both auth kinds share: user info.
type base struct {
	name, label string
	hosts       []string
	user        manifest.DeclarativeUser
	logger      *slog.Logger
	plain       *http.Client
}

// expand puts hostname in place of {{hostname}}; a URL without the
// placeholder is returned unchanged whatever hostname is.
func (b *base) expand(raw, hostname string) (string, error) {
	if !strings.Contains(raw, hostnamePlaceholder) {
		return raw, nil
	}
	h := strings.ToLower(strings.TrimSpace(hostname))
	if h == "" {
		return "", fmt.Errorf("declarative: %s: this service needs a hostname (the URL uses {{hostname}})", b.name)
	}
	if !manifest.HostAllowed(b.hosts, h) {
		return "", fmt.Errorf("declarative: %s: hostname %q does not match connectd.hosts", b.name, h)
	}
	return strings.ReplaceAll(raw, hostnamePlaceholder, h), nil
}

// fetchUser calls the user-info URL. header/value set the credential when
// header is non-empty (logins); per-user calls pass the engine's client.
func (b *base) fetchUser(ctx context.Context, client *http.Client, hostname, header, value string) (status int, doc any, err error) {
	u, err := b.expand(b.user.URL, hostname)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, b.user.HTTPMethod(), u, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("declarative: %s: user info request: %w", b.name, err)
	}
	if header != "" {
		req.Header.Set(header, value)
	}
	resp, err := connector.Call(client, req, "", maxResponseBytes)
	if err != nil {
		return 0, nil, fmt.Errorf("declarative: %s: user info: %w", b.name, err)
	}
	if resp.Truncated {
		return 0, nil, fmt.Errorf("declarative: %s: user info answer larger than %d bytes", b.name, maxResponseBytes)
	}
	if resp.Status != http.StatusOK {
		return resp.Status, nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(resp.Body))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return resp.Status, nil, fmt.Errorf("declarative: %s: user info answered malformed JSON: %w", b.name, err)
	}
	return resp.Status, doc, nil
}

// userInfo turns a user-info exchange into the contract's answer.
func (b *base) userInfo(status int, doc any) (connector.UserInfoResult, error) {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return connector.UserInfoResult{ReturnMessage: &connector.ReturnMessage{
			Message:     b.label + " did not accept the login. Please check your credentials and try again.",
			MessageType: connector.MessageWarning,
			TTL:         5000,
		}}, nil
	case status != http.StatusOK:
		return connector.UserInfoResult{}, fmt.Errorf("declarative: %s: user info answered HTTP %d", b.name, status)
	}
	id, ok := Lookup(doc, b.user.IDPath)
	if !ok || id == "" {
		return connector.UserInfoResult{}, fmt.Errorf("declarative: %s: user info answer has no value at idPath %q", b.name, b.user.IDPath)
	}
	name, _ := Lookup(doc, b.user.NamePath)
	u := connector.PlatformUser{ID: id, Name: name}
	if b.user.TimezonePath != "" {
		u.TimezoneName, _ = Lookup(doc, b.user.TimezonePath)
	}
	return connector.UserInfoResult{Successful: true, User: u, ReturnMessage: &connector.ReturnMessage{
		Message:     "Connected to " + b.label + ".",
		MessageType: connector.MessageSuccess,
		TTL:         3000,
	}}, nil
}

// validation turns a user-info call with the stored credential into
// authValidation's answer.
func (b *base) validation(status int) (connector.ValidationResult, error) {
	switch status {
	case http.StatusOK:
		return connector.ValidationResult{Successful: true, Status: status}, nil
	case http.StatusUnauthorized, http.StatusForbidden:
		return connector.ValidationResult{Status: status, ReturnMessage: &connector.ReturnMessage{
			Message:     b.label + " no longer accepts this login. Please connect again.",
			MessageType: connector.MessageWarning,
			TTL:         5000,
		}}, nil
	}
	return connector.ValidationResult{}, fmt.Errorf("declarative: %s: user info answered HTTP %d", b.name, status)
}

// Lookup follows a dot path ("data.user.id"; a numeric segment indexes an
// array) into a decoded JSON document and returns the value as a string:
// strings as they are, numbers in their JSON spelling, booleans as
// "true"/"false". Objects, arrays, null and missing keys are not found.
func Lookup(doc any, path string) (string, bool) {
	if path == "" {
		return "", false
	}
	cur := doc
	for seg := range strings.SplitSeq(path, ".") {
		switch v := cur.(type) {
		case map[string]any:
			next, ok := v[seg]
			if !ok {
				return "", false
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(v) {
				return "", false
			}
			cur = v[i]
		default:
			return "", false
		}
	}
	switch v := cur.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(v), true
	}
	return "", false
}

// ---- OAuth ----

type oauthConn struct {
	*base
	cfg          manifest.DeclarativeOAuth
	clientID     string
	clientSecret connector.Secret
}

var (
	_ connector.OAuthConnector  = (*oauthConn)(nil)
	_ connector.Unauthorizer    = (*oauthRevoke)(nil)
	_ connector.AuthValidator   = (*oauthValidate)(nil)
	_ connector.Unauthorizer    = (*oauthRevokeValidate)(nil)
	_ connector.AuthValidator   = (*oauthRevokeValidate)(nil)
	_ connector.APIKeyConnector = (*apiKeyConn)(nil)
	_ connector.AuthValidator   = (*apiKeyValidate)(nil)
)

// AuthType implements connector.Connector.
func (c *oauthConn) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthOAuth, nil
}

func (c *oauthConn) authStyle() oauth2.AuthStyle {
	if c.cfg.ClientAuthMethod() == "body" {
		return oauth2.AuthStyleInParams
	}
	return oauth2.AuthStyleInHeader
}

// OAuthInfo implements connector.OAuthConnector.
func (c *oauthConn) OAuthInfo(_ context.Context, req connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	authURL, err := c.expand(c.cfg.AuthorizationURL, req.Hostname)
	if err != nil {
		return connector.OAuthInfo{}, err
	}
	tokenURL, err := c.expand(c.cfg.TokenURL, req.Hostname)
	if err != nil {
		return connector.OAuthInfo{}, err
	}
	return connector.OAuthInfo{
		ClientID:     c.clientID,
		ClientSecret: c.clientSecret,
		TokenURL:     tokenURL,
		AuthURL:      authURL,
		Scopes:       append([]string(nil), c.cfg.Scopes...),
		Hostname:     req.Hostname,
		AuthStyle:    c.authStyle(),
	}, nil
}

// UserInfo implements connector.Connector.
func (c *oauthConn) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	status, doc, err := c.fetchUser(ctx, req.HTTPClient, req.Hostname, "Authorization", req.AuthHeader)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	return c.userInfo(status, doc)
}

func (c *oauthConn) validate(ctx context.Context, req connector.UserRequest) (connector.ValidationResult, error) {
	// The engine's client injects (and refreshes) the bearer token.
	status, _, err := c.fetchUser(ctx, req.HTTPClient, req.User.Hostname, "", "")
	if err != nil {
		return connector.ValidationResult{}, err
	}
	return c.validation(status)
}

// unauthorize revokes the refresh token (which ends the grant), then the
// access token (RFC 7009). Unknown or already revoked tokens count as
// revoked, so a retry is harmless.
func (c *oauthConn) unauthorize(ctx context.Context, req connector.UserRequest) (connector.Result, error) {
	revokeURL, err := c.expand(c.cfg.RevocationURL, req.User.Hostname)
	if err != nil {
		return connector.Result{}, err
	}
	clientID, secret := req.OAuth.ClientID, req.OAuth.ClientSecret
	if clientID == "" {
		clientID, secret = c.clientID, c.clientSecret
	}
	for _, t := range []struct{ tok, hint string }{
		{req.User.RefreshToken.Reveal(), "refresh_token"},
		{req.User.AccessToken.Reveal(), "access_token"},
	} {
		if t.tok == "" {
			continue
		}
		if err := c.revoke(ctx, revokeURL, clientID, secret, t.tok, t.hint); err != nil {
			return connector.Result{}, err
		}
	}
	return connector.Result{Successful: true, ReturnMessage: &connector.ReturnMessage{
		Message:     "Logged out of " + c.label + ".",
		MessageType: connector.MessageSuccess,
		TTL:         1000,
	}}, nil
}

func (c *oauthConn) revoke(ctx context.Context, revokeURL, clientID string, secret connector.Secret, token, hint string) error {
	form := url.Values{"token": {token}, "token_type_hint": {hint}}
	if c.authStyle() == oauth2.AuthStyleInParams {
		form.Set("client_id", clientID)
		form.Set("client_secret", secret.Reveal())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, revokeURL, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("declarative: %s: revoke request: %w", c.name, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if c.authStyle() == oauth2.AuthStyleInHeader {
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret.Reveal()))
	}
	resp, err := connector.Call(c.plain, req, "", maxResponseBytes)
	if err != nil {
		return fmt.Errorf("declarative: %s: revoking the %s: %w", c.name, hint, err)
	}
	if resp.Status == http.StatusOK {
		return nil
	}
	if resp.Status == http.StatusBadRequest {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(resp.Body, &e) == nil && (e.Error == "invalid_token" || e.Error == "invalid_grant") {
			c.logger.Debug("token already revoked", "hint", hint)
			return nil
		}
	}
	return fmt.Errorf("declarative: %s: revoking the %s answered HTTP %d", c.name, hint, resp.Status)
}

type oauthRevoke struct{ *oauthConn }

// Unauthorize implements connector.Unauthorizer.
func (c *oauthRevoke) Unauthorize(ctx context.Context, req connector.UserRequest) (connector.Result, error) {
	return c.unauthorize(ctx, req)
}

type oauthValidate struct{ *oauthConn }

// ValidateAuth implements connector.AuthValidator.
func (c *oauthValidate) ValidateAuth(ctx context.Context, req connector.UserRequest) (connector.ValidationResult, error) {
	return c.validate(ctx, req)
}

type oauthRevokeValidate struct{ *oauthConn }

// Unauthorize implements connector.Unauthorizer.
func (c *oauthRevokeValidate) Unauthorize(ctx context.Context, req connector.UserRequest) (connector.Result, error) {
	return c.unauthorize(ctx, req)
}

// ValidateAuth implements connector.AuthValidator.
func (c *oauthRevokeValidate) ValidateAuth(ctx context.Context, req connector.UserRequest) (connector.ValidationResult, error) {
	return c.validate(ctx, req)
}

// ---- API key ----

type apiKeyConn struct {
	*base
	cfg manifest.DeclarativeAPIKey
}

// AuthType implements connector.Connector.
func (c *apiKeyConn) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthAPIKey, nil
}

// BasicAuth implements connector.APIKeyConnector: the key as user name
// with an empty password.
func (c *apiKeyConn) BasicAuth(apiKey string) string {
	return base64.StdEncoding.EncodeToString([]byte(apiKey + ":"))
}

// header returns the header name and value that carry key.
func (c *apiKeyConn) header(key string) (string, string) {
	switch c.cfg.Scheme {
	case "Bearer":
		return c.cfg.HeaderName(), "Bearer " + key
	case "none":
		return c.cfg.HeaderName(), key
	}
	return "Authorization", "Basic " + c.BasicAuth(key)
}

// UserInfo implements connector.Connector.
func (c *apiKeyConn) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	key := req.APIKey.Reveal()
	if key == "" {
		return connector.UserInfoResult{ReturnMessage: &connector.ReturnMessage{
			Message: "Please enter your " + c.label + " API key.", MessageType: connector.MessageWarning, TTL: 3000,
		}}, nil
	}
	name, value := c.header(key)
	status, doc, err := c.fetchUser(ctx, req.HTTPClient, req.Hostname, name, value)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	return c.userInfo(status, doc)
}

type apiKeyValidate struct{ *apiKeyConn }

// ValidateAuth implements connector.AuthValidator: user info with the
// stored key.
func (c *apiKeyValidate) ValidateAuth(ctx context.Context, req connector.UserRequest) (connector.ValidationResult, error) {
	name, value := c.header(req.User.APIKey.Reveal())
	status, _, err := c.fetchUser(ctx, req.HTTPClient, req.User.Hostname, name, value)
	if err != nil {
		return connector.ValidationResult{}, err
	}
	return c.validation(status)
}
