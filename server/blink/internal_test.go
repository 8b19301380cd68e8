package blink

import (
	"testing"

	"github.com/connectd/connectd/core/jobs"
)

func TestSecretMatch(t *testing.T) {
	for _, tc := range []struct {
		name, given, expected string
		want                  int
	}{
		{"equal", "s3cret-value", "s3cret-value", 1},
		{"different", "s3cret-valuX", "s3cret-value", 0},
		{"prefix", "s3cret", "s3cret-value", 0},
		{"longer", "s3cret-value-and-more", "s3cret-value", 0},
		{"empty given", "", "s3cret-value", 0},
		{"unset expected never matches", "", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := secretMatch(tc.given, tc.expected); got != tc.want {
				t.Fatalf("secretMatch = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		status    int
		deleting  bool
		ok, retry bool
	}{
		{200, false, true, false},
		{201, false, true, false},
		{204, true, true, false},
		{404, true, true, false},
		{410, true, true, false},
		{404, false, false, false},
		{400, false, false, false},
		{401, false, false, false},
		{408, false, false, true},
		{429, false, false, true},
		{500, false, false, true},
		{503, true, false, true},
	} {
		err := classify(tc.status, tc.deleting)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%d (delete %v): %v, want done", tc.status, tc.deleting, err)
		case !tc.ok && err == nil:
			t.Errorf("%d (delete %v): done, want an error", tc.status, tc.deleting)
		case !tc.ok && jobs.IsPermanent(err) == tc.retry:
			t.Errorf("%d (delete %v): permanent = %v, want retry = %v", tc.status, tc.deleting, jobs.IsPermanent(err), tc.retry)
		}
	}
}

func TestLinkedAccountID(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"code":"OK","data":{"id":"la-1"}}`, "la-1"},
		{`{"data":{"linked_account_id":"abc"}}`, "abc"},
		{`{"id":42}`, "42"},
		{`{"linked_account_id":"x.y"}`, "x.y"},
		{`{"data":{"id":"bad id with spaces"}}`, ""},
		{`{"code":"OK"}`, ""},
		{`not json`, ""},
	} {
		if got := linkedAccountID([]byte(tc.body)); got != tc.want {
			t.Errorf("linkedAccountID(%s) = %q, want %q", tc.body, got, tc.want)
		}
	}
}

func TestExpandEscapes(t *testing.T) {
	got := expand(DefaultDeletePath, "u/1", "la?2")
	if got != "/users/u%2F1/linked-accounts/la%3F2" {
		t.Fatalf("expand = %q", got)
	}
}
