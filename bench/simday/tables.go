package main

// The three reports: the idle-tab policy as before (start-up not modelled),
// the wake gate's day, and the day with two pools; each returns the targets
// it found not met.

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

// classic is the report from before Ollama's start-up was modelled: KEDA acts
// on the step's read at once, and a message fails only at zero replicas.
func classic(c config, days map[run]day) (problems []string) {
	w := world{step: c.step, polling: c.polling, cooldown: c.cooldown, holdTimeout: c.holdTimeout, answer: c.answer}
	type variant struct {
		timeout time.Duration
		write   throttle
	}
	var variants []variant
	for _, timeout := range c.timeouts {
		for _, write := range c.throttles() {
			variants = append(variants, variant{timeout, write})
		}
	}
	label := func(v variant) string {
		if len(c.intervals) == 1 && c.intervals[0] == 0 && c.processes == 1 {
			return name(v.timeout)
		}
		return name(v.timeout) + ", " + v.write.String()
	}
	for _, people := range c.people {
		type total struct {
			on                          []float64
			sends, atZero, unseen, errs int
			absence, lag                time.Duration
		}
		totals := make([]total, len(variants))
		for _, seed := range c.seeds {
			tr := days[run{people, c.timeouts[0], seed, c.throttles()[0]}].trace
			fmt.Printf("simulated day: %d people, seed %d, %d events (%d messages, %d tab opens), step %s, KEDA cooldown %s, polling %s\n",
				people, seed, len(tr), count(tr, send), count(tr, open), c.step, c.cooldown, c.polling)
			fmt.Printf("%-24s %10s %12s %16s %14s %14s %10s %14s %15s %11s\n", "idle timeout", "Ollama on", "tabs open*", "sends at zero", "sends unseen", "scale-ups", "errors", "req/fetch", "false absence", "leave lag")
			for i, v := range variants {
				d := days[run{people, v.timeout, seed, v.write}]
				p := w.newPool(poolSpec{name: "ollama", wake: wakeArrival})
				runDay(d.trace, d.served.values, func(int) int { return 0 }, []*pool{p}, w)
				fmt.Printf("%-24s %9.2fh %11.2fh %16d %14d %14d %10d %14.2f %15s %11s\n", label(v), p.onHours(), d.served.activeHours,
					len(p.gate.failures), d.served.unseen, p.keda.scaleUps, d.served.errors, d.served.requestsPerFetch, d.served.falseAbsence, d.served.leaveLag)
				if c.verbose {
					printFailures(d.trace, p.gate.failures)
				}
				t := &totals[i]
				t.on = append(t.on, p.onHours())
				t.sends += count(d.trace, send)
				t.atZero += len(p.gate.failures)
				t.unseen += d.served.unseen
				t.errs += d.served.errors
				t.absence = max(t.absence, d.served.falseAbsence)
				t.lag = max(t.lag, d.served.leaveLag)
			}
		}
		fmt.Println("* tabs open: hours in which Open WebUI counted at least one active user (what keeps Ollama on without the policy)")
		fmt.Println("  false absence: the longest stretch with openwebui_active_users below the people who made a request within 180 s (must be 0)")
		fmt.Println("  leave lag: the longest stretch with openwebui_active_users above 0 after everybody's last request was 180 s old")
		for i, v := range variants {
			t := totals[i]
			if t.unseen > 0 || t.errs > 0 || t.absence > 0 {
				problems = append(problems, fmt.Sprintf("%d people, idle timeout %s: %d sends unseen, %d errors, false absence %s", people, label(v), t.unseen, t.errs, t.absence))
			}
			for j, off := range variants {
				if off.timeout == 0 && off.write == v.write && v.timeout > 0 && sum(t.on) >= sum(totals[j].on) {
					problems = append(problems, fmt.Sprintf("%d people, idle timeout %s: Ollama on %.2fh, not less than %.2fh without the policy", people, label(v), sum(t.on), sum(totals[j].on)))
				}
			}
		}
		if len(c.seeds) > 1 {
			fmt.Printf("summary over %d days of %d people:\n", len(c.seeds), people)
			fmt.Printf("%-24s %18s %26s %14s %10s %15s %11s\n", "idle timeout", "Ollama on, median", "sends at zero / sends", "sends unseen", "errors", "false absence", "leave lag")
			for i, v := range variants {
				t := totals[i]
				fmt.Printf("%-24s %17.2fh %15d / %-8d %14d %10d %15s %11s\n", label(v), median(t.on), t.atZero, t.sends, t.unseen, t.errs, t.absence, t.lag)
			}
		}
	}
	return problems
}

