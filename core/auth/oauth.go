package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/oauth2"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/outbound"
	"github.com/connectd/connectd/core/store"
)

// StartRequest starts an OAuth login.
type StartRequest struct {
	Platform string
	// Hostname is the user's CRM host (dynamic environments); honoured only
	// when it matches the connector's host patterns.
	Hostname string
	// RedirectURI is where the CRM sends the browser back. For App Connect
	// logins it is the client's (allow-listed); empty means the connector's
	// or the manifest's. Connect flows always use ConnectCallbackURL.
	RedirectURI string
	// Host is the caller's VERIFIED host identity, if any. It binds the
	// flow (and picks the account's managed OAuth app).
	Host *store.HostIdentity
	// Purpose is store.PurposeAppConnect or store.PurposeConnect.
	Purpose string
	// Surface continues a connect flow after the callback.
	Surface string
	// BindingHash binds a connect flow to the browser that started it.
	BindingHash string
	// ReturnTo must already be allow-listed by the surface.
	ReturnTo string
	// Data is surface-specific context (not secret).
	Data map[string]string
}

// Started is a started OAuth login.
type Started struct {
	AuthURL string
	Flow    *store.OAuthFlow
}

// NewState returns a random state: 256 bits, URL-safe.
func NewState() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("auth: crypto/rand failed: " + err.Error()) // never happens on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// StartOAuth creates a single-use flow (state bound to platform, hostname,
// redirect URI, PKCE verifier, host identity, expiry) and returns the CRM's
// authorize URL.
func (e *Engine) StartOAuth(ctx context.Context, req StartRequest) (*Started, error) {
	ent, err := e.entry(req.Platform)
	if err != nil {
		return nil, err
	}
	p := ent.Platform
	if p.AuthType() != connector.AuthOAuth {
		return nil, failure.Newf(failure.InvalidRequest, "%s does not use OAuth.", req.Platform)
	}
	hostname, err := e.checkHostname(p, req.Hostname)
	if err != nil {
		return nil, err
	}
	info, ref, err := e.o.Apps.ForLogin(ctx, req.Platform, req.Host, connector.OAuthInfoRequest{Hostname: hostname, HostAccountID: hostAccount(req.Host)})
	if err != nil {
		return nil, err
	}
	if info.FailMessage != nil {
		return nil, failure.New(failure.LoginRejected, info.FailMessage.Message, nil)
	}
	redirectURI, err := e.pickRedirect(p, req, info)
	if err != nil {
		return nil, err
	}
	authURL := info.AuthURL
	if authURL == "" && p.Auth != nil && p.Auth.OAuth != nil && !strings.HasPrefix(p.Auth.OAuth.AuthURL, e.o.PublicURL+"/") {
		authURL = p.Auth.OAuth.AuthURL
	}
	if authURL == "" {
		return nil, failure.New(failure.Misconfigured, "The connector has no authorization URL.", fmt.Errorf("auth: %s: no authorization URL", req.Platform))
	}
	if _, err := url.Parse(authURL); err != nil {
		return nil, failure.New(failure.Misconfigured, "The connector's authorization URL is invalid.", err)
	}

	purpose := req.Purpose
	if purpose == "" {
		purpose = store.PurposeAppConnect
	}
	flow := &store.OAuthFlow{
		ID:          NewState(),
		Platform:    req.Platform,
		Purpose:     purpose,
		Surface:     req.Surface,
		Hostname:    hostname,
		RedirectURI: redirectURI,
		OAuthAppRef: ref,
		BindingHash: req.BindingHash,
		ReturnTo:    req.ReturnTo,
		Data:        req.Data,
		ExpiresAt:   e.o.Clock.Now().Add(e.o.FlowTTL),
	}
	if req.Host != nil {
		flow.Host = *req.Host
	}
	cfg := oauthConfig(info, redirectURI)
	opts := []oauth2.AuthCodeOption{}
	if p.PKCE() {
		flow.PKCEVerifier = oauth2.GenerateVerifier()
		opts = append(opts, oauth2.S256ChallengeOption(flow.PKCEVerifier))
	}
	for k, v := range info.AuthURLParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	if len(info.Scopes) == 0 && p.Auth != nil && p.Auth.OAuth != nil && p.Auth.OAuth.Scope != "" {
		// The manifest's raw fragment, e.g. "scope=contacts.read contacts.write".
		if q, err := url.ParseQuery(p.Auth.OAuth.Scope); err == nil {
			for k, vs := range q {
				if k == "state" || k == "redirect_uri" || k == "client_id" || k == "code_challenge" || k == "code_challenge_method" || k == "response_type" {
					continue
				}
				opts = append(opts, oauth2.SetAuthURLParam(k, strings.Join(vs, " ")))
			}
		}
	}
	if err := e.o.Store.CreateFlow(ctx, flow); err != nil {
		return nil, storeFailure(err)
	}
	return &Started{AuthURL: cfg.AuthCodeURL(flow.ID, opts...), Flow: flow}, nil
}

