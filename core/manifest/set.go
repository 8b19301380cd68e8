package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
)

// Set is every loaded platform, by name. It is immutable once loaded and
// safe for concurrent use.
type Set struct {
	docs      []*Document
	platforms map[string]*Platform
	order     []*Platform // load order: file order, then order in file
	names     []string    // sorted
	client    []byte      // ClientManifest, computed once
}

// ErrUnknownPlatform is returned (wrapped) for a platform name the Set does
// not hold.
var ErrUnknownPlatform = errors.New("manifest: unknown platform")

func (s *Set) finish() {
	s.names = make([]string, 0, len(s.platforms))
	for n := range s.platforms {
		s.names = append(s.names, n)
	}
	sort.Strings(s.names)
	s.client = s.buildClientManifest()
}

// Names returns the platform names, sorted.
func (s *Set) Names() []string { return slices.Clone(s.names) }

// Platform returns the named platform.
func (s *Set) Platform(name string) (*Platform, bool) {
	p, ok := s.platforms[name]
	return p, ok
}

// Platforms returns every platform in load order (embedded files by name,
// then operator files by name; within a file, file order).
func (s *Set) Platforms() []*Platform { return slices.Clone(s.order) }

// Documents returns the loaded manifest files' top levels, in load order.
func (s *Set) Documents() []*Document { return slices.Clone(s.docs) }

// ClientJSON returns the manifest App Connect's /crmManifest?platformName=
// serves for one platform: the top-level keys of the file that defines it
// (serverUrl, redirectUri, author, version and any other, untouched) and
// "platforms" holding only that platform, without its "connectd" block.
func (s *Set) ClientJSON(platform string) ([]byte, error) {
	p, ok := s.platforms[platform]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownPlatform, platform)
	}
	top := p.Document.top
	return encodeManifest(top, []*Platform{p}), nil
}

// ClientManifest returns the merged manifest /crmManifest serves without a
// platform name: every platform of every file in load order, without
// "connectd" blocks. Top-level keys come from the first file (in load
// order) that has each key; the serving surface may override serverUrl.
func (s *Set) ClientManifest() ([]byte, error) { return slices.Clone(s.client), nil }

func (s *Set) buildClientManifest() []byte {
	var top []member
	seen := map[string]bool{}
	for _, d := range s.docs {
		for _, m := range d.top {
			if !seen[m.key] {
				seen[m.key] = true
				top = append(top, m)
			}
		}
	}
	return encodeManifest(top, s.order)
}

func encodeManifest(top []member, plats []*Platform) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for _, m := range top {
		k, _ := json.Marshal(m.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(m.value)
		b.WriteByte(',')
	}
	b.WriteString(`"platforms":{`)
	for i, p := range plats {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(p.Key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(p.client)
	}
	b.WriteString("}}")
	return b.Bytes()
}
