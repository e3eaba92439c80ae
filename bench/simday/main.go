// Command simday runs a scripted day of a team through the real exporter
// binary and a fake Open WebUI on a compressed clock, and reports how many
// hours Ollama would run with and without the idle-tab policy
// (--activity.idle-timeout), and every message that failed because Ollama
// was asleep. With -wake it also models Ollama's start-up and the wake gate
// (issue 17) and a day with two pools (issue 18).
//
//	go run ./bench/simday                          # off, 15m, 30m, 60m; 20 people; seed 1
//	go run ./bench/simday -timeouts 0,15m -people 40 -seeds 7
//	go run ./bench/simday -people 5 -seeds 1,2,3   # three days, then a summary per timeout
//	go run ./bench/simday -wake -seeds 1,2,3 -check # gate off/on x 5,15,30m x 5,20 people x 30s,120s start-up; two pools
//	go run ./bench/simday -write-intervals 0,300s -timeouts 0,15m -seeds 1,2,3 # Open WebUI's write throttle (issue 22)
//
// What is real: the exporter binary (admin mode, --cache.ttl=0), its HTTP
// requests to Open WebUI, and what it answers on /active_users. The clock is
// compressed by stepping the fake's clock (which the exporter reads through
// the Date header) by -step and asking the exporter once per step; a day
// takes seconds, not 24 hours. Open WebUI is internal/fakeopenwebui (tabs
// heartbeat every 30 s, a send writes the chat and chat_message rows as Open
// WebUI 0.11 does); the people are a seeded random trace (trace.go).
//
// What is modelled (model.go), and the assumptions of the model:
//   - KEDA, one ScaledObject per pool with an external-push trigger: each
//     step's read of the exporter, each poll and each push is a value; a
//     value above 0 marks the trigger active and, at 0 replicas, scales to 1
//     -push-latency later (1 s: the p99 through KEDA's real operator in
//     BENCHMARKS.md section 7, rounded up; 0 where start-up is not
//     modelled, so those rows are the model from before the gate, number
//     for number). Scale-in happens at a poll (-polling, 30 s) once
//     no value above 0 was seen for -cooldown (300 s), KEDA's defaults.
//     The exporter pushes at once when its value goes from 0 to above 0;
//     the gate's held requests raise it at the moment they are held.
//   - Ollama: from KEDA's scale-up to its first HTTP answer takes the
//     start-up delay (pod, image, model load); it answers nothing before.
//     A scale-in stops it at once (answers still running would fail, and
//     are counted, but none happen: a writer keeps the count above 0 longer
//     than the cooldown). Every answer takes -answer (20 s) in flight.
//   - Without the gate, Open WebUI calls Ollama directly: a message sent
//     while Ollama is at zero or starting fails ("Cannot connect"), and a
//     page load then gets no model list ("lists lost"; the failures of a
//     later message from such a page, "Model not found", are not counted).
//   - With the gate (gateModel, the decisions of gate-spec.md): a message
//     sent while Ollama is not up is held, in arrival order; held and
//     in-flight requests are demand at once; the gate sees Ollama's first
//     HTTP answer within one probe (100 ms) and releases everything held;
//     past -hold-timeout (5m) a held message fails. Page loads get the
//     lists from memory (the gate learned them before the day: state file)
//     and are never demand. Title and tag generation is left out (with two
//     pools, TASK_MODEL points it at the small pool, which is up then).
//   - Two pools: the small pool wakes on arrival (the exporter's count of
//     people plus its own held and in-flight requests); the big pool on
//     request: its value is the distinct people with a request within its
//     idle time (-big-idle), at least 1 while one is held or in flight.
//   - Two pools: which messages go to the big model is seeded too
//     (bigModel): -big-users people send whole bursts there until about
//     -big-share of all messages do.
//   - Events are handled on a 100 ms clock, so hold times are exact to 100 ms.
//
// With -write-intervals, the fake Open WebUI throttles the activity writes
// (DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL, issue 22), and each T > 0
// runs twice: the exporter not told (it must notice) and told
// (--openwebui.status-update-interval). The "false absence" column is the
// longest stretch in which the exporter's openwebui_active_users was below
// the number of people who made a request (a tab's heartbeat included)
// within the last 180 s: it must be 0.
//
// -check fails when a target is not met. Without -startups: a send went
// unseen, /active_users failed, or a policy run kept Ollama on no shorter than
// the run without it. With them (issue 17): with the gate 0 failed messages
// in every cell; 20 people at 5m with the gate run fewer hours than 20 people
// at 15m with start-up not modelled; the p99 hold is at most the start-up
// delay plus 2 s. With -pools (issue 18): the big pool runs at most a quarter
// of the small pool's hours, with 0 failed.
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

