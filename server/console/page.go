package console

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"sort"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/server/httpx"
)

//go:embed assets/console.html assets/console.js assets/console.css assets/icon.svg
var assets embed.FS

var pageTemplate = template.Must(template.ParseFS(assets, "assets/console.html"))

// pageCSP: only this server's own script, style and API; no inline script,
// no external assets.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"

func pageHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
}

func asset(name, contentType string) gin.HandlerFunc {
	body, err := assets.ReadFile(name)
	if err != nil {
		panic("console: missing embedded asset " + name) // a build mistake, caught by every test
	}
	return func(c *gin.Context) {
		pageHeaders(c)
		c.Header("Cache-Control", "no-cache")
		c.Data(http.StatusOK, contentType, body)
	}
}

// connectorView is one row of the connector list.
type connectorView struct {
	Key       string `json:"platform"`
	Label     string `json:"label"`
	AuthType  string `json:"authType"`
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
	Demo      bool   `json:"demo"`
}

// SessionView is what the console shows of a login. It never holds a
// token, key or secret: only the record's description.
type SessionView struct {
	ID            string `json:"id"` // the session id (not a credential)
	Platform      string `json:"platform"`
	PlatformLabel string `json:"platformLabel"`
	Demo          bool   `json:"demo"`
	AuthType      string `json:"authType"`
	User          string `json:"user"`
	CRMUserID     string `json:"crmUserId"`
	AppConnectID  string `json:"appConnectId"`
	Status        string `json:"status"`
	// TokenExpiry is the access token's expiry (RFC 3339, UTC, ms);
	// empty for API keys and tokens without a known expiry.
	TokenExpiry   string `json:"tokenExpiry"`
	TokenExpiryMS int64  `json:"tokenExpiryMs"`
	// RefreshToken says whether one is held (never its value).
	RefreshToken bool `json:"hasRefreshToken"`
	// Version counts credential changes (login, refreshes).
	Version        int64  `json:"credentialVersion"`
	SessionExpires string `json:"sessionExpires"`
	Refreshable    bool   `json:"refreshable"`
}

const timeLayout = "2006-01-02T15:04:05.000Z07:00"

func (s *Surface) label(platform string) string {
	// Get returns the entry of an unavailable connector too (with an error).
	if e, _ := s.o.Registry.Get(platform); e.Platform != nil && e.Platform.DisplayName != "" {
		return e.Platform.DisplayName
	}
	return platform
}

func (s *Surface) connectors() []connectorView {
	var out []connectorView
	for _, e := range s.o.Registry.List() {
		v := connectorView{Key: e.Name, Label: e.Name, Available: e.Available, Reason: e.Reason, Demo: s.o.Demo(e.Name)}
		if e.Platform != nil {
			if e.Platform.DisplayName != "" {
				v.Label = e.Platform.DisplayName
			}
			v.AuthType = string(e.Platform.AuthType())
		}
		if v.AuthType == "" {
			continue // plugins without a third-party login
		}
		out = append(out, v)
	}
	// Demo connectors first: they are what a newcomer tries.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Demo && !out[j].Demo })
	return out
}

// view describes e's login record.
func (s *Surface) view(c *gin.Context, e entry) (SessionView, error) {
	u, err := s.o.Users.GetUser(c.Request.Context(), e.claims.Subject)
	if err != nil {
		return SessionView{}, err
	}
	v := SessionView{
		ID: e.claims.SessionID, Platform: u.Platform, PlatformLabel: s.label(u.Platform), Demo: s.o.Demo(u.Platform),
		User: u.DisplayName, CRMUserID: u.CRMUserID, AppConnectID: u.AppConnectID,
		Status: string(u.Status), RefreshToken: u.RefreshToken != "", Version: u.Version,
		SessionExpires: e.claims.ExpiresAt.UTC().Format(timeLayout),
	}
	if ent, err := s.o.Registry.Get(u.Platform); err == nil {
		v.AuthType = string(ent.Platform.AuthType())
	}
	if u.TokenExpiry != nil {
		v.TokenExpiry = u.TokenExpiry.UTC().Format(timeLayout)
		v.TokenExpiryMS = u.TokenExpiry.UnixMilli()
	}
	v.Refreshable = v.AuthType == string(connector.AuthOAuth) && u.RefreshToken != "" && u.Status == store.StatusActive
	return v, nil
}

func (s *Surface) views(c *gin.Context) []SessionView {
	live := s.entries(c)
	s.syncCookie(c, live)
	out := make([]SessionView, 0, len(live))
	for _, e := range live {
		v, err := s.view(c, e)
		if err != nil {
			httpx.Logger(c).Warn("console: reading a login failed", "session", e.claims.SessionID, "error", err)
			continue
		}
		out = append(out, v)
	}
	return out
}

