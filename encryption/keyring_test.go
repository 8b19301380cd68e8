package encryption

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

// testKey returns a deterministic, distinct 32-byte key per seed.
func testKey(seed byte) []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = seed*31 + byte(i)*7 + 1
	}
	return k
}

func b64(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

func TestParseKeyRing(t *testing.T) {
	k1, k2, k3 := testKey(1), testKey(2), testKey(3)
	tests := []struct {
		name    string
		text    string
		primary uint32
		ids     []uint32
	}{
		{"single", "1:" + b64(k1), 1, []uint32{1}},
		{"first is primary", "7:" + b64(k2) + ",3:" + b64(k1), 7, []uint32{7, 3}},
		{"three", "2:" + b64(k2) + ",1:" + b64(k1) + ",3:" + b64(k3), 2, []uint32{2, 1, 3}},
		{"spaces and newline tolerated", " 1:" + b64(k1) + " , 2:" + b64(k2) + "\n", 1, []uint32{1, 2}},
		{"id zero", "0:" + b64(k1), 0, []uint32{0}},
		{"max id", "4294967295:" + b64(k1), 4294967295, []uint32{4294967295}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseKeyRing(tt.text)
			if err != nil {
				t.Fatalf("ParseKeyRing: %v", err)
			}
			if r.PrimaryID() != tt.primary {
				t.Errorf("PrimaryID = %d, want %d", r.PrimaryID(), tt.primary)
			}
			if !slices.Equal(r.IDs(), tt.ids) {
				t.Errorf("IDs = %v, want %v", r.IDs(), tt.ids)
			}
			// Round trip through Encode.
			again, err := ParseKeyRing(r.Encode())
			if err != nil {
				t.Fatalf("ParseKeyRing(Encode()): %v", err)
			}
			if again.Encode() != r.Encode() {
				t.Errorf("Encode not stable: %q vs %q", again.Encode(), r.Encode())
			}
			for _, id := range tt.ids {
				a, _ := r.Key(id)
				b, _ := again.Key(id)
				if !bytes.Equal(a, b) {
					t.Errorf("key %d changed in round trip", id)
				}
			}
		})
	}
	t.Run("keys decoded", func(t *testing.T) {
		r, err := ParseKeyRing("5:" + b64(k1) + ",6:" + b64(k2))
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := r.Key(6); !ok || !bytes.Equal(got, k2) {
			t.Errorf("Key(6) = %x, %v; want %x", got, ok, k2)
		}
		if _, ok := r.Key(99); ok {
			t.Error("Key(99) found")
		}
		if want := "5:" + b64(k1) + ",6:" + b64(k2); r.Encode() != want {
			t.Errorf("Encode = %q, want %q", r.Encode(), want)
		}
	})
}

func TestParseKeyRingErrors(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	short := make([]byte, 31)
	copy(short, k1)
	long := append(bytes.Clone(k1), 0xAA)
	tests := []struct {
		name string
		text string
		want string   // substring the error must contain
		leak []string // strings the error must NOT contain
	}{
		{"empty", "", "empty", nil},
		{"only spaces", "   ", "empty", nil},
		{"empty entry", "1:" + b64(k1) + ",", "entry 2: empty entry", []string{b64(k1)}},
		{"empty middle entry", "1:" + b64(k1) + ",,2:" + b64(k2), "entry 2: empty entry", []string{b64(k1), b64(k2)}},
		{"no colon", b64(k1), "entry 1: missing ':'", []string{b64(k1)}},
		{"key where id goes", "1:" + b64(k1) + "," + b64(k2) + ":3", "entry 2: id is not a decimal", []string{b64(k1), b64(k2)}},
		{"negative id", "-1:" + b64(k1), "entry 1: id is not a decimal", []string{b64(k1)}},
		{"id too big", "4294967296:" + b64(k1), "entry 1: id is not a decimal", []string{b64(k1)}},
		{"empty id", ":" + b64(k1), "entry 1: id is not a decimal", []string{b64(k1)}},
		{"bad base64", "1:" + b64(k1) + ",2:" + b64(k2)[:20] + "!!" + b64(k2)[22:], "entry 2 (id 2): key is not valid standard base64", []string{b64(k1), b64(k2)[:20], b64(k2)[22:]}},
		{"url base64", "1:" + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)), "entry 1 (id 1): key is not valid standard base64", []string{base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32))}},
		{"missing padding", "1:" + strings.TrimRight(b64(k1), "="), "entry 1 (id 1): key is not valid", []string{strings.TrimRight(b64(k1), "=")}},
		{"short key", "1:" + b64(k1) + ",9:" + b64(short), "entry 2 (id 9): key is 31 bytes, want 32", []string{b64(k1), b64(short)}},
		{"long key", "4:" + b64(long), "entry 1 (id 4): key is 33 bytes, want 32", []string{b64(long)}},
		{"empty key", "4:", "entry 1 (id 4): key is 0 bytes", nil},
		{"duplicate id", "1:" + b64(k1) + ",1:" + b64(k2), "entry 2 (id 1): duplicate key id", []string{b64(k1), b64(k2)}},
		{"duplicate key bytes", "1:" + b64(k1) + ",2:" + b64(k1), "entry 2 (id 2): same key bytes as key id 1", []string{b64(k1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseKeyRing(tt.text)
			if err == nil {
				t.Fatalf("ParseKeyRing succeeded: %v", r)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not contain %q", msg, tt.want)
			}
			if !strings.HasPrefix(msg, "encryption: ") {
				t.Errorf("error %q lacks the package prefix", msg)
			}
			for _, s := range tt.leak {
				if s != "" && strings.Contains(msg, s) {
					t.Errorf("error %q leaks key text %q", msg, s)
				}
			}
		})
	}
}

