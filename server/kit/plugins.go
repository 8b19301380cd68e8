package kit

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/connectd/connectd/core/auth"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	corekit "github.com/connectd/connectd/core/kit"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/server/httpx"
)

// Plugin call bounds.
const (
	maxPluginBody  = 256 << 10
	pluginDeadline = 30 * time.Second
	callerKey      = "connectd.kit.caller"
)

// Caller is an authenticated Kit plugin request: the grant, its app, the
// creator's connector login and a ready connector.UserRequest whose client
// injects (and refreshes) the upstream credential.
type Caller struct {
	Bearer  *store.KitBearer
	User    *store.User
	Request connector.UserRequest
}

// CallerOf returns the Caller RequireBearer stored on c.
func CallerOf(c *gin.Context) (*Caller, bool) {
	v, ok := c.Get(callerKey)
	if !ok {
		return nil, false
	}
	cl, ok := v.(*Caller)
	return cl, ok
}

// RequireBearer authenticates Kit's Authorization: Bearer <access token>:
// a live grant of an app of connectorName ("" = the :connector path
// parameter) whose creator login is usable. Failures answer 401 (403 for
// another connector's grant) with WWW-Authenticate (RFC 6750) and Kit's
// error shape.
func (s *Surface) RequireBearer(connectorName string) gin.HandlerFunc {
	return func(c *gin.Context) {
		want := connectorName
		if want == "" {
			want = c.Param("connector")
		}
		authz := c.GetHeader("Authorization")
		scheme, tok, _ := strings.Cut(authz, " ")
		tok = strings.TrimSpace(tok)
		if !strings.EqualFold(scheme, "Bearer") || tok == "" {
			c.Header("WWW-Authenticate", `Bearer realm="connectd kit"`)
			kitError(c, http.StatusUnauthorized, "A Kit access token is required.")
			return
		}
		ctx := c.Request.Context()
		b, err := s.svc.Bearer(ctx, tok)
		if err != nil {
			if code := oauthCode(err); code == "invalid_token" {
				c.Header("WWW-Authenticate", `Bearer realm="connectd kit", error="invalid_token", error_description="The access token is invalid, expired or revoked."`)
				kitError(c, http.StatusUnauthorized, "The access token is invalid, expired or revoked.")
				return
			}
			httpx.Logger(c).Error("kit bearer check failed", "error", err)
			kitError(c, http.StatusServiceUnavailable, "The server is temporarily unavailable.")
			return
		}
		if b.App.Connector != want {
			c.Header("WWW-Authenticate", `Bearer realm="connectd kit", error="insufficient_scope", error_description="This token is for another connector."`)
			kitError(c, http.StatusForbidden, "This access token is not valid for this connector.")
			return
		}
		u, err := s.o.Users.User(ctx, b.Grant.UserID)
		if err != nil {
			if failure.CodeOf(err) == failure.NeedsReauth {
				c.Header("WWW-Authenticate", `Bearer realm="connectd kit", error="invalid_token", error_description="The connection to the service ended; reinstall the app."`)
				kitError(c, http.StatusUnauthorized, "The connection to "+s.serviceName(want)+" has ended. Please reinstall the app.")
				return
			}
			httpx.Logger(c).Error("kit bearer: reading the creator's login failed", "error", err)
			kitError(c, http.StatusServiceUnavailable, "The server is temporarily unavailable.")
			return
		}
		req := connector.UserRequest{HTTPClient: s.o.Refresher.HTTPClient(u.ID), User: u.ConnectorUser()}
		if u.OAuthAppRef == "" {
			if ent, err := s.o.Registry.Get(u.Platform); err == nil && ent.Platform.AuthType() == connector.AuthOAuth {
				if info, err := auth.ConnectorOAuthInfo(ctx, s.o.Registry, u.Platform, connector.OAuthInfoRequest{Hostname: u.Hostname}); err == nil {
					req.OAuth = info
				}
			}
		}
		c.Set(callerKey, &Caller{Bearer: b, User: u, Request: req})
		c.Next()
	}
}

