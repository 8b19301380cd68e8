package conformance

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/connectd/connectd/core/connectortest"
)

// front is one httptest server in front of the kit's provider and fake CRM:
// the OAuth paths a connector uses (Options.OAuthPaths) are forwarded to
// the provider's own paths, everything else to the CRM. A connector whose
// OAuth endpoints and API share one base URL (Clio) or live at other paths
// than the provider's (/oauth/token instead of /token) is pointed at it
// unchanged. Faults for the CRM side are injected here.
type front struct {
	srv      *httptest.Server
	paths    map[string]string
	provider *url.URL
	crm      *url.URL
	extra    func() map[string]any
	tr       *http.Transport

	mu     sync.Mutex
	faults []connectortest.Fault
}

func newFront(t testing.TB, p *connectortest.Provider, crm *connectortest.CRM, paths map[string]string, extra func() map[string]any) *front {
	f := &front{paths: paths, extra: extra, tr: &http.Transport{}}
	f.provider, _ = url.Parse(p.URL())
	f.crm, _ = url.Parse(crm.URL())
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		f.srv.CloseClientConnections()
		f.srv.Close()
		f.tr.CloseIdleConnections()
	})
	return f
}

// failCRM makes the next CRM-side request answer with fault.
func (f *front) failCRM(fault connectortest.Fault) {
	f.mu.Lock()
	f.faults = append(f.faults, fault)
	f.mu.Unlock()
}

func (f *front) takeFault() (connectortest.Fault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.faults) == 0 {
		return connectortest.Fault{}, false
	}
	x := f.faults[0]
	f.faults = f.faults[1:]
	return x, true
}

func (f *front) serve(w http.ResponseWriter, r *http.Request) {
	if to, ok := f.paths[r.URL.Path]; ok {
		f.proxy(f.provider, to, to == connectortest.PathToken).ServeHTTP(w, r)
		return
	}
	if fault, ok := f.takeFault(); ok {
		switch fault.Kind {
		case connectortest.KindStatus:
			http.Error(w, http.StatusText(fault.Status), fault.Status)
			return
		case connectortest.KindTooMany:
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(fault.Delay/time.Second))))
			http.Error(w, "rate limited", http.StatusTooManyRequests)
			return
		case connectortest.KindSlow, connectortest.KindLatency:
			tm := time.NewTimer(fault.Delay)
			select {
			case <-tm.C:
			case <-r.Context().Done():
				tm.Stop()
				return
			}
		case connectortest.KindLostResponse:
			// Let the CRM do the work, then drop the connection.
			f.proxy(f.crm, r.URL.Path, false).ServeHTTP(httptest.NewRecorder(), r)
			panic(http.ErrAbortHandler)
		}
	}
	f.proxy(f.crm, r.URL.Path, false).ServeHTTP(w, r)
}

// proxy forwards to target's path; token answers get the extra fields.
func (f *front) proxy(target *url.URL, path string, token bool) http.Handler {
	rp := &httputil.ReverseProxy{
		Transport: f.tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = target.Scheme
			pr.Out.URL.Host = target.Host
			pr.Out.URL.Path = path
			pr.Out.URL.RawPath = ""
			pr.Out.Host = target.Host
		},
		// No answer upstream (a lost response, a slow one the client gave
		// up on): drop the client's connection too, so it sees exactly
		// what it would have seen talking to the provider directly.
		ErrorHandler: func(http.ResponseWriter, *http.Request, error) { panic(http.ErrAbortHandler) },
	}
	if token && f.extra != nil {
		rp.ModifyResponse = func(resp *http.Response) error {
			if resp.StatusCode != http.StatusOK {
				return nil
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			var m map[string]any
			if json.Unmarshal(body, &m) == nil && m["access_token"] != nil {
				for k, v := range f.extra() {
					m[k] = v
				}
				body, _ = json.Marshal(m)
			}
			resp.Body = io.NopCloser(bytes.NewReader(body))
			resp.ContentLength = int64(len(body))
			resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
			return nil
		}
	}
	return rp
}
