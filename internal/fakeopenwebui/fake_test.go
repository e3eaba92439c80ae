package fakeopenwebui

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

type env struct {
	*Server
	t     *testing.T
	clk   *Clock
	url   string
	admin string // admin id
	key   string // admin API key
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	clk := NewClock(time.Unix(1785000000, 500e6))
	cfg.Now = clk.Now
	s := New(cfg)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	e := &env{Server: s, t: t, clk: clk, url: ts.URL}
	e.admin = s.AddUser("exporter", "admin")
	e.key = s.IssueAPIKey(e.admin)
	return e
}

type resp struct {
	status int
	ctype  string
	body   string
	hdr    http.Header
}

func (e *env) do(method, path string, hdr ...string) resp {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.url+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, r.Header.Get("Content-Type"), string(b), r.Header}
}

func (e *env) get(path, token string) resp {
	e.t.Helper()
	return e.do("GET", path, "Authorization", "Bearer "+token)
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

func (e *env) usageCount(token string) int {
	e.t.Helper()
	r := e.get("/api/usage", token)
	var v struct {
		UserCount *int `json:"user_count"`
	}
	if r.status != 200 || json.Unmarshal([]byte(r.body), &v) != nil || v.UserCount == nil {
		e.t.Fatalf("usage: %d %s", r.status, r.body)
	}
	return *v.UserCount
}

func want(t *testing.T, r resp, status int, body string) {
	t.Helper()
	if r.status != status || r.body != body {
		t.Fatalf("got %d %s, want %d %s", r.status, r.body, status, body)
	}
	if r.ctype != "application/json" {
		t.Fatalf("content-type %q", r.ctype)
	}
}

func det(s string) string { return `{"detail":"` + s + `"}` }

func TestVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		v, min string
		ok     bool
	}{{"0.6.41", "0.6.41", true}, {"0.6.40", "0.6.41", false}, {"0.10.0", "0.9.0", true}, {"0.6.100", "0.6.41", true}, {"v1.0.0", "0.11.0", true}} {
		if versionAtLeast(c.v, c.min) != c.ok {
			t.Errorf("versionAtLeast(%s,%s) != %v", c.v, c.min, c.ok)
		}
	}
}

func TestPublicEndpoints(t *testing.T) {
	for v, body := range map[string]string{"0.6.36": `{"version":"0.6.36"}`, "0.6.37": `{"deployment_id":"","version":"0.6.37"}`} {
		e := newEnv(t, Config{Version: v})
		want(t, e.do("GET", "/api/version"), 200, body)
		want(t, e.do("GET", "/health"), 200, `{"status":true}`)
		want(t, e.do("POST", "/api/usage", bearer(e.key)...), 405, det("Method Not Allowed"))
	}
}

func TestAuthMatrix(t *testing.T) {
	full := "/api/v1/auths/"
	cases := []struct {
		name, version string
		cfg           Config
		cred          func(e *env) []string
		path          string
		status        int
		detail        string
	}{
		{"no credential", "", Config{}, func(*env) []string { return nil }, full, 401, msgNotAuthenticated},
		{"garbage jwt", "", Config{}, func(*env) []string { return bearer("eyJgarbage") }, full, 401, msgUnauthorized},
		{"revoked jwt", "", Config{}, func(e *env) []string { j := e.IssueJWT(e.admin); e.RevokeJWT(j); return bearer(j) }, full, 401, msgInvalidToken},
		{"unknown key", "", Config{}, func(*env) []string { return bearer("sk-ffffffffffffffffffffffffffffffff") }, full, 401, msgSessionExpired},
		{"deleted user jwt", "", Config{}, func(e *env) []string {
			id := e.AddUser("bob", "user")
			j := e.IssueJWT(id)
			e.DeleteUser(id)
			return bearer(j)
		}, full, 401, msgSessionExpired},
		{"deleted user key", "", Config{}, func(e *env) []string {
			id := e.AddUser("bob", "user")
			k := e.IssueAPIKey(id)
			e.DeleteUser(id)
			return bearer(k)
		}, full, 401, msgSessionExpired},
		{"keys disabled", "", Config{DisableAPIKeys: true}, func(e *env) []string { return bearer(e.key) }, full, 403, msgAPIKeyDisabled},
		{"restricted 0.6.36", "0.6.36", Config{APIKeyAllowedEndpoints: []string{"/api/usage"}}, func(e *env) []string { return bearer(e.key) }, full, 403, msgAPIKeyDisabled},
		{"restricted 0.8.0", "0.8.0", Config{APIKeyAllowedEndpoints: []string{"/api/usage"}}, func(e *env) []string { return bearer(e.key) }, full, 403, msgAPIKeyEndpoint},
		{"restricted 0.11.0", "", Config{APIKeyAllowedEndpoints: []string{"/api/usage"}}, func(e *env) []string { return bearer(e.key) }, full, 403, msgAccessProhibited},
		{"pending on usage", "", Config{}, func(e *env) []string { return bearer(e.IssueJWT(e.AddUser("p", "pending"))) }, "/api/usage", 401, msgAccessProhibited},
		{"non-admin on user list", "", Config{}, func(e *env) []string { return bearer(e.IssueAPIKey(e.AddUser("u", "user"))) }, "/api/v1/users/", 401, msgAccessProhibited},
		{"gate 0.6.42", "0.6.42", Config{PublicActiveUsersCountDisabled: true}, func(e *env) []string { return bearer(e.IssueAPIKey(e.AddUser("u", "user"))) }, "/api/usage", 403, msgUsageGate},
		{"x-api-key ignored 0.8.0", "0.8.0", Config{}, func(e *env) []string { return []string{"x-api-key", e.key} }, full, 401, msgNotAuthenticated},
		{"users/active 0.6.41", "0.6.41", Config{}, func(e *env) []string { return bearer(e.key) }, "/api/v1/users/active", 400, msgNotFound},
		{"users/active 0.9.0 non-admin", "0.9.0", Config{}, func(e *env) []string { return bearer(e.IssueAPIKey(e.AddUser("u", "user"))) }, "/api/v1/users/active", 401, msgAccessProhibited},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Version = c.version
			e := newEnv(t, c.cfg)
			want(t, e.do("GET", c.path, c.cred(e)...), c.status, det(c.detail))
		})
	}
}

