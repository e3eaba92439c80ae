package balance_test

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/gate"
	"github.com/openwebui-exporter/openwebui_exporter/gate/balance"
	"github.com/openwebui-exporter/openwebui_exporter/internal/hpa"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

// The busy hour, simulated on a virtual clock (the same every run): people
// chatting in turns with N replicas of one answer at a time, placed by a
// balancer. It tunes the move rule; bench/busyhour runs the real stand-ins.

type hourSpec struct {
	people, replicas int
	models           int           // models the people spread over; one is loaded per replica at a time
	slots            int           // prompts a replica keeps cached: 1 is Ollama's runner at NUM_PARALLEL=1
	turns            int           // per chat; then the person starts a new chat
	think            time.Duration // mean time between an answer and the next question
	decode           time.Duration // mean time to generate an answer
	prefillPerKiB    time.Duration
	load             time.Duration // a model load
	userBytes        int           // per question
	answerBytes      int           // per answer
	length           time.Duration

	// What the gate knows of the models loaded (the placements see it as
	// Loaded and Evicts): probe 0 is the truth at once; else each replica's
	// /api/ps read every probe plus what the gate routed since
	// (balance.Resident with Capacity beliefCap, 0 without a bound).
	probe     time.Duration
	beliefCap int
	// beliefForgets: a reading forgets the requests that wait on a replica
	// (the gate before it kept them: Route then Done at once).
	beliefForgets bool

	scale *scaling // nil: replicas fixed for the hour
}

// scaling is KEDA's HPA on the pool's value (demand.Decider: held plus in
// flight, the people floor), from one replica up to max.
type scaling struct {
	max        int
	people     int           // the pool's people= (0: one replica while anybody is active)
	sync       time.Duration // how often the HPA reads the value
	downWindow time.Duration // the HPA's scale-down stabilization window
	startup    time.Duration // from the scale-up to a routable replica (pod and Ollama start; the model loads at its first answer)
}

// chartScaling is what the chart ships: KEDA's HPA with Kubernetes'
// defaults (a read every 15 s, scale-down after 5 minutes of lower
// recommendations), max 3 replicas, people= unset; a pod routable 10 s
// after the scale-up (a warm GPU node and a cached image).
var chartScaling = scaling{max: 3, sync: hpa.DefaultSyncPeriod, downWindow: hpa.DefaultScaleDownWindow, startup: 10 * time.Second}

// seeds is how many simulated hours each placement runs (the same ones for each).
const seeds = 20

var busyHour = hourSpec{
	people: 20, replicas: 3, models: 1, slots: 1, turns: 8,
	think: 90 * time.Second, decode: 12 * time.Second, prefillPerKiB: 120 * time.Millisecond,
	load: 15 * time.Second, userBytes: 400, answerBytes: 2500, length: time.Hour,
}

type hourResult struct {
	ttft           []time.Duration
	answers        int
	loads          int
	moved, stayed  uint64
	replicaMinutes float64
}

