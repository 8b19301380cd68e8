package logging_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/server/logging"
)

type secret string

func (secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }

func TestSlogAdapter(t *testing.T) {
	var buf bytes.Buffer
	root := logging.New(&buf, hclog.Info, "json")
	l := logging.Slog(root.Named("connector").Named("clio"))
	l.Debug("hidden")
	l.With("tenant", "t1").WithGroup("req").Info("called", "status", 200, "token", secret("tok-abc"), "err", errors.New("boom"), slog.Group("g", "k", "v"))
	l.Warn("slow")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2 (debug filtered):\n%s", len(lines), buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"@message": "called", "@module": "connectd.connector.clio", "@level": "info",
		"tenant": "t1", "req.status": float64(200), "req.token": "REDACTED", "req.err": "boom", "req.g.k": "v",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v (line %s)", k, m[k], v, lines[0])
		}
	}
	if strings.Contains(buf.String(), "tok-abc") {
		t.Fatal("LogValuer not resolved: secret logged")
	}
	if !strings.Contains(lines[1], `"@level":"warn"`) {
		t.Fatalf("warn line %s", lines[1])
	}
}

func TestTextFormat(t *testing.T) {
	var buf bytes.Buffer
	logging.New(&buf, hclog.Debug, "text").Named("store").Debug("opened", "dialect", "sqlite")
	if !strings.Contains(buf.String(), "[DEBUG] connectd.store: opened: dialect=sqlite") {
		t.Fatalf("text line %q", buf.String())
	}
}
