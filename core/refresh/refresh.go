// Package refresh keeps users' OAuth access tokens fresh, correctly across
// replicas: the "Refresh across replicas" design of security.md.
//
// Providers that rotate refresh tokens and detect reuse revoke the whole
// grant when an old refresh token is replayed, so exactly one refresh per
// expiry is a matter of correctness. The Service therefore
//
//   - collapses concurrent refreshes of one user in this process
//     (singleflight), and across processes takes the user row's lease
//     (store.Users.AcquireUserLease: one conditional UPDATE judged by the
//     database clock, which also writes refresh_uncertain AHEAD);
//   - lets only the lease holder call the token endpoint; the others wait
//     for the version to change and re-read, or take over once the lease has
//     expired (the holder died);
//   - bounds the upstream call (UpstreamTimeout < LeaseTTL - a margin) and
//     saves with a context detached from the caller's cancellation, fenced by
//     the lease (SaveLeasedTokens);
//   - keeps tokens on temporary failures (5xx, 429, timeouts) and backs off;
//     marks needs_reauth only on a definitive invalid_grant after a re-read
//     shows nobody else refreshed meanwhile;
//   - revokes upstream, through the durable jobs mechanism, tokens a refresh
//     obtained after the user logged out.
//
// HTTPClient hands connectors an *http.Client that injects the credential
// and applies all of this, so connector code never handles tokens.
package refresh

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/store"
)

// Defaults for Options.
const (
	DefaultLeaseTTL        = 30 * time.Second
	DefaultUpstreamTimeout = 20 * time.Second
	DefaultWaitPoll        = 10 * time.Millisecond
	DefaultFailureBackoff  = 2 * time.Second
	DefaultSaveTimeout     = 10 * time.Second

	// maxWaitPoll caps the waiting replicas' polling interval.
	maxWaitPoll = 500 * time.Millisecond
	// fastWait: for this long a waiting replica polls at WaitPoll without
	// backing off. A refresh normally takes one upstream round trip, and
	// a waiter should see the saved token within one poll of the save
	// (load harness refresh storm: p99 <= upstream latency + 20 ms). Only
	// one flight per user per process polls, so this is a few reads.
	fastWait = time.Second
	// maxFailureBackoff caps a provider's Retry-After.
	maxFailureBackoff = time.Minute
)

// Outcomes counted by the connectd_token_refresh_total metric.
const (
	OutcomeRefreshed           = "refreshed"            // this replica refreshed and saved
	OutcomeJoined              = "joined"               // another replica refreshed; we waited and re-read
	OutcomeUpstreamUnavailable = "upstream_unavailable" // 5xx, 429, timeout, network: tokens kept
	OutcomeUpstreamInvalid     = "upstream_invalid"     // unusable answer: nothing saved
	OutcomeNeedsReauth         = "needs_reauth"         // invalid_grant: record marked needs_reauth
	OutcomeMisconfigured       = "misconfigured"        // invalid_client, missing app settings
	OutcomeLeaseLost           = "lease_lost"           // fenced save refused (logout, lease expired)
	OutcomeStoreUnavailable    = "store_unavailable"    // database failed around the refresh
)

