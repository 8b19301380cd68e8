// Package admin is the managed-credentials surface: App Connect's managed
// auth routes (/apiKeyManagedAuthState, /oauthManagedAuthState,
// /admin/managedAuth, /admin/managedOAuth/*), connectd's audit log
// (/admin/audit) and the admin page (/admin) with its embedded assets.
//
// Callers prove a host identity (X-RC-Access-Token: a RingCentral token or
// an operator "cdi_" token; legacy rcAccessToken in the body or query).
// Admin routes need an ADMIN of the account they touch - the account is
// always the verified identity's, never a parameter. An App Connect session
// is optional; without one, platform is a required parameter. Stored
// secrets are never returned.
package admin

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/identity"
	"github.com/connectd/connectd/core/managed"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/httpx"
)

// IdentityVerifier verifies host tokens (*identity.Service).
type IdentityVerifier interface {
	Verify(ctx context.Context, token string) (*identity.Identity, error)
}

// SessionVerifier verifies App Connect sessions (*session.Manager).
type SessionVerifier interface {
	VerifyAppConnect(ctx context.Context, token string) (*session.Claims, error)
}

// Surface serves the managed-credentials routes and the admin page.
type Surface struct {
	Identity  IdentityVerifier
	Sessions  SessionVerifier // optional: without it, platform is always a parameter
	Managed   *managed.Service
	Manifests *manifest.Set
	Logger    hclog.Logger
}

var _ server.Surface = (*Surface)(nil)

// Register implements server.Surface.
func (s *Surface) Register(r gin.IRouter, _ server.Middlewares) {
	if s.Logger == nil {
		s.Logger = hclog.NewNullLogger()
	}
	r.GET("/apiKeyManagedAuthState", s.apiKeyState)
	r.GET("/oauthManagedAuthState", s.oauthState)
	r.GET("/admin/managedAuth", s.getManagedAuth)
	r.POST("/admin/managedAuth", s.postManagedAuth)
	r.POST("/admin/managedAuth/options", s.options)
	r.POST("/admin/managedOAuth/cache", s.putPendingApp)
	r.DELETE("/admin/managedOAuth/cache", s.deletePendingApp)
	r.DELETE("/admin/managedOAuth/account", s.deleteAccountApp)
	r.GET("/admin/audit", s.audit)
	s.registerPage(r)
}

// hostToken finds the caller's host token: the X-RC-Access-Token header,
// else (legacy) the body's or the query's rcAccessToken.
func hostToken(c *gin.Context, bodyToken string) string {
	if t := c.GetHeader("X-RC-Access-Token"); t != "" {
		return t
	}
	if bodyToken != "" {
		return bodyToken
	}
	return c.Query("rcAccessToken")
}

func (s *Surface) caller(c *gin.Context, bodyToken string) (*identity.Identity, error) {
	tok := hostToken(c, bodyToken)
	if tok == "" {
		return nil, failure.Newf(failure.Unauthenticated, "A host identity (X-RC-Access-Token) is required.")
	}
	if s.Identity == nil {
		return nil, failure.Newf(failure.Unauthenticated, "Host identities are not enabled on this server.")
	}
	return s.Identity.Verify(c.Request.Context(), tok)
}

// adminCaller authenticates an admin route: a verified identity of an
// admin, an optional App Connect session of the same account, and the
// platform (the session's, or the parameter when there is no session).
func (s *Surface) adminCaller(c *gin.Context, bodyToken, platformParam string) (managed.Actor, string, error) {
	id, err := s.caller(c, bodyToken)
	if err != nil {
		return managed.Actor{}, "", err
	}
	if !id.Admin {
		return managed.Actor{}, "", failure.Newf(failure.Forbidden, "Only an administrator of the account can manage its credentials.")
	}
	platform := platformParam
	if h := c.GetHeader("Authorization"); h != "" || c.Query("jwtToken") != "" {
		tok := bearer(h)
		if tok == "" {
			tok = c.Query("jwtToken")
		}
		if s.Sessions == nil || tok == "" {
			return managed.Actor{}, "", failure.Newf(failure.Unauthenticated, "The session could not be verified.")
		}
		cl, err := s.Sessions.VerifyAppConnect(c.Request.Context(), tok)
		if err != nil {
			return managed.Actor{}, "", failure.New(failure.Unauthenticated, "Your session is invalid or has expired. Please log in again.", err)
		}
		if cl.Host.AccountID != "" && (cl.Host.Kind != id.Host.Kind || cl.Host.AccountID != id.Host.AccountID) {
			return managed.Actor{}, "", failure.Newf(failure.Forbidden, "The session belongs to another account.")
		}
		if platform != "" && platform != cl.Platform {
			return managed.Actor{}, "", failure.Newf(failure.InvalidRequest, "platform does not match the session's platform.")
		}
		platform = cl.Platform
	}
	if platform == "" {
		return managed.Actor{}, "", failure.Newf(failure.InvalidRequest, "platform is required.")
	}
	return managed.Actor{Host: id.Host, Admin: true, RequestID: httpx.RequestID(c)}, platform, nil
}

