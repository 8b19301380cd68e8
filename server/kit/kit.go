// Package kit is the Kit surface: connectd as the OAuth 2.0 authorization
// server Kit installs apps through (seed 001), and the resource server for
// Kit plugins.
//
//	GET  /kit/oauth/authorize  the connect page (which app, which service)
//	GET  /kit/oauth/connect    starts the shared connect flow (surface "kit")
//	POST /kit/oauth/token      authorization_code (client id + secret)
//	POST /kit/oauth/refresh    refresh_token (client id + refresh token)
//	POST /kit/oauth/revoke     RFC 7009 (client id + secret), always 200
//	POST /kit/plugins/:connector/:plugin   Kit plugin calls (Kit bearer)
//
// Token bodies are read as JSON whatever the Content-Type (Kit's samples
// send JSON labelled as a form) and as real forms; errors are RFC 6749
// {error, error_description}. After the creator signs in to the connector
// (upstream OAuth or the API-key form), the completer issues a code and
// sends the browser back to Kit with it and the unchanged state. The token
// rules live in core/kit.
package kit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	corekit "github.com/connectd/connectd/core/kit"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/encryption"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/connect"
	"github.com/connectd/connectd/server/httpx"
)

// SurfaceName is the connect flow's surface (and the host kind of the
// creators' connector logins).
const SurfaceName = "kit"

// maxTokenBody bounds a token endpoint body.
const maxTokenBody = 16 << 10

// Users is what the surface needs of the login engine (*auth.Engine).
type Users interface {
	// User returns a usable login (not revoked, not needs_reauth).
	User(ctx context.Context, userID string) (*store.User, error)
	// Logout clears the login's credentials and revokes them upstream.
	Logout(ctx context.Context, userID string) (connector.Result, error)
}

// Refresher hands out HTTP clients that inject and refresh a login's
// credential (*refresh.Service).
type Refresher interface {
	HTTPClient(userID string) *http.Client
}

// Options configure New.
type Options struct {
	Store     store.Kit
	Users     Users
	Refresher Refresher
	Registry  *registry.Registry
	Manifests *manifest.Set
	// Connect is the shared connect flow; New registers the "kit"
	// completer on it.
	Connect *connect.Handler
	// Keys is the session signing ring (derives rotated token pairs).
	Keys   *encryption.KeyRing
	Clock  clock.Clock
	Logger hclog.Logger
	// Tokens tune lifetimes (zero: core/kit defaults).
	Tokens corekit.Options
}

// Surface serves the Kit routes.
type Surface struct {
	o   Options
	svc *corekit.Service
	log hclog.Logger
}

var _ server.Surface = (*Surface)(nil)

