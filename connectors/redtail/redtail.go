// Package redtail is connectd's connector for Redtail CRM (public API v1).
//
// Auth: three credentials. The API key identifies the integrating partner:
// it is account-managed (an admin stores it once per host account; the
// manifest marks the field managed, account scope, hidden). The user name
// and password are each user's (managed, user scope, or typed at login).
// At login they are exchanged once, with
// "Authorization: Basic base64(APIKey:Username:Password)" on
// GET {base}/authentication, for the user's UserKey; the password is never
// kept. The UserKey is returned as a sealed secret (PlatformUser.Secrets
// ["userKey"]) and later calls authenticate with
// "Authorization: Userkeyauth base64(APIKey:UserKey)" (UserkeyAuthHeader).
// A UserKey does not expire and survives password changes; Redtail has no
// revoke endpoint, so logout only clears connectd's storage.
//
// Documentation followed:
//   - https://help.redtailtechnology.com/hc/en-us/articles/203964430-Authentication-Methods-
//     (Basic with APIKey:Username:Password, UserKey authentication)
//   - connectd's reference/crm-apis.md "Redtail" (compiled from Redtail's
//     public v1 API docs and App Connect's connector): GET /authentication
//     -> {"authenticated_user": {"user_key", "id", ...}}, hosts
//
// Settings (read through connector.Config.Getenv; none required):
//   - REDTAIL_BASE_URL: the API base, default
//     https://crm.redtailtechnology.com/api/public/v1 (operators may pick the
//     sandbox https://review.crm.redtailtechnology.com/api/public/v1 or a
//     regional host; tests point it at a fake).
package redtail

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/connectd/connectd/core/connector"
)

// Settings, form fields and secrets.
const (
	EnvBaseURL     = "REDTAIL_BASE_URL"
	DefaultBaseURL = "https://crm.redtailtechnology.com/api/public/v1"
	// FieldUsername and FieldPassword are the login form's consts (as in
	// App Connect's manifest); the API key is the form's "apiKey" field.
	FieldUsername = "username"
	FieldPassword = "password"
	// SecretUserKey names the UserKey in PlatformUser.Secrets/User.Secrets.
	SecretUserKey    = "userKey"
	maxResponseBytes = 1 << 20
)

// Capabilities, checked at compile time. No AuthValidator: Redtail has no
// "who am I" call, and its calls authenticate with the Userkeyauth scheme
// the engine's credential-injecting client does not produce.
var (
	_ connector.APIKeyConnector = (*Connector)(nil)
	_ connector.Unauthorizer    = (*Connector)(nil)
)

// Connector talks to Redtail. Build it with New.
type Connector struct {
	base   string // no trailing slash
	logger *slog.Logger
}

// New builds the Redtail connector; it matches connector.Factory. The API
// key is account-managed, so there is no server-side secret to require; a
// malformed REDTAIL_BASE_URL makes the connector unavailable.
func New(cfg connector.Config) (connector.Connector, error) {
	c := &Connector{base: DefaultBaseURL, logger: cfg.Logger}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Getenv != nil {
		if v := strings.TrimSpace(cfg.Getenv(EnvBaseURL)); v != "" {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" {
				return nil, fmt.Errorf("%w: %s must be an absolute http(s) URL such as %s", connector.ErrUnavailable, EnvBaseURL, DefaultBaseURL)
			}
			c.base = strings.TrimSuffix(u.Scheme+"://"+u.Host+u.Path, "/")
		}
	}
	return c, nil
}

// AuthType implements connector.Connector.
func (c *Connector) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthAPIKey, nil
}

// BasicAuth implements connector.APIKeyConnector with base64 of the key
// alone. Redtail accepts no call with it: logging in needs the user name
// and password too (UserInfo builds that header itself) and later calls use
// UserkeyAuthHeader.
func (c *Connector) BasicAuth(apiKey string) string {
	return base64.StdEncoding.EncodeToString([]byte(apiKey))
}

// LoginAuthHeader is the documented Basic header of GET /authentication.
func LoginAuthHeader(apiKey, username, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(apiKey+":"+username+":"+password))
}

// UserkeyAuthHeader is the header of every call after login. Redtail's
// docs write the scheme "Userkeyauth" before the base64 value; App Connect
// sends the same.
func UserkeyAuthHeader(apiKey, userKey string) string {
	return "Userkeyauth " + base64.StdEncoding.EncodeToString([]byte(apiKey+":"+userKey))
}

