// Package connect serves the browser half of the connect flow that every
// surface shares (plugin Connect buttons, Kit installs, Blink connects, the
// admin page's OAuth test, the console): the binding cookie set at start,
// GET /oauth/callback (the one redirect URI operators register at each
// CRM), connectd's API-key form page rendered from the manifest, and the
// completion page - or the surface's own next step.
package connect

import (
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"html/template"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/auth"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/httpx"
)

//go:embed templates/*.html
var templateFS embed.FS

var pages = template.Must(template.ParseFS(templateFS, "templates/*.html"))

// CookieName is the browser-binding cookie.
const CookieName = "connectd_connect"

// Completer continues a surface's flow after a successful login (Kit
// redirects with a code, Blink registers the linked account, ...). It must
// answer the request.
type Completer func(c *gin.Context, res *auth.LoginResult)

// Handler serves the connect flow's pages.
type Handler struct {
	Engine    *auth.Engine
	Manifests *manifest.Set
	// Completers by flow surface; a surface without one gets the generic
	// completion page.
	Completers map[string]Completer
	// SecureCookie marks the binding cookie Secure (public URL is https).
	SecureCookie bool
	Logger       hclog.Logger
}

// Register implements server.Surface.
func (h *Handler) Register(r gin.IRouter, mw server.Middlewares) {
	if h.Logger == nil {
		h.Logger = hclog.NewNullLogger()
	}
	if h.Completers == nil {
		h.Completers = map[string]Completer{}
	}
	login := mw.Limiter.PerIP()
	r.GET("/oauth/callback", login, h.callback)
	r.GET("/connect/apikey", h.apiKeyForm)
	r.POST("/connect/apikey", login, h.apiKeySubmit)
}

// Start begins a connect flow for the browser behind c: it sets (or
// reuses) the binding cookie and redirects to the CRM or the API-key form.
// Surfaces call it from their own start routes.
func (h *Handler) Start(c *gin.Context, req auth.ConnectRequest) {
	started, err := h.StartURL(c, req)
	if err != nil {
		h.errorPage(c, err)
		return
	}
	pageHeaders(c)
	c.Redirect(http.StatusFound, started.AuthURL)
}

// StartURL is Start without the redirect: it sets the binding cookie and
// returns the started flow (for surfaces that hand the URL to a client).
func (h *Handler) StartURL(c *gin.Context, req auth.ConnectRequest) (*auth.Started, error) {
	req.BindingHash = BindingHash(h.binding(c))
	return h.Engine.StartConnect(c.Request.Context(), req)
}

// BindingHash is what a flow stores of a binding cookie value.
func BindingHash(cookie string) string {
	if cookie == "" {
		return ""
	}
	sum := sha256.Sum256([]byte("connectd binding\x00" + cookie))
	return hex.EncodeToString(sum[:])
}