// New builds the surface and registers its connect-flow completer.
func New(o Options) (*Surface, error) {
	if o.Store == nil || o.Users == nil || o.Refresher == nil || o.Registry == nil || o.Manifests == nil || o.Connect == nil || o.Keys == nil {
		return nil, errors.New("kit: Store, Users, Refresher, Registry, Manifests, Connect and Keys are required")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	s := &Surface{o: o, log: o.Logger}
	to := o.Tokens
	to.Store, to.Keys, to.Clock, to.Logger = o.Store, o.Keys, o.Clock, o.Logger.Named("tokens")
	to.GrantEnded = s.grantEnded
	svc, err := corekit.New(to)
	if err != nil {
		return nil, err
	}
	s.svc = svc
	if o.Connect.Completers == nil {
		o.Connect.Completers = map[string]connect.Completer{}
	}
	o.Connect.Completers[SurfaceName] = s.complete
	return s, nil
}

// Service returns the token service (tests, janitor wiring).
func (s *Surface) Service() *corekit.Service { return s.svc }

// Register implements server.Surface.
func (s *Surface) Register(r gin.IRouter, mw server.Middlewares) {
	g := r.Group("/kit")
	g.GET("/oauth/authorize", s.authorizePage)
	g.GET("/oauth/connect", mw.Limiter.PerIP(), s.startConnect)
	// The token endpoints are called by Kit's servers: a per-IP limit
	// would throttle every creator at once, and client secrets and
	// tokens carry 256 bits, so guessing is not a concern.
	g.POST("/oauth/token", s.token)
	g.POST("/oauth/refresh", s.refresh)
	g.POST("/oauth/revoke", s.revoke)
	g.POST("/plugins/:connector/:plugin", s.RequireBearer(""), s.plugin)
}

// grantEnded logs the creator's connector login out once its grant ends:
// each install has its own login (host identity kit/<app>/<grant>), so
// nothing else uses it, and credentials of an uninstalled app should not
// stay behind.
func (s *Surface) grantEnded(ctx context.Context, g *store.KitGrant) {
	if g == nil || g.UserID == "" {
		return
	}
	if _, err := s.o.Users.Logout(ctx, g.UserID); err != nil {
		s.log.Warn("logging out the creator of an ended kit grant failed", "grant", g.ID, "error", err)
	}
}

// params are a token endpoint request's parameters.
type params struct {
	v map[string]string
	// basicID/basicSecret come from an Authorization: Basic header.
	basicID, basicSecret string
	hasBasic             bool
}

func (p params) get(k string) string { return p.v[k] }

// readParams reads a token endpoint body: a JSON object whatever the
// Content-Type, else a form; repeated parameters are refused (RFC 6749 3.2).
func readParams(c *gin.Context) (params, error) {
	p := params{v: map[string]string{}}
	if id, secret, ok := c.Request.BasicAuth(); ok {
		uid, err1 := url.QueryUnescape(id)
		usec, err2 := url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			return p, oauthErr(corekit.ErrInvalidRequest, "The Authorization header is malformed.")
		}
		p.basicID, p.basicSecret, p.hasBasic = uid, usec, true
	}
	if c.Request.Body == nil {
		return p, nil
	}
	body, err := io.ReadAll(io.LimitReader(c.Request.Body, maxTokenBody+1))
	if err != nil {
		return p, oauthErr(corekit.ErrInvalidRequest, "The request body could not be read.")
	}
	if len(body) > maxTokenBody {
		return p, oauthErr(corekit.ErrInvalidRequest, "The request body is too large.")
	}
	trimmed := bytes.TrimSpace(body)
	switch {
	case len(trimmed) == 0:
	case trimmed[0] == '{':
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil || dec.More() {
			return p, oauthErr(corekit.ErrInvalidRequest, "The JSON body is malformed.")
		}
		if _, err := dec.Token(); err != io.EOF {
			return p, oauthErr(corekit.ErrInvalidRequest, "The JSON body is malformed.")
		}
		for k, v := range m {
			switch x := v.(type) {
			case string:
				p.v[k] = x
			case json.Number:
				p.v[k] = x.String()
			case nil:
			default:
				return p, oauthErr(corekit.ErrInvalidRequest, "Parameter "+safeName(k)+" must be a string.")
			}
		}
	default:
		q, err := url.ParseQuery(string(trimmed))
		if err != nil {
			return p, oauthErr(corekit.ErrInvalidRequest, "The form body is malformed.")
		}
		for k, vs := range q {
			if len(vs) > 1 {
				return p, oauthErr(corekit.ErrInvalidRequest, "Parameter "+safeName(k)+" is repeated.")
			}
			p.v[k] = vs[0]
		}
	}
	return p, nil
}

// safeName keeps a parameter name printable and short for messages.
func safeName(k string) string {
	if len(k) > 40 {
		k = k[:40]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, k)
}

func oauthErr(code, desc string) *corekit.OAuthError {
	return &corekit.OAuthError{Code: code, Description: desc}
}

// clientID is the client id from the body or the Basic header (which must
// agree when both are sent).
func (p params) clientID() (string, error) {
	id := p.get("client_id")
	if p.hasBasic {
		if id != "" && id != p.basicID {
			return "", oauthErr(corekit.ErrInvalidRequest, "client_id differs from the Authorization header.")
		}
		id = p.basicID
	}
	return id, nil
}

func (p params) clientSecret() string {
	if p.hasBasic {
		return p.basicSecret
	}
	return p.get("client_secret")
}

