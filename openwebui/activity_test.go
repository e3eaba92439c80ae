package openwebui_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
)

// idleFixture is a fake Open WebUI whose open tabs heartbeat on a fake
// clock, an admin exporter account, and a client with the idle policy.
type idleFixture struct {
	t      *testing.T
	clock  *fakeopenwebui.Clock
	fake   *fakeopenwebui.Server
	key    string
	self   string
	srv    *httptest.Server
	client *openwebui.Client
	// While failPath is set, requests whose path starts with it get
	// failStatus and failBody instead of the fake's answer.
	failPath, failBody string
	failStatus         int
	// intercept, when set, may answer a request itself (true).
	intercept func(w http.ResponseWriter, r *http.Request) bool
}

const idleTimeout = 15 * time.Minute

func newIdleFixture(t *testing.T, cfg fakeopenwebui.Config) *idleFixture {
	t.Helper()
	f := &idleFixture{t: t, clock: fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))}
	cfg.Now, cfg.TabHeartbeats = f.clock.Now, true
	f.fake = fakeopenwebui.New(cfg)
	f.self = f.fake.AddUser("exporter", "admin")
	f.key = f.fake.IssueAPIKey(f.self)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.intercept != nil && f.intercept(w, r) {
			return
		}
		if f.failPath != "" && strings.HasPrefix(r.URL.Path, f.failPath) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(f.failStatus)
			w.Write([]byte(f.failBody))
			return
		}
		f.fake.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	f.restart()
	return f
}

// restart is a new exporter process: a new client and policy, same Open WebUI.
func (f *idleFixture) restart() {
	policy, err := openwebui.NewIdlePolicy(idleTimeout)
	if err != nil {
		f.t.Fatal(err)
	}
	base, _ := url.Parse(f.srv.URL)
	f.client = openwebui.NewClient(openwebui.Config{BaseURL: base, Mode: openwebui.ModeAdmin, Now: f.clock.Now,
		Token: func() (string, error) { return f.key, nil }, IdlePolicy: policy})
}

type idleStep struct {
	name    string
	do      func(f *idleFixture)
	active  int
	engaged int
	err     string // a substring of the expected error; then no count
}

func openTab(names ...string) func(f *idleFixture) {
	return func(f *idleFixture) {
		for _, n := range names {
			f.fake.Touch(f.fake.AddUserIfMissing(n))
		}
	}
}

func send(name string) func(f *idleFixture) { return func(f *idleFixture) { f.fake.Send(name) } }

// pollEvery is how often the exporter is asked while a test waits: KEDA
// polls, and a gap of over 180 s without a fetch counts like an outage.
const pollEvery = 150 * time.Second

// wait lets d pass with a fetch every pollEvery (their results are not the
// step's; errors are expected while Open WebUI fails); the step's own fetch
// follows at the end.
func wait(d time.Duration) func(f *idleFixture) { return func(f *idleFixture) { f.pass(d) } }

func (f *idleFixture) pass(d time.Duration) {
	for d > pollEvery {
		f.clock.Advance(pollEvery)
		d -= pollEvery
		f.client.Count(context.Background())
	}
	f.clock.Advance(d)
}

// gap lets d pass without any fetch (KEDA or Prometheus down, or a polling
// interval over 180 s).
func gap(d time.Duration) func(f *idleFixture) { return func(f *idleFixture) { f.clock.Advance(d) } }

func all(fs ...func(f *idleFixture)) func(f *idleFixture) {
	return func(f *idleFixture) {
		for _, fn := range fs {
			fn(f)
		}
	}
}

