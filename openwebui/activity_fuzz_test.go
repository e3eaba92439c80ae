package openwebui_test

import (
	"testing"

	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
)

// Whatever the analytics endpoint answers, the decoder either errors or
// returns writers with ids and non-negative counts; it never panics.
func FuzzParseAnalyticsUsers(f *testing.F) {
	for _, seed := range []string{
		`{"users":[]}`,
		`{"users":[{"user_id":"a","name":"A","email":"a@x","count":3,"input_tokens":0,"output_tokens":0,"total_tokens":0}]}`,
		`{"users":[{"user_id":"a","name":null,"email":null,"count":1}]}`,
		`{"users":[{"user_id":"","count":1}]}`,
		`{"users":[{"user_id":"a","count":-1}]}`,
		`{"users":null}`, `{"models":[]}`, `[]`, `null`, `{"users":[{"user_id":"a","count":2.0}]}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		users, skipped, err := openwebui.ParseAnalyticsUsers(body)
		if err != nil {
			return
		}
		for reason, n := range skipped {
			if reason != openwebui.SkipAnalyticsEntry || n <= 0 {
				t.Fatalf("skipped %d for reason %q from %q", n, reason, body)
			}
		}
		for _, u := range users {
			if u.UserID == "" || u.Count < 0 {
				t.Fatalf("accepted %+v from %q", u, body)
			}
		}
	})
}

// The chat list decoder errors or returns timestamps in epoch seconds, and
// skips (and counts) the rows it cannot read.
func FuzzParseChatList(f *testing.F) {
	for _, seed := range []string{
		`[]`,
		`[{"id":"c","title":"New Chat","updated_at":1785000000,"created_at":1784000000}]`,
		`[{"id":"c","title":"t","updated_at":1785000000,"created_at":1,"last_read_at":null}]`,
		`[{"id":"c","title":"t","updated_at":1785000000000,"created_at":1}]`,
		`[{"id":"c","title":"t","created_at":1}]`,
		`[{"id":"c","updated_at":"1785000000"}]`, `null`, `{}`, `[]]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		list, err := openwebui.ParseChatList(body)
		if err != nil {
			return
		}
		for _, at := range list.UpdatedAt {
			if at < 0 || at > 1e11 {
				t.Fatalf("accepted %d (not seconds) from %q", at, body)
			}
		}
		for reason, n := range list.Skipped {
			if (reason != openwebui.SkipChatUpdatedAt && reason != openwebui.SkipChatMilliseconds) || n <= 0 {
				t.Fatalf("skipped %d for reason %q from %q", n, reason, body)
			}
		}
	})
}
