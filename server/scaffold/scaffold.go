// Package scaffold implements `connectd connector new NAME --auth
// oauth|apiKey`: it writes a connector package (connectors/NAME/NAME.go),
// its conformance test (connectors/NAME/NAME_test.go, using the kit in
// core/connectortest/conformance), its manifest (manifests/NAME.json) and
// the one-line registration in connectors/connectors.go. Everything it
// writes compiles and passes as generated; the author then replaces the
// placeholder endpoints with the service's documented ones.
//
// It never overwrites: an existing package directory, manifest or
// registration is an error, and nothing is written unless everything can
// be.
package scaffold

import (
	"bytes"
	"embed"
	"errors"
	"flag"
	"fmt"
	"go/format"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
)

//go:embed templates/*.tmpl
var templates embed.FS

// usage is the command's help text.
const usage = `Usage: connectd connector new NAME --auth oauth|apiKey [--root DIR]

Writes connectors/NAME/NAME.go, connectors/NAME/NAME_test.go (the
conformance kit), manifests/NAME.json and the registration line in
connectors/connectors.go, below the module root (default: the current
directory). NAME is the platform name: lower-case letters and digits,
starting with a letter.
`

// nameRE is a platform name that is also a Go package name.
var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]{1,39}$`)

// data fills the templates.
type data struct {
	Name        string // platform and package name
	Display     string // display name
	Env         string // environment variable prefix
	DefaultBase string // placeholder API base URL
}

// file is one file to write.
type file struct {
	path string
	body []byte
}

// ScaffoldCommand runs `connectd connector new` with args (everything
// after "new"). root is the module root (the directory holding go.mod);
// --root overrides it. It returns the exit status: 0 done, 1 the files
// could not be written, 2 bad usage.
func ScaffoldCommand(args []string, root string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("connectd connector new", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	auth := fs.String("auth", "", "oauth or apiKey")
	fs.StringVar(&root, "root", root, "module root")
	// Accept the name before or after the flags.
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "connectd connector new: %v\n", err)
		return 2
	}
	rest := fs.Args()
	if name == "" && len(rest) > 0 {
		name, rest = rest[0], rest[1:]
	}
	switch {
	case name == "":
		fmt.Fprint(stderr, "connectd connector new: a connector NAME is required\n"+usage)
		return 2
	case len(rest) > 0:
		fmt.Fprintf(stderr, "connectd connector new: unexpected argument %q\n", rest[0])
		return 2
	case !nameRE.MatchString(name) || token.IsKeyword(name):
		fmt.Fprintf(stderr, "connectd connector new: NAME %q: use 2-40 lower-case letters and digits, starting with a letter (it is the platform and Go package name)\n", name)
		return 2
	case *auth != "oauth" && *auth != "apiKey":
		fmt.Fprintf(stderr, "connectd connector new: --auth must be \"oauth\" or \"apiKey\" (got %q)\n", *auth)
		return 2
	}
	files, err := Generate(root, name, *auth)
	if err != nil {
		fmt.Fprintf(stderr, "connectd connector new: %v\n", err)
		return 1
	}
	for _, f := range files {
		fmt.Fprintf(stdout, "wrote %s\n", f)
	}
	fmt.Fprintf(stdout, `
Next:
  go test ./connectors/%[1]s/        # the conformance kit, through the real engine
  edit connectors/%[1]s/%[1]s.go     # the service's real endpoints and fields
  read connectors/README.md
`, name)
	return 0
}

// Generate writes the connector name with auth ("oauth" or "apiKey")
// below root and returns the paths written (relative to root).
func Generate(root, name, auth string) ([]string, error) {
	if !nameRE.MatchString(name) || token.IsKeyword(name) {
		return nil, fmt.Errorf("bad connector name %q", name)
	}
	if auth != "oauth" && auth != "apiKey" {
		return nil, fmt.Errorf("bad auth type %q", auth)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return nil, fmt.Errorf("%s is not the module root (no go.mod): run from the repository root or pass --root", root)
	}
	d := data{
		Name:        name,
		Display:     strings.ToUpper(name[:1]) + name[1:],
		Env:         strings.ToUpper(name),
		DefaultBase: "https://api." + name + ".example.com",
	}
	prefix := strings.ToLower(auth)
	var files []file
	for _, t := range []struct{ tmpl, path string }{
		{prefix + ".go.tmpl", filepath.Join("connectors", name, name+".go")},
		{prefix + "_test.go.tmpl", filepath.Join("connectors", name, name+"_test.go")},
		{prefix + ".json.tmpl", filepath.Join("manifests", name+".json")},
	} {
		body, err := render(t.tmpl, d)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(filepath.Join(root, t.path)); err == nil {
			return nil, fmt.Errorf("%s already exists; not overwriting", t.path)
		}
		files = append(files, file{path: t.path, body: body})
	}
	regPath := filepath.Join("connectors", "connectors.go")
	reg, err := os.ReadFile(filepath.Join(root, regPath))
	if err != nil {
		return nil, fmt.Errorf("reading the connector list: %w", err)
	}
	reg, err = register(reg, name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", regPath, err)
	}
	files = append(files, file{path: regPath, body: reg})

	var written []string
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, f.path)), 0o755); err != nil {
			return written, err
		}
		if err := os.WriteFile(filepath.Join(root, f.path), f.body, 0o644); err != nil {
			return written, err
		}
		written = append(written, f.path)
	}
	return written, nil
}

func render(name string, d data) ([]byte, error) {
	t, err := template.ParseFS(templates, "templates/"+name)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return nil, err
	}
	if strings.HasSuffix(name, ".go.tmpl") {
		out, err := format.Source(b.Bytes())
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		return out, nil
	}
	return b.Bytes(), nil
}

// register adds the import and the map entry for name to the source of
// connectors/connectors.go.
func register(src []byte, name string) ([]byte, error) {
	s := string(src)
	imp := `"github.com/connectd/connectd/connectors/` + name + `"`
	if strings.Contains(s, imp) || regexp.MustCompile(`(?m)^\s*"`+name+`":`).MatchString(s) {
		return nil, fmt.Errorf("%s is already registered", name)
	}
	// The import: after the last connectors/ import.
	lines := strings.Split(s, "\n")
	lastImp, mapOpen, mapClose := -1, -1, -1
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, `"github.com/connectd/connectd/connectors/`) {
			lastImp = i
		}
		if strings.Contains(l, "map[string]connector.Factory{") && strings.Contains(l, "return") {
			mapOpen = i
		}
		if mapOpen >= 0 && mapClose < 0 && i > mapOpen && t == "}" {
			mapClose = i
		}
	}
	if lastImp < 0 || mapOpen < 0 || mapClose < 0 {
		return nil, errors.New("cannot find the connector imports and the map literal in All; add the registration by hand")
	}
	out := make([]string, 0, len(lines)+2)
	for i, l := range lines {
		if i == mapClose {
			out = append(out, "\t\t\""+name+"\": "+name+".New,")
		}
		out = append(out, l)
		if i == lastImp {
			out = append(out, "\t"+imp)
		}
	}
	formatted, err := format.Source([]byte(strings.Join(out, "\n")))
	if err != nil {
		return nil, fmt.Errorf("the edited connector list does not parse: %w", err)
	}
	return formatted, nil
}
