package main

// The warm day (issue 24, -warm): what the gate's warming (docs/warming.md)
// does to each person's first message after they arrive. A model-only run:
// the people count is the open tabs (and Open WebUI's 180 s after a tab
// closes), not the exporter binary's answer as in the other tables, since
// warming changes nothing of what KEDA gets; KEDA and the start-up are the
// same model as the wake day. What is modelled:
//   - one arrival-woken pool with the gate, max-loaded models in memory
//     (-warm-max-loaded, 2: an 8B and a 70B fit one 80 GB GPU);
//   - each person uses one model, seeded: -warm-big-share of them the 70B;
//     the gate knows it (learned on earlier days: --gate.state-file);
//   - Ollama: a load takes -warm-loads per model (8B 8 s, 70B 40 s), one load
//     at a time in request order; a request for a loaded model starts at
//     once; a load that needs room unloads the idle model that expires first
//     and waits while every loaded model answers; a model unloads
//     OLLAMA_KEEP_ALIVE (5m) after its last answer ends;
//   - each person's first message after opening Open WebUI comes
//     -warm-first (10 s to 3 min, uniform, seeded) after the page opened,
//     unless the trace has one sooner;
//   - warming: as the pool answers HTTP, the models of the people there, the
//     most wanted first, no more than max-loaded; at an arrival while up, the
//     person's model; never while a request waits for a model; a warm-up that
//     does not fit is skipped. keep_alive: for ever while somebody who uses
//     the model is there (the gate checks every 30 s), else Ollama's timer
//     while others are there; nothing changes once nobody is there.

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

type warmSpec struct {
	people     int
	seed       uint64
	startup    time.Duration
	loads      map[string]time.Duration // model -> load time
	models     [2]string                // the small and the big model
	maxLoaded  int
	keepAlive  time.Duration // OLLAMA_KEEP_ALIVE
	answer     time.Duration
	cooldown   time.Duration
	polling    time.Duration
	push       time.Duration
	firstAfter [2]time.Duration
	bigShare   float64
	idle       time.Duration // --activity.idle-timeout: KEDA counts who arrived or wrote within it; 0: every open tab
	warm       bool
}

// activityWindow is Open WebUI's: a closed tab's person counts this long.
const activityWindow = 180 * time.Second

const (
	small8b = "llama3.1:8b"
	big70b  = "llama3.1:70b"
)

// firstMsg is a person's first message after they opened Open WebUI.
type firstMsg struct {
	person   string
	model    string
	arrived  time.Duration
	sent     time.Duration
	loadWait time.Duration // from reaching Ollama until its model was loaded for it
	done     bool
}

type warmResult struct {
	firsts          []firstMsg // by trace order
	gpuHours        float64
	warmups, unused int
	skipped         int
}

// firstMessages moves each person's first message after an arrival to a
// seeded moment within after, unless it was sooner, and lists them (trace
// index -> arrival).
func firstMessages(tr []event, after [2]time.Duration, seed uint64) ([]event, map[int]time.Duration) {
	rng := rand.New(rand.NewPCG(seed, 0xf125))
	out := slices.Clone(tr)
	arrivedAt := map[string]time.Duration{}
	type first struct {
		e       event
		arrived time.Duration
	}
	var firsts []first
	for i := range out {
		e := out[i]
		switch e.kind {
		case open:
			if e.at > 0 {
				arrivedAt[e.person] = e.at
			}
		case closeTab:
			delete(arrivedAt, e.person)
		case send:
			a, ok := arrivedAt[e.person]
			if !ok {
				continue
			}
			delete(arrivedAt, e.person)
			at := a + after[0] + time.Duration(rng.Int64N(int64(after[1]-after[0])+1))
			if at < e.at {
				out[i].at = at
			}
			firsts = append(firsts, first{out[i], a})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at < out[j].at })
	idx := map[int]time.Duration{}
	for _, f := range firsts {
		for i := range out {
			if out[i] == f.e {
				idx[i] = f.arrived
				break
			}
		}
	}
	return out, idx
}

// personModels gives each person their model, seeded.
func personModels(people int, models [2]string, share float64, seed uint64) map[string]string {
	rng := rand.New(rand.NewPCG(seed, 0x70b))
	out := map[string]string{}
	for i := range people {
		m := models[0]
		if rng.Float64() < share {
			m = models[1]
		}
		out[fmt.Sprintf("person-%d", i+1)] = m
	}
	return out
}

