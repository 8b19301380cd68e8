package connectortest

import (
	"bytes"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxRecordedBody caps how much of a request body is read and kept. Requests
// bigger than this are answered 413 by the fakes.
const maxRecordedBody = 1 << 20

// RecordedRequest is one request a fake server received, captured before it
// was answered so a test can assert exactly what the client sent.
type RecordedRequest struct {
	Method string
	Path   string
	// Query is the parsed query string; RawQuery the string as sent.
	Query    url.Values
	RawQuery string
	Header   http.Header
	// ContentType is the media type of the body without parameters.
	ContentType string
	// Form holds the body's fields when it is
	// application/x-www-form-urlencoded (never the query string), else nil.
	Form url.Values
	// Body is the raw body (up to 1 MiB).
	Body []byte
	// BasicAuth tells whether an Authorization: Basic header was sent;
	// BasicUser and BasicPassword are its decoded parts. RFC 6749 2.3.1
	// form-encodes client credentials before Basic encoding; these are the
	// values after that decoding.
	BasicAuth     bool
	BasicUser     string
	BasicPassword string
	// Bearer is the token of an Authorization: Bearer header, if any.
	Bearer string
	// Time is when the request arrived, by the fake's clock.
	Time time.Time
}

// Grant returns the grant_type form field (token endpoint requests).
func (r RecordedRequest) Grant() string { return r.Form.Get("grant_type") }

// recordRequest reads r's body (restoring it for the handler) and captures
// everything a test may want to assert. tooLarge reports a body over the cap.
func recordRequest(r *http.Request, now time.Time) (rec RecordedRequest, tooLarge bool) {
	var body []byte
	if r.Body != nil {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxRecordedBody+1))
		if err == nil || len(b) > 0 {
			body = b
		}
		if len(body) > maxRecordedBody {
			tooLarge = true
			body = body[:maxRecordedBody]
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	rec = RecordedRequest{
		Method:   r.Method,
		Path:     r.URL.Path,
		Query:    r.URL.Query(),
		RawQuery: r.URL.RawQuery,
		Header:   r.Header.Clone(),
		Body:     body,
		Time:     now,
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err == nil {
			rec.ContentType = mt
		} else {
			rec.ContentType = ct
		}
	}
	if rec.ContentType == "application/x-www-form-urlencoded" {
		if f, err := url.ParseQuery(string(body)); err == nil {
			rec.Form = f
		}
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		scheme, rest, _ := strings.Cut(auth, " ")
		switch {
		case strings.EqualFold(scheme, "Basic"):
			if u, p, ok := r.BasicAuth(); ok {
				rec.BasicAuth = true
				rec.BasicUser, rec.BasicPassword = unescapeCredential(u), unescapeCredential(p)
			}
		case strings.EqualFold(scheme, "Bearer"):
			rec.Bearer = strings.TrimSpace(rest)
		}
	}
	return rec, tooLarge
}

// unescapeCredential undoes the application/x-www-form-urlencoded encoding
// RFC 6749 2.3.1 applies to client credentials inside HTTP Basic.
func unescapeCredential(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// recorder is the request log shared by Provider and CRM.
type recorder struct {
	mu   sync.Mutex
	reqs []RecordedRequest
}

func (rc *recorder) add(r RecordedRequest) {
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, r)
	rc.mu.Unlock()
}

func (rc *recorder) all() []RecordedRequest {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.reqs)
}

func (rc *recorder) filter(keep func(RecordedRequest) bool) []RecordedRequest {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []RecordedRequest
	for _, r := range rc.reqs {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

func (rc *recorder) reset() {
	rc.mu.Lock()
	rc.reqs = nil
	rc.mu.Unlock()
}
