// Package identity answers "who is calling, from which host account, and
// are they an admin" from a host token - never from request parameters.
// Host identity is always (host kind, account id) + user id.
//
// Two kinds of host token are understood, behind one Verifier interface so
// more hosts can be added: RingCentral access tokens (X-RC-Access-Token,
// verified by asking RingCentral who the token belongs to, cached briefly
// under a hash of the token), and operator-issued identity tokens ("cdi_"
// prefix, verified locally by core/session and never forwarded anywhere).
package identity

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/core/store"
)

// Host kinds.
const (
	KindRingCentral = "ringcentral"
	KindOperator    = session.HostKindOperator
)

// DefaultRingCentralServer is RingCentral's production API.
const DefaultRingCentralServer = "https://platform.ringcentral.com"

// Defaults and limits.
const (
	DefaultCacheTTL  = time.Minute
	DefaultTimeout   = 10 * time.Second
	MaxTokenLength   = 8 << 10
	maxCacheEntries  = 10000
	maxResponseBytes = 1 << 20
)

// Identity is a verified caller.
type Identity struct {
	Host  store.HostIdentity
	Admin bool
	// Name is the host user's display name when the host says it.
	Name string
}

// Verifier verifies one kind of host token. Errors are *failure.Error:
// Unauthenticated for a bad token, UpstreamUnavailable when the host
// platform cannot answer.
type Verifier interface {
	Verify(ctx context.Context, token string) (*Identity, error)
}

// IdentityTokens verifies operator identity tokens (*session.Manager).
type IdentityTokens interface {
	VerifyIdentity(ctx context.Context, token string) (*session.Claims, error)
}

// Options configures a Service.
type Options struct {
	// RingCentralServer is CONNECTD_RINGCENTRAL_SERVER (default
	// DefaultRingCentralServer). Empty string with DisableRingCentral
	// true turns RingCentral tokens off.
	RingCentralServer  string
	DisableRingCentral bool
	// HTTP calls RingCentral (default: a client with DefaultTimeout and no
	// redirects).
	HTTP *http.Client
	// Tokens verifies "cdi_" operator identities; nil refuses them.
	Tokens IdentityTokens
	// CacheTTL is how long a RingCentral verification is reused (default
	// DefaultCacheTTL; negative disables the cache).
	CacheTTL time.Duration
	Clock    clock.Clock
	Logger   hclog.Logger
}

// Service routes a token to its verifier: "cdi_" tokens to the operator
// verifier, everything else to RingCentral. It implements
// server/appconnect's HostVerifier.
type Service struct {
	rc       Verifier
	operator Verifier
}

// New returns a Service.
func New(o Options) (*Service, error) {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	s := &Service{}
	if o.Tokens != nil {
		s.operator = &Operator{Tokens: o.Tokens}
	}
	if !o.DisableRingCentral {
		rc, err := NewRingCentral(RingCentralOptions{Server: o.RingCentralServer, HTTP: o.HTTP, CacheTTL: o.CacheTTL, Clock: o.Clock, Logger: o.Logger.Named("ringcentral")})
		if err != nil {
			return nil, err
		}
		s.rc = rc
	}
	return s, nil
}

// Verify returns the caller's identity, including whether they are an
// admin of their account.
func (s *Service) Verify(ctx context.Context, token string) (*Identity, error) {
	if token == "" {
		return nil, failure.Newf(failure.Unauthenticated, "A host token is required.")
	}
	if len(token) > MaxTokenLength || strings.ContainsFunc(token, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return nil, failure.Newf(failure.Unauthenticated, "The host token is malformed.")
	}
	if strings.HasPrefix(token, session.IdentityPrefix) {
		// Never forwarded to RingCentral, whatever happens.
		if s.operator == nil {
			return nil, failure.Newf(failure.Unauthenticated, "Operator identity tokens are not accepted here.")
		}
		return s.operator.Verify(ctx, token)
	}
	if s.rc == nil {
		return nil, failure.Newf(failure.Unauthenticated, "RingCentral tokens are not accepted here.")
	}
	return s.rc.Verify(ctx, token)
}

// VerifyHost implements server/appconnect's HostVerifier: nil without a
// token.
func (s *Service) VerifyHost(ctx context.Context, token string) (*store.HostIdentity, error) {
	if token == "" {
		return nil, nil
	}
	id, err := s.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	h := id.Host
	return &h, nil
}

// Operator verifies operator identity tokens.
type Operator struct {
	Tokens IdentityTokens
}

// Verify implements Verifier.
func (o *Operator) Verify(ctx context.Context, token string) (*Identity, error) {
	c, err := o.Tokens.VerifyIdentity(ctx, token)
	if err != nil {
		if errors.Is(err, session.ErrInvalidToken) || failure.Is(err, failure.Unauthenticated) {
			return nil, failure.New(failure.Unauthenticated, "The identity token is invalid, expired or revoked.", err)
		}
		return nil, err
	}
	return &Identity{Host: c.Host, Admin: c.Admin}, nil
}

// RingCentralOptions configures a RingCentral verifier.
type RingCentralOptions struct {
	Server   string
	HTTP     *http.Client
	CacheTTL time.Duration
	Clock    clock.Clock
	Logger   hclog.Logger
}

