package fakeopenwebui

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// HeartbeatInterval is how often an open tab's frontend sends the socket
// heartbeat that stamps last_active_at (src/routes/+layout.svelte).
const HeartbeatInterval = 30 * time.Second

// chat is a row of the chat table: epoch seconds, like the DB columns.
type chat struct {
	id, userID, title string
	created, updated  int64
}

// chatMessage is a row of the chat_message table (0.8.0+). created_at is
// epoch seconds: the message's own "timestamp" (for the assistant
// placeholder the server's int(time.time()) on 0.10.0+).
type chatMessage struct {
	chatID, userID, role string
	created              int64
}

// beat applies the heartbeats that open tabs sent up to now (TabHeartbeats):
// every 30 s since the tab opened, each a call of the throttled write in
// the tab's process, in time order. Lazy, so that a fake clock can jump
// hours at once: it steps from write to write, not from beat to beat.
// Called with s.mu held.
func (s *Server) beat() {
	if !s.cfg.TabHeartbeats || !s.at("0.6.41") {
		return
	}
	now := s.cfg.Now()
	for id, since := range s.tabSince {
		if now.Before(since) {
			continue
		}
		latest := since.Add(now.Sub(since) / HeartbeatInterval * HeartbeatInterval)
		next := s.tabBeat[id].Add(HeartbeatInterval)
		proc := s.tabProc[id]
		for !next.After(latest) {
			if prev, ok := s.procs[proc].lastWrite[id]; ok && next.Sub(prev) < s.cfg.StatusUpdateInterval {
				// Dropped until the interval has passed: skip to the
				// first beat at or after that.
				wait := prev.Add(s.cfg.StatusUpdateInterval).Sub(next)
				next = next.Add((wait + HeartbeatInterval - 1) / HeartbeatInterval * HeartbeatInterval)
				continue
			}
			if s.cfg.StatusUpdateInterval == 0 {
				next = latest // every beat writes: the latest one is what stays
			}
			s.write(id, proc, next)
			next = next.Add(HeartbeatInterval)
		}
		s.tabBeat[id] = latest
	}
}

// SetOllamaDown models Ollama scaled to zero (true) or running. It changes
// what a send writes only before 0.10.0, where the assistant row of
// chat_message appears with the answer (see Send).
func (s *Server) SetOllamaDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ollamaDown = down
}

// Send models the user (created if missing) sending a chat message from a
// tab in the browser, and returns the user's id. Like the real request it
// stamps the user active (and the tab is open), then writes what Open WebUI
// writes at send time, before and whether or not the model answers:
//   - 0.10.0+ (main.py chat_completion, before the model is called): the
//     user's message and an assistant placeholder (role "assistant",
//     created_at = the server's clock) into chat_message, and the chat's
//     updated_at; a first message creates the chat.
//   - 0.8.0-0.9.x: the frontend saves the chat first (updated_at, and the
//     rows of a new chat); for an existing chat the assistant row is written
//     with the model's answer, or after the request to Ollama failed. The
//     fake writes it at once if Ollama is up and not at all if it is down.
//   - before 0.8.0: the chat only (no chat_message table).
func (s *Server) Send(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.userByName(name)
	if u == nil {
		u = s.addUser(name, "user")
	}
	s.touch(u.id)                  // the tab the message is typed in
	s.stamp(u.id, s.pickProcess()) // the authenticated send request, through the Service
	now := s.cfg.Now().Unix()
	var c *chat
	for _, x := range s.chats {
		if x.userID == u.id && (c == nil || x.updated > c.updated) {
			c = x
		}
	}
	isNew := c == nil
	if isNew {
		s.seq++
		c = &chat{id: fmt.Sprintf("c%07x-0000-4000-8000-%012x", s.seq, s.seq), userID: u.id, title: "New Chat", created: now}
		s.chats = append(s.chats, c)
	}
	c.updated = now
	if !s.at("0.8.0") {
		return u.id
	}
	s.messages = append(s.messages, chatMessage{chatID: c.id, userID: u.id, role: "user", created: now})
	if s.at("0.10.0") || isNew || !s.ollamaDown {
		s.messages = append(s.messages, chatMessage{chatID: c.id, userID: u.id, role: "assistant", created: now})
	}
	return u.id
}

// queryInt parses an optional integer query parameter like FastAPI: absent
// is def; anything but an integer is a 422.
func queryInt(c call, key string, def int64) (int64, *reply) {
	raw := c.r.URL.Query().Get(key)
	if raw == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		rep := jsonReply(http.StatusUnprocessableEntity, map[string]any{"detail": []map[string]any{{
			"type": "int_parsing", "loc": []string{"query", key},
			"msg": "Input should be a valid integer, unable to parse string as an integer", "input": raw,
		}}})
		return 0, &rep
	}
	return n, nil
}

