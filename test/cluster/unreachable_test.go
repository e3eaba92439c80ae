package cluster

import (
	"fmt"
	"testing"
	"time"
)

// What KEDA's operator does when the exporter cannot be reached at all,
// with a fallback configured and Ollama at 0. These pin KEDA's behaviour
// as observed here (docs/scaling.md); when a KEDA upgrade changes it, the
// test says so, and the docs and chart defaults need a look.
//
// kedacore/keda#8056: for external/external-push triggers, GetMetricSpec
// fails first, so no metric is known and the fallback is never reached.
var fallbackWakesWhenExporterUnreachable = map[string]bool{
	triggerPush:       false, // kedacore/keda#8056
	triggerMetricsAPI: true,
	triggerPrometheus: true,
}

func TestExporterUnreachableWithFallback(t *testing.T) {
	for _, trigger := range allTriggers {
		t.Run(trigger, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, trigger, scenarioTuning(ptr(true)), stackOptions{extraArgs: scenarioArgs, scrape: scrapeInterval, exporters: 1})
			s.holds(0, pollEvery+time.Second)
			gone := time.Now()
			for _, e := range s.exporters {
				e.proc.kill()
			}
			// failureThreshold 3 polls, plus generous slack.
			window := 3*pollEvery + 30*time.Second
			at, err := s.replicas.waitFor(1, gone, window)
			woke := err == nil
			state := scaledObjectConditions(s.ns, s.soName)
			if woke {
				t.Logf("OBSERVED %s: exporter unreachable, fallback {failureThreshold: 3, replicas: 1}: 0 -> 1 after %s; ScaledObject: %s",
					trigger, at.Sub(gone).Round(time.Millisecond), state)
			} else {
				t.Logf("OBSERVED %s: exporter unreachable, fallback {failureThreshold: 3, replicas: 1}: stayed at 0 for %s; ScaledObject: %s",
					trigger, window, state)
			}
			if want := fallbackWakesWhenExporterUnreachable[trigger]; woke != want {
				t.Fatalf("KEDA %s behaves differently from what docs/scaling.md states: fallback woke Ollama = %v, documented %v",
					cp.bin.kedaVersion, woke, want)
			}
		})
	}
}

// kedacore/keda#5914: an unreachable external scaler can make the other
// triggers of the same ScaledObject unavailable too. Observed here with an
// external-push trigger at a dead address next to a working metrics-api
// trigger: does a person arriving still wake Ollama?
var metricsAPITriggerWakesNextToDeadPushTrigger = true

func TestDeadPushTriggerNextToMetricsAPI(t *testing.T) {
	ns := newNamespace(t, "kedaissue5914")
	fakeAddr, httpAddr := heldAddr(), heldAddr()
	fake := startT(t, "fakeopenwebui", fakeBin, nil, "--listen", fakeAddr, "--humans", "0", "--token", fakeToken)
	if err := waitListening(fake, fakeAddr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	exp := startT(t, "exporter", exporterBin, []string{"API_URL=http://" + fakeAddr, "TOKEN=" + fakeToken},
		append([]string{"--web.listen-address=" + httpAddr}, scenarioArgs...)...)
	if err := waitListening(exp, httpAddr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	stubOllama(t, ns, "ollama", 0)
	w := watchReplicas(t, ns, "ollama")
	dead := heldAddr() // nothing listens there
	applyObject(t, ns, map[string]any{
		"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
		"metadata": map[string]any{"name": "ollama", "namespace": ns},
		"spec": map[string]any{
			"scaleTargetRef":  map[string]any{"name": "ollama"},
			"minReplicaCount": 0, "maxReplicaCount": 1,
			"pollingInterval": pollSeconds, "cooldownPeriod": cooldownSeconds,
			"triggers": []any{
				map[string]any{"type": "external-push", "metadata": map[string]any{
					"scalerAddress": dead, "targetValue": "1", "activationValue": "0"}},
				map[string]any{"type": "metrics-api", "metadata": map[string]any{
					"url": "http://" + httpAddr + "/active_users", "format": "json", "valueLocation": "active_users",
					"targetValue": "1", "activationTargetValue": "0"}},
			},
		},
	})
	t.Cleanup(func() { _, _ = cp.kubectl(nil, "delete", "scaledobject", "-n", ns, "ollama", "--wait=false") })
	before := time.Now()
	time.Sleep(2 * pollEvery)
	if ch := w.changesSince(before); len(ch) > 0 {
		t.Fatalf("spec.replicas changed before anybody arrived: %v", ch)
	}
	if cur, _ := w.current(); cur != 0 {
		t.Fatalf("spec.replicas is %d before anybody arrived, want 0", cur)
	}
	t.Logf("before the arrival: spec.replicas 0; ScaledObject: %s", scaledObjectConditions(ns, "ollama"))
	arrived := time.Now()
	if err := httpPost("http://" + fakeAddr + "/_fake/active?name=alice"); err != nil {
		t.Fatal(err)
	}
	at, err := w.waitFor(1, arrived, wakeTimeout)
	woke := err == nil
	state := scaledObjectConditions(ns, "ollama")
	if woke {
		t.Logf("OBSERVED: push trigger at a dead address + working metrics-api trigger: a person arrived, 0 -> 1 after %s; ScaledObject: %s",
			at.Sub(arrived).Round(time.Millisecond), state)
	} else {
		t.Logf("OBSERVED: push trigger at a dead address + working metrics-api trigger: a person arrived, still 0 after %s; ScaledObject: %s",
			wakeTimeout, state)
	}
	if woke != metricsAPITriggerWakesNextToDeadPushTrigger {
		t.Fatal(fmt.Sprintf("KEDA %s behaves differently from what docs/scaling.md states (kedacore/keda#5914): woke = %v, documented %v",
			cp.bin.kedaVersion, woke, metricsAPITriggerWakesNextToDeadPushTrigger))
	}
}
