// Command soak runs the built exporter against the fake Open WebUI on
// loopback for a bounded time, under load, while flapping Open WebUI through
// the fault matrix, and prints what went wrong, if anything.
//
//	bench/soak.sh                 # builds both binaries, runs 60 s
//	go run ./bench/soak --exporter ./openwebui_exporter --fake ./fakeopenwebui --duration 60s
//
// A wrong answer is a 200 whose count is not the number of active humans
// (the fake keeps exactly --humans of them active the whole time), or a 200
// while the count must be unknown (a fault has lasted longer than the stale
// bound plus one fetch). 503 is the right answer while the count is unknown;
// any other status or transport error is a non-503 error.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

var (
	exporterBin = flag.String("exporter", "./openwebui_exporter", "exporter binary")
	fakeBin     = flag.String("fake", "./fakeopenwebui", "fake Open WebUI binary")
	duration    = flag.Duration("duration", 60*time.Second, "how long to run (bounded to 10m)")
	workers     = flag.Int("workers", 32, "concurrent clients")
	humans      = flag.Int("humans", 3, "active humans in the fake")
	faultFor    = flag.Duration("fault-phase", 4*time.Second, "how long each fault lasts")
	healthyFor  = flag.Duration("healthy-phase", 3*time.Second, "how long Open WebUI is healthy between faults")
)

// Exporter settings: short, so that one run goes through every state.
const (
	ttl      = time.Second
	maxStale = 2 * time.Second
	timeout  = 500 * time.Millisecond
	margin   = time.Second // scheduling slack on a busy 2-core machine
)

// faults are the fake's /_fake/fault kinds, plus "down" (process stopped).
var faults = []string{"500", "html", "slow", "401", "403-gate", "down"}

type phase struct {
	fault string // "none" when healthy
	since time.Time
}

type tally struct {
	ok, unavailable, otherStatus, transportErr atomic.Int64
	wrongCount, okWhileUnknown, early503       atomic.Int64
	metricsScrapes                             atomic.Int64
}

func main() {
	flag.Parse()
	if *duration <= 0 || *duration > 10*time.Minute {
		fail("--duration must be within (0, 10m]")
	}
	fakeAddr, exporterAddr := harness.HeldAddr(), harness.HeldAddr()
	fake := startFake(fakeAddr)
	defer func() { harness.Stop(fake) }()
	exporter, err := harness.StartExporter(*exporterBin, exporterAddr, fakeAddr,
		"--cache.ttl="+ttl.String(), "--cache.max-stale="+maxStale.String(), "--openwebui.timeout="+timeout.String())
	defer harness.Stop(exporter)
	if err != nil {
		fail("%v", err)
	}

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *workers}}
	base := "http://" + exporterAddr
	if err := harness.WaitFor(10*time.Second, func() bool { code, _ := harness.Get(client, base+"/active_users"); return code == 200 }); err != nil {
		fail("no first count: %v", err)
	}
	startGoroutines, startRSS := settledGoroutines(client, base), harness.RSSKiB(exporter.Process.Pid)

	var current atomic.Pointer[phase]
	current.Store(&phase{fault: "none", since: time.Now().Add(-time.Hour)})
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()

	var t tally
	var wg sync.WaitGroup
	for w := range *workers {
		wg.Go(func() { load(ctx, client, base, w, &current, &t) })
	}

	// Flap Open WebUI: healthy, fault, healthy, next fault, ...
	var schedule []string
	for i := 0; ctx.Err() == nil; i++ {
		fault := faults[i%len(faults)]
		schedule = append(schedule, fault)
		fake = setFault(fake, fakeAddr, fault)
		current.Store(&phase{fault: fault, since: time.Now()})
		sleep(ctx, *faultFor)
		fake = setFault(fake, fakeAddr, "none")
		current.Store(&phase{fault: "none", since: time.Now()})
		sleep(ctx, *healthyFor)
	}
	wg.Wait()
	endRSS := harness.RSSKiB(exporter.Process.Pid)
	fake = setFault(fake, fakeAddr, "none")
	endGoroutines := settledGoroutines(client, base)

	served := t.ok.Load() + t.unavailable.Load()
	wrong := t.wrongCount.Load() + t.okWhileUnknown.Load()
	fmt.Printf("soak: %s, %d workers, %d humans active, exporter --cache.ttl=%s --cache.max-stale=%s --openwebui.timeout=%s\n",
		*duration, *workers, *humans, ttl, maxStale, timeout)
	fmt.Printf("fault phases (%s each, %s healthy between): %s\n", *faultFor, *healthyFor, strings.Join(schedule, " "))
	fmt.Printf("requests served:  %d /active_users (%d x 200, %d x 503), %d /metrics\n", served, t.ok.Load(), t.unavailable.Load(), t.metricsScrapes.Load())
	fmt.Printf("wrong answers:    %d (200 with a count other than %d: %d; 200 while the count is unknown: %d)\n",
		wrong, *humans, t.wrongCount.Load(), t.okWhileUnknown.Load())
	fmt.Printf("non-503 errors:   %d (other status: %d, transport: %d)\n", t.otherStatus.Load()+t.transportErr.Load(), t.otherStatus.Load(), t.transportErr.Load())
	fmt.Printf("503 after Open WebUI was healthy again for %s: %d\n", ttl+timeout+margin, t.early503.Load())
	fmt.Printf("exporter goroutines (idle connections closed): start %d, end %d\n", startGoroutines, endGoroutines)
	fmt.Printf("exporter RSS:        start %.1f MiB, end %.1f MiB\n", float64(startRSS)/1024, float64(endRSS)/1024)
	if wrong > 0 || t.otherStatus.Load()+t.transportErr.Load() > 0 {
		os.Exit(1)
	}
}

