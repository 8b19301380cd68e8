package connector

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
)

// Response is one answer of a service's API, read whole but size-capped so
// a misbehaving service cannot make a connector buffer without bound.
type Response struct {
	Status int
	Header http.Header
	// Body holds at most the maxBytes given to Call.
	Body []byte
	// Truncated reports that the answer was longer than maxBytes; Body is
	// then its first maxBytes bytes. Decoding it would report malformed
	// JSON, so check this first when a clearer error helps.
	Truncated bool
}

// Call sends req with client, reads at most maxBytes of the answer and
// closes its body. It sets "Accept: application/json" unless req already
// has an Accept header, and "Authorization: authHeader" when authHeader is
// non-empty: pass req.AuthHeader in login calls, and leave it empty in
// per-user calls, whose client injects (and refreshes) the credential
// itself, or when req already carries its own credential.
//
// Any status is a Response, not an error: the connector decides what a 401
// or a 429 means. The errors are a failure to send (as the client returned
// it) and a failure while reading ("reading answer: ..."), both meant to be
// wrapped with the caller's prefix, e.g. fmt.Errorf("acme: users/me: %w", err).
func Call(client *http.Client, req *http.Request, authHeader string, maxBytes int64) (Response, error) {
	if client == nil {
		return Response{}, errors.New("no HTTP client given")
	}
	if maxBytes <= 0 {
		return Response{}, fmt.Errorf("answer size cap %d is not positive", maxBytes)
	}
	if req.Header == nil {
		req.Header = make(http.Header)
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	if authHeader != "" {
		req.Header.Set("Authorization", authHeader)
	}
	resp, err := client.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	// One byte past the cap tells a full answer from a cut one.
	limit := maxBytes
	if limit < math.MaxInt64 {
		limit++
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return Response{}, fmt.Errorf("reading answer: %w", err)
	}
	r := Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
	if int64(len(body)) > maxBytes {
		r.Body, r.Truncated = body[:maxBytes], true
	}
	return r, nil
}