type simReq struct {
	model string
	sent  time.Duration
	first int // index into firsts, -1 if not a first message
}

type simModel struct {
	refs    int
	expires time.Duration // when idle; -1: for ever; 0: in use (refs > 0)
	warmed  bool          // loaded by the gate's warm-up
	used    bool          // a request used it since it loaded
}

// warmDay plays one day.
func warmDay(s warmSpec) warmResult {
	tr, firstIdx := firstMessages(trace(s.people, s.seed), s.firstAfter, s.seed)
	models := personModels(s.people, s.models, s.bigShare, s.seed)
	var res warmResult
	firstOf := map[int]int{}
	for i := range tr {
		if a, ok := firstIdx[i]; ok {
			firstOf[i] = len(res.firsts)
			res.firsts = append(res.firsts, firstMsg{person: tr[i].person, model: models[tr[i].person], arrived: a, sent: tr[i].at})
		}
	}

	keda := kedaModel{cooldown: s.cooldown, polling: s.polling, pushLatency: s.push}
	backend := backendModel{startup: s.startup}
	tabs := map[string]bool{}
	closed := map[string]time.Duration{}
	arrivedAt := map[string]time.Duration{}
	wroteAt := map[string]time.Duration{}
	var held, waiting []*simReq
	type answer struct {
		model string
		end   time.Duration
	}
	var inflight []answer
	loaded := map[string]*simModel{}
	var queue []string // models requested, not loaded, in order
	loading, loadBy, loadEnd := "", "", time.Duration(0)
	var pending []string // warm-ups to send
	wasUp := false

	present := func(now time.Duration) map[string]bool {
		out := map[string]bool{}
		for p := range tabs {
			out[p] = true
		}
		for p, t := range closed {
			if now-t < activityWindow {
				out[p] = true
			}
		}
		return out
	}
	// engaged is what KEDA gets from the people (the idle-tab policy).
	engaged := func(now time.Duration) int {
		n := 0
		for p := range present(now) {
			a, aok := arrivedAt[p]
			w, wok := wroteAt[p]
			if s.idle == 0 || aok && now-a < s.idle || wok && now-w < s.idle {
				n++
			}
		}
		return n
	}
	wanted := func(now time.Duration) map[string]int {
		w := map[string]int{}
		for p := range present(now) {
			w[models[p]]++
		}
		return w
	}
	unload := func(m string) {
		if lm := loaded[m]; lm != nil && lm.warmed && !lm.used {
			res.unused++
		}
		delete(loaded, m)
	}
	start := func(now time.Duration, r *simReq) {
		lm := loaded[r.model]
		lm.refs++
		lm.used = true
		lm.expires = 0
		inflight = append(inflight, answer{r.model, now + s.answer})
		if r.first >= 0 {
			res.firsts[r.first].loadWait = now - r.sent
			res.firsts[r.first].done = true
		}
	}
	dispatch := func(now time.Duration, r *simReq) {
		r.sent = now
		if loaded[r.model] != nil {
			start(now, r)
			return
		}
		waiting = append(waiting, r)
		if loading != r.model && !slices.Contains(queue, r.model) {
			queue = append(queue, r.model)
		}
	}
	// makeRoom unloads the idle model that expires first; false if all are busy.
	makeRoom := func() bool {
		victim := ""
		for m, lm := range loaded {
			if lm.refs > 0 {
				continue
			}
			if victim == "" || soonerSim(lm, loaded[victim]) {
				victim = m
			}
		}
		if victim == "" {
			return false
		}
		unload(victim)
		return true
	}
	const keepEvery = 30 * time.Second

	next := 0
	for now := time.Duration(0); now < 24*time.Hour; now += tick {
		backend.advance(now)
		isUp := backend.state == up
		for ; next < len(tr) && tr[next].at <= now; next++ {
			e := tr[next]
			switch e.kind {
			case open:
				tabs[e.person] = true
				delete(closed, e.person)
				arrivedAt[e.person] = now
				if s.warm && isUp && e.at > 0 {
					m := models[e.person]
					if loaded[m] == nil && loading != m && !slices.Contains(pending, m) {
						pending = append(pending, m)
					}
				}
			case closeTab:
				delete(tabs, e.person)
				closed[e.person] = now
			case send:
				wroteAt[e.person] = now
				first := -1
				if f, ok := firstOf[next]; ok {
					first = f
				}
				r := &simReq{model: models[e.person], first: first}
				if isUp && len(held) == 0 {
					dispatch(now, r)
				} else {
					held = append(held, r)
				}
			}
		}
		if isUp && !wasUp {
			// The first HTTP answer: held messages go first, then the plan.
			for _, r := range held {
				dispatch(now, r)
			}
			held = nil
			if s.warm {
				// The models of the people here, the one whose person
				// arrived last first (they are the likeliest to write
				// next), then the most wanted.
				w := wanted(now)
				newest := map[string]time.Duration{}
				for p := range present(now) {
					if a, ok := arrivedAt[p]; ok && a >= newest[models[p]] {
						newest[models[p]] = a
					}
				}
				var plan []string
				for m := range w {
					plan = append(plan, m)
				}
				sort.Slice(plan, func(i, j int) bool {
					if newest[plan[i]] != newest[plan[j]] {
						return newest[plan[i]] > newest[plan[j]]
					}
					if w[plan[i]] != w[plan[j]] {
						return w[plan[i]] > w[plan[j]]
					}
					return plan[i] < plan[j]
				})
				if len(plan) > s.maxLoaded {
					plan = plan[:s.maxLoaded]
				}
				pending = plan
			}
		}
		wasUp = isUp

		if isUp {
			// Answers that end.
			kept := inflight[:0]
			for _, a := range inflight {
				if a.end > now {
					kept = append(kept, a)
					continue
				}
				lm := loaded[a.model]
				if lm == nil {
					continue
				}
				if lm.refs--; lm.refs == 0 {
					lm.expires = now + s.keepAlive
				}
			}
			inflight = kept
			// Expiry.
			for m, lm := range loaded {
				if lm.refs == 0 && lm.expires > 0 && now >= lm.expires {
					unload(m)
				}
			}
			// The loader.
			if loading != "" && now >= loadEnd {
				lm := &simModel{expires: now + s.keepAlive, warmed: loadBy == "warm"}
				if lm.warmed {
					lm.expires = -1
				}
				loaded[loading] = lm
				still := waiting[:0]
				for _, r := range waiting {
					if r.model == loading {
						start(now, r)
					} else {
						still = append(still, r)
					}
				}
				waiting = still
				loading = ""
			}
			if loading == "" && len(queue) > 0 && (len(loaded) < s.maxLoaded || makeRoom()) {
				loading, loadBy, loadEnd = queue[0], "request", now+s.loads[queue[0]]
				queue = queue[1:]
			}
			// The gate's warm-ups: never while a request waits for a model.
			if s.warm && loading == "" && len(queue) == 0 && len(waiting) == 0 && len(pending) > 0 {
				m := pending[0]
				pending = pending[1:]
				switch {
				case loaded[m] != nil:
					if loaded[m].refs == 0 {
						loaded[m].expires = -1
					}
				case len(loaded) < s.maxLoaded:
					loading, loadBy, loadEnd = m, "warm", now+s.loads[m]
					res.warmups++
				default:
					res.skipped++
				}
			}
			// keep_alive follows who is here.
			if s.warm && now%keepEvery == 0 {
				w := wanted(now)
				for m, lm := range loaded {
					switch {
					case lm.refs > 0:
					case w[m] > 0:
						lm.expires = -1
					case lm.expires == -1 && len(w) > 0:
						lm.expires = now + s.keepAlive
					}
				}
			}
		}

		// KEDA: people, plus what the gate holds or streams.
		v := engaged(now) + len(held) + len(waiting) + len(inflight)
		keda.observe(now, v)
		if now%s.polling == 0 && keda.poll(now, v) {
			backend.scaleIn()
			for m := range loaded {
				unload(m)
			}
			queue, pending, loading, waiting, inflight = nil, nil, "", nil, nil
		}
		if keda.due(now) {
			backend.scaleUp(now)
		}
		if keda.replicas == 1 {
			res.gpuHours += tick.Hours()
		}
	}
	for m := range loaded {
		unload(m)
	}
	return res
}

