package openwebui

import (
	"strings"
	"testing"
)

func TestParseUsage(t *testing.T) {
	cases := []struct {
		body    string
		want    Usage
		wantErr string
	}{
		{`{"model_ids":["llama3.2:3b"],"user_count":2}`, Usage{HasUserCount: true, UserCount: 2}, ""},
		{`{"model_ids":[],"user_count":0}`, Usage{HasUserCount: true}, ""},
		{`{"user_count":2.0}`, Usage{HasUserCount: true, UserCount: 2}, ""},
		{`{"model_ids":[],"user_ids":["a","b"]}`, Usage{UserIDs: []string{"a", "b"}}, ""},
		{`{"user_ids":[]}`, Usage{UserIDs: []string{}}, ""},
		{`{"user_count":1,"user_ids":["a","b"]}`, Usage{HasUserCount: true, UserCount: 1}, ""},
		{`{"model_ids":[]}`, Usage{}, "neither user_count"},
		{`{}`, Usage{}, "neither user_count"},
		{`null`, Usage{}, "body is null"},
		{`[]`, Usage{}, "invalid JSON"},
		{`{"user_count":-1}`, Usage{}, "want a count"},
		{`{"user_count":1.5}`, Usage{}, "want an integer"},
		{`{"user_count":"2"}`, Usage{}, "want an integer"},
		{`{"user_count":null}`, Usage{}, "want an integer"},
		{`{"user_count":true}`, Usage{}, "want an integer"},
		{`{"user_count":1e300}`, Usage{}, "want an integer"},
		{`{"user_count":99999999999}`, Usage{}, "implausibly large"},
		{`{"user_ids":null}`, Usage{}, "user_ids: is null"},
		{`{"user_ids":"a"}`, Usage{}, "want an array of strings"},
		{`{"user_ids":[null]}`, Usage{}, "user_ids: [0] is not a string"},
		{`{"user_ids":["a",null]}`, Usage{}, "user_ids: [1] is not a string"},
		{`{"user_ids":["a",""]}`, Usage{}, "user_ids: [1] is empty"},
		{`{"user_ids":["a",7]}`, Usage{}, "user_ids: [1] is not a string"},
		{`{"user_ids":["a",["b"]]}`, Usage{}, "user_ids: [1] is not a string"},
		{`{"user_count":1}{"user_count":2}`, Usage{}, "trailing data"},
		{`{"user_count":0}}`, Usage{}, "trailing data"}, // found by FuzzParseUsage
		{`<!doctype html>`, Usage{}, "invalid JSON"},
		{``, Usage{}, "invalid JSON"},
	}
	for _, tc := range cases {
		got, err := ParseUsage([]byte(tc.body))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseUsage(%s): err = %v, want %q", tc.body, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseUsage(%s): %v", tc.body, err)
			continue
		}
		if got.HasUserCount != tc.want.HasUserCount || got.UserCount != tc.want.UserCount || strings.Join(got.UserIDs, ",") != strings.Join(tc.want.UserIDs, ",") {
			t.Errorf("ParseUsage(%s) = %+v, want %+v", tc.body, got, tc.want)
		}
	}
}

func TestParseUserPage(t *testing.T) {
	cases := []struct {
		body      string
		wantUsers int
		wantTotal int
		wantErr   string
	}{
		{`{"users":[{"id":"a","last_active_at":1785000000},{"id":"b","last_active_at":null}],"total":2}`, 2, 2, ""},
		{`{"users":[],"total":0}`, 0, 0, ""},
		{`[{"id":"a"}]`, 0, 0, "invalid JSON"},
		{`{"total":3}`, 0, 0, "no users array"},
		{`{"users":[],"total":-1}`, 0, 0, "total: is -1"},
		{`{"users":[]}`, 0, 0, "total: missing"},
		{`{"users":[{"last_active_at":1}],"total":1}`, 0, 0, "users[0].id"},
		{`{"users":[{"id":"a","last_active_at":"x"}],"total":1}`, 0, 0, "users[0].last_active_at"},
		{`{"users":[{"id":"a","last_active_at":1785000000000}],"total":1}`, 0, 0, "users[0].last_active_at: 1785000000000 is not a time in epoch seconds"},
		{`{"users":[{"id":"a","last_active_at":-5}],"total":1}`, 0, 0, "users[0].last_active_at: -5 is not a time"},
	}
	for _, tc := range cases {
		got, err := ParseUserPage([]byte(tc.body))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseUserPage(%s): err = %v, want %q", tc.body, err, tc.wantErr)
			}
			continue
		}
		if err != nil || len(got.Users) != tc.wantUsers || got.Total != tc.wantTotal {
			t.Errorf("ParseUserPage(%s) = %+v, %v; want %d users, total %d", tc.body, got, err, tc.wantUsers, tc.wantTotal)
		}
	}
}