func TestKeyRingRedacts(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	r, err := ParseKeyRing("1:" + b64(k1) + ",2:" + b64(k2))
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("ring", "keys", r, "value", *r)
	outputs := map[string]string{
		"String":       r.String(),
		"%v":           fmt.Sprintf("%v", r),
		"%+v":          fmt.Sprintf("%+v", r),
		"%#v":          fmt.Sprintf("%#v", r),
		"Sprint value": fmt.Sprint(*r),
		"%+v value":    fmt.Sprintf("%+v", *r),
		"%#v value":    fmt.Sprintf("%#v", *r),
		"%v in slice":  fmt.Sprintf("%v", []*KeyRing{r}),
		"slog":         logged.String(),
	}
	for name, out := range outputs {
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(out, "keyring(primary=1, ids=[1 2])") {
				t.Errorf("%s = %q, want the safe description", name, out)
			}
			for _, k := range [][]byte{k1, k2} {
				if strings.Contains(out, b64(k)) || strings.Contains(out, fmt.Sprintf("%x", k)) ||
					strings.Contains(out, fmt.Sprint(k)) || strings.Contains(out, string(k)) {
					t.Errorf("%s leaks a key: %q", name, out)
				}
			}
		})
	}
}

func TestKeyRingRotation(t *testing.T) {
	k1, k2, k3 := testKey(1), testKey(2), testKey(3)
	r1, err := NewKeyRing(1, k1)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("add is non-primary and copy-on-write", func(t *testing.T) {
		r2, err := r1.Add(2, k2)
		if err != nil {
			t.Fatal(err)
		}
		if r2.PrimaryID() != 1 || !slices.Equal(r2.IDs(), []uint32{1, 2}) {
			t.Errorf("after Add: %v", r2)
		}
		if !slices.Equal(r1.IDs(), []uint32{1}) {
			t.Errorf("Add changed the original ring: %v", r1)
		}
	})
	t.Run("add refuses duplicates and bad sizes", func(t *testing.T) {
		if _, err := r1.Add(1, k2); err == nil || !strings.Contains(err.Error(), "duplicate key id") {
			t.Errorf("Add duplicate id: %v", err)
		}
		if _, err := r1.Add(2, k1); err == nil || !strings.Contains(err.Error(), "same key bytes as key id 1") {
			t.Errorf("Add duplicate key: %v", err)
		}
		if _, err := r1.Add(2, k2[:16]); err == nil || !strings.Contains(err.Error(), "16 bytes, want 32") {
			t.Errorf("Add short key: %v", err)
		}
	})
	t.Run("promote", func(t *testing.T) {
		r2, _ := r1.Add(2, k2)
		r3, _ := r2.Add(3, k3)
		p, err := r3.Promote(3)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(p.IDs(), []uint32{3, 1, 2}) {
			t.Errorf("IDs after Promote(3) = %v, want [3 1 2]", p.IDs())
		}
		if !slices.Equal(r3.IDs(), []uint32{1, 2, 3}) {
			t.Errorf("Promote changed the original: %v", r3)
		}
		if _, err := r3.Promote(9); err == nil || !strings.Contains(err.Error(), "no such key") {
			t.Errorf("Promote(9) = %v", err)
		}
		same, err := r3.Promote(1)
		if err != nil || !slices.Equal(same.IDs(), []uint32{1, 2, 3}) {
			t.Errorf("Promote(primary) = %v, %v", same, err)
		}
	})
	t.Run("remove", func(t *testing.T) {
		r2, _ := r1.Add(2, k2)
		if _, err := r2.Remove(1); err == nil || !strings.Contains(err.Error(), "primary") {
			t.Errorf("Remove(primary) = %v, want refusal", err)
		}
		if _, err := r2.Remove(7); err == nil || !strings.Contains(err.Error(), "no such key") {
			t.Errorf("Remove(7) = %v", err)
		}
		p, _ := r2.Promote(2)
		rm, err := p.Remove(1)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(rm.IDs(), []uint32{2}) {
			t.Errorf("IDs after Remove(1) = %v", rm.IDs())
		}
		if !slices.Equal(p.IDs(), []uint32{2, 1}) {
			t.Errorf("Remove changed the original: %v", p)
		}
	})
	t.Run("key is a copy", func(t *testing.T) {
		got, _ := r1.Key(1)
		got[0] ^= 0xFF
		again, _ := r1.Key(1)
		if !bytes.Equal(again, k1) {
			t.Error("mutating Key's result changed the ring")
		}
		// And the ring does not alias the caller's slice either.
		k := testKey(9)
		r, _ := NewKeyRing(9, k)
		k[0] ^= 0xFF
		if in, _ := r.Key(9); !bytes.Equal(in, testKey(9)) {
			t.Error("NewKeyRing aliases the caller's key")
		}
	})
	t.Run("new key ring rejects bad size", func(t *testing.T) {
		if _, err := NewKeyRing(1, make([]byte, 16)); err == nil {
			t.Error("NewKeyRing accepted a 16-byte key")
		}
	})
}

