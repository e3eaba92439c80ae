package main

// The real half of the day: the exporter binary against the fake Open WebUI,
// asked once per step.

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
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
	// falseAbsence is the longest stretch in which openwebui_active_users
	// was below the people who made a request within 180 s; leaveLag the
	// longest in which it was above 0 while nobody had.
	falseAbsence, leaveLag time.Duration
	absentRun, lagRun      time.Duration // the current stretches
}

// people knows, from the trace, who made a request to Open WebUI within the
// activity window: a send, or the heartbeat an open tab sends every 30 s
// from when it opened.
type people struct {
	openSince map[string]time.Duration
	last      map[string]time.Duration
}

func (p *people) apply(e event) {
	switch e.kind {
	case open, send:
		if _, ok := p.openSince[e.person]; !ok {
			p.openSince[e.person] = e.at
		}
		p.last[e.person] = e.at
	case closeTab:
		p.beat(e.person, e.at)
		delete(p.openSince, e.person)
	}
}

// beat records the open tab's latest heartbeat at now.
func (p *people) beat(person string, now time.Duration) {
	if since, ok := p.openSince[person]; ok {
		p.last[person] = max(p.last[person], since+(now-since)/fakeopenwebui.HeartbeatInterval*fakeopenwebui.HeartbeatInterval)
	}
}

// active counts who made a request within the window before now.
func (p *people) active(now time.Duration) int {
	n := 0
	for person, at := range p.last {
		p.beat(person, now)
		if now-max(at, p.last[person]) <= fakeopenwebui.ActiveWindow {
			n++
		}
	}
	return n
}

// simulate runs the exporter (admin mode, no cache, idle timeout timeout; 0:
// policy off) through the trace, reading /active_users and /metrics once
// per step, with Open WebUI's write throttle write.
func simulate(bin string, tr []event, timeout, step time.Duration, write throttle) (served, error) {
	midnight := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	clock := fakeopenwebui.NewClock(midnight)
	fake := fakeopenwebui.New(fakeopenwebui.Config{Version: "0.11.0", Now: clock.Now, TabHeartbeats: true, StatusUpdateInterval: write.interval, Processes: write.processes})
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
	truth := &people{openSince: map[string]time.Duration{}, last: map[string]time.Duration{}}
	for ; next < len(tr) && tr[next].at == 0; next++ {
		apply(fake, tr[next])
		truth.apply(tr[next])
	}
	addr := harness.FreeAddr()
	// The fake's clock runs a day in seconds, ahead of this host's: the
	// hidden --openwebui.max-clock-skew lets the exporter accept its Date.
	args := []string{"--openwebui.count-mode=admin", "--cache.ttl=0", "--cache.max-stale=0", "--openwebui.max-clock-skew=100000h"}
	if timeout > 0 {
		args = append(args, "--activity.idle-timeout="+timeout.String())
	}
	if write.told {
		args = append(args, "--openwebui.status-update-interval="+write.interval.String())
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
	activeUsers := func() (int, bool) {
		status, body := harness.Get(client, "http://"+addr+"/metrics")
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, "openwebui_active_users "); ok && status == http.StatusOK {
				n, err := strconv.Atoi(v)
				return n, err == nil
			}
		}
		return 0, false
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
			truth.apply(tr[next])
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
		if active, ok := activeUsers(); !ok {
			s.errors++
		} else {
			// A stretch is counted in steps: one read below is one step.
			there := truth.active(now)
			var absent, lagging time.Duration
			if active < there {
				absent = s.absentRun + step
			}
			if active > 0 && there == 0 {
				lagging = s.lagRun + step
			}
			s.absentRun, s.lagRun = absent, lagging
			s.falseAbsence, s.leaveLag = max(s.falseAbsence, absent), max(s.leaveLag, lagging)
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