func TestAuthsSession(t *testing.T) {
	e := newEnv(t, Config{})
	for _, hdr := range [][]string{bearer(e.key), {"Cookie", "token=" + e.key}, {"x-api-key", e.key}} {
		r := e.do("GET", "/api/v1/auths/", hdr...)
		var v map[string]any
		if r.status != 200 || json.Unmarshal([]byte(r.body), &v) != nil || v["id"] != e.admin || v["role"] != "admin" ||
			v["token"] != e.key || v["token_type"] != "Bearer" || v["expires_at"] != nil || v["email"] != "exporter@example.com" {
			t.Fatalf("%v: %d %s", hdr, r.status, r.body)
		}
	}
	pend := e.IssueJWT(e.AddUser("p", "pending"))
	if r := e.get("/api/v1/auths/", pend); r.status != 200 || !strings.Contains(r.body, `"role":"pending"`) {
		t.Fatalf("pending: %d %s", r.status, r.body)
	}
	if r := e.get("/api/v1/auths", e.key); r.status != 307 || r.hdr.Get("Location") != "/api/v1/auths/" {
		t.Fatalf("redirect: %d %v", r.status, r.hdr)
	}
}

func TestStamping(t *testing.T) {
	cases := []struct {
		version string
		cfg     Config
		jwt     bool
		counts  [2]int
	}{
		{"0.11.0", Config{}, false, [2]int{2, 2}},
		{"0.6.41", Config{}, false, [2]int{2, 2}},
		{"0.8.0", Config{}, true, [2]int{1, 2}},
		{"0.11.0", Config{}, true, [2]int{1, 2}},
		{"0.11.0", Config{JWTStampBeforeHandler: true}, true, [2]int{2, 2}},
		{"0.8.0", Config{JWTStampBeforeHandler: true}, true, [2]int{1, 2}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s jwt=%v before=%v", c.version, c.jwt, c.cfg.JWTStampBeforeHandler), func(t *testing.T) {
			c.cfg.Version = c.version
			e := newEnv(t, c.cfg)
			tok := e.key
			if c.jwt {
				tok = e.IssueJWT(e.admin)
			}
			e.Touch(e.AddUser("human", "user"))
			e.AddUser("idle", "user")
			for i, n := range c.counts {
				if got := e.usageCount(tok); got != n {
					t.Fatalf("poll %d: user_count %d, want %d", i+1, got, n)
				}
			}
			if got := e.LastActive(e.admin).Unix(); got != e.clk.Now().Unix() {
				t.Fatalf("last_active_at %d", got)
			}
		})
	}

	t.Run("stamp even on role failure, not on auth failure", func(t *testing.T) {
		e := newEnv(t, Config{})
		p := e.AddUser("p", "pending")
		before := e.LastActive(p)
		e.get("/api/usage", e.IssueJWT(p)+"x")
		if e.LastActive(p) != before {
			t.Fatal("stamped on auth failure")
		}
		e.get("/api/usage", e.IssueJWT(p))
		if e.LastActive(p).Unix() != e.clk.Now().Unix() {
			t.Fatal("not stamped on role failure")
		}
	})

	t.Run("0.6.40 never stamps", func(t *testing.T) {
		e := newEnv(t, Config{Version: "0.6.40"})
		before := e.LastActive(e.admin)
		e.get("/api/usage", e.key)
		if e.LastActive(e.admin) != before {
			t.Fatal("stamped on 0.6.40")
		}
	})

	t.Run("throttle", func(t *testing.T) {
		e := newEnv(t, Config{StatusUpdateInterval: 60 * time.Second})
		t0 := e.clk.Now().Unix()
		e.get("/api/v1/auths/", e.key)
		e.clk.Advance(30 * time.Second)
		e.get("/api/v1/auths/", e.key)
		if got := e.LastActive(e.admin).Unix(); got != t0 {
			t.Fatalf("throttled write happened: %d", got-t0)
		}
		e.clk.Advance(31 * time.Second)
		e.get("/api/v1/auths/", e.key)
		if got := e.LastActive(e.admin).Unix(); got != t0+61 {
			t.Fatalf("write after interval missing: %d", got-t0)
		}
	})
}

