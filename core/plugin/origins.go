package plugin

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/outbound"
)

// DefaultOrigins returns the allow-list used when
// CONNECTD_APPCONNECT_ORIGINS is empty: RingCentral's App Connect servers.
func DefaultOrigins() []string { return []string{"https://*.ringcentral.com"} }

// Origin is one allowed App Connect server origin pattern:
// scheme://host[:port], where host may start with "*." (any subdomain, at
// any depth, not the bare domain). No path, query or user info.
type Origin struct {
	Scheme string
	Host   string // pattern, lower case
	Port   string // explicit or the scheme's default
}

// ParseOrigins parses CONNECTD_APPCONNECT_ORIGINS patterns
// ("https://*.ringcentral.com,http://127.0.0.1:8081"). Errors name the
// pattern and what is wrong.
func ParseOrigins(patterns []string) ([]Origin, error) {
	var out []Origin
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		scheme, rest, ok := strings.Cut(p, "://")
		if !ok || (scheme != "https" && scheme != "http") {
			return nil, fmt.Errorf("plugin: origin %q: want https://host or http://host[:port]", p)
		}
		if rest == "" || strings.ContainsAny(rest, "/?#@ ") {
			return nil, fmt.Errorf("plugin: origin %q: an origin has no path, query, user or spaces", p)
		}
		host, port := rest, ""
		if h, pt, err := net.SplitHostPort(rest); err == nil {
			host, port = h, pt
		}
		if port == "" {
			port = defaultPort(scheme)
		}
		host = strings.ToLower(strings.TrimSuffix(host, "."))
		if host == "" || host == "*" || strings.Contains(strings.TrimPrefix(host, "*."), "*") {
			return nil, fmt.Errorf("plugin: origin %q: host must be a name or *.domain", p)
		}
		out = append(out, Origin{Scheme: scheme, Host: host, Port: port})
	}
	return out, nil
}

func defaultPort(scheme string) string {
	if scheme == "http" {
		return "80"
	}
	return "443"
}

// Allows reports whether u's origin matches o.
func (o Origin) Allows(u *url.URL) bool {
	port := u.Port()
	if port == "" {
		port = defaultPort(u.Scheme)
	}
	return strings.EqualFold(u.Scheme, o.Scheme) && port == o.Port && outbound.HostMatches(u.Hostname(), []string{o.Host})
}

// CheckCallbackURL validates a callback URL a caller gave: it must pass
// the outbound SSRF guard and its origin must be in the allow-list. The
// error is a failure.InvalidRequest naming what is wrong.
func CheckCallbackURL(raw string, origins []Origin, allowPrivate bool) (*url.URL, error) {
	u, err := outbound.CheckURL(raw, []string{"*"}, allowPrivate)
	if err != nil {
		return nil, failure.New(failure.InvalidRequest, "callbackUrl: "+failure.MessageOf(err), err)
	}
	for _, o := range origins {
		if o.Allows(u) {
			return u, nil
		}
	}
	return nil, failure.Newf(failure.InvalidRequest, "callbackUrl: %s://%s is not an allowed App Connect origin (CONNECTD_APPCONNECT_ORIGINS).", u.Scheme, u.Host)
}
