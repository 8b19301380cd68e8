package dropbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/connectd/connectd/connectors/dropbox"
	"github.com/connectd/connectd/connectors/dropbox/dropboxtest"
	"github.com/connectd/connectd/core/connector"
)

// bearerClient adds a token like the engine's credential client does.
type bearerClient struct{ tok string }

func (b bearerClient) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return http.DefaultTransport.RoundTrip(r)
}

// login gets a live access token from the fake through its OAuth flow.
func login(t *testing.T, f *dropboxtest.Fake) string {
	t.Helper()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(f.AuthURL() + "?client_id=id&response_type=code&redirect_uri=http://127.0.0.1/cb&state=s")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := resp.Location()
	form := strings.NewReader("grant_type=authorization_code&code=" + loc.Query().Get("code") + "&redirect_uri=http://127.0.0.1/cb&client_id=id&client_secret=secret")
	tr, err := http.Post(f.TokenURL(), "application/x-www-form-urlencoded", form)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(tr.Body).Decode(&tok)
	if tok.AccessToken == "" {
		t.Fatal("no access token")
	}
	return tok.AccessToken
}

func newPlugin(t *testing.T, f *dropboxtest.Fake, folder string) *dropbox.Plugin {
	p, err := dropbox.NewPlugin(dropbox.Config{ClientID: "id", ClientSecret: "secret", Folder: folder,
		AuthURL: f.AuthURL(), TokenURL: f.TokenURL(), APIURL: f.URL(), ContentURL: f.URL()})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const data = `{"logInfo":{"direction":"Outbound","duration":61,"startTime":1764150000000,"from":{"phoneNumber":"+1650"},"to":{"name":"Ann","phoneNumber":"+1415"}},"contactName":"Ann Lee","note":"Follow up Monday."}`

func TestProcessAsync(t *testing.T) {
	ctx := context.Background()
	f := dropboxtest.New(t, "id", "secret")
	tok := login(t, f)
	client := &http.Client{Transport: bearerClient{tok}}
	p := newPlugin(t, f, "/Calls – Über")
	req := connector.PluginRequest{HTTPClient: client, PluginID: "dropbox", Data: json.RawMessage(data), TaskID: "task/1"}

	for i := 0; i < 2; i++ { // at-least-once: a second run overwrites the same file
		res, err := p.ProcessAsync(ctx, req)
		if err != nil || !res.Successful || !strings.Contains(res.Message, "/Calls – Über/call-task_1.txt") {
			t.Fatalf("run %d: %+v, %v", i, res, err)
		}
	}
	ups := f.Uploads()
	if len(ups) != 2 || ups[0].Mode != "overwrite" || ups[0].Autorename || ups[0].ContentType != "application/octet-stream" || ups[0].Token != tok {
		t.Fatalf("uploads = %+v", ups)
	}
	files := f.Files()
	if len(files) != 1 {
		t.Fatalf("files = %v, want one", files)
	}
	body := files["/calls – über/call-task_1.txt"]
	for _, want := range []string{"Contact: Ann Lee", "Direction: Outbound", "To: Ann +1415", "Duration (s): 61", "Start: 2025-11-26T", "Follow up Monday."} {
		if !strings.Contains(body, want) {
			t.Fatalf("summary lacks %q:\n%s", want, body)
		}
	}

	t.Run("5xx and 429 are retried", func(t *testing.T) {
		for _, status := range []int{500, 503, 429} {
			f.FailUploads(1, status)
			if _, err := p.ProcessAsync(ctx, req); err == nil || errors.Is(err, connector.ErrInvalidPayload) {
				t.Fatalf("%d: err = %v, want a retryable error", status, err)
			}
		}
	})
	t.Run("4xx is a final failure", func(t *testing.T) {
		f.FailUploads(1, 400)
		res, err := p.ProcessAsync(ctx, req)
		if err != nil || res.Successful || !strings.Contains(res.Message, "400") {
			t.Fatalf("%+v, %v", res, err)
		}
	})
	t.Run("dead login", func(t *testing.T) {
		dead := connector.PluginRequest{HTTPClient: &http.Client{Transport: bearerClient{"revoked"}}, Data: json.RawMessage(data), TaskID: "t"}
		res, err := p.ProcessAsync(ctx, dead)
		if err != nil || res.Successful || !strings.Contains(res.Message, "Connect Dropbox again") {
			t.Fatalf("%+v, %v", res, err)
		}
	})
	t.Run("bad payload", func(t *testing.T) {
		if _, err := p.ProcessAsync(ctx, connector.PluginRequest{HTTPClient: client, Data: json.RawMessage(`[]`), TaskID: "t"}); !errors.Is(err, connector.ErrInvalidPayload) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestUserInfoAndRevoke(t *testing.T) {
	ctx := context.Background()
	f := dropboxtest.New(t, "id", "secret")
	tok := login(t, f)
	p := newPlugin(t, f, "")
	res, err := p.UserInfo(ctx, connector.UserInfoRequest{HTTPClient: http.DefaultClient, AuthHeader: "Bearer " + tok})
	if err != nil || !res.Successful || res.User.ID != dropboxtest.AccountID || res.User.Name != dropboxtest.DisplayName {
		t.Fatalf("user info = %+v, %v", res, err)
	}
	if res, err := p.UserInfo(ctx, connector.UserInfoRequest{HTTPClient: http.DefaultClient, AuthHeader: "Bearer nope"}); err != nil || res.Successful {
		t.Fatalf("bad token user info = %+v, %v", res, err)
	}
	info, _ := p.OAuthInfo(ctx, connector.OAuthInfoRequest{})
	if info.AuthURLParams["token_access_type"] != "offline" || info.ClientSecret.Reveal() != "secret" {
		t.Fatalf("oauth info = %+v", info)
	}
	r, err := p.Unauthorize(ctx, connector.UserRequest{HTTPClient: &http.Client{Transport: bearerClient{tok}}})
	if err != nil || !r.Successful || len(f.Revoked()) != 1 || f.LiveAccessTokens() != 0 {
		t.Fatalf("revoke = %+v, %v, revoked %v", r, err, f.Revoked())
	}
	// Revoking again (token already dead) still succeeds: idempotent.
	if r, err := p.Unauthorize(ctx, connector.UserRequest{HTTPClient: &http.Client{Transport: bearerClient{tok}}}); err != nil || !r.Successful {
		t.Fatalf("second revoke = %+v, %v", r, err)
	}
}

func TestFactory(t *testing.T) {
	if _, err := dropbox.New(connector.Config{Getenv: func(string) string { return "" }}); !errors.Is(err, connector.ErrUnavailable) {
		t.Fatalf("missing settings: %v", err)
	}
	env := map[string]string{"DROPBOX_CLIENT_ID": "id", "DROPBOX_CLIENT_SECRET": "s", "DROPBOX_FOLDER": "relative"}
	if _, err := dropbox.New(connector.Config{Getenv: func(k string) string { return env[k] }}); err == nil {
		t.Fatal("relative folder accepted")
	}
}
