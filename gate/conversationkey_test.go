package gate

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"testing"
)

// The key of a conversation: Open WebUI's chat id where it sends one, else
// a hash of who asks and the first user message (the same for every gate
// version and replica: a conversation must not move when a gate restarts).
func TestConversationKey(t *testing.T) {
	hash := func(user, first string) string {
		sum := sha256.Sum256([]byte(user + "\x00" + first))
		return "msg:" + hex.EncodeToString(sum[:16])
	}
	tests := []struct {
		name   string
		header http.Header
		first  string
		want   string
	}{
		{"chat id", http.Header{"X-Openwebui-Chat-Id": {"c1"}}, "hi", "chat:c1"},
		{"user and message", http.Header{"X-Openwebui-User-Id": {"u1"}}, "hi", hash("u1", "hi")},
		{"message only", http.Header{}, "why is the sky blue", hash("", "why is the sky blue")},
		{"nothing to key on", http.Header{"X-Openwebui-User-Id": {"u1"}}, "", ""},
		{"the pinned form", http.Header{}, "hi", "msg:e6908025cd50ce380feecfeaedb70ba2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := conversationKey(tt.header, tt.first); got != tt.want {
				t.Errorf("conversationKey = %q, want %q", got, tt.want)
			}
		})
	}
}
