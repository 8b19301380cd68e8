// Package middleware is connectd's gin middleware: request ids, panic
// recovery, access logs, the request body limit, security headers and
// CORS. server.New installs them in that order on every route; surfaces
// never install their own copies.
package middleware

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/server/httpx"
)

// validRequestID accepts ids a proxy might set: 1-64 characters of
// [A-Za-z0-9._-]. Anything else is replaced, so ids are safe in logs.
func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		ch := id[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '_' || ch == '-') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// RequestID takes X-Request-Id from the request when it is well formed,
// else generates one; echoes it in the response; and puts it, with a
// request-scoped child of logger, on the context (httpx.RequestID,
// httpx.Logger).
func RequestID(logger hclog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		id := c.GetHeader(httpx.RequestIDHeader)
		if !validRequestID(id) {
			id = newRequestID()
		}
		httpx.SetRequestID(c, id)
		httpx.SetLogger(c, logger.With("request_id", id))
		c.Header(httpx.RequestIDHeader, id)
		c.Next()
	}
}

// Recovery turns a panic in a handler into a 500 JSON error carrying the
// request id. The panic value and stack go to the log (no request headers,
// no body); nothing of them reaches the response. http.ErrAbortHandler is
// re-raised so net/http aborts the connection as the handler asked.
func Recovery() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			rec := recover()
			if rec == nil {
				return
			}
			if err, ok := rec.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(rec)
			}
			httpx.Logger(c).Error("panic in handler",
				"method", c.Request.Method,
				"route", c.FullPath(),
				"path", c.Request.URL.Path,
				"panic", fmt.Sprint(rec),
				"stack", string(debug.Stack()))
			if c.Writer.Written() {
				c.Abort()
				return
			}
			httpx.WriteError(c, http.StatusInternalServerError, failure.Internal, "Internal error.")
		}()
		c.Next()
	}
}

// AccessLog logs one line per request: method, path WITHOUT the query
// string (callback URLs carry codes and states there), route template,
// status, size, duration, client IP. 5xx log at warn, the rest at info.
func AccessLog() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		status := c.Writer.Status()
		args := []any{
			"method", c.Request.Method,
			"path", c.Request.URL.Path,
			"route", c.FullPath(),
			"status", status,
			"bytes", c.Writer.Size(),
			"duration", time.Since(start),
			"client_ip", c.ClientIP(),
		}
		l := httpx.Logger(c)
		if status >= 500 {
			l.Warn("request", args...)
		} else {
			l.Info("request", args...)
		}
	}
}

// BodyLimit caps request bodies at limit bytes: a declared Content-Length
// over the limit is answered 413 at once; a longer streamed body makes the
// handler's read fail with *http.MaxBytesError (httpx.DecodeJSON turns it
// into 413).
func BodyLimit(limit int64) gin.HandlerFunc {
	return func(c *gin.Context) {
		if c.Request.ContentLength > limit {
			// Close after answering: the unread body must not be parsed as
			// the next request.
			c.Header("Connection", "close")
			httpx.WriteError(c, http.StatusRequestEntityTooLarge, failure.TooLarge, fmt.Sprintf("The request body is larger than %d bytes.", limit))
			return
		}
		if c.Request.Body != nil && c.Request.Body != http.NoBody {
			c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, limit)
		}
		c.Next()
	}
}

// SecurityHeaders sets the headers every response carries (pages and JSON
// alike): no caching (responses hold tokens and per-user data), no
// referrer, no framing, no MIME sniffing. A handler that needs different
// values (a page meant to be framed by a known host) overrides them with
// c.Header before writing.
func SecurityHeaders() gin.HandlerFunc {
	return func(c *gin.Context) {
		h := c.Writer.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		c.Next()
	}
}

// CORS headers.
const (
	// RefreshedTokenHeader carries a refreshed session JWT (App Connect's
	// x-refreshed-jwt-token); browsers may read it.
	RefreshedTokenHeader = "x-refreshed-jwt-token"
	allowMethods         = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
	allowHeaders         = "Authorization, Content-Type, X-Request-Id, X-RC-Access-Token, x-refreshed-jwt-token"
)

// CORS allows cross-origin requests from the listed origins only (exact
// scheme://host[:port], lower case; no wildcard, since credentials are
// allowed). A request from another origin gets no Access-Control-* header
// at all, so the browser blocks it; its preflight is answered 204 without
// them. Preflights never reach handlers.
func CORS(origins []string) gin.HandlerFunc {
	allowed := make([]string, len(origins))
	for i, o := range origins {
		allowed[i] = strings.ToLower(strings.TrimRight(o, "/"))
	}
	return func(c *gin.Context) {
		origin := c.GetHeader("Origin")
		preflight := c.Request.Method == http.MethodOptions && c.GetHeader("Access-Control-Request-Method") != ""
		h := c.Writer.Header()
		if origin != "" {
			h.Add("Vary", "Origin")
		}
		ok := origin != "" && slices.Contains(allowed, strings.ToLower(origin))
		if ok {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true")
			h.Set("Access-Control-Expose-Headers", RefreshedTokenHeader+", "+httpx.RequestIDHeader)
		}
		if preflight {
			if ok {
				h.Set("Access-Control-Allow-Methods", allowMethods)
				h.Set("Access-Control-Allow-Headers", allowHeaders)
				h.Set("Access-Control-Max-Age", strconv.Itoa(600))
			}
			c.AbortWithStatus(http.StatusNoContent)
			return
		}
		c.Next()
	}
}
