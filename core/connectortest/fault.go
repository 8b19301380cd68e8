package connectortest

import (
	"fmt"
	"time"
)

// FaultKind names one kind of injected misbehaviour.
type FaultKind string

// The fault kinds a Provider can inject.
const (
	KindStatus        FaultKind = "status"          // answer a 5xx status
	KindTooMany       FaultKind = "too_many"        // 429 with Retry-After
	KindSlow          FaultKind = "slow"            // wait, then answer normally
	KindInvalidGrant  FaultKind = "invalid_grant"   // 400 {"error":"invalid_grant"}
	KindErrorIn200    FaultKind = "error_in_200"    // 200 {"error":"invalid_grant"}
	KindHTML200       FaultKind = "html_200"        // 200 text/html
	KindNoAccessToken FaultKind = "no_access_token" // 200 JSON without access_token
	KindOversized     FaultKind = "oversized"       // 200 JSON body over 1 MiB
	KindLostResponse  FaultKind = "lost_response"   // perform, then drop the connection
	KindLatency       FaultKind = "latency"         // delay, then continue (combines with others)
)

// Fault is one injected misbehaviour of a Provider endpoint. Build one with
// the constructors (Status5xx, TooMany429, ...); the zero value is invalid.
//
// Faults other than Slow, Latency and LostResponse answer without performing
// the endpoint's operation: a refresh answered with Status5xx(503) has
// rotated nothing. LostResponse is the opposite: the operation is performed
// and recorded (a refresh token really rotates) and then the connection is
// closed without an answer, the case security.md calls refresh_uncertain.
type Fault struct {
	Kind FaultKind
	// Status is the HTTP status of a KindStatus fault.
	Status int
	// Delay is the wait of Slow and Latency, or the Retry-After of TooMany429.
	Delay time.Duration
}

// Status5xx answers with the given 5xx status and a short text body.
func Status5xx(code int) Fault { return Fault{Kind: KindStatus, Status: code} }

// TooMany429 answers 429 with Retry-After set to retryAfter (whole seconds,
// at least 1).
func TooMany429(retryAfter time.Duration) Fault { return Fault{Kind: KindTooMany, Delay: retryAfter} }

// Slow waits d (or until the client gives up or the provider closes) and then
// answers normally. A client that gave up causes no operation.
func Slow(d time.Duration) Fault { return Fault{Kind: KindSlow, Delay: d} }

// InvalidGrant answers 400 {"error":"invalid_grant"} without touching state.
func InvalidGrant() Fault { return Fault{Kind: KindInvalidGrant} }

// ErrorIn200 answers 200 {"error":"invalid_grant"}.
func ErrorIn200() Fault { return Fault{Kind: KindErrorIn200} }

// HTML200 answers 200 with an HTML page, as a misconfigured proxy would.
func HTML200() Fault { return Fault{Kind: KindHTML200} }

// NoAccessToken answers 200 with a JSON token response lacking access_token.
func NoAccessToken() Fault { return Fault{Kind: KindNoAccessToken} }

// Oversized answers 200 with a syntactically valid token response padded
// beyond 1 MiB, which clients must refuse to read.
func Oversized() Fault { return Fault{Kind: KindOversized} }

// LostResponse performs the operation (rotation, revocation, code
// redemption) and then closes the connection without answering.
func LostResponse() Fault { return Fault{Kind: KindLostResponse} }

// Latency delays the call by d and then lets it continue, to other faults or
// to the normal answer. Unlike the other kinds it does not stop matching:
// SetFault(path, Latency(d)) delays every call while FailNext faults still
// apply.
func Latency(d time.Duration) Fault { return Fault{Kind: KindLatency, Delay: d} }

// String describes the fault for test logs.
func (f Fault) String() string {
	switch f.Kind {
	case KindStatus:
		return fmt.Sprintf("status %d", f.Status)
	case KindTooMany, KindSlow, KindLatency:
		return fmt.Sprintf("%s %s", f.Kind, f.Delay)
	default:
		return string(f.Kind)
	}
}

func (f Fault) validate() error {
	switch f.Kind {
	case KindStatus:
		if f.Status < 500 || f.Status > 599 {
			return fmt.Errorf("connectortest: Status5xx(%d): status must be 5xx", f.Status)
		}
	case KindTooMany, KindInvalidGrant, KindErrorIn200, KindHTML200, KindNoAccessToken, KindOversized, KindLostResponse:
	case KindSlow, KindLatency:
		if f.Delay <= 0 {
			return fmt.Errorf("connectortest: %s needs a positive duration", f.Kind)
		}
	default:
		return fmt.Errorf("connectortest: unknown fault kind %q (use the constructors)", f.Kind)
	}
	return nil
}

// faultEntry is an installed fault; remaining < 0 means until cleared.
type faultEntry struct {
	fault     Fault
	remaining int
}