func soonerSim(a, b *simModel) bool {
	switch {
	case a.expires == -1:
		return false
	case b.expires == -1:
		return true
	}
	return a.expires < b.expires
}

// warmTable runs the warm day with and without warming for each start-up,
// team size and seed, prints the table and returns the targets missed.
func warmTable(base warmSpec, startups []time.Duration, people []int, seeds []uint64) (problems []string) {
	fmt.Printf("\n## Warming (issue 24): the first message after arriving\n\n")
	fmt.Printf("One pool woken on arrival (KEDA gets the people who arrived or wrote within %s), the gate in front; loads %s, at most %d models loaded, OLLAMA_KEEP_ALIVE %s; %.0f%% of the people use the big model; the first message %s to %s after opening the page; seeds %s.\n",
		short(base.idle), loadsText(base.loads), base.maxLoaded, short(base.keepAlive), base.bigShare*100, short(base.firstAfter[0]), short(base.firstAfter[1]), joinSeeds(seeds))
	fmt.Println("Eligible: sent at least start-up + its model's load after arriving. No load: the model was loaded when the message reached Ollama.")
	fmt.Println()
	fmt.Println("| start-up | people | warming | first messages | eligible | eligible without a load | load wait p50 / p95 / max (all first) | waited longer than without | GPU hours | warm-ups | never used | skipped |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|")
	var allEligible, allNoLoad int
	for _, st := range startups {
		for _, n := range people {
			var byMode [2][]warmResult
			for _, seed := range seeds {
				for i, on := range []bool{false, true} {
					s := base
					s.startup, s.people, s.seed, s.warm = st, n, seed, on
					byMode[i] = append(byMode[i], warmDay(s))
				}
			}
			var hours [2]float64
			for i, on := range []bool{false, true} {
				var firsts, eligible, noLoad, warmups, unused, skipped, worse int
				var waits []float64
				for k, r := range byMode[i] {
					hours[i] += r.gpuHours
					warmups += r.warmups
					unused += r.unused
					skipped += r.skipped
					for j, f := range r.firsts {
						if !f.done {
							continue
						}
						firsts++
						waits = append(waits, f.loadWait.Seconds())
						if f.sent-f.arrived >= st+base.loads[f.model] {
							eligible++
							if f.loadWait == 0 {
								noLoad++
							}
						}
						if on {
							if off := byMode[0][k].firsts[j]; off.done && f.loadWait > off.loadWait {
								worse++
							}
						}
					}
				}
				sort.Float64s(waits)
				share := 100 * float64(noLoad) / float64(max(eligible, 1))
				fmt.Printf("| %s | %d | %s | %d | %d | %.1f%% | %s / %s / %s | %s | %.1f | %d | %d | %d |\n",
					short(st), n, map[bool]string{false: "off", true: "on"}[on], firsts, eligible, share,
					secsF(quantile(waits, 0.5)), secsF(quantile(waits, 0.95)), secsF(quantile(waits, 1)),
					map[bool]string{false: "", true: fmt.Sprint(worse)}[on], hours[i], warmups, unused, skipped)
				if on {
					allEligible += eligible
					allNoLoad += noLoad
					if worse > 0 {
						problems = append(problems, fmt.Sprintf("warming, start-up %s, %d people: %d first messages waited longer than without warming, want 0", short(st), n, worse))
					}
					if hours[1] > hours[0]*1.02 {
						problems = append(problems, fmt.Sprintf("warming, start-up %s, %d people: %.2f GPU hours against %.2f, want at most 2%% more", short(st), n, hours[1], hours[0]))
					}
				}
			}
		}
	}
	share := 100 * float64(allNoLoad) / float64(max(allEligible, 1))
	fmt.Printf("\nWith warming, over every row: %d of %d eligible first messages without a load (%.1f%%); target at least 95%%: %s.\n",
		allNoLoad, allEligible, share, verdict(share >= 95))
	if share < 95 {
		problems = append(problems, fmt.Sprintf("warming: %.1f%% of eligible first messages without a load, want at least 95%%", share))
	}
	return problems
}

