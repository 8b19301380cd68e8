package connectortest_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connectd/connectd/core/connectortest"
)

// fakeTB captures failures instead of failing the real test, so the kit's
// own "this fails the test" behaviour can be asserted. Fatal panics with
// errFatal; callers recover.
type fakeTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

type fatalPanic struct{}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Errorf(format string, a ...any) {
	f.mu.Lock()
	f.errs = append(f.errs, fmt.Sprintf(format, a...))
	f.mu.Unlock()
}

func (f *fakeTB) Error(a ...any) { f.Errorf("%s", fmt.Sprint(a...)) }

func (f *fakeTB) Fatalf(format string, a ...any) {
	f.Errorf(format, a...)
	panic(fatalPanic{})
}

func (f *fakeTB) Fatal(a ...any) {
	f.Error(a...)
	panic(fatalPanic{})
}

func (f *fakeTB) errors() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.errs...)
}

func do(t *testing.T, c *connectortest.CRM, method, path string, hdr map[string]string, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, c.URL()+path, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestCRMHandleAndRecord(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	c := connectortest.NewCRM(t, connectortest.CRMWithClock(func() time.Time { return now }))
	c.Handle(http.MethodGet, "/api/v1/users/me", func(w http.ResponseWriter, r *http.Request) {
		connectortest.WriteJSON(w, 200, map[string]any{"success": true, "data": map[string]any{"id": 7}})
	})
	status, body := do(t, c, "GET", "/api/v1/users/me?fields=id", map[string]string{"Authorization": "Bearer at-1"}, "")
	if status != 200 || strings.TrimSpace(body) != `{"data":{"id":7},"success":true}` {
		t.Fatalf("%d %s", status, body)
	}
	r := c.Last("/api/v1/users/me")
	if r.Bearer != "at-1" || r.Query.Get("fields") != "id" || !r.Time.Equal(now) || r.Method != "GET" {
		t.Fatalf("recorded %+v", r)
	}
	if c.Count("/api/v1/users/me") != 1 || len(c.Requests()) != 1 {
		t.Fatalf("counts")
	}
	c.Reset()
	if len(c.Requests()) != 0 {
		t.Fatal("Reset kept requests")
	}
}

func TestCRMUnexpectedRequestFailsTest(t *testing.T) {
	ft := &fakeTB{TB: t}
	c := connectortest.NewCRM(ft)
	c.Handle(http.MethodGet, "/known", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	tests := []struct{ method, path string }{{"GET", "/unknown"}, {"POST", "/known"}}
	for i, tc := range tests {
		status, _ := do(t, c, tc.method, tc.path, nil, "")
		if status != 404 {
			t.Fatalf("%s %s: %d, want 404", tc.method, tc.path, status)
		}
		if errs := ft.errors(); len(errs) != i+1 || !strings.Contains(errs[i], tc.method+" "+tc.path) {
			t.Fatalf("errors %v", errs)
		}
	}
	if c.Count("/unknown") != 1 {
		t.Fatal("unexpected request not recorded")
	}
}

func TestCRMExpect(t *testing.T) {
	formExpect := connectortest.Expect{
		ContentType: "application/x-www-form-urlencoded",
		Form:        url.Values{"token": {"rt-1"}, "token_type_hint": {"refresh_token"}},
		BasicAuth:   true, BasicUser: "cid", BasicPassword: "csecret",
		NoHeader: []string{"X-Debug"},
	}
	jsonExpect := connectortest.Expect{
		Header: http.Header{"Accept": {"application/json"}},
		JSON:   `{"a": 1, "b": ["x", "y"]}`,
		Bearer: "at-9",
	}
	basic := "Basic Y2lkOmNzZWNyZXQ=" // cid:csecret
	tests := []struct {
		name    string
		expect  connectortest.Expect
		method  string
		hdr     map[string]string
		body    string
		wantErr []string // substrings of the failure; nil: accepted
	}{
		{"form ok", formExpect, "POST", map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic},
			"token_type_hint=refresh_token&token=rt-1", nil},
		{"form extra field", formExpect, "POST", map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic},
			"token_type_hint=refresh_token&token=rt-1&client_secret=csecret", []string{"form [client_secret(1)"}},
		{"form sent as JSON", formExpect, "POST", map[string]string{"Content-Type": "application/json", "Authorization": basic},
			`{"token":"rt-1"}`, []string{"content type", "want a form"}},
		{"no basic auth", formExpect, "POST", map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
			"token_type_hint=refresh_token&token=rt-1", []string{"no HTTP Basic"}},
		{"forbidden header", formExpect, "POST", map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic, "X-Debug": "1"},
			"token_type_hint=refresh_token&token=rt-1", []string{"X-Debug present"}},
		{"json ok, other key order", jsonExpect, "POST", map[string]string{"Accept": "application/json", "Authorization": "Bearer at-9"},
			`{"b":["x","y"],"a":1}`, nil},
		{"json differs", jsonExpect, "POST", map[string]string{"Accept": "application/json", "Authorization": "Bearer at-9"},
			`{"a":2,"b":["x","y"]}`, []string{`JSON body {"a":2`}},
		{"json trailing data", jsonExpect, "POST", map[string]string{"Accept": "application/json", "Authorization": "Bearer at-9"},
			`{"a":1,"b":["x","y"]} {}`, []string{"after the JSON"}},
		{"wrong bearer, header missing", jsonExpect, "POST", map[string]string{"Authorization": "Bearer other"},
			`{"a":1,"b":["x","y"]}`, []string{"header Accept", "bearer token differs"}},
		{"wrong method", jsonExpect, "PUT", map[string]string{"Accept": "application/json", "Authorization": "Bearer at-9"},
			`{"a":1,"b":["x","y"]}`, []string{"unexpected request PUT"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ft := &fakeTB{TB: t}
			c := connectortest.NewCRM(ft)
			called := false
			c.Expect(http.MethodPost, "/oauth/revoke", tc.expect, func(w http.ResponseWriter, r *http.Request) {
				called = true
				b, _ := io.ReadAll(r.Body)
				if string(b) != tc.body {
					t.Errorf("handler saw body %q, want the original", b)
				}
				w.WriteHeader(200)
			})
			status, _ := do(t, c, tc.method, "/oauth/revoke", tc.hdr, tc.body)
			errs := ft.errors()
			if tc.wantErr == nil {
				if status != 200 || !called || len(errs) != 0 {
					t.Fatalf("status %d called %v errors %v", status, called, errs)
				}
				return
			}
			if called || status < 400 || len(errs) != 1 {
				t.Fatalf("status %d called %v errors %v: want refused with one failure", status, called, errs)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(errs[0], want) {
					t.Errorf("failure %q lacks %q", errs[0], want)
				}
			}
			if strings.Contains(errs[0], "csecret") || strings.Contains(errs[0], "Y2lkOmNzZWNyZXQ") {
				t.Errorf("failure message leaks a credential: %s", errs[0])
			}
		})
	}
}

func TestExpectQuery(t *testing.T) {
	e := connectortest.Expect{Method: "GET", Path: "/x", Query: url.Values{}}
	if err := e.Check(connectortest.RecordedRequest{Method: "GET", Path: "/x", Query: url.Values{"a": {"1"}}}); err == nil {
		t.Fatal("query accepted where none is documented")
	}
	if err := e.Check(connectortest.RecordedRequest{Method: "GET", Path: "/x", Query: url.Values{}}); err != nil {
		t.Fatal(err)
	}
}

func TestCRMTLS(t *testing.T) {
	c := connectortest.NewCRM(t, connectortest.CRMWithTLS())
	c.Handle("GET", "/ping", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	if !strings.HasPrefix(c.URL(), "https://") {
		t.Fatal(c.URL())
	}
	if status, _ := do(t, c, "GET", "/ping", nil, ""); status != 204 {
		t.Fatal(status)
	}
}
