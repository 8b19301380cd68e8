package app

import (
	"bytes"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	democonn "github.com/connectd/connectd/connectors/demo"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/server"
	"github.com/connectd/connectd/server/config"
	"github.com/connectd/connectd/server/console"
	democrm "github.com/connectd/connectd/server/demo"
)

// The demo (CONNECTD_DEMO=true, what `make run` sets): connectd serves a
// fake CRM under /demo/crm/ and loads two demo connectors whose manifest
// points at it through CONNECTD_PUBLIC_URL. With the flag unset none of it
// exists: no /demo/ route, no demo manifest, no demo connector.
//
// Reaching the demo CRM means the engine's outbound clients must call this
// server's own loopback listener, which the SSRF guard forbids. The demo
// therefore allows private URLs for the engine's CRM clients (token,
// refresh, revoke and connector calls; not identity, plugin or Blink
// calls), and refuses to start unless the server listens ONLY on loopback
// and its public URL is a loopback URL: a demo server cannot be reached
// from the network, so nobody else can steer its requests. It is a
// developer's machine setting, never a production one.

// demoCheck refuses the demo anywhere but on a loopback-only server.
func demoCheck(cfg *config.Config) error {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil || !loopbackHost(host) {
		return fmt.Errorf("CONNECTD_DEMO: the demo runs only on a loopback listener (CONNECTD_ADDR=127.0.0.1:PORT), not %q: it lets connectd call itself over loopback", cfg.Addr)
	}
	u, err := url.Parse(cfg.PublicURL)
	if err != nil || !loopbackHost(u.Hostname()) {
		return fmt.Errorf("CONNECTD_DEMO: the demo needs a loopback CONNECTD_PUBLIC_URL (such as http://localhost:8080), not %q", cfg.PublicURL)
	}
	return nil
}

func loopbackHost(h string) bool {
	h = strings.ToLower(h)
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// withDemo adds the demo manifest and connectors (Build, when cfg.Demo).
func withDemo(cfg *config.Config, manifestFS fs.FS, connectors map[string]connector.Factory) (fs.FS, map[string]connector.Factory, error) {
	if err := demoCheck(cfg); err != nil {
		return nil, nil, err
	}
	doc, err := democonn.Manifest(cfg.PublicURL)
	if err != nil {
		return nil, nil, err
	}
	if _, err := fs.Stat(manifestFS, democonn.ManifestName); err == nil {
		return nil, nil, fmt.Errorf("CONNECTD_DEMO: the manifests already hold a file named %s", democonn.ManifestName)
	}
	all := maps.Clone(connectors)
	if all == nil {
		all = map[string]connector.Factory{}
	}
	for name, f := range democonn.Factories(cfg.PublicURL) {
		if _, dup := all[name]; dup {
			return nil, nil, fmt.Errorf("CONNECTD_DEMO: the connector map already has a connector named %q", name)
		}
		all[name] = f
	}
	return overlayFS{base: manifestFS, name: democonn.ManifestName, data: doc}, all, nil
}

// demoSurfaces are the demo's routes (Wire, when cfg.Demo).
func demoSurfaces(d *Deps) ([]server.Surface, error) {
	crm, err := democrm.New(democrm.Options{PublicURL: d.Config.PublicURL, Clock: d.Clock, Logger: d.Logger.Named("demo")})
	if err != nil {
		return nil, err
	}
	return []server.Surface{crm}, nil
}

// consoleSurface is /console, on every server (it logs in to real
// connectors too); demo connectors are labelled when the demo is on.
func consoleSurface(d *Deps, eng *Engine) (server.Surface, error) {
	isDemo := func(string) bool { return false }
	if d.Config.Demo {
		isDemo = democonn.IsDemo
	}
	return console.New(console.Options{
		Engine:    eng.Auth,
		Refresher: eng.Refresh,
		Users:     d.Store,
		Sessions:  d.Sessions,
		Connect:   eng.Connect,
		Registry:  d.Registry,
		PublicURL: d.Config.PublicURL,
		Demo:      isDemo,
		Clock:     d.Clock,
		Logger:    d.Logger.Named("console"),
	})
}

// overlayFS is base plus one extra file at its root.
type overlayFS struct {
	base fs.FS
	name string
	data []byte
}

// Open implements fs.FS.
func (o overlayFS) Open(name string) (fs.File, error) {
	if name == o.name {
		return &memFile{info: memInfo{name: o.name, size: int64(len(o.data))}, r: bytes.NewReader(o.data)}, nil
	}
	return o.base.Open(name)
}

// ReadFile implements fs.ReadFileFS.
func (o overlayFS) ReadFile(name string) ([]byte, error) {
	if name == o.name {
		return slices.Clone(o.data), nil
	}
	return fs.ReadFile(o.base, name)
}

// Glob implements fs.GlobFS (manifest.Load lists "*.json").
func (o overlayFS) Glob(pattern string) ([]string, error) {
	names, err := fs.Glob(o.base, pattern)
	if err != nil {
		return nil, err
	}
	ok, err := path.Match(pattern, o.name)
	if err != nil {
		return nil, err
	}
	if ok && !slices.Contains(names, o.name) {
		names = append(names, o.name)
		slices.Sort(names)
	}
	return names, nil
}

type memFile struct {
	info memInfo
	r    *bytes.Reader
}

func (f *memFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *memFile) Read(p []byte) (int, error) {
	if f.r == nil {
		return 0, fs.ErrClosed
	}
	return f.r.Read(p)
}
func (f *memFile) Close() error {
	if f.r == nil {
		return fs.ErrClosed
	}
	f.r = nil
	return nil
}

type memInfo struct {
	name string
	size int64
}

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) Mode() fs.FileMode  { return 0o444 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

var (
	_ fs.ReadFileFS = overlayFS{}
	_ fs.GlobFS     = overlayFS{}
	_ fs.File       = (*memFile)(nil)
)