func (r hourResult) p(q float64) time.Duration {
	s := slices.Clone(r.ttft)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

// placer chooses a replica for a turn; views are the routable replicas' loads now.
type placer func(views []balance.Replica, conversation string, person int) int

type simReplica struct {
	busyUntil time.Duration
	queue     int // answers placed on it not yet ended
	model     int // the model it has once its queue is through (-1: none)
	loads     []load
	cache     []string // conversation prompt keys cached, most recent last (key@turns)
	belief    balance.Resident

	started, readyAt, stopped time.Duration // stopped: 0 while it runs
	draining                  bool          // scaled in: gets nothing new, stops when its answers end
}

// load is a model load on a replica: it begins when the answers before it
// ended, and from then on /api/ps lists the model.
type load struct {
	at    time.Duration
	model int
}

// loadedAt is the model a replica's /api/ps lists at t (-1: none). Answers
// queued there for another model have not loaded it yet.
func (r *simReplica) loadedAt(t time.Duration) int {
	m := -1
	for _, l := range r.loads {
		if l.at <= t {
			m = l.model
		}
	}
	return m
}

func (r *simReplica) routable(now time.Duration) bool {
	return !r.draining && r.stopped == 0 && now >= r.readyAt
}

// The events of the hour: a question, an answer's end on a replica, an HPA sync.
const (
	question = -1
	hpaSync  = -2
)

type event struct {
	at     time.Duration
	person int
	end    int // replica whose answer ends (>=0), or question, or hpaSync
}

type events []event

func (e events) Len() int           { return len(e) }
func (e events) Less(i, j int) bool { return e[i].at < e[j].at }
func (e events) Swap(i, j int)      { e[i], e[j] = e[j], e[i] }
func (e *events) Push(x any)        { *e = append(*e, x.(event)) }
func (e *events) Pop() any          { o := *e; x := o[len(o)-1]; *e = o[:len(o)-1]; return x }

// poolDemand is the one gate backend the simulated pool is, for
// demand.Decider: a dns+http pool of one answer per replica.
type poolDemand struct {
	cfg      gate.BackendConfig
	inFlight int
}

func (g *poolDemand) Backends() []gate.BackendConfig { return []gate.BackendConfig{g.cfg} }
func (g *poolDemand) Demand(string) (gate.Demand, bool) {
	return gate.Demand{InFlight: g.inFlight}, true
}
func (g *poolDemand) Changed() <-chan struct{} { return nil }

func simulate(spec hourSpec, place placer, seed uint64) hourResult {
	rng := rand.New(rand.NewPCG(seed, 1))
	exp := func(mean time.Duration) time.Duration { return time.Duration(rng.ExpFloat64() * float64(mean)) }
	var reps []*simReplica
	addReplica := func(now, ready time.Duration) {
		reps = append(reps, &simReplica{model: -1, belief: balance.Resident{Capacity: spec.beliefCap}, started: now, readyAt: ready})
	}
	var q events
	var scaler *hpa.HPA
	var pool *poolDemand
	var decider *demand.Decider
	if spec.scale == nil {
		for range spec.replicas {
			addReplica(0, 0)
		}
	} else {
		addReplica(0, 0) // the pool's floor before the hour: one replica
		var err error
		scaler, err = hpa.New(hpa.Config{Min: 1, Max: spec.scale.max, Target: 1, ScaleDownWindow: spec.scale.downWindow})
		if err != nil {
			panic(err)
		}
		pool = &poolDemand{cfg: gate.BackendConfig{Name: "pool", Wake: gate.WakeArrival, Discover: true, Parallel: 1, People: spec.scale.people}}
		decider = demand.New(nil, pool)
		heap.Push(&q, event{at: spec.scale.sync, end: hpaSync})
	}
	type person struct {
		chat, turn, model int
	}
	ps := make([]person, spec.people)
	for i := range ps {
		ps[i].model = i % spec.models
		heap.Push(&q, event{at: exp(spec.think), person: i, end: question})
	}
	var res hourResult
	chats := 0
	lastProbe := time.Duration(-1)
	for q.Len() > 0 {
		ev := heap.Pop(&q).(event)
		if ev.at > spec.length {
			break
		}
		switch {
		case ev.end >= 0:
			r := reps[ev.end]
			if !spec.beliefForgets {
				r.belief.Done(modelName(ps[ev.person].model))
			}
			if r.queue--; r.queue == 0 && r.draining {
				r.stopped = ev.at
			}
			heap.Push(&q, event{at: ev.at + exp(spec.think), person: ev.person, end: question})
			continue
		case ev.end == hpaSync:
			scaleTo(reps, ev.at, spec, scaler, decider, pool, addReplica)
			heap.Push(&q, event{at: ev.at + spec.scale.sync, end: hpaSync})
			continue
		}
		p := &ps[ev.person]
		if p.turn == 0 {
			chats++
			p.chat = chats
		}
		conv := fmt.Sprintf("chat-%d", p.chat)
		if spec.probe > 0 && ev.at/spec.probe > lastProbe {
			// The probes since the last request read the models placed until
			// then: nothing was placed in between.
			lastProbe = ev.at / spec.probe
			for _, r := range reps {
				var loaded []string
				if m := r.loadedAt(lastProbe * spec.probe); m >= 0 {
					loaded = []string{modelName(m)}
				}
				r.belief.Observe(loaded, clock.Add(ev.at+5*time.Minute))
			}
		}
		var views []balance.Replica
		var index []int // views[i] is reps[index[i]]
		for i, r := range reps {
			if !r.routable(ev.at) {
				continue
			}
			loaded, other := r.model == p.model, r.model >= 0 && r.model != p.model
			if spec.probe > 0 {
				loaded, other = r.belief.Loaded(clock.Add(ev.at), modelName(p.model))
			}
			views = append(views, balance.Replica{ID: fmt.Sprintf("r%d", i), InFlight: r.queue, Parallel: 1, Loaded: loaded, Evicts: !loaded && other})
			index = append(index, i)
		}
		if len(views) == 0 {
			panic("no routable replica") // the pool keeps one: see scaleTo
		}
		i := index[place(views, conv, ev.person)]
		r := reps[i]
		r.belief.Route(modelName(p.model), clock.Add(ev.at+5*time.Minute))
		if spec.beliefForgets {
			r.belief.Done(modelName(p.model))
		}
		start := max(ev.at, r.busyUntil)
		if r.model != p.model {
			r.loads = append(r.loads, load{at: start, model: p.model})
			start += spec.load
			r.model = p.model
			res.loads++
		}
		// The prompt: every earlier question and answer, then the new question.
		history := p.turn * (spec.userBytes + spec.answerBytes)
		uncached := history + spec.userBytes
		key := fmt.Sprintf("%s@%d", conv, p.turn)
		if j := slices.Index(r.cache, key); j >= 0 && p.turn > 0 {
			uncached = spec.userBytes
			r.cache = slices.Delete(r.cache, j, j+1)
		}
		r.cache = append(r.cache, fmt.Sprintf("%s@%d", conv, p.turn+1))
		if len(r.cache) > spec.slots {
			r.cache = r.cache[1:]
		}
		first := start + time.Duration(float64(spec.prefillPerKiB)*float64(uncached)/1024)
		end := first + exp(spec.decode)
		r.busyUntil = end
		r.queue++
		res.ttft = append(res.ttft, first-ev.at)
		res.answers++
		heap.Push(&q, event{at: end, person: ev.person, end: i})
		if p.turn++; p.turn >= spec.turns {
			p.turn = 0
		}
	}
	for _, r := range reps {
		stop := spec.length
		if r.stopped > 0 {
			stop = min(r.stopped, spec.length)
		}
		res.replicaMinutes += (stop - r.started).Minutes()
	}
	return res
}

// scaleTo is one HPA sync: the pool's value as demand.Decider computes it
// from what the gate holds and streams (here: the answers placed and not
// ended) and the people; then new replicas (routable after the start-up),
// or replicas drained as Kubernetes picks them (not ready ones first, then
// the one ready the shortest time); a drained one stops when its last
// answer ends (the preStop drain: no answer is cut).
func scaleTo(reps []*simReplica, now time.Duration, spec hourSpec, scaler *hpa.HPA, d *demand.Decider,
	pool *poolDemand, add func(now, ready time.Duration)) {
	pool.inFlight = 0
	current := 0
	for _, r := range reps {
		pool.inFlight += r.queue
		if !r.draining && r.stopped == 0 {
			current++
		}
	}
	value, err := d.Decide(snapshot.Snapshot{Count: openwebui.Count{ActiveUsers: spec.people}}, "pool")
	if err != nil {
		panic(err)
	}
	want := scaler.Desired(now, float64(value), current)
	for ; current < want; current++ {
		add(now, now+spec.scale.startup)
	}
	for ; current > want; current-- {
		var pick *simReplica
		for _, r := range reps {
			if r.draining || r.stopped != 0 {
				continue
			}
			if pick == nil || deletedFirst(r, pick, now) {
				pick = r
			}
		}
		pick.draining = true
		if pick.queue == 0 {
			pick.stopped = now
		}
	}
}

// deletedFirst says whether Kubernetes' ReplicaSet deletes a before b when
// it scales in: a pod not ready before a ready one, then the one ready the
// shortest time.
func deletedFirst(a, b *simReplica, now time.Duration) bool {
	if aReady, bReady := a.readyAt <= now, b.readyAt <= now; aReady != bReady {
		return !aReady
	}
	return a.readyAt > b.readyAt
}

// clock is the simulated hour's start for balance.Resident's times.
var clock = time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)