type config struct {
	people                   []int
	seeds                    []uint64
	timeouts, startups       []time.Duration
	intervals                []time.Duration
	step, cooldown, polling  time.Duration
	pushLatency, holdTimeout time.Duration
	answer                   time.Duration
	pools                    bool
	poolPeople, bigUsers     int
	poolTimeout              time.Duration
	bigShare                 float64
	smallStartup, bigStartup time.Duration
	bigIdle, bigCooldown     time.Duration
	verbose, check           bool
	parallel                 int
	processes                int
}

func main() {
	var (
		c                                 config
		people, seeds, timeouts, startups string
		intervals                         string
		wake                              bool
	)
	flag.StringVar(&people, "people", "20", "comma-separated team sizes")
	flag.StringVar(&seeds, "seeds", "1", "comma-separated seeds: one simulated day (trace) each")
	flag.DurationVar(&c.step, "step", 10*time.Second, "simulated time between two reads of /active_users")
	flag.StringVar(&timeouts, "timeouts", "0,15m,30m,60m", "comma-separated --activity.idle-timeout values to run (0 = policy off)")
	flag.StringVar(&intervals, "write-intervals", "0", "comma-separated DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL values of the fake Open WebUI (issue 22); each above 0 runs with the exporter not told and told")
	flag.DurationVar(&c.cooldown, "cooldown", 300*time.Second, "KEDA cooldownPeriod")
	flag.DurationVar(&c.polling, "polling", 30*time.Second, "KEDA pollingInterval (scale-in checks)")
	flag.BoolVar(&wake, "wake", false, "the wake gate's day (issues 17 and 18): defaults -people 5,20 -timeouts 5m,15m,30m -startups 30s,120s -pools")
	flag.StringVar(&startups, "startups", "", "comma-separated Ollama start-up delays (KEDA's scale-up to the first HTTP answer) to model, each with the gate off and on; empty: start-up not modelled")
	flag.DurationVar(&c.pushLatency, "push-latency", time.Second, "with -startups: from a pushed value to KEDA's scale-up")
	flag.DurationVar(&c.holdTimeout, "hold-timeout", 5*time.Minute, "the gate's --gate.hold-timeout")
	flag.DurationVar(&c.answer, "answer", 20*time.Second, "how long an answer is in flight")
	flag.BoolVar(&c.pools, "pools", false, "also run the day with two pools (small: wake on arrival, big: wake on request)")
	flag.IntVar(&c.poolPeople, "pool-people", 20, "-pools: team size")
	flag.DurationVar(&c.poolTimeout, "pool-timeout", 15*time.Minute, "-pools: --activity.idle-timeout of the people count that wakes the small pool")
	flag.IntVar(&c.bigUsers, "big-users", 3, "-pools: people who use the big model")
	flag.Float64Var(&c.bigShare, "big-share", 0.10, "-pools: share of all messages they send to the big model")
	flag.DurationVar(&c.smallStartup, "small-startup", 30*time.Second, "-pools: the small pool's start-up delay")
	flag.DurationVar(&c.bigStartup, "big-startup", 120*time.Second, "-pools: the big pool's start-up delay")
	flag.DurationVar(&c.bigIdle, "big-idle", 5*time.Minute, "-pools: the big pool's idle= (wake=request); 5m, the recommended setting (BENCHMARKS.md 6.3)")
	flag.DurationVar(&c.bigCooldown, "big-cooldown", 30*time.Second, "-pools: the big pool's KEDA cooldownPeriod; 30s, the recommended setting (its idle time is the hysteresis)")
	flag.BoolVar(&c.verbose, "v", false, "print every message that failed")
	flag.BoolVar(&c.check, "check", false, "exit 1 if a target is not met (for CI): without -startups, a send went unseen, /active_users failed, or a policy run kept Ollama on no shorter than the run without it; with them, the targets printed")
	flag.IntVar(&c.parallel, "parallel", 2, "exporter runs at once")
	flag.IntVar(&c.processes, "processes", 1, "Open WebUI processes sharing the database, each with its own write throttle; the exporter's requests go to them in turn")
	warmFlags := addWarmFlags()
	flag.Parse()
	if warmFlags.on {
		os.Exit(warmFlags.run(c, people, seeds, startups, flagSet()))
	}
	if wake {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		preset := map[string]*string{"people": &people, "timeouts": &timeouts, "startups": &startups}
		for name, value := range map[string]string{"people": "5,20", "timeouts": "5m,15m,30m", "startups": "30s,120s"} {
			if !set[name] {
				*preset[name] = value
			}
		}
		if !set["pools"] {
			c.pools = true
		}
	}
	var err error
	if c.people, err = parseList(people, strconv.Atoi); err != nil {
		usage("-people", err)
	}
	if c.seeds, err = parseList(seeds, func(s string) (uint64, error) { return strconv.ParseUint(s, 10, 64) }); err != nil {
		usage("-seeds", err)
	}
	if c.timeouts, err = parseList(timeouts, time.ParseDuration); err != nil {
		usage("-timeouts", err)
	}
	if c.intervals, err = parseList(intervals, time.ParseDuration); err != nil {
		usage("-write-intervals", err)
	}
	if startups != "" {
		if c.startups, err = parseList(startups, time.ParseDuration); err != nil {
			usage("-startups", err)
		}
	}
	if err := c.validate(); err != nil {
		usage("flags", err)
	}

	dir, err := os.MkdirTemp("", "simday")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	bin, err := harness.GoBuild(dir, ".", "openwebui_exporter")
	if err != nil {
		fail(err)
	}
	runs := c.exporterRuns()
	days, err := runExporter(bin, runs, c.step, c.parallel)
	if err != nil {
		fail(err)
	}
	var problems []string
	if len(c.startups) == 0 {
		problems = classic(c, days)
	} else {
		problems = wakeDay(c, days)
		if c.pools {
			problems = append(problems, twoPools(c, days)...)
		}
	}
	if c.check {
		if len(problems) > 0 {
			fmt.Fprintln(os.Stderr, "simday -check failed:\n  "+strings.Join(problems, "\n  "))
			os.Exit(1)
		}
		fmt.Println("simday -check: every target met")
	}
}

