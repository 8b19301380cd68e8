package conformance_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"testing"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/core/connectortest/conformance"
)

// The kit's reference connectors pass every promise.
func TestReferenceConnectorsConform(t *testing.T) {
	t.Run("oauth", func(t *testing.T) { runOAuth(t, nil) })
	t.Run("apiKey", func(t *testing.T) { runAPIKey(t, nil) })
}

// brokenEnv selects the broken connector TestBrokenConnector runs; the
// parent test re-runs this test binary with it set.
const brokenEnv = "CONFORMANCE_BROKEN_CASE"

// Each typical connector mistake fails exactly the subtests that name the
// broken promise, and the others still pass.
func TestKitCatchesMistakes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		wantFail []string
	}{
		{"logout-without-revoking", []string{"logout"}},
		{"wrong-user-id", []string{"user_info"}},
		{"refusal-as-error", []string{"wrong_key"}},
		{"outage-as-refusal", []string{"faults/5xx", "faults/429"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenConnector$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), brokenEnv+"="+tc.name)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("the broken connector's run did not fail (err %v):\n%s", err, out)
			}
			failed, passed := results(out)
			for _, w := range tc.wantFail {
				if !slices.Contains(failed, w) {
					t.Errorf("subtest %q did not fail; failed: %v\n%s", w, failed, out)
				}
			}
			for _, f := range failed {
				if f != "faults" && !slices.Contains(tc.wantFail, f) {
					t.Errorf("subtest %q failed too; the kit should blame only %v", f, tc.wantFail)
				}
			}
			if !slices.Contains(passed, "login") {
				t.Errorf("login should still pass; passed: %v", passed)
			}
		})
	}
}

var resultLine = regexp.MustCompile(`--- (PASS|FAIL): TestBrokenConnector/(\S+)`)

// results returns the failed and passed subtest names (below the top).
func results(out []byte) (failed, passed []string) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := resultLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if m[1] == "FAIL" {
			failed = append(failed, m[2])
		} else {
			passed = append(passed, m[2])
		}
	}
	return failed, passed
}

// TestBrokenConnector is run by TestKitCatchesMistakes only.
func TestBrokenConnector(t *testing.T) {
	c := os.Getenv(brokenEnv)
	if c == "" {
		t.Skip("run by TestKitCatchesMistakes")
	}
	switch c {
	case "logout-without-revoking", "wrong-user-id":
		runOAuth(t, func(inner connector.OAuthConnector) connector.Connector {
			if c == "wrong-user-id" {
				return wrongID{inner}
			}
			return noRevoke{inner}
		})
	default:
		runAPIKey(t, func(inner connector.APIKeyConnector) connector.Connector {
			if c == "refusal-as-error" {
				return refusalAsError{inner}
			}
			return outageAsRefusal{inner}
		})
	}
}

func runOAuth(t *testing.T, wrap func(connector.OAuthConnector) connector.Connector) {
	var kit *conformance.Kit
	conformance.Run(t, conformance.Options{
		Platform: "refcrm",
		Manifest: connectortest.OAuthManifest("refcrm", []string{conformance.ClientRedirect}, true),
		Provider: connectortest.ProviderOptions{RequirePKCE: true, RotateRefreshTokens: true, ReuseDetection: true},
		Env:      func(k *conformance.Kit) map[string]string { kit = k; return nil },
		Factory: func(cfg connector.Config) (connector.Connector, error) {
			c, err := connectortest.OAuthConnector(kit.Provider, connectortest.OAuthConnectorOptions{})(cfg)
			if err != nil || wrap == nil {
				return c, err
			}
			return wrap(c.(connector.OAuthConnector)), nil
		},
	})
}

func runAPIKey(t *testing.T, wrap func(connector.APIKeyConnector) connector.Connector) {
	conformance.Run(t, conformance.Options{
		Platform: "refkey",
		Manifest: connectortest.APIKeyManifest("refkey", false),
		Env:      func(k *conformance.Kit) map[string]string { return map[string]string{"CRM_URL": k.URL} },
		Factory: func(cfg connector.Config) (connector.Connector, error) {
			c, err := connectortest.APIKeyConnector(cfg.Getenv("CRM_URL"))(cfg)
			if err != nil || wrap == nil {
				return c, err
			}
			return wrap(c.(connector.APIKeyConnector)), nil
		},
		CRM: func(k *conformance.Kit) {
			k.CRM.Handle(http.MethodGet, "/me", func(w http.ResponseWriter, r *http.Request) {
				key, _, _ := r.BasicAuth()
				u, ok := k.APIKeyUser(key)
				if !ok {
					connectortest.WriteJSON(w, http.StatusUnauthorized, map[string]any{"error": "bad key"})
					return
				}
				connectortest.WriteJSON(w, http.StatusOK, map[string]any{"id": u.ID, "name": u.Name})
			})
		},
	})
}

// noRevoke says it logged out without telling the provider.
type noRevoke struct{ connector.OAuthConnector }

func (noRevoke) Unauthorize(context.Context, connector.UserRequest) (connector.Result, error) {
	return connector.Result{Successful: true}, nil
}

// wrongID reports an id of its own instead of the service's.
type wrongID struct{ connector.OAuthConnector }

func (w wrongID) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	res, err := w.OAuthConnector.UserInfo(ctx, req)
	res.User.ID = "local-" + res.User.ID
	return res, err
}

// refusalAsError turns the service's refusal into an error (a 5xx for the
// user instead of "check your key").
type refusalAsError struct{ connector.APIKeyConnector }

func (r refusalAsError) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	res, err := r.APIKeyConnector.UserInfo(ctx, req)
	if err == nil && !res.Successful {
		return connector.UserInfoResult{}, errors.New("login failed")
	}
	return res, err
}

// outageAsRefusal tells the user their key is wrong when the service is down.
type outageAsRefusal struct{ connector.APIKeyConnector }

func (o outageAsRefusal) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	res, err := o.APIKeyConnector.UserInfo(ctx, req)
	if err != nil {
		return connector.UserInfoResult{ReturnMessage: &connector.ReturnMessage{Message: "Wrong key.", MessageType: connector.MessageWarning}}, nil
	}
	return res, nil
}