// Options configure New.
type Options struct {
	// Users stores the records and their leases. Required.
	Users store.Users
	// Jobs receives upstream revocations. Required.
	Jobs store.Jobs
	// Connectors finds a platform's connector and refresh margin. Required.
	Connectors ConnectorSource
	// Apps resolves the OAuth app that issued a user's tokens; nil means
	// ConnectorApps (the connector's own OAuthInfo only).
	Apps AppResolver
	// HTTP calls token endpoints: an outbound client with NoRedirects.
	// Required.
	HTTP *http.Client
	// APIHTTP is the base of the clients HTTPClient returns (connector API
	// calls); nil uses HTTP.
	APIHTTP *http.Client
	// Clock judges access-token expiry and back-off (leases are judged by
	// the database). nil = the real clock.
	Clock clock.Clock
	// Logger; nil discards. Tokens are never logged.
	Logger hclog.Logger
	// LeaseTTL is how long a refresh lease lasts (default 30 s).
	LeaseTTL time.Duration
	// UpstreamTimeout bounds the token request (default 20 s); it must
	// leave a quarter of LeaseTTL for the save, so a slow provider cannot
	// outlive the lease.
	UpstreamTimeout time.Duration
	// SaveTimeout bounds the detached save and lease release (default 10 s).
	SaveTimeout time.Duration
	// WaitPoll is the first interval at which a replica waiting for another
	// one's refresh re-reads the record (default 25 ms, doubling to 500 ms).
	WaitPoll time.Duration
	// FailureBackoff is how long this replica refrains from calling a token
	// endpoint again for a user after a temporary failure (default 2 s; a
	// 429's Retry-After wins, up to a minute).
	FailureBackoff time.Duration
	// Registerer, when set, receives connectd_token_refresh_total{outcome}.
	Registerer prometheus.Registerer
}

// Service refreshes tokens and builds authenticated clients. Safe for
// concurrent use; create one per process.
type Service struct {
	listenersMu     sync.RWMutex
	listeners       []Listener
	users           store.Users
	jobs            store.Jobs
	conns           ConnectorSource
	apps            AppResolver
	http            *http.Client
	apiHTTP         *http.Client
	clock           clock.Clock
	log             hclog.Logger
	leaseTTL        time.Duration
	upstreamTimeout time.Duration
	saveTimeout     time.Duration
	waitPoll        time.Duration
	failureBackoff  time.Duration
	outcomes        *prometheus.CounterVec

	flights singleflight.Group

	cfgMu   sync.Mutex
	configs map[configKey]*oauth2.Config // keeps x/oauth2's auth-style cache per app

	boMu    sync.Mutex
	backoff map[string]time.Time // user id -> no token request before
}

// New validates o and returns a Service.
func New(o Options) (*Service, error) {
	switch {
	case o.Users == nil:
		return nil, errors.New("refresh: Options.Users is required")
	case o.Jobs == nil:
		return nil, errors.New("refresh: Options.Jobs is required")
	case o.Connectors == nil:
		return nil, errors.New("refresh: Options.Connectors is required")
	case o.HTTP == nil:
		return nil, errors.New("refresh: Options.HTTP is required (an outbound client with NoRedirects)")
	}
	s := &Service{
		users: o.Users, jobs: o.Jobs, conns: o.Connectors, apps: o.Apps,
		http: o.HTTP, apiHTTP: o.APIHTTP, clock: o.Clock, log: o.Logger,
		leaseTTL: o.LeaseTTL, upstreamTimeout: o.UpstreamTimeout, saveTimeout: o.SaveTimeout,
		waitPoll: o.WaitPoll, failureBackoff: o.FailureBackoff,
		configs: map[configKey]*oauth2.Config{},
		backoff: map[string]time.Time{},
	}
	if s.apps == nil {
		s.apps = ConnectorApps{Connectors: o.Connectors}
	}
	if s.apiHTTP == nil {
		s.apiHTTP = s.http
	}
	if s.clock == nil {
		s.clock = clock.Real{}
	}
	if s.log == nil {
		s.log = hclog.NewNullLogger()
	}
	if s.leaseTTL == 0 {
		s.leaseTTL = DefaultLeaseTTL
	}
	if s.upstreamTimeout == 0 {
		s.upstreamTimeout = DefaultUpstreamTimeout
	}
	if s.saveTimeout == 0 {
		s.saveTimeout = DefaultSaveTimeout
	}
	if s.waitPoll == 0 {
		s.waitPoll = DefaultWaitPoll
	}
	if s.failureBackoff == 0 {
		s.failureBackoff = DefaultFailureBackoff
	}
	if s.leaseTTL < 0 || s.upstreamTimeout < 0 || s.saveTimeout < 0 || s.waitPoll < 0 || s.failureBackoff < 0 {
		return nil, errors.New("refresh: durations must not be negative")
	}
	if limit := s.leaseTTL - s.leaseTTL/4; s.upstreamTimeout > limit {
		return nil, fmt.Errorf("refresh: UpstreamTimeout %s must be at most LeaseTTL %s minus a quarter (%s), so the save happens while the lease is held",
			s.upstreamTimeout, s.leaseTTL, limit)
	}
	s.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "connectd_token_refresh_total",
		Help: "Token refreshes by outcome (refreshed, joined, upstream_unavailable, upstream_invalid, needs_reauth, misconfigured, lease_lost, store_unavailable).",
	}, []string{"outcome"})
	if o.Registerer != nil {
		if err := o.Registerer.Register(s.outcomes); err != nil {
			return nil, fmt.Errorf("refresh: register metrics: %w", err)
		}
	}
	return s, nil
}