// binding returns the browser's binding cookie, setting a new one if it
// has none.
func (h *Handler) binding(c *gin.Context) string {
	if v, err := c.Cookie(CookieName); err == nil && validBinding(v) {
		return v
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	v := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(c.Writer, &http.Cookie{
		Name: CookieName, Value: v, Path: "/", MaxAge: int(auth.MaxFlowTTL.Seconds()) + 60,
		HttpOnly: true, Secure: h.SecureCookie, SameSite: http.SameSiteLaxMode,
	})
	return v
}

func validBinding(v string) bool {
	if len(v) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(v)
	return err == nil
}

func (h *Handler) cookieHash(c *gin.Context) string {
	v, err := c.Cookie(CookieName)
	if err != nil || !validBinding(v) {
		return ""
	}
	return BindingHash(v)
}

// GET /oauth/callback?code&state (or error): the CRM sends the browser
// here for every connect flow.
func (h *Handler) callback(c *gin.Context) {
	q := c.Request.URL.Query()
	res, err := h.Engine.CompleteOAuth(c.Request.Context(), auth.CallbackRequest{
		State:       q.Get("state"),
		Code:        q.Get("code"),
		Error:       q.Get("error"),
		BindingHash: h.cookieHash(c),
		Purpose:     store.PurposeConnect,
	})
	if err != nil {
		h.errorPage(c, err)
		return
	}
	h.complete(c, res)
}

func (h *Handler) complete(c *gin.Context, res *auth.LoginResult) {
	if res.User == nil {
		msg := "The service refused the login."
		if res.Message != nil && res.Message.Message != "" {
			msg = res.Message.Message
		}
		h.render(c, http.StatusBadRequest, "error.html", pageData{Title: "Login failed", Message: msg})
		return
	}
	if res.Flow != nil {
		if done, ok := h.Completers[res.Flow.Surface]; ok {
			pageHeaders(c)
			done(c, res)
			return
		}
	}
	h.Done(c, res, "")
}

// Done renders the generic completion page ("you can close this window").
func (h *Handler) Done(c *gin.Context, res *auth.LoginResult, note string) {
	name := ""
	if res.User != nil {
		name = h.displayName(res.User.Platform)
	}
	h.render(c, http.StatusOK, "done.html", pageData{Title: "Connected", Platform: name, User: res.Name, Message: note})
}

type fieldView struct {
	Const, Title, Type, Description string
	Required                        bool
	Secret                          bool
}

type pageData struct {
	Title    string
	Platform string
	User     string
	Message  string
	Warning  string
	State    string
	Fields   []fieldView
}

// GET /connect/apikey?state=: the API-key form from the manifest.
func (h *Handler) apiKeyForm(c *gin.Context) {
	f, err := h.Engine.ConnectFlow(c.Request.Context(), c.Query("state"), h.cookieHash(c))
	if err != nil {
		h.errorPage(c, err)
		return
	}
	h.renderForm(c, http.StatusOK, f, "")
}

func (h *Handler) renderForm(c *gin.Context, status int, f *store.OAuthFlow, msg string) {
	p, ok := h.Manifests.Platform(f.Platform)
	if !ok {
		h.errorPage(c, failure.Newf(failure.NotFound, "Unknown platform."))
		return
	}
	d := pageData{Title: "Sign in to " + displayName(p), Platform: displayName(p), State: f.ID, Message: msg}
	if p.Auth != nil && p.Auth.APIKey != nil {
		d.Warning = p.Auth.APIKey.Page.Warning
	}
	for _, fl := range p.APIKeyFields() {
		if fl.Managed && fl.Hidden {
			continue // resolved from admin-managed values
		}
		typ := "text"
		secret := fl.Const == manifest.APIKeyConst || fl.Secret || strings.Contains(strings.ToLower(fl.Const), "password")
		if secret {
			typ = "password"
		}
		d.Fields = append(d.Fields, fieldView{Const: fl.Const, Title: fl.Title, Type: typ, Description: fl.Description, Required: fl.Required, Secret: secret})
	}
	h.render(c, status, "apikey.html", d)
}

// POST /connect/apikey (form): log in with the submitted fields.
func (h *Handler) apiKeySubmit(c *gin.Context) {
	if err := c.Request.ParseForm(); err != nil {
		h.errorPage(c, failure.New(failure.InvalidRequest, "The form could not be read.", err))
		return
	}
	state := c.Request.PostForm.Get("state")
	fields := map[string]string{}
	for k, vs := range c.Request.PostForm {
		if k == "state" || len(vs) == 0 {
			continue
		}
		fields[k] = vs[0]
	}
	apiKey := fields[manifest.APIKeyConst]
	delete(fields, manifest.APIKeyConst)
	bh := h.cookieHash(c)
	res, err := h.Engine.CompleteAPIKeyConnect(c.Request.Context(), state, bh, apiKey, fields)
	if err != nil {
		var mf *auth.MissingFieldsError
		if f, ferr := h.Engine.ConnectFlow(c.Request.Context(), state, bh); ferr == nil && (failure.CodeOf(err) == failure.MissingManagedFields || failure.CodeOf(err) == failure.InvalidRequest || failure.CodeOf(err) == failure.UpstreamUnavailable) {
			msg := failure.MessageOf(err)
			if errors.As(err, &mf) {
				msg = "Please fill in: " + strings.Join(mf.Consts, ", ") + "."
			}
			h.renderForm(c, httpx.StatusOf(failure.CodeOf(err)), f, msg)
			return
		}
		h.errorPage(c, err)
		return
	}
	if res.User == nil {
		msg := "The service refused these credentials."
		if res.Message != nil && res.Message.Message != "" {
			msg = res.Message.Message
		}
		h.renderForm(c, http.StatusBadRequest, res.Flow, msg)
		return
	}
	h.complete(c, res)
}

func (h *Handler) errorPage(c *gin.Context, err error) {
	code := failure.CodeOf(err)
	status := httpx.StatusOf(code)
	if status >= 500 {
		httpx.Logger(c).Error("connect flow failed", "code", string(code), "error", err)
	}
	h.render(c, status, "error.html", pageData{Title: "Login failed", Message: failure.MessageOf(err)})
}

func (h *Handler) render(c *gin.Context, status int, name string, d pageData) {
	pageHeaders(c)
	c.Status(status)
	c.Header("Content-Type", "text/html; charset=utf-8")
	if err := pages.ExecuteTemplate(c.Writer, name, d); err != nil {
		httpx.Logger(c).Error("rendering page failed", "page", name, "error", err)
	}
	c.Abort()
}

// pageHeaders are the connect pages' security headers.
func pageHeaders(c *gin.Context) {
	c.Header("Cache-Control", "no-store")
	c.Header("Referrer-Policy", "no-referrer")
	c.Header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	c.Header("X-Frame-Options", "DENY")
	c.Header("X-Content-Type-Options", "nosniff")
}

func (h *Handler) displayName(platform string) string {
	if p, ok := h.Manifests.Platform(platform); ok {
		return displayName(p)
	}
	return platform
}

func displayName(p *manifest.Platform) string {
	if p.DisplayName != "" {
		return p.DisplayName
	}
	return p.Key
}