func modelName(m int) string { return fmt.Sprintf("model-%d", m) }

func gatePlacer(p balance.Policy) (placer, *balance.Chooser) {
	c := balance.NewChooser(p, 0)
	return func(v []balance.Replica, conv string, _ int) int { return c.Choose(v, conv) }, c
}

func randomPlacer(seed uint64) placer {
	rng := rand.New(rand.NewPCG(seed, 2))
	return func(v []balance.Replica, _ string, _ int) int { return rng.IntN(len(v)) }
}

// roundRobinPlacer is a Kubernetes Service under one client's keep-alive
// pool: a request takes the most recently freed idle connection (aiohttp's
// pool), a new one goes to the next ready replica in turn. A replica added
// by a scale-out gets only new connections.
func roundRobinPlacer() placer {
	// Connections are not modelled one by one: a free connection exists on a
	// replica while fewer requests run on it than connections were opened to it.
	opened := map[string]int{}
	next := 0
	var lastFreed []string
	return func(v []balance.Replica, _ string, _ int) int {
		for k := len(lastFreed) - 1; k >= 0; k-- {
			if i := slices.IndexFunc(v, func(r balance.Replica) bool { return r.ID == lastFreed[k] }); i >= 0 && v[i].InFlight < opened[v[i].ID] {
				return i
			}
		}
		for i := range v {
			if v[i].InFlight < opened[v[i].ID] {
				lastFreed = append(lastFreed, v[i].ID)
				return i
			}
		}
		i := next % len(v)
		next++
		opened[v[i].ID]++
		lastFreed = append(lastFreed, v[i].ID)
		return i
	}
}