// Fresh returns the user's record with an access token that is not due
// within the connector's refresh margin, refreshing it first when needed.
// The common path is one read and no upstream call. Records without an
// expiry (API keys, providers omitting expires_in) are never due.
//
// Errors: failure.NeedsReauth (needs_reauth, revoked, or the provider
// refused the refresh token), failure.UpstreamUnavailable (the provider is
// down, slow or rate limiting: tokens kept), failure.UpstreamInvalid,
// failure.Misconfigured, failure.NotFound, failure.Unavailable (database).
func (s *Service) Fresh(ctx context.Context, userID string) (*store.User, error) {
	u, err := s.read(ctx, userID)
	if err != nil {
		return nil, err
	}
	return s.FreshUser(ctx, u)
}

// FreshUser is Fresh for a record the caller has just read from the store
// (the request path reads it once to check its status): when the token is
// not due it returns u itself with no further read; when it is due, the
// refresh re-reads the record under its lease as Fresh does, so a stale u
// never decides a refresh. Errors as Fresh.
func (s *Service) FreshUser(ctx context.Context, u *store.User) (*store.User, error) {
	if u == nil {
		return nil, failure.New(failure.NotFound, "User not found.", errors.New("refresh: nil user"))
	}
	if err := usable(u); err != nil {
		return nil, err
	}
	margin, err := s.margin(u.Platform)
	if err != nil {
		return nil, err
	}
	if !s.due(u, margin) {
		return u, nil
	}
	return s.refresh(ctx, u, false)
}

// ForceRefresh is for a credential the service just refused (HTTP 401):
// if the stored version is still failedVersion it refreshes (whether or not
// the token looks due); if the version moved on, someone refreshed or
// logged in meanwhile and the current record is returned without any
// upstream call.
func (s *Service) ForceRefresh(ctx context.Context, userID string, failedVersion int64) (*store.User, error) {
	u, err := s.read(ctx, userID)
	if err != nil {
		return nil, err
	}
	if err := usable(u); err != nil {
		return nil, err
	}
	if u.Version != failedVersion {
		return u, nil
	}
	return s.refresh(ctx, u, true)
}

// refresh runs (or joins) this process's one flight for the user. The
// flight runs on a context detached from the caller's cancellation (bounded
// by its own timeout): a caller hanging up must not abandon a token request
// the provider may already have honoured.
func (s *Service) refresh(ctx context.Context, u *store.User, force bool) (*store.User, error) {
	if s.backingOff(u.ID) {
		if !force && s.stillValid(u) {
			return u, nil
		}
		return nil, failure.New(failure.UpstreamUnavailable,
			"The CRM is temporarily unavailable. Please try again shortly.",
			errors.New("refresh: backing off after a temporary failure"))
	}
	key := "due/" + u.ID
	if force {
		key = "force/" + u.ID + "/" + strconv.FormatInt(u.Version, 10)
	}
	base := u.Version
	ch := s.flights.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*s.leaseTTL+s.saveTimeout)
		defer cancel()
		return s.flight(fctx, u.ID, force, base)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		c := *(r.Val.(*store.User)) // callers may modify their copy
		return &c, nil
	case <-ctx.Done():
		return nil, failure.New(failure.UpstreamUnavailable,
			"The request ended while the CRM credential was being refreshed.", ctx.Err())
	}
}

