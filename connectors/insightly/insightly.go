// Package insightly is connectd's connector for Insightly CRM (API v3.1).
//
// Auth: a per-user API key sent as HTTP Basic with the key as user name and
// an empty password, plus the account's API URL (its pod, e.g.
// https://api.na1.insightly.com/v3.1/) that the user copies from Insightly's
// User Settings. The URL is cut at "/v" and "/v3.1" appended; only https
// hosts under insightly.com are accepted, since the API key is sent there.
// Insightly has no login or logout endpoint: revoking means generating a
// new key in Insightly, so logout only clears connectd's storage.
//
// Documentation followed:
//   - https://api.insightly.com/v3.1/Help (Authentication, Users: GET
//     /Users/Me, rate limits and errors)
//   - https://support.insight.ly/en-US/Knowledge/article/1447/Working_with_the_Insightly_Web_API
//     (Basic auth with the key, 401 on a bad key, X-RateLimit-* headers)
//   - https://support.insight.ly/en-US/Knowledge/article/2775 (finding the
//     API key and API URL)
//
// Settings (read through connector.Config.Getenv; none required):
//   - INSIGHTLY_TEST_API_ORIGIN: one exact origin (scheme://host[:port])
//     accepted as API URL besides https://*.insightly.com (tests and
//     staging only).
package insightly

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

// Settings and form fields.
const (
	EnvTestAPIOrigin = "INSIGHTLY_TEST_API_ORIGIN"
	// FieldAPIURL is the const of the login form's API URL field (as in
	// App Connect's manifest); AdditionalInfo carries it by this name.
	FieldAPIURL      = "apiUrl"
	hostSuffix       = ".insightly.com"
	apiVersionPath   = "/v3.1"
	maxResponseBytes = 1 << 20
)

// Capabilities, checked at compile time.
var (
	_ connector.APIKeyConnector = (*Connector)(nil)
	_ connector.Unauthorizer    = (*Connector)(nil)
	_ connector.AuthValidator   = (*Connector)(nil)
)

// Connector talks to Insightly. Build it with New.
type Connector struct {
	testOrigin *url.URL
	logger     *slog.Logger
}

// New builds the Insightly connector; it matches connector.Factory. It
// needs no server-side secret.
func New(cfg connector.Config) (connector.Connector, error) {
	c := &Connector{logger: cfg.Logger}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Getenv != nil {
		if v := strings.TrimSpace(cfg.Getenv(EnvTestAPIOrigin)); v != "" {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
				return nil, fmt.Errorf("%w: %s must be an absolute http(s) origin", connector.ErrUnavailable, EnvTestAPIOrigin)
			}
			c.testOrigin = &url.URL{Scheme: u.Scheme, Host: u.Host}
		}
	}
	return c, nil
}

// AuthType implements connector.Connector.
func (c *Connector) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthAPIKey, nil
}

// BasicAuth implements connector.APIKeyConnector: base64("<key>:"), the key
// as user name with an empty password.
func (c *Connector) BasicAuth(apiKey string) string {
	return base64.StdEncoding.EncodeToString([]byte(apiKey + ":"))
}

// APIBase normalises the API URL a user pasted into the base to call, e.g.
// "https://api.na1.insightly.com/v3.1/" -> "https://api.na1.insightly.com/v3.1":
// cut at "/v", append "/v3.1". It refuses anything but https hosts under
// insightly.com (no port, no credentials, no other path): the API key is
// sent there.
func (c *Connector) APIBase(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", errors.New("the Insightly API URL is empty; copy it from Insightly's User Settings (API section)")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("the Insightly API URL %q is not a URL", raw)
	}
	path := u.Path
	if i := strings.Index(path, "/v"); i >= 0 {
		path = path[:i]
	}
	if strings.Trim(path, "/") != "" {
		return "", fmt.Errorf("the Insightly API URL %q has an unexpected path; it looks like https://api.<pod>.insightly.com/v3.1/", raw)
	}
	if c.testOrigin != nil && u.Scheme == c.testOrigin.Scheme && strings.EqualFold(u.Host, c.testOrigin.Host) && u.User == nil {
		return c.testOrigin.Scheme + "://" + c.testOrigin.Host + apiVersionPath, nil
	}
	host := strings.ToLower(u.Hostname())
	sub := strings.TrimSuffix(host, hostSuffix)
	if u.Scheme != "https" {
		return "", fmt.Errorf("the Insightly API URL %q must start with https://", raw)
	}
	if u.User != nil || u.Port() != "" || sub == host || sub == "" || strings.HasPrefix(sub, ".") || strings.HasSuffix(sub, ".") {
		return "", fmt.Errorf("the Insightly API URL %q is not an insightly.com address (https://api.<pod>.insightly.com/v3.1/)", raw)
	}
	return "https://" + host + apiVersionPath, nil
}

