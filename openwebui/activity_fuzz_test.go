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
		users, err := openwebui.ParseAnalyticsUsers(body)
		if err != nil {
			return
		}
		for _, u := range users {
			if u.UserID == "" || u.Count < 0 {
				t.Fatalf("accepted %+v from %q", u, body)
			}
		}
	})
}

// The chat list decoder errors or returns a timestamp in epoch seconds.
func FuzzParseChatListNewest(f *testing.F) {
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
		newest, err := openwebui.ParseChatListNewest(body)
		if err == nil && newest > 1e11 {
			t.Fatalf("accepted %d (not seconds) from %q", newest, body)
		}
	})
}
