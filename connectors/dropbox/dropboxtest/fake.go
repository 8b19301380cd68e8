// Package dropboxtest is a fake of the parts of Dropbox's API v2 the
// dropbox plugin uses: OAuth 2 (authorization code with PKCE, refresh
// tokens for token_access_type=offline), users/get_current_account,
// files/upload (with its Dropbox-API-Arg header and write modes) and
// auth/token/revoke. It records what it was sent so tests can assert the
// requests, and can be told to fail uploads.
package dropboxtest

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"
)

// Account is the Dropbox account every login signs in as.
const (
	AccountID   = "dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc"
	DisplayName = "Franz Ferdinand"
)

// Upload is one files/upload request as received.
type Upload struct {
	Path, Mode  string
	Autorename  bool
	ContentType string
	Body        string
	Token       string
}

// Fake is a running fake Dropbox.
type Fake struct {
	srv              *httptest.Server
	clientID, secret string
	mu               sync.Mutex
	codes            map[string]codeGrant
	access           map[string]bool // token -> live
	refresh          map[string]bool
	files            map[string]string
	uploads          []Upload
	failUploads      int
	failStatus       int
	revoked          []string
	authorizeParams  []url.Values
	tokenRequests    []url.Values
}

type codeGrant struct{ redirectURI, challenge string }

// New starts a fake Dropbox with an OAuth app (clientID, secret).
func New(t testing.TB, clientID, secret string) *Fake {
	f := &Fake{clientID: clientID, secret: secret, codes: map[string]codeGrant{}, access: map[string]bool{},
		refresh: map[string]bool{}, files: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oauth2/authorize", f.authorize)
	mux.HandleFunc("POST /oauth2/token", f.token)
	mux.HandleFunc("POST /2/users/get_current_account", f.account)
	mux.HandleFunc("POST /2/files/upload", f.upload)
	mux.HandleFunc("POST /2/auth/token/revoke", f.revoke)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// URL is the base of every endpoint (auth, API and content).
func (f *Fake) URL() string { return f.srv.URL }

// AuthURL, TokenURL are the OAuth endpoints.
func (f *Fake) AuthURL() string  { return f.srv.URL + "/oauth2/authorize" }
func (f *Fake) TokenURL() string { return f.srv.URL + "/oauth2/token" }

// FailUploads makes the next n uploads answer status.
func (f *Fake) FailUploads(n, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failUploads, f.failStatus = n, status
}

// Files returns the stored files by path.
func (f *Fake) Files() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	for k, v := range f.files {
		out[k] = v
	}
	return out
}

// Uploads returns every upload request received (failed ones included).
func (f *Fake) Uploads() []Upload {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Upload(nil), f.uploads...)
}

// Revoked returns the access tokens revoked through the API.
func (f *Fake) Revoked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.revoked...)
}

// AuthorizeParams returns the query of every authorize request.
func (f *Fake) AuthorizeParams() []url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]url.Values(nil), f.authorizeParams...)
}

// TokenRequests returns the form of every token request.
func (f *Fake) TokenRequests() []url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]url.Values(nil), f.tokenRequests...)
}

// LiveAccessTokens counts unrevoked access tokens.
func (f *Fake) LiveAccessTokens() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, live := range f.access {
		if live {
			n++
		}
	}
	return n
}

