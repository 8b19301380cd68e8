// Package connector is THE contract between connectd's engine and connector
// authors. A connector is a Go value implementing Connector plus whichever
// small capability interfaces it needs; the engine discovers capabilities
// with type assertions (the dex pattern), so a connector implements only
// what its service supports.
//
// Every method maps to an App Connect connector interface of the same
// meaning; the App Connect (JavaScript) name is given on each. Connectors
// never persist anything: they return data and the engine stores it,
// encrypted, scoped to the host account and user.
//
// This package imports only the standard library and golang.org/x/oauth2.
package connector

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/oauth2"
)

// AuthType is how a user logs in to the connector's service.
type AuthType string

// The auth types App Connect knows.
const (
	AuthOAuth  AuthType = "oauth"
	AuthAPIKey AuthType = "apiKey"
)

// Connector is the base interface every connector implements.
type Connector interface {
	// AuthType maps to App Connect's getAuthType. It must agree with the
	// manifest's auth.type; the registry checks this at start.
	AuthType(ctx context.Context) (AuthType, error)

	// UserInfo maps to getUserInfo: given a fresh credential, who is this
	// user at the service? It is called once per login. Return
	// Successful=false with a ReturnMessage for a login the service refused;
	// return an error only for failures the user cannot fix (the engine
	// answers 502/503 for those).
	UserInfo(ctx context.Context, req UserInfoRequest) (UserInfoResult, error)
}

// OAuthConnector is implemented by connectors whose auth type is oauth.
type OAuthConnector interface {
	Connector
	// OAuthInfo maps to getOauthInfo: the server-side values of the OAuth
	// client (secret, token URL). When an admin has configured a managed
	// OAuth app for the caller's host account the engine uses that instead
	// and does not call OAuthInfo.
	OAuthInfo(ctx context.Context, req OAuthInfoRequest) (OAuthInfo, error)
}

// APIKeyConnector is implemented by connectors whose auth type is apiKey.
type APIKeyConnector interface {
	Connector
	// BasicAuth maps to getBasicAuth: the value (without the "Basic "
	// prefix) of the Authorization header for this API key.
	BasicAuth(apiKey string) string
}

// Unauthorizer maps to unAuthorize: revoke the user's credentials at the
// service. The engine deletes local credentials and sessions whatever this
// returns; an error makes the engine retry the revocation later through its
// jobs mechanism, so implementations must be idempotent.
type Unauthorizer interface {
	Unauthorize(ctx context.Context, req UserRequest) (Result, error)
}

// TokenRequestOverrider maps to getOverridingOAuthOption: extra headers,
// query or body values for the authorization-code token request, for
// services that deviate from RFC 6749.
type TokenRequestOverrider interface {
	OverrideTokenRequest(ctx context.Context, code string, info OAuthInfo) (TokenRequestOverride, error)
}

// AuthValidator maps to authValidation: ask the service whether the stored
// credential still works. Without it the engine judges from the stored
// state alone (no upstream call).
type AuthValidator interface {
	ValidateAuth(ctx context.Context, req UserRequest) (ValidationResult, error)
}

// UserInfoRefresher maps to refreshUserInfo.
type UserInfoRefresher interface {
	RefreshUserInfo(ctx context.Context, req UserRequest) (UserInfoResult, error)
}

// LicenseChecker maps to getLicenseStatus.
type LicenseChecker interface {
	LicenseStatus(ctx context.Context, req UserRequest) (LicenseStatus, error)
}

// ManagedAuthOptioner maps to getManagedAuthOptions: the choices for a
// managed field whose managedFieldType is "dynamic".
type ManagedAuthOptioner interface {
	ManagedAuthOptions(ctx context.Context, req ManagedAuthOptionsRequest) ([]Option, error)
}