func bearer(h string) string {
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// GET /apiKeyManagedAuthState?platform=X
func (s *Surface) apiKeyState(c *gin.Context) {
	id, err := s.caller(c, "")
	if err != nil {
		s.fail(c, err)
		return
	}
	st, err := s.Managed.APIKeyState(c.Request.Context(), c.Query("platform"), id.Host)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.ok(c, st)
}

// GET /oauthManagedAuthState?platform=X
func (s *Surface) oauthState(c *gin.Context) {
	id, err := s.caller(c, "")
	if err != nil {
		s.fail(c, err)
		return
	}
	st, err := s.Managed.OAuthState(c.Request.Context(), c.Query("platform"), id.Host, id.Admin)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.ok(c, st)
}

// GET /admin/managedAuth[?platform=X]
func (s *Surface) getManagedAuth(c *gin.Context) {
	a, platform, err := s.adminCaller(c, "", c.Query("platform"))
	if err != nil {
		s.fail(c, err)
		return
	}
	v, err := s.Managed.AdminView(c.Request.Context(), a, platform)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.ok(c, v)
}

type managedAuthBody struct {
	Platform       string         `json:"platform"`
	RCAccessToken  string         `json:"rcAccessToken"`
	Scope          string         `json:"scope"`
	RCExtensionID  any            `json:"rcExtensionId"`
	RCUserName     string         `json:"rcUserName"`
	Values         map[string]any `json:"values"`
	FieldsToRemove []string       `json:"fieldsToRemove"`
}

// POST /admin/managedAuth
func (s *Surface) postManagedAuth(c *gin.Context) {
	var b managedAuthBody
	if err := httpx.DecodeJSON(c, &b); err != nil {
		s.fail(c, err)
		return
	}
	a, platform, err := s.adminCaller(c, b.RCAccessToken, b.Platform)
	if err != nil {
		s.fail(c, err)
		return
	}
	vals, err := stringValues(b.Values)
	if err != nil {
		s.fail(c, err)
		return
	}
	ext, err := idString("rcExtensionId", b.RCExtensionID)
	if err != nil {
		s.fail(c, err)
		return
	}
	set, cleared, err := s.Managed.ApplyEdit(c.Request.Context(), a, platform, managed.Edit{
		Scope: b.Scope, UserID: ext, UserName: b.RCUserName, Values: vals, Remove: b.FieldsToRemove,
	})
	if err != nil {
		s.fail(c, err)
		return
	}
	s.ok(c, gin.H{
		"successful":    true,
		"fieldsSet":     nonNil(set),
		"fieldsRemoved": nonNil(cleared),
		"returnMessage": connector.ReturnMessage{Message: "Managed settings saved.", MessageType: connector.MessageSuccess, TTL: 3000},
	})
}

type optionsBody struct {
	Platform      string `json:"platform"`
	RCAccessToken string `json:"rcAccessToken"`
	FieldConst    string `json:"fieldConst"`
}

// POST /admin/managedAuth/options
func (s *Surface) options(c *gin.Context) {
	var b optionsBody
	if err := httpx.DecodeJSON(c, &b); err != nil {
		s.fail(c, err)
		return
	}
	a, platform, err := s.adminCaller(c, b.RCAccessToken, b.Platform)
	if err != nil {
		s.fail(c, err)
		return
	}
	opts, err := s.Managed.Options(c.Request.Context(), a, platform, b.FieldConst)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.ok(c, gin.H{"successful": true, "options": opts})
}

type appBody struct {
	Platform      string `json:"platform"`
	RCAccessToken string `json:"rcAccessToken"`
	Values        struct {
		ClientID         string `json:"clientId"`
		ClientSecret     string `json:"clientSecret"`
		AccessTokenURI   string `json:"accessTokenUri"`
		AuthorizationURI string `json:"authorizationUri"`
		RedirectURI      string `json:"redirectUri"`
		Scopes           any    `json:"scopes"`
		Hostname         string `json:"hostname"`
	} `json:"values"`
}

// POST /admin/managedOAuth/cache: store the account's PENDING app.
func (s *Surface) putPendingApp(c *gin.Context) {
	var b appBody
	if err := httpx.DecodeJSON(c, &b); err != nil {
		s.fail(c, err)
		return
	}
	a, platform, err := s.adminCaller(c, b.RCAccessToken, b.Platform)
	if err != nil {
		s.fail(c, err)
		return
	}
	scopes, err := scopeList(b.Values.Scopes)
	if err != nil {
		s.fail(c, err)
		return
	}
	v, err := s.Managed.PutPendingApp(c.Request.Context(), a, platform, managed.AppInput{
		ClientID: b.Values.ClientID, ClientSecret: b.Values.ClientSecret, TokenURL: b.Values.AccessTokenURI,
		AuthURL: b.Values.AuthorizationURI, RedirectURI: b.Values.RedirectURI, Scopes: scopes, Hostname: b.Values.Hostname,
	})
	if err != nil {
		s.fail(c, err)
		return
	}
	s.ok(c, gin.H{
		"successful":    true,
		"pendingValues": v,
		"returnMessage": connector.ReturnMessage{Message: "OAuth app saved. It becomes active after the first successful login.", MessageType: connector.MessageSuccess, TTL: 5000},
	})
}

// DELETE /admin/managedOAuth/cache[?platform=X]
func (s *Surface) deletePendingApp(c *gin.Context) {
	s.deleteApps(c, s.Managed.DeletePendingApp)
}

// DELETE /admin/managedOAuth/account[?platform=X]
func (s *Surface) deleteAccountApp(c *gin.Context) {
	s.deleteApps(c, s.Managed.DeleteAccountApp)
}

func (s *Surface) deleteApps(c *gin.Context, del func(context.Context, managed.Actor, string) (int, error)) {
	a, platform, err := s.adminCaller(c, "", c.Query("platform"))
	if err != nil {
		s.fail(c, err)
		return
	}
	n, err := del(c.Request.Context(), a, platform)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.ok(c, gin.H{"successful": true, "deleted": n})
}

type auditEvent struct {
	ID        string   `json:"id"`
	At        string   `json:"at"`
	ActorKind string   `json:"actorKind"`
	AccountID string   `json:"accountId"`
	UserID    string   `json:"userId"`
	Action    string   `json:"action"`
	Platform  string   `json:"platform"`
	Target    string   `json:"target"`
	Fields    []string `json:"fields"`
	RequestID string   `json:"requestId"`
}

// GET /admin/audit[?platform=X][&limit=N][&before=RFC3339]
func (s *Surface) audit(c *gin.Context) {
	a, platform, err := s.adminCaller(c, "", c.Query("platform"))
	if err != nil {
		s.fail(c, err)
		return
	}
	limit := 100
	if l := c.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 500 {
			s.fail(c, failure.Newf(failure.InvalidRequest, "limit must be between 1 and 500."))
			return
		}
		limit = n
	}
	var before *time.Time
	if b := c.Query("before"); b != "" {
		t, err := time.Parse(time.RFC3339Nano, b)
		if err != nil {
			s.fail(c, failure.Newf(failure.InvalidRequest, "before must be an RFC 3339 time."))
			return
		}
		before = &t
	}
	evs, err := s.Managed.AuditLog(c.Request.Context(), a, platform, limit, before)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := make([]auditEvent, 0, len(evs))
	for _, e := range evs {
		out = append(out, auditEvent{
			ID: e.ID, At: e.At.UTC().Format(time.RFC3339Nano), ActorKind: e.Actor.Kind, AccountID: e.Actor.AccountID,
			UserID: e.Actor.UserID, Action: e.Action, Platform: e.Platform, Target: e.Target, Fields: nonNil(e.Fields), RequestID: e.RequestID,
		})
	}
	s.ok(c, gin.H{"events": out})
}

