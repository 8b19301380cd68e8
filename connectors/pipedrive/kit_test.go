package pipedrive

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/connectd/connectd/core/connector"
)

// fakeDeals plays GET {api_domain}/api/v1/deals and /api/v1/deals/search
// and records the queries it received.
type fakeDeals struct {
	srv     *httptest.Server
	mu      sync.Mutex
	queries []string // "path?query"
	status  int
	deals   string // JSON of data
}

func newFakeDeals(t *testing.T) *fakeDeals {
	f := &fakeDeals{status: http.StatusOK, deals: `[
		{"id": 7, "title": "Big <b>deal</b>", "value": 1500, "currency": "EUR", "status": "open", "add_time": "2026-11-20 10:00:00", "org_name": "Acme & Co", "person_name": "Ann"},
		{"id": 6, "title": "Small deal", "value": 20, "currency": "USD", "status": "open", "add_time": "2026-11-19 10:00:00", "org_name": "", "person_name": ""}
	]`}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.queries = append(f.queries, r.URL.Path+"?"+r.URL.RawQuery)
		status, deals := f.status, f.deals
		f.mu.Unlock()
		if r.Method != http.MethodGet || r.Header.Get("Authorization") != "Bearer "+testAccess {
			t.Errorf("fake deals: %s %s with Authorization %q", r.Method, r.URL.Path, r.Header.Get("Authorization"))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if status != http.StatusOK {
			w.WriteHeader(status)
			_, _ = w.Write([]byte(`{"success":false,"error":"nope"}`))
			return
		}
		switch r.URL.Path {
		case "/api/v1/deals":
			_, _ = w.Write([]byte(`{"success":true,"data":` + deals + `,"additional_data":{"pagination":{"start":0,"limit":5,"more_items_in_collection":false}}}`))
		case "/api/v1/deals/search":
			_, _ = w.Write([]byte(`{"success":true,"data":{"items":[{"result_score":1,"item":{"id":7,"title":"Big deal"}}]}}`))
		default:
			t.Errorf("fake deals: unexpected path %s", r.URL.Path)
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeDeals) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queries) == 0 {
		return ""
	}
	return f.queries[len(f.queries)-1]
}

func kitPlugin(t *testing.T, c *Connector, name string) connector.KitPlugin {
	t.Helper()
	for _, p := range c.KitPlugins() {
		if p.Name == name {
			if !connector.ValidKitPluginName(p.Name) {
				t.Fatalf("plugin name %q is not a valid path segment", p.Name)
			}
			return p
		}
	}
	t.Fatalf("no kit plugin %q", name)
	return connector.KitPlugin{}
}

