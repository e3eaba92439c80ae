package gate

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeclock"
)

func TestRequestWakeCountsRecentUsers(t *testing.T) {
	block := make(chan struct{})
	backend := httptest.NewServer(withVersion(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/chat-long" {
			<-block
		}
	})))
	defer backend.Close()
	clock := fakeclock.New(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC))
	g := startGate(t, Config{
		Backends: []BackendConfig{backendURL(t, "small="+backend.URL), backendURL(t, "big="+backend.URL+",wake=request,idle=10m")},
		Now:      clock.Now,
	})
	eventually(t, "up", func() bool { return stats(g.Gate, "big").State == StateUp })

	user := func(id string) http.Header {
		if id == "" {
			return nil
		}
		return http.Header{UserHeader: {id}}
	}
	steps := []struct {
		what    string
		users   []string // requests sent ("" anonymous)
		advance time.Duration
		want    int
	}{
		{"nothing yet", nil, 0, 0},
		{"u1 twice and u2: two users", []string{"u1", "u1", "u2"}, 0, 2},
		{"plus two anonymous requests", []string{"", ""}, 0, 4},
		{"9 minutes later all still count", nil, 9 * time.Minute, 4},
		{"u1 again, then 2 more minutes: only u1", []string{"u1"}, 2 * time.Minute, 1},
		{"past u1's idle", nil, 9 * time.Minute, 0},
	}
	for _, st := range steps {
		for _, u := range st.users {
			if code, _, _ := do(t, "POST", g.url+"/big/api/chat", strings.NewReader("{}"), user(u)); code != 200 {
				t.Fatalf("%s: status %d", st.what, code)
			}
		}
		// The gate ends its accounting just after the answer: wait for it, so
		// the requests ended before the clock moves.
		eventually(t, "the requests ended", func() bool { return mustDemand(t, g.Gate, "big").InFlight == 0 })
		clock.Advance(st.advance)
		if d := mustDemand(t, g.Gate, "big"); d.Recent != st.want {
			t.Errorf("%s: Recent = %d, want %d", st.what, d.Recent, st.want)
		}
	}

	// A request in flight longer than idle still counts, and the arrival
	// backend never reports Recent.
	c := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+"/big/api/chat-long", strings.NewReader("{}"), user("u3"))
	eventually(t, "in flight", func() bool { return mustDemand(t, g.Gate, "big").InFlight == 1 })
	clock.Advance(time.Hour)
	if d := mustDemand(t, g.Gate, "big"); d.Recent != 1 {
		t.Errorf("an hour into a request: Recent = %d, want 1", d.Recent)
	}
	close(block)
	c.wait(t)
	do(t, "POST", g.url+"/small/api/chat", strings.NewReader("{}"), user("u9"))
	if d := mustDemand(t, g.Gate, "small"); d.Recent != 0 {
		t.Errorf("wake=arrival backend: Recent = %d, want 0", d.Recent)
	}
}

// listenPair listens on the same port of 127.0.0.1 and 127.0.0.2 (both
// loopback), as two replicas behind one headless Service would.
func listenPair(t *testing.T) (net.Listener, net.Listener, string) {
	t.Helper()
	for i := 0; i < 20; i++ {
		a, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(a.Addr().String())
		b, err := net.Listen("tcp", "127.0.0.2:"+port)
		if err == nil {
			return a, b, port
		}
		a.Close()
	}
	t.Fatal("no port free on both 127.0.0.1 and 127.0.0.2")
	return nil, nil, ""
}

