package redtail_test

import (
	"encoding/base64"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/connectd/connectd/connectors/redtail"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/connectortest/conformance"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/manifests"
)

// partnerKey is the account-managed Redtail API key.
const partnerKey = "partner-key-0f3c9a7d1e"

// The conformance kit through the real engine: the kit's per-user key is
// the user's password, the user name is the service's user id (Redtail's
// records are "<username>-redtail"), the partner API key is shared.
func TestConformance(t *testing.T) {
	doc, err := fs.ReadFile(manifests.FS, "redtail.json")
	if err != nil {
		t.Fatal(err)
	}
	storetest.Each(t, func(t *testing.T, backend string) {
		conformance.Run(t, conformance.Options{
			Backend:  backend,
			Platform: "redtail",
			Factory:  redtail.New,
			Manifest: doc,
			Env: func(k *conformance.Kit) map[string]string {
				return map[string]string{redtail.EnvBaseURL: k.URL + "/api/public/v1"}
			},
			APIKeyLogin: func(k *conformance.Kit, key string) map[string]any {
				username := "nobody"
				if u, ok := k.APIKeyUser(key); ok {
					username = u.ID
				}
				return map[string]any{"apiKey": partnerKey, "additionalInfo": map[string]any{
					redtail.FieldUsername: username, redtail.FieldPassword: key,
				}}
			},
			CRM: func(k *conformance.Kit) {
				// https://help.redtailtechnology.com/hc/en-us/articles/203964430-Authentication-Methods-
				// GET /authentication with Basic base64(APIKey:Username:Password).
				k.CRM.Handle(http.MethodGet, "/api/public/v1/authentication", func(w http.ResponseWriter, r *http.Request) {
					scheme, value, _ := strings.Cut(r.Header.Get("Authorization"), " ")
					raw, _ := base64.StdEncoding.DecodeString(value)
					parts := strings.SplitN(string(raw), ":", 3)
					if scheme != "Basic" || len(parts) != 3 || parts[0] != partnerKey {
						http.Error(w, "Unauthorized", http.StatusUnauthorized)
						return
					}
					u, ok := k.APIKeyUser(parts[2])
					if !ok || u.ID != parts[1] {
						http.Error(w, "Unauthorized", http.StatusUnauthorized)
						return
					}
					first, last, _ := strings.Cut(u.Name, " ")
					id, _ := strconv.Atoi(u.ID)
					connectortest.WriteJSON(w, http.StatusOK, map[string]any{"authenticated_user": map[string]any{
						"id": id, "user_key": "uk-" + u.ID + "-5b1e", "first_name": first, "last_name": last, "email": u.Email, "database_id": 9,
					}})
				})
			},
		})
	})
}
