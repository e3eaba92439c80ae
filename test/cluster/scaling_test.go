package cluster

import (
	"testing"
	"time"
)

// Scenario timing: short, so the suite stays short. The exporter refreshes
// every second and serves nothing stale, so a failure of Open WebUI shows at
// once instead of after --cache.max-stale.
const (
	pollSeconds     = 2
	cooldownSeconds = 6
	scrapeInterval  = time.Second
)

var scenarioArgs = []string{"--cache.ttl=1s", "--cache.max-stale=0s"}

func scenarioTuning(fallback *bool) tuning {
	return tuning{pollingInterval: pollSeconds, cooldownPeriod: cooldownSeconds, fallback: fallback}
}

func ptr[T any](v T) *T { return &v }

// Generous bounds: the machine may be busy; the measured figures are logged
// and go to BENCHMARKS.md through the measure test, not asserted here.
const (
	wakeTimeout = 45 * time.Second
	pollEvery   = pollSeconds * time.Second
	cooldown    = cooldownSeconds * time.Second
)

// TestKEDAOperatorScalesOllama runs KEDA's real operator against the
// exporter for each trigger, with the ScaledObject the chart renders.
func TestKEDAOperatorScalesOllama(t *testing.T) {
	for _, trigger := range allTriggers {
		t.Run(trigger, func(t *testing.T) {
			t.Parallel()

			t.Run("a person arrives: 0 to 1; leaves: 1 to 0 after cooldownPeriod", func(t *testing.T) {
				s := newStack(t, trigger, scenarioTuning(nil), stackOptions{extraArgs: scenarioArgs, scrape: scrapeInterval})
				s.holds(0, pollEvery+time.Second)
				took := s.wake(s.arrive("alice"), wakeTimeout)
				t.Logf("MEASURED %s: a person arrived, spec.replicas 0 -> 1 after %s", trigger, took.Round(time.Millisecond))
				left := s.leave("alice")
				at, err := s.replicas.waitFor(0, left, cooldown+wakeTimeout)
				if err != nil {
					t.Fatalf("%v; exporter: %s; ScaledObject: %s", err, s.activeUsers(), scaledObjectConditions(s.ns, s.soName))
				}
				// KEDA counts the cooldown from its last active poll, which
				// may be up to one polling interval before the person left.
				if gone := at.Sub(left); gone < cooldown-pollEvery {
					t.Fatalf("scaled to 0 %s after the person left, before cooldownPeriod %s", gone, cooldown)
				} else {
					t.Logf("MEASURED %s: the person left, spec.replicas 1 -> 0 after %s (cooldownPeriod %s)", trigger, gone.Round(time.Millisecond), cooldown)
				}
			})

			t.Run("Open WebUI fails, with fallback: 0 to 1", func(t *testing.T) {
				s := newStack(t, trigger, scenarioTuning(ptr(true)), stackOptions{extraArgs: scenarioArgs, scrape: scrapeInterval})
				s.holds(0, pollEvery+time.Second)
				failed := time.Now()
				s.fault("500")
				took := s.wake(failed, 3*pollEvery+wakeTimeout)
				t.Logf("Open WebUI failing (exporter: %s): fallback scaled 0 -> 1 after %s; ScaledObject: %s",
					s.activeUsers(), took.Round(time.Millisecond), scaledObjectConditions(s.ns, s.soName))
			})

			t.Run("Open WebUI fails, without fallback: replicas stay as they are", func(t *testing.T) {
				s := newStack(t, trigger, scenarioTuning(ptr(false)), stackOptions{extraArgs: scenarioArgs, scrape: scrapeInterval})
				// At 0: a failure does not wake Ollama...
				s.fault("500")
				s.holds(0, 3*pollEvery+cooldown)
				// ...and at 1 it does not stop it, even when the person
				// leaves just as Open WebUI fails (the count is unknown).
				s.fault("none")
				s.wake(s.arrive("alice"), wakeTimeout)
				s.leave("alice")
				s.fault("500")
				s.holds(1, 3*pollEvery+cooldown)
			})

			t.Run("the exporter dies: replicas stay as they are", func(t *testing.T) {
				s := newStack(t, trigger, scenarioTuning(ptr(false)), stackOptions{extraArgs: scenarioArgs, scrape: scrapeInterval})
				s.wake(s.arrive("alice"), wakeTimeout)
				for _, e := range s.exporters {
					e.proc.kill()
				}
				s.leave("alice")
				s.holds(1, 3*pollEvery+cooldown)
			})

			if trigger != triggerPush {
				return
			}
			t.Run("two exporters, the one KEDA streams from is killed: an arrival still wakes Ollama", func(t *testing.T) {
				s := newStack(t, trigger, scenarioTuning(nil), stackOptions{extraArgs: scenarioArgs, exporters: 0})
				if len(s.exporters) < 2 {
					t.Fatalf("%d exporter replicas, want 2 (the chart's push default)", len(s.exporters))
				}
				s.holds(0, pollEvery+time.Second)
				victim := s.service.busiest()
				if victim < 0 {
					t.Fatal("KEDA holds no connection to any exporter")
				}
				s.exporters[victim].proc.kill()
				t.Logf("killed exporter-%d (KEDA's stream was on it)", victim)
				took := s.wake(s.arrive("bob"), wakeTimeout)
				t.Logf("MEASURED %s: one of two exporters killed just before, a person arrived: 0 -> 1 after %s", trigger, took.Round(time.Millisecond))
			})
		})
	}
}