// authenticate checks client id + secret.
func (s *Surface) authenticate(c *gin.Context, p params) (*store.KitApp, error) {
	id, err := p.clientID()
	if err != nil {
		return nil, err
	}
	if p.hasBasic && p.get("client_secret") != "" {
		return nil, oauthErr(corekit.ErrInvalidRequest, "Use one client authentication method.")
	}
	return s.svc.Authenticate(c.Request.Context(), id, p.clientSecret())
}

// POST /kit/oauth/token
func (s *Surface) token(c *gin.Context) {
	p, err := readParams(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	app, err := s.authenticate(c, p)
	if err != nil {
		s.fail(c, err)
		return
	}
	ctx := c.Request.Context()
	var pair *corekit.TokenPair
	switch p.get("grant_type") {
	case "authorization_code":
		pair, err = s.svc.ExchangeCode(ctx, app, p.get("code"), p.get("redirect_uri"))
	case "refresh_token":
		pair, err = s.svc.Refresh(ctx, app, p.get("refresh_token"))
	case "":
		err = oauthErr(corekit.ErrInvalidRequest, "grant_type is required.")
	default:
		err = oauthErr(corekit.ErrUnsupportedGrantType, "Only authorization_code and refresh_token are supported.")
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	s.tokens(c, pair)
}

// POST /kit/oauth/refresh: Kit sends no client secret; the refresh token
// is the credential, bound to the client id. A secret, if sent, must be
// right.
func (s *Surface) refresh(c *gin.Context) {
	p, err := readParams(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	if gt := p.get("grant_type"); gt != "" && gt != "refresh_token" {
		s.fail(c, oauthErr(corekit.ErrUnsupportedGrantType, "This endpoint only accepts grant_type=refresh_token."))
		return
	}
	var app *store.KitApp
	if p.clientSecret() != "" {
		app, err = s.authenticate(c, p)
	} else {
		var id string
		if id, err = p.clientID(); err == nil {
			app, err = s.svc.Client(c.Request.Context(), id)
		}
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	pair, err := s.svc.Refresh(c.Request.Context(), app, p.get("refresh_token"))
	if err != nil {
		s.fail(c, err)
		return
	}
	s.tokens(c, pair)
}

// POST /kit/oauth/revoke: 200 for any token, known or not (RFC 7009 2.2).
func (s *Surface) revoke(c *gin.Context) {
	p, err := readParams(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	app, err := s.authenticate(c, p)
	if err != nil {
		s.fail(c, err)
		return
	}
	if _, err := s.svc.Revoke(c.Request.Context(), app, p.get("token")); err != nil {
		s.fail(c, err)
		return
	}
	noStore(c)
	c.JSON(http.StatusOK, gin.H{})
}

type tokenBody struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	CreatedAt    int64  `json:"created_at"`
}

func (s *Surface) tokens(c *gin.Context, p *corekit.TokenPair) {
	noStore(c)
	c.JSON(http.StatusOK, tokenBody{AccessToken: p.AccessToken, RefreshToken: p.RefreshToken, TokenType: "Bearer", ExpiresIn: p.ExpiresIn, CreatedAt: p.CreatedAt})
}

func noStore(c *gin.Context) {
	c.Header("Cache-Control", "no-store")
	c.Header("Pragma", "no-cache")
}

// fail answers an RFC 6749 error.
func (s *Surface) fail(c *gin.Context, err error) {
	var oe *corekit.OAuthError
	if !errors.As(err, &oe) {
		oe = &corekit.OAuthError{Code: corekit.ErrServerError, Description: "The request could not be processed.", Cause: err}
	}
	status := http.StatusBadRequest
	switch oe.Code {
	case corekit.ErrInvalidClient:
		status = http.StatusUnauthorized
		c.Header("WWW-Authenticate", `Basic realm="connectd kit"`)
	case corekit.ErrServerError:
		status = http.StatusInternalServerError
	case corekit.ErrTemporarily:
		status = http.StatusServiceUnavailable
	}
	if status >= 500 {
		httpx.Logger(c).Error("kit oauth request failed", "error", err)
	} else {
		httpx.Logger(c).Debug("kit oauth request rejected", "error", oe.Code)
	}
	noStore(c)
	c.AbortWithStatusJSON(status, gin.H{"error": oe.Code, "error_description": oe.Description})
}