// cell collects one configuration over every seed.
type cell struct {
	on                          []float64
	failed, messages, listsLost int
	scaleUps                    int
	holds, firstWaits           []time.Duration
}

func (s *cell) add(p *pool, messages int) {
	s.on = append(s.on, p.onHours())
	s.failed += len(p.gate.failures)
	s.messages += messages
	s.listsLost += p.gate.listsLost
	s.scaleUps += p.keda.scaleUps
	s.holds = append(s.holds, p.gate.holds...)
	s.firstWaits = append(s.firstWaits, p.gate.firstWaits...)
}

// holdColumns prints n, median, p99 and max of the hold times.
func holdColumns(ds []time.Duration) string {
	if len(ds) == 0 {
		return fmt.Sprintf("%6d %9s %9s %9s", 0, "-", "-", "-")
	}
	return fmt.Sprintf("%6d %9s %9s %9s", len(ds), secs(harness.Percentile(ds, 50)), secs(harness.Percentile(ds, 99)), secs(harness.Percentile(ds, 100)))
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}

func daysNote(c config) string {
	if len(c.seeds) == 1 {
		return fmt.Sprintf("seed %d", c.seeds[0])
	}
	return fmt.Sprintf("%d days (seeds %s), on-hours the median day, counts summed, holds pooled", len(c.seeds), joinSeeds(c.seeds))
}

func joinSeeds(seeds []uint64) string {
	var s []string
	for _, x := range seeds {
		s = append(s, fmt.Sprint(x))
	}
	return strings.Join(s, ",")
}

// exporterProblems are the invariants of the real half, whatever is modelled.
func exporterProblems(days map[run]day) (problems []string, unseen, errors int) {
	var runs []run
	for r := range days {
		runs = append(runs, r)
	}
	sort.Slice(runs, func(i, j int) bool {
		a, b := runs[i], runs[j]
		return a.seed < b.seed || a.seed == b.seed && (a.people < b.people || a.people == b.people && a.timeout < b.timeout)
	})
	for _, r := range runs {
		d := days[r]
		unseen += d.served.unseen
		errors += d.served.errors
		if d.served.unseen > 0 || d.served.errors > 0 {
			problems = append(problems, fmt.Sprintf("exporter, %d people, idle timeout %s, seed %d: %d sends unseen, %d errors of /active_users", r.people, name(r.timeout), r.seed, d.served.unseen, d.served.errors))
		}
	}
	return problems, unseen, errors
}

type key struct {
	people  int
	timeout time.Duration
}

// cellOrder is the grid in the order of the flags, for output that does not
// depend on map order.
func cellOrder(c config) []key {
	var ks []key
	for _, people := range c.people {
		for _, timeout := range c.timeouts {
			ks = append(ks, key{people, timeout})
		}
	}
	return ks
}

