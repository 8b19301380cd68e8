package appconnect_test

import (
	"net/http"
	"net/http/httptest"
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
