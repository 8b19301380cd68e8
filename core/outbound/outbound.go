// Package outbound owns every HTTP call connectd makes to a URL that a
// caller or an admin can influence (hostnames, token URLs, API URLs, plugin
// callbacks): an *http.Client with timeouts, a response-size cap, optional
// refusal of redirects (token and revoke endpoints), and an SSRF guard.
//
// The guard runs at DIAL time: net.Dialer.Control sees the IP address the
// connection is really made to, after DNS resolution, so a hostname that
// resolves (or re-resolves, DNS rebinding) to a loopback, private or
// link-local address is refused even though it looked harmless when the URL
// was checked. CheckURL is the earlier, friendlier check for URLs coming in
// from callers: scheme, host pattern, userinfo and IP literals, with errors a
// user can act on.
package outbound

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// Defaults for Options.
const (
	DefaultTimeout          = 15 * time.Second
	DefaultMaxResponseBytes = 1 << 20 // 1 MiB
	// maxRedirects mirrors net/http's own limit when redirects are followed.
	maxRedirects = 10
)

// Sentinel errors; compare with errors.Is (they arrive wrapped in
// *url.Error or in a response body read error).
var (
	// ErrBlockedAddress: the connection would have gone to a loopback,
	// private, link-local or otherwise non-public address.
	ErrBlockedAddress = errors.New("outbound: destination address not allowed")
	// ErrResponseTooLarge: the response body exceeds Options.MaxResponseBytes.
	ErrResponseTooLarge = errors.New("outbound: response body too large")
	// ErrInsecureScheme: plain http while private URLs are not allowed.
	ErrInsecureScheme = errors.New("outbound: only https URLs are allowed")
	// ErrRedirect: a redirect was not followed (NoRedirects), or led to a
	// URL the guard refuses.
	ErrRedirect = errors.New("outbound: redirect not allowed")
)

// Options configure NewClient. The zero value is the production setting:
// https only, public addresses only, 15 s timeout, 1 MiB responses,
// redirects followed (each hop checked).
type Options struct {
	// AllowPrivate (CONNECTD_ALLOW_PRIVATE_URLS) lets connections reach
	// loopback, private and link-local addresses, and then allows plain
	// http too (local development, tests).
	AllowPrivate bool
	// Timeout bounds a whole request including reading the body (default
	// 15 s).
	Timeout time.Duration
	// MaxResponseBytes caps response bodies (default 1 MiB). A larger body
	// fails with ErrResponseTooLarge instead of being silently truncated.
	MaxResponseBytes int64
	// NoRedirects returns 3xx responses as they are instead of following
	// them (token and revoke endpoints: a redirect there is never right,
	// and following it would re-send credentials).
	NoRedirects bool
	// Transport replaces the guarded transport (tests). The dial-time
	// address guard is then the transport's business; the scheme check,
	// redirect policy and size cap still apply.
	Transport http.RoundTripper
}

// NewClient returns an *http.Client for outbound calls with the guard,
// timeouts and size cap of o. The client is safe for concurrent use and
// should be shared: it pools connections.
func NewClient(o Options) *http.Client {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	base := o.Transport
	if base == nil {
		base = guardedTransport(o.AllowPrivate, o.Timeout)
	}
	rt := &capTransport{base: base, max: o.MaxResponseBytes, allowPrivate: o.AllowPrivate}
	c := &http.Client{Transport: rt, Timeout: o.Timeout}
	if o.NoRedirects {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	} else {
		c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("%w: stopped after %d redirects", ErrRedirect, maxRedirects)
			}
			if err := checkScheme(req.URL.Scheme, o.AllowPrivate); err != nil {
				return fmt.Errorf("%w: %w", ErrRedirect, err)
			}
			return nil
		}
	}
	return c
}

// guardedTransport is a fresh transport (never http.DefaultTransport, whose
// settings any package may change) that dials only allowed addresses and
// ignores proxy environment variables: through a proxy the guard would see
// the proxy's address, not the destination's.
func guardedTransport(allowPrivate bool, timeout time.Duration) *http.Transport {
	d := &net.Dialer{
		Timeout:   min(timeout, 10*time.Second),
		KeepAlive: 30 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			return checkDial(network, address, allowPrivate)
		},
	}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
	}
}