// authResponse is GET /authentication's answer. Redtail documents the
// authenticated_user object only partly; these are the fields connectd
// uses.
type authResponse struct {
	AuthenticatedUser *struct {
		ID         json.Number `json:"id"`
		UserKey    string      `json:"user_key"`
		FirstName  string      `json:"first_name"`
		LastName   string      `json:"last_name"`
		Email      string      `json:"email"`
		DatabaseID json.Number `json:"database_id"`
	} `json:"authenticated_user"`
}

func refused(msg string) connector.UserInfoResult {
	return connector.UserInfoResult{ReturnMessage: &connector.ReturnMessage{
		Message: msg, MessageType: connector.MessageWarning, TTL: 5000,
	}}
}

// UserInfo implements connector.Connector: exchange API key, user name and
// password for the UserKey. The user's id is the user name, as App
// Connect's (records are "<username>-redtail"); the UserKey goes into
// Secrets, never AdditionalInfo, and the password goes nowhere.
func (c *Connector) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	apiKey := req.APIKey.Reveal()
	if apiKey == "" {
		apiKey = req.AdditionalInfo["apiKey"]
	}
	username := strings.TrimSpace(req.AdditionalInfo[FieldUsername])
	password := req.AdditionalInfo[FieldPassword]
	var missing []string
	if apiKey == "" {
		missing = append(missing, "the account's Redtail API key (ask your admin)")
	}
	if username == "" {
		missing = append(missing, "user name")
	}
	if password == "" {
		missing = append(missing, "password")
	}
	if len(missing) > 0 {
		return refused("Missing " + strings.Join(missing, ", ") + "."), nil
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/authentication", nil)
	if err != nil {
		return connector.UserInfoResult{}, fmt.Errorf("redtail: authentication request: %w", err)
	}
	resp, err := connector.Call(req.HTTPClient, hreq, LoginAuthHeader(apiKey, username, password), maxResponseBytes)
	if err != nil {
		return connector.UserInfoResult{}, fmt.Errorf("redtail: authentication: %w", err)
	}
	switch resp.Status {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return refused("Redtail did not accept the user name and password (or the account's API key)."), nil
	case http.StatusTooManyRequests:
		return connector.UserInfoResult{}, fmt.Errorf("redtail: authentication rate limited (429, Retry-After %q)", resp.Header.Get("Retry-After"))
	default:
		return connector.UserInfoResult{}, fmt.Errorf("redtail: authentication answered HTTP %d", resp.Status)
	}
	var ar authResponse
	if err := json.Unmarshal(resp.Body, &ar); err != nil {
		return connector.UserInfoResult{}, fmt.Errorf("redtail: authentication answered malformed JSON: %w", err)
	}
	u := ar.AuthenticatedUser
	if u == nil || strings.TrimSpace(u.UserKey) == "" {
		return connector.UserInfoResult{}, errors.New("redtail: authentication answered without authenticated_user.user_key")
	}
	name := strings.TrimSpace(u.FirstName + " " + u.LastName)
	if name == "" {
		name = username
	}
	info := map[string]any{FieldUsername: username}
	if s := u.ID.String(); s != "" {
		info["redtailUserId"] = s
	}
	if s := u.DatabaseID.String(); s != "" {
		info["databaseId"] = s
	}
	return connector.UserInfoResult{
		Successful: true,
		User: connector.PlatformUser{
			ID:             username,
			Name:           name,
			AdditionalInfo: info,
			Secrets:        map[string]connector.Secret{SecretUserKey: connector.Secret(u.UserKey)},
		},
		ReturnMessage: &connector.ReturnMessage{
			Message: "Connected to Redtail.", MessageType: connector.MessageSuccess, TTL: 3000,
		},
	}, nil
}

// Unauthorize implements connector.Unauthorizer. Redtail has no endpoint
// to revoke a UserKey; the engine deletes it with the rest of the record.
func (c *Connector) Unauthorize(context.Context, connector.UserRequest) (connector.Result, error) {
	return connector.Result{Successful: true, ReturnMessage: &connector.ReturnMessage{
		Message:     "Logged out of Redtail",
		MessageType: connector.MessageSuccess,
		TTL:         1000,
	}}, nil
}