// wakeDay is issue 17's grid: gate off and on, per team, idle timeout and
// start-up delay, next to the row without start-up (today's model).
func wakeDay(c config, days map[run]day) (problems []string) {
	problems, unseen, errors := exporterProblems(days)
	fmt.Printf("the wake gate's day: %s; step %s, KEDA cooldown %s, polling %s, push latency %s, hold timeout %s, answers %s\n",
		daysNote(c), c.step, c.cooldown, c.polling, c.pushLatency, c.holdTimeout, c.answer)
	fmt.Printf("%-5s %-5s %-8s %-5s %10s %18s %10s %9s %6s %9s %9s %9s\n", "team", "idle", "start-up", "gate", "Ollama on", "failed / messages", "lists lost", "scale-ups", "held", "hold p50", "hold p99", "hold max")
	today := map[key]float64{}
	gated := map[key]map[time.Duration]*cell{}
	for _, people := range c.people {
		for _, timeout := range c.timeouts {
			k := key{people, timeout}
			gated[k] = map[time.Duration]*cell{}
			row := func(startup time.Duration, gate bool, pushLatency time.Duration, label string) *cell {
				w := world{step: c.step, polling: c.polling, cooldown: c.cooldown, pushLatency: pushLatency, gate: gate, holdTimeout: c.holdTimeout, answer: c.answer}
				s := &cell{}
				for _, seed := range c.seeds {
					d := days[run{people, timeout, seed, throttle{processes: 1}}]
					p := w.newPool(poolSpec{name: "ollama", wake: wakeArrival, startup: startup})
					runDay(d.trace, d.served.values, func(int) int { return 0 }, []*pool{p}, w)
					s.add(p, count(d.trace, send))
					if c.verbose && len(p.gate.failures) > 0 {
						fmt.Printf("  seed %d:\n", seed)
						printFailures(d.trace, p.gate.failures)
					}
				}
				gateName := "off"
				if gate {
					gateName = "on"
				}
				fmt.Printf("%-5d %-5s %-8s %-5s %9.2fh %8d / %-7d %10d %9d %s\n", people, short(timeout), label, gateName, median(s.on), s.failed, s.messages, s.listsLost, s.scaleUps, holdColumns(s.holds))
				return s
			}
			today[k] = median(row(0, false, 0, "none").on)
			for _, startup := range c.startups {
				row(startup, false, c.pushLatency, short(startup))
				gated[k][startup] = row(startup, true, c.pushLatency, short(startup))
			}
		}
	}
	fmt.Println("start-up none: Ollama's start-up not modelled and KEDA acting on the read at once (the model before the gate; its failures are the sends at zero)")
	fmt.Printf("exporter: %d runs, %d sends unseen, %d errors of /active_users\n", len(days), unseen, errors)

	// Target 1: with the gate, no message fails.
	failed, messages, cells := 0, 0, 0
	for _, byStartup := range gated {
		for _, s := range byStartup {
			failed += s.failed
			messages += s.messages
			cells++
		}
	}
	fmt.Printf("target: with the gate, 0 failed messages in every cell: %s (%d failed of %d messages in %d cells)\n", verdict(failed == 0), failed, messages, cells)
	if failed > 0 {
		problems = append(problems, fmt.Sprintf("with the gate, %d of %d messages failed", failed, messages))
	}

	// Target 2: a team of 20 at 5 min, with the gate, runs fewer hours than today's 15-min figure.
	if base, ok := today[key{20, 15 * time.Minute}]; !ok || gated[key{20, 5 * time.Minute}] == nil {
		fmt.Println("target: a team of 20 at 5m with the gate runs fewer hours than today's 15-min figure: not evaluated (needs -people 20 and -timeouts 5m,15m)")
	} else {
		ok := true
		var got []string
		for _, startup := range c.startups {
			h := median(gated[key{20, 5 * time.Minute}][startup].on)
			ok = ok && h < base
			got = append(got, fmt.Sprintf("start-up %s: %.2fh", short(startup), h))
		}
		fmt.Printf("target: a team of 20 at 5m with the gate runs fewer hours than today's 15-min figure (%.2fh: 20 people, 15m, start-up none): %s (%s)\n", base, verdict(ok), strings.Join(got, ", "))
		if !ok {
			problems = append(problems, fmt.Sprintf("20 people at 5m with the gate: %s, not below %.2fh", strings.Join(got, ", "), base))
		}
	}

	// Target 3: the p99 hold is at most the start-up delay plus 2 s.
	ok, worst := true, ""
	worstMargin := time.Duration(-1 << 62)
	for _, k := range cellOrder(c) {
		for _, startup := range c.startups {
			s := gated[k][startup]
			if len(s.holds) == 0 {
				continue
			}
			p99 := harness.Percentile(s.holds, 99)
			if margin := p99 - startup; margin > worstMargin {
				worstMargin = margin
				worst = fmt.Sprintf("p99 %s at start-up %s, %d people, %s", secs(p99), short(startup), k.people, short(k.timeout))
			}
			if p99 > startup+2*time.Second {
				ok = false
				problems = append(problems, fmt.Sprintf("%d people, %s, start-up %s: p99 hold %s > start-up + 2s", k.people, short(k.timeout), short(startup), secs(p99)))
			}
		}
	}
	fmt.Printf("target: p99 hold <= start-up + 2s in every cell with the gate: %s (closest: %s)\n", verdict(ok), worst)
	return problems
}

