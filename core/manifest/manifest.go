// Package manifest loads, validates and serves App Connect manifests.
//
// A manifest is App Connect's JSON document (top level serverUrl,
// redirectUri, author, version, platforms{name: ...}). connectd reads only
// a few keys of each platform; everything else belongs to the App Connect
// client and is kept byte for byte, so what /crmManifest serves is the
// operator's manifest minus the server-side "connectd" blocks.
//
// Validation is a JSON Schema (manifests/schema/manifest.schema.json,
// draft-07) plus checks a schema cannot express; every problem of every
// file is reported at once, each with its file and JSON path. This package
// is the only importer of gojsonschema.
//
// Server-side settings live under platforms.<name>.connectd:
//
//	kind           "crm" (default) or "plugin"
//	refresh        {marginSeconds}: refresh tokens expiring within this
//	               margin (default 120)
//	oauth          {pkce}: false opts out of PKCE (default true)
//	hosts          host patterns ("api.example.com", "*.example.com") that
//	               user-influenced URLs must match
//	redirectUris   extra allowed client redirect URIs
//	fields         {<const>: {secret: false}}: marks a managed API-key
//	               field non-secret, so admin pages may show its value
//	               (managed values are write-only by default)
//	declarative    a manifest-only connector (see Declarative)
package manifest

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/connectd/connectd/core/connector"
)

// DefaultRefreshMargin is how long before expiry an access token is
// refreshed when the manifest does not say.
const DefaultRefreshMargin = 120 * time.Second

// Kind says what a platform is to connectd.
type Kind string

// The kinds.
const (
	KindCRM    Kind = "crm"
	KindPlugin Kind = "plugin"
)

// ManagedScope says who an admin-managed field value belongs to.
type ManagedScope string

// The managed scopes.
const (
	ScopeAccount ManagedScope = "account"
	ScopeUser    ManagedScope = "user"
)

// APIKeyConst is the const of the field that carries the credential itself.
const APIKeyConst = "apiKey"

// Document is the top level of one manifest file.
type Document struct {
	// File names the source ("manifests/pipedrive.json" or an operator
	// path); problems and errors use it.
	File        string `json:"-"`
	ServerURL   string `json:"serverUrl"`
	RedirectURI string `json:"redirectUri"`
	Author      Author `json:"author"`
	Version     string `json:"version"`

	// top holds the top-level members except platforms, in file order,
	// raw, for the client view.
	top []member
}

// Author is the manifest's author block.
type Author struct {
	Name       string `json:"name"`
	WebsiteURL string `json:"websiteUrl"`
}

// Platform is one platform of a manifest as the server reads it. The
// client-only keys are kept raw (see Set.ClientJSON).
type Platform struct {
	// Key is the platform's name under "platforms"; it is the connector
	// name everywhere in connectd.
	Key string `json:"-"`
	// Document is the manifest file the platform came from.
	Document *Document `json:"-"`

	Name          string       `json:"name"`
	DisplayName   string       `json:"displayName"`
	URLIdentifier string       `json:"urlIdentifier"`
	Environment   *Environment `json:"environment"`
	Auth          *Auth        `json:"auth"`

	// App Connect plugin fields (contract B manifest URLs and flags).
	ShowAuthorizationButton bool     `json:"showAuthorizationButton"`
	IsAsync                 bool     `json:"isAsync"`
	RequireLicense          bool     `json:"requireLicense"`
	SupportedLogTypes       []string `json:"supportedLogTypes"`
	EndpointURL             string   `json:"endpointUrl"`
	UserRegisterEndpointURL string   `json:"userRegisterEndpointUrl"`
	LicenseStatusURL        string   `json:"licenseStatusUrl"`
	TokenSyncURL            string   `json:"tokenSyncUrl"`
	AuthorizationURL        string   `json:"authorizationUrl"`
	AuthStateURL            string   `json:"authStateUrl"`
	LogoutURL               string   `json:"logoutUrl"`

	// Connectd is the server-side block (zero when absent).
	Connectd Connectd `json:"connectd"`

	// client is the platform's raw JSON without "connectd".
	client json.RawMessage
}

// Environment is App Connect's environment block: how the client finds
// the user's CRM host.
type Environment struct {
	Type          string      `json:"type"` // fixed | dynamic | selectable
	URL           string      `json:"url"`
	URLIdentifier string      `json:"urlIdentifier"`
	Selections    []Selection `json:"selections"`
}

// Selection is one choice of a selectable environment.
type Selection struct {
	Const string `json:"const"`
	Name  string `json:"name"`
}

