package httpx_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/server/httpx"
)

func TestStatusOf(t *testing.T) {
	want := map[failure.Code]int{
		failure.InvalidRequest: 400, failure.InvalidState: 400, failure.MissingManagedFields: 400, failure.LoginRejected: 400,
		failure.Unauthenticated: 401, failure.NeedsReauth: 401, failure.Forbidden: 403, failure.NotFound: 404,
		failure.Conflict: 409, failure.TooLarge: 413, failure.RateLimited: 429, failure.UpstreamInvalid: 502,
		failure.UpstreamUnavailable: 503, failure.ConnectorUnavailable: 503, failure.Unavailable: 503,
		failure.Misconfigured: 503, failure.Internal: 500, failure.Code("something_new"): 500,
	}
	for code, status := range want {
		if got := httpx.StatusOf(code); got != status {
			t.Errorf("StatusOf(%s) = %d, want %d", code, got, status)
		}
	}
}

func TestDecodeBytes(t *testing.T) {
	type body struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	cases := []struct {
		name, in string
		strict   bool
		msg      string // "" = ok
	}{
		{"ok", `{"name":"a","n":1}`, false, ""},
		{"unknown member lenient", `{"name":"a","x":1}`, false, ""},
		{"unknown member strict", `{"name":"a","x":1}`, true, "wrong shape"},
		{"trailing", `{"name":"a"}x`, false, "data after the JSON value"},
		{"two values", `{} {}`, false, "data after the JSON value"},
		{"wrong type", `{"n":"1"}`, false, `"n" has the wrong type`},
		{"not an object", `"str"`, false, "wrong shape"},
		{"syntax", `{"name":}`, false, "not valid JSON"},
		{"truncated", `{"name":"a"`, false, "not valid JSON"},
		{"blank", "  \n", false, "A JSON body is required."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var v body
			err := httpx.DecodeBytes([]byte(tc.in), &v, httpx.DecodeOptions{DisallowUnknownFields: tc.strict})
			if tc.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if failure.CodeOf(err) != failure.InvalidRequest || !strings.Contains(failure.MessageOf(err), tc.msg) {
				t.Fatalf("err %v, want invalid_request with %q", err, tc.msg)
			}
			if httpx.StatusOf(failure.CodeOf(err)) != http.StatusBadRequest {
				t.Fatal("not a 400")
			}
		})
	}
}

func FuzzDecodeBytes(f *testing.F) {
	for _, s := range []string{`{"name":"a"}`, `{"name":"a"}x`, `[]`, `{"n":1e999}`, "\x00", `{"name":"\ud800"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var v struct {
			Name string         `json:"name"`
			N    int            `json:"n"`
			M    map[string]any `json:"m"`
		}
		err := httpx.DecodeBytes(data, &v, httpx.DecodeOptions{})
		if err != nil {
			// Every rejection is a safe 400 whose message never echoes input.
			if failure.CodeOf(err) != failure.InvalidRequest {
				t.Fatalf("code %s for %q", failure.CodeOf(err), data)
			}
			if msg := failure.MessageOf(err); len(data) > 8 && strings.Contains(msg, string(data)) {
				t.Fatalf("message echoes input: %q", msg)
			}
		}
	})
}
