package main

// The modelled half of the day: KEDA, the backend's start-up and the wake
// gate, on a clock of 100 ms ticks (the gate's probe interval while it holds
// something). The people half (what the exporter served at each step) comes
// from the real exporter run in simulate. The assumptions are listed at the
// top of main.go.

import (
	"time"
)

// tick is the model's clock resolution: the real gate probes its backend every
// 100 ms while it holds a request, so a held request goes on at most one tick
// after the backend's first HTTP answer.
const tick = 100 * time.Millisecond

type wakeRule int

const (
	wakeArrival wakeRule = iota // woken by people (the exporter's count) and by its own held requests
	wakeRequest                 // woken only by requests held for it, kept up while they come
)

func (w wakeRule) String() string {
	if w == wakeRequest {
		return "request"
	}
	return "arrival"
}

type backendState int

const (
	asleep   backendState = iota // no replica: connection refused
	starting                     // a replica, not yet answering HTTP
	up                           // answering HTTP
)

// backendModel is Ollama (or any backend): from KEDA's scale-up it takes
// startup to answer HTTP; a scale-in stops it at once.
type backendModel struct {
	startup time.Duration
	state   backendState
	readyAt time.Duration
}

func (b *backendModel) scaleUp(now time.Duration) {
	if b.state == asleep {
		b.state, b.readyAt = starting, now+b.startup
	}
	b.advance(now)
}

func (b *backendModel) advance(now time.Duration) {
	if b.state == starting && now >= b.readyAt {
		b.state = up
	}
}

func (b *backendModel) scaleIn() { b.state = asleep }

// kedaModel is one ScaledObject with an external-push trigger: a value above
// 0 (read, polled or pushed) marks it active and, at 0 replicas, scales to 1
// after pushLatency; scale-in happens only at a poll, once no value above 0
// was seen for cooldown.
type kedaModel struct {
	cooldown, polling, pushLatency time.Duration

	replicas   int
	lastActive time.Duration
	waking     bool
	wakeAt     time.Duration
	scaleUps   int
}

// observe is one value KEDA gets: a read of the exporter, a poll or a push.
func (k *kedaModel) observe(now time.Duration, value int) {
	if value <= 0 {
		return
	}
	k.lastActive = now
	if k.replicas == 0 && !k.waking {
		k.waking, k.wakeAt = true, now+k.pushLatency
	}
}

// poll is KEDA's pollingInterval check; it reports whether KEDA scaled in.
func (k *kedaModel) poll(now time.Duration, value int) bool {
	k.observe(now, value)
	if value == 0 && k.replicas == 1 && now-k.lastActive >= k.cooldown {
		k.replicas = 0
		return true
	}
	return false
}

// due applies a decided scale-up whose time has come; it reports whether it did.
func (k *kedaModel) due(now time.Duration) bool {
	if !k.waking || now < k.wakeAt {
		return false
	}
	k.waking, k.replicas = false, 1
	k.scaleUps++
	return true
}

// failure is a message whose answer failed, for -v and the tables.
type failure struct {
	at     time.Duration
	person string
	reason string // "at zero", "starting", "hold timeout", "cut by scale-in"
}

type heldRequest struct {
	at          time.Duration
	person      string
	foundAsleep bool // the backend had no replica: this request is what wakes it (a "first message")
}

// gateModel makes the wake gate's decisions for one backend (gate-spec.md),
// or, disabled, stands for Open WebUI talking to the backend directly:
//   - a request while the backend is up passes and is in flight for answer;
//   - disabled, a request while the backend is not up fails;
//   - enabled, it is held, in arrival order, and the held request is demand
//     at once (demand counts held and in-flight requests);
//   - a probe that finds the backend up releases every held request, in
//     arrival order; a request held for holdTimeout fails (the gate's 504);
//   - a model list (a page load) while the backend is not up is served from
//     memory when enabled (never demand), lost when disabled;
//   - for wake=request, recent counts the distinct people with a request
//     within idle (at least 1 while anything is held or in flight).
type gateModel struct {
	enabled     bool
	holdTimeout time.Duration
	answer      time.Duration
	idle        time.Duration

	held     []heldRequest
	inFlight []time.Duration // when each answer ends
	lastBy   map[string]time.Duration

	passed, delivered int
	holds             []time.Duration // hold time of every delivered request
	firstWaits        []time.Duration // the same, for requests that found the backend asleep
	failures          []failure
	listsFromMemory   int
	listsLost         int
}

func newGateModel(enabled bool, holdTimeout, answer, idle time.Duration) *gateModel {
	return &gateModel{enabled: enabled, holdTimeout: holdTimeout, answer: answer, idle: idle, lastBy: map[string]time.Duration{}}
}

// request is a chat message reaching the gate.
func (g *gateModel) request(now time.Duration, person string, state backendState) {
	g.lastBy[person] = now
	switch {
	case state == up:
		g.passed++
		g.inFlight = append(g.inFlight, now+g.answer)
	case !g.enabled:
		reason := "at zero"
		if state == starting {
			reason = "starting"
		}
		g.failures = append(g.failures, failure{now, person, reason})
	default:
		g.held = append(g.held, heldRequest{at: now, person: person, foundAsleep: state == asleep})
	}
}