// The idle-tab policy, step by step, on every kind of Open WebUI it reads
// writes from: the analytics router (0.10.0+), the chat list (0.8-0.9, where
// analytics misses a message to a sleeping Ollama), and the chat list when
// ENABLE_ADMIN_ANALYTICS=false.
func TestIdlePolicy(t *testing.T) {
	upstreams := map[string]fakeopenwebui.Config{
		"0.11.0 analytics":          {Version: "0.11.0"},
		"0.11.0 analytics off":      {Version: "0.11.0", DisableAdminAnalytics: true},
		"0.8.12 chat list":          {Version: "0.8.12"},
		"0.9.5 chat list":           {Version: "0.9.5"},
		"0.6.41 before analytics":   {Version: "0.6.41"},
		"0.11.0 update throttle 60": {Version: "0.11.0", StatusUpdateInterval: time.Minute},
	}
	scenarios := []struct {
		name  string
		steps []idleStep
	}{
		{"idle tabs drop to 0 after the timeout", []idleStep{
			{name: "nobody", do: wait(0)},
			{name: "two arrive", do: openTab("alice", "bob"), active: 2, engaged: 2},
			{name: "just before the timeout", do: wait(idleTimeout - time.Second), active: 2, engaged: 2},
			{name: "at the timeout", do: wait(time.Second), active: 2, engaged: 0},
			{name: "all night", do: wait(10 * time.Hour), active: 2, engaged: 0},
		}},
		{"an arrival counts at once, the others' idle tabs do not", []idleStep{
			{name: "idle tab", do: openTab("alice"), active: 1, engaged: 1},
			{name: "idle", do: wait(idleTimeout), active: 1, engaged: 0},
			{name: "carol opens Open WebUI", do: openTab("carol"), active: 2, engaged: 1},
		}},
		{"a message from an idle tab counts at once while Ollama is down", []idleStep{
			{name: "idle tab", do: openTab("alice"), active: 1, engaged: 1},
			{name: "idle for an hour", do: wait(time.Hour), active: 1, engaged: 0},
			{name: "alice writes", do: all(func(f *idleFixture) { f.fake.SetOllamaDown(true) }, wait(7*time.Second), send("alice")), active: 1, engaged: 1},
		}},
		{"the writer drops out after the timeout, each message restarts it", []idleStep{
			{name: "alice arrives", do: openTab("alice"), active: 1, engaged: 1},
			{name: "idle tab", do: wait(time.Hour), active: 1, engaged: 0},
			{name: "writes", do: send("alice"), active: 1, engaged: 1},
			{name: "writes again later", do: all(wait(10*time.Minute), send("alice")), active: 1, engaged: 1},
			{name: "just before the timeout", do: wait(idleTimeout - time.Second), active: 1, engaged: 1},
			{name: "at the timeout", do: wait(time.Second), active: 1, engaged: 0},
		}},
		{"who closes the tab and comes back arrives again", []idleStep{
			{name: "alice arrives", do: openTab("alice"), active: 1, engaged: 1},
			{name: "idle tab", do: wait(time.Hour), active: 1, engaged: 0},
			{name: "closes it", do: func(f *idleFixture) { f.fake.Leave(f.fake.AddUserIfMissing("alice")) }, active: 0, engaged: 0},
			{name: "opens it again", do: openTab("alice"), active: 1, engaged: 1},
		}},
		{"a restart counts everybody already active", []idleStep{
			{name: "two arrive", do: openTab("alice", "bob"), active: 2, engaged: 2},
			{name: "idle tabs", do: wait(time.Hour), active: 2, engaged: 0},
			{name: "exporter restarts", do: func(f *idleFixture) { f.restart() }, active: 2, engaged: 2},
			{name: "then the timeout applies", do: wait(idleTimeout), active: 2, engaged: 0},
		}},
		{"the exporter's own account never counts, even when it writes", []idleStep{
			{name: "an admin uses the exporter's account in a browser", do: all(openTab("exporter"), send("exporter")), active: 0, engaged: 0},
			{name: "and writes again", do: all(wait(time.Hour), send("exporter")), active: 0, engaged: 0},
		}},
		{"after an outage longer than Open WebUI's window everybody counts as arrived (anybody may have left and come back)", []idleStep{
			{name: "alice arrives", do: openTab("alice"), active: 1, engaged: 1},
			{name: "idle tab", do: wait(time.Hour), active: 1, engaged: 0},
			{name: "Open WebUI fails", do: func(f *idleFixture) {
				f.failPath, f.failStatus, f.failBody = "/api/", 500, `{"detail":"Internal Server Error"}`
			}, err: "HTTP 500"},
			{name: "still failing 10 minutes later", do: wait(10 * time.Minute), err: "HTTP 500"},
			{name: "back", do: all(wait(time.Minute), func(f *idleFixture) { f.failPath = "" }), active: 1, engaged: 1},
			{name: "idle again after the timeout", do: wait(idleTimeout), active: 1, engaged: 0},
		}},
		{"a short outage changes nobody's arrival", []idleStep{
			{name: "alice arrives", do: openTab("alice"), active: 1, engaged: 1},
			{name: "idle tab", do: wait(time.Hour), active: 1, engaged: 0},
			{name: "Open WebUI fails", do: func(f *idleFixture) {
				f.failPath, f.failStatus, f.failBody = "/api/", 500, `{"detail":"Internal Server Error"}`
			}, err: "HTTP 500"},
			{name: "back a minute later", do: all(wait(time.Minute), func(f *idleFixture) { f.failPath = "" }), active: 1, engaged: 0},
		}},
		{"outages are errors, never 0, and the policy waits for them", []idleStep{
			{name: "alice arrives", do: openTab("alice"), active: 1, engaged: 1},
			{name: "idle tab", do: wait(time.Hour), active: 1, engaged: 0},
			{name: "Open WebUI fails", do: all(send("alice"), func(f *idleFixture) {
				f.failPath, f.failStatus, f.failBody = "/api/", 500, `{"detail":"Internal Server Error"}`
			}), err: "HTTP 500"},
			{name: "back", do: func(f *idleFixture) { f.failPath = "" }, active: 1, engaged: 1},
		}},
	}
	for upName, up := range upstreams {
		for _, sc := range scenarios {
			t.Run(upName+"/"+sc.name, func(t *testing.T) {
				f := newIdleFixture(t, up)
				for _, st := range sc.steps {
					st.do(f)
					n, err := f.client.Count(context.Background())
					switch {
					case st.err != "":
						if err == nil || !strings.Contains(err.Error(), st.err) {
							t.Fatalf("%s: got (%+v, %v), want an error containing %q", st.name, n, err, st.err)
						}
					case err != nil:
						t.Fatalf("%s: %v", st.name, err)
					case !n.IdlePolicy || n.ActiveUsers != st.active || n.EngagedUsers != st.engaged || n.Scaling() != st.engaged:
						t.Fatalf("%s: got active %d engaged %d (policy %v, scaling %d), want active %d engaged %d",
							st.name, n.ActiveUsers, n.EngagedUsers, n.IdlePolicy, n.Scaling(), st.active, st.engaged)
					}
				}
			})
		}
	}
}