// CallbackRequest is what came back from the CRM.
type CallbackRequest struct {
	State string
	Code  string
	// Error is the provider's error code (access_denied, ...); its
	// description is never reflected.
	Error string
	// Platform, when the caller names one, must match the flow's.
	Platform string
	// TokenURL, APIURL, Username and Query are App Connect's optional
	// callback values, passed to the connector; URLs only when they match
	// the connector's host patterns and pass the SSRF guard.
	TokenURL string
	APIURL   string
	Username string
	Query    map[string]string
	// BindingHash, for connect flows, must equal the flow's.
	BindingHash string
	// Purpose the caller expects (App Connect's JSON callback only
	// completes App Connect flows; /oauth/callback only connect flows).
	Purpose string
	// Host is the caller's verified host identity, if it presented one. A
	// flow started with a host identity completes only for the same one.
	Host *store.HostIdentity
}

// LoginResult is a completed login.
type LoginResult struct {
	// User is nil when the service refused the login (see Message).
	User *store.User
	// Flow is the consumed flow (OAuth logins).
	Flow *store.OAuthFlow
	// Name is the user's display name.
	Name string
	// Message is the connector's message for the user, if any.
	Message *connector.ReturnMessage
}

// CompleteOAuth consumes the state atomically (before any token request),
// exchanges the code (PKCE verifier and the identical redirect URI), asks
// the connector who the user is and stores the login.
func (e *Engine) CompleteOAuth(ctx context.Context, req CallbackRequest) (*LoginResult, error) {
	if req.State == "" || len(req.State) > 512 {
		return nil, failure.Newf(failure.InvalidState, "The login link is invalid or has expired. Please start again.")
	}
	// Everything the caller must match is checked BEFORE the state is
	// burnt, so a forged or misdirected callback cannot cancel someone
	// else's login: the purpose (another surface's state), the browser
	// binding (connect flows) and the host identity the flow was started
	// with.
	pending, err := e.o.Store.GetFlow(ctx, req.State)
	if err != nil {
		return nil, stateFailure(err)
	}
	if req.Purpose != "" && pending.Purpose != req.Purpose {
		return nil, failure.Newf(failure.InvalidState, "The login link is invalid or has expired. Please start again.")
	}
	if pending.Purpose == store.PurposeConnect {
		if pending.BindingHash == "" || req.BindingHash == "" || !constantEqual(pending.BindingHash, req.BindingHash) {
			return nil, failure.Newf(failure.InvalidState, "This login was started in another browser. Please start again.")
		}
	} else if pending.Host != (store.HostIdentity{}) {
		if req.Host == nil || *req.Host != pending.Host {
			return nil, failure.Newf(failure.InvalidState, "This login was started by another user. Please start again.")
		}
	}
	flow, err := e.o.Store.ConsumeFlow(ctx, req.State)
	if err != nil {
		return nil, stateFailure(err)
	}
	if req.Platform != "" && req.Platform != flow.Platform {
		return nil, failure.Newf(failure.InvalidState, "The login was started for another platform.")
	}
	ent, err := e.entry(flow.Platform)
	if err != nil {
		return nil, err
	}
	p := ent.Platform
	if req.Error != "" {
		return nil, failure.New(failure.LoginRejected, fmt.Sprintf("Authorization at %s was not granted.", displayName(p)), fmt.Errorf("auth: provider error %q", truncate(req.Error, 64)))
	}
	if req.Code == "" || len(req.Code) > 4096 {
		return nil, failure.Newf(failure.InvalidRequest, "The authorization code is missing.")
	}
	tokenURL, err := e.optionalURL(p, req.TokenURL)
	if err != nil {
		return nil, err
	}
	apiURL, err := e.optionalURL(p, req.APIURL)
	if err != nil {
		return nil, err
	}
	info, err := e.o.Apps.ByRef(ctx, flow.Platform, flow.OAuthAppRef, connector.OAuthInfoRequest{Hostname: flow.Hostname, TokenURL: tokenURL, HostAccountID: flow.Host.AccountID})
	if err != nil {
		return nil, err
	}
	if info.FailMessage != nil {
		return &LoginResult{Flow: flow, Message: info.FailMessage}, nil
	}
	tok, err := e.exchange(ctx, ent.Connector, info, flow, req.Code)
	if err != nil {
		return nil, err
	}
	res, err := ent.Connector.UserInfo(ctx, connector.UserInfoRequest{
		HTTPClient: e.o.HTTP,
		AuthHeader: "Bearer " + tok.AccessToken,
		Hostname:   flow.Hostname,
		Platform:   flow.Platform,
		TokenURL:   tokenURL,
		APIURL:     apiURL,
		Username:   req.Username,
		Token:      tok,
		Query:      req.Query,
	})
	if err != nil {
		return nil, failure.New(failure.UpstreamUnavailable, fmt.Sprintf("%s could not be reached to read your user profile. Please try again.", displayName(p)), err)
	}
	if !res.Successful || res.User.ID == "" {
		msg := res.ReturnMessage
		if msg == nil {
			msg = &connector.ReturnMessage{Message: fmt.Sprintf("Could not load your %s user information.", displayName(p)), MessageType: connector.MessageWarning, TTL: 3000}
		}
		return &LoginResult{Flow: flow, Message: msg}, nil
	}
	pu, err := e.postSave(ctx, ent.Connector, res.User)
	if err != nil {
		return nil, err
	}
	hostname := flow.Hostname
	if pu.OverridingHostname != "" {
		hostname = pu.OverridingHostname
	}
	u := &store.User{
		Platform:       flow.Platform,
		CRMUserID:      pu.ID,
		Host:           flow.Host,
		Hostname:       hostname,
		AppConnectID:   pu.ID + "-" + flow.Platform,
		DisplayName:    pu.Name,
		TimezoneName:   pu.TimezoneName,
		TimezoneOffset: pu.TimezoneOffset,
		AccessToken:    tok.AccessToken,
		RefreshToken:   tok.RefreshToken,
		AdditionalInfo: pu.AdditionalInfo,
		Secrets:        revealSecrets(pu.Secrets),
		OAuthAppRef:    flow.OAuthAppRef,
		Status:         store.StatusActive,
	}
	if !tok.Expiry.IsZero() {
		exp := tok.Expiry
		u.TokenExpiry = &exp
	}
	saved, err := e.o.Store.UpsertUser(ctx, u)
	if err != nil {
		return nil, storeFailure(err)
	}
	if err := e.o.Apps.LoginSucceeded(ctx, flow.Platform, flow.OAuthAppRef, flow.Host); err != nil {
		e.o.Logger.Warn("promoting the managed OAuth app failed", "platform", flow.Platform, "error", err)
	}
	return &LoginResult{User: saved, Flow: flow, Name: saved.DisplayName, Message: res.ReturnMessage}, nil
}