// checkDial is the dial-time guard: address is the resolved "ip:port".
func checkDial(network, address string, allowPrivate bool) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return fmt.Errorf("%w: network %q", ErrBlockedAddress, network)
	}
	if allowPrivate {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable address %q", ErrBlockedAddress, address)
	}
	if !IsPublic(ap.Addr()) {
		return fmt.Errorf("%w: %s is not a public address", ErrBlockedAddress, ap.Addr())
	}
	return nil
}

// nonPublic lists the ranges the guard refuses beyond what netip's
// predicates cover: shared address space, IETF protocol assignments,
// documentation and benchmarking nets, reserved space, NAT64 (which can
// embed any IPv4 address), 6to4 and Teredo (the same), and ULA.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("2001::/32"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("2002::/16"),
	netip.MustParsePrefix("fc00::/7"),
}

// IsPublic reports whether a is a globally routable unicast address:
// not loopback, private (RFC 1918, ULA), link-local (169.254/16 holds cloud
// metadata services), unspecified, multicast, or one of the special ranges
// above. IPv4-mapped IPv6 addresses are judged as IPv4.
func IsPublic(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() ||
		a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() || a.IsMulticast() ||
		a.IsUnspecified() {
		return false
	}
	if a.Zone() != "" {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

func checkScheme(scheme string, allowPrivate bool) error {
	switch scheme {
	case "https":
		return nil
	case "http":
		if allowPrivate {
			return nil
		}
		return ErrInsecureScheme
	default:
		return fmt.Errorf("%w (got %q)", ErrInsecureScheme, scheme)
	}
}

// capTransport checks the scheme of every request (first and redirected)
// and caps response bodies.
type capTransport struct {
	base         http.RoundTripper
	max          int64
	allowPrivate bool
}

func (t *capTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := checkScheme(req.URL.Scheme, t.allowPrivate); err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > t.max {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("%w: declared %d bytes, limit %d", ErrResponseTooLarge, resp.ContentLength, t.max)
	}
	rec, _ := req.Context().Value(contextKey{}).(*errorRecorder)
	resp.Body = &cappedBody{rc: resp.Body, remaining: t.max, limit: t.max, rec: rec}
	return resp, nil
}

// cappedBody fails with ErrResponseTooLarge as soon as more than limit
// bytes arrive. It reads one byte ahead when the limit is reached, so a
// reader that itself stops at the limit (golang.org/x/oauth2 reads at most
// 1 MiB) still learns that the body was too large instead of parsing a
// truncated prefix.
type cappedBody struct {
	rc        io.ReadCloser
	remaining int64
	limit     int64
	err       error
	rec       *errorRecorder
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if b.remaining <= 0 {
		return 0, b.probe()
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.rc.Read(p)
	b.remaining -= int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		b.rec.set(err)
	}
	if b.remaining <= 0 && err == nil {
		// The caller may never call again (it asked for exactly the
		// limit): find out now whether anything follows.
		if perr := b.probe(); !errors.Is(perr, io.EOF) {
			return 0, perr
		}
		return n, io.EOF
	}
	return n, err
}

// probe reads one byte past the limit: EOF means the body fitted exactly.
func (b *cappedBody) probe() error {
	var one [1]byte
	for {
		n, err := b.rc.Read(one[:])
		if n > 0 {
			b.err = fmt.Errorf("%w: more than %d bytes", ErrResponseTooLarge, b.limit)
			b.rec.set(b.err)
			return b.err
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				b.err = io.EOF
			} else {
				b.err = err
				b.rec.set(err)
			}
			return b.err
		}
	}
}

func (b *cappedBody) Close() error { return b.rc.Close() }

// contextKey keeps this package's context values private.
type contextKey struct{}

// errorRecorder captures the first body-read error of responses made with
// a context from WithBodyErrorRecorder. Some libraries (x/oauth2) flatten
// read errors into strings; the recorder keeps the typed error available.
type errorRecorder struct {
	mu  sync.Mutex
	err error
}

// set records err unless an error is recorded already; nil-safe.
func (r *errorRecorder) set(err error) {
	if r == nil {
		return
	}
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
}

func (r *errorRecorder) get() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// WithBodyErrorRecorder returns a context whose requests (made by clients
// from NewClient) record the first response-body read error other than
// io.EOF, and a function returning it.
func WithBodyErrorRecorder(ctx context.Context) (context.Context, func() error) {
	r := &errorRecorder{}
	return context.WithValue(ctx, contextKey{}, r), r.get
}