// An analytics failure alone is an error too (not "nobody wrote"), and so is
// an answer of the wrong shape.
func TestIdlePolicyWriteSignalFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     fakeopenwebui.Config
		path    string
		body    string
		status  int
		wantErr string
	}{
		{"analytics 500", fakeopenwebui.Config{Version: "0.11.0"}, "/api/v1/analytics/users", `{"detail":"Internal Server Error"}`, 500, "GET /api/v1/analytics/users: HTTP 500"},
		{"analytics shape", fakeopenwebui.Config{Version: "0.11.0"}, "/api/v1/analytics/users", `{"writers":[]}`, 200, `no users array`},
		{"chat list 500", fakeopenwebui.Config{Version: "0.8.12"}, "/api/v1/chats/list/user/", `{"detail":"Internal Server Error"}`, 500, "GET /api/v1/chats/list/user/{id}: HTTP 500"},
		{"chat list shape", fakeopenwebui.Config{Version: "0.8.12"}, "/api/v1/chats/list/user/", `{"chats":[]}`, 200, "invalid JSON"},
		{"admin chat access off", fakeopenwebui.Config{Version: "0.8.12", DisableAdminChatAccess: true}, "", "", 0, "ENABLE_ADMIN_CHAT_ACCESS=true"},
		{"analytics and chat access off", fakeopenwebui.Config{Version: "0.11.0", DisableAdminAnalytics: true, DisableAdminChatAccess: true}, "", "", 0, "ENABLE_ADMIN_ANALYTICS=true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newIdleFixture(t, tc.cfg)
			f.fake.Touch(f.fake.AddUserIfMissing("alice"))
			if _, err := f.client.Count(context.Background()); err != nil {
				t.Fatal(err) // alice just arrived: no write check needed yet
			}
			f.pass(idleTimeout) // the next fetch asks who wrote
			f.failPath, f.failStatus, f.failBody = tc.path, tc.status, tc.body
			n, err := f.client.Count(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got (%+v, %v), want an error containing %q", n, err, tc.wantErr)
			}
			if strings.Contains(err.Error(), f.fake.AddUserIfMissing("alice")) {
				t.Fatalf("the error names a user id: %v", err)
			}
		})
	}
}