func TestUsageShapesAndActive(t *testing.T) {
	e := newEnv(t, Config{Version: "0.6.30"})
	a, b := e.AddUser("a", "user"), e.AddUser("b", "user")
	e.Touch(a)
	e.Touch(b)
	e.Leave(b)
	want(t, e.get("/api/usage", e.key), 200, `{"model_ids":[],"user_ids":["`+a+`"]}`)
	want(t, e.get("/api/v1/users/active", e.key), 200, `{"user_ids":["`+a+`"]}`)
	want(t, e.get("/api/v1/users/"+a+"/active", e.key), 200, `{"active":true}`)
	want(t, e.get("/api/v1/users/"+b+"/active", e.key), 200, `{"active":false}`)
	want(t, e.get("/api/v1/users/nope/active", e.key), 200, `{"active":false}`)

	e = newEnv(t, Config{})
	a = e.AddUser("a", "user")
	e.SetLastActive(a, e.clk.Now().Add(-180*time.Second)) // int(now)-180: still active
	want(t, e.get("/api/usage", e.key), 200, `{"model_ids":[],"user_count":2}`)
	want(t, e.get("/api/v1/users/"+a+"/active", e.key), 200, `{"active":true}`)
	e.clk.Advance(time.Second)
	want(t, e.get("/api/usage", e.key), 200, `{"model_ids":[],"user_count":1}`)
	e.Touch(a)
	e.clk.Advance(100 * time.Second)
	e.Heartbeat() // the open tab keeps a active
	e.clk.Advance(100 * time.Second)
	want(t, e.get("/api/v1/users/"+a+"/active", e.key), 200, `{"active":true}`)
	e.Leave(a)
	want(t, e.get("/api/v1/users/"+a+"/active", e.key), 200, `{"active":false}`)

	// Gate: admin passes, no effect before 0.6.42.
	e = newEnv(t, Config{Version: "0.6.42", PublicActiveUsersCountDisabled: true})
	want(t, e.get("/api/usage", e.key), 200, `{"model_ids":[],"user_count":1}`)
	e = newEnv(t, Config{Version: "0.6.41", PublicActiveUsersCountDisabled: true})
	want(t, e.get("/api/usage", e.IssueAPIKey(e.AddUser("u", "user"))), 200, `{"model_ids":[],"user_count":1}`)
}

func TestSPAFallback(t *testing.T) {
	e := newEnv(t, Config{Version: "0.6.10"})
	for _, p := range []string{"/api/usage", "/api/v1/users/x/active", "/api/nope", "/"} {
		r := e.get(p, e.key)
		if r.status != 200 || r.ctype != "text/html; charset=utf-8" || !strings.Contains(r.body, "Open WebUI") {
			t.Fatalf("%s: %d %q %s", p, r.status, r.ctype, r.body)
		}
	}
	if n := e.Requests("/api/usage"); n != 1 {
		t.Fatalf("Requests = %d", n)
	}
}

