package admin

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"sort"

	"github.com/gin-gonic/gin"

	"github.com/connectd/connectd/server/httpx"
)

//go:embed assets/admin.html assets/admin.js assets/admin.css assets/icon.svg
var assets embed.FS

// pageCSP allows only this server's own script, style and API: no inline
// script, no external assets.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"

var pageTemplate = template.Must(template.ParseFS(assets, "assets/admin.html"))

type pagePlatform struct {
	Key, Label, AuthType string
}

func pageHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
}

func (s *Surface) registerPage(r gin.IRouter) {
	r.GET("/admin", s.page)
	r.GET("/admin/assets/admin.js", asset("assets/admin.js", "text/javascript; charset=utf-8"))
	r.GET("/admin/assets/admin.css", asset("assets/admin.css", "text/css; charset=utf-8"))
	r.GET("/admin/assets/icon.svg", asset("assets/icon.svg", "image/svg+xml"))
}

// GET /admin: the page shell. It holds no account data: everything shown
// comes from the API after the admin pastes a token, which the page keeps
// in sessionStorage (this tab only).
func (s *Surface) page(c *gin.Context) {
	var plats []pagePlatform
	if s.Manifests != nil {
		for _, p := range s.Manifests.Platforms() {
			label := p.DisplayName
			if label == "" {
				label = p.Key
			}
			plats = append(plats, pagePlatform{Key: p.Key, Label: label, AuthType: string(p.AuthType())})
		}
	}
	sort.Slice(plats, func(i, j int) bool { return plats[i].Label < plats[j].Label })
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, map[string]any{"Platforms": plats}); err != nil {
		httpx.Logger(c).Error("render admin page", "error", err)
		httpx.WriteError(c, http.StatusInternalServerError, "internal", "Internal error.")
		return
	}
	pageHeaders(c)
	c.Data(http.StatusOK, "text/html; charset=utf-8", buf.Bytes())
}

func asset(name, contentType string) gin.HandlerFunc {
	body, err := assets.ReadFile(name)
	if err != nil {
		panic("admin: missing embedded asset " + name) // a build mistake, caught by every test
	}
	return func(c *gin.Context) {
		pageHeaders(c)
		c.Header("Cache-Control", "no-cache")
		c.Data(http.StatusOK, contentType, body)
	}
}