// RingCentral verifies RingCentral access tokens with
// GET {server}/restapi/v1.0/account/~/extension/~ and caches successes
// for a short time under the SHA-256 of the token (never the token).
type RingCentral struct {
	url    string
	http   *http.Client
	ttl    time.Duration
	clock  clock.Clock
	log    hclog.Logger
	mu     sync.Mutex
	cache  map[[32]byte]cached
	flight map[[32]byte]*call
}

type cached struct {
	id      Identity
	expires time.Time
}

type call struct {
	done chan struct{}
	id   *Identity
	err  error
}

// NewRingCentral returns a RingCentral verifier.
func NewRingCentral(o RingCentralOptions) (*RingCentral, error) {
	server := strings.TrimRight(o.Server, "/")
	if server == "" {
		server = DefaultRingCentralServer
	}
	if !strings.HasPrefix(server, "https://") && !strings.HasPrefix(server, "http://") {
		return nil, fmt.Errorf("identity: RingCentral server %q must be an http(s) URL", server)
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: DefaultTimeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.CacheTTL == 0 {
		o.CacheTTL = DefaultCacheTTL
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return &RingCentral{
		url: server + "/restapi/v1.0/account/~/extension/~", http: o.HTTP, ttl: o.CacheTTL, clock: o.Clock, log: o.Logger,
		cache: map[[32]byte]cached{}, flight: map[[32]byte]*call{},
	}, nil
}

// Verify implements Verifier. Concurrent verifications of one token share
// one upstream call.
func (r *RingCentral) Verify(ctx context.Context, token string) (*Identity, error) {
	key := sha256.Sum256([]byte(token))
	now := r.clock.Now()
	r.mu.Lock()
	if c, ok := r.cache[key]; ok {
		if now.Before(c.expires) {
			r.mu.Unlock()
			id := c.id
			return &id, nil
		}
		delete(r.cache, key)
	}
	if f, ok := r.flight[key]; ok {
		r.mu.Unlock()
		select {
		case <-f.done:
			if f.err != nil {
				return nil, f.err
			}
			id := *f.id
			return &id, nil
		case <-ctx.Done():
			return nil, failure.New(failure.UpstreamUnavailable, "RingCentral could not be reached. Please try again.", ctx.Err())
		}
	}
	f := &call{done: make(chan struct{})}
	r.flight[key] = f
	r.mu.Unlock()

	f.id, f.err = r.fetch(ctx, token)

	r.mu.Lock()
	delete(r.flight, key)
	if f.err == nil && r.ttl > 0 {
		if len(r.cache) >= maxCacheEntries {
			for k, c := range r.cache {
				if !now.Before(c.expires) {
					delete(r.cache, k)
				}
			}
			if len(r.cache) >= maxCacheEntries {
				r.cache = map[[32]byte]cached{}
			}
		}
		r.cache[key] = cached{id: *f.id, expires: r.clock.Now().Add(r.ttl)}
	}
	r.mu.Unlock()
	close(f.done)
	if f.err != nil {
		return nil, f.err
	}
	id := *f.id
	return &id, nil
}

// rcExtension is the part of RingCentral's extension answer we read.
type rcExtension struct {
	ID      json.Number `json:"id"`
	Name    string      `json:"name"`
	Account struct {
		ID json.Number `json:"id"`
	} `json:"account"`
	Permissions struct {
		Admin struct {
			Enabled bool `json:"enabled"`
		} `json:"admin"`
	} `json:"permissions"`
}

func (r *RingCentral) fetch(ctx context.Context, token string) (*Identity, error) {
	unavailable := func(cause error) error {
		return failure.New(failure.UpstreamUnavailable, "RingCentral could not be reached to verify your identity. Please try again.", cause)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return nil, fmt.Errorf("identity: build RingCentral request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	resp, err := r.http.Do(req)
	if err != nil {
		return nil, unavailable(fmt.Errorf("identity: RingCentral: %w", stripURL(err)))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, unavailable(fmt.Errorf("identity: read RingCentral answer: %w", err))
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, failure.New(failure.Unauthenticated, "Your RingCentral session is invalid or has expired.", fmt.Errorf("identity: RingCentral answered %d", resp.StatusCode))
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return nil, unavailable(fmt.Errorf("identity: RingCentral answered %d", resp.StatusCode))
	default:
		return nil, failure.New(failure.Unauthenticated, "RingCentral did not accept the token.", fmt.Errorf("identity: RingCentral answered %d", resp.StatusCode))
	}
	if len(body) > maxResponseBytes {
		return nil, failure.New(failure.UpstreamInvalid, "RingCentral answered something unusable.", errors.New("identity: RingCentral answer too large"))
	}
	var ext rcExtension
	if err := json.Unmarshal(body, &ext); err != nil {
		return nil, failure.New(failure.UpstreamInvalid, "RingCentral answered something unusable.", fmt.Errorf("identity: decode RingCentral answer: %w", err))
	}
	acct, user := ext.Account.ID.String(), ext.ID.String()
	if acct == "" || user == "" || len(acct) > 64 || len(user) > 64 {
		return nil, failure.New(failure.UpstreamInvalid, "RingCentral answered something unusable.", errors.New("identity: RingCentral answer lacks account or extension id"))
	}
	return &Identity{Host: store.HostIdentity{Kind: KindRingCentral, AccountID: acct, UserID: user}, Admin: ext.Permissions.Admin.Enabled, Name: ext.Name}, nil
}

// stripURL drops the request URL from a transport error (it names the
// server only, but keep logs tidy and uniform).
func stripURL(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}
