package kit

import (
	"embed"
	"errors"
	"html/template"
	"net/http"
	"net/url"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/connectd/connectd/core/auth"
	corekit "github.com/connectd/connectd/core/kit"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/server/httpx"
)

//go:embed templates/*.html
var templateFS embed.FS

var pages = template.Must(template.ParseFS(templateFS, "templates/*.html"))

// Flow data keys (not secret: the flow row is not sealed).
const (
	dataApp      = "kit_app"
	dataRedirect = "redirect_uri"
	dataState    = "state"
)

// maxState bounds Kit's state (it comes back unchanged in a URL).
const maxState = 1024

type pageData struct {
	Title     string
	App       string
	Service   string
	Message   string
	StartURL  string
	CancelURL string
	Refresh   string
}

// authorizeRequest is a checked authorization request.
type authorizeRequest struct {
	app         *store.KitApp
	redirectURI string
	state       string
}

// checkAuthorize validates client_id and redirect_uri first: when either
// is wrong the browser must NOT be redirected (RFC 6749 4.1.2.1), so the
// error is a page. Other errors redirect to Kit with error and state.
func (s *Surface) checkAuthorize(c *gin.Context) (*authorizeRequest, bool) {
	q := c.Request.URL.Query()
	for _, k := range []string{"client_id", "redirect_uri", "response_type", "state"} {
		if len(q[k]) > 1 {
			s.errorPage(c, http.StatusBadRequest, "This link is invalid", "The request repeats the "+k+" parameter.")
			return nil, false
		}
	}
	app, err := s.svc.Client(c.Request.Context(), q.Get("client_id"))
	if err != nil {
		var oe *corekit.OAuthError
		if errors.As(err, &oe) && oe.Code == corekit.ErrInvalidClient {
			s.errorPage(c, http.StatusBadRequest, "Unknown app", "This Kit app is not registered with this server.")
		} else {
			httpx.Logger(c).Error("kit authorize: reading the app failed", "error", err)
			s.errorPage(c, http.StatusServiceUnavailable, "Try again later", "The server is temporarily unavailable.")
		}
		return nil, false
	}
	ru := q.Get("redirect_uri")
	if !corekit.RegisteredRedirect(app, ru) {
		s.errorPage(c, http.StatusBadRequest, "This link is invalid", "The redirect URI is not registered for this Kit app.")
		return nil, false
	}
	state := q.Get("state")
	if len(state) > maxState {
		redirectError(c, ru, "invalid_request", "state is too long.", "")
		return nil, false
	}
	if q.Get("response_type") != "code" {
		redirectError(c, ru, "unsupported_response_type", "Only response_type=code is supported.", state)
		return nil, false
	}
	if ent, err := s.o.Registry.Get(app.Connector); err != nil || !ent.Available {
		redirectError(c, ru, "temporarily_unavailable", "The connector of this app is not available.", state)
		return nil, false
	}
	return &authorizeRequest{app: app, redirectURI: ru, state: state}, true
}

// GET /kit/oauth/authorize: the connect page.
func (s *Surface) authorizePage(c *gin.Context) {
	ar, ok := s.checkAuthorize(c)
	if !ok {
		return
	}
	service := s.serviceName(ar.app.Connector)
	start := url.Values{"client_id": {ar.app.ClientID}, "redirect_uri": {ar.redirectURI}, "response_type": {"code"}}
	if ar.state != "" {
		start.Set("state", ar.state)
	}
	s.render(c, http.StatusOK, "authorize.html", pageData{
		Title: "Connect " + service, App: ar.app.Name, Service: service,
		StartURL:  "/kit/oauth/connect?" + start.Encode(),
		CancelURL: withQuery(ar.redirectURI, url.Values{"error": {"access_denied"}}, ar.state),
	})
}

