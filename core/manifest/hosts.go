package manifest

import (
	"fmt"
	"strings"
)

// HostAllowed reports whether host matches one of patterns. A pattern is an
// exact host name ("api.example.com") or "*." followed by a host name
// ("*.example.com"), which matches one or more labels in front of it
// ("a.example.com", "a.b.example.com") but not "example.com" itself.
// Comparison is case-insensitive. The host must be a bare DNS name: a
// port, a trailing dot, an empty label, userinfo or any character outside
// letters, digits, '-' and '.' makes it match nothing, so "evil.com:443",
// "x.example.com." and "evil.com#.example.com" never slip through.
func HostAllowed(patterns []string, host string) bool {
	if !validHostName(host) {
		return false
	}
	host = strings.ToLower(host)
	for _, p := range patterns {
		p = strings.ToLower(p)
		if suffix, ok := strings.CutPrefix(p, "*."); ok {
			// A wildcard over a single label ("*.com") matches nothing,
			// even if a pattern slipped past the loader.
			if validHostName(suffix) && strings.Contains(suffix, ".") && len(host) > len(suffix)+1 &&
				strings.HasSuffix(host, "."+suffix) {
				return true
			}
			continue
		}
		if validHostName(p) && host == p {
			return true
		}
	}
	return false
}

// validHostName reports whether s is a DNS name of letters, digits and
// hyphens, with non-empty labels of at most 63 bytes that neither start
// nor end with a hyphen, and no trailing dot.
func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// checkHostPattern explains what is wrong with a host pattern, or returns
// "" for a good one.
func checkHostPattern(p string) string {
	suffix, wild := strings.CutPrefix(p, "*.")
	if strings.Contains(suffix, "*") {
		return fmt.Sprintf("host pattern %q: only a leading \"*.\" wildcard is allowed", p)
	}
	if strings.ContainsAny(p, ":/") {
		return fmt.Sprintf("host pattern %q: a host name only, without scheme, port or path", p)
	}
	if strings.HasSuffix(p, ".") {
		return fmt.Sprintf("host pattern %q: no trailing dot", p)
	}
	if !validHostName(suffix) {
		return fmt.Sprintf("host pattern %q: not a valid host name", p)
	}
	if wild && !strings.Contains(suffix, ".") {
		return fmt.Sprintf("host pattern %q: a wildcard needs at least two labels after \"*.\" (e.g. \"*.example.com\")", p)
	}
	return ""
}