func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(q*float64(len(xs)-1) + 0.5)
	return xs[min(i, len(xs)-1)]
}

func secsF(s float64) string { return fmt.Sprintf("%.1fs", s) }

func loadsText(loads map[string]time.Duration) string {
	var parts []string
	for m, d := range loads {
		parts = append(parts, m+" "+short(d))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// warmFlags are -warm's flags (issue 24).
type warmFlags struct {
	on              bool
	loads, first    string
	maxLoaded       int
	bigShare        float64
	keepAlive, idle time.Duration
}

func addWarmFlags() *warmFlags {
	w := &warmFlags{}
	flag.BoolVar(&w.on, "warm", false, "the warm day (issue 24) only: each person's first message after arriving, with and without the gate's warming; a model of the people count, no exporter run; defaults -people 5,20 -startups 30s,120s")
	flag.StringVar(&w.loads, "warm-loads", small8b+"=8s,"+big70b+"=40s", "-warm: the models and their load times")
	flag.IntVar(&w.maxLoaded, "warm-max-loaded", 2, "-warm: models in memory at once (the gate's max-loaded and OLLAMA_MAX_LOADED_MODELS)")
	flag.Float64Var(&w.bigShare, "warm-big-share", 0.3, "-warm: share of the people who use the second (big) model of -warm-loads")
	flag.StringVar(&w.first, "warm-first", "10s,3m", "-warm: MIN,MAX: the first message after opening the page comes this long after it (uniform)")
	flag.DurationVar(&w.keepAlive, "warm-keep-alive", 5*time.Minute, "-warm: OLLAMA_KEEP_ALIVE")
	flag.DurationVar(&w.idle, "warm-idle", 15*time.Minute, "-warm: --activity.idle-timeout of the people count KEDA gets (0: every open tab)")
	return w
}

// flagSet lists the flags given on the command line.
func flagSet() map[string]bool {
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// run runs the warm table; it returns the exit code.
func (w *warmFlags) run(c config, people, seeds, startups string, set map[string]bool) int {
	if !set["people"] {
		people = "5,20"
	}
	if !set["startups"] {
		startups = "30s,120s"
	}
	ns, err := parseList(people, strconv.Atoi)
	if err != nil {
		usage("-people", err)
	}
	ss, err := parseList(seeds, func(s string) (uint64, error) { return strconv.ParseUint(s, 10, 64) })
	if err != nil {
		usage("-seeds", err)
	}
	sts, err := parseList(startups, time.ParseDuration)
	if err != nil {
		usage("-startups", err)
	}
	spec := warmSpec{maxLoaded: w.maxLoaded, keepAlive: w.keepAlive, answer: c.answer, cooldown: c.cooldown, polling: c.polling,
		push: c.pushLatency, bigShare: w.bigShare, idle: w.idle, loads: map[string]time.Duration{}}
	var order []string
	for _, part := range strings.Split(w.loads, ",") {
		m, d, ok := strings.Cut(part, "=")
		dur, err := time.ParseDuration(d)
		if !ok || err != nil || dur < 0 || m == "" {
			usage("-warm-loads", fmt.Errorf("%q: want MODEL=DURATION,MODEL=DURATION", part))
		}
		spec.loads[m] = dur
		order = append(order, m)
	}
	if len(order) != 2 {
		usage("-warm-loads", fmt.Errorf("want two models (a small and a big one), got %d", len(order)))
	}
	spec.models = [2]string{order[0], order[1]}
	lo, hi, ok := strings.Cut(w.first, ",")
	a, err1 := time.ParseDuration(lo)
	b, err2 := time.ParseDuration(hi)
	if !ok || err1 != nil || err2 != nil || a < 0 || b < a {
		usage("-warm-first", fmt.Errorf("%q: want MIN,MAX durations, MIN <= MAX", w.first))
	}
	spec.firstAfter = [2]time.Duration{a, b}
	if w.maxLoaded < 1 || w.bigShare < 0 || w.bigShare > 1 || w.keepAlive <= 0 {
		usage("-warm-*", fmt.Errorf("-warm-max-loaded at least 1, -warm-big-share 0 to 1, -warm-keep-alive above 0"))
	}
	for _, n := range ns {
		if n < 1 {
			usage("-people", fmt.Errorf("a team needs at least 1 person, not %d", n))
		}
	}
	problems := warmTable(spec, sts, ns, ss)
	if c.check {
		if len(problems) > 0 {
			fmt.Fprintln(os.Stderr, "simday -warm -check failed:\n  "+strings.Join(problems, "\n  "))
			return 1
		}
		fmt.Println("simday -warm -check: every target met")
	}
	return 0
}