func (c config) validate() error {
	for _, n := range c.people {
		if n < 1 {
			return fmt.Errorf("a team needs at least 1 person, not %d", n)
		}
	}
	for _, d := range append(append(append([]time.Duration{}, c.timeouts...), c.startups...), c.intervals...) {
		if d < 0 {
			return fmt.Errorf("negative duration %s", d)
		}
	}
	switch {
	case c.step <= 0 || c.step%tick != 0 || c.polling%c.step != 0:
		return fmt.Errorf("-step must be a positive multiple of %s and divide -polling", tick)
	case c.cooldown < 0 || c.pushLatency < 0 || c.holdTimeout <= 0 || c.answer <= 0:
		return fmt.Errorf("-cooldown and -push-latency must not be negative, -hold-timeout and -answer must be positive")
	case c.pools && (c.poolPeople < 1 || c.bigUsers < 1 || c.bigShare <= 0 || c.bigShare >= 1 || c.bigIdle <= 0 || c.bigCooldown < 0 || c.poolTimeout < 0):
		return fmt.Errorf("-pools needs -pool-people and -big-users at least 1, -big-share in (0,1), a positive -big-idle")
	case c.parallel < 1:
		return fmt.Errorf("-parallel must be at least 1")
	case c.processes < 1:
		return fmt.Errorf("-processes must be at least 1")
	}
	return nil
}

