package encryption

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
)

func mustRing(t testing.TB, text string) *KeyRing {
	t.Helper()
	r, err := ParseKeyRing(text)
	if err != nil {
		t.Fatalf("ParseKeyRing: %v", err)
	}
	return r
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSealKnownVector pins the format and the cipher: with an injected
// nonce, Seal must produce version | key id | nonce | the published
// AES-256-GCM result (a vector from Go's crypto/cipher test suite).
func TestSealKnownVector(t *testing.T) {
	key := unhex(t, "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
	nonce := unhex(t, "e1934f5db57cc983e6b180e7")
	plaintext := unhex(t, "73ed042327f70fe9c572a61545eda8b2a0c6e1d6c291ef19248e973aee6c312012f490c2c6f6166f4a59431e182663fcaea05a")
	ad := unhex(t, "0a8a18a7150e940c3d87b38e73baee9a5c049ee21795663e264b694a949822b639092d0e67015e86363583fcf0ca645af9f43375f05fdb4ce84f411dcbca73c2220dea03a20115d2e51398344b16bee1ed7c499b353d6c597af8")
	sealed := unhex(t, "fc1ae2b5dcd2c4176c3f538b4c3cc21197f79e608cc3730167936382e4b1e5a7b75ae1678bcebd876705477eb0e0fdbbcda92fb9a0dc58c8d8f84fb590e0422e6077ef")

	ring, err := NewKeyRing(0x01020304, key)
	if err != nil {
		t.Fatal(err)
	}
	a := NewAEAD(ring, bytes.NewReader(nonce))
	got, err := a.Seal(plaintext, ad)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{1, 0x01, 0x02, 0x03, 0x04}, nonce...)
	want = append(want, sealed...)
	if !bytes.Equal(got, want) {
		t.Fatalf("Seal =\n%x\nwant\n%x", got, want)
	}
	if len(got) != len(plaintext)+Overhead {
		t.Errorf("len = %d, want plaintext+%d", len(got), Overhead)
	}
	pt, err := a.Open(got, ad)
	if err != nil || !bytes.Equal(pt, plaintext) {
		t.Fatalf("Open = %x, %v", pt, err)
	}
	if id, err := KeyIDOf(got); err != nil || id != 0x01020304 {
		t.Errorf("KeyIDOf = %d, %v", id, err)
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	a := NewAEAD(mustRing(t, "3:"+b64(testKey(3))), nil)
	ad := []byte("users/6f1c/refresh_token")
	for _, n := range []int{0, 1, 15, 16, 17, 64, 4096, 1 << 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			pt := bytes.Repeat([]byte{'s'}, n)
			ct, err := a.Seal(pt, ad)
			if err != nil {
				t.Fatal(err)
			}
			if len(ct) != n+Overhead || ct[0] != Version || binary.BigEndian.Uint32(ct[1:5]) != 3 {
				t.Fatalf("bad header/length: len=%d header=%x", len(ct), ct[:5])
			}
			got, err := a.Open(ct, ad)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, pt) {
				t.Fatal("round trip changed the plaintext")
			}
		})
	}
}

func TestConfidentiality(t *testing.T) {
	a := NewAEAD(mustRing(t, "1:"+b64(testKey(1))), nil)
	secret := []byte("canary-refresh-token-0123456789abcdef")
	ad := []byte("users/1/refresh_token")
	c1, _ := a.Seal(secret, ad)
	c2, _ := a.Seal(secret, ad)
	for i, c := range [][]byte{c1, c2} {
		if bytes.Contains(c, secret) || bytes.Contains(c, secret[:8]) {
			t.Errorf("ciphertext %d contains plaintext", i)
		}
		if bytes.Contains(c, ad) {
			t.Errorf("ciphertext %d carries the associated data", i)
		}
		if bytes.Contains(c, testKey(1)[:8]) {
			t.Errorf("ciphertext %d contains key bytes", i)
		}
	}
	if bytes.Equal(c1, c2) {
		t.Error("sealing the same plaintext twice gave the same ciphertext")
	}
}

