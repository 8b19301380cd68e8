// Package failure is the engine's typed error: a stable code every surface
// maps to its host's envelope, a message that is safe to show a user, and
// the internal cause for logs only. No database or upstream text ever
// reaches a response through Message.
package failure

import (
	"errors"
	"fmt"
)

// Code is a stable, machine-readable error code.
type Code string

// The codes. Surfaces map them to HTTP statuses and host envelopes.
const (
	InvalidRequest       Code = "invalid_request"        // 400: malformed or missing input
	InvalidState         Code = "invalid_state"          // 400: OAuth state missing, unknown, used, expired or mismatched
	Unauthenticated      Code = "unauthenticated"        // 401: no or bad caller credential
	Forbidden            Code = "forbidden"              // 403: authenticated, not allowed
	NotFound             Code = "not_found"              // 404
	Conflict             Code = "conflict"               // 409
	TooLarge             Code = "too_large"              // 413
	RateLimited          Code = "rate_limited"           // 429
	NeedsReauth          Code = "needs_reauth"           // 401 CRM_SESSION_REVOKED: the service refused the credential for good
	MissingManagedFields Code = "missing_managed_fields" // 400 warning with missingRequiredFieldConsts
	LoginRejected        Code = "login_rejected"         // 400: the service said no to this login (bad key, denied consent)
	UpstreamUnavailable  Code = "upstream_unavailable"   // 503: the service is down, slow or rate limiting; nothing lost
	UpstreamInvalid      Code = "upstream_invalid"       // 502: the service answered something unusable
	Misconfigured        Code = "misconfigured"          // 500/503: operator or admin configuration (invalid_client, missing secret)
	ConnectorUnavailable Code = "connector_unavailable"  // 503: connector not configured on this server
	Unavailable          Code = "unavailable"            // 503: our database is unreachable
	Internal             Code = "internal"               // 500
)

// Error is an engine error.
type Error struct {
	Code Code
	// Message is safe to show to the end user.
	Message string
	// Cause is for logs only.
	Cause error
}

// Error implements error. It includes the cause, so never render Error()
// into a response: render Message.
func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Cause)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

// New returns an *Error.
func New(code Code, message string, cause error) *Error {
	return &Error{Code: code, Message: message, Cause: cause}
}

// Newf returns an *Error without a cause.
func Newf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of the first *Error in err's chain, or Internal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// MessageOf returns the safe message of the first *Error in err's chain, or
// a generic one.
func MessageOf(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Message != "" {
		return e.Message
	}
	return "Internal error."
}

// Is reports whether err carries code.
func Is(err error, code Code) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}
