// Command simday runs a scripted day of a team through the real exporter
// binary and a fake Open WebUI on a compressed clock, and reports how many
// hours Ollama would run with and without the idle-tab policy
// (--activity.idle-timeout), and every moment somebody sent a message while
// Ollama was at zero.
//
//	go run ./bench/simday                          # off, 15m, 30m, 60m; 20 people; seed 1
//	go run ./bench/simday -timeouts 0,15m -people 40 -seeds 7
//	go run ./bench/simday -people 5 -seeds 1,2,3   # three days, then a summary per timeout
//
// What is real: the exporter binary (admin mode, --cache.ttl=0), its HTTP
// requests to Open WebUI, and what it answers on /active_users. What is
// modelled: Open WebUI (internal/fakeopenwebui: tabs heartbeat every 30 s,
// a send writes the chat and chat_message rows as Open WebUI 0.11 does), the
// people (a seeded random trace, see trace), and KEDA: an external-push
// trigger that activates Ollama as soon as a served value is above 0, and
// polls every 30 s for scale-in after a 300 s cooldown (KEDA's defaults).
// Ollama's own start-up time is not modelled: "on" means KEDA wants a replica.
//
// The clock is compressed by stepping the fake's clock (which the exporter
// reads through the Date header) by -step and asking the exporter once per
// step; a day takes seconds, not 24 hours.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

func main() {
	people := flag.Int("people", 20, "team size")
	seedList := flag.String("seeds", "1", "comma-separated seeds: one simulated day (trace) each")
	step := flag.Duration("step", 10*time.Second, "simulated time between two reads of /active_users")
	timeouts := flag.String("timeouts", "0,15m,30m,60m", "comma-separated --activity.idle-timeout values to run (0 = policy off)")
	cooldown := flag.Duration("cooldown", 300*time.Second, "KEDA cooldownPeriod")
	polling := flag.Duration("polling", 30*time.Second, "KEDA pollingInterval (scale-in checks)")
	verbose := flag.Bool("v", false, "print every moment a writer found Ollama at zero")
	check := flag.Bool("check", false, "exit 1 if a send went unseen, /active_users failed, or a policy run kept Ollama on no shorter than the run without it (for CI)")
	flag.Parse()
	var runs []time.Duration
	for _, s := range strings.Split(*timeouts, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintf(os.Stderr, "-timeouts: %v\n", err)
			os.Exit(2)
		}
		runs = append(runs, d)
	}
	var seeds []uint64
	for _, s := range strings.Split(*seedList, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "-seeds: %v\n", err)
			os.Exit(2)
		}
		seeds = append(seeds, n)
	}
	if *step <= 0 || *polling%*step != 0 || *people < 1 {
		fmt.Fprintln(os.Stderr, "-step must be positive and divide -polling; -people at least 1")
		os.Exit(2)
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
	type total struct {
		on                          []float64
		sends, atZero, unseen, errs int
	}
	totals := make([]total, len(runs))
	for _, seed := range seeds {
		tr := trace(*people, seed)
		fmt.Printf("simulated day: %d people, seed %d, %d events (%d messages, %d tab opens), step %s, KEDA cooldown %s, polling %s\n",
			*people, seed, len(tr), count(tr, send), count(tr, open), *step, *cooldown, *polling)
		fmt.Printf("%-14s %10s %12s %16s %14s %14s %10s %14s\n", "idle timeout", "Ollama on", "tabs open*", "sends at zero", "sends unseen", "scale-ups", "errors", "req/fetch")
		for i, timeout := range runs {
			r, err := simulate(bin, tr, timeout, *step, *cooldown, *polling)
			if err != nil {
				fail(err)
			}
			fmt.Printf("%-14s %9.2fh %11.2fh %16d %14d %14d %10d %14.2f\n", name(timeout), r.onHours, r.activeHours, len(r.atZero), r.unseen, r.scaleUps, r.errors, r.requestsPerFetch)
			if *verbose {
				for _, m := range r.atZero {
					fmt.Printf("    %s\n", m)
				}
			}
			t := &totals[i]
			t.on = append(t.on, r.onHours)
			t.sends += count(tr, send)
			t.atZero += len(r.atZero)
			t.unseen += r.unseen
			t.errs += r.errors
		}
	}
	fmt.Println("* tabs open: hours in which Open WebUI counted at least one active user (what keeps Ollama on without the policy)")
	if *check {
		var problems []string
		for i, timeout := range runs {
			t := totals[i]
			if t.unseen > 0 || t.errs > 0 {
				problems = append(problems, fmt.Sprintf("idle timeout %s: %d sends unseen, %d errors", name(timeout), t.unseen, t.errs))
			}
			for j, off := range runs {
				if off == 0 && timeout > 0 && sum(t.on) >= sum(totals[j].on) {
					problems = append(problems, fmt.Sprintf("idle timeout %s: Ollama on %.2fh, not less than %.2fh without the policy", name(timeout), sum(t.on), sum(totals[j].on)))
				}
			}
		}
		if len(problems) > 0 {
			fmt.Fprintln(os.Stderr, "simday -check failed:\n  "+strings.Join(problems, "\n  "))
			os.Exit(1)
		}
		fmt.Println("simday -check: every send reached the served count at the next read, no errors, the policy saved GPU hours")
	}
	if len(seeds) > 1 {
		fmt.Printf("summary over %d days of %d people:\n", len(seeds), *people)
		fmt.Printf("%-14s %18s %26s %14s %10s\n", "idle timeout", "Ollama on, median", "sends at zero / sends", "sends unseen", "errors")
		for i, timeout := range runs {
			t := totals[i]
			sort.Float64s(t.on)
			fmt.Printf("%-14s %17.2fh %15d / %-8d %14d %10d\n", name(timeout), t.on[len(t.on)/2], t.atZero, t.sends, t.unseen, t.errs)
		}
	}
}