func oauthCode(err error) string {
	var e *corekit.OAuthError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// kitError answers Kit's plugin error shape {"code", "errors"}.
func kitError(c *gin.Context, status int, msgs ...string) {
	c.Header("Cache-Control", "no-store")
	c.AbortWithStatusJSON(status, gin.H{"code": status, "errors": msgs})
}

// POST /kit/plugins/:connector/:plugin
func (s *Surface) plugin(c *gin.Context) {
	cl, _ := CallerOf(c)
	ent, err := s.o.Registry.Get(cl.Bearer.App.Connector)
	if err != nil || !ent.Available {
		kitError(c, http.StatusServiceUnavailable, "This connector is not available.")
		return
	}
	prov, ok := ent.Connector.(connector.KitPluginProvider)
	if !ok {
		kitError(c, http.StatusNotFound, "This connector has no Kit plugins.")
		return
	}
	name := c.Param("plugin")
	var p *connector.KitPlugin
	for _, kp := range prov.KitPlugins() {
		if kp.Name == name && connector.ValidKitPluginName(kp.Name) && kp.Handle != nil {
			p = &kp
			break
		}
	}
	if p == nil {
		kitError(c, http.StatusNotFound, "Unknown plugin.")
		return
	}
	body, err := io.ReadAll(io.LimitReader(c.Request.Body, maxPluginBody+1))
	if err != nil || len(body) > maxPluginBody {
		kitError(c, http.StatusRequestEntityTooLarge, "The request body is too large.")
		return
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		body = []byte("{}")
	}
	if !json.Valid(body) {
		kitError(c, http.StatusBadRequest, "The request body is not JSON.")
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), pluginDeadline)
	defer cancel()
	res, err := p.Handle(ctx, connector.KitPluginRequest{UserRequest: cl.Request, Body: body})
	if err != nil {
		s.pluginFailure(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	items := res.Items
	if items == nil {
		items = []connector.Option{}
	}
	switch p.Kind {
	case connector.KitContentBlock:
		c.JSON(http.StatusOK, gin.H{"code": http.StatusOK, "html": res.HTML})
	case connector.KitSearchInput:
		c.JSON(http.StatusOK, gin.H{"data": items})
	case connector.KitDynamicSelect:
		c.JSON(http.StatusOK, gin.H{"options": items})
	default:
		httpx.Logger(c).Error("kit plugin has an unknown kind", "plugin", p.Name, "kind", string(p.Kind))
		kitError(c, http.StatusInternalServerError, "The plugin is misconfigured.")
	}
}

// pluginFailure maps a handler error: the connector's own Kit error as
// is, engine failures (login ended, service down) by code, anything else
// as a generic 502 whose cause only goes to the log.
func (s *Surface) pluginFailure(c *gin.Context, err error) {
	var ke *connector.KitPluginError
	if errors.As(err, &ke) {
		status := ke.Code
		if status < 400 || status > 599 {
			status = http.StatusBadGateway
		}
		msgs := ke.Messages
		if len(msgs) == 0 {
			msgs = []string{http.StatusText(status)}
		}
		kitError(c, status, msgs...)
		return
	}
	switch failure.CodeOf(err) {
	case failure.NeedsReauth:
		c.Header("WWW-Authenticate", `Bearer realm="connectd kit", error="invalid_token", error_description="The connection to the service ended; reinstall the app."`)
		kitError(c, http.StatusUnauthorized, "The connection to the service has ended. Please reinstall the app.")
		return
	case failure.UpstreamUnavailable:
		kitError(c, http.StatusServiceUnavailable, "The service could not be reached. Please try again.")
		return
	}
	httpx.Logger(c).Warn("kit plugin failed", "error", err)
	if errors.Is(err, context.DeadlineExceeded) {
		kitError(c, http.StatusGatewayTimeout, "The service took too long to answer.")
		return
	}
	kitError(c, http.StatusBadGateway, "The service answered something unexpected.")
}
