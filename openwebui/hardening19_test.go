package openwebui_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
)

// Issue 19, item 1: a cached answer is never taken for a live one. The
// requests ask caches not to answer; an answer with an Age is an error
// that names the proxy.
func TestCachedAnswersAreErrors(t *testing.T) {
	now := time.Unix(1_785_000_000, 0)
	n := now.Unix()
	for _, tc := range []struct {
		name, age, wantErr string
	}{
		{"fresh", "", ""},
		{"Age 0", "0", ""},
		{"Age 120 from a cache", "120", "Age header of 120 s, so it came from a cache"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := &rawUpstream{version: "0.11.0", selfID: "self", role: "admin", date: now,
				pages: map[int]string{1: page(2, entry{"self", at(n)}, entry{"alice", at(n - 10)})}, header: http.Header{}}
			if tc.age != "" {
				up.header.Set("Age", tc.age)
			}
			srv := httptest.NewServer(up)
			defer srv.Close()
			base, _ := url.Parse(srv.URL)
			client := openwebui.NewClient(openwebui.Config{BaseURL: base, Mode: openwebui.ModeAdmin,
				Now: func() time.Time { return now }, Token: func() (string, error) { return testKey, nil }})
			got, err := client.Count(context.Background())
			for _, h := range up.requests {
				if h.Get("Cache-Control") != "no-cache" || h.Get("Pragma") != "no-cache" {
					t.Fatalf("request without Cache-Control/Pragma no-cache: %v", h)
				}
			}
			if tc.wantErr == "" {
				if err != nil || got.ActiveUsers != 1 {
					t.Fatalf("got (%+v, %v), want 1", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "caching proxy") {
				t.Fatalf("got (%+v, %v), want an error containing %q and naming the proxy", got, err, tc.wantErr)
			}
		})
	}
}

// Issue 19, item 2: a gap of over 180 s without any fetch is an outage: who
// was active at the last fetch, left and came back unseen, arrives again.
func TestIdlePolicyGapWithoutFetches(t *testing.T) {
	for _, version := range []string{"0.11.0", "0.12.0"} {
		t.Run(version, func(t *testing.T) {
			f := newIdleFixture(t, fakeopenwebui.Config{Version: version})
			steps := []idleStep{
				{name: "alice arrives", do: openTab("alice"), active: 1, engaged: 1},
				{name: "idle tab", do: wait(time.Hour), active: 1, engaged: 0},
				{name: "away, back 5 s before a fetch 500 s later", do: all(
					gap(200*time.Second), func(f *idleFixture) { f.fake.Leave(f.fake.AddUserIfMissing("alice")) },
					gap(295*time.Second), openTab("alice"), gap(5*time.Second)), active: 1, engaged: 1},
				{name: "a gap under 180 s changes nobody's arrival", do: all(wait(idleTimeout), fetch, gap(170*time.Second)), active: 1, engaged: 0},
			}
			for _, st := range steps {
				st.do(f)
				n, err := f.client.Count(context.Background())
				if err != nil || n.ActiveUsers != st.active || n.EngagedUsers != st.engaged {
					t.Fatalf("%s: got (%+v, %v), want active %d engaged %d", st.name, n, err, st.active, st.engaged)
				}
			}
		})
	}
}

// fetch is one fetch whose result is not the step's.
func fetch(f *idleFixture) { f.client.Count(context.Background()) }

// Issue 19, item 3: the chat-list path reads at most 8 lists at once, in
// parallel, and does not ask again about a user whose remembered write
// still counts.
func TestChatListsBoundedAndRemembered(t *testing.T) {
	clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
	fake := fakeopenwebui.New(fakeopenwebui.Config{Version: "0.12.0", Now: clock.Now, TabHeartbeats: true})
	self := fake.AddUser("exporter", "admin")
	key := fake.IssueAPIKey(self)
	var inFlight, most atomic.Int32
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/v1/chats/list/user/") {
			k := inFlight.Add(1)
			mu.Lock()
			most.Store(max(most.Load(), k))
			mu.Unlock()
			time.Sleep(10 * time.Millisecond) // a loaded Open WebUI
			defer inFlight.Add(-1)
		}
		fake.ServeHTTP(w, r)
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	policy, _ := openwebui.NewIdlePolicy(idleTimeout)
	client := openwebui.NewClient(openwebui.Config{BaseURL: base, Mode: openwebui.ModeAdmin, Now: clock.Now,
		Token: func() (string, error) { return key, nil }, IdlePolicy: policy})
	const tabs = 300
	for i := range tabs {
		fake.Touch(fake.AddUserIfMissing("tab-" + strconv.Itoa(i)))
	}
	count := func() openwebui.Count {
		t.Helper()
		n, err := client.Count(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n.EngagedUsers != tabs {
		t.Fatalf("arrival: engaged %d, want %d", n.EngagedUsers, tabs)
	}
	for range int(idleTimeout / pollEvery) {
		clock.Advance(pollEvery)
		count()
	}
	if n := count(); n.ActiveUsers != tabs || n.EngagedUsers != 0 {
		t.Fatalf("idle tabs: got %+v, want %d active, 0 engaged", n, tabs)
	}
	if got := most.Load(); got < 2 || got > 8 {
		t.Fatalf("at most %d chat lists were read at once, want between 2 and 8", got)
	}
	writer := fake.Send("tab-7")
	if n := count(); n.EngagedUsers != 1 {
		t.Fatalf("after a send: engaged %d, want 1", n.EngagedUsers)
	}
	asked := fake.Requests("/api/v1/chats/list/user/" + writer)
	clock.Advance(time.Minute)
	if n := count(); n.EngagedUsers != 1 {
		t.Fatalf("a minute later: engaged %d, want 1", n.EngagedUsers)
	}
	if got := fake.Requests("/api/v1/chats/list/user/" + writer); got != asked {
		t.Fatalf("the writer's chat list was read again (%d -> %d) while the remembered write still counts", asked, got)
	}
}

// Issue 19, item 4: timestamps the browser controls. A chat imported with
// updated_at ten years ahead counts as one write now, not for ten years;
// one in milliseconds is skipped and counted, and the others are counted.
func TestUserControlledTimestamps(t *testing.T) {
	for _, version := range []string{"0.12.0", "0.11.0"} {
		t.Run(version, func(t *testing.T) {
			f := newIdleFixture(t, fakeopenwebui.Config{Version: version})
			future := f.clock.Now().Add(10 * 365 * 24 * time.Hour).Unix()
			steps := []idleStep{
				{name: "two arrive", do: openTab("alice", "bob"), active: 2, engaged: 2},
				{name: "idle", do: wait(time.Hour), active: 2, engaged: 0},
				{name: "alice imports a chat ten years ahead: one write now", do: func(f *idleFixture) { f.fake.ImportChat("alice", future) }, active: 2, engaged: 1},
				{name: "still one timeout later? no", do: wait(idleTimeout), active: 2, engaged: 0},
				{name: "bob imports one in milliseconds: skipped, nobody else fails", do: func(f *idleFixture) {
					f.fake.ImportChat("bob", f.clock.Now().UnixMilli())
				}, active: 2, engaged: 0},
				{name: "and a message from alice counts", do: all(wait(idleTimeout), send("alice")), active: 2, engaged: 1},
			}
			if version == "0.11.0" {
				// Analytics counts chat_message rows, whose timestamps
				// Open WebUI normalises (milliseconds -> seconds); the
				// ten-year row becomes "now": one write either way.
				steps[4].engaged = 1
			}
			for _, st := range steps {
				st.do(f)
				n, err := f.client.Count(context.Background())
				if err != nil || n.ActiveUsers != st.active || n.EngagedUsers != st.engaged {
					t.Fatalf("%s: got (%+v, %v), want active %d engaged %d", st.name, n, err, st.active, st.engaged)
				}
			}
		})
	}
}

// Issue 19, item 4: the decoders skip bad rows, count them by reason, and
// still fail on an answer of the wrong shape.
func TestBadRowsAreSkipped(t *testing.T) {
	list, err := openwebui.ParseChatList([]byte(`[{"updated_at":1785000000000},{"updated_at":"x"},{"title":"t"},{"updated_at":1785000000}]`))
	if err != nil || len(list.UpdatedAt) != 1 || list.UpdatedAt[0] != 1785000000 ||
		list.Skipped[openwebui.SkipChatMilliseconds] != 1 || list.Skipped[openwebui.SkipChatUpdatedAt] != 2 {
		t.Fatalf("ParseChatList: got (%+v, %v)", list, err)
	}
	users, skipped, err := openwebui.ParseAnalyticsUsers([]byte(`{"users":[{"user_id":"a","count":"3"},{"user_id":"","count":1},{"user_id":"b","count":2}]}`))
	if err != nil || len(users) != 1 || users[0].UserID != "b" || skipped[openwebui.SkipAnalyticsEntry] != 2 {
		t.Fatalf("ParseAnalyticsUsers: got (%+v, %v, %v)", users, skipped, err)
	}
	for _, body := range []string{`{"users":null}`, `null`} {
		if _, _, err := openwebui.ParseAnalyticsUsers([]byte(body)); err == nil {
			t.Errorf("ParseAnalyticsUsers(%s) accepted", body)
		}
	}
	if _, err := openwebui.ParseChatList([]byte(`{"chats":[]}`)); err == nil {
		t.Error("ParseChatList accepted an object")
	}
}

// Issue 19, item 4: the skipped rows reach the Count, for the metric.
func TestSkippedRowsAreCounted(t *testing.T) {
	f := newIdleFixture(t, fakeopenwebui.Config{Version: "0.12.0"})
	openTab("bob")(f)
	fetch(f)
	f.pass(idleTimeout)
	f.fake.ImportChat("bob", f.clock.Now().UnixMilli())
	n, err := f.client.Count(context.Background())
	if err != nil || n.SkippedRows[openwebui.SkipChatMilliseconds] == 0 {
		t.Fatalf("got (%+v, %v), want a skipped row counted", n, err)
	}
}

// Issue 19, item 5: an upgrade across 0.12.0 changes the write source at the
// next fetch, not after 10 minutes: a message after it is seen at once.
func TestUpgradeChangesTheWriteSourceAtOnce(t *testing.T) {
	f := newIdleFixture(t, fakeopenwebui.Config{Version: "0.11.0"})
	openTab("alice")(f)
	f.pass(time.Hour)
	upgraded := false
	// 0.12's analytics counts a ledger the fake does not model: it lists
	// nobody, as it would for a message to a sleeping Ollama.
	f.intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if !upgraded || r.URL.Path != "/api/v1/analytics/users" {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"users":[]}`))
		return true
	}
	for _, step := range []struct {
		name    string
		do      func()
		wantErr bool
		engaged int
	}{
		{"a restart: 503 while it is down", func() {
			f.failPath, f.failStatus, f.failBody = "/api/", 503, `{"detail":"Service Unavailable"}`
		}, true, 0},
		{"back as 0.12.0, alice writes", func() {
			f.failPath, upgraded = "", true
			f.fake.SetVersion("0.12.0")
			f.fake.Send("alice")
		}, false, 1},
	} {
		step.do()
		n, err := f.client.Count(context.Background())
		if step.wantErr != (err != nil) || (!step.wantErr && n.EngagedUsers != step.engaged) {
			t.Fatalf("%s: got (%+v, %v), want engaged %d (error %v)", step.name, n, err, step.engaged, step.wantErr)
		}
		if !step.wantErr && n.Version != "0.12.0" {
			t.Fatalf("%s: version %q, want 0.12.0", step.name, n.Version)
		}
	}
}

// Issue 19, item 6: the clock tolerance is a quarter of the idle timeout
// (2 s to 30 s), and a timeout the tolerance would make meaningless is
// refused. With a 20 s timeout a Date 30 s ahead is an error, not
// "engaged 0" with up 1.
func TestClockToleranceFollowsTheIdleTimeout(t *testing.T) {
	for _, tc := range []struct {
		timeout, tolerance time.Duration
	}{
		{5 * time.Second, 2 * time.Second}, {20 * time.Second, 5 * time.Second}, {time.Minute, 15 * time.Second}, {15 * time.Minute, 30 * time.Second},
	} {
		p, err := openwebui.NewIdlePolicy(tc.timeout)
		if err != nil || p.ClockTolerance() != tc.tolerance {
			t.Errorf("NewIdlePolicy(%s): tolerance %v (%v), want %s", tc.timeout, p.ClockTolerance(), err, tc.tolerance)
		}
	}
	if _, err := openwebui.NewIdlePolicy(4 * time.Second); err == nil || !strings.Contains(err.Error(), "clock tolerance") {
		t.Errorf("NewIdlePolicy(4s): %v, want a refusal that names the clock tolerance", err)
	}
	now := time.Unix(1_785_000_000, 0)
	n := now.Unix()
	for _, tc := range []struct {
		name    string
		skew    time.Duration
		wantErr string
	}{
		{"Date 4 s ahead: within a 20 s timeout's 5 s", 4 * time.Second, ""},
		{"Date 30 s ahead", 30 * time.Second, "30s off the local clock (tolerance 5s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := &rawUpstream{version: "0.11.0", selfID: "self", role: "admin", date: now.Add(tc.skew),
				pages: map[int]string{1: page(2, entry{"self", at(n)}, entry{"alice", at(n - 10)})}}
			srv := httptest.NewServer(up)
			defer srv.Close()
			base, _ := url.Parse(srv.URL)
			policy, _ := openwebui.NewIdlePolicy(20 * time.Second)
			client := openwebui.NewClient(openwebui.Config{BaseURL: base, Mode: openwebui.ModeAdmin, IdlePolicy: policy,
				Now: func() time.Time { return now }, Token: func() (string, error) { return testKey, nil }})
			got, err := client.Count(context.Background())
			if tc.wantErr == "" {
				if err != nil || got.EngagedUsers != 1 {
					t.Fatalf("got (%+v, %v), want 1 engaged", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got (%+v, %v), want an error containing %q", got, err, tc.wantErr)
			}
		})
	}
}

// Issue 19, item 7: a version that is not a version is an error that says
// so (it would become a label value), never a label of 4 KB.
func TestVersionMustBeAVersion(t *testing.T) {
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{"version":"0.11.0"}`, true},
		{`{"version":"v0.12.0-rc.1+fork_2"}`, true},
		{`{"version":"` + strings.Repeat("é", 3000) + `"}`, false},
		{`{"version":"` + strings.Repeat("1", 65) + `"}`, false},
		{`{"version":"0.11.0 <script>"}`, false},
		{`{"version":".1"}`, false},
	} {
		_, err := openwebui.ParseVersion([]byte(tc.body))
		if tc.ok != (err == nil) {
			t.Errorf("ParseVersion(%.60s): %v, want ok %v", tc.body, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "is not a version") {
			t.Errorf("ParseVersion(%.60s): %v, want \"is not a version\"", tc.body, err)
		}
		if err != nil && len(err.Error()) > 300 {
			t.Errorf("ParseVersion(%.60s): an error of %d bytes", tc.body, len(err.Error()))
		}
	}
}