// Auth is the platform's auth block.
type Auth struct {
	Type   connector.AuthType `json:"type"`
	OAuth  *ClientOAuth       `json:"oauth"`
	APIKey *APIKeyAuth        `json:"apiKey"`
}

// ClientOAuth is auth.oauth: client-visible values only (secrets never go
// in a manifest).
type ClientOAuth struct {
	AuthURL     string `json:"authUrl"`
	ClientID    string `json:"clientId"`
	RedirectURI string `json:"redirectUri"`
	// Scope is a raw query fragment, e.g. "scope=contacts.read".
	Scope       string `json:"scope"`
	CustomState string `json:"customState"`
}

// APIKeyAuth is auth.apiKey.
type APIKeyAuth struct {
	Page APIKeyPage `json:"page"`
}

// APIKeyPage is the API-key form the client renders.
type APIKeyPage struct {
	Title   string  `json:"title"`
	Warning string  `json:"warning"`
	Content []Field `json:"content"`
}

// Field is one API-key form field.
type Field struct {
	Const            string          `json:"const"`
	Title            string          `json:"title"`
	Type             string          `json:"type"`
	Required         bool            `json:"required"`
	Description      string          `json:"description"`
	UISchema         json.RawMessage `json:"uiSchema,omitempty"`
	Default          json.RawMessage `json:"default,omitempty"`
	Managed          bool            `json:"managed"`
	ManagedScope     ManagedScope    `json:"managedScope"`
	Hidden           bool            `json:"hidden"`
	ManagedFieldType string          `json:"managedFieldType"` // input | dynamic
	// Secret is connectd's: managed values are write-only (never shown
	// back to admins) unless connectd.fields.<const>.secret is false. Set
	// by the loader; the field with const "apiKey" is always secret.
	Secret bool `json:"-"`
}

// Connectd is platforms.<name>.connectd.
type Connectd struct {
	Kind         Kind                     `json:"kind"`
	Refresh      *RefreshSettings         `json:"refresh"`
	OAuth        *OAuthSettings           `json:"oauth"`
	Hosts        []string                 `json:"hosts"`
	RedirectURIs []string                 `json:"redirectUris"`
	Fields       map[string]FieldSettings `json:"fields"`
	Declarative  *Declarative             `json:"declarative"`
}

// RefreshSettings is connectd.refresh.
type RefreshSettings struct {
	MarginSeconds *int `json:"marginSeconds"`
}

// OAuthSettings is connectd.oauth.
type OAuthSettings struct {
	PKCE *bool `json:"pkce"`
}

// FieldSettings is connectd.fields.<const>.
type FieldSettings struct {
	Secret *bool `json:"secret"`
}

// Declarative is connectd.declarative: a connector defined by its manifest
// alone. Exactly one of OAuth and APIKey is set, matching auth.type.
type Declarative struct {
	OAuth    *DeclarativeOAuth  `json:"oauth"`
	APIKey   *DeclarativeAPIKey `json:"apiKey"`
	UserInfo DeclarativeUser    `json:"userInfo"`
	// Validate makes authValidation call user info.
	Validate bool `json:"validate"`
}

// DeclarativeOAuth is a declarative connector's OAuth client. URLs may
// contain {{hostname}}, which must then match connectd.hosts.
type DeclarativeOAuth struct {
	AuthorizationURL string   `json:"authorizationUrl"`
	TokenURL         string   `json:"tokenUrl"`
	RevocationURL    string   `json:"revocationUrl"`
	ClientIDEnv      string   `json:"clientIdEnv"`
	ClientSecretEnv  string   `json:"clientSecretEnv"`
	Scopes           []string `json:"scopes"`
	PKCE             *bool    `json:"pkce"`
	// ClientAuth is "basic" (default) or "body".
	ClientAuth string `json:"clientAuth"`
}

// ClientAuthMethod returns ClientAuth with its default applied.
func (o *DeclarativeOAuth) ClientAuthMethod() string {
	if o.ClientAuth == "" {
		return "basic"
	}
	return o.ClientAuth
}

// DeclarativeAPIKey says how a declarative connector sends the API key.
type DeclarativeAPIKey struct {
	// Header defaults to Authorization.
	Header string `json:"header"`
	// Scheme is "Basic", "Bearer" or "none" (the bare key).
	Scheme string `json:"scheme"`
}

// HeaderName returns Header with its default applied.
func (a *DeclarativeAPIKey) HeaderName() string {
	if a.Header == "" {
		return "Authorization"
	}
	return a.Header
}