func TestUserListPaging(t *testing.T) {
	e := newEnv(t, Config{})
	now := e.clk.Now()
	for i := range 35 {
		e.SetLastActive(e.AddUser(fmt.Sprintf("u%02d", i), "user"), now.Add(-time.Duration(i)*time.Minute))
	}
	e.clk.Advance(time.Second)
	type page struct {
		Users []struct {
			ID, Name     string
			LastActiveAt int64    `json:"last_active_at"`
			GroupIDs     []string `json:"group_ids"`
		}
		Total int
	}
	var pages [2]page
	for i := range pages {
		r := e.get(fmt.Sprintf("/api/v1/users/?order_by=last_active_at&direction=desc&page=%d", i+1), e.key)
		if r.status != 200 || json.Unmarshal([]byte(r.body), &pages[i]) != nil {
			t.Fatalf("page %d: %d %s", i+1, r.status, r.body)
		}
	}
	if len(pages[0].Users) != 30 || len(pages[1].Users) != 6 || pages[0].Total != 36 || pages[1].Total != 36 {
		t.Fatalf("sizes %d %d total %d", len(pages[0].Users), len(pages[1].Users), pages[0].Total)
	}
	all := append(pages[0].Users, pages[1].Users...)
	if all[0].ID != e.admin || all[0].LastActiveAt != e.clk.Now().Unix() || all[1].Name != "u00" || all[35].Name != "u34" {
		t.Fatalf("order: first %+v second %+v last %+v", all[0], all[1], all[35])
	}
	for i := 1; i < len(all); i++ {
		if all[i].LastActiveAt > all[i-1].LastActiveAt || all[i].GroupIDs == nil {
			t.Fatalf("not desc at %d", i)
		}
	}
	if r := e.get("/api/v1/users?page=2", e.key); r.status != 307 || r.hdr.Get("Location") != "/api/v1/users/?page=2" {
		t.Fatalf("redirect: %d %v", r.status, r.hdr)
	}
	old := newEnv(t, Config{Version: "0.6.5"})
	if r := old.get("/api/v1/users/", old.key); r.status != 200 || !strings.HasPrefix(r.body, `[{"id":"`) {
		t.Fatalf("0.6.5 list: %d %s", r.status, r.body)
	}
}

func TestControl(t *testing.T) {
	e := newEnv(t, Config{})
	post := func(path string) resp { return e.do("POST", path) }
	var u struct{ ID, Token string }
	r := post("/_fake/users?name=bob&role=user&token=apikey")
	if r.status != 200 || json.Unmarshal([]byte(r.body), &u) != nil || !strings.HasPrefix(u.Token, "sk-") || len(u.Token) != 35 {
		t.Fatalf("users: %d %s", r.status, r.body)
	}
	post("/_fake/humans?active=3")
	if n := e.usageCount(e.key); n != 4 {
		t.Fatalf("humans=3: %d", n)
	}
	post("/_fake/active?name=alice")
	if n := e.usageCount(e.key); n != 5 {
		t.Fatalf("alice: %d", n)
	}
	post("/_fake/inactive?name=alice")
	post("/_fake/humans?active=1")
	if n := e.usageCount(e.key); n != 2 {
		t.Fatalf("humans=1: %d", n)
	}
	if n := e.usageCount(u.Token); n != 3 { // bob's key counts bob; bob is not a human
		t.Fatalf("bob: %d", n)
	}

	post("/_fake/fault?kind=500")
	want(t, e.get("/api/usage", e.key), 500, det("Internal Server Error"))
	want(t, e.do("GET", "/health"), 200, `{"status":true}`)
	post("/_fake/fault?kind=401")
	want(t, e.get("/api/usage", e.key), 401, det(msgUnauthorized))
	post("/_fake/fault?kind=403-gate")
	want(t, e.get("/api/usage", e.key), 403, det(msgUsageGate))
	post("/_fake/fault?kind=html")
	if r := e.do("GET", "/health"); r.status != 200 || !strings.HasPrefix(r.ctype, "text/html") {
		t.Fatalf("html: %d %s", r.status, r.ctype)
	}
	post("/_fake/fault?kind=slow&delay=50ms")
	start := time.Now()
	want(t, e.do("GET", "/health"), 200, `{"status":true}`)
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("slow fault not slow")
	}
	post("/_fake/fault?kind=slow&delay=1h")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/health", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("slow fault answered")
	}
	post("/_fake/fault?kind=none")
	want(t, e.get("/api/usage", e.key), 200, `{"model_ids":[],"user_count":3}`)

	e.SetOverride(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	if r := e.get("/api/usage", e.key); r.status != 502 {
		t.Fatalf("override: %d", r.status)
	}
	e.SetOverride(nil)

	r = e.do("GET", "/_fake/stats")
	var st struct{ Requests map[string]int }
	if json.Unmarshal([]byte(r.body), &st) != nil || st.Requests["/api/usage"] != e.Requests("/api/usage") || st.Requests["/health"] != 4 {
		t.Fatalf("stats: %s", r.body)
	}
	if r := post("/_fake/fault?kind=bogus"); r.status != 400 {
		t.Fatalf("bogus fault: %d", r.status)
	}
}

