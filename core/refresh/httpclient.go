package refresh

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/store"
)

// maxDrain bounds how much of a 401 body is read to reuse the connection.
const maxDrain = 64 << 10

// HTTPClient returns a client for connector calls on behalf of userID. Each
// request gets "Authorization: Bearer <access token>" (OAuth connectors) or
// "Basic <BasicAuth(api key)>" (API-key connectors), the token refreshed
// first when due (Fresh: the same single-flight and lease as everything
// else, never an in-process oauth2.TokenSource). After a 401 it forces ONE
// refresh - only if the stored version is still the one that failed,
// otherwise it just re-reads - and retries once; a request body is replayed
// through GetBody (requests with a body and no GetBody are not retried).
//
// A request that already carries an Authorization header is sent as it is
// (a connector authenticating as the client, e.g. for RFC 7009
// revocation). Redirects are followed only to the same host, so the
// credential never travels elsewhere. Errors from the engine (NeedsReauth,
// UpstreamUnavailable, ...) come back from Do wrapped in *url.Error; use
// errors.As to find the *failure.Error.
func (s *Service) HTTPClient(userID string) *http.Client {
	return s.authClient(&userCredential{s: s, userID: userID})
}

func (s *Service) authClient(cred credential) *http.Client {
	base := s.apiHTTP.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	return &http.Client{
		Transport: &authTransport{base: base, cred: cred},
		Timeout:   s.apiHTTP.Timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 || req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
}

// credential supplies the Authorization header for a request, and a new
// one after a 401 (ok=false: do not retry).
type credential interface {
	header(ctx context.Context) (value string, version int64, retriable bool, err error)
	after401(ctx context.Context, failedVersion int64) (value string, ok bool, err error)
}

type authTransport struct {
	base http.RoundTripper
	cred credential
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Authorization") != "" {
		return t.base.RoundTrip(req)
	}
	ctx := req.Context()
	value, version, retriable, err := t.cred.header(ctx)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	if value == "" {
		return t.base.RoundTrip(req)
	}
	first := req.Clone(ctx)
	first.Header.Set("Authorization", value)
	resp, err := t.base.RoundTrip(first)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !retriable {
		return resp, err
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return resp, nil // cannot replay the body
	}
	next, ok, err := t.cred.after401(ctx, version)
	if err != nil || !ok {
		if err != nil {
			drain(resp)
			return nil, err
		}
		return resp, nil
	}
	drain(resp)
	retry := req.Clone(ctx)
	if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		retry.Body = body
	}
	retry.Header.Set("Authorization", next)
	return t.base.RoundTrip(retry)
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	_ = resp.Body.Close()
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// userCredential reads the stored record through Fresh / ForceRefresh.
type userCredential struct {
	s      *Service
	userID string
}

func (c *userCredential) header(ctx context.Context) (string, int64, bool, error) {
	u, err := c.s.Fresh(ctx, c.userID)
	if err != nil {
		return "", 0, false, err
	}
	value, bearer, err := c.s.authHeader(ctx, u)
	return value, u.Version, bearer, err
}

func (c *userCredential) after401(ctx context.Context, failedVersion int64) (string, bool, error) {
	u, err := c.s.ForceRefresh(ctx, c.userID, failedVersion)
	if err != nil {
		return "", false, err
	}
	value, _, err := c.s.authHeader(ctx, u)
	if err != nil {
		return "", false, err
	}
	return value, true, nil
}

// authHeader builds the Authorization value for u; bearer reports an OAuth
// token (which a 401 may refresh).
func (s *Service) authHeader(ctx context.Context, u *store.User) (value string, bearer bool, err error) {
	conn, _, err := s.conns.Connector(u.Platform)
	if err != nil {
		return "", false, err
	}
	return headerFor(ctx, conn, u)
}

func headerFor(ctx context.Context, conn connector.Connector, u *store.User) (string, bool, error) {
	if ak, ok := conn.(connector.APIKeyConnector); ok {
		at, err := conn.AuthType(ctx)
		if err == nil && at == connector.AuthAPIKey {
			if u.APIKey == "" {
				return "", false, needsReauth(errors.New("refresh: no API key stored"))
			}
			return "Basic " + ak.BasicAuth(u.APIKey), false, nil
		}
	}
	if u.AccessToken == "" {
		return "", false, needsReauth(errors.New("refresh: no access token stored"))
	}
	return "Bearer " + u.AccessToken, true, nil
}

// staticCredential carries fixed tokens (revocation of tokens no longer
// stored): no refresh, no retry.
type staticCredential struct{ value string }

func (c staticCredential) header(context.Context) (string, int64, bool, error) {
	return c.value, 0, false, nil
}

func (staticCredential) after401(context.Context, int64) (string, bool, error) { return "", false, nil }