// placement is one row of a busy hour: a placer, and what it changes of the
// hour (how the gate knows what is loaded, whether the pool scales).
type placement struct {
	name  string
	make  func(seed uint64) (placer, *balance.Chooser)
	tweak func(*hourSpec) // nil: the hour as it is
}

func gateWith(p balance.Policy) func(uint64) (placer, *balance.Chooser) {
	return func(uint64) (placer, *balance.Chooser) { return gatePlacer(p) }
}

var (
	gateDefault = gateWith(balance.DefaultPolicy)
	random      = func(seed uint64) (placer, *balance.Chooser) { return randomPlacer(seed), nil }
	roundRobin  = func(uint64) (placer, *balance.Chooser) { return roundRobinPlacer(), nil }
	fixed3      = func(s *hourSpec) { s.scale = nil }
)

func scaled(people int) func(*hourSpec) {
	return func(s *hourSpec) { sc := chartScaling; sc.people = people; s.scale = &sc }
}

// The placements compared on one hour: the move rules, KubeAI's bound,
// random.choice and a Service.
var placements = []placement{
	{"gate (default policy)", gateDefault, nil},
	{"gate, MoveMargin 2", gateWith(balance.Policy{MoveQueue: 1, MoveMargin: 2}), nil},
	{"gate, MoveQueue 2", gateWith(balance.Policy{MoveQueue: 2}), nil},
	{"gate, never moves", gateWith(balance.Policy{MoveQueue: 1 << 30, MoveMargin: 1 << 30}), nil},
	{"bounded load 125% (KubeAI)", gateWith(balance.Policy{LoadFactor: 1.25}), nil},
	{"random.choice", random, nil},
	{"round robin per connection", roundRobin, nil},
}

// What the gate knows of the loaded models: /api/ps every 5 s (production),
// or every 100 s (5 s of real time in bench/busyhour at 20x before it
// compressed the probe); the belief bounded by max-loaded or not; a reading
// that keeps the requests still waiting on a replica or forgets them.
func belief(probe time.Duration, bound int, forgets bool) func(*hourSpec) {
	return func(s *hourSpec) { s.probe, s.beliefCap, s.beliefForgets = probe, bound, forgets }
}

var beliefs = []placement{
	{"gate, knows at once", gateDefault, belief(0, 0, false)},
	{"gate, ps 5 s (the gate now)", gateDefault, belief(5*time.Second, 1, false)},
	{"gate, ps 5 s, forgets waiting", gateDefault, belief(5*time.Second, 1, true)},
	{"gate, ps 5 s, no bound", gateDefault, belief(5*time.Second, 0, false)},
	{"gate, ps 5 s, neither (before)", gateDefault, belief(5*time.Second, 0, true)},
	{"gate, ps 100 s (the gate now)", gateDefault, belief(100*time.Second, 1, false)},
	{"gate, ps 100 s, neither (before)", gateDefault, belief(100*time.Second, 0, true)},
	{"random.choice", random, nil},
}

