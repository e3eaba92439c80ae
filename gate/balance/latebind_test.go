package balance_test

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/gate/balance"
)

// Late binding, on the same virtual-clock busy hour: when no replica has a
// free slot, a request waits in the gate (first in, first out) and goes to
// the first replica that frees one, instead of being placed at arrival in a
// replica's own queue behind an answer of unknown length. The gate does not
// do this (today it places at arrival); these rows measure whether it
// should. The simulator below also places at arrival, and then reproduces
// simulate's rows exactly (asserted), so both are the same hour.

// binding is one row: how and when the gate places a request, and the
// replicas' real parallel slots against the parallel= the gate believes.
type binding struct {
	name string
	make func(seed uint64) (placer, *balance.Chooser)
	late bool
	// real is each replica's OLLAMA_NUM_PARALLEL: answers it runs at once,
	// each at full speed (an upper bound on what a second slot adds on one
	// GPU); believed is the gate's parallel=. 0 means 1.
	real, believed int
	// modelWait (late binding, two models): a queued request waits this
	// long for a freed replica that has its model loaded (or none), while
	// some replica has it; then it takes any free slot. 0 takes any free
	// slot at once (strict first in, first out).
	modelWait time.Duration
	// preferModel (late binding, two models): a freed slot goes to the
	// oldest waiting request for a model loaded there, else to the oldest.
	preferModel bool
	// homeWait (late binding): a later turn that found no free slot when it
	// came waits this long for the replica that served its conversation's
	// last turn (its prompt cached there), before it takes another free
	// slot. One that found a free slot takes it, as the gate's move rule does.
	homeWait time.Duration
	// fallback (late binding): a request that waited this long in the gate
	// is placed as at arrival, in a busy replica's queue (a guard against a
	// parallel= set below the replicas' real slots). 0: never.
	fallback time.Duration
}

// lateReq is a question and what its answer will cost.
type lateReq struct {
	person, model, turn int
	conv                string
	at, decode          time.Duration
	queued              bool // it found no free slot when it came
}

// lateReplica is a stand-in replica with its own queue: it runs up to real
// answers at once, loads one model at a time (only when no answer runs),
// and caches max(hourSpec.slots, real) prompts (a prompt per slot).
type lateReplica struct {
	sent    int // answers the gate sent there not yet ended (its in-flight count)
	model   int // the model it has once what was sent is through (-1: none); what the gate knows
	loaded  int // the model loaded now (-1: none)
	loadEnd time.Duration
	running int
	queue   []*lateReq
	cache   []string
}

// Event kinds besides an answer's end on replica >= 0 (question as in simulate).
const waitOver = -3

// forever is a wait longer than any hour.
const forever = time.Duration(1 << 62)