// load asks /active_users (and every tenth time /metrics) until ctx ends,
// judging every answer against the phase Open WebUI is in.
func load(ctx context.Context, client *http.Client, base string, w int, current *atomic.Pointer[phase], t *tally) {
	for i := 0; ctx.Err() == nil; i++ {
		if (i+w)%10 == 0 {
			if code, _ := harness.Get(client, base+"/metrics"); code == 200 {
				t.metricsScrapes.Add(1)
			} else {
				t.otherStatus.Add(1)
			}
			continue
		}
		before := *current.Load()
		code, body := harness.Get(client, base+"/active_users")
		after := *current.Load()
		switch code {
		case 0:
			if ctx.Err() == nil {
				t.transportErr.Add(1)
			}
		case 200:
			t.ok.Add(1)
			var a struct {
				ActiveUsers *int `json:"active_users"`
			}
			if json.Unmarshal([]byte(body), &a) != nil || a.ActiveUsers == nil || *a.ActiveUsers != *humans {
				t.wrongCount.Add(1)
			}
			// Unknown for sure: the whole request fell in one fault phase
			// that had already outlasted the stale bound and a fetch.
			if before == after && before.fault != "none" && time.Since(before.since) > maxStale+ttl+timeout+margin {
				t.okWhileUnknown.Add(1)
			}
		case 503:
			t.unavailable.Add(1)
			if before == after && before.fault == "none" && time.Since(before.since) > ttl+timeout+margin {
				t.early503.Add(1)
			}
		default:
			t.otherStatus.Add(1)
		}
	}
}

func setFault(fake *exec.Cmd, addr, fault string) *exec.Cmd {
	switch {
	case fault == "down":
		harness.Stop(fake)
		return nil
	case fake == nil:
		fake = startFake(addr)
	}
	if err := harness.Post("http://" + addr + "/_fake/fault?kind=" + fault + "&delay=2s"); err != nil {
		fail("setting fault %s: %v", fault, err)
	}
	return fake
}

func startFake(addr string) *exec.Cmd {
	cmd, err := harness.StartFake(*fakeBin, addr, "--humans", strconv.Itoa(*humans))
	if err != nil {
		fail("%v", err)
	}
	return cmd
}

// settledGoroutines is the exporter's goroutine count once the load's
// keep-alive connections are closed and fetches in flight have ended.
func settledGoroutines(client *http.Client, base string) int {
	client.CloseIdleConnections()
	time.Sleep(timeout + 500*time.Millisecond)
	n := goroutines(client, base)
	client.CloseIdleConnections()
	return n
}

func goroutines(client *http.Client, base string) int {
	_, body := harness.Get(client, base+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return -1
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "soak: "+format+"\n", args...)
	os.Exit(2)
}