// flight takes the lease or waits for whoever holds it.
func (s *Service) flight(ctx context.Context, id string, force bool, baseVersion int64) (*store.User, error) {
	cur, err := s.read(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := usable(cur); err != nil {
		return nil, err
	}
	margin, err := s.margin(cur.Platform)
	if err != nil {
		return nil, err
	}
	if force && cur.Version != baseVersion {
		return cur, nil
	}
	if !force && !s.due(cur, margin) {
		return cur, nil
	}
	sawUncertain := cur.Status == store.StatusRefreshUncertain
	// heldSince is when we first found the lease held. Until a lease
	// lifetime has passed we only re-read: the holder either saves (the
	// version moves), fails (it restores the status) or dies (its lease
	// expires). Re-trying the lease on every poll instead could grab it
	// just after a holder released it on a failure and repeat the failed
	// request at once.
	var heldSince time.Time
	poll := s.waitPoll
	waitStart := time.Now() // real time: sleep below is real time too
	for {
		if heldSince.IsZero() || !s.clock.Now().Before(heldSince.Add(s.leaseTTL)) {
			owner, err := newOwner()
			if err != nil {
				return nil, failure.New(failure.Internal, "Internal error.", err)
			}
			leased, err := s.users.AcquireUserLease(ctx, id, owner, s.leaseTTL)
			switch {
			case err == nil:
				return s.refreshLeased(ctx, cur, leased, owner, force, margin)
			case errors.Is(err, store.ErrLeaseHeld):
				// Another replica is refreshing: wait for it below.
				if heldSince.IsZero() {
					heldSince = s.clock.Now()
				}
			case errors.Is(err, store.ErrNotFound):
				// Revoked (logged out) or deleted meanwhile.
				return nil, failure.New(failure.NeedsReauth, "Please log in to the CRM again.", fmt.Errorf("refresh: acquire lease: %w", err))
			default:
				s.count(OutcomeStoreUnavailable)
				return nil, storeFailure("acquire lease", err)
			}
		}

		if !sleep(ctx, poll) {
			return nil, failure.New(failure.UpstreamUnavailable,
				"The CRM credential is being refreshed; please try again.", fmt.Errorf("refresh: waiting for the lease holder: %w", ctx.Err()))
		}
		if time.Since(waitStart) >= fastWait {
			poll = min(2*poll, maxWaitPoll)
		}
		next, err := s.read(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := usable(next); err != nil {
			return nil, err
		}
		if next.Version != cur.Version {
			// The holder saved (or the user logged in again): use theirs.
			s.count(OutcomeJoined)
			return next, nil
		}
		switch {
		case next.Status == store.StatusRefreshUncertain:
			sawUncertain = true
		case !sawUncertain:
			// Not marked: nobody holds the lease now (taking it marks the
			// record), so try it again at once.
			heldSince = time.Time{}
		default:
			// The holder released the lease without saving and restored the
			// status: its token request failed temporarily. Do not repeat
			// it at once from here.
			s.count(OutcomeUpstreamUnavailable)
			if !force && s.stillValid(next) {
				return next, nil
			}
			return nil, failure.New(failure.UpstreamUnavailable,
				"The CRM is temporarily unavailable. Please try again shortly.",
				errors.New("refresh: another replica's refresh failed temporarily"))
		}
		cur = next
	}
}

// refreshLeased runs under the lease: every exit path releases it (or the
// fenced save does).
func (s *Service) refreshLeased(ctx context.Context, pre, leased *store.User, owner string, force bool, margin time.Duration) (*store.User, error) {
	id := leased.ID
	prior := priorStatus(pre, leased)
	// restore puts back the status the record had when we took the lease
	// (the store remembers it).
	const restore = store.UserStatus("")
	release := func(st store.UserStatus) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.saveTimeout)
		defer cancel()
		if err := s.users.ReleaseUserLease(rctx, id, owner, st); err != nil {
			s.log.Warn("releasing refresh lease failed; it expires by itself", "user_id", id, "error", err)
		}
	}

	switch prior {
	case store.StatusNeedsReauth, store.StatusRevoked:
		release(restore)
		return nil, needsReauth(fmt.Errorf("refresh: record is %s", prior))
	}
	if leased.Version != pre.Version {
		// Someone saved between our read and our lease.
		if force || !s.due(leased, margin) {
			release(restore)
			s.count(OutcomeJoined)
			return leased, nil
		}
	}
	if leased.RefreshToken == "" {
		release(restore)
		if force || !s.stillValid(leased) {
			return nil, needsReauth(errors.New("refresh: no refresh token stored"))
		}
		return leased, nil
	}
	conn, _, err := s.conns.Connector(leased.Platform)
	if err != nil {
		release(restore)
		return nil, err
	}
	app, err := s.apps.AppFor(ctx, leased)
	if err != nil {
		release(restore)
		s.count(OutcomeMisconfigured)
		if failure.CodeOf(err) == failure.Internal {
			return nil, failure.New(failure.Misconfigured, "The OAuth app that issued this login is not available.", err)
		}
		return nil, err
	}
	if prior == store.StatusRefreshUncertain {
		s.log.Info("refreshing a record whose previous refresh was never saved; one attempt", "user_id", id, "platform", leased.Platform)
	}

	tok, fail := s.exchange(ctx, conn, app, leased)
	if fail != nil {
		return s.handleFailure(ctx, fail, leased, release, force)
	}

	upd := store.TokenUpdate{AccessToken: tok.AccessToken, TokenExpiry: s.expiry(tok)}
	if tok.RefreshToken != leased.RefreshToken {
		upd.RefreshToken = tok.RefreshToken // "" keeps the stored one (case 7)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.saveTimeout)
	defer cancel()
	saved, err := s.users.SaveLeasedTokens(sctx, id, owner, upd)
	switch {
	case err == nil:
		s.clearBackoff(id)
		s.count(OutcomeRefreshed)
		s.log.Debug("access token refreshed", "user_id", id, "platform", leased.Platform, "version", saved.Version)
		s.notify(sctx, saved)
		return saved, nil
	case errors.Is(err, store.ErrLeaseLost):
		s.count(OutcomeLeaseLost)
		return s.leaseLost(sctx, leased, tok, upd)
	default:
		// The record stays refresh_uncertain (written ahead) and the lease
		// expires by itself: the next attempt knows the stored refresh
		// token may be dead.
		s.count(OutcomeStoreUnavailable)
		s.log.Error("saving refreshed tokens failed; record left refresh_uncertain", "user_id", id, "error", err)
		return nil, storeFailure("save refreshed tokens", err)
	}
}

// handleFailure maps a failed token request to the record's state and
// the caller's error.
func (s *Service) handleFailure(ctx context.Context, f *upstreamFailure, leased *store.User, release func(store.UserStatus), force bool) (*store.User, error) {
	const restore = store.UserStatus("")
	id := leased.ID
	switch f.kind {
	case failTemporary, failMaybeProcessed:
		st := restore
		if f.kind == failMaybeProcessed {
			// No answer after the request went out: the provider may have
			// rotated the refresh token. Say so (security.md's lost
			// response), the next attempt tries once.
			st = store.StatusRefreshUncertain
		}
		release(st)
		s.setBackoff(id, f.retryAfter)
		s.count(OutcomeUpstreamUnavailable)
		s.log.Warn("token refresh failed temporarily; tokens kept", "user_id", id, "platform", leased.Platform, "error", f.cause)
		if !force && s.stillValid(leased) {
			return leased, nil
		}
		return nil, failure.New(failure.UpstreamUnavailable, "The CRM is temporarily unavailable. Please try again shortly.", f.cause)
	case failInvalid:
		release(restore)
		s.count(OutcomeUpstreamInvalid)
		s.log.Warn("token endpoint answered something unusable; nothing saved", "user_id", id, "platform", leased.Platform, "error", f.cause)
		return nil, failure.New(failure.UpstreamInvalid, "The CRM answered the token refresh with something unusable.", f.cause)
	case failMisconfigured:
		release(restore)
		s.count(OutcomeMisconfigured)
		s.log.Error("token endpoint refused the client; check the OAuth app settings", "user_id", id, "platform", leased.Platform, "error", f.cause)
		return nil, failure.New(failure.Misconfigured, "The CRM refused connectd's OAuth client settings.", f.cause)
	}

	// invalid_grant: definitive, unless someone else changed the record
	// while we asked (then the refusal concerned a token already replaced).
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.saveTimeout)
	defer cancel()
	cur, err := s.users.GetUser(rctx, id)
	if err != nil {
		release(restore)
		s.count(OutcomeStoreUnavailable)
		return nil, storeFailure("re-read after invalid_grant", err)
	}
	if cur.Version != leased.Version {
		release(restore) // a no-op when the lease is no longer ours
		if err := usable(cur); err != nil {
			return nil, err
		}
		s.count(OutcomeJoined)
		return cur, nil
	}
	release(store.StatusNeedsReauth)
	s.count(OutcomeNeedsReauth)
	marked := *leased
	marked.Status = store.StatusNeedsReauth
	s.notify(rctx, &marked)
	s.log.Info("refresh token refused (invalid_grant); user must log in again", "user_id", id, "platform", leased.Platform)
	return nil, needsReauth(f.cause)
}

