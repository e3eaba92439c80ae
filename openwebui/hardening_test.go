package openwebui_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
)

// rawUpstream is an Open WebUI that answers exactly what a test tells it,
// including what a real one (or a proxy in front of it) gets wrong: lists in
// the wrong order, nulls, empty pages, a skewed Date header, echoed tokens.
type rawUpstream struct {
	version string
	selfID  string
	role    string
	// date is the Date header; zero time: none at all.
	date time.Time
	// pages are the bodies of GET /api/v1/users/ by page number.
	pages map[int]string
	// usage is the body of GET /api/usage.
	usage string
	// active answers GET /api/v1/users/{id}/active.
	active map[string]bool
	// header is added to every answer (e.g. Age from a cache).
	header http.Header
	// requests records the request headers received, newest last.
	requests []http.Header
}

func (u *rawUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.requests = append(u.requests, r.Header.Clone())
	for k, v := range u.header {
		w.Header()[k] = v
	}
	if u.date.IsZero() {
		w.Header()["Date"] = nil // net/http would add one
	} else {
		w.Header().Set("Date", u.date.UTC().Format(http.TimeFormat))
	}
	w.Header().Set("Content-Type", "application/json")
	switch p := r.URL.Path; {
	case p == "/api/version":
		fmt.Fprintf(w, `{"version":%q}`, u.version)
	case p == "/api/v1/auths/":
		fmt.Fprintf(w, `{"id":%q,"role":%q}`, u.selfID, u.role)
	case p == "/api/v1/users/":
		page, err := strconv.Atoi(r.URL.Query().Get("page"))
		if err != nil {
			http.Error(w, `{"detail":"page must be an integer"}`, http.StatusUnprocessableEntity)
			return
		}
		body, ok := u.pages[page]
		if !ok {
			body = `{"users":[],"total":0}`
		}
		fmt.Fprint(w, body)
	case p == "/api/usage":
		fmt.Fprint(w, u.usage)
	case strings.HasSuffix(p, "/active"):
		id := strings.TrimSuffix(strings.TrimPrefix(p, "/api/v1/users/"), "/active")
		fmt.Fprintf(w, `{"active":%t}`, u.active[id])
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"detail":"Not Found"}`)
	}
}

// entries renders users as a page body; a nil stamp is a JSON null.
type entry struct {
	id    string
	stamp *int64
}

func at(t int64) *int64 { return &t }

func page(total int, users ...entry) string {
	var parts []string
	for _, e := range users {
		stamp := "null"
		if e.stamp != nil {
			stamp = fmt.Sprint(*e.stamp)
		}
		parts = append(parts, fmt.Sprintf(`{"id":%q,"role":"user","last_active_at":%s}`, e.id, stamp))
	}
	return fmt.Sprintf(`{"users":[%s],"total":%d}`, strings.Join(parts, ","), total)
}

const (
	testKey = "sk-0123456789abcdef0123456789abcdef"
	testJWT = "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6InNlbGYifQ.c2lnbmF0dXJl"
)

// TestAdminModeCountsOnlyFromATrustworthyList: admin mode stops paging at
// the first inactive user. Each row is a list on which that early stop, as
// it was, gave {"active_users":0} or a count of idle people with
// openwebui_up 1. Now the list is checked first; anything that cannot be
// trusted is an error with a hint, never a number.
func TestAdminModeCountsOnlyFromATrustworthyList(t *testing.T) {
	now := time.Unix(1_785_000_000, 0)
	n := now.Unix()
	var fullPage []entry // 30 active users, the exporter among them
	fullPage = append(fullPage, entry{"self", at(n)})
	for i := range 29 {
		fullPage = append(fullPage, entry{fmt.Sprintf("u%02d", i), at(n - 10 - int64(i))})
	}
	cases := []struct {
		name    string
		token   string
		date    time.Time
		pages   map[int]string
		want    int
		wantErr string
		// Open WebUI's DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL
		updateInterval time.Duration
	}{
		{name: "sorted, Date agrees", token: testKey, date: now,
			pages: map[int]string{1: page(3, entry{"self", at(n)}, entry{"alice", at(n - 10)}, entry{"bob", at(n - 1000)})}, want: 1},
		{name: "sorted, JWT, no Date header: the local clock", token: testJWT,
			pages: map[int]string{1: page(2, entry{"alice", at(n - 10)}, entry{"bob", at(n - 1000)})}, want: 1},
		{name: "unsorted page: an idle new account first (order_by dropped by a proxy)", token: testKey, date: now,
			pages:   map[int]string{1: page(3, entry{"new", at(n - 5000)}, entry{"self", at(n)}, entry{"alice", at(n - 10)})},
			wantErr: "page 1: not ordered by last_active_at, newest first (users[1] is newer"},
		{name: "null last_active_at first (PostgreSQL NULLS FIRST)", token: testKey, date: now,
			pages:   map[int]string{1: page(3, entry{"ghost", nil}, entry{"self", at(n)}, entry{"alice", at(n - 10)})},
			wantErr: "page 1: users[0] has no last_active_at"},
		{name: "empty page although the total says 5", token: testKey, date: now,
			pages:   map[int]string{1: page(5)},
			wantErr: "page 1: no users, although the total is 5 and 0 were read"},
		{name: "later page empty while users are unread", token: testKey, date: now,
			pages:   map[int]string{1: page(40, fullPage...), 2: page(40)},
			wantErr: "page 2: no users, although the total is 40 and 30 were read"},
		{name: "more users than the total", token: testKey, date: now,
			pages:   map[int]string{1: page(1, entry{"self", at(n)}, entry{"alice", at(n - 10)})},
			wantErr: "page 1: 2 users, but a total of 1"},
		{name: "next page newer than the last one", token: testKey, date: now,
			pages:   map[int]string{1: page(31, fullPage...), 2: page(31, entry{"late", at(n - 1)})},
			wantErr: "page 2: not ordered by last_active_at"},
		{name: "JWT, Date an hour ahead (a proxy's wrong clock): would count 0", token: testJWT, date: now.Add(time.Hour),
			pages:   map[int]string{1: page(2, entry{"alice", at(n - 10)}, entry{"bob", at(n - 20)})},
			wantErr: "the Date header of Open WebUI's answer is 1h0m0s off the local clock"},
		{name: "JWT, Date an hour behind: would count people idle for 1,000 s", token: testJWT, date: now.Add(-time.Hour),
			pages:   map[int]string{1: page(2, entry{"alice", at(n - 10)}, entry{"bob", at(n - 1000)})},
			wantErr: "is -1h0m0s off the local clock"},
		// Every clock of the answer is checked against the exporter's own
		// (issue 19, item 1): a caching proxy keeps Date and the own stamp
		// of a replayed list in agreement.
		{name: "API key, Date an hour ahead, the own stamp fresh: an error, not the stamp's count", token: testKey, date: now.Add(time.Hour),
			pages:   map[int]string{1: page(3, entry{"self", at(n)}, entry{"alice", at(n - 10)}, entry{"bob", at(n - 1000)})},
			wantErr: "the Date header of Open WebUI's answer is 1h0m0s off the local clock (tolerance 30s)"},
		{name: "API key, Date and stamp agree, an hour ahead of the local clock", token: testKey, date: now.Add(time.Hour),
			pages:   map[int]string{1: page(3, entry{"self", at(n + 3600)}, entry{"alice", at(n + 3590)}, entry{"bob", at(n + 2600)})},
			wantErr: "1h0m0s off the local clock"},
		{name: "API key, a replayed page 1: own stamp and Date an hour old, a user 10 s older (counted 1 with up 1)", token: testKey, date: now.Add(-time.Hour),
			pages:   map[int]string{1: page(2, entry{"self", at(n - 3600)}, entry{"alice", at(n - 3610)})},
			wantErr: "a caching proxy between the exporter and Open WebUI replays old answers"},
		{name: "API key, a frozen page from when nobody was there (counted 0)", token: testKey, date: now.Add(-time.Hour),
			pages:   map[int]string{1: page(2, entry{"self", at(n - 3600)}, entry{"alice", at(n - 7200)})},
			wantErr: "a caching proxy"},
		{name: "JWT, a replayed page: names the proxy, does not advise an API key", token: testJWT, date: now.Add(-time.Hour),
			pages:   map[int]string{1: page(1, entry{"alice", at(n - 3610)})},
			wantErr: "so the answer is not from now; a caching proxy"},
		{name: "API key, stamp and Date 20 s old: within the tolerance", token: testKey, date: now.Add(-20 * time.Second),
			pages: map[int]string{1: page(2, entry{"self", at(n - 20)}, entry{"alice", at(n - 30)})}, want: 1},
		{name: "API key whose own account is not listed", token: testKey, date: now,
			pages:   map[int]string{1: page(1, entry{"alice", at(n - 10)})},
			wantErr: "the exporter's own account is not in the list of all 1 users"},
		{name: "API key whose own account is listed as idle for longer than any write interval (a stale list)", token: testKey, date: now,
			pages:   map[int]string{1: page(2, entry{"alice", at(n - 10)}, entry{"self", at(n - 4000)})},
			wantErr: "the exporter's own last_active_at, which this request should have set, is 1h6m40s old, more than any write interval accepted (1h0m0s), so the list is stale"},
		// The own stamp 50 s old after an API-key request: Open WebUI's
		// write throttle dropped it (issue 22). Not an error: the exporter
		// counts the wider window, everybody within an hour until it has
		// measured the interval.
		{name: "API key, own account only on page 2, not told of a throttle", token: testKey, date: now,
			pages: map[int]string{1: page(31, fullPage[1:]...), 2: page(31, entry{"x", at(n - 40)}, entry{"self", at(n - 50)})}, want: 30},
		// With a status update interval the own stamp may be up to T old,
		// and over a page of people stamped since: Date and the local clock
		// place the window instead.
		{name: "API key, update interval 60s, own account only on page 2", token: testKey, date: now, updateInterval: time.Minute,
			pages: map[int]string{1: page(31, fullPage[1:]...), 2: page(31, entry{"x", at(n - 40)}, entry{"self", at(n - 50)})}, want: 30},
		{name: "API key, update interval 60s, own account only on page 2, Date an hour ahead", token: testKey, date: now.Add(time.Hour), updateInterval: time.Minute,
			pages:   map[int]string{1: page(31, fullPage[1:]...), 2: page(31, entry{"x", at(n - 40)}, entry{"self", at(n - 50)})},
			wantErr: "the Date header of Open WebUI's answer is 1h0m0s off the local clock"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := &rawUpstream{version: "0.11.0", selfID: "self", role: "admin", date: tc.date, pages: tc.pages}
			srv := httptest.NewServer(up)
			defer srv.Close()
			base, _ := url.Parse(srv.URL)
			client := openwebui.NewClient(openwebui.Config{BaseURL: base, Mode: openwebui.ModeAdmin, StatusUpdateInterval: tc.updateInterval,
				Now: func() time.Time { return now }, Token: func() (string, error) { return tc.token, nil }})
			got, err := client.Count(context.Background())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got (%d, %v), want the error %q", got.ActiveUsers, err, tc.wantErr)
				}
				return
			}
			if err != nil || got.ActiveUsers != tc.want {
				t.Fatalf("got (%d, %v), want %d", got.ActiveUsers, err, tc.want)
			}
		})
	}
}

// TestRotationToAnotherAccountWakesNobody: the exporter's own requests stamp
// its account active. When the token file switches to a key of another
// account, the previous one stays active in Open WebUI for up to 180 s; it
// must not count as a person (with activationValue 0 that would wake Ollama
// from zero for nothing), in any mode that sees it.
func TestRotationToAnotherAccountWakesNobody(t *testing.T) {
	cases := []struct {
		name    string
		version string
		mode    openwebui.Mode
		role    string
	}{
		{"usage mode, user_count (0.6.41+)", "0.11.0", openwebui.ModeUsage, "user"},
		{"admin mode", "0.11.0", openwebui.ModeAdmin, "admin"},
		{"admin mode, JWT era 0.8", "0.8.0", openwebui.ModeAdmin, "admin"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
			fake := fakeopenwebui.New(fakeopenwebui.Config{Version: tc.version, Now: clock.Now})
			keyA := fake.IssueAPIKey(fake.AddUser("exporter-a", tc.role))
			keyB := fake.IssueAPIKey(fake.AddUser("exporter-b", tc.role))
			alice := fake.AddUser("alice", "user")
			token := keyA
			client := newClient(t, fake, clock, tc.mode, func() string { return token })
			steps := []struct {
				what    string
				token   string
				advance time.Duration
				touch   bool // alice makes a request just before
				want    int
			}{
				{"with A, nobody there", keyA, 0, false, 0},
				{"rotated to B: A is still stamped, but nobody is there", keyB, 10 * time.Second, false, 0},
				{"alice arrives", keyB, 10 * time.Second, true, 1},
				{"A's stamp has left the window", keyB, 200 * time.Second, false, 0},
			}
			for _, step := range steps {
				clock.Advance(step.advance)
				if step.touch {
					fake.Touch(alice)
				}
				token = step.token
				n, err := client.Count(context.Background())
				if err != nil || n.ActiveUsers != step.want {
					t.Fatalf("%s: got (%d, %v), want %d", step.what, n.ActiveUsers, err, step.want)
				}
			}
		})
	}
}

// In usage mode with user_count there are no ids: an account the exporter
// rotated away from is left out only while Open WebUI reports it active, so
// a person who is there is never subtracted on trust.
func TestRotationSubtractsTheOldAccountOnlyWhileActive(t *testing.T) {
	now := time.Unix(1_785_000_000, 0)
	clock := fakeopenwebui.NewClock(now)
	up := &rawUpstream{version: "0.11.0", selfID: "a", role: "user", date: now,
		usage: `{"model_ids":[],"user_count":1}`, active: map[string]bool{"a": true, "b": true}} // an API key's own request marks it active
	srv := httptest.NewServer(up)
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	token := "sk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	client := openwebui.NewClient(openwebui.Config{BaseURL: base, Now: clock.Now, Token: func() (string, error) { return token, nil }})
	if n, err := client.Count(context.Background()); err != nil || n.ActiveUsers != 0 {
		t.Fatalf("with A: got (%d, %v), want 0", n.ActiveUsers, err)
	}
	token, up.selfID = "sk-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "b"
	clock.Advance(10 * time.Second)
	for _, step := range []struct {
		aActive   bool
		userCount int
		want      int
	}{
		{true, 2, 0},  // A and B: nobody else
		{true, 3, 1},  // A, B and a person
		{false, 2, 1}, // A has left the window: B and a person
	} {
		up.active["a"] = step.aActive
		up.usage = fmt.Sprintf(`{"model_ids":[],"user_count":%d}`, step.userCount)
		if n, err := client.Count(context.Background()); err != nil || n.ActiveUsers != step.want {
			t.Errorf("A active %v, user_count %d: got (%d, %v), want %d", step.aActive, step.userCount, n.ActiveUsers, err, step.want)
		}
	}
}