func TestGenerateKey(t *testing.T) {
	a, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != KeySize || len(b) != KeySize || bytes.Equal(a, b) {
		t.Errorf("GenerateKey: %d, %d bytes, equal=%v", len(a), len(b), bytes.Equal(a, b))
	}
	fixed := bytes.Repeat([]byte{0x42}, 40)
	c, err := GenerateKey(bytes.NewReader(fixed))
	if err != nil || !bytes.Equal(c, fixed[:32]) {
		t.Errorf("GenerateKey(reader) = %x, %v; want bytes from the reader", c, err)
	}
	if _, err := GenerateKey(bytes.NewReader(make([]byte, 10))); err == nil {
		t.Error("GenerateKey accepted a short reader")
	}
	// A generated key parses back.
	r, err := ParseKeyRing("1:" + b64(a))
	if err != nil {
		t.Fatalf("generated key does not parse: %v", err)
	}
	if got, _ := r.Key(1); !bytes.Equal(got, a) {
		t.Error("generated key changed in parsing")
	}
}

func TestCheckValue(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	r, _ := ParseKeyRing("1:" + b64(k1) + ",2:" + b64(k2))
	c1, err := r.CheckValue(1)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, k1)
	m.Write([]byte("connectd encryption key check"))
	if !bytes.Equal(c1, m.Sum(nil)) {
		t.Errorf("CheckValue(1) = %x, want HMAC-SHA256(key, label)", c1)
	}
	again, _ := r.CheckValue(1)
	if !bytes.Equal(c1, again) {
		t.Error("CheckValue not deterministic")
	}
	c2, _ := r.CheckValue(2)
	if bytes.Equal(c1, c2) {
		t.Error("different keys have the same check value")
	}
	if bytes.Contains(c1, k1) {
		t.Error("check value contains the key")
	}
	if _, err := r.CheckValue(3); err == nil {
		t.Error("CheckValue of an unknown id succeeded")
	}
}

func FuzzParseKeyRing(f *testing.F) {
	f.Add("1:" + b64(testKey(1)))
	f.Add("1:" + b64(testKey(1)) + ",2:" + b64(testKey(2)))
	f.Add("")
	f.Add(",,")
	f.Add("1:" + b64(testKey(1)) + ",1:" + b64(testKey(2)))
	f.Add("x:y")
	f.Add("4294967295:" + b64(testKey(3)) + " , 0:" + b64(testKey(4)))
	f.Fuzz(func(t *testing.T, text string) {
		r, err := ParseKeyRing(text)
		if err != nil {
			if r != nil {
				t.Fatal("ring returned with an error")
			}
			if !strings.HasPrefix(err.Error(), "encryption: ") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		// A parsed ring round-trips and every key has the right size.
		if r.Len() == 0 {
			t.Fatal("empty ring parsed")
		}
		again, err := ParseKeyRing(r.Encode())
		if err != nil {
			t.Fatalf("Encode does not parse: %v", err)
		}
		if !slices.Equal(again.IDs(), r.IDs()) || again.Encode() != r.Encode() {
			t.Fatalf("round trip changed the ring: %v vs %v", again, r)
		}
		for _, id := range r.IDs() {
			if k, ok := r.Key(id); !ok || len(k) != KeySize {
				t.Fatalf("key %d: %d bytes", id, len(k))
			}
		}
		if strings.Contains(r.String(), ":") {
			t.Fatalf("String looks like key material: %q", r.String())
		}
	})
}