func simulateBinding(spec hourSpec, b binding, place placer, seed uint64) bindingResult {
	slots, believed := max(b.real, 1), max(b.believed, 1)
	rng := rand.New(rand.NewPCG(seed, 1))
	exp := func(mean time.Duration) time.Duration { return time.Duration(rng.ExpFloat64() * float64(mean)) }
	reps := make([]*lateReplica, spec.replicas)
	for i := range reps {
		reps[i] = &lateReplica{model: -1, loaded: -1}
	}
	var q events
	type person struct{ chat, turn, model int }
	ps := make([]person, spec.people)
	for i := range ps {
		ps[i].model = i % spec.models
		heap.Push(&q, event{at: exp(spec.think), person: i, end: question})
	}
	var res bindingResult
	cacheSize := max(spec.slots, slots)
	homes := map[string]int{} // conversation -> replica of its last turn

	// startOn starts what the replica's own queue allows, first in first out.
	startOn := func(i int, now time.Duration) {
		r := reps[i]
		for len(r.queue) > 0 && r.running < slots {
			req := r.queue[0]
			if r.loaded != req.model && r.running > 0 {
				return // the load waits for the answers running on the other model
			}
			r.queue = r.queue[1:]
			start := max(now, r.loadEnd)
			if r.loaded != req.model {
				start += spec.load
				r.loaded, r.loadEnd = req.model, start
				res.loads++
			}
			history := req.turn * (spec.userBytes + spec.answerBytes)
			uncached := history + spec.userBytes
			key := fmt.Sprintf("%s@%d", req.conv, req.turn)
			if j := slices.Index(r.cache, key); j >= 0 && req.turn > 0 {
				uncached = spec.userBytes
				r.cache = slices.Delete(r.cache, j, j+1)
			}
			r.cache = append(r.cache, fmt.Sprintf("%s@%d", req.conv, req.turn+1))
			if len(r.cache) > cacheSize {
				r.cache = r.cache[1:]
			}
			first := start + time.Duration(float64(spec.prefillPerKiB)*float64(uncached)/1024)
			r.running++
			res.ttft = append(res.ttft, first-req.at)
			heap.Push(&q, event{at: first + req.decode, person: req.person, end: i})
		}
	}
	send := func(i int, req *lateReq, now time.Duration) {
		if h, ok := homes[req.conv]; ok {
			res.laterTurns++
			if h == i {
				res.home++
			}
		}
		homes[req.conv] = i
		reps[i].sent++
		reps[i].model = req.model
		reps[i].queue = append(reps[i].queue, req)
		startOn(i, now)
	}
	view := func(i int, model int) balance.Replica {
		r := reps[i]
		loaded := r.model == model
		return balance.Replica{ID: fmt.Sprintf("r%d", i), InFlight: r.sent, Parallel: believed, Loaded: loaded, Evicts: !loaded && r.model >= 0}
	}
	// takes says whether a queued request may take replica r's free slot.
	takes := func(req *lateReq, i int, now time.Duration) bool {
		r := reps[i]
		if h, ok := homes[req.conv]; ok && req.queued && h != i && reps[h].sent >= believed && now-req.at < b.homeWait {
			return false
		}
		if b.modelWait == 0 || r.model == req.model || r.model < 0 || now-req.at >= b.modelWait {
			return true
		}
		return !slices.ContainsFunc(reps, func(o *lateReplica) bool { return o.model == req.model })
	}
	var waiting []*lateReq // in the gate, oldest first
	// sendOldest sends the oldest waiting request that a replica with a
	// free slot (as the gate counts them) takes, chosen by the placer among
	// those; with sameModel, only to a replica with its model loaded (or none).
	sendOldest := func(now time.Duration, sameModel bool) bool {
		for k, req := range waiting {
			var views []balance.Replica
			var index []int
			for i, r := range reps {
				if r.sent < believed && takes(req, i, now) && (!sameModel || r.model == req.model || r.model < 0) {
					views = append(views, view(i, req.model))
					index = append(index, i)
				}
			}
			if len(views) > 0 {
				waiting = slices.Delete(waiting, k, k+1)
				send(index[place(views, req.conv, req.person)], req, now)
				return true
			}
		}
		return false
	}
	atArrival := func(req *lateReq, now time.Duration) {
		views := make([]balance.Replica, len(reps))
		for i := range reps {
			views[i] = view(i, req.model)
		}
		send(place(views, req.conv, req.person), req, now)
	}
	dispatch := func(now time.Duration) {
		for (b.preferModel && sendOldest(now, true)) || sendOldest(now, false) {
		}
		for b.fallback > 0 && len(waiting) > 0 && now-waiting[0].at >= b.fallback {
			req := waiting[0]
			waiting = waiting[1:]
			atArrival(req, now)
		}
	}
	chats := 0
	for q.Len() > 0 {
		ev := heap.Pop(&q).(event)
		switch {
		case ev.end >= 0:
			r := reps[ev.end]
			r.running--
			r.sent--
			heap.Push(&q, event{at: ev.at + exp(spec.think), person: ev.person, end: question})
			startOn(ev.end, ev.at)
			dispatch(ev.at)
			continue
		case ev.end == waitOver:
			dispatch(ev.at)
			continue
		case ev.at > spec.length:
			continue // the hour is over: no new question; what was asked still gets its first token
		}
		p := &ps[ev.person]
		if p.turn == 0 {
			chats++
			p.chat = chats
		}
		req := &lateReq{person: ev.person, model: p.model, turn: p.turn, conv: fmt.Sprintf("chat-%d", p.chat), at: ev.at, decode: exp(spec.decode)}
		res.answers++
		if p.turn++; p.turn >= spec.turns {
			p.turn = 0
		}
		if !b.late {
			atArrival(req, ev.at)
			continue
		}
		waiting = append(waiting, req)
		if !slices.ContainsFunc(reps, func(r *lateReplica) bool { return r.sent < believed }) {
			req.queued = true
		}
		for _, w := range []time.Duration{b.modelWait, b.homeWait, b.fallback} {
			if w > 0 {
				heap.Push(&q, event{at: ev.at + w, end: waitOver})
			}
		}
		dispatch(ev.at)
	}
	return res
}

