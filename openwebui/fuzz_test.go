package openwebui

import (
	"encoding/json"
	"testing"
)

// The fuzz targets feed arbitrary upstream bodies to every decoder: none may
// panic, and whatever they accept must be a well-formed, non-negative answer.
// Seeds live in testdata/fuzz/<target>/; .ci/run fuzzes each one briefly.

func FuzzParseUsage(f *testing.F) {
	f.Add([]byte(`{"model_ids":["llama3.2:3b"],"user_count":2}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		u, err := ParseUsage(body)
		if err != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		if u.UserCount < 0 {
			t.Fatalf("accepted a negative count from %q", body)
		}
		if !u.HasUserCount && u.UserIDs == nil {
			t.Fatalf("accepted %q without user_count or user_ids", body)
		}
		for _, id := range u.UserIDs {
			if id == "" {
				t.Fatalf("accepted an empty or null user id from %q", body)
			}
		}
	})
}

func FuzzParseUserPage(f *testing.F) {
	f.Add([]byte(`{"users":[{"id":"a","last_active_at":1785000000}],"total":1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParseUserPage(body)
		if err != nil {
			return
		}
		if !json.Valid(body) || p.Total < 0 {
			t.Fatalf("accepted %q as %+v", body, p)
		}
		for _, u := range p.Users {
			if u.ID == "" {
				t.Fatalf("accepted a user without id from %q", body)
			}
			if u.Stamped && (u.LastActiveAt < 0 || u.LastActiveAt > 1e11) {
				t.Fatalf("accepted last_active_at %d, not epoch seconds, from %q", u.LastActiveAt, body)
			}
		}
	})
}

func FuzzParseSession(f *testing.F) {
	f.Add([]byte(`{"id":"u1","email":"e@example.com","role":"user","token":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := ParseSession(body)
		if err == nil && (s.ID == "" || s.Role == "" || !json.Valid(body)) {
			t.Fatalf("accepted %q as %+v", body, s)
		}
	})
}

func FuzzParseVersion(f *testing.F) {
	f.Add([]byte(`{"version":"0.11.0","deployment_id":""}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := ParseVersion(body)
		if err == nil && (v == "" || !json.Valid(body)) {
			t.Fatalf("accepted %q as %q", body, v)
		}
		versionAtLeast(v, MinVersion) // must not panic on anything
	})
}

func FuzzParseDetail(f *testing.F) {
	f.Add([]byte(`{"detail":"401 Unauthorized"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		d := ParseDetail(body)
		if d != "" && !json.Valid(body) {
			t.Fatalf("found detail %q in invalid JSON %q", d, body)
		}
	})
}
