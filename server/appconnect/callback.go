package appconnect

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/connectd/connectd/core/failure"
)

// CallbackParams are the values of App Connect's GET /oauth-callback.
type CallbackParams struct {
	State    string
	Code     string
	Error    string
	Platform string
	Hostname string
	TokenURL string
	APIURL   string
	Username string
	// Extra holds the other query values (handed to the connector as
	// getUserInfo's `query`), bounded.
	Extra map[string]string
}

// Limits of the callback query.
const (
	maxCallbackQuery = 16 << 10
	maxExtraParams   = 32
)

// ParseCallback parses the raw query of /oauth-callback. callbackUri's own
// values win; top-level values fill in only what callbackUri lacks. The
// provider's error_description is dropped (never reflected).
func ParseCallback(rawQuery string) (CallbackParams, error) {
	var p CallbackParams
	if len(rawQuery) > maxCallbackQuery {
		return p, failure.Newf(failure.InvalidRequest, "The callback is too long.")
	}
	top, err := url.ParseQuery(rawQuery)
	if err != nil {
		return p, failure.New(failure.InvalidRequest, "The callback query is malformed.", err)
	}
	cb := top.Get("callbackUri")
	if cb == "" {
		return p, failure.Newf(failure.InvalidRequest, "Missing callbackUri.")
	}
	inner := url.Values{}
	if u, err := url.Parse(cb); err == nil {
		inner = u.Query()
	} else if i := strings.IndexByte(cb, '?'); i >= 0 {
		// Not a URL we can parse whole; its query may still be readable.
		if q, err := url.ParseQuery(cb[i+1:]); err == nil {
			inner = q
		}
	}
	pick := func(k string) string {
		if v := inner.Get(k); v != "" {
			return v
		}
		return top.Get(k)
	}
	p.State = pick("state")
	p.Code = pick("code")
	p.Error = pick("error")
	p.Platform = top.Get("platform")
	p.Hostname = top.Get("hostname")
	p.TokenURL = top.Get("tokenUrl")
	p.APIURL = top.Get("apiUrl")
	p.Username = top.Get("username")
	p.Extra = map[string]string{}
	for k, vs := range top {
		if len(p.Extra) >= maxExtraParams {
			break
		}
		switch k {
		case "callbackUri", "code", "state", "error", "error_description", "jwtToken", "rcAccessToken":
			continue
		}
		if len(vs) > 0 && len(vs[0]) <= 2048 {
			p.Extra[k] = vs[0]
		}
	}
	if p.State == "" && p.Error == "" {
		return p, failure.Newf(failure.InvalidState, "The login link is invalid or has expired. Please start again.")
	}
	return p, nil
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
