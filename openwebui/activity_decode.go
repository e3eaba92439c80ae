package openwebui

import (
	"encoding/json"
	"errors"
)

// AnalyticsUser is one entry of GET /api/v1/analytics/users: how many
// assistant messages of the user's chats were created in the range.
type AnalyticsUser struct {
	UserID string
	Count  int
}

// Reasons a row of an answer is skipped (the reason label of
// openwebui_skipped_rows_total).
const (
	SkipAnalyticsEntry   = "analytics_entry_invalid"
	SkipChatUpdatedAt    = "chat_updated_at_invalid"
	SkipChatMilliseconds = "chat_updated_at_not_seconds"
)

// ParseAnalyticsUsers decodes a GET /api/v1/analytics/users body,
// {"users":[{"user_id":..,"count":N,...}]}. The shape is strict (an answer
// without a users array is an error), but one entry that cannot be read is
// skipped and counted in skipped, so that one user's bad row cannot fail
// the count for everybody.
func ParseAnalyticsUsers(body []byte) ([]AnalyticsUser, map[string]int, error) {
	var r struct {
		Users *[]map[string]json.RawMessage `json:"users"`
	}
	if err := decodeInto(body, &r); err != nil {
		return nil, nil, err
	}
	if r.Users == nil {
		return nil, nil, errors.New("no users array in the response")
	}
	out := make([]AnalyticsUser, 0, len(*r.Users))
	skipped := map[string]int{}
	for _, u := range *r.Users {
		var id string
		if err := json.Unmarshal(u["user_id"], &id); err != nil || id == "" {
			skipped[SkipAnalyticsEntry]++
			continue
		}
		n, err := decodeCount(u["count"])
		if err != nil {
			skipped[SkipAnalyticsEntry]++
			continue
		}
		out = append(out, AnalyticsUser{UserID: id, Count: n})
	}
	return out, skipped, nil
}

// ChatList is a decoded GET /api/v1/chats/list/user/{id} body.
type ChatList struct {
	UpdatedAt []int64        // every readable updated_at, epoch seconds
	Skipped   map[string]int // rows skipped, by reason
}

// ParseChatList decodes a GET /api/v1/chats/list/user/{id} body,
// [{"id","title","updated_at","created_at",...}]. A body that is not an
// array of objects is an error; a row whose updated_at is missing, not an
// integer or not in epoch seconds (a chat import takes it from the browser)
// is skipped and counted.
func ParseChatList(body []byte) (ChatList, error) {
	var chats *[]map[string]json.RawMessage
	if err := decodeInto(body, &chats); err != nil {
		return ChatList{}, err
	}
	if chats == nil {
		return ChatList{}, errors.New("body is null, want an array of chats")
	}
	list := ChatList{Skipped: map[string]int{}}
	for _, c := range *chats {
		raw, ok := c["updated_at"]
		if !ok {
			list.Skipped[SkipChatUpdatedAt]++
			continue
		}
		t, err := decodeInt(raw)
		if err != nil || t < 0 {
			list.Skipped[SkipChatUpdatedAt]++
			continue
		}
		if t > 1e11 {
			// Open WebUI's chat timestamps are int(time.time()): seconds.
			list.Skipped[SkipChatMilliseconds]++
			continue
		}
		list.UpdatedAt = append(list.UpdatedAt, t)
	}
	return list, nil
}