// me is Insightly's /Users/Me answer (flat, upper-case keys).
type me struct {
	UserID       json.Number `json:"USER_ID"`
	FirstName    string      `json:"FIRST_NAME"`
	LastName     string      `json:"LAST_NAME"`
	Email        string      `json:"EMAIL_ADDRESS"`
	TimezoneID   string      `json:"TIMEZONE_ID"`
	InstanceID   json.Number `json:"INSTANCE_ID"`
	Admin        bool        `json:"ADMINISTRATOR"`
	Active       *bool       `json:"ACTIVE"`
	AccountOwner bool        `json:"ACCOUNT_OWNER"`
}

// statusErr is the error for a Users/Me answer that is neither a success
// nor a refusal of the key.
func statusErr(r connector.Response) error {
	if r.Status == http.StatusTooManyRequests {
		return fmt.Errorf("insightly: Users/Me rate limited (429, Retry-After %q)", r.Header.Get("Retry-After"))
	}
	return fmt.Errorf("insightly: Users/Me answered HTTP %d", r.Status)
}

func (c *Connector) getMe(ctx context.Context, client *http.Client, base, authHeader string) (connector.Response, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/Users/Me", nil)
	if err != nil {
		return connector.Response{}, fmt.Errorf("insightly: Users/Me request: %w", err)
	}
	resp, err := connector.Call(client, hreq, authHeader, maxResponseBytes)
	if err != nil {
		return connector.Response{}, fmt.Errorf("insightly: Users/Me: %w", err)
	}
	return resp, nil
}

func refused(msg string) connector.UserInfoResult {
	return connector.UserInfoResult{ReturnMessage: &connector.ReturnMessage{
		Message: msg, MessageType: connector.MessageWarning, TTL: 5000,
	}}
}

// UserInfo implements connector.Connector: GET {api url}/v3.1/Users/Me
// with the key's Basic header.
func (c *Connector) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	base, err := c.APIBase(req.AdditionalInfo[FieldAPIURL])
	if err != nil {
		return refused(err.Error() + "."), nil
	}
	auth := req.AuthHeader
	if auth == "" {
		key := req.APIKey.Reveal()
		if key == "" {
			key = req.AdditionalInfo["apiKey"]
		}
		if key == "" {
			return refused("The Insightly API key is empty."), nil
		}
		auth = "Basic " + c.BasicAuth(key)
	}
	r, err := c.getMe(ctx, req.HTTPClient, base, auth)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	switch r.Status {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return refused("Insightly did not accept the API key. Check the key and the API URL in Insightly's User Settings."), nil
	default:
		return connector.UserInfoResult{}, statusErr(r)
	}
	var m me
	if err := json.Unmarshal(r.Body, &m); err != nil {
		return connector.UserInfoResult{}, fmt.Errorf("insightly: Users/Me answered malformed JSON: %w", err)
	}
	if m.UserID.String() == "" {
		return connector.UserInfoResult{}, errors.New("insightly: Users/Me answered without USER_ID")
	}
	name := strings.TrimSpace(m.FirstName + " " + m.LastName)
	if name == "" {
		name = m.Email
	}
	info := map[string]any{FieldAPIURL: strings.TrimSuffix(base, apiVersionPath)}
	if s := m.InstanceID.String(); s != "" {
		info["instanceId"] = s
	}
	return connector.UserInfoResult{
		Successful: true,
		User: connector.PlatformUser{
			ID:             m.UserID.String(),
			Name:           name,
			TimezoneName:   IANAZone(m.TimezoneID),
			AdditionalInfo: info,
		},
		ReturnMessage: &connector.ReturnMessage{
			Message: "Connected to Insightly.", MessageType: connector.MessageSuccess, TTL: 3000,
		},
	}, nil
}

// ValidateAuth implements connector.AuthValidator with Users/Me at the
// stored API URL; the engine's client injects the key's Basic header.
func (c *Connector) ValidateAuth(ctx context.Context, req connector.UserRequest) (connector.ValidationResult, error) {
	stored, _ := req.User.AdditionalInfo[FieldAPIURL].(string)
	base, err := c.APIBase(stored)
	if err != nil {
		return connector.ValidationResult{}, fmt.Errorf("insightly: stored API URL: %w", err)
	}
	r, err := c.getMe(ctx, req.HTTPClient, base, "")
	if err != nil {
		return connector.ValidationResult{}, err
	}
	switch r.Status {
	case http.StatusOK:
		return connector.ValidationResult{Successful: true, Status: http.StatusOK}, nil
	case http.StatusUnauthorized:
		return connector.ValidationResult{Status: http.StatusUnauthorized, ReturnMessage: &connector.ReturnMessage{
			Message:     "Insightly no longer accepts the API key. Please connect again with a current key.",
			MessageType: connector.MessageWarning, TTL: 5000,
		}}, nil
	default:
		return connector.ValidationResult{}, statusErr(r)
	}
}

// Unauthorize implements connector.Unauthorizer. Insightly has nothing to
// revoke upstream (the key stays valid until its owner generates a new
// one), so this only reports success; the engine deletes the stored key.
func (c *Connector) Unauthorize(context.Context, connector.UserRequest) (connector.Result, error) {
	return connector.Result{Successful: true, ReturnMessage: &connector.ReturnMessage{
		Message:     "Logged out of Insightly. To revoke the API key itself, generate a new one in Insightly's User Settings.",
		MessageType: connector.MessageSuccess,
		TTL:         3000,
	}}, nil
}

