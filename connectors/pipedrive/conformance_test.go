package pipedrive_test

import (
	"io/fs"
	"net/http"
	"testing"

	"github.com/connectd/connectd/connectors/pipedrive"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/connectortest/conformance"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/manifests"
)

// The conformance kit through the real engine, with Pipedrive's OAuth paths
// (/oauth/authorize, /oauth/token, /oauth/revoke), HTTP Basic client
// authentication, api_domain in the token answer and users/me in
// Pipedrive's envelope.
func TestConformance(t *testing.T) {
	doc, err := fs.ReadFile(manifests.FS, "pipedrive.json")
	if err != nil {
		t.Fatal(err)
	}
	storetest.Each(t, func(t *testing.T, backend string) {
		conformance.Run(t, conformance.Options{
			Backend:  backend,
			Platform: "pipedrive",
			Factory:  pipedrive.New,
			Manifest: doc,
			Provider: connectortest.ProviderOptions{ClientAuth: connectortest.ClientAuthBasic, RotateRefreshTokens: true, ReuseDetection: true},
			OAuthPaths: map[string]string{
				"/oauth/authorize": connectortest.PathAuthorize,
				"/oauth/token":     connectortest.PathToken,
				"/oauth/revoke":    connectortest.PathRevoke,
			},
			TokenExtra: func(k *conformance.Kit) map[string]any { return map[string]any{"api_domain": k.URL} },
			Env: func(k *conformance.Kit) map[string]string {
				return map[string]string{
					pipedrive.EnvClientID: k.ClientID, pipedrive.EnvClientSecret: k.ClientSecret,
					pipedrive.EnvOAuthBaseURL: k.URL, pipedrive.EnvTestAPIOrigin: k.URL,
				}
			},
			CRM: func(k *conformance.Kit) {
				// https://developers.pipedrive.com/docs/api/v1/Users#getCurrentUser
				k.CRM.Handle(http.MethodGet, "/api/v1/users/me", func(w http.ResponseWriter, r *http.Request) {
					u, ok := k.OAuthUser(r)
					if !ok {
						connectortest.WriteJSON(w, http.StatusUnauthorized, map[string]any{"success": false, "error": "unauthorized access", "errorCode": 401})
						return
					}
					connectortest.WriteJSON(w, http.StatusOK, map[string]any{"success": true, "data": map[string]any{
						"id": json(u.ID), "name": u.Name, "email": u.Email, "timezone_name": u.Timezone, "timezone_offset": "+01:00",
						"company_id": 77, "company_name": "Conformance GmbH", "company_domain": "conformance",
					}})
				})
			},
		})
	})
}

// json keeps a numeric id numeric in the answer, as Pipedrive sends it.
func json(id string) any {
	n := 0
	for _, c := range id {
		n = n*10 + int(c-'0')
	}
	return n
}
