package cluster

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestGateWarmsOnArrival: a person arrives while Ollama is at zero; KEDA's
// real operator scales it up, and the gate loads the model the pool served
// last (docs/warming.md) as soon as the stand-in answers HTTP, so that the
// pool is up with its model loaded before the first chat is sent. The gate
// learned tiny:1b on an earlier day: its --gate.state-file says so.
func TestGateWarmsOnArrival(t *testing.T) {
	t.Parallel()
	ollama := heldAddr()
	state := filepath.Join(t.TempDir(), "gate-state.json")
	learned, err := json.Marshal(map[string]any{"version": 1, "backends": map[string]any{
		"default": map[string]any{"url": "http://" + ollama, "lists": map[string]any{},
			"warm": map[string]any{"learned": map[string]any{}, "recent": []string{"tiny:1b"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(state, learned, 0o600); err != nil {
		t.Fatal(err)
	}
	const loadTime = 2 * time.Second
	s := newStack(t, triggerPush, gateTuning(), stackOptions{exporters: 1, extraArgs: scenarioArgs,
		gate: &gateOptions{backends: []string{"http://" + ollama}, args: []string{"--gate.state-file=" + state}}})
	o := followReplicas(t, s.target, ollama, s.replicas, fakeOllamaOptions{
		startDelay: standInStartDelay, models: "tiny:1b", chunks: 2, chunkInterval: 50 * time.Millisecond, loadTime: loadTime})
	s.holds(0, pollEvery+time.Second)

	arrived := s.arrive("alice")
	took := s.wake(arrived, wakeTimeout)
	serving, err := o.waitServing(standInStartDelay + wakeTimeout)
	if err != nil {
		t.Fatal(err)
	}
	// No chat has been sent: only the gate's warm-up can load tiny:1b.
	var loadedAt time.Time
	err = poll(loadTime+30*time.Second, 50*time.Millisecond, func() (bool, error) {
		r, err := httpGet("http://" + ollama + "/api/ps")
		if err != nil || r.status != 200 {
			return false, nil
		}
		var ps struct {
			Models []struct {
				Name string `json:"name"`
			} `json:"models"`
		}
		if json.Unmarshal([]byte(r.body), &ps) != nil {
			return false, nil
		}
		for _, m := range ps.Models {
			if m.Name == "tiny:1b" {
				loadedAt = time.Now()
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("tiny:1b not loaded after the wake: %v", err)
	}
	t.Logf("MEASURED warming: a person arrived, spec.replicas 0 -> 1 after %s, the stand-in served HTTP %s after the arrival, tiny:1b loaded (load time %s) %s after it served, before any chat",
		took.Round(time.Millisecond), serving.Sub(arrived).Round(time.Millisecond), loadTime, loadedAt.Sub(serving).Round(time.Millisecond))

	// The first chat finds the model loaded and answers.
	body := `{"model":"tiny:1b","messages":[{"role":"user","content":"hi"}]}`
	got := startChat(t, "http://"+s.exporters[0].gateAddr+"/api/chat", body, nil).wait(t)
	sameAnswer(t, got, startChat(t, "http://"+ollama+"/api/chat", body, nil).wait(t))
	assertOutcome(t, s.exporters[0], "default", "passed", 1)
	r, err := httpGet("http://" + s.exporters[0].httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := sample(r.body, "openwebui_gate_warmups_total", map[string]string{"backend": "default", "model": "tiny:1b", "outcome": "loaded"}); !ok || n != 1 {
		t.Errorf("openwebui_gate_warmups_total{model=tiny:1b,outcome=loaded} = %v (found %v), want 1", n, ok)
	}
}