func random(prefix string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// authorize signs the user in at once and redirects back with a code.
func (f *Fake) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f.mu.Lock()
	f.authorizeParams = append(f.authorizeParams, q)
	f.mu.Unlock()
	if q.Get("client_id") != f.clientID || q.Get("response_type") != "code" || q.Get("redirect_uri") == "" {
		http.Error(w, "invalid authorize request", http.StatusBadRequest)
		return
	}
	if q.Get("code_challenge") != "" && q.Get("code_challenge_method") != "S256" {
		http.Error(w, "only S256", http.StatusBadRequest)
		return
	}
	code := random("code-")
	f.mu.Lock()
	f.codes[code] = codeGrant{redirectURI: q.Get("redirect_uri"), challenge: q.Get("code_challenge")}
	f.mu.Unlock()
	u, err := url.Parse(q.Get("redirect_uri"))
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	v := u.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func (f *Fake) clientOK(r *http.Request) bool {
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	return subtle.ConstantTimeCompare([]byte(id), []byte(f.clientID)) == 1 &&
		subtle.ConstantTimeCompare([]byte(secret), []byte(f.secret)) == 1
}

func (f *Fake) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, 400, map[string]string{"error": "invalid_request"})
		return
	}
	f.mu.Lock()
	f.tokenRequests = append(f.tokenRequests, r.PostForm)
	f.mu.Unlock()
	if !f.clientOK(r) {
		writeJSON(w, 400, map[string]string{"error": "invalid_client"})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		g, ok := f.codes[r.PostForm.Get("code")]
		delete(f.codes, r.PostForm.Get("code"))
		if !ok || g.redirectURI != r.PostForm.Get("redirect_uri") {
			writeJSON(w, 400, map[string]string{"error": "invalid_grant"})
			return
		}
		if g.challenge != "" {
			sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
			if base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
				writeJSON(w, 400, map[string]string{"error": "invalid_grant", "error_description": "code_verifier"})
				return
			}
		}
		at, rt := random("sl.at-"), random("rt-")
		f.access[at], f.refresh[rt] = true, true
		writeJSON(w, 200, map[string]any{"access_token": at, "token_type": "bearer", "expires_in": 14400,
			"refresh_token": rt, "account_id": AccountID, "uid": "12345", "scope": "files.content.write account_info.read"})
	case "refresh_token":
		if !f.refresh[r.PostForm.Get("refresh_token")] {
			writeJSON(w, 400, map[string]string{"error": "invalid_grant"})
			return
		}
		at := random("sl.at-")
		f.access[at] = true
		// Dropbox does not rotate refresh tokens.
		writeJSON(w, 200, map[string]any{"access_token": at, "token_type": "bearer", "expires_in": 14400})
	default:
		writeJSON(w, 400, map[string]string{"error": "unsupported_grant_type"})
	}
}

// bearer returns the live token of the request, answering 401 itself.
func (f *Fake) bearer(w http.ResponseWriter, r *http.Request) (string, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	live := ok && f.access[tok]
	f.mu.Unlock()
	if !live {
		writeJSON(w, 401, map[string]any{"error_summary": "invalid_access_token/", "error": map[string]string{".tag": "invalid_access_token"}})
		return "", false
	}
	return tok, true
}

func (f *Fake) account(w http.ResponseWriter, r *http.Request) {
	if _, ok := f.bearer(w, r); !ok {
		return
	}
	writeJSON(w, 200, map[string]any{"account_id": AccountID, "name": map[string]string{"display_name": DisplayName},
		"email": "franz@dropbox.com", "email_verified": true, "disabled": false})
}

func (f *Fake) upload(w http.ResponseWriter, r *http.Request) {
	tok, ok := f.bearer(w, r)
	if !ok {
		return
	}
	var arg struct {
		Path       string `json:"path"`
		Mode       any    `json:"mode"`
		Autorename bool   `json:"autorename"`
	}
	raw := r.Header.Get("Dropbox-API-Arg")
	for _, c := range raw {
		if c > 0x7f {
			http.Error(w, "Dropbox-API-Arg must be ASCII", http.StatusBadRequest)
			return
		}
	}
	if err := json.Unmarshal([]byte(raw), &arg); err != nil || !strings.HasPrefix(arg.Path, "/") {
		http.Error(w, "Error in call to API function \"files/upload\": bad Dropbox-API-Arg", http.StatusBadRequest)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 150<<20))
	mode, _ := arg.Mode.(string)
	if mode == "" {
		mode = "add"
	}
	up := Upload{Path: arg.Path, Mode: mode, Autorename: arg.Autorename, ContentType: r.Header.Get("Content-Type"), Body: string(body), Token: tok}
	f.mu.Lock()
	f.uploads = append(f.uploads, up)
	if f.failUploads > 0 {
		f.failUploads--
		status := f.failStatus
		f.mu.Unlock()
		writeJSON(w, status, map[string]any{"error_summary": "internal_error/"})
		return
	}
	if up.ContentType != "application/octet-stream" {
		f.mu.Unlock()
		http.Error(w, "Bad HTTP \"Content-Type\" header", http.StatusBadRequest)
		return
	}
	if _, exists := f.files[strings.ToLower(arg.Path)]; exists && mode == "add" && !arg.Autorename {
		f.mu.Unlock()
		writeJSON(w, 409, map[string]any{"error_summary": "path/conflict/file/", "error": map[string]any{".tag": "path"}})
		return
	}
	f.files[strings.ToLower(arg.Path)] = up.Body
	f.mu.Unlock()
	writeJSON(w, 200, map[string]any{"name": path.Base(arg.Path), "path_lower": strings.ToLower(arg.Path),
		"path_display": arg.Path, "id": "id:" + random(""), "size": len(body), "is_downloadable": true})
}

func (f *Fake) revoke(w http.ResponseWriter, r *http.Request) {
	tok, ok := f.bearer(w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	f.access[tok] = false
	f.revoked = append(f.revoked, tok)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("null"))
}
