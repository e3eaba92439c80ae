package main

import (
	"slices"
	"testing"
	"time"
)

// Each case drives one gateModel with steps and checks what the real gate
// would have decided (gate-spec.md).
func TestGateModel(t *testing.T) {
	const holdTimeout, answer = 5 * time.Minute, 20 * time.Second
	type step struct {
		at      time.Duration
		do      string // "request <person>", "probe", "finish", "list", "scaled-in"
		backend backendState
	}
	tests := []struct {
		name       string
		enabled    bool
		steps      []step
		demand     int // after the steps
		holds      []time.Duration
		firstWaits []time.Duration
		failures   []string // reasons
		passed     int
		fromMemory int
		listsLost  int
	}{
		{
			name:    "without the gate a message fails at zero and while starting, and passes when up",
			enabled: false,
			steps: []step{
				{0, "request a", asleep},
				{time.Second, "request b", starting},
				{2 * time.Second, "request c", up},
			},
			demand:   0, // without the gate nothing is demand
			failures: []string{"at zero", "starting"},
			passed:   1,
		},
		{
			name:    "a held message is demand at once and goes on at the first probe that finds the backend up",
			enabled: true,
			steps: []step{
				{0, "request a", asleep},
				{10 * time.Second, "probe", starting},
				{31 * time.Second, "probe", up},
			},
			demand:     1, // now in flight
			holds:      []time.Duration{31 * time.Second},
			firstWaits: []time.Duration{31 * time.Second},
		},
		{
			name:    "held messages go on in arrival order; only one that found the backend asleep is a first message",
			enabled: true,
			steps: []step{
				{0, "request a", asleep},
				{5 * time.Second, "request b", starting},
				{30 * time.Second, "probe", up},
			},
			demand:     2,
			holds:      []time.Duration{30 * time.Second, 25 * time.Second},
			firstWaits: []time.Duration{30 * time.Second},
		},
		{
			name:    "past the hold timeout a held message fails and stops being demand",
			enabled: true,
			steps: []step{
				{0, "request a", asleep},
				{holdTimeout - tick, "probe", starting},
				{holdTimeout, "probe", starting},
			},
			demand:   0,
			failures: []string{"hold timeout"},
		},
		{
			name:    "an answer is demand until it ends",
			enabled: true,
			steps: []step{
				{0, "request a", up},
				{answer, "finish", up},
			},
			demand: 0,
			passed: 1,
		},
		{
			name:    "a scale-in under a running answer fails it",
			enabled: true,
			steps: []step{
				{0, "request a", up},
				{time.Second, "scaled-in", asleep},
			},
			demand:   0,
			failures: []string{"cut by scale-in"},
			passed:   1,
		},
		{
			name:    "model lists come from memory with the gate, are lost without it, and are never demand",
			enabled: true,
			steps: []step{
				{0, "list", asleep},
				{time.Second, "list", starting},
				{2 * time.Second, "list", up},
			},
			demand:     0,
			fromMemory: 2,
		},
		{
			name:    "without the gate a page load while the backend is not up gets no models",
			enabled: false,
			steps: []step{
				{0, "list", asleep},
				{time.Second, "list", up},
			},
			listsLost: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGateModel(tt.enabled, holdTimeout, answer, 10*time.Minute)
			for _, s := range tt.steps {
				switch {
				case len(s.do) > 8 && s.do[:8] == "request ":
					g.request(s.at, s.do[8:], s.backend)
				case s.do == "probe":
					g.probe(s.at, s.backend)
				case s.do == "finish":
					g.finish(s.at)
				case s.do == "list":
					g.listRequest(s.backend)
				case s.do == "scaled-in":
					g.scaledIn(s.at)
				default:
					t.Fatalf("unknown step %q", s.do)
				}
			}
			var reasons []string
			for _, f := range g.failures {
				reasons = append(reasons, f.reason)
			}
			if g.demand() != tt.demand {
				t.Errorf("demand = %d, want %d", g.demand(), tt.demand)
			}
			if !slices.Equal(g.holds, tt.holds) || !slices.Equal(g.firstWaits, tt.firstWaits) {
				t.Errorf("holds = %v, first waits = %v; want %v, %v", g.holds, g.firstWaits, tt.holds, tt.firstWaits)
			}
			if !slices.Equal(reasons, tt.failures) {
				t.Errorf("failures = %q, want %q", reasons, tt.failures)
			}
			if g.passed != tt.passed || g.listsFromMemory != tt.fromMemory || g.listsLost != tt.listsLost {
				t.Errorf("passed, lists from memory, lists lost = %d, %d, %d; want %d, %d, %d", g.passed, g.listsFromMemory, g.listsLost, tt.passed, tt.fromMemory, tt.listsLost)
			}
		})
	}
}