func (s *Surface) ok(c *gin.Context, v any) {
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, v)
}

// fail answers in App Connect's envelope with connectd's code and the
// request id. Messages are the failures' safe text.
func (s *Surface) fail(c *gin.Context, err error) {
	code := failure.CodeOf(err)
	status := httpx.StatusOf(code)
	if status >= 500 {
		httpx.Logger(c).Error("request failed", "code", string(code), "error", err)
	} else {
		httpx.Logger(c).Debug("request rejected", "code", string(code), "error", err)
	}
	msgType := connector.MessageWarning
	if status >= 500 {
		msgType = connector.MessageDanger
	}
	c.Header("Cache-Control", "no-store")
	c.AbortWithStatusJSON(status, gin.H{
		"successful":    false,
		"returnMessage": connector.ReturnMessage{Message: failure.MessageOf(err), MessageType: msgType, TTL: 5000},
		"error":         string(code),
		"requestId":     httpx.RequestID(c),
	})
}

// stringValues flattens submitted values (strings; numbers and booleans
// as text); nested values are refused.
func stringValues(in map[string]any) (map[string]string, error) {
	out := make(map[string]string, len(in))
	for k, v := range in {
		switch x := v.(type) {
		case nil:
		case string:
			out[k] = x
		case bool:
			out[k] = strconv.FormatBool(x)
		case float64:
			out[k] = strconv.FormatFloat(x, 'f', -1, 64)
		default:
			return nil, failure.Newf(failure.InvalidRequest, "values must be strings.")
		}
	}
	return out, nil
}

// idString accepts an id sent as a JSON string or number (RingCentral ids
// are numbers in App Connect's client).
func idString(name string, v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case float64:
		if x != float64(int64(x)) || x < 0 {
			return "", failure.Newf(failure.InvalidRequest, "%s is not a valid id.", name)
		}
		return strconv.FormatInt(int64(x), 10), nil
	}
	return "", failure.Newf(failure.InvalidRequest, "%s is not a valid id.", name)
}

// scopeList accepts scopes as a space/comma separated string or a list.
func scopeList(v any) ([]string, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		return strings.FieldsFunc(x, func(r rune) bool { return r == ' ' || r == ',' }), nil
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, failure.Newf(failure.InvalidRequest, "scopes must be strings.")
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, failure.Newf(failure.InvalidRequest, "scopes must be a string or a list of strings.")
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