// Listener is told when a refresh changed a user's credentials (new
// tokens saved, or marked needs_reauth), e.g. to push the new access token
// to a host platform or flag the login for re-authentication there.
type Listener func(ctx context.Context, u *store.User)

// OnChange adds a listener. Call it while wiring, before serving; a
// listener must not block (enqueue a job).
func (s *Service) OnChange(l Listener) {
	s.listenersMu.Lock()
	s.listeners = append(s.listeners, l)
	s.listenersMu.Unlock()
}

func (s *Service) notify(ctx context.Context, u *store.User) {
	s.listenersMu.RLock()
	ls := s.listeners
	s.listenersMu.RUnlock()
	for _, l := range ls {
		l(ctx, u)
	}
}

// leaseLost handles a fenced save that found the lease gone. When the user
// logged out meanwhile (RevokeUser broke the lease) the tokens just
// obtained exist nowhere but here: revoke them upstream, durably.
func (s *Service) leaseLost(ctx context.Context, leased *store.User, tok *oauth2.Token, upd store.TokenUpdate) (*store.User, error) {
	id := leased.ID
	cur, err := s.users.GetUser(ctx, id)
	revoked := errors.Is(err, store.ErrNotFound) || (err == nil && cur.Status == store.StatusRevoked)
	if revoked {
		orphan := *leased
		orphan.AccessToken = tok.AccessToken
		orphan.RefreshToken = upd.RefreshToken // only a NEW refresh token; the old one is the logout's to revoke
		orphan.TokenExpiry = upd.TokenExpiry
		orphan.APIKey = ""
		if err := s.enqueueRevoke(ctx, &orphan, "/after-logout"); err != nil {
			s.log.Error("could not schedule revocation of tokens obtained after logout", "user_id", id, "error", err)
		} else {
			s.log.Info("user logged out during refresh; new tokens scheduled for upstream revocation", "user_id", id)
		}
		return nil, needsReauth(errors.New("refresh: user logged out during the refresh"))
	}
	if err != nil {
		return nil, storeFailure("re-read after lost lease", err)
	}
	// Our lease expired and another replica took over: its result wins.
	s.log.Warn("refresh lease expired before the save; result discarded", "user_id", id)
	if uerr := usable(cur); uerr != nil {
		return nil, uerr
	}
	if cur.Version != leased.Version {
		return cur, nil
	}
	return nil, failure.New(failure.UpstreamUnavailable, "The CRM credential is being refreshed; please try again.",
		errors.New("refresh: lease lost before save"))
}