// exchange trades the code for tokens: PKCE verifier, the flow's redirect
// URI, the connector's overrides; no redirects followed, response capped.
func (e *Engine) exchange(ctx context.Context, c connector.Connector, info connector.OAuthInfo, flow *store.OAuthFlow, code string) (*oauth2.Token, error) {
	cfg := oauthConfig(info, flow.RedirectURI)
	var opts []oauth2.AuthCodeOption
	if flow.PKCEVerifier != "" {
		opts = append(opts, oauth2.VerifierOption(flow.PKCEVerifier))
	}
	client := e.o.TokenHTTP
	if ov, ok := c.(connector.TokenRequestOverrider); ok {
		o, err := ov.OverrideTokenRequest(ctx, code, info)
		if err != nil {
			return nil, failure.New(failure.Misconfigured, "The token request could not be prepared.", err)
		}
		for k, v := range o.Form {
			opts = append(opts, oauth2.SetAuthURLParam(k, v))
		}
		if len(o.Query) > 0 {
			tu, err := url.Parse(cfg.Endpoint.TokenURL)
			if err != nil {
				return nil, failure.New(failure.Misconfigured, "The token URL is invalid.", err)
			}
			q := tu.Query()
			for k, v := range o.Query {
				q.Set(k, v)
			}
			tu.RawQuery = q.Encode()
			cfg.Endpoint.TokenURL = tu.String()
		}
		if len(o.Headers) > 0 {
			client = withHeaders(client, o.Headers)
		}
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, client)
	tok, err := cfg.Exchange(ctx, code, opts...)
	if err != nil {
		return nil, classifyTokenError(err)
	}
	if tok.AccessToken == "" {
		return nil, failure.Newf(failure.UpstreamInvalid, "The service answered the login without an access token.")
	}
	return tok, nil
}

