package fakeopenwebui

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// An open tab keeps its user active through heartbeats, on the fake clock,
// however long it stays open; a closed one stops.
func TestTabHeartbeats(t *testing.T) {
	e := newEnv(t, Config{TabHeartbeats: true})
	alice := e.AddUser("alice", "user")
	e.Touch(alice)
	opened := e.clk.Now().Unix()
	e.clk.Advance(10*time.Hour + 45*time.Second)
	if got, want := e.LastActive(alice).Unix(), opened+int64((10*time.Hour+30*time.Second)/time.Second); got != want {
		t.Fatalf("last_active_at %d, want the latest 30 s heartbeat %d", got, want)
	}
	if n := e.usageCount(e.key); n != 2 { // alice and the exporter itself
		t.Fatalf("user_count %d, want 2", n)
	}
	e.Leave(alice)
	e.clk.Advance(time.Hour)
	if n := e.usageCount(e.key); n != 1 {
		t.Fatalf("user_count %d after the tab closed, want 1", n)
	}
}

// POST /_fake/send: the exact contract other suites rely on.
func TestFakeSendEndpoint(t *testing.T) {
	e := newEnv(t, Config{})
	r := e.do("POST", "/_fake/send?name=dora")
	var v map[string]string
	if r.status != 200 || json.Unmarshal([]byte(r.body), &v) != nil || len(v) != 1 || v["id"] == "" {
		t.Fatalf("got %d %s, want 200 {\"id\":...}", r.status, r.body)
	}
	if got := e.LastActive(v["id"]); !got.Equal(time.Unix(e.clk.Now().Unix(), 0)) {
		t.Fatalf("the sender's last_active_at is %v, want now", got)
	}
	again := e.do("POST", "/_fake/send?name=dora")
	want(t, again, 200, r.body) // the same user, not a new one
	want(t, e.do("POST", "/_fake/send"), 400, det("need name"))
	want(t, e.do("GET", "/_fake/send?name=dora"), 405, det("Method Not Allowed"))
}

// What a send writes, per version, as the analytics endpoint and the admin
// chat list show it; "down" is Ollama scaled to zero at send time.
func TestSendWritesWhatUpstreamWrites(t *testing.T) {
	for _, tc := range []struct {
		version          string
		down             bool
		first, second    int // analytics count after the first and the second send
		analyticsMounted bool
	}{
		{"0.11.0", true, 1, 2, true}, // main.py writes the placeholder before calling the model
		{"0.10.0", true, 1, 2, true},
		{"0.9.5", true, 1, 1, true},   // the frontend saved the chat; no row for an existing chat yet
		{"0.8.12", false, 1, 2, true}, // the answer writes the row
		{"0.8.12", true, 1, 1, true},  // no answer, no row for an existing chat
		{"0.7.2", true, 0, 0, false},
	} {
		t.Run(fmt.Sprintf("%s down=%v", tc.version, tc.down), func(t *testing.T) {
			e := newEnv(t, Config{Version: tc.version})
			e.SetOllamaDown(tc.down)
			start := e.clk.Now().Unix()
			id := e.Send("alice")
			for i, wantCount := range []int{tc.first, tc.second} {
				if i == 1 {
					e.clk.Advance(time.Minute)
					e.Send("alice")
				}
				r := e.get(fmt.Sprintf("/api/v1/analytics/users?start_date=%d", start), e.key)
				if !tc.analyticsMounted {
					if r.status != 200 || r.ctype != "text/html; charset=utf-8" {
						t.Fatalf("analytics before 0.8.0: got %d %s, want the SPA", r.status, r.ctype)
					}
					continue
				}
				body := `{"users":[]}`
				if wantCount > 0 {
					body = fmt.Sprintf(`{"users":[{"count":%d,"email":"alice@example.com","input_tokens":0,"name":"alice","output_tokens":0,"total_tokens":0,"user_id":"%s"}]}`, wantCount, id)
				}
				want(t, r, 200, body)
			}
			chats := e.get("/api/v1/chats/list/user/"+id+"?page=1&order_by=updated_at&direction=desc", e.key)
			var list []map[string]any
			if err := json.Unmarshal([]byte(chats.body), &list); err != nil || len(list) != 1 || list[0]["updated_at"] != float64(e.clk.Now().Unix()) {
				t.Fatalf("chat list: %d %s, want one chat updated now (%d)", chats.status, chats.body, e.clk.Now().Unix())
			}
		})
	}
}

// The admin endpoints' auth rules and gates.
func TestAdminActivityEndpointsAuth(t *testing.T) {
	e := newEnv(t, Config{})
	user := e.IssueAPIKey(e.AddUser("bob", "user"))
	alice := e.Send("alice")
	for _, path := range []string{"/api/v1/analytics/users", "/api/v1/chats/list/user/" + alice} {
		want(t, e.get(path, user), 401, det(msgAccessProhibited))
		want(t, e.do("GET", path), 401, det(msgNotAuthenticated))
	}
	want(t, e.get("/api/v1/analytics/users?start_date=yesterday", e.key), 422,
		`{"detail":[{"input":"yesterday","loc":["query","start_date"],"msg":"Input should be a valid integer, unable to parse string as an integer","type":"int_parsing"}]}`)
	want(t, e.get("/api/v1/chats/list/user/nobody", e.key), 200, `[]`)

	off := newEnv(t, Config{DisableAdminAnalytics: true, DisableAdminChatAccess: true})
	id := off.Send("alice")
	if r := off.get("/api/v1/analytics/users", off.key); r.status != 200 || r.ctype != "text/html; charset=utf-8" {
		t.Fatalf("ENABLE_ADMIN_ANALYTICS=false: got %d %s, want the SPA (router not mounted)", r.status, r.ctype)
	}
	want(t, off.get("/api/v1/chats/list/user/"+id, off.key), 401, det(msgAccessProhibited))
}

// Analytics sorts by count and cuts at limit, like upstream: a caller that
// wants every writer must ask for enough.
func TestAnalyticsLimit(t *testing.T) {
	e := newEnv(t, Config{})
	e.Send("alice")
	e.Send("alice")
	e.Send("bob")
	r := e.get("/api/v1/analytics/users?limit=1", e.key)
	var v struct {
		Users []struct {
			Name  string `json:"name"`
			Count int    `json:"count"`
		} `json:"users"`
	}
	if err := json.Unmarshal([]byte(r.body), &v); err != nil || len(v.Users) != 1 || v.Users[0].Name != "alice" || v.Users[0].Count != 2 {
		t.Fatalf("got %d %s, want only alice with 2", r.status, r.body)
	}
}
