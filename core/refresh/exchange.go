package refresh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/oauth2"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/outbound"
	"github.com/connectd/connectd/core/store"
)

// failKind classifies a failed token request.
type failKind int

const (
	// failTemporary: the provider answered 5xx/429 or could not be reached;
	// nothing was processed. Tokens kept, status restored.
	failTemporary failKind = iota + 1
	// failMaybeProcessed: the request went out and no answer came back
	// (timeout, dropped connection): the provider may have rotated.
	failMaybeProcessed
	// failInvalid: an answer that is not a usable token response.
	failInvalid
	// failGrant: invalid_grant, the refresh token is refused for good.
	failGrant
	// failMisconfigured: the provider refused our client (invalid_client),
	// or the token URL is not allowed.
	failMisconfigured
)

// upstreamFailure is a classified token-request failure. cause is safe to
// log: it never carries a response body (which may hold tokens).
type upstreamFailure struct {
	kind       failKind
	retryAfter time.Duration
	cause      error
}

type configKey struct {
	clientID, secret, tokenURL string
	style                      oauth2.AuthStyle
}

// oauthConfig returns a cached x/oauth2 config per app. The auth style is
// never auto-detected (connector.OAuthInfo.TokenAuthStyle): detection
// retries a failed refresh with the other style, which would replay a
// rotating refresh token after a lost response.
func (s *Service) oauthConfig(app connector.OAuthInfo) *oauth2.Config {
	k := configKey{app.ClientID, app.ClientSecret.Reveal(), app.TokenURL, app.AuthStyle}
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	if c, ok := s.configs[k]; ok {
		return c
	}
	c := &oauth2.Config{
		ClientID:     app.ClientID,
		ClientSecret: app.ClientSecret.Reveal(),
		Endpoint:     oauth2.Endpoint{TokenURL: app.TokenURL, AuthStyle: app.TokenAuthStyle()},
		Scopes:       app.Scopes,
	}
	s.configs[k] = c
	return c
}

// exchange performs the refresh-token grant with UpstreamTimeout: the
// connector's TokenRefresher when it has one, else x/oauth2 through the
// outbound client.
func (s *Service) exchange(ctx context.Context, conn connector.Connector, app connector.OAuthInfo, u *store.User) (*oauth2.Token, *upstreamFailure) {
	ctx, cancel := context.WithTimeout(ctx, s.upstreamTimeout)
	defer cancel()
	ctx, bodyErr := outbound.WithBodyErrorRecorder(ctx)
	var (
		tok *oauth2.Token
		err error
	)
	if tr, ok := conn.(connector.TokenRefresher); ok {
		tok, err = tr.RefreshToken(ctx, connector.RefreshRequest{HTTPClient: s.http, OAuth: app, User: u.ConnectorUser()})
	} else {
		octx := context.WithValue(ctx, oauth2.HTTPClient, s.http)
		tok, err = s.oauthConfig(app).TokenSource(octx, &oauth2.Token{RefreshToken: u.RefreshToken}).Token()
	}
	if err != nil {
		return nil, classify(err, bodyErr())
	}
	if tok == nil || tok.AccessToken == "" {
		return nil, &upstreamFailure{kind: failInvalid, cause: errors.New("refresh: token response without access_token")}
	}
	return tok, nil
}

// classify maps a token-request error to a failKind. Only status codes,
// OAuth error codes and transport errors are kept as the cause: a
// RetrieveError's text includes the response body.
func classify(err, bodyErr error) *upstreamFailure {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		cause := fmt.Errorf("refresh: token endpoint answered status %d, error %q", status, truncate(re.ErrorCode, 64))
		switch {
		case status >= 500 || status == http.StatusTooManyRequests:
			return &upstreamFailure{kind: failTemporary, retryAfter: retryAfter(re.Response), cause: cause}
		case status >= 200 && status < 300:
			// A 200 carrying {"error": ...}: not a token response (case 6).
			return &upstreamFailure{kind: failInvalid, cause: cause}
		}
		switch re.ErrorCode {
		case "invalid_grant":
			return &upstreamFailure{kind: failGrant, cause: cause}
		case "invalid_client", "unauthorized_client", "unsupported_grant_type":
			return &upstreamFailure{kind: failMisconfigured, cause: cause}
		case "temporarily_unavailable", "server_error":
			return &upstreamFailure{kind: failTemporary, cause: cause}
		}
		if status == http.StatusUnauthorized {
			return &upstreamFailure{kind: failMisconfigured, cause: cause}
		}
		return &upstreamFailure{kind: failInvalid, cause: cause}
	}
	if bodyErr != nil {
		// x/oauth2 flattens body read errors into text; the recorder kept
		// the typed one.
		if errors.Is(bodyErr, outbound.ErrResponseTooLarge) {
			return &upstreamFailure{kind: failInvalid, cause: fmt.Errorf("refresh: token response: %w", outbound.ErrResponseTooLarge)}
		}
		return &upstreamFailure{kind: failMaybeProcessed, cause: fmt.Errorf("refresh: reading token response: %w", bodyErr)}
	}
	switch {
	case errors.Is(err, outbound.ErrResponseTooLarge):
		return &upstreamFailure{kind: failInvalid, cause: fmt.Errorf("refresh: token response: %w", outbound.ErrResponseTooLarge)}
	case errors.Is(err, outbound.ErrBlockedAddress), errors.Is(err, outbound.ErrInsecureScheme):
		return &upstreamFailure{kind: failMisconfigured, cause: fmt.Errorf("refresh: token URL refused by the outbound guard: %w", err)}
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		// Never connected: nothing was sent.
		return &upstreamFailure{kind: failTemporary, cause: fmt.Errorf("refresh: token endpoint unreachable: %w", err)}
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &upstreamFailure{kind: failMaybeProcessed, cause: fmt.Errorf("refresh: no answer from the token endpoint: %w", err)}
	}
	// x/oauth2's "cannot parse json", "server response missing
	// access_token", or a TokenRefresher's own error.
	return &upstreamFailure{kind: failInvalid, cause: fmt.Errorf("refresh: unusable token response: %s", truncate(err.Error(), 200))}
}

func retryAfter(resp *http.Response) time.Duration {
	if resp == nil {
		return 0
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	return 0
}

// expiry computes the new access token's expiry with our clock (x/oauth2
// uses time.Now); nil when the provider gave none (never due: a 401
// triggers ForceRefresh instead).
func (s *Service) expiry(tok *oauth2.Token) *time.Time {
	now := s.clock.Now()
	var t time.Time
	switch {
	case tok.ExpiresIn > 0:
		t = now.Add(time.Duration(tok.ExpiresIn) * time.Second)
	case !tok.Expiry.IsZero():
		t = now.Add(time.Until(tok.Expiry))
	default:
		return nil
	}
	t = t.UTC()
	return &t
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
