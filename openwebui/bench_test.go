package openwebui

import (
	"fmt"
	"strings"
	"testing"
)

func BenchmarkParseUsage(b *testing.B) {
	for _, tc := range []struct{ name, body string }{
		{"user_count", `{"model_ids":["llama3.2:3b"],"user_count":2}`},
		{"user_ids_35", `{"model_ids":[],"user_ids":["` + strings.Repeat(`8c1f0b1e-3c55-4c55-9a0c-2a9d3f1f7e11","`, 34) + `b7e2c9a4-5d1e-4f0a-8f3e-6a1b2c3d4e5f"]}`},
	} {
		body := []byte(tc.body)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := ParseUsage(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseUserPage(b *testing.B) {
	var users []string
	for i := range 30 {
		users = append(users, fmt.Sprintf(`{"id":"user-%02d","email":"u%d@example.com","role":"user","name":"User %d","profile_image_url":"/api/v1/users/user-%02d/profile/image","last_active_at":%d,"updated_at":1784000000,"created_at":1780000000,"group_ids":[]}`, i, i, i, i, 1785000000-i))
	}
	body := []byte(`{"users":[` + strings.Join(users, ",") + `],"total":30}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := ParseUserPage(body); err != nil {
			b.Fatal(err)
		}
	}
}
