package servertest

import (
	"bytes"
	"io"
	"net/http"
	"sync"
)

// Exchange is one request and its response as the client saw them.
type Exchange struct {
	Method      string
	Path        string // URL path, without the query
	Status      int
	ContentType string
	Body        []byte
}

// Recorder collects every exchange made through a harness's Client (and
// h.Do) after Record was called; tests check them against the OpenAPI
// document.
type Recorder struct {
	mu        sync.Mutex
	exchanges []Exchange
	base      http.RoundTripper
}

// Record starts recording h.Client's exchanges.
func Record(h *Harness) *Recorder {
	r := &Recorder{base: h.Client.Transport}
	if r.base == nil {
		r.base = http.DefaultTransport
	}
	h.Client.Transport = r
	return r
}

// RoundTrip implements http.RoundTripper.
func (r *Recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	r.mu.Lock()
	r.exchanges = append(r.exchanges, Exchange{Method: req.Method, Path: req.URL.Path, Status: resp.StatusCode, ContentType: resp.Header.Get("Content-Type"), Body: body})
	r.mu.Unlock()
	return resp, nil
}

// Exchanges returns what was recorded so far.
func (r *Recorder) Exchanges() []Exchange {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Exchange(nil), r.exchanges...)
}
