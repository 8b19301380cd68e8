// Package redact is an example synchronous App Connect plugin: it removes
// personal data from call-log notes before App Connect stores them -
// email addresses, card numbers (digit runs of 13-19 digits that pass the
// Luhn check, with or without spaces or dashes) and phone numbers (7-15
// digits with the usual separators). It needs no login and keeps nothing.
package redact

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"github.com/connectd/connectd/core/connector"
)

// Replacements written in place of what was removed.
const (
	EmailMark = "[email redacted]"
	CardMark  = "[card redacted]"
	PhoneMark = "[phone redacted]"
)

// maxNote bounds the note processed (App Connect notes are short).
const maxNote = 64 << 10

// Plugin is the redaction plugin.
type Plugin struct {
	log     *slog.Logger
	email   *regexp.Regexp
	card    *regexp.Regexp
	phone   *regexp.Regexp
	isoDate *regexp.Regexp
}

var (
	_ connector.Connector     = (*Plugin)(nil)
	_ connector.SyncProcessor = (*Plugin)(nil)
)

// New is the connector.Factory.
func New(cfg connector.Config) (connector.Connector, error) {
	return NewPlugin(cfg.Logger), nil
}

// NewPlugin returns the plugin.
func NewPlugin(logger *slog.Logger) *Plugin {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Plugin{
		log:   logger,
		email: regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}`),
		// 13-19 digits, single spaces or dashes between them.
		card: regexp.MustCompile(`\d(?:[ \-]?\d){12,18}`),
		// An optional +, then digits with spaces, dots, dashes and
		// parentheses; the digit count is checked afterwards.
		phone:   regexp.MustCompile(`\+?\(?\d[\d ().\-]{5,}\d`),
		isoDate: regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`),
	}
}

// AuthType implements connector.Connector; the plugin has no login (its
// manifest has no auth block), so the engine never calls it for one.
func (p *Plugin) AuthType(context.Context) (connector.AuthType, error) { return "", nil }

// UserInfo implements connector.Connector; never called (no login).
func (p *Plugin) UserInfo(context.Context, connector.UserInfoRequest) (connector.UserInfoResult, error) {
	return connector.UserInfoResult{}, fmt.Errorf("redact: the plugin has no login")
}

// ProcessSync redacts data.note (and data.logInfo.note when present) and
// returns data otherwise unchanged.
func (p *Plugin) ProcessSync(ctx context.Context, req connector.PluginRequest) (json.RawMessage, error) {
	var data map[string]json.RawMessage
	if err := json.Unmarshal(req.Data, &data); err != nil {
		return nil, fmt.Errorf("%w: data must be a JSON object", connector.ErrInvalidPayload)
	}
	changed := 0
	redactField := func(m map[string]json.RawMessage, key string) error {
		raw, ok := m[key]
		if !ok || string(raw) == "null" {
			return nil
		}
		var note string
		if err := json.Unmarshal(raw, &note); err != nil {
			return fmt.Errorf("%w: %s must be a string", connector.ErrInvalidPayload, key)
		}
		if len(note) > maxNote {
			return fmt.Errorf("%w: %s is longer than %d bytes", connector.ErrInvalidPayload, key, maxNote)
		}
		out, n := p.Redact(note)
		if n == 0 {
			return nil
		}
		changed += n
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		m[key] = b
		return nil
	}
	if err := redactField(data, "note"); err != nil {
		return nil, err
	}
	if raw, ok := data["logInfo"]; ok && len(raw) > 0 && raw[0] == '{' {
		var li map[string]json.RawMessage
		if err := json.Unmarshal(raw, &li); err == nil {
			before := changed
			if err := redactField(li, "note"); err != nil {
				return nil, err
			}
			if changed != before {
				b, err := json.Marshal(li)
				if err != nil {
					return nil, err
				}
				data["logInfo"] = b
			}
		}
	}
	if changed == 0 {
		return req.Data, nil
	}
	// Counts only: never log the note.
	p.log.Debug("redacted note", "items", changed)
	return json.Marshal(data)
}

// Redact returns s with emails, Luhn-valid card numbers and phone numbers
// replaced, and how many it replaced.
func (p *Plugin) Redact(s string) (string, int) {
	n := 0
	s = p.email.ReplaceAllStringFunc(s, func(string) string { n++; return EmailMark })
	s = p.card.ReplaceAllStringFunc(s, func(m string) string {
		d := digits(m)
		if len(d) >= 13 && len(d) <= 19 && Luhn(d) {
			n++
			return CardMark
		}
		return m
	})
	s = p.phone.ReplaceAllStringFunc(s, func(m string) string {
		trimmed := strings.TrimRight(m, " .-(")
		d := digits(trimmed)
		if len(d) < 7 || len(d) > 15 || p.isoDate.MatchString(trimmed) || strings.Count(trimmed, "(") != strings.Count(trimmed, ")") {
			return m
		}
		n++
		return PhoneMark + m[len(trimmed):]
	})
	return s, n
}

func digits(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Luhn reports whether a digit string passes the Luhn checksum.
func Luhn(d string) bool {
	if d == "" {
		return false
	}
	sum, double := 0, false
	for i := len(d) - 1; i >= 0; i-- {
		c := d[i]
		if c < '0' || c > '9' {
			return false
		}
		v := int(c - '0')
		if double {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
		double = !double
	}
	return sum%10 == 0
}
