package pipedrive

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/connectd/connectd/core/connector"
)

// Kit plugins (served by connectd's Kit surface at
// POST /kit/plugins/pipedrive/<name>):
//   - "deals": a content block listing the creator's most recent deals
//     (settings: "limit" 1-20, default 5; "status" open|won|lost|all_not_deleted).
//   - "deal-search": a search input over deal titles ({"query": "..."}).
//
// Documentation followed:
//   - https://developers.pipedrive.com/docs/api/v1/Deals#getDeals
//     (GET /api/v1/deals: start, limit, sort "field DIRECTION", status)
//   - https://developers.pipedrive.com/docs/api/v1/Deals#searchDeals
//     (GET /api/v1/deals/search: term >= 2 characters, fields, limit)
var _ connector.KitPluginProvider = (*Connector)(nil)

// KitPlugins implements connector.KitPluginProvider.
func (c *Connector) KitPlugins() []connector.KitPlugin {
	return []connector.KitPlugin{
		{Name: "deals", Kind: connector.KitContentBlock, Handle: c.kitDeals},
		{Name: "deal-search", Kind: connector.KitSearchInput, Handle: c.kitDealSearch},
	}
}

// deal is the part of Pipedrive's deal object the block shows.
type deal struct {
	ID         json.Number `json:"id"`
	Title      string      `json:"title"`
	Value      json.Number `json:"value"`
	Currency   string      `json:"currency"`
	Status     string      `json:"status"`
	AddTime    string      `json:"add_time"`
	OrgName    string      `json:"org_name"`
	PersonName string      `json:"person_name"`
}

// settingString reads a Kit setting that may arrive as a string or number.
func settingString(m map[string]any, k string) string {
	switch v := m[k].(type) {
	case string:
		return strings.TrimSpace(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return ""
}

func (c *Connector) kitDeals(ctx context.Context, req connector.KitPluginRequest) (connector.KitPluginResult, error) {
	var body struct {
		Settings map[string]any `json:"settings"`
	}
	if err := json.Unmarshal(req.Body, &body); err != nil {
		return connector.KitPluginResult{}, &connector.KitPluginError{Code: http.StatusBadRequest, Messages: []string{"The request body is not a settings object."}}
	}
	limit := 5
	if s := settingString(body.Settings, "limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 20 {
			return connector.KitPluginResult{}, &connector.KitPluginError{Code: http.StatusUnprocessableEntity, Messages: []string{"limit must be a number from 1 to 20."}}
		}
		limit = n
	}
	status := "open"
	if s := settingString(body.Settings, "status"); s != "" {
		switch s {
		case "open", "won", "lost", "all_not_deleted":
			status = s
		default:
			return connector.KitPluginResult{}, &connector.KitPluginError{Code: http.StatusUnprocessableEntity, Messages: []string{"status must be open, won, lost or all_not_deleted."}}
		}
	}
	q := url.Values{"limit": {strconv.Itoa(limit)}, "sort": {"add_time DESC"}, "status": {status}, "start": {"0"}}
	var resp struct {
		Success bool   `json:"success"`
		Data    []deal `json:"data"`
	}
	if err := c.kitGet(ctx, req.UserRequest, "/api/v1/deals", q, &resp); err != nil {
		return connector.KitPluginResult{}, err
	}
	if !resp.Success {
		return connector.KitPluginResult{}, fmt.Errorf("pipedrive: deals answered without success")
	}
	if len(resp.Data) == 0 {
		return connector.KitPluginResult{HTML: `<p>No ` + html.EscapeString(statusLabel(status)) + ` deals yet.</p>`}, nil
	}
	var b strings.Builder
	b.WriteString(`<table role="presentation" style="width:100%;border-collapse:collapse">`)
	for _, d := range resp.Data {
		b.WriteString(`<tr><td style="padding:6px 0;border-bottom:1px solid #e5e7eb"><strong>`)
		b.WriteString(html.EscapeString(d.Title))
		b.WriteString(`</strong>`)
		if who := strings.TrimSpace(strings.Join(nonEmpty(d.OrgName, d.PersonName), " · ")); who != "" {
			b.WriteString(`<br><span style="color:#6b7280">` + html.EscapeString(who) + `</span>`)
		}
		b.WriteString(`</td><td style="padding:6px 0;border-bottom:1px solid #e5e7eb;text-align:right">`)
		if d.Value.String() != "" {
			b.WriteString(html.EscapeString(strings.TrimSpace(d.Value.String() + " " + d.Currency)))
		}
		b.WriteString(`</td></tr>`)
	}
	b.WriteString(`</table>`)
	return connector.KitPluginResult{HTML: b.String()}, nil
}

func statusLabel(s string) string {
	if s == "all_not_deleted" {
		return "recent"
	}
	return s
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if strings.TrimSpace(s) != "" {
			out = append(out, s)
		}
	}
	return out
}

func (c *Connector) kitDealSearch(ctx context.Context, req connector.KitPluginRequest) (connector.KitPluginResult, error) {
	var body struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(req.Body, &body); err != nil {
		return connector.KitPluginResult{}, &connector.KitPluginError{Code: http.StatusBadRequest, Messages: []string{"The request body is not a search object."}}
	}
	term := strings.TrimSpace(body.Query)
	if len([]rune(term)) < 2 {
		return connector.KitPluginResult{Items: []connector.Option{}}, nil // Pipedrive needs 2+ characters
	}
	q := url.Values{"term": {term}, "fields": {"title"}, "limit": {"10"}}
	var resp struct {
		Success bool `json:"success"`
		Data    struct {
			Items []struct {
				Item deal `json:"item"`
			} `json:"items"`
		} `json:"data"`
	}
	if err := c.kitGet(ctx, req.UserRequest, "/api/v1/deals/search", q, &resp); err != nil {
		return connector.KitPluginResult{}, err
	}
	items := make([]connector.Option, 0, len(resp.Data.Items))
	for _, it := range resp.Data.Items {
		items = append(items, connector.Option{Label: it.Item.Title, Value: it.Item.ID.String()})
	}
	return connector.KitPluginResult{Items: items}, nil
}

// kitGet calls the creator's company API; the engine's client injects
// (and refreshes) the bearer token.
func (c *Connector) kitGet(ctx context.Context, req connector.UserRequest, path string, q url.Values, out any) error {
	base, err := c.apiBase(req.User.Hostname)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path+"?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("pipedrive: %s request: %w", path, err)
	}
	// No Authorization: the engine's client injects the user's credential.
	resp, err := connector.Call(req.HTTPClient, hreq, "", maxResponseBytes)
	if err != nil {
		return fmt.Errorf("pipedrive: %s: %w", path, err)
	}
	data := resp.Body
	switch {
	case resp.Status == http.StatusOK:
	case resp.Status == http.StatusUnauthorized || resp.Status == http.StatusForbidden:
		return &connector.KitPluginError{Code: http.StatusUnauthorized, Messages: []string{"Pipedrive refused the connection. Please reinstall the app."}}
	case resp.Status == http.StatusTooManyRequests:
		return &connector.KitPluginError{Code: http.StatusTooManyRequests, Messages: []string{"Pipedrive is rate limiting requests. Please try again shortly."}}
	default:
		return fmt.Errorf("pipedrive: %s answered HTTP %d", path, resp.Status)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("pipedrive: %s answered malformed JSON: %w", path, err)
	}
	return nil
}