// classifyTokenError maps a token-endpoint failure to an engine error; the
// provider's text is never shown, nor logged: a RetrieveError's message
// carries the response body, which a misbehaving provider may fill with
// the request it received (client secret, code).
func classifyTokenError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		err = fmt.Errorf("auth: token endpoint answered %d with error code %q", status, truncate(re.ErrorCode, 64))
		switch {
		case re.ErrorCode == "invalid_grant":
			return failure.New(failure.LoginRejected, "The authorization code was refused. Please log in again.", err)
		case re.ErrorCode == "invalid_client" || re.ErrorCode == "unauthorized_client":
			return failure.New(failure.Misconfigured, "The OAuth app is misconfigured (client rejected). Ask your administrator.", err)
		case re.Response != nil && (re.Response.StatusCode >= 500 || re.Response.StatusCode == http.StatusTooManyRequests):
			return failure.New(failure.UpstreamUnavailable, "The service is temporarily unavailable. Please try again.", err)
		case re.ErrorCode != "":
			return failure.New(failure.LoginRejected, "The service refused the login. Please log in again.", err)
		default:
			return failure.New(failure.UpstreamInvalid, "The service answered the login with something unusable.", err)
		}
	}
	if errors.Is(err, context.Canceled) {
		return failure.New(failure.UpstreamUnavailable, "The login was interrupted.", err)
	}
	var fe *failure.Error
	if errors.As(err, &fe) {
		return err
	}
	// x/oauth2 reports bodies it cannot parse as plain errors; the network
	// as *url.Error.
	var ue *url.Error
	if errors.As(err, &ue) {
		return failure.New(failure.UpstreamUnavailable, "The service could not be reached. Please try again.", err)
	}
	return failure.New(failure.UpstreamInvalid, "The service answered the login with something unusable.", err)
}

func oauthConfig(info connector.OAuthInfo, redirectURI string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     info.ClientID,
		ClientSecret: info.ClientSecret.Reveal(),
		Endpoint:     oauth2.Endpoint{AuthURL: info.AuthURL, TokenURL: info.TokenURL, AuthStyle: info.TokenAuthStyle()},
		RedirectURL:  redirectURI,
		Scopes:       info.Scopes,
	}
}