// handleAnalyticsUsers is GET /api/v1/analytics/users (routers/analytics.py,
// admin only): per user, the assistant rows of chat_message whose
// created_at is within [start_date, end_date] (a bound of 0 or none is no
// bound), sorted by count and cut at limit (default 50).
func (s *Server) handleAnalyticsUsers(c call) reply {
	if c.u.role != "admin" {
		return forbidden()
	}
	start, fail := queryInt(c, "start_date", 0)
	if fail != nil {
		return *fail
	}
	end, fail := queryInt(c, "end_date", 0)
	if fail != nil {
		return *fail
	}
	limit, fail := queryInt(c, "limit", 50)
	if fail != nil {
		return *fail
	}
	counts := map[string]int{}
	for _, m := range s.messages {
		if m.role == "assistant" && (start == 0 || m.created >= start) && (end == 0 || m.created <= end) {
			counts[m.userID]++
		}
	}
	ids := make([]string, 0, len(counts))
	for id := range counts {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		if counts[ids[i]] != counts[ids[j]] {
			return counts[ids[i]] > counts[ids[j]]
		}
		return ids[i] < ids[j]
	})
	if limit >= 0 && int64(len(ids)) > limit {
		ids = ids[:limit]
	}
	users := make([]map[string]any, 0, len(ids))
	for _, id := range ids {
		var name, email any
		if u := s.byID[id]; u != nil {
			name, email = u.name, u.email
		}
		users = append(users, map[string]any{
			"user_id": id, "name": name, "email": email, "count": counts[id],
			"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
		})
	}
	return jsonReply(http.StatusOK, map[string]any{"users": users})
}

// handleUserChatList is GET /api/v1/chats/list/user/{user_id} (routers/chats.py,
// admin only, ENABLE_ADMIN_CHAT_ACCESS): 60 chats a page, by updated_at desc
// unless order_by/direction say otherwise; an unknown user has no chats.
func (s *Server) handleUserChatList(c call, userID string) reply {
	if c.u.role != "admin" || s.cfg.DisableAdminChatAccess {
		return forbidden()
	}
	page, fail := queryInt(c, "page", 1)
	if fail != nil {
		return *fail
	}
	q := c.r.URL.Query()
	var list []*chat
	for _, x := range s.chats {
		if x.userID == userID {
			list = append(list, x)
		}
	}
	key := func(x *chat) int64 { return x.updated }
	if q.Get("order_by") == "created_at" {
		key = func(x *chat) int64 { return x.created }
	}
	asc := q.Get("direction") == "asc" && q.Get("order_by") != ""
	sort.SliceStable(list, func(i, j int) bool {
		if key(list[i]) != key(list[j]) {
			return (key(list[i]) < key(list[j])) == asc
		}
		return list[i].id < list[j].id
	})
	skip := min(max(int(page)-1, 0)*60, len(list))
	list = list[skip:min(skip+60, len(list))]
	out := make([]map[string]any, 0, len(list))
	for _, x := range list {
		e := map[string]any{"id": x.id, "title": x.title, "updated_at": x.updated, "created_at": x.created}
		if s.at("0.10.0") {
			e["last_read_at"] = x.updated
		}
		out = append(out, e)
	}
	return jsonReply(http.StatusOK, out)
}

// AddUserIfMissing returns the id of the user called name, created (role
// "user", last active a day ago) if there is none.
func (s *Server) AddUserIfMissing(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.userByName(name); u != nil {
		return u.id
	}
	return s.addUser(name, "user").id
}

// CloseTab closes the user's browser tab: its heartbeats stop, and on
// 0.6.41+ the user stays active until 180 s after the last stamp, as in
// Open WebUI (Leave, in contrast, makes the user inactive at once).
func (s *Server) CloseTab(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beat()
	s.closeTab(userID)
}

// ActiveCount is Open WebUI's own count of active users, the holders of a
// credential (the exporter) left out.
func (s *Server) ActiveCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beat()
	n, now := 0, s.cfg.Now()
	for _, u := range s.users {
		if !s.service[u.id] && s.isActive(u, now) {
			n++
		}
	}
	return n
}

// RequestsWithPrefix counts requests to the paths that start with prefix.
func (s *Server) RequestsWithPrefix(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for p, k := range s.requests {
		if strings.HasPrefix(p, prefix) {
			n += k
		}
	}
	return n
}

// ImportChat models POST /api/v1/chats/import by the user called name
// (created if missing): Open WebUI takes the chat's updated_at from the
// browser (models/chats.py, form_data.updated_at or int(time.time())), so
// it may be in the future or in milliseconds. On 0.8.0+ the chat's messages
// are also written to chat_message, with the browser's timestamp normalised
// as chat_messages.py _normalize_timestamp does: milliseconds become
// seconds, and anything before 2020 or more than a day ahead becomes now.
func (s *Server) ImportChat(name string, updatedAt int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.userByName(name)
	if u == nil {
		u = s.addUser(name, "user")
	}
	s.stamp(u.id, s.pickProcess()) // the authenticated import request
	now := s.cfg.Now().Unix()
	s.seq++
	c := &chat{id: fmt.Sprintf("c%07x-0000-4000-8000-%012x", s.seq, s.seq), userID: u.id, title: "Imported", created: updatedAt, updated: updatedAt}
	s.chats = append(s.chats, c)
	if s.at("0.8.0") {
		created := updatedAt
		if created > 10_000_000_000 {
			created /= 1000
		}
		if created < 1577836800 || created > now+86400 {
			created = now
		}
		s.messages = append(s.messages, chatMessage{chatID: c.id, userID: u.id, role: "assistant", created: created})
	}
	return u.id
}

// SetVersion models an upgrade (or downgrade) of Open WebUI: a restart
// with another version behind the same URL and database.
func (s *Server) SetVersion(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.Version, s.ver = v, parseVersion(v)
}

// ResetRequests forgets the request counts (Requests, RequestsWithPrefix).
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = map[string]int{}
}
