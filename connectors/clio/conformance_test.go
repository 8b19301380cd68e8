package clio_test

import (
	"context"
	"io/fs"
	"net/http"
	"strconv"
	"testing"

	"github.com/connectd/connectd/connectors/clio"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/connectortest/conformance"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/manifests"
)

// The conformance kit through the real engine, as Clio's US region
// (app.clio.com): OAuth and API share the region's base URL, the client
// authenticates in the form body, logout is POST /oauth/deauthorize.
func TestConformance(t *testing.T) {
	doc, err := fs.ReadFile(manifests.FS, "clio.json")
	if err != nil {
		t.Fatal(err)
	}
	storetest.Each(t, func(t *testing.T, backend string) {
		conformance.Run(t, conformance.Options{
			Backend:  backend,
			Platform: "clio",
			Factory:  clio.New,
			Manifest: doc,
			Hostname: "app.clio.com",
			Provider: connectortest.ProviderOptions{ClientAuth: connectortest.ClientAuthBody, RotateRefreshTokens: true, ReuseDetection: true},
			OAuthPaths: map[string]string{
				"/oauth/authorize": connectortest.PathAuthorize,
				"/oauth/token":     connectortest.PathToken,
			},
			Env: func(k *conformance.Kit) map[string]string {
				return map[string]string{"CLIO_CLIENT_ID": k.ClientID, "CLIO_CLIENT_SECRET": k.ClientSecret, "CLIO_BASE_URL": k.URL}
			},
			CRM: func(k *conformance.Kit) {
				// https://docs.developers.clio.com/api-reference/ (Users: who_am_i)
				k.CRM.Handle(http.MethodGet, "/api/v4/users/who_am_i.json", func(w http.ResponseWriter, r *http.Request) {
					u, ok := k.OAuthUser(r)
					if !ok {
						connectortest.WriteJSON(w, http.StatusUnauthorized, map[string]any{"error": map[string]any{"type": "AuthenticationError", "message": "Invalid token"}})
						return
					}
					id, _ := strconv.Atoi(u.ID)
					connectortest.WriteJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"id": id, "name": u.Name, "time_zone": u.Timezone}})
				})
				// https://docs.developers.clio.com/api-docs/authorization
				// (deauthorize: bearer token plus the token in the form; the
				// grant ends).
				k.CRM.Handle(http.MethodPost, "/oauth/deauthorize", func(w http.ResponseWriter, r *http.Request) {
					if _, ok := k.OAuthUser(r); !ok {
						w.WriteHeader(http.StatusUnauthorized)
						return
					}
					if err := r.ParseForm(); err != nil || r.PostForm.Get("token") == "" {
						w.WriteHeader(http.StatusBadRequest)
						return
					}
					if err := k.Revoke(context.Background(), r.PostForm.Get("token")); err != nil {
						w.WriteHeader(http.StatusInternalServerError)
						return
					}
					w.WriteHeader(http.StatusOK)
				})
			},
		})
	})
}
