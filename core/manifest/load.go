package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
)

// maxManifestSize bounds one manifest file; the production App Connect
// manifest with nine platforms is about 100 KB.
const maxManifestSize = 8 << 20

// EmbeddedPrefix labels embedded manifest files in problems and errors.
const EmbeddedPrefix = "manifests/"

// Load reads the embedded manifests (every *.json at the root of fsys,
// in name order, labelled "manifests/<name>") and, when operatorDir is not
// empty, every *.json file of that directory (CONNECTD_MANIFESTS_DIR), and
// merges them into one Set. A platform name defined twice, e.g. by an
// operator manifest and an embedded one, is an error. The returned error
// is an *Error listing every problem of every file.
func Load(fsys fs.FS, operatorDir string) (*Set, error) {
	files, err := readFS(fsys, EmbeddedPrefix)
	if err != nil {
		return nil, err
	}
	if operatorDir != "" {
		op, err := readDir(operatorDir)
		if err != nil {
			return nil, err
		}
		files = append(files, op...)
	}
	return finish(build(files))
}

// LoadDir reads every *.json file of dir (in name order) into one Set.
func LoadDir(dir string) (*Set, error) {
	files, err := readDir(dir)
	if err != nil {
		return nil, err
	}
	return finish(build(files))
}

// LoadFile reads one manifest file.
func LoadFile(name string) (*Set, error) {
	data, err := readFile(name)
	if err != nil {
		return nil, err
	}
	return finish(build([]file{{name: name, data: data}}))
}

// Parse reads one manifest document from memory; name labels problems.
func Parse(name string, data []byte) (*Set, error) {
	return finish(build([]file{{name: name, data: data}}))
}

// ValidateFiles validates manifest files as `connectd manifest validate`
// does: each file on its own and, together, no platform defined twice.
// It returns every problem (nil when all are valid); a file that cannot be
// read is a problem too.
func ValidateFiles(paths []string) []Problem {
	var files []file
	var ps []Problem
	for _, p := range paths {
		data, err := readFile(p)
		if err != nil {
			ps = append(ps, Problem{File: p, Message: err.Error()})
			continue
		}
		files = append(files, file{name: p, data: data})
	}
	_, more := build(files)
	ps = append(ps, more...)
	sortProblems(ps)
	return ps
}

func finish(set *Set, ps []Problem) (*Set, error) {
	if len(ps) > 0 {
		sortProblems(ps)
		return nil, &Error{Problems: ps}
	}
	return set, nil
}

type file struct {
	name string
	data []byte
}

func readFS(fsys fs.FS, prefix string) ([]file, error) {
	names, err := fs.Glob(fsys, "*.json")
	if err != nil {
		return nil, fmt.Errorf("manifest: list manifests: %w", err)
	}
	sort.Strings(names)
	files := make([]file, 0, len(names))
	for _, n := range names {
		data, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, fmt.Errorf("manifest: read %s: %w", path.Join(prefix, n), err)
		}
		files = append(files, file{name: prefix + n, data: data})
	}
	return files, nil
}

func readDir(dir string) ([]file, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("manifest: manifests directory: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("manifest: list %s: %w", dir, err)
	}
	sort.Strings(names)
	files := make([]file, 0, len(names))
	for _, n := range names {
		data, err := readFile(n)
		if err != nil {
			return nil, err
		}
		files = append(files, file{name: n, data: data})
	}
	return files, nil
}

func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("manifest: read %s: %w", name, err)
	}
	if len(data) > maxManifestSize {
		return nil, fmt.Errorf("manifest: %s is larger than %d bytes", name, maxManifestSize)
	}
	return data, nil
}

// build parses and checks files and merges them into a Set; the Set is
// only meaningful when no problem is returned.
func build(files []file) (*Set, []Problem) {
	set := &Set{platforms: map[string]*Platform{}}
	var all []Problem
	for _, f := range files {
		doc, plats, ps := parseFile(f.name, f.data)
		all = append(all, ps...)
		if doc == nil {
			continue
		}
		set.docs = append(set.docs, doc)
		for _, p := range plats {
			if prev, dup := set.platforms[p.Key]; dup {
				all = append(all, Problem{
					File:    f.name,
					Path:    jsonPath("platforms", p.Key),
					Message: fmt.Sprintf("platform %q is already defined by %s", p.Key, prev.Document.File),
				})
				continue
			}
			set.platforms[p.Key] = p
			set.order = append(set.order, p)
		}
	}
	set.finish()
	return set, all
}