// TestThrottleLikeUpstream: DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL is
// utils/misc.py throttle around Users.update_last_active_by_id: per process,
// per user, leading edge (the first call writes), and a call within the
// interval of that process's write is dropped, not deferred.
func TestThrottleLikeUpstream(t *testing.T) {
	for _, interval := range []time.Duration{0, 60 * time.Second, 300 * time.Second, 500 * time.Second} {
		for _, procs := range []int{1, 3} {
			t.Run(fmt.Sprintf("T=%s R=%d", interval, procs), func(t *testing.T) {
				e := newEnv(t, Config{StatusUpdateInterval: interval, Processes: procs})
				via := make([]string, procs)
				for i := range via {
					ts := httptest.NewServer(e.Process(i))
					t.Cleanup(ts.Close)
					via[i] = ts.URL
				}
				get := func(proc int) {
					t.Helper()
					e.url = via[proc]
					if r := e.get("/api/v1/auths/", e.key); r.status != http.StatusOK {
						t.Fatalf("GET via process %d: %d", proc, r.status)
					}
				}
				stamp := func() int64 { return e.LastActive(e.admin).Unix() }
				t0 := e.clk.Now().Unix()
				get(0) // leading edge: the first call writes
				if stamp() != t0 {
					t.Fatalf("first call: last_active_at %+d s, want the call's time", stamp()-t0)
				}
				e.clk.Advance(10 * time.Second)
				get(0)
				want := t0 + 10
				if interval > 10*time.Second {
					want = t0 // dropped
				}
				if stamp() != want {
					t.Fatalf("second call via the same process 10 s later: %+d s, want %+d", stamp()-t0, want-t0)
				}
				// Dropped, not deferred: nothing is written when the
				// interval passes without a call.
				e.clk.Advance(interval)
				if stamp() != want {
					t.Fatalf("after the interval without a call: %+d s, want %+d", stamp()-t0, want-t0)
				}
				if procs > 1 {
					// Per process: another process has its own memory.
					get(1)
					if now := e.clk.Now().Unix(); stamp() != now {
						t.Fatalf("first call via process 1: %+d s, want %+d", stamp()-t0, now-t0)
					}
				}
				get(0) // the interval has passed for process 0
				if now := e.clk.Now().Unix(); stamp() != now {
					t.Fatalf("call via process 0 after the interval: %+d s, want %+d", stamp()-t0, now-t0)
				}
			})
		}
	}
}

// TestHeartbeatsThrottled: an open tab's heartbeats (every 30 s) go through
// the throttle of the process its socket is on, so last_active_at moves
// once per interval, rounded up to a heartbeat; a clock that jumps an hour
// at once gives what 120 steps of 30 s give.
func TestHeartbeatsThrottled(t *testing.T) {
	for _, interval := range []time.Duration{0, 60 * time.Second, 300 * time.Second, 500 * time.Second} {
		t.Run(fmt.Sprint(interval), func(t *testing.T) {
			beats := (interval + HeartbeatInterval - 1) / HeartbeatInterval * HeartbeatInterval
			spacing := max(beats, HeartbeatInterval)
			stepped, jumped := newEnv(t, Config{StatusUpdateInterval: interval, TabHeartbeats: true}), newEnv(t, Config{StatusUpdateInterval: interval, TabHeartbeats: true})
			var a, b string
			for _, e := range []*env{stepped, jumped} {
				id := e.AddUser("human", "user")
				e.Touch(id)
				if e == stepped {
					a = id
				} else {
					b = id
				}
			}
			t0 := stepped.clk.Now()
			var writes []int64
			last := stepped.LastActive(a).Unix()
			for range 120 {
				stepped.clk.Advance(HeartbeatInterval)
				if got := stepped.LastActive(a).Unix(); got != last {
					writes = append(writes, got-last)
					last = got
				}
			}
			for i, d := range writes {
				if d != int64(spacing/time.Second) {
					t.Fatalf("write %d came %d s after the one before, want %s", i+1, d, spacing)
				}
			}
			if want := int(time.Hour / spacing); len(writes) != want {
				t.Fatalf("%d writes in an hour, want %d", len(writes), want)
			}
			jumped.clk.Advance(time.Hour)
			if got, want := jumped.LastActive(b).Sub(t0), stepped.LastActive(a).Sub(t0); got != want {
				t.Fatalf("an hour at once: last write at +%s, step by step +%s", got, want)
			}
		})
	}
}