func sum(xs []float64) float64 {
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return t
}

func name(timeout time.Duration) string {
	if timeout == 0 {
		return "off"
	}
	return timeout.String()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "simday:", err)
	os.Exit(1)
}

type kind int

const (
	open kind = iota
	closeTab
	send
)

type event struct {
	at     time.Duration // since midnight
	person string
	kind   kind
}

func count(tr []event, k kind) int {
	n := 0
	for _, e := range tr {
		if e.kind == k {
			n++
		}
	}
	return n
}

// trace is a seeded working day of a team:
//   - a quarter left a tab open the evening before (open at midnight);
//   - everybody arrives between 08:00 and 10:00 (opening a tab, or coming
//     back to the one left open: no signal to anybody);
//   - at work they write in bursts of 2-6 messages 30 s to 3 min apart; the
//     gaps between bursts average 45 min (3 h for the fifth who mostly read);
//   - lunch starts between 12:00 and 13:00 and lasts 30-60 min; 30% close
//     the tab for it, the others leave it open;
//   - they leave between 16:30 and 18:30; 35% leave the tab open overnight;
//   - one person opens Open WebUI from home around 21:00 and writes 3
//     messages, the first 1-2 min after opening it.
func trace(people int, seed uint64) []event {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	between := func(a, b time.Duration) time.Duration { return a + time.Duration(rng.Int64N(int64(b-a))) }
	var tr []event
	add := func(at time.Duration, p string, k kind) { tr = append(tr, event{at, p, k}) }
	bursts := func(p string, from, to, meanGap time.Duration) {
		t := from + time.Duration(rng.ExpFloat64()*float64(meanGap)/2)
		for t < to {
			for range 2 + rng.IntN(5) {
				if t >= to {
					break
				}
				add(t, p, send)
				t += between(30*time.Second, 3*time.Minute)
			}
			t += time.Duration(rng.ExpFloat64() * float64(meanGap))
		}
	}
	for i := range people {
		p := "person-" + strconv.Itoa(i+1)
		openOvernight := rng.Float64() < 0.25
		if openOvernight {
			add(0, p, open)
		}
		arrive := between(8*time.Hour, 10*time.Hour)
		if !openOvernight {
			add(arrive, p, open)
		}
		meanGap := 45 * time.Minute
		if rng.Float64() < 0.2 {
			meanGap = 3 * time.Hour
		}
		lunch := between(12*time.Hour, 13*time.Hour)
		back := lunch + between(30*time.Minute, 60*time.Minute)
		leave := between(16*time.Hour+30*time.Minute, 18*time.Hour+30*time.Minute)
		bursts(p, arrive, lunch, meanGap)
		if rng.Float64() < 0.3 {
			add(lunch, p, closeTab)
			add(back, p, open)
		}
		bursts(p, back, leave, meanGap)
		if rng.Float64() >= 0.35 {
			add(leave, p, closeTab)
		}
	}
	p := "person-" + strconv.Itoa(1+rng.IntN(people))
	evening := between(20*time.Hour+45*time.Minute, 21*time.Hour+15*time.Minute)
	add(evening, p, open)
	for k := range 3 { // the first a minute or two after opening Open WebUI
		add(evening+between(time.Minute, 2*time.Minute)+time.Duration(k)*2*time.Minute, p, send)
	}
	sort.SliceStable(tr, func(i, j int) bool { return tr[i].at < tr[j].at })
	return tr
}

