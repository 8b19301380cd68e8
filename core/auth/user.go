package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/store"
)

// needsReauth is App Connect's "User session expired" answer.
func needsReauth(cause error) error {
	return failure.New(failure.NeedsReauth, "User session expired. Please connect again.", cause)
}

// User returns a usable record: present, not revoked, not needs_reauth.
func (e *Engine) User(ctx context.Context, userID string) (*store.User, error) {
	u, err := e.o.Store.GetUser(ctx, userID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, needsReauth(err)
		}
		return nil, storeFailure(err)
	}
	switch u.Status {
	case store.StatusRevoked, store.StatusNeedsReauth:
		return nil, needsReauth(fmt.Errorf("auth: user %s is %s", u.ID, u.Status))
	}
	return u, nil
}

// userRefresher is the optional Refresher method that takes a record the
// caller already read (core/refresh implements it), saving a second read
// of the same row on every request.
type userRefresher interface {
	FreshUser(ctx context.Context, u *store.User) (*store.User, error)
}

// freshUser returns a usable record whose token is not due (OAuth).
func (e *Engine) freshUser(ctx context.Context, userID string) (*store.User, connector.Connector, error) {
	u, err := e.User(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	ent, err := e.entry(u.Platform)
	if err != nil {
		return nil, nil, err
	}
	switch ent.Platform.AuthType() {
	case connector.AuthOAuth:
		if fr, ok := e.o.Refresher.(userRefresher); ok {
			// One read per request: hand over the record just read.
			u, err = fr.FreshUser(ctx, u)
		} else {
			u, err = e.o.Refresher.Fresh(ctx, userID)
		}
		if err != nil {
			return nil, nil, err
		}
		if u.AccessToken == "" {
			return nil, nil, needsReauth(errors.New("auth: no access token"))
		}
	case connector.AuthAPIKey:
		if u.APIKey == "" {
			return nil, nil, needsReauth(errors.New("auth: no api key"))
		}
	}
	return u, ent.Connector, nil
}

// Validate answers App Connect's /authValidation for every connector: the
// record is usable and refreshed if due; a connector that can ask its
// service (AuthValidator) is asked. The common path makes no upstream
// call.
func (e *Engine) Validate(ctx context.Context, userID string) (connector.ValidationResult, error) {
	u, c, err := e.freshUser(ctx, userID)
	if err != nil {
		return connector.ValidationResult{}, err
	}
	v, ok := c.(connector.AuthValidator)
	if !ok {
		return connector.ValidationResult{Successful: true, Status: http.StatusOK}, nil
	}
	res, err := v.ValidateAuth(ctx, e.userRequest(ctx, u))
	if err != nil {
		if fe := (*failure.Error)(nil); errors.As(err, &fe) {
			return connector.ValidationResult{}, err
		}
		return connector.ValidationResult{}, failure.New(failure.UpstreamUnavailable, "The service could not be reached to validate your login.", err)
	}
	return res, nil
}

// RefreshUserInfo answers /user/refreshInfo.
func (e *Engine) RefreshUserInfo(ctx context.Context, userID string) (connector.Result, error) {
	u, c, err := e.freshUser(ctx, userID)
	if err != nil {
		return connector.Result{}, err
	}
	r, ok := c.(connector.UserInfoRefresher)
	if !ok {
		return connector.Result{Successful: true}, nil
	}
	res, err := r.RefreshUserInfo(ctx, e.userRequest(ctx, u))
	if err != nil {
		return connector.Result{}, failure.New(failure.UpstreamUnavailable, "The service could not be reached.", err)
	}
	if res.Successful && res.User.ID != "" {
		if err := e.o.Store.UpdateUserProfile(ctx, u.ID, res.User.Name, res.User.TimezoneName, res.User.TimezoneOffset, res.User.AdditionalInfo); err != nil {
			return connector.Result{}, storeFailure(err)
		}
	}
	return connector.Result{Successful: res.Successful, ReturnMessage: res.ReturnMessage}, nil
}

// License answers /licenseStatus.
func (e *Engine) License(ctx context.Context, userID string) (connector.LicenseStatus, error) {
	u, c, err := e.freshUser(ctx, userID)
	if err != nil {
		return connector.LicenseStatus{}, err
	}
	l, ok := c.(connector.LicenseChecker)
	if !ok {
		return connector.LicenseStatus{IsLicenseValid: true, LicenseStatus: "Basic", LicenseStatusDescription: ""}, nil
	}
	st, err := l.LicenseStatus(ctx, e.userRequest(ctx, u))
	if err != nil {
		return connector.LicenseStatus{}, failure.New(failure.UpstreamUnavailable, "The licence could not be read.", err)
	}
	return st, nil
}

// Logout revokes the login: credentials cleared and every session of the
// record revoked at once (never waiting for a refresh in flight), then the
// connector revokes upstream; a failed upstream revocation is retried
// through the jobs mechanism.
func (e *Engine) Logout(ctx context.Context, userID string) (connector.Result, error) {
	old, err := e.o.Store.RevokeUser(ctx, userID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return connector.Result{}, needsReauth(err)
		}
		return connector.Result{}, storeFailure(err)
	}
	if _, err := e.o.Store.RevokeUserSessions(ctx, userID); err != nil {
		return connector.Result{}, storeFailure(err)
	}
	res := connector.Result{Successful: true, ReturnMessage: &connector.ReturnMessage{Message: "Logged out.", MessageType: connector.MessageSuccess, TTL: 1000}}
	if old.AccessToken == "" && old.RefreshToken == "" && old.APIKey == "" {
		return res, nil // already revoked
	}
	ent, err := e.o.Registry.Get(old.Platform)
	if err != nil {
		return res, nil
	}
	un, ok := ent.Connector.(connector.Unauthorizer)
	if !ok {
		return res, nil
	}
	// Durable first: a revocation job exists before the prompt attempt, so
	// a crash right here still revokes upstream later (revocation is
	// idempotent: RFC 7009 answers 200 for a token already revoked).
	if err := e.o.Refresher.EnqueueRevoke(context.WithoutCancel(ctx), old); err != nil {
		e.o.Logger.Error("could not queue upstream revocation", "platform", old.Platform, "user", old.ID, "error", err)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	req := e.staticUserRequest(actx, ent.Connector, old)
	r, uerr := un.Unauthorize(actx, req)
	if uerr != nil {
		e.o.Logger.Warn("upstream revocation failed; the queued job retries it", "platform", old.Platform, "user", old.ID, "error", uerr)
		return res, nil
	}
	if r.ReturnMessage != nil {
		res.ReturnMessage = r.ReturnMessage
	}
	return res, nil
}

// userRequest is the argument of per-user capabilities: a client that
// injects and refreshes the credential, and the issuing OAuth app.
func (e *Engine) userRequest(ctx context.Context, u *store.User) connector.UserRequest {
	req := connector.UserRequest{HTTPClient: e.o.Refresher.HTTPClient(u.ID), User: u.ConnectorUser()}
	if info, err := e.o.Apps.ByRef(ctx, u.Platform, u.OAuthAppRef, connector.OAuthInfoRequest{Hostname: u.Hostname, HostAccountID: u.Host.AccountID}); err == nil {
		req.OAuth = info
	}
	return req
}

// staticUserRequest carries credentials no longer stored (logout).
func (e *Engine) staticUserRequest(ctx context.Context, c connector.Connector, u *store.User) connector.UserRequest {
	auth := ""
	switch {
	case u.AccessToken != "":
		auth = "Bearer " + u.AccessToken
	case u.APIKey != "":
		if ak, ok := c.(connector.APIKeyConnector); ok {
			auth = "Basic " + ak.BasicAuth(u.APIKey)
		}
	}
	// The no-redirects client: a revocation endpoint that redirects must
	// not carry the credential to another host.
	req := connector.UserRequest{HTTPClient: withAuth(e.o.TokenHTTP, auth), User: u.ConnectorUser()}
	if info, err := e.o.Apps.ByRef(ctx, u.Platform, u.OAuthAppRef, connector.OAuthInfoRequest{Hostname: u.Hostname, HostAccountID: u.Host.AccountID}); err == nil {
		req.OAuth = info
	}
	return req
}

// authTransport sets Authorization unless the request has one.
type authTransport struct {
	base http.RoundTripper
	auth string
}

func (t authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.auth != "" && r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", t.auth)
	}
	return t.base.RoundTrip(r)
}

func withAuth(c *http.Client, auth string) *http.Client {
	cc := *c
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cc.Transport = authTransport{base: base, auth: auth}
	return &cc
}