// PostSaveHook maps to postSaveUserInfo: adjust the user just logged in
// before it is stored (for example, derive a display name).
type PostSaveHook interface {
	PostSaveUserInfo(ctx context.Context, user PlatformUser) (PlatformUser, error)
}

// TokenRefresher maps to checkAndRefreshAccessToken, narrowed: the engine
// still decides WHEN to refresh and coordinates replicas (lease, fenced
// save); the connector only performs the exchange, for services whose
// refresh is not RFC 6749. Return an *oauth2.RetrieveError with
// ErrorCode "invalid_grant" for a definitive refusal.
type TokenRefresher interface {
	RefreshToken(ctx context.Context, req RefreshRequest) (*oauth2.Token, error)
}

// Secret is a string that never prints itself: fmt, slog and JSON all see
// "REDACTED". Read it with Reveal.
type Secret string

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "REDACTED"
}

// GoString implements fmt.GoStringer.
func (s Secret) GoString() string { return s.String() }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// User is a stored login as connectors see it.
type User struct {
	ID             string // connectd's record id (UUID)
	AppConnectID   string // App Connect's "<crmUserId>-<platform>"
	Platform       string
	CRMUserID      string
	Hostname       string
	Name           string
	TimezoneName   string
	TimezoneOffset string
	AccessToken    Secret
	RefreshToken   Secret
	TokenExpiry    time.Time // zero: no expiry known
	APIKey         Secret
	AdditionalInfo map[string]any    // platformAdditionalInfo (not secret)
	Secrets        map[string]Secret // secret additional values (sealed at rest)
	HostKind       string
	HostAccountID  string
	HostUserID     string
}

// UserInfoRequest maps to getUserInfo's argument.
type UserInfoRequest struct {
	// HTTPClient has the engine's timeouts, size caps and SSRF guard. It
	// does not add credentials: use AuthHeader.
	HTTPClient *http.Client
	// AuthHeader is "Bearer <access token>" or "Basic <BasicAuth(apiKey)>".
	AuthHeader string
	Hostname   string
	Platform   string
	// AdditionalInfo holds the resolved API-key form fields (managed values
	// included) by const.
	AdditionalInfo map[string]string
	APIKey         Secret
	TokenURL       string
	APIURL         string
	Username       string
	// Token is the raw token response of an OAuth login (App Connect's
	// `data`); Token.Extra reads provider-specific fields such as
	// Pipedrive's api_domain.
	Token *oauth2.Token
	Query map[string]string
}

// UserInfoResult maps to getUserInfo's answer.
type UserInfoResult struct {
	Successful    bool
	User          PlatformUser
	ReturnMessage *ReturnMessage
}

// PlatformUser maps to platformUserInfo.
type PlatformUser struct {
	ID             string
	Name           string
	TimezoneName   string
	TimezoneOffset string
	AdditionalInfo map[string]any
	// Secrets are extra credentials derived at login (for example a user
	// key a password was exchanged for); stored sealed, handed back in
	// User.Secrets.
	Secrets            map[string]Secret
	OverridingHostname string
	OverridingAPIKey   Secret
}

// OAuthInfoRequest maps to getOauthInfo's argument.
type OAuthInfoRequest struct {
	Hostname      string
	TokenURL      string
	HostAccountID string
}

// OAuthInfo maps to getOauthInfo's answer.
type OAuthInfo struct {
	ClientID     string
	ClientSecret Secret
	// TokenURL is App Connect's accessTokenUri.
	TokenURL string
	// AuthURL is App Connect's authorizationUri.
	AuthURL     string
	RedirectURI string
	Scopes      []string
	Hostname    string
	// AuthStyle picks how the client authenticates at the token endpoint.
	// The zero value means HTTP Basic (RFC 6749 section 2.3.1): connectd
	// never auto-detects, because detection retries a failed request with
	// the other style, which would replay a rotating refresh token after a
	// lost response. Set oauth2.AuthStyleInParams for services that want
	// the client secret in the form body.
	AuthStyle oauth2.AuthStyle
	// AuthURLParams are extra authorize-request parameters.
	AuthURLParams map[string]string
	// FailMessage, when set, aborts the login with this message.
	FailMessage *ReturnMessage
}

