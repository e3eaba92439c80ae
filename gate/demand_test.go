package gate

import (
	"context"
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
