package manifest

import (
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"sync"

	"github.com/xeipuuv/gojsonschema"

	"github.com/connectd/connectd/manifests"
)

// compiledSchema compiles the embedded schema once per process. It is a
// constant computed lazily, not mutable state: the schema is compiled into
// the binary.
var compiledSchema = sync.OnceValues(func() (*gojsonschema.Schema, error) {
	raw, err := fs.ReadFile(manifests.FS, manifests.SchemaPath)
	if err != nil {
		return nil, fmt.Errorf("manifest: read schema: %w", err)
	}
	s, err := gojsonschema.NewSchema(gojsonschema.NewBytesLoader(raw))
	if err != nil {
		return nil, fmt.Errorf("manifest: compile schema: %w", err)
	}
	return s, nil
})

// validateSchema checks data (known to be valid JSON) against the manifest
// schema and adds one problem per violation. It is the one place that
// calls gojsonschema.
func validateSchema(data []byte, ps *problems) error {
	schema, err := compiledSchema()
	if err != nil {
		return err
	}
	res, err := schema.Validate(gojsonschema.NewBytesLoader(data))
	if err != nil {
		return fmt.Errorf("manifest: validate %s: %w", ps.file, err)
	}
	// A bad property name is reported twice by gojsonschema: as the
	// pattern failure of the name and as invalid_property_name; keep the
	// latter, which names the key.
	badNames := map[string]bool{}
	for _, e := range res.Errors() {
		if e.Type() == "invalid_property_name" {
			badNames[e.Context().String()] = true
		}
	}
	for _, e := range res.Errors() {
		if skipSchemaError(e.Type()) || (e.Type() == "pattern" && badNames[e.Context().String()]) {
			continue
		}
		segs := contextSegments(e.Context())
		msg := schemaMessage(e)
		if e.Type() == "pattern" && len(segs) > 0 && strings.HasSuffix(segs[len(segs)-1], "Env") {
			msg = "must be an environment variable name: upper-case letters, digits and '_', starting with a letter"
		}
		switch e.Type() {
		case "required", "additional_property_not_allowed", "invalid_property_name":
			// Point at the key itself, not at its parent object.
			if p, ok := e.Details()["property"].(string); ok {
				segs = append(segs, p)
			}
		}
		ps.list = append(ps.list, Problem{File: ps.file, Path: jsonPath(segs...), Message: msg})
	}
	return nil
}

// skipSchemaError drops gojsonschema's summary errors that only repeat
// the specific ones beside them.
func skipSchemaError(t string) bool {
	switch t {
	case "number_any_of", "number_one_of", "number_all_of", "condition_then", "condition_else":
		return true
	}
	return false
}

// contextSegments splits a gojsonschema context ("(root).a.b") into its
// segments; NUL is used as the separator because keys may contain dots.
func contextSegments(c *gojsonschema.JsonContext) []string {
	if c == nil {
		return nil
	}
	segs := strings.Split(c.String("\x00"), "\x00")
	if len(segs) > 0 && segs[0] == gojsonschema.STRING_CONTEXT_ROOT {
		segs = segs[1:]
	}
	return segs
}

// schemaMessage renders a schema violation in plain words.
func schemaMessage(e gojsonschema.ResultError) string {
	d := e.Details()
	switch e.Type() {
	case "required":
		return "is required"
	case "additional_property_not_allowed":
		return "unknown key (not allowed here; check the spelling)"
	case "invalid_property_name":
		return "invalid name: use a letter, then letters, digits, '_', '.' or '-' (at most 64)"
	case "enum":
		return fmt.Sprintf("must be one of %v", d["allowed"])
	case "invalid_type":
		return fmt.Sprintf("must be %v, not %v", article(fmt.Sprint(d["expected"])), d["given"])
	case "array_min_properties":
		return fmt.Sprintf("must have at least %v entries", d["min"])
	case "string_gte":
		return "must not be empty"
	case "pattern":
		return fmt.Sprintf("does not match the pattern %v", d["pattern"])
	case "unique":
		return "items must be unique"
	case "number_gte":
		return fmt.Sprintf("must be at least %v", d["min"])
	case "number_lte":
		return fmt.Sprintf("must be at most %v", d["max"])
	}
	return e.Description()
}

func article(t string) string {
	switch t {
	case "object", "array", "integer":
		return "an " + t
	}
	return "a " + t
}

// sortProblems orders problems by file, then by path, keeping the order
// of problems at the same path.
func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].File != ps[j].File {
			return ps[i].File < ps[j].File
		}
		return ps[i].Path < ps[j].Path
	})
}
