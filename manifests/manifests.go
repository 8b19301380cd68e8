// Package manifests embeds the App Connect manifests shipped with connectd
// (one JSON document per connector or plugin, at the root of this
// directory) and the JSON Schema every manifest is validated against
// (schema/manifest.schema.json). It imports nothing from the project:
// core/manifest reads FS and does all parsing and validation.
package manifests

import "embed"

// FS holds this directory: every connector manifest (*.json at the root)
// and the schema directory. The pattern is "*" rather than "*.json"
// because a pattern matching no file does not compile, and the set of
// connector manifests may be empty; readers glob "*.json" at the root, so
// the Go source embedded alongside is never mistaken for a manifest.
//
//go:embed *
var FS embed.FS

// SchemaPath is the path of the manifest JSON Schema inside FS.
const SchemaPath = "schema/manifest.schema.json"
