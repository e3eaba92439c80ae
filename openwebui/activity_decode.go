package openwebui

import (
	"encoding/json"
	"errors"
	"fmt"
)

// AnalyticsUser is one entry of GET /api/v1/analytics/users: how many
// assistant messages of the user's chats were created in the range.
type AnalyticsUser struct {
	UserID string
	Count  int
}

// ParseAnalyticsUsers decodes a GET /api/v1/analytics/users body,
// {"users":[{"user_id":..,"count":N,...}]}. Strict like the other decoders:
// a writer misread as a non-writer would turn the GPUs off under them.
func ParseAnalyticsUsers(body []byte) ([]AnalyticsUser, error) {
	var r struct {
		Users *[]map[string]json.RawMessage `json:"users"`
	}
	if err := decodeInto(body, &r); err != nil {
		return nil, err
	}
	if r.Users == nil {
		return nil, errors.New("no users array in the response")
	}
	out := make([]AnalyticsUser, 0, len(*r.Users))
	for i, u := range *r.Users {
		var id string
		if err := json.Unmarshal(u["user_id"], &id); err != nil || id == "" {
			return nil, fmt.Errorf("users[%d].user_id: want a non-empty string", i)
		}
		n, err := decodeCount(u["count"])
		if err != nil {
			return nil, fmt.Errorf("users[%d].count: %w", i, err)
		}
		out = append(out, AnalyticsUser{UserID: id, Count: n})
	}
	return out, nil
}

// ParseChatListNewest decodes a GET /api/v1/chats/list/user/{id} body,
// [{"id","title","updated_at","created_at",...}], and returns the newest
// updated_at (epoch seconds), 0 for a user without chats. It takes the
// maximum rather than trusting the order.
func ParseChatListNewest(body []byte) (int64, error) {
	var chats *[]map[string]json.RawMessage
	if err := decodeInto(body, &chats); err != nil {
		return 0, err
	}
	if chats == nil {
		return 0, errors.New("body is null, want an array of chats")
	}
	var newest int64
	for i, c := range *chats {
		raw, ok := c["updated_at"]
		if !ok {
			return 0, fmt.Errorf("[%d].updated_at: missing", i)
		}
		t, err := decodeInt(raw)
		if err != nil {
			return 0, fmt.Errorf("[%d].updated_at: %w", i, err)
		}
		if t > 1e11 {
			// Open WebUI's chat timestamps are int(time.time()): seconds.
			return 0, fmt.Errorf("[%d].updated_at: %d is not in epoch seconds", i, t)
		}
		newest = max(newest, t)
	}
	return newest, nil
}