func TestGateModelRecent(t *testing.T) {
	const idle = 10 * time.Minute
	tests := []struct {
		name     string
		requests map[string]time.Duration // person -> last request
		held     bool
		now      time.Duration
		want     int
	}{
		{"nobody", nil, false, time.Hour, 0},
		{"distinct people within idle", map[string]time.Duration{"a": 0, "b": time.Minute}, false, 5 * time.Minute, 2},
		{"a request idle ago no longer counts", map[string]time.Duration{"a": 0, "b": time.Minute}, false, idle, 1},
		{"at least 1 while one is held", nil, true, time.Hour, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGateModel(true, 5*time.Minute, 20*time.Second, idle)
			for p, at := range tt.requests {
				g.lastBy[p] = at
			}
			if tt.held {
				g.held = append(g.held, heldRequest{at: tt.now})
			}
			if got := g.recent(tt.now); got != tt.want {
				t.Errorf("recent = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestKedaModel(t *testing.T) {
	k := kedaModel{cooldown: 300 * time.Second, polling: 30 * time.Second, pushLatency: time.Second}
	k.observe(0, 1)
	if k.due(time.Second - tick) {
		t.Fatal("scaled up before the push latency")
	}
	if !k.due(time.Second) || k.replicas != 1 || k.scaleUps != 1 {
		t.Fatalf("not scaled up after the push latency: %+v", k)
	}
	if k.poll(270*time.Second, 0) {
		t.Fatal("scaled in before the cooldown")
	}
	if !k.poll(300*time.Second, 0) || k.replicas != 0 {
		t.Fatalf("not scaled in at the first poll after the cooldown: %+v", k)
	}
	k.observe(400*time.Second, 0)
	if k.waking {
		t.Fatal("a value of 0 woke it")
	}
}

// A day with one message to a sleeping wake=request pool: it is held for the
// push latency plus the start-up (at most one probe more), and the pool
// sleeps once idle plus cooldown passed without a request.
func TestRunDayRequestPool(t *testing.T) {
	w := world{step: 10 * time.Second, polling: 30 * time.Second, cooldown: 300 * time.Second, pushLatency: time.Second, gate: true, holdTimeout: 5 * time.Minute, answer: 20 * time.Second}
	at := 9*time.Hour + 3*time.Second
	tr := []event{{at: at, person: "a", kind: send}}
	served := make([]int, int(24*time.Hour/w.step)) // nobody counted: only the request wakes it
	p := w.newPool(poolSpec{name: "big", wake: wakeRequest, startup: 120 * time.Second, idle: 10 * time.Minute})
	runDay(tr, served, func(int) int { return 0 }, []*pool{p}, w)
	if len(p.gate.failures) != 0 || len(p.gate.holds) != 1 {
		t.Fatalf("failures %v, holds %v: want the message held and delivered", p.gate.failures, p.gate.holds)
	}
	if hold := p.gate.holds[0]; hold < 121*time.Second || hold > 121*time.Second+tick {
		t.Errorf("hold = %s, want push latency + start-up = 121s, at most one probe more", hold)
	}
	// The message at 09:00:03 is pushed at once: scale-up at 09:00:04. The
	// last read within idle of it is at 09:10:00; the first poll a cooldown
	// later is at 09:15:00, and KEDA scales in then.
	want := (9*time.Hour + 15*time.Minute - (9*time.Hour + 4*time.Second)).Hours()
	if got := p.onHours(); got != want || p.keda.scaleUps != 1 {
		t.Errorf("on %.4fh with %d scale-ups, want %.4fh (09:00:04 to 09:15:00) with 1", got, p.keda.scaleUps, want)
	}
}
