package auth

import (
	"context"
	"crypto/subtle"
	"fmt"
	"strings"
	"unicode"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/store"
)

// APIKeyRequest is an API-key login (App Connect's /apiKeyLogin body).
type APIKeyRequest struct {
	Platform       string
	APIKey         string
	Hostname       string
	AdditionalInfo map[string]string
	// Host is the caller's verified host identity, if any (needed for
	// managed fields, and it scopes the stored record).
	Host *store.HostIdentity
}

// MissingFieldsError carries the consts of required fields still empty
// after managed-field resolution (App Connect's
// missingRequiredFieldConsts).
type MissingFieldsError struct {
	Consts []string
}

func (e *MissingFieldsError) Error() string {
	return "auth: missing required authentication fields: " + strings.Join(e.Consts, ", ")
}

// Limits on submitted login values.
const (
	maxFieldLen  = 4096
	maxFieldsNum = 64
)

// APIKeyLogin resolves the form fields (managed values included), asks the
// connector for the basic-auth value and the user's identity, and stores
// the login.
func (e *Engine) APIKeyLogin(ctx context.Context, req APIKeyRequest) (*LoginResult, error) {
	ent, err := e.entry(req.Platform)
	if err != nil {
		return nil, err
	}
	p := ent.Platform
	ak, ok := ent.Connector.(connector.APIKeyConnector)
	if !ok || p.AuthType() != connector.AuthAPIKey {
		return nil, failure.Newf(failure.InvalidRequest, "%s does not use API keys.", req.Platform)
	}
	submitted, err := cleanFields(req.AdditionalInfo)
	if err != nil {
		return nil, err
	}
	if err := checkValue("apiKey", req.APIKey); err != nil {
		return nil, err
	}
	if req.APIKey != "" {
		submitted[manifest.APIKeyConst] = req.APIKey
	}
	values, missing, err := e.resolveFields(ctx, p, req.Host, submitted)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, failure.New(failure.MissingManagedFields, "Missing required authentication fields.", &MissingFieldsError{Consts: missing})
	}
	hostname := ""
	if req.Hostname != "" {
		// Hostnames of API-key connectors are honoured only when the
		// connector declares host patterns; otherwise ignored (App
		// Connect passes whatever the client had).
		if len(p.Hosts()) > 0 {
			if hostname, err = e.checkHostname(p, req.Hostname); err != nil {
				return nil, err
			}
		}
	}
	apiKey := values[manifest.APIKeyConst]
	res, err := ent.Connector.UserInfo(ctx, connector.UserInfoRequest{
		HTTPClient:     e.o.HTTP,
		AuthHeader:     "Basic " + ak.BasicAuth(apiKey),
		Hostname:       hostname,
		Platform:       req.Platform,
		AdditionalInfo: values,
		APIKey:         connector.Secret(apiKey),
	})
	if err != nil {
		e.loginFailed(ctx, req)
		return nil, failure.New(failure.UpstreamUnavailable, fmt.Sprintf("%s could not be reached. Please try again.", displayName(p)), err)
	}
	if !res.Successful || res.User.ID == "" {
		e.loginFailed(ctx, req)
		msg := res.ReturnMessage
		if msg == nil {
			msg = &connector.ReturnMessage{Message: fmt.Sprintf("Could not log in to %s with these credentials.", displayName(p)), MessageType: connector.MessageWarning, TTL: 3000}
		}
		return &LoginResult{Message: msg}, nil
	}
	pu, err := e.postSave(ctx, ent.Connector, res.User)
	if err != nil {
		return nil, err
	}
	if pu.OverridingHostname != "" {
		hostname = pu.OverridingHostname
	}
	if pu.OverridingAPIKey != "" {
		apiKey = pu.OverridingAPIKey.Reveal()
	}
	u := &store.User{
		Platform:       req.Platform,
		CRMUserID:      pu.ID,
		Hostname:       hostname,
		AppConnectID:   pu.ID + "-" + req.Platform,
		DisplayName:    pu.Name,
		TimezoneName:   pu.TimezoneName,
		TimezoneOffset: pu.TimezoneOffset,
		APIKey:         apiKey,
		AdditionalInfo: pu.AdditionalInfo,
		Secrets:        loginSecrets(p, values, pu.Secrets),
		Status:         store.StatusActive,
	}
	if req.Host != nil {
		u.Host = *req.Host
	}
	saved, err := e.o.Store.UpsertUser(ctx, u)
	if err != nil {
		return nil, storeFailure(err)
	}
	if e.o.Managed != nil && req.Host != nil {
		if err := e.o.Managed.LoginSucceeded(ctx, req.Platform, *req.Host); err != nil {
			e.o.Logger.Warn("clearing the managed-login failure mark failed", "platform", req.Platform, "error", err)
		}
	}
	return &LoginResult{User: saved, Name: saved.DisplayName, Message: res.ReturnMessage}, nil
}

// resolveFields applies managed values, then checks required fields.
func (e *Engine) resolveFields(ctx context.Context, p *manifest.Platform, host *store.HostIdentity, submitted map[string]string) (map[string]string, []string, error) {
	if e.o.Managed != nil {
		return e.o.Managed.Resolve(ctx, p, host, submitted)
	}
	var missing []string
	for _, f := range p.APIKeyFields() {
		if f.Required && strings.TrimSpace(submitted[f.Const]) == "" {
			missing = append(missing, f.Const)
		}
	}
	return submitted, missing, nil
}

func (e *Engine) loginFailed(ctx context.Context, req APIKeyRequest) {
	if e.o.Managed == nil || req.Host == nil {
		return
	}
	if err := e.o.Managed.LoginFailed(ctx, req.Platform, *req.Host); err != nil {
		e.o.Logger.Warn("recording the managed-login failure failed", "platform", req.Platform, "error", err)
	}
}

// loginSecrets keeps the secret form fields (other than the API key, which
// has its own column) and the connector's derived secrets, sealed at rest;
// App Connect stores them in plaintext.
func loginSecrets(p *manifest.Platform, values map[string]string, derived map[string]connector.Secret) map[string]string {
	out := revealSecrets(derived)
	for _, f := range p.APIKeyFields() {
		if f.Const == manifest.APIKeyConst {
			continue
		}
		if v := values[f.Const]; v != "" && (f.Secret || f.Type == "password" || strings.Contains(strings.ToLower(f.Const), "password")) {
			if out == nil {
				out = map[string]string{}
			}
			out["field:"+f.Const] = v
		}
	}
	return out
}

// cleanFields copies and bounds submitted form values.
func cleanFields(in map[string]string) (map[string]string, error) {
	if len(in) > maxFieldsNum {
		return nil, failure.Newf(failure.InvalidRequest, "Too many fields.")
	}
	out := make(map[string]string, len(in)+1)
	for k, v := range in {
		if err := checkValue(k, v); err != nil {
			return nil, err
		}
		if len(k) > 128 {
			return nil, failure.Newf(failure.InvalidRequest, "A field name is too long.")
		}
		out[k] = v
	}
	return out, nil
}

// checkValue bounds one submitted value: length, no control characters.
func checkValue(name, v string) error {
	if len(v) > maxFieldLen {
		return failure.Newf(failure.InvalidRequest, "The value of %s is too long.", truncate(name, 64))
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return failure.Newf(failure.InvalidRequest, "The value of %s contains control characters.", truncate(name, 64))
		}
	}
	return nil
}

func constantEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