// TokenAuthStyle is AuthStyle with connectd's default applied (never
// auto-detect).
func (i OAuthInfo) TokenAuthStyle() oauth2.AuthStyle {
	if i.AuthStyle == oauth2.AuthStyleAutoDetect {
		return oauth2.AuthStyleInHeader
	}
	return i.AuthStyle
}

// TokenRequestOverride maps to getOverridingOAuthOption's answer.
type TokenRequestOverride struct {
	Headers map[string]string
	Query   map[string]string
	Form    map[string]string
}

// RefreshRequest is handed to a TokenRefresher.
type RefreshRequest struct {
	HTTPClient *http.Client
	OAuth      OAuthInfo
	User       User
}

// UserRequest is the argument of the per-user capabilities.
type UserRequest struct {
	// HTTPClient injects the user's credential into every request,
	// refreshes it when due (coordinated across replicas) and retries once
	// after a 401 when the credential changed meanwhile. Connector code
	// never handles tokens itself.
	HTTPClient *http.Client
	User       User
	// OAuth is the OAuth app that issued the user's tokens (zero for API-key
	// connectors).
	OAuth OAuthInfo
}

// ManagedAuthOptionsRequest maps to getManagedAuthOptions' argument.
type ManagedAuthOptionsRequest struct {
	HTTPClient    *http.Client
	FieldConst    string
	AccountValues map[string]string
}

// Option is one choice of a dynamic managed field.
type Option struct {
	Value string `json:"value"`
	Label string `json:"label"`
}

// Result is a plain outcome with an optional message for the user.
type Result struct {
	Successful    bool
	ReturnMessage *ReturnMessage
}

// ValidationResult maps to authValidation's answer.
type ValidationResult struct {
	Successful    bool
	Status        int
	ReturnMessage *ReturnMessage
}

// LicenseStatus maps to getLicenseStatus' answer.
type LicenseStatus struct {
	IsLicenseValid           bool   `json:"isLicenseValid"`
	LicenseStatus            string `json:"licenseStatus"`
	LicenseStatusDescription string `json:"licenseStatusDescription"`
}

// ReturnMessage is App Connect's toast: {message, messageType, ttl, details}.
type ReturnMessage struct {
	Message     string          `json:"message"`
	MessageType string          `json:"messageType"`
	TTL         int             `json:"ttl,omitempty"`
	Details     []MessageDetail `json:"details,omitempty"`
}

// MessageDetail is one block of a ReturnMessage's details.
type MessageDetail struct {
	Title string       `json:"title"`
	Items []DetailItem `json:"items"`
}

// DetailItem is one line of a MessageDetail.
type DetailItem struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Text string `json:"text"`
}

// Message types App Connect's client renders.
const (
	MessageSuccess = "success"
	MessageInfo    = "info"
	MessageWarning = "warning"
	MessageDanger  = "danger"
	MessageError   = "error"
)

// ErrUnavailable is returned (wrapped, with the reason) by a connector
// constructor whose configuration is incomplete, e.g. a missing client
// secret. The server still starts and lists the connector as unavailable.
var ErrUnavailable = errors.New("connector unavailable")

// Config is what a connector constructor receives.
type Config struct {
	// Name is the platform name the connector is registered under.
	Name string
	// Getenv reads the connector's settings (client ids and secrets);
	// injected so tests never touch the process environment.
	Getenv func(string) string
	// Logger is a named child of the server's root logger. Never log
	// secrets; Secret values redact themselves.
	Logger *slog.Logger
}

// Factory builds a connector from its configuration. The connector list is
// an explicit map from platform name to Factory (no init registration).
type Factory func(cfg Config) (Connector, error)