// twoPools is issue 18's day: a small pool woken on arrival and a big one
// woken on request, against the big one woken on arrival too.
func twoPools(c config, days map[run]day) (problems []string) {
	w := world{step: c.step, polling: c.polling, cooldown: c.cooldown, pushLatency: c.pushLatency, gate: true, holdTimeout: c.holdTimeout, answer: c.answer}
	small := poolSpec{name: "small", wake: wakeArrival, startup: c.smallStartup}
	bigRequest := poolSpec{name: "big", wake: wakeRequest, startup: c.bigStartup, idle: c.bigIdle, cooldown: c.bigCooldown}
	bigArrival := poolSpec{name: "big", wake: wakeArrival, startup: c.bigStartup, cooldown: c.bigCooldown}
	var smallCell, bigCell, bigArrivalCell cell
	fmt.Printf("two pools: %d people, idle timeout %s (the people who wake the small pool), %s; gate on, push latency %s, hold timeout %s, answers %s, KEDA cooldown %s small, %s big\n",
		c.poolPeople, short(c.poolTimeout), daysNote(c), c.pushLatency, c.holdTimeout, c.answer, short(c.cooldown), short(c.bigCooldown))
	for _, seed := range c.seeds {
		d := days[run{c.poolPeople, c.poolTimeout, seed, throttle{processes: 1}}]
		big, who := bigModel(d.trace, c.poolPeople, c.bigUsers, c.bigShare, seed)
		route := func(i int) int {
			if big[i] {
				return 1
			}
			return 0
		}
		nBig := 0
		for _, b := range big {
			if b {
				nBig++
			}
		}
		sends := count(d.trace, send)
		fmt.Printf("  seed %d: %s send %d of %d messages (%.1f%%) to the big model\n", seed, strings.Join(who, ", "), nBig, sends, 100*float64(nBig)/float64(sends))
		for _, setup := range []struct {
			big       poolSpec
			smallCell *cell
			bigCell   *cell
		}{{bigRequest, &smallCell, &bigCell}, {bigArrival, nil, &bigArrivalCell}} {
			pools := []*pool{w.newPool(small), w.newPool(setup.big)}
			runDay(d.trace, d.served.values, route, pools, w)
			if setup.smallCell != nil {
				setup.smallCell.add(pools[0], sends-nBig)
			}
			setup.bigCell.add(pools[1], nBig)
			if c.verbose {
				printFailures(d.trace, append(pools[0].gate.failures, pools[1].gate.failures...))
			}
		}
	}
	fmt.Printf("%-6s %-8s %-8s %-5s %10s %18s %9s %6s %9s %9s %9s %22s\n", "pool", "wake", "start-up", "idle", "Ollama on", "failed / messages", "scale-ups", "held", "hold p50", "hold p99", "hold max", "first-message waits")
	rowOf := func(s poolSpec, x *cell) {
		idle := "-"
		if s.wake == wakeRequest {
			idle = short(s.idle)
		}
		first := "-"
		if len(x.firstWaits) > 0 {
			first = fmt.Sprintf("%d, median %s", len(x.firstWaits), secs(harness.Percentile(x.firstWaits, 50)))
		}
		fmt.Printf("%-6s %-8s %-8s %-5s %9.2fh %8d / %-7d %9d %s %22s\n", s.name, s.wake, short(s.startup), idle, median(x.on), x.failed, x.messages, x.scaleUps, holdColumns(x.holds), first)
	}
	rowOf(small, &smallCell)
	rowOf(bigRequest, &bigCell)
	rowOf(bigArrival, &bigArrivalCell)
	fmt.Println("(the last row: the big pool waking on everybody, as one pool does today; the small pool is the same in both setups)")

	smallOn, bigOn := median(smallCell.on), median(bigCell.on)
	ok := bigOn <= smallOn/4 && smallCell.failed == 0 && bigCell.failed == 0
	fmt.Printf("target: the big pool (wake=request) runs at most 1/4 of the small pool's hours, 0 failed: %s (%.2fh of %.2fh = %.3f of it; failed %d small, %d big; waking on everybody it runs %.2fh)\n",
		verdict(ok), bigOn, smallOn, bigOn/smallOn, smallCell.failed, bigCell.failed, median(bigArrivalCell.on))
	if !ok {
		problems = append(problems, fmt.Sprintf("two pools: big %.2fh vs small %.2fh (limit %.2fh), failed %d small, %d big", bigOn, smallOn, smallOn/4, smallCell.failed, bigCell.failed))
	}
	if len(bigCell.firstWaits) > 0 {
		fw := bigCell.firstWaits
		fmt.Printf("price: the big pool's first-message wait (the message that finds it asleep is held while it starts): median %s, p99 %s, max %s over %d wake-ups (start-up %s + push latency %s); %d of %d big-model messages waited at all\n",
			secs(harness.Percentile(fw, 50)), secs(harness.Percentile(fw, 99)), secs(harness.Percentile(fw, 100)), len(fw), short(c.bigStartup), c.pushLatency, len(bigCell.holds), bigCell.messages)
	}
	return problems
}