func TestEveryBitFlipFails(t *testing.T) {
	ring := mustRing(t, "1:"+b64(testKey(1))+",2:"+b64(testKey(2)))
	a := NewAEAD(ring, nil)
	ad := []byte("users/1/api_key")
	ct, err := a.Seal([]byte("an api key worth protecting"), ad)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ct {
		for bit := range 8 {
			c := bytes.Clone(ct)
			c[i] ^= 1 << bit
			pt, err := a.Open(c, ad)
			if err == nil {
				t.Fatalf("flip byte %d bit %d: opened to %q", i, bit, pt)
			}
			if !errors.Is(err, ErrDecrypt) {
				t.Fatalf("flip byte %d bit %d: error %v does not wrap ErrDecrypt", i, bit, err)
			}
			if pt != nil {
				t.Fatalf("flip byte %d bit %d: plaintext returned with error", i, bit)
			}
		}
	}
}

func TestTruncationFails(t *testing.T) {
	a := NewAEAD(mustRing(t, "1:"+b64(testKey(1))), nil)
	ad := []byte("flows/abc/pkce_verifier")
	ct, _ := a.Seal([]byte("verifier-verifier-verifier"), ad)
	for n := range len(ct) {
		_, err := a.Open(ct[:n], ad)
		if !errors.Is(err, ErrDecrypt) {
			t.Fatalf("truncated to %d bytes: err = %v, want ErrDecrypt", n, err)
		}
	}
	// Extended ciphertexts fail too.
	if _, err := a.Open(append(bytes.Clone(ct), 0), ad); !errors.Is(err, ErrDecrypt) {
		t.Errorf("extended ciphertext: %v", err)
	}
	if _, err := a.Open(nil, ad); !errors.Is(err, ErrDecrypt) {
		t.Errorf("nil ciphertext: %v", err)
	}
}

// TestAssociatedDataBinds is the "ciphertext moved to another row or field"
// case: it must not open.
func TestAssociatedDataBinds(t *testing.T) {
	a := NewAEAD(mustRing(t, "1:"+b64(testKey(1))), nil)
	ct, err := a.Seal([]byte("refresh-token"), []byte("users/1/refresh_token"))
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range []string{
		"users/2/refresh_token",  // other row
		"users/1/access_token",   // other field
		"jobs/1/refresh_token",   // other table
		"users/1/refresh_token ", // one byte more
		"users/1/refresh_toke",   // one byte less
	} {
		t.Run(other, func(t *testing.T) {
			if pt, err := a.Open(ct, []byte(other)); !errors.Is(err, ErrDecrypt) || pt != nil {
				t.Errorf("Open under %q = %q, %v; want ErrDecrypt", other, pt, err)
			}
		})
	}
}

func TestAssociatedDataRequired(t *testing.T) {
	a := NewAEAD(mustRing(t, "1:"+b64(testKey(1))), nil)
	for _, ad := range [][]byte{nil, {}} {
		if ct, err := a.Seal([]byte("x"), ad); err == nil || ct != nil {
			t.Errorf("Seal with associated data %v = %x, %v; want an error", ad, ct, err)
		}
	}
	ct, _ := a.Seal([]byte("x"), []byte("t/1/f"))
	if _, err := a.Open(ct, nil); !errors.Is(err, ErrDecrypt) {
		t.Errorf("Open without associated data: %v", err)
	}
}

func TestUnknownKey(t *testing.T) {
	sealer := NewAEAD(mustRing(t, "7:"+b64(testKey(7))), nil)
	opener := NewAEAD(mustRing(t, "8:"+b64(testKey(8))), nil)
	ad := []byte("users/1/access_token")
	ct, _ := sealer.Seal([]byte("token"), ad)
	_, err := opener.Open(ct, ad)
	if !errors.Is(err, ErrDecrypt) || !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Open with unknown key id: %v; want ErrDecrypt and ErrUnknownKey", err)
	}
	if !strings.Contains(err.Error(), "key id 7") {
		t.Errorf("error %q does not name the key id", err)
	}
	// The same key bytes under another id do not help: the id decides.
	sameBytes := NewAEAD(mustRing(t, "9:"+b64(testKey(7))), nil)
	if _, err := sameBytes.Open(ct, ad); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Open by a ring with the key under id 9: %v", err)
	}
	// A tampered (not unknown) ciphertext is ErrDecrypt but not ErrUnknownKey.
	bad := bytes.Clone(ct)
	bad[len(bad)-1] ^= 1
	if _, err := sealer.Open(bad, ad); !errors.Is(err, ErrDecrypt) || errors.Is(err, ErrUnknownKey) {
		t.Errorf("tampered ciphertext: %v", err)
	}
}