// GET /console: the page, rendered with the connectors and this browser's
// logins.
func (s *Surface) page(c *gin.Context) {
	if s.loopbackAlias(c.Request.Host) {
		c.Redirect(http.StatusFound, s.public.String()+"/console")
		return
	}
	demo := false
	conns := s.connectors()
	for _, v := range conns {
		demo = demo || v.Demo
	}
	var buf bytes.Buffer
	err := pageTemplate.Execute(&buf, map[string]any{
		"Connectors": conns,
		"Sessions":   s.views(c),
		"Demo":       demo,
		"PublicURL":  s.public.String(),
	})
	if err != nil {
		httpx.Logger(c).Error("console: rendering the page failed", "error", err)
		httpx.WriteError(c, http.StatusInternalServerError, failure.Internal, "Internal error.")
		return
	}
	pageHeaders(c)
	c.Data(http.StatusOK, "text/html; charset=utf-8", buf.Bytes())
}

// GET /console/api/sessions -> {sessions: [...]}
func (s *Surface) listSessions(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"sessions": s.views(c)})
}

// result is an action's outcome shown on the session's card.
type result struct {
	Successful bool   `json:"successful"`
	Message    string `json:"message"`
}

func messageOf(m *connector.ReturnMessage, def string) string {
	if m != nil && m.Message != "" {
		return m.Message
	}
	return def
}

// answer replies with the session's current view and the outcome.
func (s *Surface) answer(c *gin.Context, e entry, r result) {
	v, err := s.view(c, e)
	if err != nil {
		httpx.Fail(c, failure.New(failure.Unavailable, "The login could not be read.", err))
		return
	}
	c.JSON(http.StatusOK, gin.H{"session": v, "result": r})
}

// POST /console/api/validate {session}: App Connect's authValidation for
// the login (refreshing the token first when due).
func (s *Surface) validate(c *gin.Context) {
	e, ok := s.find(c)
	if !ok {
		return
	}
	res, err := s.o.Engine.Validate(c.Request.Context(), e.claims.Subject)
	switch {
	case err != nil:
		s.answer(c, e, result{Successful: false, Message: "authValidation failed: " + failure.MessageOf(err)})
	case res.Successful:
		s.answer(c, e, result{Successful: true, Message: messageOf(res.ReturnMessage, "authValidation: the login is valid.")})
	default:
		s.answer(c, e, result{Successful: false, Message: messageOf(res.ReturnMessage, "authValidation: the login is no longer valid.")})
	}
}

// POST /console/api/refresh {session}: refresh the access token now, under
// the engine's lease, whether or not it is due.
func (s *Surface) refresh(c *gin.Context) {
	e, ok := s.find(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	u, err := s.o.Users.GetUser(ctx, e.claims.Subject)
	if err != nil {
		httpx.Fail(c, failure.New(failure.Unavailable, "The login could not be read.", err))
		return
	}
	if ent, gerr := s.o.Registry.Get(u.Platform); gerr != nil || ent.Platform.AuthType() != connector.AuthOAuth {
		httpx.WriteError(c, http.StatusBadRequest, failure.InvalidRequest, "Only OAuth logins have an access token to refresh.")
		return
	}
	before := u.TokenExpiry
	if _, err := s.o.Refresher.ForceRefresh(ctx, u.ID, u.Version); err != nil {
		s.answer(c, e, result{Successful: false, Message: "Refresh failed: " + failure.MessageOf(err)})
		return
	}
	msg := "Refreshed: the CRM issued a new access token"
	if after, gerr := s.o.Users.GetUser(ctx, u.ID); gerr == nil && after.TokenExpiry != nil {
		msg += ", valid until " + after.TokenExpiry.UTC().Format(time.TimeOnly) + " UTC"
		if before != nil && after.TokenExpiry.After(*before) {
			msg += " (moved " + after.TokenExpiry.Sub(*before).Round(time.Millisecond).String() + " later)"
		}
	}
	s.answer(c, e, result{Successful: true, Message: msg + "."})
}

// POST /console/api/logout {session}: log out (App Connect's unAuthorize:
// credentials cleared, every session of the login revoked, the CRM asked
// to revoke its tokens) and drop the session from the console.
func (s *Surface) logout(c *gin.Context) {
	e, ok := s.find(c)
	if !ok {
		return
	}
	res, err := s.o.Engine.Logout(c.Request.Context(), e.claims.Subject)
	if err != nil && !failure.Is(err, failure.NeedsReauth) {
		httpx.Fail(c, err)
		return
	}
	var kept []entry
	for _, o := range s.entries(c) {
		if o.claims.Subject != e.claims.Subject {
			kept = append(kept, o)
		}
	}
	s.syncCookie(c, kept)
	c.JSON(http.StatusOK, gin.H{"result": result{Successful: true, Message: messageOf(res.ReturnMessage, "Logged out.")}, "removed": e.claims.SessionID})
}
