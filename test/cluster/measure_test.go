package cluster

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	measureArrivals = flag.Int("measure.arrivals", 0, "TestMeasureWake: arrivals per trigger (0 skips the measurement)")
	measureLeaves   = flag.Int("measure.leaves", 2, "TestMeasureWake: departures per trigger timed through the whole cooldownPeriod")
	measureTriggers = flag.String("measure.triggers", strings.Join(allTriggers, ","), "TestMeasureWake: triggers to measure")
)

// TestMeasureWake measures, through KEDA's real operator and with the
// chart's defaults (ScaledObject timing, exporter flags, ServiceMonitor
// interval), how long it takes from "a person becomes active" to
// spec.replicas = 1, and from "the last person leaves" to 0. It is not part
// of the CI run (it takes many minutes):
//
//	cd test/cluster && go test -count=1 -v -timeout 90m -parallel 3 -run TestMeasureWake ./... -args -measure.arrivals=10
//
// Each arrival comes at a random moment within the polling interval, after
// KEDA has seen nobody (Active=False) and Ollama was put back to 0; the
// first -measure.leaves departures wait for KEDA's own scale-in instead.
func TestMeasureWake(t *testing.T) {
	if *measureArrivals <= 0 {
		t.Skip("a measurement, not a test: run with -args -measure.arrivals=10")
	}
	var mu sync.Mutex
	results := map[string]string{}
	t.Cleanup(func() {
		var b strings.Builder
		fmt.Fprintf(&b, "\nKEDA %s operator, chart defaults, %d arrivals per trigger:\n", cp.bin.kedaVersion, *measureArrivals)
		for _, tr := range sortedKeys(results) {
			b.WriteString(results[tr])
		}
		t.Log(b.String())
	})
	for _, trigger := range strings.Split(*measureTriggers, ",") {
		t.Run(trigger, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, trigger, tuning{}, stackOptions{})
			poll := time.Duration(intOf(dig(s.shipped.scaledObject, "spec", "pollingInterval"), 30)) * time.Second
			cool := time.Duration(intOf(dig(s.shipped.scaledObject, "spec", "cooldownPeriod"), 300)) * time.Second
			t.Logf("%s: pollingInterval %s, cooldownPeriod %s, exporter flags %v, scrape interval %s",
				trigger, poll, cool, s.shipped.exporterArgs, s.shipped.scrapeInterval)
			var wakes, leaves []time.Duration
			for i := range *measureArrivals {
				// A random phase against KEDA's polling (and scraping).
				time.Sleep(time.Duration(rand.Int64N(int64(poll))))
				took := s.wake(s.arrive("alice"), poll+5*time.Minute)
				wakes = append(wakes, took)
				t.Logf("arrival %d: 0 -> 1 after %s", i+1, took.Round(time.Millisecond))
				left := s.leave("alice")
				if i < *measureLeaves {
					at, err := s.replicas.waitFor(0, left, cool+5*time.Minute)
					if err != nil {
						t.Fatal(err)
					}
					leaves = append(leaves, at.Sub(left))
					t.Logf("departure %d: 1 -> 0 after %s", i+1, at.Sub(left).Round(time.Millisecond))
					continue
				}
				// Skip the cooldown: once KEDA has seen nobody, put Ollama
				// back to 0 ourselves (KEDA does nothing at 0 while inactive).
				if err := poll2(5*time.Minute, func() bool {
					return strings.Contains(scaledObjectConditions(s.ns, s.soName), "Active=False")
				}); err != nil {
					t.Fatalf("KEDA never saw the person leave: %s", scaledObjectConditions(s.ns, s.soName))
				}
				setReplicas(t, s.ns, s.target, 0)
				if _, err := s.replicas.waitFor(0, time.Now(), 30*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			line := fmt.Sprintf("  %-14s wake 0->1: median %s, p99 %s, min %s, max %s (n=%d; pollingInterval %s)\n",
				trigger, pct(wakes, 50), pct(wakes, 99), pct(wakes, 0), pct(wakes, 100), len(wakes), poll)
			if len(leaves) > 0 {
				line += fmt.Sprintf("  %-14s last leaves -> 0: median %s, max %s (n=%d; cooldownPeriod %s)\n",
					trigger, pct(leaves, 50), pct(leaves, 100), len(leaves), cool)
			}
			t.Log(line)
			mu.Lock()
			results[trigger] = line
			mu.Unlock()
		})
	}
}

func poll2(timeout time.Duration, ok func() bool) error {
	return poll(timeout, 250*time.Millisecond, func() (bool, error) { return ok(), nil })
}

func intOf(v any, def int) int {
	switch n := v.(type) {
	case int:
		return n
	case float64:
		return int(n)
	}
	return def
}

// pct is the p-th percentile (nearest rank; 0 = min, 100 = max).
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(rank, 0), len(s)-1)].Round(time.Millisecond)
}