// pickRedirect chooses and allow-lists the flow's redirect URI.
func (e *Engine) pickRedirect(p *manifest.Platform, req StartRequest, info connector.OAuthInfo) (string, error) {
	if req.Purpose == store.PurposeConnect {
		return e.ConnectCallbackURL(), nil
	}
	ru := req.RedirectURI
	if ru == "" {
		ru = info.RedirectURI
	}
	if ru == "" {
		for _, c := range p.RedirectURIs() {
			ru = c
			break
		}
	}
	if ru == "" {
		return "", failure.Newf(failure.InvalidRequest, "redirect_uri is required.")
	}
	allowed := append(p.RedirectURIs(), e.o.RedirectURIs...)
	if info.RedirectURI != "" {
		allowed = append(allowed, info.RedirectURI)
	}
	allowed = append(allowed, e.ConnectCallbackURL())
	if !slices.Contains(allowed, ru) {
		return "", failure.Newf(failure.InvalidRequest, "redirect_uri is not allowed.")
	}
	return ru, nil
}

// checkHostname normalises a user-supplied CRM hostname and accepts it only
// when it matches the connector's host patterns.
func (e *Engine) checkHostname(p *manifest.Platform, raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", nil
	}
	if len(raw) > 253+16 {
		return "", failure.Newf(failure.InvalidRequest, "hostname is too long.")
	}
	h := raw
	if strings.Contains(h, "://") {
		u, err := url.Parse(h)
		if err != nil || u.Host == "" || u.User != nil {
			return "", failure.Newf(failure.InvalidRequest, "hostname is not a valid host name.")
		}
		h = u.Host
	}
	h = strings.TrimSuffix(strings.ToLower(h), "/")
	if strings.ContainsAny(h, "/@?#:\\ \t\r\n") {
		return "", failure.Newf(failure.InvalidRequest, "hostname is not a valid host name.")
	}
	if len(p.Hosts()) == 0 || !p.HostAllowed(h) {
		return "", failure.Newf(failure.InvalidRequest, "hostname %q is not a %s host.", truncate(h, 80), displayName(p))
	}
	return h, nil
}

// optionalURL checks an App Connect callback URL value (tokenUrl, apiUrl).
func (e *Engine) optionalURL(p *manifest.Platform, raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	u, err := outbound.CheckURL(raw, p.Hosts(), e.o.AllowPrivate)
	if err != nil {
		return "", failure.New(failure.InvalidRequest, fmt.Sprintf("The URL is not an allowed %s URL.", displayName(p)), err)
	}
	return u.String(), nil
}

func (e *Engine) postSave(ctx context.Context, c connector.Connector, pu connector.PlatformUser) (connector.PlatformUser, error) {
	h, ok := c.(connector.PostSaveHook)
	if !ok {
		return pu, nil
	}
	out, err := h.PostSaveUserInfo(ctx, pu)
	if err != nil {
		return pu, failure.New(failure.UpstreamInvalid, "Your user information could not be completed.", err)
	}
	if out.ID == "" {
		out.ID = pu.ID
	}
	return out, nil
}

func stateFailure(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return failure.New(failure.InvalidState, "The login link is invalid or has expired. Please start again.", err)
	}
	return storeFailure(err)
}

// storeFailure maps a storage error to an engine error.
func storeFailure(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return failure.New(failure.NotFound, "Not found.", err)
	case errors.Is(err, store.ErrConflict):
		return failure.New(failure.Conflict, "A concurrent change conflicted. Please retry.", err)
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return failure.New(failure.Unavailable, "The service is temporarily unavailable. Please retry.", err)
	}
	var fe *failure.Error
	if errors.As(err, &fe) {
		return err
	}
	return failure.New(failure.Internal, "Internal error.", err)
}

func displayName(p *manifest.Platform) string {
	if p.DisplayName != "" {
		return p.DisplayName
	}
	return p.Key
}

