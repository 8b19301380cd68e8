// Package dropbox is an example asynchronous App Connect plugin with its
// own third-party login: it saves a call summary as a text file in the
// user's Dropbox (POST https://content.dropboxapi.com/2/files/upload,
// Dropbox API v2). The user connects Dropbox through connectd's connect
// flow (OAuth 2 with PKCE and offline access, so the engine holds and
// refreshes a refresh token); the plugin only ever sees an HTTP client
// that carries the credential.
//
// The file is named after the asyncTaskId and written in "overwrite"
// mode, so a task delivered twice (at-least-once after a crash) leaves
// one file, not two.
//
// Settings (environment): DROPBOX_CLIENT_ID and DROPBOX_CLIENT_SECRET
// (required); DROPBOX_FOLDER (default "/App Connect calls").
package dropbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/connectd/connectd/core/connector"
)

// Dropbox endpoints (documented API v2).
const (
	DefaultAuthURL    = "https://www.dropbox.com/oauth2/authorize"
	DefaultTokenURL   = "https://api.dropboxapi.com/oauth2/token"
	DefaultAPIURL     = "https://api.dropboxapi.com"
	DefaultContentURL = "https://content.dropboxapi.com"
	defaultFolder     = "/App Connect calls"
)

// Config configures the plugin.
type Config struct {
	ClientID     string
	ClientSecret connector.Secret
	// Folder is where summaries go (absolute Dropbox path).
	Folder string
	// AuthURL, TokenURL, APIURL, ContentURL override Dropbox's (tests).
	AuthURL, TokenURL, APIURL, ContentURL string
	Logger                                *slog.Logger
}

// Plugin is the Dropbox plugin.
type Plugin struct{ c Config }

var (
	_ connector.OAuthConnector = (*Plugin)(nil)
	_ connector.AsyncProcessor = (*Plugin)(nil)
	_ connector.Unauthorizer   = (*Plugin)(nil)
)

// New is the connector.Factory.
func New(cfg connector.Config) (connector.Connector, error) {
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	c := Config{
		ClientID:     getenv("DROPBOX_CLIENT_ID"),
		ClientSecret: connector.Secret(getenv("DROPBOX_CLIENT_SECRET")),
		Folder:       getenv("DROPBOX_FOLDER"),
		Logger:       cfg.Logger,
	}
	if c.ClientID == "" || c.ClientSecret == "" {
		return nil, fmt.Errorf("%w: set DROPBOX_CLIENT_ID and DROPBOX_CLIENT_SECRET", connector.ErrUnavailable)
	}
	return NewPlugin(c)
}

// NewPlugin returns the plugin for c.
func NewPlugin(c Config) (*Plugin, error) {
	if c.ClientID == "" || c.ClientSecret == "" {
		return nil, fmt.Errorf("%w: client id and secret are required", connector.ErrUnavailable)
	}
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
		*v = strings.TrimRight(*v, "/")
	}
	def(&c.AuthURL, DefaultAuthURL)
	def(&c.TokenURL, DefaultTokenURL)
	def(&c.APIURL, DefaultAPIURL)
	def(&c.ContentURL, DefaultContentURL)
	def(&c.Folder, defaultFolder)
	if !strings.HasPrefix(c.Folder, "/") {
		return nil, fmt.Errorf("dropbox: folder %q must be an absolute path", c.Folder)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return &Plugin{c: c}, nil
}

// AuthType implements connector.Connector.
func (p *Plugin) AuthType(context.Context) (connector.AuthType, error) {
	return connector.AuthOAuth, nil
}

// OAuthInfo implements connector.OAuthConnector. token_access_type=offline
// asks Dropbox for a refresh token (short-lived access tokens otherwise
// end the login after four hours).
func (p *Plugin) OAuthInfo(context.Context, connector.OAuthInfoRequest) (connector.OAuthInfo, error) {
	return connector.OAuthInfo{
		ClientID: p.c.ClientID, ClientSecret: p.c.ClientSecret,
		AuthURL: p.c.AuthURL, TokenURL: p.c.TokenURL,
		AuthURLParams: map[string]string{"token_access_type": "offline"},
	}, nil
}

// UserInfo implements connector.Connector: POST /2/users/get_current_account.
func (p *Plugin) UserInfo(ctx context.Context, req connector.UserInfoRequest) (connector.UserInfoResult, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.c.APIURL+"/2/users/get_current_account", nil)
	if err != nil {
		return connector.UserInfoResult{}, err
	}
	hreq.Header.Set("Authorization", req.AuthHeader)
	resp, err := req.HTTPClient.Do(hreq)
	if err != nil {
		return connector.UserInfoResult{}, fmt.Errorf("dropbox: get_current_account: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusUnauthorized {
		return connector.UserInfoResult{Successful: false, ReturnMessage: &connector.ReturnMessage{
			Message: "Dropbox refused the login.", MessageType: connector.MessageWarning}}, nil
	}
	if resp.StatusCode != http.StatusOK {
		return connector.UserInfoResult{}, fmt.Errorf("dropbox: get_current_account answered %d", resp.StatusCode)
	}
	var acct struct {
		AccountID string `json:"account_id"`
		Name      struct {
			DisplayName string `json:"display_name"`
		} `json:"name"`
	}
	if err := json.Unmarshal(body, &acct); err != nil || acct.AccountID == "" {
		return connector.UserInfoResult{}, errors.New("dropbox: get_current_account answered no account id")
	}
	return connector.UserInfoResult{Successful: true, User: connector.PlatformUser{ID: acct.AccountID, Name: acct.Name.DisplayName}}, nil
}