// GET /kit/oauth/connect: start the shared connect flow, bound to this
// browser. Each install gets its own connector login: the host identity
// is (kit, app id, install id), and the install id becomes the grant id.
func (s *Surface) startConnect(c *gin.Context) {
	ar, ok := s.checkAuthorize(c)
	if !ok {
		return
	}
	install := uuid.NewString()
	s.o.Connect.Start(c, auth.ConnectRequest{
		Platform: ar.app.Connector,
		Host:     &store.HostIdentity{Kind: SurfaceName, AccountID: ar.app.ID, UserID: install},
		Surface:  SurfaceName,
		Data:     map[string]string{dataApp: ar.app.ID, dataRedirect: ar.redirectURI, dataState: ar.state},
	})
}

// complete is the connect flow's completer for surface "kit": issue the
// code and send the browser back to Kit with it and the unchanged state.
func (s *Surface) complete(c *gin.Context, res *auth.LoginResult) {
	ctx := c.Request.Context()
	d := res.Flow.Data
	app, err := s.o.Store.GetKitApp(ctx, d[dataApp])
	if err != nil {
		httpx.Logger(c).Warn("kit completion: app gone", "error", err)
		s.errorPage(c, http.StatusBadRequest, "Unknown app", "This Kit app is no longer registered with this server.")
		return
	}
	if res.User.Platform != app.Connector || res.Flow.Host.Kind != SurfaceName || res.Flow.Host.AccountID != app.ID {
		s.errorPage(c, http.StatusBadRequest, "Login failed", "This login does not belong to this Kit app. Please start again from Kit.")
		return
	}
	code, _, err := s.svc.IssueCode(ctx, app, res.Flow.Host.UserID, res.User.ID, d[dataRedirect])
	if err != nil {
		httpx.Logger(c).Error("kit completion: issuing the code failed", "error", err)
		s.errorPage(c, http.StatusServiceUnavailable, "Try again later", "The server could not finish the installation. Please start again from Kit.")
		return
	}
	loc := withQuery(d[dataRedirect], url.Values{"code": {code}}, d[dataState])
	if c.Request.Method == http.MethodGet {
		c.Redirect(http.StatusFound, loc)
		return
	}
	// After a form POST (the API-key page) a cross-origin redirect would
	// break the form page's CSP form-action 'self' in browsers that apply
	// it to redirects; a refresh is a plain navigation.
	s.render(c, http.StatusOK, "redirect.html", pageData{Title: "Connected", Service: s.serviceName(app.Connector), Refresh: loc})
}

// withQuery adds q and the state (when non-empty) to a registered URI.
func withQuery(raw string, q url.Values, state string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	v := u.Query()
	for k, vs := range q {
		v[k] = vs
	}
	if state != "" {
		v.Set("state", state)
	}
	u.RawQuery = v.Encode()
	return u.String()
}

func redirectError(c *gin.Context, redirectURI, code, desc, state string) {
	pageHeaders(c)
	c.Redirect(http.StatusFound, withQuery(redirectURI, url.Values{"error": {code}, "error_description": {desc}}, state))
	c.Abort()
}

func (s *Surface) serviceName(platform string) string {
	if p, ok := s.o.Manifests.Platform(platform); ok && p.DisplayName != "" {
		return p.DisplayName
	}
	return platform
}

func (s *Surface) errorPage(c *gin.Context, status int, title, msg string) {
	s.render(c, status, "error.html", pageData{Title: title, Message: msg})
}

func (s *Surface) render(c *gin.Context, status int, name string, d pageData) {
	pageHeaders(c)
	c.Status(status)
	c.Header("Content-Type", "text/html; charset=utf-8")
	if err := pages.ExecuteTemplate(c.Writer, name, d); err != nil {
		httpx.Logger(c).Error("rendering kit page failed", "page", name, "error", err)
	}
	c.Abort()
}

// pageHeaders: not cacheable, not frameable, no referrer (the redirect
// back to Kit carries the code).
func pageHeaders(c *gin.Context) {
	c.Header("Cache-Control", "no-store")
	c.Header("Referrer-Policy", "no-referrer")
	c.Header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	c.Header("X-Frame-Options", "DENY")
	c.Header("X-Content-Type-Options", "nosniff")
}