func TestKitDealsBlock(t *testing.T) {
	f := newFakeDeals(t)
	cn, err := New(connector.Config{Name: "pipedrive", Getenv: env(map[string]string{
		EnvClientID: testClientID, EnvClientSecret: testClientSecret, EnvTestAPIOrigin: f.srv.URL,
	})})
	if err != nil {
		t.Fatal(err)
	}
	c := cn.(*Connector)
	host := strings.TrimPrefix(f.srv.URL, "http://")
	p := kitPlugin(t, c, "deals")
	if p.Kind != connector.KitContentBlock {
		t.Fatalf("kind = %s", p.Kind)
	}
	req := func(body string) connector.KitPluginRequest {
		return connector.KitPluginRequest{UserRequest: connector.UserRequest{HTTPClient: engineClient(testAccess), User: connector.User{Hostname: host}}, Body: json.RawMessage(body)}
	}
	tests := []struct {
		name      string
		body      string
		wantQuery string // "" = no upstream call
		wantHTML  []string
		wantCode  int // KitPluginError code
	}{
		{"defaults", `{"settings":{}}`, "/api/v1/deals?limit=5&sort=add_time+DESC&start=0&status=open",
			[]string{"Big &lt;b&gt;deal&lt;/b&gt;", "Acme &amp; Co · Ann", "1500 EUR", "Small deal", "20 USD"}, 0},
		{"limit as number and status", `{"settings":{"limit":3,"status":"won"}}`, "/api/v1/deals?limit=3&sort=add_time+DESC&start=0&status=won", []string{"Big"}, 0},
		{"limit as string", `{"settings":{"limit":"12"}}`, "/api/v1/deals?limit=12&sort=add_time+DESC&start=0&status=open", []string{"Big"}, 0},
		{"limit out of range", `{"settings":{"limit":"50"}}`, "", nil, 422},
		{"bad status", `{"settings":{"status":"deleted"}}`, "", nil, 422},
		{"not an object", `[1]`, "", nil, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.last()
			res, err := p.Handle(context.Background(), req(tt.body))
			if tt.wantCode != 0 {
				var ke *connector.KitPluginError
				if !errors.As(err, &ke) || ke.Code != tt.wantCode {
					t.Fatalf("err = %v, want KitPluginError %d", err, tt.wantCode)
				}
				if f.last() != before {
					t.Fatalf("an upstream call was made: %s", f.last())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.last(); got != tt.wantQuery {
				t.Errorf("upstream = %s, want %s", got, tt.wantQuery)
			}
			for _, w := range tt.wantHTML {
				if !strings.Contains(res.HTML, w) {
					t.Errorf("html lacks %q: %s", w, res.HTML)
				}
			}
			if strings.Contains(res.HTML, "<b>deal") {
				t.Errorf("CRM text not escaped: %s", res.HTML)
			}
		})
	}

	t.Run("empty list", func(t *testing.T) {
		f.mu.Lock()
		f.deals = `null`
		f.mu.Unlock()
		res, err := p.Handle(context.Background(), req(`{}`))
		if err != nil || !strings.Contains(res.HTML, "No open deals yet.") {
			t.Fatalf("res = %+v, %v", res, err)
		}
	})
	for _, tc := range []struct {
		status int
		want   int
	}{{401, 401}, {429, 429}, {500, 0}} {
		t.Run("upstream "+http.StatusText(tc.status), func(t *testing.T) {
			f.mu.Lock()
			f.status = tc.status
			f.mu.Unlock()
			t.Cleanup(func() { f.mu.Lock(); f.status = http.StatusOK; f.mu.Unlock() })
			_, err := p.Handle(context.Background(), req(`{}`))
			var ke *connector.KitPluginError
			if tc.want == 0 {
				if err == nil || errors.As(err, &ke) {
					t.Fatalf("err = %v, want a plain error", err)
				}
				return
			}
			if !errors.As(err, &ke) || ke.Code != tc.want {
				t.Fatalf("err = %v, want KitPluginError %d", err, tc.want)
			}
		})
	}

	t.Run("foreign hostname never called", func(t *testing.T) {
		before := f.last()
		_, err := p.Handle(context.Background(), connector.KitPluginRequest{UserRequest: connector.UserRequest{HTTPClient: engineClient(testAccess), User: connector.User{Hostname: "evil.example"}}, Body: json.RawMessage(`{}`)})
		if err == nil || f.last() != before {
			t.Fatalf("err = %v, last = %s", err, f.last())
		}
	})
}

func TestKitDealSearch(t *testing.T) {
	f := newFakeDeals(t)
	cn, err := New(connector.Config{Name: "pipedrive", Getenv: env(map[string]string{
		EnvClientID: testClientID, EnvClientSecret: testClientSecret, EnvTestAPIOrigin: f.srv.URL,
	})})
	if err != nil {
		t.Fatal(err)
	}
	c := cn.(*Connector)
	p := kitPlugin(t, c, "deal-search")
	if p.Kind != connector.KitSearchInput {
		t.Fatalf("kind = %s", p.Kind)
	}
	host := strings.TrimPrefix(f.srv.URL, "http://")
	ur := connector.UserRequest{HTTPClient: engineClient(testAccess), User: connector.User{Hostname: host}}
	res, err := p.Handle(context.Background(), connector.KitPluginRequest{UserRequest: ur, Body: json.RawMessage(`{"query":"big"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != 1 || res.Items[0] != (connector.Option{Label: "Big deal", Value: "7"}) {
		t.Fatalf("items = %+v", res.Items)
	}
	if got := f.last(); got != "/api/v1/deals/search?fields=title&limit=10&term=big" {
		t.Errorf("upstream = %s", got)
	}
	before := f.last()
	res, err = p.Handle(context.Background(), connector.KitPluginRequest{UserRequest: ur, Body: json.RawMessage(`{"query":"b"}`)})
	if err != nil || len(res.Items) != 0 || res.Items == nil || f.last() != before {
		t.Fatalf("short query: %+v, %v, upstream %s", res, err, f.last())
	}
}
