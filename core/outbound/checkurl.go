package outbound

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/connectd/connectd/core/failure"
)

// maxURLLength bounds URLs accepted from callers.
const maxURLLength = 2048

// CheckURL validates a caller- or admin-supplied URL (hostname, token URL,
// API URL, callback URL) before connectd stores or calls it: https (plain
// http only when allowPrivate), an absolute URL without userinfo, a host
// that matches one of hostPatterns (see HostMatches), and - unless
// allowPrivate - no IP literal or localhost name outside public address
// space. It does not resolve DNS: the client from NewClient re-checks the
// address it actually dials. Errors are *failure.Error with code
// InvalidRequest and a message naming what is wrong.
func CheckURL(raw string, hostPatterns []string, allowPrivate bool) (*url.URL, error) {
	if raw == "" {
		return nil, invalid("URL is empty.")
	}
	if len(raw) > maxURLLength {
		return nil, invalid("URL is longer than %d characters.", maxURLLength)
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, invalid("URL contains spaces or control characters.")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, invalid("URL could not be parsed.")
	}
	if !u.IsAbs() || u.Opaque != "" || u.Host == "" {
		return nil, invalid("URL must be absolute, like https://host/path.")
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if err := checkScheme(u.Scheme, allowPrivate); err != nil {
		if allowPrivate {
			return nil, invalid("URL must use https or http.")
		}
		return nil, invalid("URL must use https.")
	}
	if u.User != nil {
		return nil, invalid("URL must not contain a user name or password.")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, invalid("URL port is not valid.")
		}
	}
	host := normalizeHost(u.Hostname())
	if host == "" {
		return nil, invalid("URL has no host.")
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if !allowPrivate && !IsPublic(addr) {
			return nil, invalid("URL host %s is a loopback, private or link-local address.", addr)
		}
	} else {
		if strings.ContainsAny(host, "%[]") {
			return nil, invalid("URL host is not valid.")
		}
		if !allowPrivate && (host == "localhost" || strings.HasSuffix(host, ".localhost")) {
			return nil, invalid("URL host %s is a loopback name.", host)
		}
	}
	if !HostMatches(host, hostPatterns) {
		return nil, invalid("URL host %s is not one this connector may call.", host)
	}
	return u, nil
}

// HostMatches reports whether host matches one of patterns. Matching is
// case-insensitive and ignores a trailing dot. A pattern is an exact host
// ("api.example.com", or an IP literal), "*.example.com" (any host ending
// in ".example.com", at any depth, but not "example.com" itself), or "*"
// (any host; the SSRF guard still applies). No patterns match nothing.
func HostMatches(host string, patterns []string) bool {
	host = normalizeHost(host)
	if host == "" {
		return false
	}
	for _, p := range patterns {
		p = normalizeHost(p)
		switch {
		case p == "":
			continue
		case p == "*":
			return true
		case strings.HasPrefix(p, "*."):
			suffix := p[1:] // ".example.com"
			if len(host) > len(suffix) && strings.HasSuffix(host, suffix) {
				return true
			}
		case host == p:
			return true
		}
	}
	return false
}

func normalizeHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = strings.TrimPrefix(h, "[")
	return strings.TrimSuffix(h, "]")
}

func invalid(format string, args ...any) error {
	return failure.New(failure.InvalidRequest, fmt.Sprintf(format, args...), nil)
}
