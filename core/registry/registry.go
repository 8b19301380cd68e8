// Package registry maps platform names to their connector and manifest.
// It builds every connector once at start and refuses to start, with one
// message listing every problem, when connectors and manifests disagree: a
// manifest platform without a connector, a connector without a manifest,
// an auth type the connector does not implement. A connector whose
// configuration is incomplete (its factory returns connector.ErrUnavailable)
// is listed as unavailable instead, so the server still starts.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/manifest"
)

// DeclarativeFactory builds a connector from a platform whose manifest
// carries connectd.declarative (a manifest-only connector). cfg is the
// same configuration a Go connector's Factory receives.
type DeclarativeFactory func(p *manifest.Platform, cfg connector.Config) (connector.Connector, error)

// Config configures New.
type Config struct {
	// Getenv is handed to every connector factory (client ids, secrets).
	// Nil reads nothing (every variable is empty).
	Getenv func(string) string
	// Logger is the registry's own logger (a named child of the root).
	// Nil discards.
	Logger hclog.Logger
	// ConnectorLogger returns the logger handed to the connector of the
	// given platform (the contract uses *slog.Logger). Nil discards.
	ConnectorLogger func(platform string) *slog.Logger
	// Declarative builds the connectors of platforms whose manifest has
	// connectd.declarative and no Go factory. Nil lists such platforms
	// as unavailable.
	Declarative DeclarativeFactory
}

// Entry is one registered platform.
type Entry struct {
	// Name is the platform name (the manifest's key under "platforms").
	Name string
	// Connector is nil when Available is false.
	Connector connector.Connector
	// Platform is the manifest's view of the platform.
	Platform *manifest.Platform
	// Available is false when the connector's configuration is incomplete.
	Available bool
	// Reason says why the connector is unavailable (for operators; it never
	// holds a secret value, only which setting is missing).
	Reason string
}

// Registry is immutable after New and safe for concurrent use.
type Registry struct {
	entries map[string]Entry
	names   []string
}

// StartError lists every problem New found.
type StartError struct {
	Problems []string
}

// Error implements error.
func (e *StartError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "registry: connectors and manifests disagree (%d problems):", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p)
	}
	return b.String()
}

