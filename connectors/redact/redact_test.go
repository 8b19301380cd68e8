package redact_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/connectd/connectd/connectors/redact"
	"github.com/connectd/connectd/core/connector"
)

func TestRedact(t *testing.T) {
	p := redact.NewPlugin(nil)
	for _, tc := range []struct {
		name, in, want string
		n              int
	}{
		{"email", "mail jane.doe+crm@mail.example.co.uk now", "mail " + redact.EmailMark + " now", 1},
		{"visa with spaces", "card 4111 1111 1111 1111.", "card " + redact.CardMark + ".", 1},
		{"mastercard with dashes", "5500-0000-0000-0004", redact.CardMark, 1},
		{"amex 15 digits", "378282246310005", redact.CardMark, 1},
		{"not Luhn: kept", "order 4111 1111 1111 1112", "order 4111 1111 1111 1112", 0},
		{"US phone", "call +1 (650) 555-0123 today", "call " + redact.PhoneMark + " today", 1},
		{"dotted phone", "650.555.0123", redact.PhoneMark, 1},
		{"international", "+44 20 7946 0958", redact.PhoneMark, 1},
		{"short numbers kept", "room 1234, ext 56", "room 1234, ext 56", 0},
		{"ISO date kept", "on 2026-11-26 we spoke", "on 2026-11-26 we spoke", 0},
		{"several", "a@b.io / 555-867-5309 / 6011111111111117", redact.EmailMark + " / " + redact.PhoneMark + " / " + redact.CardMark, 3},
		{"nothing", "Customer happy.", "Customer happy.", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, n := p.Redact(tc.in)
			if got != tc.want || n != tc.n {
				t.Fatalf("Redact(%q) = %q, %d; want %q, %d", tc.in, got, n, tc.want, tc.n)
			}
		})
	}
}

func TestLuhn(t *testing.T) {
	for d, want := range map[string]bool{"4111111111111111": true, "79927398713": true, "79927398710": false, "": false, "12a": false} {
		if redact.Luhn(d) != want {
			t.Errorf("Luhn(%q) != %v", d, want)
		}
	}
}

func TestProcessSync(t *testing.T) {
	p := redact.NewPlugin(nil)
	in := `{"contactId":"c1","note":"mail a@b.io","logInfo":{"id":"x","note":"ring 650-555-0123"},"additionalSubmission":{"k":[1,2]}}`
	out, err := p.ProcessSync(context.Background(), connector.PluginRequest{Data: json.RawMessage(in)})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got["note"] != "mail "+redact.EmailMark || got["logInfo"].(map[string]any)["note"] != "ring "+redact.PhoneMark ||
		got["contactId"] != "c1" || got["logInfo"].(map[string]any)["id"] != "x" {
		t.Fatalf("out = %s", out)
	}
	// Unchanged data comes back byte for byte.
	clean := `{"note":"all good","x":{"y":1}}`
	if out, _ := p.ProcessSync(context.Background(), connector.PluginRequest{Data: json.RawMessage(clean)}); string(out) != clean {
		t.Fatalf("clean data changed: %s", out)
	}
	for _, bad := range []string{`[1]`, `{"note":5}`, `{"logInfo":{"note":true}}`} {
		if _, err := p.ProcessSync(context.Background(), connector.PluginRequest{Data: json.RawMessage(bad)}); !errors.Is(err, connector.ErrInvalidPayload) {
			t.Errorf("%s: err = %v, want ErrInvalidPayload", bad, err)
		}
	}
}

func FuzzRedact(f *testing.F) {
	f.Add("call +1 650 555 0123 or a@b.io, card 4111111111111111")
	p := redact.NewPlugin(nil)
	f.Fuzz(func(t *testing.T, s string) {
		out, _ := p.Redact(s)
		// Redacting twice finds nothing more: no mark creates new matches.
		if again, n := p.Redact(out); n != 0 {
			t.Fatalf("second pass redacted %d more: %q -> %q -> %q", n, s, out, again)
		}
	})
}