// parseFile parses and checks one manifest document.
func parseFile(name string, data []byte) (*Document, []*Platform, []Problem) {
	ps := &problems{file: name}
	if len(data) > maxManifestSize {
		ps.add("", "larger than %d bytes", maxManifestSize)
		return nil, nil, ps.list
	}
	if msg, ok := syntaxProblem(data); !ok {
		ps.add("", "%s", msg)
		return nil, nil, ps.list
	}
	top, err := objectMembers(data)
	if err != nil {
		ps.add("", "a manifest must be a JSON object")
		return nil, nil, ps.list
	}
	if err := validateSchema(data, ps); err != nil {
		ps.add("", "%v", err)
		return nil, nil, ps.list
	}
	schemaOK := len(ps.list) == 0

	doc := &Document{File: name}
	var platformsRaw json.RawMessage
	seen := map[string]bool{}
	for _, m := range top {
		if seen[m.key] {
			ps.add(jsonPath(m.key), "duplicate key")
		}
		seen[m.key] = true
		if m.key == "platforms" {
			platformsRaw = m.value
			continue
		}
		doc.top = append(doc.top, m)
	}
	// Best effort: a wrongly typed top-level key was reported by the schema.
	var head struct {
		ServerURL   *string `json:"serverUrl"`
		RedirectURI *string `json:"redirectUri"`
		Author      *Author `json:"author"`
		Version     *string `json:"version"`
	}
	for _, m := range doc.top {
		switch m.key {
		case "serverUrl":
			_ = json.Unmarshal(m.value, &head.ServerURL)
		case "redirectUri":
			_ = json.Unmarshal(m.value, &head.RedirectURI)
		case "author":
			_ = json.Unmarshal(m.value, &head.Author)
		case "version":
			_ = json.Unmarshal(m.value, &head.Version)
		}
	}
	if head.ServerURL != nil {
		doc.ServerURL = *head.ServerURL
	}
	if head.RedirectURI != nil {
		doc.RedirectURI = *head.RedirectURI
	}
	if head.Author != nil {
		doc.Author = *head.Author
	}
	if head.Version != nil {
		doc.Version = *head.Version
	}

	var plats []*Platform
	if platformsRaw != nil {
		members, err := objectMembers(platformsRaw)
		if err == nil {
			seenP := map[string]bool{}
			for _, m := range members {
				if seenP[m.key] {
					ps.add(jsonPath("platforms", m.key), "duplicate platform in this file")
					continue
				}
				seenP[m.key] = true
				p, err := parsePlatform(doc, m.key, m.value)
				if err != nil {
					if schemaOK {
						ps.add(jsonPath("platforms", m.key), "%v", err)
					}
					continue
				}
				checkPlatform(p, ps)
				plats = append(plats, p)
			}
		}
	}
	return doc, plats, ps.list
}

func parsePlatform(doc *Document, key string, raw json.RawMessage) (*Platform, error) {
	members, err := objectMembers(raw)
	if err != nil {
		return nil, errors.New("a platform must be a JSON object")
	}
	p := &Platform{Key: key, Document: doc}
	if err := json.Unmarshal(raw, p); err != nil {
		return nil, err
	}
	p.Key, p.Document = key, doc
	p.client = encodeMembers(members, "connectd")
	p.applyDefaults()
	return p, nil
}

// syntaxProblem reports invalid JSON with its line and column.
func syntaxProblem(data []byte) (string, bool) {
	if json.Valid(data) {
		return "", true
	}
	var v any
	err := json.Unmarshal(data, &v)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := lineCol(data, se.Offset)
		return fmt.Sprintf("invalid JSON at line %d, column %d: %s", line, col, se.Error()), false
	}
	if err == nil {
		err = errors.New("not valid JSON")
	}
	return "invalid JSON: " + err.Error(), false
}

// lineCol converts a byte offset (as json.SyntaxError reports: the number
// of bytes read before the error) to a 1-based line and column.
func lineCol(data []byte, offset int64) (int, int) {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	if offset < 1 {
		return 1, 1
	}
	before := data[:offset-1]
	line := bytes.Count(before, []byte{'\n'}) + 1
	col := len(before) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// member is one key of a JSON object with its raw value.
type member struct {
	key   string
	value json.RawMessage
}

// objectMembers splits a JSON object into its members, in order,
// keeping each value's bytes.
func objectMembers(data []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not an object")
	}
	var out []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("object key is not a string")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		out = append(out, member{key: key, value: raw})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	return out, nil
}

// encodeMembers writes members back as a JSON object, skipping the keys
// named in skip.
func encodeMembers(ms []member, skip ...string) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	for _, m := range ms {
		if slices.Contains(skip, m.key) {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		k, _ := json.Marshal(m.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(m.value)
	}
	b.WriteByte('}')
	return b.Bytes()
}