// New builds every connector of factories, pairs each with its manifest
// platform and checks them. ctx bounds the connectors' AuthType calls.
// Problems (as a *StartError): a platform without a connector (unless it
// is declarative), a connector without a platform, a Go connector for a
// declarative platform, a factory failing with anything but
// connector.ErrUnavailable, auth.type "oauth" on a connector that is not a
// connector.OAuthConnector (or "apiKey" and not a connector.APIKeyConnector),
// and AuthType disagreeing with auth.type.
func New(ctx context.Context, set *manifest.Set, factories map[string]connector.Factory, cfg Config) (*Registry, error) {
	if set == nil {
		return nil, errors.New("registry: no manifest set")
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	connLogger := cfg.ConnectorLogger
	if connLogger == nil {
		connLogger = func(string) *slog.Logger { return slog.New(slog.DiscardHandler) }
	}

	r := &Registry{entries: map[string]Entry{}}
	var problems []string
	addf := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	for _, name := range set.Names() {
		p, _ := set.Platform(name)
		factory, hasFactory := factories[name]
		ccfg := connector.Config{Name: name, Getenv: getenv, Logger: connLogger(name)}
		var (
			c   connector.Connector
			err error
		)
		switch {
		case hasFactory && p.IsDeclarative():
			addf("platform %q (%s) is declarative (connectd.declarative) and also has a Go connector: keep one", name, p.Document.File)
			continue
		case hasFactory:
			if factory == nil {
				addf("connector %q: nil factory", name)
				continue
			}
			c, err = factory(ccfg)
		case p.IsDeclarative() && cfg.Declarative != nil:
			c, err = cfg.Declarative(p, ccfg)
		case p.IsDeclarative():
			err = fmt.Errorf("%w: declarative connectors are not enabled in this build", connector.ErrUnavailable)
		default:
			addf("platform %q (%s) has no connector: add one to the connector map or remove the manifest", name, p.Document.File)
			continue
		}
		if err != nil {
			if errors.Is(err, connector.ErrUnavailable) {
				log.Warn("connector unavailable", "platform", name, "reason", err.Error())
				r.entries[name] = Entry{Name: name, Platform: p, Reason: err.Error()}
				continue
			}
			addf("connector %q: %v", name, err)
			continue
		}
		if c == nil {
			addf("connector %q: its factory returned no connector and no error", name)
			continue
		}
		if msgs := check(ctx, p, c); len(msgs) > 0 {
			for _, m := range msgs {
				addf("connector %q: %s", name, m)
			}
			continue
		}
		r.entries[name] = Entry{Name: name, Connector: c, Platform: p, Available: true}
	}
	var orphans []string
	for name := range factories {
		if _, ok := set.Platform(name); !ok {
			orphans = append(orphans, name)
		}
	}
	sort.Strings(orphans)
	for _, name := range orphans {
		addf("connector %q has no manifest: add manifests/%s.json (or a file in CONNECTD_MANIFESTS_DIR) defining platforms.%s", name, name, name)
	}
	if len(problems) > 0 {
		return nil, &StartError{Problems: problems}
	}
	for name := range r.entries {
		r.names = append(r.names, name)
	}
	sort.Strings(r.names)
	log.Debug("registry ready", "platforms", len(r.names))
	return r, nil
}

// check compares a built connector with its manifest.
func check(ctx context.Context, p *manifest.Platform, c connector.Connector) []string {
	want := p.AuthType()
	if want == "" {
		return nil // a plugin without third-party login
	}
	var msgs []string
	switch want {
	case connector.AuthOAuth:
		if _, ok := c.(connector.OAuthConnector); !ok {
			msgs = append(msgs, `manifest auth.type is "oauth" but the connector does not implement connector.OAuthConnector (OAuthInfo)`)
		}
	case connector.AuthAPIKey:
		if _, ok := c.(connector.APIKeyConnector); !ok {
			msgs = append(msgs, `manifest auth.type is "apiKey" but the connector does not implement connector.APIKeyConnector (BasicAuth)`)
		}
	}
	got, err := c.AuthType(ctx)
	switch {
	case err != nil:
		msgs = append(msgs, fmt.Sprintf("AuthType: %v", err))
	case got != want:
		msgs = append(msgs, fmt.Sprintf("AuthType returns %q but manifest auth.type is %q", got, want))
	}
	return msgs
}

// Get returns the named platform's entry. An unknown name is a
// failure.NotFound error; an unavailable connector returns its entry AND a
// failure.ConnectorUnavailable error (whose cause is the reason).
func (r *Registry) Get(name string) (Entry, error) {
	e, ok := r.entries[name]
	if !ok {
		return Entry{}, failure.Newf(failure.NotFound, "Platform not found.")
	}
	if !e.Available {
		label := e.Platform.DisplayName
		if label == "" {
			label = name
		}
		return e, failure.New(failure.ConnectorUnavailable,
			fmt.Sprintf("%s is not available on this server.", label), errors.New(e.Reason))
	}
	return e, nil
}

// List returns every entry, available or not, sorted by name.
func (r *Registry) List() []Entry {
	out := make([]Entry, 0, len(r.names))
	for _, n := range r.names {
		out = append(out, r.entries[n])
	}
	return out
}

// Names returns every platform name, sorted.
func (r *Registry) Names() []string {
	return append([]string(nil), r.names...)
}

// Implemented answers App Connect's /implementedInterfaces for a platform:
// App Connect's interface name -> whether the connector implements it.
// getAuthType and getUserInfo are always true; the others follow the
// connector's capabilities. Nil for an unknown or unavailable platform
// (check Get first).
func (r *Registry) Implemented(name string) map[string]bool {
	e, ok := r.entries[name]
	if !ok || !e.Available {
		return nil
	}
	return Implemented(e.Connector)
}

// Implemented maps a connector's capabilities to App Connect's interface
// names.
func Implemented(c connector.Connector) map[string]bool {
	_, oauth := c.(connector.OAuthConnector)
	_, apiKey := c.(connector.APIKeyConnector)
	_, unauth := c.(connector.Unauthorizer)
	_, override := c.(connector.TokenRequestOverrider)
	_, validate := c.(connector.AuthValidator)
	_, refreshInfo := c.(connector.UserInfoRefresher)
	_, license := c.(connector.LicenseChecker)
	_, managed := c.(connector.ManagedAuthOptioner)
	_, postSave := c.(connector.PostSaveHook)
	_, refresh := c.(connector.TokenRefresher)
	return map[string]bool{
		"getAuthType":                true,
		"getUserInfo":                true,
		"getOauthInfo":               oauth,
		"getBasicAuth":               apiKey,
		"unAuthorize":                unauth,
		"getOverridingOAuthOption":   override,
		"authValidation":             validate,
		"refreshUserInfo":            refreshInfo,
		"getLicenseStatus":           license,
		"getManagedAuthOptions":      managed,
		"postSaveUserInfo":           postSave,
		"checkAndRefreshAccessToken": refresh,
	}
}