// One fetch costs the user pages it always read, plus one analytics request
// (0.10.0+), or one chat-list request per active user past their arrival
// grace; never one per registered user.
func TestIdlePolicyCost(t *testing.T) {
	for _, tc := range []struct {
		version                  string
		wantAnalytics, wantLists int
	}{
		{"0.11.0", 1, 0},
		{"0.9.5", 0, 3},
		{"0.12.0", 0, 3}, // analytics not known to see a send to a sleeping Ollama: the chat list
	} {
		t.Run(tc.version, func(t *testing.T) {
			f := newIdleFixture(t, fakeopenwebui.Config{Version: tc.version})
			for i := range 40 { // 40 registered users who are not here
				f.fake.AddUserIfMissing("away-" + string(rune('a'+i%26)) + string(rune('a'+i/26)))
			}
			f.fake.Touch(f.fake.AddUserIfMissing("alice"))
			f.fake.Touch(f.fake.AddUserIfMissing("bob"))
			f.fake.Touch(f.fake.AddUserIfMissing("carol"))
			if _, err := f.client.Count(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := f.fake.Requests("/api/v1/analytics/users"); got != 0 {
				t.Fatalf("a fetch where everybody just arrived asked analytics %d times, want 0", got)
			}
			f.pass(time.Hour)
			f.fake.ResetRequests()
			f.fake.Touch(f.fake.AddUserIfMissing("dave")) // arrives: counts without asking
			n, err := f.client.Count(context.Background())
			if err != nil || n.EngagedUsers != 1 || n.ActiveUsers != 4 {
				t.Fatalf("got (%+v, %v), want 4 active, 1 engaged", n, err)
			}
			lists := 0
			for _, name := range []string{"alice", "bob", "carol", "dave"} {
				lists += f.fake.Requests("/api/v1/chats/list/user/" + f.fake.AddUserIfMissing(name))
			}
			if got := f.fake.Requests("/api/v1/analytics/users"); got != tc.wantAnalytics || lists != tc.wantLists {
				t.Fatalf("analytics requests %d, chat-list requests %d; want %d and %d", got, lists, tc.wantAnalytics, tc.wantLists)
			}
		})
	}
}

// The policy needs admin mode; a client misconfigured in usage mode says so.
func TestIdlePolicyNeedsAdminMode(t *testing.T) {
	policy, err := openwebui.NewIdlePolicy(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	base, _ := url.Parse("http://127.0.0.1:1")
	c := openwebui.NewClient(openwebui.Config{BaseURL: base, Mode: openwebui.ModeUsage, IdlePolicy: policy,
		Token: func() (string, error) { return "sk-x", nil }})
	if _, err := c.Count(context.Background()); err == nil || !strings.Contains(err.Error(), "--openwebui.count-mode=admin") {
		t.Fatalf("got %v, want an error naming --openwebui.count-mode=admin", err)
	}
	for _, d := range []time.Duration{-time.Second, 0, 999 * time.Millisecond} {
		if _, err := openwebui.NewIdlePolicy(d); err == nil {
			t.Errorf("NewIdlePolicy(%s) accepted", d)
		}
	}
}

// Observe on its own: the rules, with the server's clock given explicitly.
func TestIdlePolicyObserve(t *testing.T) {
	p, _ := openwebui.NewIdlePolicy(10 * time.Second)
	t0 := time.Unix(1_785_000_000, 0)
	nobody := func(string) bool { return false }
	steps := []struct {
		at     time.Duration
		active []string
		wrote  []string
		want   string
	}{
		{0, []string{"a", "b"}, nil, "a,b"}, // first observation: everybody arrived
		{9 * time.Second, []string{"a", "b"}, nil, "a,b"},
		{10 * time.Second, []string{"a", "b", "c"}, nil, "c"},             // c arrives, a and b idle
		{11 * time.Second, []string{"a", "c"}, []string{"a", "b"}, "a,c"}, // b wrote but is not active
		{12 * time.Second, []string{"a", "b", "c"}, nil, "b,c"},           // b came back: arrival
	}
	for i, st := range steps {
		wrote := nobody
		if st.wrote != nil {
			wrote = func(id string) bool { return strings.Contains(strings.Join(st.wrote, ","), id) }
		}
		got := strings.Join(p.Observe(t0.Add(st.at), st.active, wrote), ",")
		if got != st.want {
			t.Fatalf("step %d at +%s: engaged %q, want %q", i, st.at, got, st.want)
		}
	}
}
