package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The pool scenario's timing. A replica answers two streams at once
// (parallel=2) and queues the rest; every chunk takes chunkEvery.
const (
	poolParallel     = 2
	poolMaxReplicas  = 3
	chunkEvery       = 500 * time.Millisecond
	shortChunks      = 40  // 20 s: the pool must have grown before the first two end
	longChunks       = 110 // 55 s: past the scale-in that follows the short ones
	poolStartDelay   = time.Second
	poolGrace        = 2 * time.Minute // the pod's terminationGracePeriodSeconds
	scaleDownSeconds = 5               // the HPA's scale-down stabilization (its default is 300 s)
	poolScaleTimeout = 60 * time.Second
)

// TestGatePoolScalesOnLoad runs a pool of stand-in Ollama replicas
// (parallel=2) behind the gate through KEDA's real operator and the HPA
// controller, with the ScaledObject the chart renders for a pool
// (targetValue = parallel, minReplicaCount 1, maxReplicaCount 3):
//
//   - four short streams go to the one replica (two run, two wait in it):
//     the pool's value is 4, the HPA scales 1 -> 2;
//   - once the gate sees the second replica up, two long streams go to it:
//     six streams at once, 2 -> 3;
//   - the short ones end: 3 -> 1 (perhaps through 2), while the long ones
//     still run. The test's kubelet deletes the busiest pods first, so a
//     pod with running streams is deleted: its preStop hook drains it
//     through the gate, and it is stopped only once its streams ended.
//
// Every stream must end whole, byte for byte the stand-in's answer.
func TestGatePoolScalesOnLoad(t *testing.T) {
	t.Parallel()
	addrs := loopbackAddrs(poolMaxReplicas)
	values := filepath.Join(t.TempDir(), "pool-values.yaml")
	var replicaURLs []string
	for _, a := range addrs[1:] {
		replicaURLs = append(replicaURLs, "http://"+a)
	}
	if err := os.WriteFile(values, []byte(fmt.Sprintf(`gate:
  enabled: true
  backends:
    - name: pool
      url: http://%s
      replicas: [%s]
      parallel: %d
      scaleTargetRef: {name: ollama-pool}
      minReplicaCount: 1
      maxReplicaCount: %d
`, addrs[0], strings.Join(replicaURLs, ", "), poolParallel, poolMaxReplicas)), 0o600); err != nil {
		t.Fatal(err)
	}
	gateFlags := []string{fmt.Sprintf("pool=http://%s,parallel=%d", addrs[0], poolParallel)}
	for _, u := range replicaURLs {
		gateFlags = append(gateFlags, "pool="+u)
	}
	s := newStack(t, triggerPush, tuning{pollingInterval: pollSeconds, scaleDownWindow: scaleDownSeconds},
		stackOptions{exporters: 1, extraArgs: scenarioArgs, backends: []string{"pool"}, startReplica: 1, chartValues: values,
			gate: &gateOptions{backends: gateFlags}})
	so := s.shipped.scaledObject
	tr := dig(so, "spec", "triggers").([]any)[0].(map[string]any)
	if got := fmt.Sprint(dig(so, "spec", "minReplicaCount"), " ", dig(so, "spec", "maxReplicaCount"), " ", dig(tr, "metadata", "targetValue")); got != fmt.Sprint(1, " ", poolMaxReplicas, " ", poolParallel) {
		t.Fatalf("the chart's pool ScaledObject has minReplicaCount, maxReplicaCount, targetValue %s; want 1 %d %d", got, poolMaxReplicas, poolParallel)
	}
	pool := s.backend("pool")
	gate := s.exporters[0].gateAddr
	pods := followPool(t, s.ns, pool.name, addrs, pool.replicas, gate, poolGrace,
		"--start-delay", poolStartDelay.String(), "--models", "tiny:1b", "--chunk-interval", chunkEvery.String(),
		"--parallel", fmt.Sprint(poolParallel))
	// The answers to compare with: the same stand-in, without pauses.
	refAddr := heldAddr()
	ref := startT(t, "fakeollama-reference", fakeOllamaBin, nil, "--listen", refAddr, "--models", "tiny:1b", "--chunk-interval", "0s")
	if err := waitListening(ref, refAddr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	waitReplicasUp(t, gate, 1, 30*time.Second)
	s.holds(1, pollEvery+time.Second)

	chat := func(kind string, i, chunks int) string {
		return fmt.Sprintf(`{"model":"tiny:1b","messages":[{"role":"user","content":"%s question %d"}],"options":{"num_predict":%d}}`, kind, i, chunks)
	}
	type stream struct {
		name, body string
		call       *chatCall
	}
	// startStreams sends n chats of kind, each answered in chunks.
	startStreams := func(kind string, n, chunks int) []stream {
		var out []stream
		for i := range n {
			b := chat(kind, i, chunks)
			out = append(out, stream{fmt.Sprintf("%s %d", kind, i), b, startChat(t, "http://"+gate+"/pool/api/chat", b, nil)})
		}
		return out
	}
	sent := time.Now()
	short := startStreams("short", 4, shortChunks)
	at2, err := pool.replicas.waitFor(2, sent, poolScaleTimeout)
	if err != nil {
		t.Fatalf("four streams on one replica of two slots: %v; ScaledObject: %s; HPA: %s", err, scaledObjectConditions(s.ns, pool.soName), hpaStatus(s.ns))
	}
	waitReplicasUp(t, gate, 2, 30*time.Second)
	for _, st := range short {
		if st.call.answered() {
			t.Fatalf("%s ended before the pool grew to two replicas: the scenario proves nothing", st.name)
		}
	}
	longSent := time.Now()
	long := startStreams("long", 2, longChunks)
	at3, err := pool.replicas.waitFor(3, longSent, poolScaleTimeout)
	if err != nil {
		t.Fatalf("six streams: %v; ScaledObject: %s; HPA: %s", err, scaledObjectConditions(s.ns, pool.soName), hpaStatus(s.ns))
	}
	t.Logf("MEASURED pool: four streams on one replica (parallel=%d), spec.replicas 1 -> 2 after %s; two more sent when the gate saw the second replica up (%s later), 2 -> 3 after %s",
		poolParallel, at2.Sub(sent).Round(time.Millisecond), longSent.Sub(at2).Round(time.Millisecond), at3.Sub(longSent).Round(time.Millisecond))

	var shortEnd time.Time
	for _, st := range short {
		a := st.call.wait(t)
		shortEnd = maxTime(shortEnd, a.done)
	}
	at1, err := pool.replicas.waitFor(1, shortEnd, poolScaleTimeout)
	if err != nil {
		t.Fatalf("after the short streams: %v; HPA: %s", err, hpaStatus(s.ns))
	}
	var ends []string
	for _, st := range slices.Concat(short, long) {
		a := <-st.call.done
		if a.err != nil {
			t.Fatalf("%s was cut: %v after %d bytes (pods deleted: %v)", st.name, a.err, len(a.body), pods.deletions())
		}
		ends = append(ends, fmt.Sprintf("%s +%.1fs", st.name, a.done.Sub(sent).Seconds()))
		want := startChat(t, "http://"+refAddr+"/api/chat", st.body, nil).wait(t)
		t.Logf("%s:", st.name)
		sameAnswer(t, a, want)
	}

	// The deleted pods: their hooks returned once their streams ended.
	var dels []podDeletion
	if err := poll(poolGrace, 100*time.Millisecond, func() (bool, error) {
		dels = pods.deletions()
		return len(dels) >= poolMaxReplicas-1, nil
	}); err != nil {
		t.Fatalf("%d pods deleted, want %d: %v", len(dels), poolMaxReplicas-1, err)
	}
	busy := 0
	for _, d := range dels {
		if d.hookErr != nil || d.hookStatus != 200 || !strings.Contains(d.hookBody, `"drained":true`) {
			t.Errorf("pod %s: its preStop drain answered %d %q (%v)", d.addr, d.hookStatus, d.hookBody, d.hookErr)
		}
		if d.inFlight > 0 {
			busy++
			t.Logf("MEASURED pool: pod %s deleted (spec.replicas %d) with %d streams on it; its preStop drain returned %s later, the process stopped %s after that",
				d.addr, d.replicasNow, d.inFlight, d.hookDone.Sub(d.at).Round(time.Millisecond), d.stopped.Sub(d.hookDone).Round(time.Millisecond))
		} else {
			t.Logf("pod %s deleted (spec.replicas %d) idle; its drain returned after %s", d.addr, d.replicasNow, d.hookDone.Sub(d.at).Round(time.Millisecond))
		}
	}
	if busy == 0 {
		t.Fatal("no pod was deleted while a stream ran on it: the scale-in proves nothing")
	}

	// spec.replicas went 1 -> ... -> 3 -> ... -> 1.
	steps, last, peak := []string{"1"}, 0, 0
	for _, e := range pool.replicas.changesSince(sent) {
		steps = append(steps, fmt.Sprintf("%d at +%.1fs", e.replicas, e.at.Sub(sent).Seconds()))
		last, peak = e.replicas, max(peak, e.replicas)
	}
	if peak != poolMaxReplicas || last != 1 {
		t.Fatalf("spec.replicas after the first stream: %s; want up to %d and back to 1", strings.Join(steps, " -> "), poolMaxReplicas)
	}
	if got := pods.runningAddrs(); len(got) != 1 {
		t.Fatalf("pods running at the end: %v, want one", got)
	}
	t.Logf("MEASURED pool: spec.replicas %s; -> 1 %s after the last short stream ended (scale-down stabilization %d s); streams ended (whole) at %s",
		strings.Join(steps, " -> "), at1.Sub(shortEnd).Round(time.Millisecond), scaleDownSeconds, strings.Join(ends, ", "))
}

// waitReplicasUp waits until the gate reports n replicas of its pools up
// (the gate probes an idle pool every 5 s).
func waitReplicasUp(t *testing.T, gateAddr string, n int, timeout time.Duration) {
	t.Helper()
	var last []gateReplica
	if err := poll(timeout, 50*time.Millisecond, func() (bool, error) {
		st, err := gateReplicas(gateAddr)
		if err != nil {
			return false, nil
		}
		last = st
		up := 0
		for _, r := range st {
			if r.State == "up" && !r.Draining {
				up++
			}
		}
		return up >= n, nil
	}); err != nil {
		t.Fatalf("the gate does not see %d replicas up: %v (replicas: %+v)", n, err, last)
	}
}

// hpaStatus is the HPA's conditions and current metrics, for failures.
func hpaStatus(ns string) string {
	out, err := cp.kubectl(nil, "get", "hpa", "-n", ns, "-o", "jsonpath={range .items[*]}{.metadata.name}: {.status.currentReplicas}/{.status.desiredReplicas} {.status.currentMetrics} {.status.conditions}{\"\\n\"}{end}")
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(out)
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