func TestParseSessionAndVersion(t *testing.T) {
	if s, err := ParseSession([]byte(`{"id":"u1","role":"user","email":"e"}`)); err != nil || s.ID != "u1" || s.Role != "user" {
		t.Errorf("ParseSession = %+v, %v", s, err)
	}
	for _, bad := range []string{`{"role":"user"}`, `{"id":"u1"}`, `{"id":1,"role":"user"}`, `null`} {
		if _, err := ParseSession([]byte(bad)); err == nil {
			t.Errorf("ParseSession(%s): want an error", bad)
		}
	}
	if v, err := ParseVersion([]byte(`{"version":"0.11.0","deployment_id":""}`)); err != nil || v != "0.11.0" {
		t.Errorf("ParseVersion = %q, %v", v, err)
	}
	for _, bad := range []string{`{}`, `{"version":""}`, `{"version":11}`, `<html>`} {
		if _, err := ParseVersion([]byte(bad)); err == nil {
			t.Errorf("ParseVersion(%s): want an error", bad)
		}
	}
}

func TestVersionAtLeast(t *testing.T) {
	cases := []struct {
		v, min string
		want   bool
	}{
		{"0.6.15", "0.6.15", true},
		{"0.6.14", "0.6.15", false},
		{"0.6.40", "0.6.41", false},
		{"0.6.41", "0.6.41", true},
		{"0.10.0", "0.6.41", true},
		{"v0.11.0", "0.6.41", true},
		{"0.6.30-dev", "0.6.41", false},
		{"main", "0.6.41", true}, // unparsable: assume the newest
		{"1.0", "0.6.41", true},
	}
	for _, tc := range cases {
		if got := versionAtLeast(tc.v, tc.min); got != tc.want {
			t.Errorf("versionAtLeast(%q, %q) = %v, want %v", tc.v, tc.min, got, tc.want)
		}
	}
}

func TestTokens(t *testing.T) {
	src, err := StaticToken("  sk-0123456789abcdef0123456789abcdef\n")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := src(); got != "sk-0123456789abcdef0123456789abcdef" {
		t.Errorf("token = %q, want it trimmed", got)
	}
}

// TestTokenText: a token is printable ASCII. A leading byte-order mark
// (Windows editors write one) is dropped; anything else invisible is an
// error that says so, without quoting the token.
func TestTokenText(t *testing.T) {
	const key = "sk-0123456789abcdef0123456789abcdef"
	cases := []struct {
		name, in, want, wantErr string
	}{
		{"plain", key, key, ""},
		{"trailing newline", key + "\n", key, ""},
		{"UTF-8 BOM", "\uFEFF" + key + "\r\n", key, ""},
		{"BOM after white space", " \uFEFF" + key, key, ""},
		{"empty", "", "", "the token is empty"},
		{"only white space", "  \n", "", "the token is empty"},
		{"only a BOM", "\uFEFF\n", "", "the token is empty"},
		{"Bearer prefix", "Bearer " + key, "", `starts with "Bearer "`},
		{"two tokens", "sk-1 sk-2", "", "white space at byte 4"},
		{"NUL", "sk-1\x00", "", "non-printable or non-ASCII character (U+0000) at byte 4"},
		{"zero-width space", "sk-12\u200b34", "", "non-printable or non-ASCII character (U+200B) at byte 5"},
		{"BOM inside", "sk-12\uFEFF34", "", "(U+FEFF) at byte 5"},
		{"non-breaking space", "sk-12\u00a034", "", "(U+00A0) at byte 5"},
		{"not UTF-8", "sk-12\xff34", "", "(byte 0xFF, not UTF-8) at byte 5"},
		{"DEL", "sk-12\x7f", "", "(U+007F) at byte 5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src, err := StaticToken(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("StaticToken(%q): err = %v, want %q", tc.in, err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "sk-1") {
					t.Errorf("the error quotes the token: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := src(); got != tc.want {
				t.Errorf("token = %q, want %q", got, tc.want)
			}
		})
	}
}
