// Package connectortest is connectd's conformance kit for connector authors
// and for the engine's own tests.
//
// It holds a real OAuth 2.0 authorization server (Provider) that runs on an
// httptest server: authorization code with PKCE (S256 only), refresh-token
// rotation with reuse detection that revokes the whole grant, RFC 7009
// revocation, a tiny user-info API, and injectable faults (5xx, 429, slow
// answers, invalid_grant, 200-with-error bodies, HTML, oversized bodies and
// lost responses). Every request it receives is recorded so tests can assert
// exactly what a client sent, the way golang.org/x/oauth2's own tests do.
//
// CRM fakes a connector's service API concisely: register handlers per
// method and path, have every request recorded, and fail the test when a
// request differs from the documented one (Expect).
//
// This is a normal (non-test) package so that connector packages and the
// engine can import it from their tests. Time that decides expiry comes from
// an injected clock.Clock, so tests never sleep for lifetimes.
package connectortest
