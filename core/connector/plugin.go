package connector

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

// Plugins. An App Connect plugin post-processes what the client logs (a call
// log note, an SMS, a fax). A plugin is a Connector whose manifest sets
// connectd.kind "plugin" and which implements SyncProcessor or
// AsyncProcessor (manifest isAsync picks which one the server calls).
//
// A plugin that needs a login to its own third-party service is an
// OAuthConnector (or APIKeyConnector) like any CRM connector: the engine
// runs the login (state, PKCE, encrypted storage, refresh, revocation) and
// hands the plugin an HTTP client that carries the credential. A plugin
// without a login has no auth block in its manifest and needs only AuthType
// and UserInfo stubs (they are never called).

// ErrInvalidPayload is wrapped by a plugin that cannot process what it was
// given (a missing note, a payload of the wrong shape). The server answers
// 400 with the error's text for synchronous calls and fails an
// asynchronous task without retrying it, so the text must be safe to show
// and must not contain the payload.
var ErrInvalidPayload = errors.New("invalid plugin payload")

// PluginRequest is what a plugin processes.
type PluginRequest struct {
	// HTTPClient has the engine's timeouts, size caps and SSRF guard.
	// When the plugin has a login and the caller is connected, it also
	// injects (and refreshes) the caller's credential.
	HTTPClient *http.Client
	// PluginID is the plugin's platform name.
	PluginID string
	// Data is App Connect's `data` object: {logInfo, contactId,
	// contactName, note, additionalSubmission, ...}. Always a JSON object.
	Data json.RawMessage
	// Config is App Connect's per-user plugin configuration (may be nil).
	Config json.RawMessage
	// TaskID is the asynchronous task id (App Connect's asyncTaskId): the
	// idempotency key of the work. An asynchronous task may be processed
	// more than once (at-least-once delivery after a crash), so side
	// effects must be keyed by it (e.g. a file named after it, overwritten).
	// Empty for synchronous calls.
	TaskID string
	// Login is the caller's plugin login (nil when not connected or the
	// plugin has none).
	Login *PluginLogin
	// HostAccountID is the caller's host account when known (a hint for
	// display; authorization is the server's business).
	HostAccountID string
}

// PluginLogin is the caller's login at the plugin's service, without
// credentials (HTTPClient carries them).
type PluginLogin struct {
	UserID         string // connectd's record id
	ServiceUserID  string // the user's id at the service
	Name           string
	AdditionalInfo map[string]any
}

// SyncProcessor processes content synchronously: the changed payload is
// the HTTP answer. It must be quick (App Connect waits for it).
type SyncProcessor interface {
	// ProcessSync returns the (possibly changed) data object.
	ProcessSync(ctx context.Context, req PluginRequest) (json.RawMessage, error)
}

// AsyncProcessor processes content asynchronously: the server accepts the
// call at once, stores it durably and calls ProcessAsync from a worker;
// the outcome is delivered to App Connect's callback and kept readable.
type AsyncProcessor interface {
	// ProcessAsync does the work. An error wrapping ErrInvalidPayload, or
	// a result with Successful=false, is final; any other error is retried
	// with backoff until the task expires.
	ProcessAsync(ctx context.Context, req PluginRequest) (PluginResult, error)
}

// PluginResult is an asynchronous outcome, App Connect's callback body
// {successful, message, note}.
type PluginResult struct {
	Successful bool `json:"successful"`
	// Message is shown to the user.
	Message string `json:"message"`
	// Note replaces the log's note when set.
	Note string `json:"note,omitempty"`
	// Data is an optional changed payload (readable from the task).
	Data json.RawMessage `json:"data,omitempty"`
}

// PluginLicenser reports a plugin's licence from the plugin's own source
// (a billing API). Optional: without it the server's licence sources
// (static per plugin, or the operator's per-account table) decide.
type PluginLicenser interface {
	PluginLicense(ctx context.Context, req PluginLicenseRequest) (PluginLicenseStatus, error)
}

// PluginLicenseRequest identifies whose licence is asked for.
type PluginLicenseRequest struct {
	HTTPClient    *http.Client
	PluginID      string
	HostKind      string
	HostAccountID string // empty: plugin-level status (no caller)
	Login         *PluginLogin
}

// PluginLicenseStatus is App Connect's plugin licence answer.
type PluginLicenseStatus struct {
	LicenseStatus bool `json:"licenseStatus"`
	// LicenseStatusDescription may contain limited markdown and links.
	LicenseStatusDescription string `json:"licenseStatusDescription"`
	// ErrorMessage is shown on the plugin list page (admins' attention).
	ErrorMessage string `json:"errorMessage,omitempty"`
}