// bindingResult is an hour's result and how many later turns of a
// conversation went to the replica of its last turn.
type bindingResult struct {
	hourResult
	laterTurns, home int
}

func runBinding(spec hourSpec, b binding) bindingResult {
	var all bindingResult
	for seed := uint64(1); seed <= seeds; seed++ {
		place, _ := b.make(seed)
		r := simulateBinding(spec, b, place, seed)
		all.ttft = append(all.ttft, r.ttft...)
		all.answers += r.answers
		all.loads += r.loads
		all.laterTurns += r.laterTurns
		all.home += r.home
	}
	return all
}

// rows are a busy hour's results by row name.
type rows map[string]bindingResult

// claim is something a table of rows shows.
type claim struct {
	says  string
	holds func(rows) bool
}

var (
	arrival = "gate (default policy)"
	late    = "late binding, gate's rules"
)

// TestBusyHourLateBinding compares late binding with the gate's placement
// at arrival and random.choice on the busy hour, and with a replica that
// runs more answers at once than the gate's parallel= says.
func TestBusyHourLateBinding(t *testing.T) {
	twoModels := busyHour
	twoModels.models = 2
	perConversation := busyHour
	perConversation.slots = 1000
	for _, tc := range []struct {
		name   string
		spec   hourSpec
		rows   []binding
		claims []claim // what the rows show (the clock is virtual: the same every run)
	}{
		{"one model", busyHour, []binding{
			{name: arrival, make: gateDefault},
			{name: "random.choice", make: random},
			{name: late, make: gateDefault, late: true},
			{name: "late binding, any free replica", make: random, late: true},
			{name: "late binding, waits 5 s for home", make: gateDefault, late: true, homeWait: 5 * time.Second},
			{name: "late binding, waits 15 s for home", make: gateDefault, late: true, homeWait: 15 * time.Second},
			{name: "late binding, falls back after 5 s", make: gateDefault, late: true, fallback: 5 * time.Second},
			{name: "late binding, falls back after 15 s", make: gateDefault, late: true, fallback: 15 * time.Second},
			{name: "late binding, falls back after 30 s", make: gateDefault, late: true, fallback: 30 * time.Second},
		}, []claim{
			{"late binding: TTFT p99 at most half of random.choice's", func(r rows) bool { return r[late].p(.99)*2 <= r["random.choice"].p(.99) }},
			{"late binding: TTFT p99 below the gate's at arrival", func(r rows) bool { return r[late].p(.99) < r[arrival].p(.99) }},
		}},
		{"one model, a prompt cache per conversation", perConversation, []binding{
			{name: arrival, make: gateDefault},
			{name: "random.choice", make: random},
			{name: late, make: gateDefault, late: true},
		}, nil},
		{"two models", twoModels, []binding{
			{name: arrival, make: gateDefault},
			{name: "random.choice", make: random},
			{name: "late binding, takes any free slot", make: gateDefault, late: true},
			{name: "late binding, its model first", make: gateDefault, late: true, preferModel: true},
			{name: "late binding, model first, waits 30 s", make: gateDefault, late: true, preferModel: true, modelWait: 30 * time.Second},
			{name: "late binding, model first, waits 60 s", make: gateDefault, late: true, preferModel: true, modelWait: 60 * time.Second},
			{name: "late binding, waits 15 s for model", make: gateDefault, late: true, modelWait: 15 * time.Second},
			{name: "late binding, waits 30 s for model", make: gateDefault, late: true, modelWait: 30 * time.Second},
			{name: "late binding, waits 60 s for model", make: gateDefault, late: true, modelWait: 60 * time.Second},
			{name: "late binding, waits 120 s for model", make: gateDefault, late: true, modelWait: 120 * time.Second},
			{name: "late binding, waits for model", make: gateDefault, late: true, modelWait: forever},
		}, []claim{
			{"late binding, any free slot: more model loads than random.choice", func(r rows) bool {
				return r["late binding, takes any free slot"].loads > r["random.choice"].loads
			}},
			{"late binding, model first, waits 30 s: TTFT p99 below the gate's at arrival, model loads at most a third of random.choice's", func(r rows) bool {
				l := r["late binding, model first, waits 30 s"]
				return l.p(.99) < r[arrival].p(.99) && l.loads*3 <= r["random.choice"].loads
			}},
		}},
		{"one model, replicas of 2 answers at once", busyHour, []binding{
			{name: "gate, parallel=1 (wrong)", make: gateDefault, real: 2, believed: 1},
			{name: "gate, parallel=2", make: gateDefault, real: 2, believed: 2},
			{name: "random.choice", make: random, real: 2},
			{name: "late binding, parallel=1 (wrong)", make: gateDefault, late: true, real: 2, believed: 1},
			{name: "late binding, parallel=2", make: gateDefault, late: true, real: 2, believed: 2},
			{name: "late binding, parallel=1 (wrong), 5 s", make: gateDefault, late: true, real: 2, believed: 1, fallback: 5 * time.Second},
			{name: "late binding, parallel=1 (wrong), 15 s", make: gateDefault, late: true, real: 2, believed: 1, fallback: 15 * time.Second},
			{name: "late binding, parallel=1 (wrong), 30 s", make: gateDefault, late: true, real: 2, believed: 1, fallback: 30 * time.Second},
		}, []claim{
			{"late binding, parallel=1 on replicas of 2: TTFT p99 above the gate's at arrival with the same parallel=1, fewer answers than with parallel=2", func(r rows) bool {
				wrong := r["late binding, parallel=1 (wrong)"]
				return wrong.p(.99) > r["gate, parallel=1 (wrong)"].p(.99) && wrong.answers < r["late binding, parallel=2"].answers
			}},
		}},
		{"one model, replicas of 1 answer, parallel=2 (wrong)", busyHour, []binding{
			{name: "gate, parallel=2 (wrong)", make: gateDefault, real: 1, believed: 2},
			{name: "late binding, parallel=2 (wrong)", make: gateDefault, late: true, real: 1, believed: 2},
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := rows{}
			for _, b := range tc.rows {
				all := runBinding(tc.spec, b)
				rows[b.name] = all
				t.Logf("%-38s TTFT p50 %5.1fs p99 %6.1fs  answers/min %5.1f  model loads/h %5.1f  later turns at home %3.0f%%",
					b.name, all.p(.5).Seconds(), all.p(.99).Seconds(), float64(all.answers)/seeds/60, float64(all.loads)/seeds,
					100*float64(all.home)/float64(all.laterTurns))
				// Every question asked in the hour gets its first token.
				if len(all.ttft) != all.answers {
					t.Errorf("%s: %d first tokens for %d questions", b.name, len(all.ttft), all.answers)
				}
			}
			// Placed at arrival on replicas of one answer, this simulator is
			// simulate: the same hours, the same numbers.
			if tc.rows[0].real <= 1 && tc.rows[0].believed <= 1 {
				for _, pl := range placements {
					got, ok := rows[pl.name]
					if !ok {
						continue
					}
					want := runHour(tc.spec, pl)
					if got.p(.5) != want.p(.5) || got.p(.99) != want.p(.99) || got.answers != want.answers || got.loads != want.loads {
						t.Errorf("%s placed at arrival: p50 %s p99 %s answers %d loads %d; simulate: %s %s %d %d",
							pl.name, got.p(.5), got.p(.99), got.answers, got.loads, want.p(.5), want.p(.99), want.answers, want.loads)
					}
				}
			}
			for _, c := range tc.claims {
				if !c.holds(rows) {
					t.Errorf("no longer so: %s", c.says)
				}
			}
		})
	}
}