// IANAZone maps Insightly's TIMEZONE_ID (a Windows zone name such as
// "Eastern Standard Time") to its IANA name using CLDR's windowsZones
// primary ("001") mappings. IANA names pass through; unknown names come back
// unchanged.
func IANAZone(windows string) string {
	switch windows {
	case "Dateline Standard Time":
		return "Etc/GMT+12"
	case "UTC-11":
		return "Etc/GMT+11"
	case "Hawaiian Standard Time":
		return "Pacific/Honolulu"
	case "Alaskan Standard Time":
		return "America/Anchorage"
	case "Pacific Standard Time (Mexico)":
		return "America/Tijuana"
	case "Pacific Standard Time":
		return "America/Los_Angeles"
	case "US Mountain Standard Time":
		return "America/Phoenix"
	case "Mountain Standard Time (Mexico)":
		return "America/Mazatlan"
	case "Mountain Standard Time":
		return "America/Denver"
	case "Central America Standard Time":
		return "America/Guatemala"
	case "Central Standard Time":
		return "America/Chicago"
	case "Central Standard Time (Mexico)":
		return "America/Mexico_City"
	case "Canada Central Standard Time":
		return "America/Regina"
	case "SA Pacific Standard Time":
		return "America/Bogota"
	case "Eastern Standard Time":
		return "America/New_York"
	case "US Eastern Standard Time":
		return "America/Indiana/Indianapolis"
	case "Venezuela Standard Time":
		return "America/Caracas"
	case "Atlantic Standard Time":
		return "America/Halifax"
	case "SA Western Standard Time":
		return "America/La_Paz"
	case "Pacific SA Standard Time":
		return "America/Santiago"
	case "Newfoundland Standard Time":
		return "America/St_Johns"
	case "E. South America Standard Time":
		return "America/Sao_Paulo"
	case "Argentina Standard Time":
		return "America/Argentina/Buenos_Aires"
	case "Greenland Standard Time":
		return "America/Nuuk"
	case "UTC":
		return "Etc/UTC"
	case "GMT Standard Time":
		return "Europe/London"
	case "Greenwich Standard Time":
		return "Atlantic/Reykjavik"
	case "W. Europe Standard Time":
		return "Europe/Berlin"
	case "Central Europe Standard Time":
		return "Europe/Budapest"
	case "Romance Standard Time":
		return "Europe/Paris"
	case "Central European Standard Time":
		return "Europe/Warsaw"
	case "W. Central Africa Standard Time":
		return "Africa/Lagos"
	case "GTB Standard Time":
		return "Europe/Bucharest"
	case "E. Europe Standard Time":
		return "Europe/Chisinau"
	case "Egypt Standard Time":
		return "Africa/Cairo"
	case "South Africa Standard Time":
		return "Africa/Johannesburg"
	case "FLE Standard Time":
		return "Europe/Kyiv"
	case "Israel Standard Time":
		return "Asia/Jerusalem"
	case "Turkey Standard Time":
		return "Europe/Istanbul"
	case "Arabic Standard Time":
		return "Asia/Baghdad"
	case "Arab Standard Time":
		return "Asia/Riyadh"
	case "Russian Standard Time":
		return "Europe/Moscow"
	case "E. Africa Standard Time":
		return "Africa/Nairobi"
	case "Iran Standard Time":
		return "Asia/Tehran"
	case "Arabian Standard Time":
		return "Asia/Dubai"
	case "Afghanistan Standard Time":
		return "Asia/Kabul"
	case "Pakistan Standard Time":
		return "Asia/Karachi"
	case "India Standard Time":
		return "Asia/Kolkata"
	case "Sri Lanka Standard Time":
		return "Asia/Colombo"
	case "Nepal Standard Time":
		return "Asia/Kathmandu"
	case "Bangladesh Standard Time":
		return "Asia/Dhaka"
	case "Myanmar Standard Time":
		return "Asia/Yangon"
	case "SE Asia Standard Time":
		return "Asia/Bangkok"
	case "China Standard Time":
		return "Asia/Shanghai"
	case "Singapore Standard Time":
		return "Asia/Singapore"
	case "Taipei Standard Time":
		return "Asia/Taipei"
	case "W. Australia Standard Time":
		return "Australia/Perth"
	case "Tokyo Standard Time":
		return "Asia/Tokyo"
	case "Korea Standard Time":
		return "Asia/Seoul"
	case "Cen. Australia Standard Time":
		return "Australia/Adelaide"
	case "AUS Central Standard Time":
		return "Australia/Darwin"
	case "E. Australia Standard Time":
		return "Australia/Brisbane"
	case "AUS Eastern Standard Time":
		return "Australia/Sydney"
	case "Tasmania Standard Time":
		return "Australia/Hobart"
	case "West Pacific Standard Time":
		return "Pacific/Port_Moresby"
	case "New Zealand Standard Time":
		return "Pacific/Auckland"
	case "Fiji Standard Time":
		return "Pacific/Fiji"
	case "Tonga Standard Time":
		return "Pacific/Tongatapu"
	}
	return windows
}
