package doctor_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/connectortest"
	"github.com/connectd/connectd/server/doctor"
)

// TestOnlineEndpoints: --online reports an OAuth connector whose provider
// answers as OK and one whose provider is down as FAIL, with the host.
func TestOnlineEndpoints(t *testing.T) {
	up := connectortest.NewProvider(t, connectortest.ProviderOptions{})
	gone := httptest.NewServer(http.NotFoundHandler())
	downURL := gone.URL
	gone.Close() // nothing listens there any more
	fsys := fstest.MapFS{
		"up.json":   {Data: connectortest.OAuthManifest("upcrm", []string{"https://client.example/redirect.html"}, true)},
		"down.json": {Data: connectortest.OAuthManifest("downcrm", []string{"https://client.example/redirect.html"}, true)},
	}
	conns := map[string]connector.Factory{
		"upcrm":   connectortest.OAuthConnector(up, connectortest.OAuthConnectorOptions{}),
		"downcrm": func(connector.Config) (connector.Connector, error) { return downConn{url: downURL}, nil },
	}
	env := map[string]string{"CONNECTD_DATA_DIR": filepath.Join(t.TempDir(), "data")}
	for _, online := range []bool{false, true} {
		rep := doctor.Run(context.Background(), doctor.Options{Getenv: func(k string) string { return env[k] }, Manifests: fsys, Connectors: conns, Online: online})
		var buf bytes.Buffer
		rep.Write(&buf)
		t.Logf("online=%v:\n%s", online, buf.String())
		u, _ := rep.Find("connector upcrm")
		d, _ := rep.Find("connector downcrm")
		if !online {
			if u.Status != doctor.OK || d.Status != doctor.OK || rep.Failed() {
				t.Fatalf("offline: %+v %+v", u, d)
			}
			continue
		}
		if u.Status != doctor.OK || u.Detail != "available (oauth; endpoints answer)" {
			t.Errorf("up: %+v", u)
		}
		if d.Status != doctor.Fail || !strings.Contains(d.Detail, strings.TrimPrefix(downURL, "http://")) || !strings.Contains(d.Detail, "connection refused") {
			t.Errorf("down: %+v", d)
		}
		if !rep.Failed() {
			t.Error("report with a FAIL says it did not fail")
		}
		// A fresh SQLite installation: no database yet is a warning.
		if db, _ := rep.Find("database"); db.Status != doctor.Warn || !strings.Contains(db.Detail, "does not exist yet") {
			t.Errorf("database: %+v", db)
		}
	}
}

func TestBadConfigurationStopsEarly(t *testing.T) {
	rep := doctor.Run(context.Background(), doctor.Options{Getenv: func(k string) string {
		if k == "CONNECTD_RATE_LIMIT" {
			return "lots"
		}
		return ""
	}})
	if len(rep.Checks) != 1 || rep.Checks[0].Status != doctor.Fail || !strings.HasPrefix(rep.Checks[0].Detail, "CONNECTD_RATE_LIMIT") {
		t.Fatalf("report: %+v", rep.Checks)
	}
}

// downConn is an OAuth connector whose endpoints nobody answers.
type downConn struct{ url string }

func (downConn) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthOAuth, nil
}
func (downConn) UserInfo(context.Context, connector.UserInfoRequest) (connector.UserInfoResult, error) {
	return connector.UserInfoResult{}, nil
}
func (c downConn) OAuthInfo(context.Context, connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	return connector.OAuthInfo{ClientID: "id", ClientSecret: "secret", AuthURL: c.url + "/authorize", TokenURL: c.url + "/token"}, nil
}