// priorStatus is the record's status before our lease wrote
// refresh_uncertain ahead (AcquireUserLease returns the record as marked).
func priorStatus(pre, leased *store.User) store.UserStatus {
	if leased.Status != store.StatusRefreshUncertain {
		return leased.Status
	}
	if leased.Version == pre.Version {
		return pre.Status
	}
	return store.StatusActive
}

func (s *Service) read(ctx context.Context, id string) (*store.User, error) {
	u, err := s.users.GetUser(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, failure.New(failure.NotFound, "User not found.", err)
		}
		return nil, storeFailure("read user", err)
	}
	return u, nil
}

func (s *Service) margin(platform string) (time.Duration, error) {
	_, m, err := s.conns.Connector(platform)
	if err != nil {
		return 0, err
	}
	return m, nil
}

// due: an OAuth access token expiring within margin, or missing while a
// refresh token exists.
func (s *Service) due(u *store.User, margin time.Duration) bool {
	if u.AccessToken == "" {
		return u.RefreshToken != ""
	}
	if u.TokenExpiry == nil {
		return false
	}
	return !u.TokenExpiry.After(s.clock.Now().Add(margin))
}

// stillValid: the access token has not expired yet (it is only within the
// margin), so serving it beats failing.
func (s *Service) stillValid(u *store.User) bool {
	if u.AccessToken == "" {
		return false
	}
	return u.TokenExpiry == nil || u.TokenExpiry.After(s.clock.Now())
}

