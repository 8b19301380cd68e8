package plugin

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/store"
)

// unreadable is the answer when a licence source fails: App Connect shows
// licenseStatusDescription to the user and errorMessage to admins.
func unreadable() connector.PluginLicenseStatus {
	return connector.PluginLicenseStatus{
		LicenseStatus:            false,
		LicenseStatusDescription: "The licence could not be read right now. Please try again in a few minutes.",
		ErrorMessage:             "Licence status unavailable",
	}
}

// License answers a plugin's licence status. host nil (or without an
// account) asks for the plugin-level status. Sources, first that answers:
// the operator's per-account row (connectd license set), the plugin's own
// PluginLicenser, the static licence configured for the plugin, and last
// the manifest: a plugin without requireLicense is licensed. Answers are
// cached for LicenseCacheTTL; failures are not cached and say so in the
// description.
func (s *Service) License(ctx context.Context, p *Plugin, host *store.HostIdentity, ownerKey string) connector.PluginLicenseStatus {
	var kind, account string
	if host != nil {
		kind, account = host.Kind, host.AccountID
	}
	key := p.ID + "\x00" + kind + "\x00" + account + "\x00" + ownerKey
	if v, ok := s.lic.get(key); ok {
		return v
	}
	v, err := s.license(ctx, p, kind, account, ownerKey)
	if err != nil {
		s.log.Warn("licence could not be read", "plugin", p.ID, "error", err)
		return unreadable()
	}
	s.lic.put(key, v)
	return v
}

func (s *Service) license(ctx context.Context, p *Plugin, kind, account, ownerKey string) (connector.PluginLicenseStatus, error) {
	if account != "" {
		l, err := s.o.Store.GetLicense(ctx, p.ID, kind, account)
		switch {
		case err == nil:
			return fromRow(l, s.o.Clock.Now()), nil
		case !errors.Is(err, store.ErrNotFound):
			return connector.PluginLicenseStatus{}, fmt.Errorf("plugin: read licence: %w", err)
		}
	}
	if lc, ok := p.Connector.(connector.PluginLicenser); ok {
		req := connector.PluginLicenseRequest{HTTPClient: s.o.HTTP, PluginID: p.ID, HostKind: kind, HostAccountID: account}
		if ownerKey != "" && p.NeedsLogin() {
			if u, err := s.Login(ctx, p.ID, ownerKey); err == nil && u != nil && s.o.Credentials != nil {
				req.HTTPClient = s.o.Credentials.HTTPClient(u.ID)
				req.Login = pluginLogin(u)
			}
		}
		st, err := lc.PluginLicense(ctx, req)
		if err != nil {
			return connector.PluginLicenseStatus{}, fmt.Errorf("plugin: plugin licence: %w", err)
		}
		return st, nil
	}
	if st, ok := s.o.StaticLicenses[p.ID]; ok {
		return st, nil
	}
	if !p.Platform.RequireLicense {
		return connector.PluginLicenseStatus{LicenseStatus: true, LicenseStatusDescription: "No licence required."}, nil
	}
	return connector.PluginLicenseStatus{
		LicenseStatus:            false,
		LicenseStatusDescription: "No licence found for this account. Ask your administrator to add one.",
		ErrorMessage:             "Licence missing",
	}, nil
}

func fromRow(l *store.License, now time.Time) connector.PluginLicenseStatus {
	st := connector.PluginLicenseStatus{LicenseStatus: l.Valid, LicenseStatusDescription: l.Description, ErrorMessage: l.ErrorMessage}
	if l.Valid && l.ValidUntil != nil && !now.Before(*l.ValidUntil) {
		st.LicenseStatus = false
		st.LicenseStatusDescription = fmt.Sprintf("Licence expired on %s.", l.ValidUntil.UTC().Format("2006-01-02"))
		if st.ErrorMessage == "" {
			st.ErrorMessage = "Licence expired"
		}
	}
	if st.LicenseStatusDescription == "" {
		if st.LicenseStatus {
			st.LicenseStatusDescription = "Licensed."
		} else {
			st.LicenseStatusDescription = "No valid licence for this account."
		}
	}
	return st
}

// licenseCache is a small TTL cache, per Service.
type licenseCache struct {
	ttl   time.Duration
	clock clock.Clock
	mu    sync.Mutex
	m     map[string]licenseEntry
}

type licenseEntry struct {
	v   connector.PluginLicenseStatus
	exp time.Time
}

const maxLicenseEntries = 10000

func newLicenseCache(ttl time.Duration, c clock.Clock) *licenseCache {
	return &licenseCache{ttl: ttl, clock: c, m: map[string]licenseEntry{}}
}

func (c *licenseCache) get(k string) (connector.PluginLicenseStatus, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || !c.clock.Now().Before(e.exp) {
		return connector.PluginLicenseStatus{}, false
	}
	return e.v, true
}

func (c *licenseCache) put(k string, v connector.PluginLicenseStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxLicenseEntries {
		clear(c.m)
	}
	c.m[k] = licenseEntry{v: v, exp: c.clock.Now().Add(c.ttl)}
}
