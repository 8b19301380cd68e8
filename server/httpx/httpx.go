// Package httpx holds the HTTP conventions every connectd surface shares:
// the one JSON error shape (`{"error": code, "message": safe text,
// "requestId": id}`), the single mapping from engine failure codes to HTTP
// statuses, strict JSON body decoding, and access to the request id and the
// request-scoped logger that server/middleware puts on the context.
//
// Surfaces with their own host envelope (App Connect, Kit, Blink) still use
// StatusOf and RequestID so statuses and ids agree everywhere.
package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/failure"
)

// Context keys set by server/middleware.
const (
	requestIDKey = "connectd.requestId"
	loggerKey    = "connectd.logger"
)

// RequestIDHeader carries the request id in both directions.
const RequestIDHeader = "X-Request-Id"

// SetRequestID stores the request id on c (used by the request id
// middleware).
func SetRequestID(c *gin.Context, id string) { c.Set(requestIDKey, id) }

// RequestID returns the request id, or "" outside the middleware.
func RequestID(c *gin.Context) string { return c.GetString(requestIDKey) }

// SetLogger stores the request-scoped logger on c.
func SetLogger(c *gin.Context, l hclog.Logger) { c.Set(loggerKey, l) }

// Logger returns the request-scoped logger (with the request id), or a
// null logger outside the middleware.
func Logger(c *gin.Context) hclog.Logger {
	if v, ok := c.Get(loggerKey); ok {
		if l, ok := v.(hclog.Logger); ok {
			return l
		}
	}
	return hclog.NewNullLogger()
}

// ErrorBody is the JSON error shape.
type ErrorBody struct {
	Error     string `json:"error"`
	Message   string `json:"message"`
	RequestID string `json:"requestId"`
}

// StatusOf maps an engine failure code to its HTTP status. It is THE
// mapping: surfaces never pick statuses for failures themselves.
func StatusOf(code failure.Code) int {
	switch code {
	case failure.InvalidRequest, failure.InvalidState, failure.MissingManagedFields, failure.LoginRejected:
		return http.StatusBadRequest
	case failure.Unauthenticated, failure.NeedsReauth:
		return http.StatusUnauthorized
	case failure.Forbidden:
		return http.StatusForbidden
	case failure.NotFound:
		return http.StatusNotFound
	case failure.Conflict:
		return http.StatusConflict
	case failure.TooLarge:
		return http.StatusRequestEntityTooLarge
	case failure.RateLimited:
		return http.StatusTooManyRequests
	case failure.UpstreamInvalid:
		return http.StatusBadGateway
	case failure.UpstreamUnavailable, failure.ConnectorUnavailable, failure.Unavailable, failure.Misconfigured:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// WriteError answers with the JSON error shape and aborts the chain.
// message must be safe to show (never a database or upstream string).
func WriteError(c *gin.Context, status int, code failure.Code, message string) {
	c.AbortWithStatusJSON(status, ErrorBody{Error: string(code), Message: message, RequestID: RequestID(c)})
}

// Fail answers err in the JSON error shape: code and safe message from the
// *failure.Error in its chain (Internal and a generic message otherwise),
// status from StatusOf. Server-side failures (5xx) are logged with their
// cause; the cause never reaches the response.
func Fail(c *gin.Context, err error) {
	code := failure.CodeOf(err)
	status := StatusOf(code)
	if status >= 500 {
		Logger(c).Error("request failed", "code", string(code), "error", err)
	} else {
		Logger(c).Debug("request rejected", "code", string(code), "error", err)
	}
	WriteError(c, status, code, failure.MessageOf(err))
}

// DecodeOptions tune DecodeJSON.
type DecodeOptions struct {
	// DisallowUnknownFields rejects members the target type does not
	// declare. Off by default: App Connect clients send extra members.
	DisallowUnknownFields bool
}

// DecodeJSON decodes the request body (already capped by the body limit
// middleware) into v. It rejects, as a *failure.Error, an empty body, a
// body that is not one JSON value of v's shape (wrong types, not an
// object), trailing data after the value (InvalidRequest -> 400), and a
// body over the limit (TooLarge -> 413). Messages are safe to show.
func DecodeJSON(c *gin.Context, v any) error {
	return DecodeJSONWith(c, v, DecodeOptions{})
}

// DecodeJSONStrict is DecodeJSON that also rejects unknown members.
func DecodeJSONStrict(c *gin.Context, v any) error {
	return DecodeJSONWith(c, v, DecodeOptions{DisallowUnknownFields: true})
}

// DecodeJSONWith is DecodeJSON with options.
func DecodeJSONWith(c *gin.Context, v any, opts DecodeOptions) error {
	if c.Request.Body == nil || c.Request.Body == http.NoBody {
		return failure.Newf(failure.InvalidRequest, "A JSON body is required.")
	}
	data, err := io.ReadAll(c.Request.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return failure.New(failure.TooLarge, fmt.Sprintf("The request body is larger than %d bytes.", mbe.Limit), err)
		}
		return failure.New(failure.InvalidRequest, "The request body could not be read.", err)
	}
	return DecodeBytes(data, v, opts)
}

// DecodeBytes is the decoding rule of DecodeJSON on a byte slice (also
// what the fuzz target exercises).
func DecodeBytes(data []byte, v any, opts DecodeOptions) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return failure.Newf(failure.InvalidRequest, "A JSON body is required.")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if opts.DisallowUnknownFields {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		var syntaxErr *json.SyntaxError
		switch {
		case errors.As(err, &typeErr):
			if typeErr.Field != "" {
				return failure.New(failure.InvalidRequest, fmt.Sprintf("The JSON member %q has the wrong type.", typeErr.Field), err)
			}
			return failure.New(failure.InvalidRequest, "The JSON body has the wrong shape.", err)
		case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
			return failure.New(failure.InvalidRequest, "The body is not valid JSON.", err)
		default:
			// Unknown fields and anything else: the message does not echo input.
			return failure.New(failure.InvalidRequest, "The JSON body has the wrong shape.", err)
		}
	}
	// Exactly one value: anything but whitespace after it is rejected.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return failure.Newf(failure.InvalidRequest, "The body has data after the JSON value.")
	}
	return nil
}
