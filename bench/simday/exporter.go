package main

// The real half of the day: the exporter binary against the fake Open WebUI,
// asked once per step.

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

// served is what the exporter answered through one simulated day.
type served struct {
	values           []int   // /active_users at each step; -1: not 200
	unseen           int     // sends after which the next served value was still 0
	errors           int     // non-200 answers of /active_users
	activeHours      float64 // hours in which Open WebUI counted somebody active
	requestsPerFetch float64 // requests to Open WebUI per read of /active_users
}

// simulate runs the exporter (admin mode, no cache, idle timeout timeout; 0:
// policy off) through the trace, reading /active_users once per step.
func simulate(bin string, tr []event, timeout, step time.Duration) (served, error) {
	midnight := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	clock := fakeopenwebui.NewClock(midnight)
	fake := fakeopenwebui.New(fakeopenwebui.Config{Version: "0.11.0", Now: clock.Now, TabHeartbeats: true})
	fake.RegisterToken(fake.AddUser("exporter", "admin"), harness.Token)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return served{}, fmt.Errorf("fake Open WebUI: %w", err)
	}
	srv := &http.Server{Handler: fake, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	// Events at midnight happen before the exporter starts (tabs left open).
	next := 0
	for ; next < len(tr) && tr[next].at == 0; next++ {
		apply(fake, tr[next])
	}
	addr := harness.HeldAddr()
	// The fake's clock runs a day in seconds, ahead of this host's: the
	// hidden --openwebui.max-clock-skew lets the exporter accept its Date.
	args := []string{"--openwebui.count-mode=admin", "--cache.ttl=0", "--cache.max-stale=0", "--openwebui.max-clock-skew=100000h"}
	if timeout > 0 {
		args = append(args, "--activity.idle-timeout="+timeout.String())
	}
	cmd, err := harness.StartExporter(bin, addr, ln.Addr().String(), args...)
	if err != nil {
		return served{}, fmt.Errorf("exporter: %w", err)
	}
	defer harness.Stop(cmd)
	client := &http.Client{Timeout: 10 * time.Second}
	read := func() (int, bool) {
		status, body := harness.Get(client, "http://"+addr+"/active_users")
		var n int
		if _, err := fmt.Sscanf(body, `{"active_users":%d}`, &n); status != http.StatusOK || err != nil {
			return 0, false
		}
		return n, true
	}

	var (
		s       served
		pending int // sends since the last read
		fetches int
	)
	for now := time.Duration(0); now < 24*time.Hour; now += step {
		for ; next < len(tr) && tr[next].at <= now; next++ {
			if tr[next].kind == send {
				pending++
			}
			apply(fake, tr[next])
		}
		n, ok := read()
		fetches++
		if !ok {
			s.errors++
			s.values = append(s.values, -1)
		} else {
			if pending > 0 && n == 0 {
				s.unseen += pending
			}
			pending = 0
			s.values = append(s.values, n)
		}
		if fake.ActiveCount() > 0 {
			s.activeHours += step.Hours()
		}
		clock.Advance(step)
	}
	total := 0
	for _, p := range []string{"/api/v1/users/", "/api/v1/analytics/users", "/api/version", "/api/v1/auths/"} {
		total += fake.Requests(p)
	}
	s.requestsPerFetch = float64(total+fake.RequestsWithPrefix("/api/v1/chats/list/user/")) / float64(fetches)
	return s, nil
}

func apply(fake *fakeopenwebui.Server, e event) {
	switch e.kind {
	case open:
		fake.Touch(fake.AddUserIfMissing(e.person))
	case closeTab:
		fake.CloseTab(fake.AddUserIfMissing(e.person))
	case send:
		fake.Send(e.person)
	}
}