func TestKeyIDOf(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		id   uint32
		ok   bool
	}{
		{"header only", []byte{1, 0, 0, 1, 2}, 258, true},
		{"max", []byte{1, 0xff, 0xff, 0xff, 0xff, 9, 9}, 0xffffffff, true},
		{"empty", nil, 0, false},
		{"short", []byte{1, 0, 0, 1}, 0, false},
		{"version 0", []byte{0, 0, 0, 0, 1}, 0, false},
		{"version 2", []byte{2, 0, 0, 0, 1}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := KeyIDOf(tt.in)
			if tt.ok != (err == nil) || id != tt.id {
				t.Errorf("KeyIDOf = %d, %v; want %d, ok=%v", id, err, tt.id, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrDecrypt) {
				t.Errorf("error %v does not wrap ErrDecrypt", err)
			}
		})
	}
}

func TestNonces(t *testing.T) {
	t.Run("unique over many seals", func(t *testing.T) {
		a := NewAEAD(mustRing(t, "1:"+b64(testKey(1))), nil)
		const n = 100_000
		seen := make(map[[nonceSize]byte]struct{}, n)
		for i := range n {
			ct, err := a.Seal([]byte("same"), []byte("t/1/f"))
			if err != nil {
				t.Fatal(err)
			}
			var nonce [nonceSize]byte
			copy(nonce[:], ct[versionSize+keyIDSize:headerSize])
			if _, dup := seen[nonce]; dup {
				t.Fatalf("nonce repeated after %d seals", i)
			}
			seen[nonce] = struct{}{}
		}
	})
	t.Run("come from the injected reader", func(t *testing.T) {
		src := bytes.Repeat([]byte{0xAB}, nonceSize)
		a := NewAEAD(mustRing(t, "1:"+b64(testKey(1))), bytes.NewReader(src))
		ct, err := a.Seal([]byte("x"), []byte("t/1/f"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ct[5:17], src) {
			t.Errorf("nonce = %x, want the reader's bytes", ct[5:17])
		}
		// The reader is now empty: Seal must fail, not seal with a zero nonce.
		if ct, err := a.Seal([]byte("x"), []byte("t/1/f")); err == nil || ct != nil {
			t.Errorf("Seal with an exhausted reader = %x, %v", ct, err)
		} else if !errors.Is(err, io.EOF) {
			t.Errorf("error %v does not wrap the reader's error", err)
		}
	})
}

func TestRotation(t *testing.T) {
	ad := []byte("users/42/refresh_token")
	r1 := mustRing(t, "1:"+b64(testKey(1)))
	old := NewAEAD(r1, nil)
	oldCT, _ := old.Seal([]byte("old secret"), ad)

	// Step 1: add the new key as non-primary. Sealing still uses key 1.
	r2, err := r1.Add(2, testKey(2))
	if err != nil {
		t.Fatal(err)
	}
	added := NewAEAD(r2, nil)
	ct, _ := added.Seal([]byte("x"), ad)
	if id, _ := KeyIDOf(ct); id != 1 {
		t.Errorf("after Add, Seal used key %d, want 1", id)
	}

	// Step 2: promote. New ciphertexts use key 2; old ones still open.
	r3, err := r2.Promote(2)
	if err != nil {
		t.Fatal(err)
	}
	promoted := NewAEAD(r3, nil)
	newCT, _ := promoted.Seal([]byte("new secret"), ad)
	if id, _ := KeyIDOf(newCT); id != 2 {
		t.Errorf("after Promote, Seal used key %d, want 2", id)
	}
	if pt, err := promoted.Open(oldCT, ad); err != nil || string(pt) != "old secret" {
		t.Errorf("old ciphertext after promotion = %q, %v", pt, err)
	}
	// A replica that only added the key can open what the promoted one sealed.
	if pt, err := added.Open(newCT, ad); err != nil || string(pt) != "new secret" {
		t.Errorf("new ciphertext on a replica with key 2 added = %q, %v", pt, err)
	}

	// Step 3: re-seal, then remove key 1: old ciphertext is now unknown.
	pt, _ := promoted.Open(oldCT, ad)
	resealed, _ := promoted.Seal(pt, ad)
	r4, err := r3.Remove(1)
	if err != nil {
		t.Fatal(err)
	}
	removed := NewAEAD(r4, nil)
	if _, err := removed.Open(oldCT, ad); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("old ciphertext after Remove(1): %v, want ErrUnknownKey", err)
	}
	if got, err := removed.Open(resealed, ad); err != nil || string(got) != "old secret" {
		t.Errorf("re-sealed ciphertext = %q, %v", got, err)
	}
	if _, err := r4.Remove(2); err == nil {
		t.Error("removing the last (primary) key succeeded")
	}
}