func usable(u *store.User) error {
	switch u.Status {
	case store.StatusNeedsReauth, store.StatusRevoked:
		return needsReauth(fmt.Errorf("refresh: record is %s", u.Status))
	}
	return nil
}

func needsReauth(cause error) error {
	return failure.New(failure.NeedsReauth, "Your CRM session has ended. Please log in again.", cause)
}

func storeFailure(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, store.ErrUnavailable) {
		return failure.New(failure.Unavailable, "The service is temporarily unavailable.", fmt.Errorf("refresh: %s: %w", op, err))
	}
	if errors.Is(err, store.ErrDecrypt) {
		return failure.New(failure.Internal, "Internal error.", fmt.Errorf("refresh: %s: %w", op, err))
	}
	return failure.New(failure.Unavailable, "The service is temporarily unavailable.", fmt.Errorf("refresh: %s: %w", op, err))
}

func (s *Service) backingOff(id string) bool {
	s.boMu.Lock()
	defer s.boMu.Unlock()
	until, ok := s.backoff[id]
	if !ok {
		return false
	}
	if s.clock.Now().Before(until) {
		return true
	}
	delete(s.backoff, id)
	return false
}

func (s *Service) setBackoff(id string, retryAfter time.Duration) {
	d := s.failureBackoff
	if retryAfter > 0 {
		d = min(retryAfter, maxFailureBackoff)
	}
	s.boMu.Lock()
	s.backoff[id] = s.clock.Now().Add(d)
	s.boMu.Unlock()
}

func (s *Service) clearBackoff(id string) {
	s.boMu.Lock()
	delete(s.backoff, id)
	s.boMu.Unlock()
}

func (s *Service) count(outcome string) { s.outcomes.WithLabelValues(outcome).Inc() }

// newOwner is a random lease owner per acquisition.
func newOwner() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("refresh: lease owner: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
