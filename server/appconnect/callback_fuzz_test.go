package appconnect_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/server/appconnect"
)

// FuzzParseCallback: whatever the query, ParseCallback does not panic,
// fails only with a typed failure, is deterministic, and on success keeps
// its promises: state or error present, Extra bounded (32 keys, values of
// at most 2048 bytes) and never carrying the code, the provider's
// error_description, or tokens the caller should not echo.
func FuzzParseCallback(f *testing.F) {
	seeds := []string{
		"callbackUri=" + "https%3A%2F%2Fclient.example%2Fredirect.html%3Fcode%3Dc1%26state%3Ds1",
		"callbackUri=https%3A%2F%2Fx%3Ferror%3Daccess_denied%26error_description%3Dsecret&state=s",
		"callbackUri=%25zz%3Fstate%3Ds&code=c&platform=p&hostname=h.example&tokenUrl=t&apiUrl=a&username=u",
		"callbackUri=x&state=s&jwtToken=j&rcAccessToken=r&extra=1&extra=2",
		"callbackUri=",
		"state=s",
		"%",
		"callbackUri=http://[::1%3Fstate=s",
		strings.Repeat("a=b&", 40) + "callbackUri=x%3Fstate%3Ds",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		p, err := appconnect.ParseCallback(q)
		p2, err2 := appconnect.ParseCallback(q)
		if (err == nil) != (err2 == nil) || !reflect.DeepEqual(p, p2) {
			t.Fatalf("not deterministic: %+v %v / %+v %v", p, err, p2, err2)
		}
		if err != nil {
			var fe *failure.Error
			if !errors.As(err, &fe) {
				t.Fatalf("untyped error %T: %v", err, err)
			}
			return
		}
		if len(q) > 16<<10 {
			t.Fatalf("accepted a %d-byte query", len(q))
		}
		if p.State == "" && p.Error == "" {
			t.Fatalf("success without state or error: %+v", p)
		}
		if len(p.Extra) > 32 {
			t.Fatalf("Extra has %d keys", len(p.Extra))
		}
		for k, v := range p.Extra {
			switch k {
			case "callbackUri", "code", "state", "error", "error_description", "jwtToken", "rcAccessToken":
				t.Fatalf("Extra carries %q", k)
			}
			if len(v) > 2048 {
				t.Fatalf("Extra[%q] has %d bytes", k, len(v))
			}
		}
	})
}