// probe is the gate's readiness probe (every tick while something is held).
func (g *gateModel) probe(now time.Duration, state backendState) {
	if state == up {
		for _, h := range g.held {
			wait := now - h.at
			g.delivered++
			g.holds = append(g.holds, wait)
			if h.foundAsleep {
				g.firstWaits = append(g.firstWaits, wait)
			}
			g.inFlight = append(g.inFlight, now+g.answer)
		}
		g.held = g.held[:0]
		return
	}
	kept := g.held[:0]
	for _, h := range g.held {
		if now-h.at >= g.holdTimeout {
			g.failures = append(g.failures, failure{h.at, h.person, "hold timeout"})
			continue
		}
		kept = append(kept, h)
	}
	g.held = kept
}

// finish drops the answers that have ended.
func (g *gateModel) finish(now time.Duration) {
	kept := g.inFlight[:0]
	for _, end := range g.inFlight {
		if end > now {
			kept = append(kept, end)
		}
	}
	g.inFlight = kept
}

// scaledIn is the backend going away under its in-flight answers: they fail.
func (g *gateModel) scaledIn(now time.Duration) {
	for range g.inFlight {
		g.failures = append(g.failures, failure{now, "", "cut by scale-in"})
	}
	g.inFlight = g.inFlight[:0]
}

// listRequest is a page load asking for the model list.
func (g *gateModel) listRequest(state backendState) {
	switch {
	case state == up:
	case g.enabled:
		g.listsFromMemory++
	default:
		g.listsLost++
	}
}

// demand is what the gate adds to KEDA's value: held and in-flight requests.
func (g *gateModel) demand() int {
	if !g.enabled {
		return 0
	}
	return len(g.held) + len(g.inFlight)
}

// recent is a wake=request backend's value: distinct people with a request
// within idle, at least 1 while anything is held or in flight.
func (g *gateModel) recent(now time.Duration) int {
	n := 0
	for _, at := range g.lastBy {
		if now-at < g.idle {
			n++
		}
	}
	if n == 0 && g.demand() > 0 {
		n = 1
	}
	return n
}

// pool is one backend with its gate, its ScaledObject and its wake rule.
type pool struct {
	name    string
	wake    wakeRule
	gate    *gateModel
	keda    kedaModel
	backend backendModel
	onTicks int
	pushed  bool // the last value was above 0 (the exporter pushes on 0 -> >0)
}

// value is what KEDA gets for this pool; false: unknown (the exporter
// answers an error), when the people count is needed and unknown.
func (p *pool) value(now time.Duration, people int, known bool) (int, bool) {
	if p.wake == wakeRequest {
		return p.gate.recent(now), true
	}
	if d := p.gate.demand(); !known || d > people {
		return d, known || d > 0
	}
	return people, true
}

func (p *pool) onHours() float64 { return (time.Duration(p.onTicks) * tick).Hours() }

// world is what every pool of a day shares.
type world struct {
	step, polling, cooldown, pushLatency time.Duration
	gate                                 bool
	holdTimeout, answer                  time.Duration
}

type poolSpec struct {
	name    string
	wake    wakeRule
	startup time.Duration
	idle    time.Duration // wake=request
	// cooldown is this pool's KEDA cooldownPeriod; 0: the world's.
	cooldown time.Duration
}

func (w world) newPool(s poolSpec) *pool {
	cooldown := w.cooldown
	if s.cooldown > 0 {
		cooldown = s.cooldown
	}
	return &pool{
		name:    s.name,
		wake:    s.wake,
		gate:    newGateModel(w.gate || s.wake == wakeRequest, w.holdTimeout, w.answer, s.idle),
		keda:    kedaModel{cooldown: cooldown, polling: w.polling, pushLatency: w.pushLatency},
		backend: backendModel{startup: s.startup},
	}
}

// runDay plays the trace against the pools: served holds what the exporter
// answered at each step (-1: an error), route sends message i of the trace to
// a pool. Events at midnight (tabs left open the evening before) are no page
// loads of the day.
func runDay(tr []event, served []int, route func(i int) int, pools []*pool, w world) {
	next := 0
	for ; next < len(tr) && tr[next].at == 0; next++ {
	}
	people, known := 0, false
	for now := time.Duration(0); now < 24*time.Hour; now += tick {
		for _, p := range pools {
			p.backend.advance(now)
			if len(p.gate.held) > 0 {
				p.gate.probe(now, p.backend.state)
			}
		}
		for ; next < len(tr) && tr[next].at <= now; next++ {
			switch e := tr[next]; e.kind {
			case send:
				p := pools[route(next)]
				p.gate.request(now, e.person, p.backend.state)
			case open:
				for _, p := range pools {
					p.gate.listRequest(p.backend.state)
				}
			}
		}
		read := now%w.step == 0
		if read {
			v := served[now/w.step]
			people, known = max(v, 0), v >= 0
		}
		for _, p := range pools {
			p.gate.finish(now)
			v, ok := p.value(now, people, known)
			if ok && (read || v > 0 && !p.pushed) {
				p.keda.observe(now, v)
			}
			if ok && now%w.polling == 0 && p.keda.poll(now, v) {
				p.backend.scaleIn()
				p.gate.scaledIn(now)
			}
			p.pushed = ok && v > 0
			if p.keda.due(now) {
				p.backend.scaleUp(now)
			}
			if p.keda.replicas == 1 {
				p.onTicks++
			}
		}
	}
}
