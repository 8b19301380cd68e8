package connector

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// KitPluginProvider is implemented by connectors that serve Kit plugin
// endpoints (content blocks, search inputs, dynamic selects). The Kit
// surface mounts each plugin at POST /kit/plugins/<platform>/<Name>, checks
// Kit's bearer (an access token connectd issued for a grant of THIS
// connector) and hands the handler the creator's stored login, whose
// HTTPClient injects and refreshes the upstream credential. Handlers never
// see Kit's token.
type KitPluginProvider interface {
	KitPlugins() []KitPlugin
}

// KitPluginKind picks the response shape Kit expects.
type KitPluginKind string

// The Kit plugin shapes connectd renders.
const (
	// KitContentBlock answers {"code": 200, "html": HTML}.
	KitContentBlock KitPluginKind = "content_block"
	// KitSearchInput answers {"data": [{"label", "value"}]}.
	KitSearchInput KitPluginKind = "search_input"
	// KitDynamicSelect answers {"options": [{"label", "value"}]}.
	KitDynamicSelect KitPluginKind = "dynamic_select"
)

// KitPlugin is one Kit plugin endpoint of a connector.
type KitPlugin struct {
	// Name is the last path segment: lower-case letters, digits, '-' and
	// '_' only (checked by ValidKitPluginName).
	Name   string
	Kind   KitPluginKind
	Handle KitPluginHandler
}

// KitPluginHandler serves one Kit plugin request. Return a *KitPluginError
// for a failure the creator should see (Kit's {"code", "errors"} shape);
// any other error is answered as a generic 502 without its text.
type KitPluginHandler func(ctx context.Context, req KitPluginRequest) (KitPluginResult, error)

// KitPluginRequest is a Kit plugin call on behalf of the creator.
type KitPluginRequest struct {
	UserRequest
	// Body is Kit's JSON body as sent, e.g. {"settings": {...}} for a
	// content block or {"query": "..."} for a search input; "{}" when Kit
	// sent none.
	Body json.RawMessage
}

// KitPluginResult is what a handler returns; the surface renders the shape
// of the plugin's Kind.
type KitPluginResult struct {
	// HTML is a content block's markup. Kit sanitises it (no scripts,
	// iframes, forms or external CSS); escape every value from the CRM.
	HTML string
	// Items are a search input's results or a dynamic select's options.
	Items []Option
}

// KitPluginError is a failure shown to the creator:
// {"code": Code, "errors": Messages}, answered with HTTP status Code.
type KitPluginError struct {
	Code     int
	Messages []string
}

// Error implements error.
func (e *KitPluginError) Error() string {
	return fmt.Sprintf("kit plugin error %d: %s", e.Code, strings.Join(e.Messages, "; "))
}

// ValidKitPluginName reports whether name can be a plugin path segment.
func ValidKitPluginName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, r := range name {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' && r != '_' {
			return false
		}
	}
	return true
}
