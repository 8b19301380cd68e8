package connector_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/connectd/connectd/core/connector"
)

// seen is what the fake service received.
type seen struct {
	mu     sync.Mutex
	method string
	path   string
	header http.Header
}

func (s *seen) get() (string, string, http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.method, s.path, s.header
}

func TestCall(t *testing.T) {
	got := &seen{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.mu.Lock()
		got.method, got.path, got.header = r.Method, r.URL.Path, r.Header.Clone()
		got.mu.Unlock()
		switch r.URL.Path {
		case "/me":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"id":7}`)
		case "/busy":
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"error":"slow down"}`)
		case "/ten":
			_, _ = io.WriteString(w, "0123456789")
		}
	}))
	t.Cleanup(srv.Close)

	tests := []struct {
		name       string
		method     string
		path       string
		preset     http.Header // set on the request before Call
		authHeader string
		maxBytes   int64

		wantStatus    int
		wantBody      string
		wantTruncated bool
		wantAccept    string
		wantAuth      string
		wantHeader    [2]string // a header of the answer
	}{
		{name: "login call sets accept and authorization", method: http.MethodGet, path: "/me", authHeader: "Bearer at-1", maxBytes: 1 << 10,
			wantStatus: 200, wantBody: `{"id":7}`, wantAccept: "application/json", wantAuth: "Bearer at-1", wantHeader: [2]string{"Content-Type", "application/json"}},
		{name: "per-user call adds no authorization", method: http.MethodGet, path: "/me", maxBytes: 1 << 10,
			wantStatus: 200, wantBody: `{"id":7}`, wantAccept: "application/json"},
		{name: "request's own credential and accept are kept", method: http.MethodPost, path: "/me",
			preset:   http.Header{"Authorization": {"Basic Y2lkOnNlYw=="}, "Accept": {"text/plain"}},
			maxBytes: 1 << 10, wantStatus: 200, wantBody: `{"id":7}`, wantAccept: "text/plain", wantAuth: "Basic Y2lkOnNlYw=="},
		{name: "authHeader replaces a preset authorization", method: http.MethodGet, path: "/me",
			preset: http.Header{"Authorization": {"Bearer old"}}, authHeader: "Bearer new", maxBytes: 1 << 10,
			wantStatus: 200, wantBody: `{"id":7}`, wantAccept: "application/json", wantAuth: "Bearer new"},
		{name: "error status is an answer, not an error", method: http.MethodGet, path: "/busy", maxBytes: 1 << 10,
			wantStatus: 429, wantBody: `{"error":"slow down"}`, wantAccept: "application/json", wantHeader: [2]string{"Retry-After", "30"}},
		{name: "answer of exactly the cap is whole", method: http.MethodGet, path: "/ten", maxBytes: 10,
			wantStatus: 200, wantBody: "0123456789", wantAccept: "application/json"},
		{name: "answer over the cap is cut and flagged", method: http.MethodGet, path: "/ten", maxBytes: 9,
			wantStatus: 200, wantBody: "012345678", wantTruncated: true, wantAccept: "application/json"},
		{name: "tiny cap", method: http.MethodGet, path: "/ten", maxBytes: 1,
			wantStatus: 200, wantBody: "0", wantTruncated: true, wantAccept: "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(context.Background(), tt.method, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, vs := range tt.preset {
				req.Header[k] = vs
			}
			r, err := connector.Call(srv.Client(), req, tt.authHeader, tt.maxBytes)
			if err != nil {
				t.Fatalf("Call: %v", err)
			}
			if r.Status != tt.wantStatus || string(r.Body) != tt.wantBody || r.Truncated != tt.wantTruncated {
				t.Errorf("answer = %d %q truncated=%v, want %d %q truncated=%v", r.Status, r.Body, r.Truncated, tt.wantStatus, tt.wantBody, tt.wantTruncated)
			}
			if tt.wantHeader[0] != "" && r.Header.Get(tt.wantHeader[0]) != tt.wantHeader[1] {
				t.Errorf("answer header %s = %q, want %q", tt.wantHeader[0], r.Header.Get(tt.wantHeader[0]), tt.wantHeader[1])
			}
			method, path, h := got.get()
			if method != tt.method || path != tt.path {
				t.Errorf("service saw %s %s, want %s %s", method, path, tt.method, tt.path)
			}
			if h.Get("Accept") != tt.wantAccept {
				t.Errorf("service saw Accept %q, want %q", h.Get("Accept"), tt.wantAccept)
			}
			if a, ok := h["Authorization"]; tt.wantAuth == "" && ok {
				t.Errorf("service saw Authorization %q, want none", a)
			} else if tt.wantAuth != "" && h.Get("Authorization") != tt.wantAuth {
				t.Errorf("service saw Authorization %q, want %q", h.Get("Authorization"), tt.wantAuth)
			}
		})
	}
}

// body is an answer body that fails or ends as told and records Close.
type body struct {
	r      io.Reader
	err    error
	closed bool
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF && b.err != nil {
		return n, b.err
	}
	return n, err
}

func (b *body) Close() error { b.closed = true; return nil }

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestCallFailures(t *testing.T) {
	errReset := errors.New("connection reset")
	errRefused := errors.New("connection refused")
	tests := []struct {
		name     string
		client   func(b *body) *http.Client
		maxBytes int64
		wantErr  string
		wantIs   error
		wantShut bool // the body was closed
	}{
		{name: "no client", client: func(*body) *http.Client { return nil }, maxBytes: 10, wantErr: "no HTTP client given"},
		{name: "cap not positive", client: func(*body) *http.Client { return &http.Client{} }, maxBytes: 0, wantErr: "answer size cap 0 is not positive"},
		{name: "send fails", maxBytes: 10, wantErr: "connection refused", wantIs: errRefused,
			client: func(*body) *http.Client {
				return &http.Client{Transport: roundTrip(func(*http.Request) (*http.Response, error) { return nil, errRefused })}
			}},
		{name: "read fails", maxBytes: 1 << 10, wantErr: "reading answer: connection reset", wantIs: errReset, wantShut: true,
			client: func(b *body) *http.Client {
				b.r, b.err = strings.NewReader(`{"id":`), errReset
				return &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
					return &http.Response{StatusCode: 200, Header: http.Header{}, Body: b, Request: r}, nil
				})}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &body{r: strings.NewReader("")}
			req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://crm.invalid/me", nil)
			if err != nil {
				t.Fatal(err)
			}
			r, err := connector.Call(tt.client(b), req, "Bearer at-1", tt.maxBytes)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Call error = %v, want one containing %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Call error %v does not wrap %v", err, tt.wantIs)
			}
			if r.Status != 0 || r.Body != nil {
				t.Errorf("Call answered %+v with its error, want a zero Response", r)
			}
			if b.closed != tt.wantShut {
				t.Errorf("body closed = %v, want %v", b.closed, tt.wantShut)
			}
		})
	}
}

// The body is closed after a successful read too, so the connection can be
// reused.
func TestCallClosesBody(t *testing.T) {
	b := &body{r: strings.NewReader(`{"id":7}`)}
	client := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: b, Request: r}, nil
	})}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://crm.invalid/me", nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := connector.Call(client, req, "", 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Body) != `{"id":7}` || !b.closed {
		t.Errorf("body %q closed=%v, want the answer and a closed body", r.Body, b.closed)
	}
}