func parseList[T any](s string, parse func(string) (T, error)) ([]T, error) {
	var xs []T
	for _, f := range strings.Split(s, ",") {
		x, err := parse(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		xs = append(xs, x)
	}
	return xs, nil
}

func usage(what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	os.Exit(2)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "simday:", err)
	os.Exit(1)
}

// run is one exporter run: a team's day (seed) at one idle timeout, under
// one write throttle (told to the exporter or not).
type run struct {
	people  int
	timeout time.Duration
	seed    uint64
	write   throttle
}

// throttle is Open WebUI's DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL in
// the fake, whether the exporter is told it, and how many Open WebUI
// processes (each with its own throttle) share the database.
type throttle struct {
	interval  time.Duration
	told      bool
	processes int
}

func (t throttle) String() string {
	r := ""
	if t.processes > 1 {
		r = fmt.Sprintf(" R=%d", t.processes)
	}
	switch {
	case t.interval == 0:
		return "T=0" + r
	case t.told:
		return fmt.Sprintf("T=%s%s told", name(t.interval), r)
	}
	return fmt.Sprintf("T=%s%s not told", name(t.interval), r)
}

// throttles lists the write throttles to run: each interval above 0 not
// told and told. Only the classic day runs them.
func (c config) throttles() []throttle {
	if len(c.startups) > 0 {
		return []throttle{{processes: 1}}
	}
	var ts []throttle
	for _, t := range c.intervals {
		if t == 0 {
			ts = append(ts, throttle{0, false, c.processes})
		} else {
			ts = append(ts, throttle{t, false, c.processes}, throttle{t, true, c.processes})
		}
	}
	return ts
}

type day struct {
	trace  []event
	served served
}

func (c config) exporterRuns() []run {
	var runs []run
	seen := map[run]bool{}
	add := func(r run) {
		if !seen[r] {
			seen[r] = true
			runs = append(runs, r)
		}
	}
	for _, seed := range c.seeds {
		for _, n := range c.people {
			for _, t := range c.timeouts {
				for _, w := range c.throttles() {
					add(run{n, t, seed, w})
				}
			}
		}
		if c.pools && len(c.startups) > 0 {
			add(run{c.poolPeople, c.poolTimeout, seed, throttle{processes: 1}})
		}
	}
	return runs
}

// runExporter runs the exporter through every day, parallel at a time; the
// runs are independent (each has its own fake and exporter, and waits for
// every answer), so the results do not depend on the machine's speed.
func runExporter(bin string, runs []run, step time.Duration, parallel int) (map[run]day, error) {
	days := make(map[run]day, len(runs))
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
		slots = make(chan struct{}, parallel)
	)
	for _, r := range runs {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			tr := trace(r.people, r.seed)
			s, err := simulate(bin, tr, r.timeout, step, r.write)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && first == nil {
				first = fmt.Errorf("%d people, idle timeout %s, seed %d, %s: %w", r.people, name(r.timeout), r.seed, r.write, err)
			}
			days[r] = day{tr, s}
		}()
	}
	wg.Wait()
	return days, first
}

func name(timeout time.Duration) string {
	if timeout == 0 {
		return "off"
	}
	return timeout.String()
}

// short prints a duration without trailing zero units: 5m, 2m0s -> 2m, 30s.
func short(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func sum(xs []float64) float64 {
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return t
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func fmtClock(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
}

// tabSince says since when the person had a tab open at the moment at.
func tabSince(tr []event, person string, at time.Duration) string {
	since, isOpen := time.Duration(0), false
	for _, e := range tr {
		if e.at > at {
			break
		}
		if e.person != person {
			continue
		}
		switch e.kind {
		case open:
			if !isOpen {
				since, isOpen = e.at, true
			}
		case closeTab:
			isOpen = false
		}
	}
	if !isOpen {
		return "without an open tab"
	}
	return "from a tab open since " + fmtClock(since)
}

func printFailures(tr []event, fs []failure) {
	for _, f := range fs {
		if f.person == "" {
			fmt.Printf("    %s an answer, %s\n", fmtClock(f.at), f.reason)
			continue
		}
		fmt.Printf("    %s %s, %s, %s\n", fmtClock(f.at), f.person, tabSince(tr, f.person, f.at), f.reason)
	}
}
