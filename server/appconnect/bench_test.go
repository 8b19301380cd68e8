package appconnect_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/store/storetest"
)

// BenchmarkAuthValidation measures GET /authValidation through the whole
// router (middleware, session verify, record read + open, no upstream call)
// on each backend.
func BenchmarkAuthValidation(b *testing.B) {
	for _, backend := range storetest.Backends(b) {
		b.Run(backend, func(b *testing.B) {
			e := newOAuthEnv(b, backend, connectortest.ProviderOptions{}, connectortest.OAuthConnectorOptions{}, true)
			jwt, _ := e.login(b, "alice")
			handler := e.h.Server.Engine
			req := httptest.NewRequest(http.MethodGet, "/authValidation", nil)
			req.Header.Set("Authorization", "Bearer "+jwt)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				w := httptest.NewRecorder()
				handler.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}

// BenchmarkSessionVerify measures App Connect session verification (JWT
// check + session row) against each real backend. The per-process session
// row cache (gormstore.DefaultSessionCacheTTL) answers most reads, as in
// production.
func BenchmarkSessionVerify(b *testing.B) {
	for _, backend := range storetest.Backends(b) {
		b.Run(backend, func(b *testing.B) {
			e := newOAuthEnv(b, backend, connectortest.ProviderOptions{}, connectortest.OAuthConnectorOptions{}, true)
			jwt, _ := e.login(b, "alice")
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := e.h.Sessions.VerifyAppConnect(ctx, jwt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAPIKeyLogin measures POST /apiKeyLogin through the router
// against an instant fake CRM on loopback (one upstream GET /me, one
// upsert, one session insert per login).
func BenchmarkAPIKeyLogin(b *testing.B) {
	for _, backend := range storetest.Backends(b) {
		b.Run(backend, func(b *testing.B) {
			h, _ := newAPIKeyEnv(b, backend)
			handler := h.Server.Engine
			body := `{"platform":"keycrm","apiKey":"` + goodKey + `"}`
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/apiKeyLogin", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.RemoteAddr = "127.0.0.1:1234"
				w := httptest.NewRecorder()
				handler.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}