// Scaled 1..3 by KEDA on the gate's value against a fixed 3. random.choice
// cannot scale: Open WebUI's OLLAMA_BASE_URLS are fixed servers. A Service
// in front of the scaled Deployment can, on the same value (the gate
// counting, not placing).
var scalings = []placement{
	{"gate, scaled 1..3", gateDefault, scaled(0)},
	{"gate, scaled 1..3, people=5", gateDefault, scaled(5)},
	{"gate, fixed 3", gateDefault, fixed3},
	{"random.choice, fixed 3", random, fixed3},
	{"round robin, scaled 1..3", roundRobin, scaled(0)},
	{"round robin, fixed 3", roundRobin, fixed3},
}

// runHour runs a placement over the seeds and sums them.
func runHour(spec hourSpec, pl placement) hourResult {
	if pl.tweak != nil {
		pl.tweak(&spec)
	}
	var all hourResult
	for seed := uint64(1); seed <= seeds; seed++ {
		place, c := pl.make(seed)
		r := simulate(spec, place, seed)
		all.ttft = append(all.ttft, r.ttft...)
		all.answers += r.answers
		all.loads += r.loads
		all.replicaMinutes += r.replicaMinutes
		if c != nil {
			s, m := c.Moves()
			all.stayed += s
			all.moved += m
		}
	}
	return all
}

// TestBusyHour compares the placements on the same simulated hour (several
// seeds). It asserts the targets; go test -v -run BusyHour prints
// the tables that docs/replicas.md and BENCHMARKS.md quote.
func TestBusyHour(t *testing.T) {
	twoModels := func(s hourSpec) hourSpec { s.models = 2; return s }
	for _, tc := range []struct {
		name       string
		spec       hourSpec
		placements []placement
		gate       string // the row held to the targets against random.choice's; "" none
		random     string
	}{
		{"one model, one cached prompt per replica", busyHour, placements, "gate (default policy)", "random.choice"},
		{"one model, a prompt cache per conversation", func() hourSpec { s := busyHour; s.slots = 1000; return s }(), placements, "gate (default policy)", "random.choice"},
		{"two models", twoModels(busyHour), placements, "gate (default policy)", "random.choice"},
		{"two models, what the gate knows of the loaded models", twoModels(busyHour), beliefs, "gate, ps 5 s (the gate now)", "random.choice"},
		{"one model, scaled by KEDA", busyHour, scalings, "gate, scaled 1..3", "random.choice, fixed 3"},
		{"one model, 6 people, scaled by KEDA", func() hourSpec { s := busyHour; s.people = 6; return s }(), scalings, "", ""},
		{"one model, 10 people, scaled by KEDA", func() hourSpec { s := busyHour; s.people = 10; return s }(), scalings, "", ""},
		{"two models, scaled by KEDA", func() hourSpec { s := twoModels(busyHour); s.probe, s.beliefCap = 5*time.Second, 1; return s }(), scalings, "gate, scaled 1..3", "random.choice, fixed 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := map[string]hourResult{}
			for _, pl := range tc.placements {
				all := runHour(tc.spec, pl)
				rows[pl.name] = all
				t.Logf("%-33s TTFT p50 %5.1fs p99 %6.1fs  answers/min %5.1f  model loads/h %5.1f  replica-min/h %5.1f  moved %d of %d",
					pl.name, all.p(.5).Seconds(), all.p(.99).Seconds(), float64(all.answers)/seeds/60, float64(all.loads)/seeds,
					all.replicaMinutes/seeds, all.moved, all.moved+all.stayed)
			}
			// The targets: TTFT p99 at most half of random.choice's,
			// model loads with two models at most a third of its.
			if tc.gate == "" {
				return // a quiet hour: no target
			}
			gate, random := rows[tc.gate], rows[tc.random]
			if gate.p(.99)*2 > random.p(.99) {
				t.Errorf("TTFT p99: %s %s, %s %s; want at most half", tc.gate, gate.p(.99), tc.random, random.p(.99))
			}
			if tc.spec.models == 2 && gate.loads*3 > random.loads {
				t.Errorf("model loads: %s %d, %s %d; want at most a third", tc.gate, gate.loads, tc.random, random.loads)
			}
		})
	}
}