func hostAccount(h *store.HostIdentity) string {
	if h == nil {
		return ""
	}
	return h.AccountID
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// headerTransport adds fixed headers (token-request overrides).
type headerTransport struct {
	base    http.RoundTripper
	headers map[string]string
}

func (t headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range t.headers {
		r.Header.Set(k, v)
	}
	return t.base.RoundTrip(r)
}

func withHeaders(c *http.Client, h map[string]string) *http.Client {
	cc := *c
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cc.Transport = headerTransport{base: base, headers: h}
	return &cc
}

// ConnectRequest starts a browser connect flow (plugins, Kit, Blink, the
// admin page, the console): upstream OAuth, or connectd's API-key form.
type ConnectRequest struct {
	Platform    string
	Hostname    string
	Host        *store.HostIdentity
	Surface     string
	BindingHash string
	ReturnTo    string
	Data        map[string]string
}

// StartConnect creates the flow and returns where to send the browser: the
// CRM's authorize URL (redirect URI: ConnectCallbackURL), or the API-key
// form page.
func (e *Engine) StartConnect(ctx context.Context, req ConnectRequest) (*Started, error) {
	if req.BindingHash == "" {
		return nil, errors.New("auth: connect flows must be bound to a browser")
	}
	ent, err := e.entry(req.Platform)
	if err != nil {
		return nil, err
	}
	if ent.Platform.AuthType() == connector.AuthOAuth {
		return e.StartOAuth(ctx, StartRequest{
			Platform: req.Platform, Hostname: req.Hostname, Host: req.Host,
			Purpose: store.PurposeConnect, Surface: req.Surface,
			BindingHash: req.BindingHash, ReturnTo: req.ReturnTo, Data: req.Data,
		})
	}
	hostname, err := e.checkHostname(ent.Platform, req.Hostname)
	if err != nil {
		return nil, err
	}
	flow := &store.OAuthFlow{
		ID: NewState(), Platform: req.Platform, Purpose: store.PurposeConnect, Surface: req.Surface,
		Hostname: hostname, BindingHash: req.BindingHash, ReturnTo: req.ReturnTo, Data: req.Data,
		ExpiresAt: e.o.Clock.Now().Add(e.o.FlowTTL),
	}
	if req.Host != nil {
		flow.Host = *req.Host
	}
	if err := e.o.Store.CreateFlow(ctx, flow); err != nil {
		return nil, storeFailure(err)
	}
	return &Started{AuthURL: e.o.PublicURL + "/connect/apikey?state=" + url.QueryEscape(flow.ID), Flow: flow}, nil
}

// ConnectFlow returns a pending connect flow after checking the browser
// binding, without consuming it (the API-key form page).
func (e *Engine) ConnectFlow(ctx context.Context, state, bindingHash string) (*store.OAuthFlow, error) {
	if state == "" || len(state) > 512 {
		return nil, failure.Newf(failure.InvalidState, "The login link is invalid or has expired. Please start again.")
	}
	f, err := e.o.Store.GetFlow(ctx, state)
	if err != nil {
		return nil, stateFailure(err)
	}
	if f.Purpose != store.PurposeConnect || f.BindingHash == "" || !constantEqual(f.BindingHash, bindingHash) {
		return nil, failure.Newf(failure.InvalidState, "This login was started in another browser. Please start again.")
	}
	return f, nil
}

// CompleteAPIKeyConnect logs in with the API-key form of a connect flow.
// A refused login leaves the flow usable (the person corrects the form); a
// successful one consumes it.
func (e *Engine) CompleteAPIKeyConnect(ctx context.Context, state, bindingHash, apiKey string, fields map[string]string) (*LoginResult, error) {
	f, err := e.ConnectFlow(ctx, state, bindingHash)
	if err != nil {
		return nil, err
	}
	var host *store.HostIdentity
	if f.Host != (store.HostIdentity{}) {
		h := f.Host
		host = &h
	}
	res, err := e.APIKeyLogin(ctx, APIKeyRequest{Platform: f.Platform, APIKey: apiKey, Hostname: f.Hostname, AdditionalInfo: fields, Host: host})
	if err != nil || res.User == nil {
		if res != nil {
			res.Flow = f
		}
		return res, err
	}
	consumed, err := e.o.Store.ConsumeFlow(ctx, state)
	if err != nil {
		return nil, stateFailure(err)
	}
	res.Flow = consumed
	return res, nil
}