func TestPeersAddTheirDemand(t *testing.T) {
	sb := newSleepyBackend(t, withVersion(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	la, lb, port := listenPair(t)
	cfg := Config{
		Backends:  []BackendConfig{backendURL(t, "big="+sb.url()+",wake=request")},
		Transport: sb.transport(),
		Peers:     "gates.test:" + port,
	}
	tune := func(g *Gate) {
		g.peerEvery = 20 * time.Millisecond
		g.peerTTL = 300 * time.Millisecond
		g.lookup = func(_ context.Context, host string) ([]net.IPAddr, error) {
			if host != "gates.test" {
				return nil, fmt.Errorf("unexpected host %q", host)
			}
			// The third address has no replica: it contributes nothing.
			return []net.IPAddr{{IP: net.ParseIP("127.0.0.1")}, {IP: net.ParseIP("127.0.0.2")}, {IP: net.ParseIP("127.0.0.3")}}, nil
		}
	}
	serveOn := func(ln net.Listener) *testGate {
		g, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		tune(g)
		srv := httptest.NewUnstartedServer(g)
		srv.Listener.Close()
		srv.Listener = ln
		srv.Config.SetKeepAlivesEnabled(false) // closing the listener stops every exchange
		srv.Start()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); g.Run(ctx) }()
		t.Cleanup(func() { cancel(); srv.CloseClientConnections(); srv.Close(); <-done })
		return &testGate{Gate: g, srv: srv, url: srv.URL}
	}
	a, b := serveOn(la), serveOn(lb)
	eventually(t, "asleep", func() bool { return stats(a.Gate, "big").State == StateAsleep })

	// The /_gate/demand answer.
	_, _, body := do(t, "GET", a.url+"/_gate/demand", nil, nil)
	var rep DemandReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil || rep.Instance != a.instance || len(rep.Backends) != 1 {
		t.Fatalf("/_gate/demand: %s (%v)", body, err)
	}

	changed := b.Changed()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sendAsync(ctx, http.DefaultClient, "POST", a.url+"/big/api/chat", strings.NewReader("{}"), http.Header{UserHeader: {"u1"}})
	sendAsync(ctx, http.DefaultClient, "POST", b.url+"/big/api/chat", strings.NewReader("{}"), http.Header{UserHeader: {"u1"}})
	sendAsync(ctx, http.DefaultClient, "POST", a.url+"/big/api/chat", strings.NewReader("{}"), http.Header{UserHeader: {"u2"}})
	eventually(t, "each sees the other's held requests", func() bool {
		return mustDemand(t, a.Gate, "big").Held == 3 && mustDemand(t, b.Gate, "big").Held == 3
	})
	<-changed
	for name, g := range map[string]*testGate{"A": a, "B": b} {
		if d := mustDemand(t, g.Gate, "big"); d.Held != 3 || d.Recent != 2 {
			t.Errorf("%s: %+v, want 3 held and 2 distinct users (u1 on both counts once)", name, d)
		}
	}
	if s := stats(b.Gate, "big"); s.Held != 1 {
		t.Errorf("B's own Stats: %d held, want 1 (Stats has no peers)", s.Held)
	}

	// A stops answering its peers while it still holds: its data expires.
	la.Close()
	eventually(t, "A's demand expired at B", func() bool { return mustDemand(t, b.Gate, "big").Held == 1 })
	cancel()
	eventually(t, "nothing held at B", func() bool { return mustDemand(t, b.Gate, "big").Held == 0 })
}

func TestStatusEndpoint(t *testing.T) {
	sb := newSleepyBackend(t, nil)
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, "small="+sb.url())}, HoldTimeout: time.Minute})
	eventually(t, "asleep", func() bool { return stats(g.Gate, "small").State == StateAsleep })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sendAsync(ctx, http.DefaultClient, "POST", g.url+"/small/api/chat", strings.NewReader("{}"), nil)
	eventually(t, "held", func() bool { return queued(g.Gate, "small") == 1 })

	code, hdr, body := do(t, "GET", g.url+"/_gate/status", nil, nil)
	if code != 200 || hdr.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("status: %d %s", code, hdr.Get("Content-Type"))
	}
	var raw struct {
		Backends []map[string]any `json:"backends"`
	}
	if err := json.Unmarshal([]byte(body), &raw); err != nil || len(raw.Backends) != 1 {
		t.Fatalf("status %s: %v", body, err)
	}
	got := raw.Backends[0]
	for _, k := range []string{"name", "prefix", "state", "since", "waiting_seconds", "held", "in_flight", "hold_timeout_seconds", "models", "reason"} {
		if _, ok := got[k]; !ok {
			t.Errorf("status lacks %q: %s", k, body)
		}
	}
	if got["name"] != "small" || got["prefix"] != "/small/" || got["state"] != "asleep" || got["held"] != 1.0 ||
		got["hold_timeout_seconds"] != 60.0 || got["reason"] != "connection refused" || got["waiting_seconds"].(float64) <= 0 {
		t.Errorf("status: %s", body)
	}
	if _, err := time.Parse(time.RFC3339, got["since"].(string)); err != nil {
		t.Errorf("since: %v", err)
	}
	for _, tc := range []struct {
		method, path string
		want         int
	}{{"GET", "/_gate/nope", 404}, {"POST", "/_gate/status", 405}} {
		if code, _, _ := do(t, tc.method, g.url+tc.path, nil, nil); code != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, code, tc.want)
		}
	}
}

func TestChangedCoalescesAndLosesNoChange(t *testing.T) {
	g, err := New(Config{Backends: []BackendConfig{backendURL(t, "http://127.0.0.1:1")}})
	if err != nil {
		t.Fatal(err)
	}
	first := g.Changed()
	start := time.Now()
	for i := 0; i < 10000; i++ {
		g.notify()
	}
	elapsed := time.Since(start)
	select {
	case <-first:
	default:
		t.Error("the first change did not close Changed at once")
	}
	last := g.Changed() // taken after the last change: must still close
	select {
	case <-last:
	case <-time.After(10 * time.Second):
		t.Fatal("the last change of a burst was lost")
	}
	g.chMu.Lock()
	fires := g.fired
	g.chMu.Unlock()
	if limit := 2 + int(elapsed/notifyCoalesce); fires > limit {
		t.Errorf("10000 changes in %v closed Changed %d times, want at most %d (one per %v)", elapsed, fires, limit, notifyCoalesce)
	}
}
