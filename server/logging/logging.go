// Package logging builds connectd's one root hclog logger and adapts hclog
// to log/slog for connectors (the connector contract hands them an
// *slog.Logger). Every other logger in the process is a Named child of the
// root. Values implementing slog.LogValuer are resolved before they reach
// hclog, so secret types that redact themselves stay redacted.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// New returns the root logger writing to w at level, as "text" or "json".
func New(w io.Writer, level hclog.Level, format string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:            "connectd",
		Level:           level,
		Output:          w,
		JSONFormat:      format == "json",
		IncludeLocation: false,
		TimeFormat:      "2006-01-02T15:04:05.000Z0700",
	})
}

// Slog returns an *slog.Logger writing to l.
func Slog(l hclog.Logger) *slog.Logger { return slog.New(&Handler{l: l}) }

// Handler is a slog.Handler writing to an hclog.Logger. Groups become
// dotted key prefixes.
type Handler struct {
	l      hclog.Logger
	prefix string // group prefix, "" or "a.b."
}

var _ slog.Handler = (*Handler)(nil)

// NewHandler returns a handler writing to l.
func NewHandler(l hclog.Logger) *Handler { return &Handler{l: l} }

func level(l slog.Level) hclog.Level {
	switch {
	case l < slog.LevelDebug:
		return hclog.Trace
	case l < slog.LevelInfo:
		return hclog.Debug
	case l < slog.LevelWarn:
		return hclog.Info
	case l < slog.LevelError:
		return hclog.Warn
	default:
		return hclog.Error
	}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool {
	return level(l) >= h.l.GetLevel()
}

// Handle implements slog.Handler.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	args := make([]any, 0, 2*r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		args = appendAttr(args, h.prefix, a)
		return true
	})
	h.l.Log(level(r.Level), r.Message, args...)
	return nil
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	args := make([]any, 0, 2*len(attrs))
	for _, a := range attrs {
		args = appendAttr(args, h.prefix, a)
	}
	return &Handler{l: h.l.With(args...), prefix: h.prefix}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &Handler{l: h.l, prefix: h.prefix + name + "."}
}

func appendAttr(args []any, prefix string, a slog.Attr) []any {
	v := a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return args
	}
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p = prefix + a.Key + "."
		}
		for _, g := range v.Group() {
			args = appendAttr(args, p, g)
		}
		return args
	}
	var val any
	switch v.Kind() {
	case slog.KindString:
		val = v.String()
	case slog.KindInt64:
		val = v.Int64()
	case slog.KindUint64:
		val = v.Uint64()
	case slog.KindFloat64:
		val = v.Float64()
	case slog.KindBool:
		val = v.Bool()
	case slog.KindDuration:
		val = v.Duration()
	case slog.KindTime:
		val = v.Time()
	default:
		a := v.Any()
		if err, ok := a.(error); ok {
			val = err.Error()
		} else {
			val = fmt.Sprint(a)
		}
	}
	return append(args, strings.TrimSuffix(prefix+a.Key, "."), val)
}