func TestConcurrentUse(t *testing.T) {
	a := NewAEAD(mustRing(t, "1:"+b64(testKey(1))+",2:"+b64(testKey(2))), nil)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ad := fmt.Appendf(nil, "users/%d/api_key", g)
			for i := range 500 {
				pt := fmt.Appendf(nil, "secret %d %d", g, i)
				ct, err := a.Seal(pt, ad)
				if err != nil {
					errs <- err
					return
				}
				got, err := a.Open(ct, ad)
				if err != nil || !bytes.Equal(got, pt) {
					errs <- fmt.Errorf("round trip %d/%d: %q, %v", g, i, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestNilRing(t *testing.T) {
	a := NewAEAD(nil, nil)
	if _, err := a.Seal([]byte("x"), []byte("t/1/f")); err == nil {
		t.Error("Seal with no ring succeeded")
	}
	ct := make([]byte, 40)
	ct[0] = Version
	if _, err := a.Open(ct, []byte("t/1/f")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("Open with no ring: %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	ring, err := ParseKeyRing("1:" + b64(testKey(1)) + ",2:" + b64(testKey(2)))
	if err != nil {
		f.Fatal(err)
	}
	// A fixed nonce: the fuzzing engine runs this setup in every worker
	// process, and all must agree on the one valid ciphertext.
	a := NewAEAD(ring, bytes.NewReader(bytes.Repeat([]byte{0x5c}, nonceSize)))
	ad := []byte("users/1/refresh_token")
	valid, err := a.Seal([]byte("the one real secret"), ad)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid, ad)
	f.Add(valid[:len(valid)-1], ad)
	f.Add(valid, []byte("users/2/refresh_token"))
	f.Add([]byte{}, []byte{})
	f.Add([]byte{1, 0, 0, 0, 9}, ad)
	f.Add(bytes.Repeat([]byte{1}, Overhead), ad)
	f.Fuzz(func(t *testing.T, ct, data []byte) {
		pt, err := a.Open(ct, data)
		if err != nil {
			if !errors.Is(err, ErrDecrypt) {
				t.Fatalf("error %v does not wrap ErrDecrypt", err)
			}
			if pt != nil {
				t.Fatal("plaintext returned with an error")
			}
			return
		}
		// Only the genuine ciphertext under its own associated data may
		// open; anything else would be a forgery.
		if !bytes.Equal(ct, valid) || !bytes.Equal(data, ad) {
			t.Fatalf("forged ciphertext opened: %x / %q -> %q", ct, data, pt)
		}
		if string(pt) != "the one real secret" {
			t.Fatalf("wrong plaintext %q", pt)
		}
	})
}

func BenchmarkSeal64(b *testing.B) {
	a := NewAEAD(mustRing(b, "1:"+b64(testKey(1))), nil)
	secret := bytes.Repeat([]byte{'s'}, 64)
	ad := []byte("users/0b8f5c52-6d1e-4c1e-9a53-0f3b2d1c9e7a/refresh_token")
	b.ReportAllocs()
	b.SetBytes(64)
	for b.Loop() {
		if _, err := a.Seal(secret, ad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen64(b *testing.B) {
	a := NewAEAD(mustRing(b, "1:"+b64(testKey(1))), nil)
	ad := []byte("users/0b8f5c52-6d1e-4c1e-9a53-0f3b2d1c9e7a/refresh_token")
	ct, err := a.Seal(bytes.Repeat([]byte{'s'}, 64), ad)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(64)
	for b.Loop() {
		if _, err := a.Open(ct, ad); err != nil {
			b.Fatal(err)
		}
	}
}