// Unauthorize implements connector.Unauthorizer: POST /2/auth/token/revoke.
func (p *Plugin) Unauthorize(ctx context.Context, req connector.UserRequest) (connector.Result, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.c.APIURL+"/2/auth/token/revoke", nil)
	if err != nil {
		return connector.Result{}, err
	}
	resp, err := req.HTTPClient.Do(hreq)
	if err != nil {
		return connector.Result{}, fmt.Errorf("dropbox: revoke: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	// 401: the token is already dead, which is what we wanted.
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnauthorized {
		return connector.Result{}, fmt.Errorf("dropbox: revoke answered %d", resp.StatusCode)
	}
	return connector.Result{Successful: true}, nil
}

// callData is the part of App Connect's data the summary uses.
type callData struct {
	LogInfo struct {
		ID        string `json:"id"`
		SessionID string `json:"sessionId"`
		Direction string `json:"direction"`
		StartTime any    `json:"startTime"`
		Duration  any    `json:"duration"`
		Result    string `json:"result"`
		From      struct {
			PhoneNumber string `json:"phoneNumber"`
			Name        string `json:"name"`
		} `json:"from"`
		To struct {
			PhoneNumber string `json:"phoneNumber"`
			Name        string `json:"name"`
		} `json:"to"`
	} `json:"logInfo"`
	ContactName string `json:"contactName"`
	Note        string `json:"note"`
}

// ProcessAsync writes the summary file. Dropbox's 401 (the login is dead)
// and 4xx answers are final; 429 and 5xx are retried by the engine.
func (p *Plugin) ProcessAsync(ctx context.Context, req connector.PluginRequest) (connector.PluginResult, error) {
	var d callData
	if err := json.Unmarshal(req.Data, &d); err != nil {
		return connector.PluginResult{}, fmt.Errorf("%w: data is not a call log", connector.ErrInvalidPayload)
	}
	if req.TaskID == "" {
		return connector.PluginResult{}, fmt.Errorf("%w: no task id", connector.ErrInvalidPayload)
	}
	path := p.c.Folder + "/call-" + safeName(req.TaskID) + ".txt"
	arg, err := apiArg(map[string]any{"path": path, "mode": "overwrite", "autorename": false, "mute": true, "strict_conflict": false})
	if err != nil {
		return connector.PluginResult{}, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.c.ContentURL+"/2/files/upload", bytes.NewReader(summary(d)))
	if err != nil {
		return connector.PluginResult{}, err
	}
	hreq.Header.Set("Content-Type", "application/octet-stream")
	hreq.Header.Set("Dropbox-API-Arg", arg)
	resp, err := req.HTTPClient.Do(hreq)
	if err != nil {
		return connector.PluginResult{}, fmt.Errorf("dropbox: upload: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusOK:
		var meta struct {
			PathDisplay string `json:"path_display"`
		}
		_ = json.Unmarshal(body, &meta)
		if meta.PathDisplay == "" {
			meta.PathDisplay = path
		}
		return connector.PluginResult{Successful: true, Message: "Call summary saved to Dropbox: " + meta.PathDisplay}, nil
	case resp.StatusCode == http.StatusUnauthorized:
		return connector.PluginResult{Successful: false, Message: "Dropbox refused the login. Connect Dropbox again in the plugin settings."}, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return connector.PluginResult{}, fmt.Errorf("dropbox: upload answered %d (will retry)", resp.StatusCode)
	default:
		return connector.PluginResult{Successful: false, Message: "Dropbox did not accept the file (HTTP " + strconv.Itoa(resp.StatusCode) + ")."}, nil
	}
}

// summary renders the call as text.
func summary(d callData) []byte {
	var b strings.Builder
	b.WriteString("Call summary\n============\n")
	line := func(k string, v any) {
		s := strings.TrimSpace(fmt.Sprint(v))
		if v == nil || s == "" || s == "<nil>" {
			return
		}
		fmt.Fprintf(&b, "%s: %s\n", k, s)
	}
	line("Contact", d.ContactName)
	line("Direction", d.LogInfo.Direction)
	line("From", strings.TrimSpace(d.LogInfo.From.Name+" "+d.LogInfo.From.PhoneNumber))
	line("To", strings.TrimSpace(d.LogInfo.To.Name+" "+d.LogInfo.To.PhoneNumber))
	if ms, ok := d.LogInfo.StartTime.(float64); ok {
		line("Start", time.UnixMilli(int64(ms)).UTC().Format(time.RFC3339))
	} else {
		line("Start", d.LogInfo.StartTime)
	}
	line("Duration (s)", d.LogInfo.Duration)
	line("Result", d.LogInfo.Result)
	line("Session", d.LogInfo.SessionID)
	if d.Note != "" {
		b.WriteString("\nNote\n----\n")
		b.WriteString(d.Note)
		b.WriteString("\n")
	}
	return []byte(b.String())
}

// safeName keeps a task id usable as a file name.
func safeName(id string) string {
	var b strings.Builder
	for _, r := range id {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteRune('_')
		}
	}
	if b.Len() > 100 {
		return b.String()[:100]
	}
	return b.String()
}

// apiArg encodes the Dropbox-API-Arg header: JSON with every non-ASCII
// character escaped as \uXXXX (HTTP headers carry ASCII only).
func apiArg(v any) (string, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, r := range string(raw) {
		switch {
		case r < 0x80:
			b.WriteRune(r)
		case r > 0xFFFF:
			r -= 0x10000
			fmt.Fprintf(&b, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String(), nil
}