// DeclarativeUser is how a declarative connector reads user info: dot
// paths into the JSON answer of URL.
type DeclarativeUser struct {
	URL string `json:"url"`
	// Method defaults to GET.
	Method       string `json:"method"`
	IDPath       string `json:"idPath"`
	NamePath     string `json:"namePath"`
	TimezonePath string `json:"timezonePath"`
}

// HTTPMethod returns Method with its default applied.
func (u *DeclarativeUser) HTTPMethod() string {
	if u.Method == "" {
		return "GET"
	}
	return u.Method
}

// Kind returns the platform's kind (crm when unset).
func (p *Platform) Kind() Kind {
	if p.Connectd.Kind == "" {
		return KindCRM
	}
	return p.Connectd.Kind
}

// AuthType returns auth.type, or "" when the platform has no auth block
// (a plugin without third-party login).
func (p *Platform) AuthType() connector.AuthType {
	if p.Auth == nil {
		return ""
	}
	return p.Auth.Type
}

// IsDeclarative reports whether the platform defines its connector in the
// manifest (connectd.declarative).
func (p *Platform) IsDeclarative() bool { return p.Connectd.Declarative != nil }

// RefreshMargin is how long before expiry an access token is refreshed.
func (p *Platform) RefreshMargin() time.Duration {
	if r := p.Connectd.Refresh; r != nil && r.MarginSeconds != nil {
		return time.Duration(*r.MarginSeconds) * time.Second
	}
	return DefaultRefreshMargin
}

// PKCE reports whether OAuth logins use PKCE (S256). It is true unless
// connectd.oauth.pkce or connectd.declarative.oauth.pkce is false (the
// loader rejects the two disagreeing).
func (p *Platform) PKCE() bool {
	if o := p.Connectd.OAuth; o != nil && o.PKCE != nil {
		return *o.PKCE
	}
	if d := p.Connectd.Declarative; d != nil && d.OAuth != nil && d.OAuth.PKCE != nil {
		return *d.OAuth.PKCE
	}
	return true
}

// Hosts returns the host patterns user-influenced URLs must match.
func (p *Platform) Hosts() []string { return slices.Clone(p.Connectd.Hosts) }

// HostAllowed reports whether host matches one of the platform's host
// patterns (see HostAllowed).
func (p *Platform) HostAllowed(host string) bool { return HostAllowed(p.Connectd.Hosts, host) }

// RedirectURIs returns the client redirect URIs this platform allows: the
// manifest's top-level redirectUri, the platform's auth.oauth.redirectUri
// and connectd.redirectUris, without empties and duplicates. The engine
// adds CONNECTD_REDIRECT_URIS.
func (p *Platform) RedirectURIs() []string {
	var out []string
	add := func(u string) {
		if u != "" && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	if p.Document != nil {
		add(p.Document.RedirectURI)
	}
	if p.Auth != nil && p.Auth.OAuth != nil {
		add(p.Auth.OAuth.RedirectURI)
	}
	for _, u := range p.Connectd.RedirectURIs {
		add(u)
	}
	return out
}

// APIKeyFields returns the API-key form fields (nil for OAuth platforms),
// with Secret set.
func (p *Platform) APIKeyFields() []Field {
	if p.Auth == nil || p.Auth.APIKey == nil {
		return nil
	}
	return slices.Clone(p.Auth.APIKey.Page.Content)
}

// Field returns the API-key field with the given const.
func (p *Platform) Field(constName string) (Field, bool) {
	if p.Auth == nil || p.Auth.APIKey == nil {
		return Field{}, false
	}
	for _, f := range p.Auth.APIKey.Page.Content {
		if f.Const == constName {
			return f, true
		}
	}
	return Field{}, false
}

// ClientJSON returns the platform's JSON as the client sees it: the file's
// bytes for every key, without "connectd".
func (p *Platform) ClientJSON() []byte { return slices.Clone(p.client) }

// applyDefaults fills the values the loader derives.
func (p *Platform) applyDefaults() {
	if p.Auth == nil || p.Auth.APIKey == nil {
		return
	}
	for i := range p.Auth.APIKey.Page.Content {
		f := &p.Auth.APIKey.Page.Content[i]
		if f.Managed && f.ManagedScope == "" {
			f.ManagedScope = ScopeAccount
		}
		f.Secret = true
		if s, ok := p.Connectd.Fields[f.Const]; ok && s.Secret != nil && f.Const != APIKeyConst {
			f.Secret = *s.Secret
		}
	}
}

// hasHostTemplate reports whether s uses the {{hostname}} placeholder.
func hasHostTemplate(s string) bool { return strings.Contains(s, hostnamePlaceholder) }

const hostnamePlaceholder = "{{hostname}}"