type result struct {
	onHours, activeHours float64
	atZero               []string // sends while Ollama was at zero
	unseen               int      // sends after which the next served value was still 0
	scaleUps             int
	errors               int // non-200 answers of /active_users
	requestsPerFetch     float64
}

func simulate(bin string, tr []event, timeout, step, cooldown, polling time.Duration) (result, error) {
	midnight := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	clock := fakeopenwebui.NewClock(midnight)
	fake := fakeopenwebui.New(fakeopenwebui.Config{Version: "0.11.0", Now: clock.Now, TabHeartbeats: true})
	fake.RegisterToken(fake.AddUser("exporter", "admin"), harness.Token)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	srv := &http.Server{Handler: fake, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	// Events at midnight happen before the exporter starts (tabs left open).
	next := 0
	for ; next < len(tr) && tr[next].at == 0; next++ {
		apply(fake, tr[next])
	}
	addr := harness.FreeAddr()
	// The fake's clock runs a day in seconds, ahead of this host's: the
	// hidden --openwebui.max-clock-skew lets the exporter accept its Date.
	args := []string{"--openwebui.count-mode=admin", "--cache.ttl=0", "--cache.max-stale=0", "--openwebui.max-clock-skew=100000h"}
	if timeout > 0 {
		args = append(args, "--activity.idle-timeout="+timeout.String())
	}
	cmd, err := harness.StartExporter(bin, addr, ln.Addr().String(), args...)
	if err != nil {
		return result{}, err
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
		r          result
		on         bool
		lastActive time.Duration
		pending    int // sends since the last read
		fetches    int
		openSince  = map[string]time.Duration{} // people with a tab open -> since when
	)
	track := func(e event) {
		switch e.kind {
		case open:
			if _, ok := openSince[e.person]; !ok {
				openSince[e.person] = e.at
			}
		case closeTab:
			delete(openSince, e.person)
		}
	}
	for _, e := range tr[:next] {
		track(e)
	}
	for now := time.Duration(0); now < 24*time.Hour; now += step {
		for ; next < len(tr) && tr[next].at <= now; next++ {
			e := tr[next]
			if e.kind == send {
				pending++
				if !on {
					since, ok := openSince[e.person]
					how := "from a tab open since " + fmtClock(since)
					if !ok {
						how = "without an open tab"
					}
					r.atZero = append(r.atZero, fmt.Sprintf("%s %s, %s", fmtClock(e.at), e.person, how))
				}
			}
			track(e)
			apply(fake, e)
		}
		n, ok := read()
		fetches++
		if !ok {
			r.errors++ // KEDA keeps the replica count as it is
		} else {
			if pending > 0 && n == 0 {
				r.unseen += pending
			}
			pending = 0
			if n > 0 {
				if !on {
					r.scaleUps++ // external-push: activated at once
				}
				on, lastActive = true, now
			} else if on && now%polling == 0 && now-lastActive >= cooldown {
				on = false
			}
		}
		if on {
			r.onHours += step.Hours()
		}
		if active := fake.ActiveCount(); active > 0 {
			r.activeHours += step.Hours()
		}
		clock.Advance(step)
	}
	total := 0
	for _, p := range []string{"/api/v1/users/", "/api/v1/analytics/users", "/api/version", "/api/v1/auths/"} {
		total += fake.Requests(p)
	}
	r.requestsPerFetch = float64(total+fake.RequestsWithPrefix("/api/v1/chats/list/user/")) / float64(fetches)
	return r, nil
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

func fmtClock(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
}
