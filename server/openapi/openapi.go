// Package openapi serves connectd's OpenAPI document (openapi.json, written
// by hand and embedded) at GET /openapi.json, and connector availability
// at GET /connectors. Its tests keep the document honest: every route of
// a fully wired server is documented and every documented route exists,
// and responses recorded by end-to-end flows match the documented shapes.
package openapi

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/server"
)

//go:embed openapi.json
var document []byte

// Document returns a copy of the OpenAPI document.
func Document() []byte { return slices.Clone(document) }

// Options configure the surface.
type Options struct {
	// Registry, when set, is served at GET /connectors (names, auth types
	// and availability; the reason a connector is unavailable names a
	// setting, so it goes to logs and `connectd doctor`, not to callers).
	Registry *registry.Registry
}

// Surface serves /openapi.json and /connectors.
type Surface struct {
	o Options
}

var _ server.Surface = (*Surface)(nil)

// New returns the surface.
func New(o Options) *Surface { return &Surface{o: o} }

// Register implements server.Surface.
func (s *Surface) Register(r gin.IRouter, _ server.Middlewares) {
	r.GET("/openapi.json", func(c *gin.Context) {
		c.Header("Cache-Control", "public, max-age=300")
		c.Data(http.StatusOK, "application/json; charset=utf-8", document)
	})
	if s.o.Registry != nil {
		reg := s.o.Registry
		r.GET("/connectors", func(c *gin.Context) {
			type entry struct {
				Name      string `json:"name"`
				AuthType  string `json:"authType"`
				Available bool   `json:"available"`
			}
			out := []entry{}
			for _, e := range reg.List() {
				at := ""
				if e.Platform != nil {
					at = string(e.Platform.AuthType())
				}
				out = append(out, entry{Name: e.Name, AuthType: at, Available: e.Available})
			}
			c.JSON(http.StatusOK, gin.H{"connectors": out})
		})
	}
}

// Route is one documented operation: method (upper case) and the path in
// gin's syntax (:param).
type Route struct {
	Method, Path string
}

// Routes lists the document's operations, sorted.
func Routes() ([]Route, error) {
	var d struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(document, &d); err != nil {
		return nil, fmt.Errorf("openapi: document: %w", err)
	}
	var out []Route
	for p, ops := range d.Paths {
		for m := range ops {
			switch m {
			case "get", "post", "put", "patch", "delete", "head", "options":
				out = append(out, Route{Method: strings.ToUpper(m), Path: GinPath(p)})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].Method < out[j].Method
	})
	return out, nil
}

// GinPath turns an OpenAPI path template (/a/{b}) into gin's (/a/:b).
func GinPath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			parts[i] = ":" + s[1:len(s)-1]
		}
	}
	return strings.Join(parts, "/")
}
