package insightly_test

import (
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/connectd/connectd/connectors/insightly"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/connectortest/conformance"
	"github.com/connectd/connectd/core/store/storetest"
	"github.com/connectd/connectd/manifests"
)

// The conformance kit through the real engine: API key as HTTP Basic user
// name, the account's API URL (its pod) from the login form.
func TestConformance(t *testing.T) {
	doc, err := fs.ReadFile(manifests.FS, "insightly.json")
	if err != nil {
		t.Fatal(err)
	}
	storetest.Each(t, func(t *testing.T, backend string) {
		conformance.Run(t, conformance.Options{
			Backend:  backend,
			Platform: "insightly",
			Factory:  insightly.New,
			Manifest: doc,
			Env: func(k *conformance.Kit) map[string]string {
				return map[string]string{insightly.EnvTestAPIOrigin: k.URL}
			},
			APIKeyLogin: func(k *conformance.Kit, key string) map[string]any {
				return map[string]any{"apiKey": key, "additionalInfo": map[string]any{insightly.FieldAPIURL: k.URL + "/v3.1/"}}
			},
			CRM: func(k *conformance.Kit) {
				// https://api.insightly.com/v3.1/Help (Authentication; Users: GET /Users/Me)
				k.CRM.Handle(http.MethodGet, "/v3.1/Users/Me", func(w http.ResponseWriter, r *http.Request) {
					key, pass, ok := r.BasicAuth()
					u, known := k.APIKeyUser(key)
					if !ok || pass != "" || !known {
						http.Error(w, "Unauthorized", http.StatusUnauthorized)
						return
					}
					first, last, _ := strings.Cut(u.Name, " ")
					id, _ := strconv.Atoi(u.ID)
					connectortest.WriteJSON(w, http.StatusOK, map[string]any{
						"USER_ID": id, "FIRST_NAME": first, "LAST_NAME": last, "EMAIL_ADDRESS": u.Email,
						"TIMEZONE_ID": "W. Europe Standard Time", "INSTANCE_ID": 42, "ADMINISTRATOR": false, "ACTIVE": true,
					})
				})
			},
		})
	})
}
