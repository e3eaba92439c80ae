package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Gate scenario timing. The cooldown is short, and the first chat streams
// for longer than it, so that a scale-in under a running answer would show.
const (
	gateCooldownSeconds = 10
	gateCooldown        = gateCooldownSeconds * time.Second
	// Ollama's start-up as the stand-in plays it: the port is open at
	// once, HTTP answers come only after this.
	standInStartDelay = 3 * time.Second
	// The request-woken backend's idle time (--gate.backend ...,idle=):
	// the gate's shortest (gate.MinIdle).
	bigIdle = time.Minute
	// The end of an answer as the client read it may come a little after
	// the gate counted it finished.
	endSlack = 250 * time.Millisecond
)

func gateTuning() tuning {
	return tuning{pollingInterval: pollSeconds, cooldownPeriod: gateCooldownSeconds}
}

// TestGateWakesOllama runs the wake gate (the exporter's --gate.* flags)
// through KEDA's real operator with external-push triggers, the trigger the
// README recommends when people wait for Ollama. There is no kubelet: a
// stand-in Ollama process starts when KEDA sets a stub Deployment's
// spec.replicas to 1 and stops when it returns to 0.
func TestGateWakesOllama(t *testing.T) {
	t.Run("a chat sent while Ollama is at zero is held, wakes it and completes byte for byte; a stream longer than the cooldown is not scaled in", func(t *testing.T) {
		t.Parallel()
		ollama := heldAddr()
		s := newStack(t, triggerPush, gateTuning(), stackOptions{exporters: 1, extraArgs: scenarioArgs,
			gate: &gateOptions{backends: []string{"http://" + ollama}}})
		// 40 chunks 0.6 s apart: a 24 s stream, over twice the cooldown.
		o := followReplicas(t, s.target, ollama, s.replicas, fakeOllamaOptions{
			startDelay: standInStartDelay, models: "tiny:1b", chunks: 40, chunkInterval: 600 * time.Millisecond})
		gate := s.exporters[0].gateAddr
		s.holds(0, pollEvery+time.Second)

		body := `{"model":"tiny:1b","messages":[{"role":"user","content":"Why is the sky blue?"}]}`
		viaGate := startChat(t, "http://"+gate+"/api/chat", body, nil)
		heldAt := waitHeld(t, gate, "default", viaGate)
		took := s.wake(viaGate.sent, wakeTimeout)
		woke := viaGate.sent.Add(took)
		t.Logf("MEASURED gate: a chat held (seen held %s after it was sent), spec.replicas 0 -> 1 after %s",
			heldAt.Sub(viaGate.sent).Round(time.Millisecond), took.Round(time.Millisecond))

		serving, err := o.waitServing(standInStartDelay + wakeTimeout)
		if err != nil {
			t.Fatal(err)
		}
		_, started := o.running()
		direct := startChat(t, "http://"+ollama+"/api/chat", body, nil)
		got, want := viaGate.wait(t), direct.wait(t)
		sameAnswer(t, got, want)
		t.Logf("MEASURED gate: the stand-in started %s after 0 -> 1 and served HTTP %s later; the held chat's first byte came %s after that, %s after it was sent",
			started.Sub(woke).Round(time.Millisecond), serving.Sub(started).Round(time.Millisecond),
			got.firstByte.Sub(serving).Round(time.Millisecond), got.firstByte.Sub(got.sent).Round(time.Millisecond))
		assertOutcome(t, s.exporters[0], "default", "delivered", 1)

		// The stream outlasted the cooldown, and KEDA kept Ollama up under it.
		streamed := got.done.Sub(got.firstByte)
		if streamed <= gateCooldown {
			t.Fatalf("the stream took %s, not longer than the cooldown %s: the scenario proves nothing", streamed, gateCooldown)
		}
		if ch := s.replicas.changesSince(woke.Add(time.Millisecond)); len(ch) > 0 {
			t.Fatalf("spec.replicas changed while the answer streamed (%s): %v", streamed.Round(time.Millisecond), ch)
		}
		at, err := s.replicas.waitFor(0, got.done, gateCooldown+wakeTimeout)
		if err != nil {
			t.Fatalf("after the stream: %v; ScaledObject: %s", err, scaledObjectConditions(s.ns, s.soName))
		}
		// KEDA counts the cooldown from its last poll that saw demand, up
		// to one polling interval before the end (as the client saw it).
		gone := at.Sub(got.done)
		if gone < gateCooldown-pollEvery-endSlack {
			t.Fatalf("scaled to 0 %s after the stream ended, before the cooldown %s", gone, gateCooldown)
		}
		t.Logf("MEASURED gate: a %s stream (cooldownPeriod %s) kept spec.replicas at 1; 1 -> 0 %s after it ended",
			streamed.Round(time.Millisecond), gateCooldown, gone.Round(time.Millisecond))
		if err := o.waitStopped(10 * time.Second); err != nil {
			t.Fatalf("the stand-in Ollama still runs at 0 replicas: %v", err)
		}
	})

	t.Run("two backends: an arrival wakes only small, a message to big is held and wakes only big, big sleeps after idle + cooldown while small stays up", func(t *testing.T) {
		t.Parallel()
		small, big := heldAddr(), heldAddr()
		s := newStack(t, triggerPush, gateTuning(), stackOptions{exporters: 1, extraArgs: scenarioArgs,
			backends: []string{"small", "big"},
			gate: &gateOptions{backends: []string{
				"small=http://" + small + ",wake=arrival",
				"big=http://" + big + ",wake=request,idle=" + bigIdle.String(),
			}}})
		sm, bg := s.backend("small"), s.backend("big")
		followReplicas(t, sm.name, small, sm.replicas, fakeOllamaOptions{
			startDelay: time.Second, models: "small:3b", chunks: 5, chunkInterval: 50 * time.Millisecond})
		ob := followReplicas(t, bg.name, big, bg.replicas, fakeOllamaOptions{
			startDelay: standInStartDelay, models: "big:70b", chunks: 5, chunkInterval: 50 * time.Millisecond})
		gate := s.exporters[0].gateAddr
		s.holdsAll(0, pollEvery+time.Second)

		arrived := s.arrive("alice")
		smallAt, err := sm.replicas.waitFor(1, arrived, wakeTimeout)
		if err != nil {
			t.Fatalf("small after an arrival: %v; ScaledObject: %s", err, scaledObjectConditions(s.ns, sm.soName))
		}
		t.Logf("MEASURED gate, two backends: a person arrived, small 0 -> 1 after %s", smallAt.Sub(arrived).Round(time.Millisecond))
		// Push sends a change at once: had big become active, KEDA would
		// have scaled it within a second; give it a poll and more.
		time.Sleep(pollEvery + time.Second)
		if ch := bg.replicas.changesSince(arrived); len(ch) > 0 {
			t.Fatalf("big changed on an arrival: %v (ScaledObject: %s)", ch, scaledObjectConditions(s.ns, bg.soName))
		}

		body := `{"model":"big:70b","messages":[{"role":"user","content":"Prove it."}]}`
		viaGate := startChat(t, "http://"+gate+"/big/api/chat", body, map[string]string{"X-OpenWebUI-User-Id": "alice"})
		heldAt := waitHeld(t, gate, "big", viaGate)
		bigAt, err := bg.replicas.waitFor(1, viaGate.sent, wakeTimeout)
		if err != nil {
			t.Fatalf("big after a held message: %v; ScaledObject: %s", err, scaledObjectConditions(s.ns, bg.soName))
		}
		t.Logf("MEASURED gate, two backends: a message to big held (seen held %s after it was sent), big 0 -> 1 after %s",
			heldAt.Sub(viaGate.sent).Round(time.Millisecond), bigAt.Sub(viaGate.sent).Round(time.Millisecond))
		if _, err := ob.waitServing(standInStartDelay + wakeTimeout); err != nil {
			t.Fatal(err)
		}
		got := viaGate.wait(t)
		sameAnswer(t, got, startChat(t, "http://"+big+"/api/chat", body, nil).wait(t))
		t.Logf("MEASURED gate, two backends: the message to big was delivered %s after it was sent", got.done.Sub(got.sent).Round(time.Millisecond))
		assertOutcome(t, s.exporters[0], "big", "delivered", 1)

		at, err := bg.replicas.waitFor(0, got.done, bigIdle+gateCooldown+wakeTimeout)
		if err != nil {
			t.Fatalf("big after idle %s + cooldown %s: %v; ScaledObject: %s", bigIdle, gateCooldown, err, scaledObjectConditions(s.ns, bg.soName))
		}
		if gone := at.Sub(got.done); gone < bigIdle+gateCooldown-pollEvery-endSlack {
			t.Fatalf("big scaled to 0 %s after its last message, before idle %s + cooldown %s", gone, bigIdle, gateCooldown)
		}
		t.Logf("MEASURED gate, two backends: big 1 -> 0 %s after its last message (idle %s, cooldownPeriod %s)",
			at.Sub(got.done).Round(time.Millisecond), bigIdle, gateCooldown)
		if ch := sm.replicas.changesSince(smallAt.Add(time.Millisecond)); len(ch) > 0 {
			t.Fatalf("small changed while alice stayed: %v", ch)
		}
		if cur, _ := sm.replicas.current(); cur != 1 {
			t.Fatalf("small has spec.replicas %d while alice is there, want 1", cur)
		}
	})

	t.Run("two exporter replicas: a request held by the one KEDA's stream is not on wakes Ollama", func(t *testing.T) {
		t.Parallel()
		ollama := heldAddr()
		s := newStack(t, triggerPush, gateTuning(), stackOptions{exporters: 2, extraArgs: scenarioArgs,
			gate: &gateOptions{backends: []string{"http://" + ollama}, peers: true}})
		o := followReplicas(t, s.target, ollama, s.replicas, fakeOllamaOptions{
			startDelay: time.Second, models: "tiny:1b", chunks: 3, chunkInterval: 50 * time.Millisecond})
		s.holds(0, pollEvery+time.Second)
		streamed := s.service.busiest()
		if streamed < 0 {
			t.Fatal("KEDA holds no connection to any exporter")
		}
		other := s.exporters[1-streamed]
		body := `{"model":"tiny:1b","messages":[{"role":"user","content":"Hello"}]}`
		viaGate := startChat(t, "http://"+other.gateAddr+"/api/chat", body, nil)
		waitHeld(t, other.gateAddr, "default", viaGate)
		took := s.wake(viaGate.sent, wakeTimeout)
		t.Logf("MEASURED gate, two replicas: a chat held by exporter-%d (KEDA streams from exporter-%d, its peer), spec.replicas 0 -> 1 after %s",
			1-streamed, streamed, took.Round(time.Millisecond))
		if _, err := o.waitServing(time.Second + wakeTimeout); err != nil {
			t.Fatal(err)
		}
		if got := viaGate.wait(t); got.status != http.StatusOK {
			t.Fatalf("the held chat got HTTP %d: %s", got.status, got.body)
		}
	})
}

// holdsAll is holds for every stub Deployment of the stack.
func (s *stack) holdsAll(want int, d time.Duration) {
	s.t.Helper()
	since := time.Now()
	time.Sleep(d)
	for _, st := range s.targets {
		if ch := st.replicas.changesSince(since); len(ch) > 0 {
			s.t.Fatalf("%s: spec.replicas changed while it had to stay %d: %v (ScaledObject: %s)", st.name, want, ch, scaledObjectConditions(s.ns, st.soName))
		}
		if cur, _ := st.replicas.current(); cur != want {
			s.t.Fatalf("%s: spec.replicas is %d, want %d", st.name, cur, want)
		}
	}
}

// chatCall is one request in flight; wait returns its answer.
type chatCall struct {
	sent time.Time
	done chan chatAnswer
}

// chatAnswer is a whole answer and when its parts came.
type chatAnswer struct {
	sent, firstByte, done time.Time
	status                int
	header                http.Header
	body                  []byte
	err                   error
}

// chatTimeout bounds one chat: a hold, a wake-up and a stream, with room.
const chatTimeout = 3 * time.Minute

// startChat POSTs body to url in the background, as Open WebUI would send
// a chat to Ollama (no client timeout of its own), and records when the
// first byte and the end of the answer came.
func startChat(t *testing.T, url, body string, header map[string]string) *chatCall {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chatTimeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c := &chatCall{sent: time.Now(), done: make(chan chatAnswer, 1)}
	go func() {
		defer cancel()
		a := chatAnswer{sent: c.sent}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			a.err = err
			c.done <- a
			return
		}
		defer resp.Body.Close()
		a.status, a.header = resp.StatusCode, resp.Header
		br := bufio.NewReader(resp.Body)
		if _, err := br.Peek(1); err == nil {
			a.firstByte = time.Now()
		}
		a.body, a.err = io.ReadAll(br)
		a.done = time.Now()
		if a.firstByte.IsZero() {
			a.firstByte = a.done
		}
		c.done <- a
	}()
	return c
}

// answered reports whether the answer has come (without taking it).
func (c *chatCall) answered() bool { return len(c.done) > 0 }

func (c *chatCall) wait(t *testing.T) chatAnswer {
	t.Helper()
	a := <-c.done
	c.done <- a // for a later wait
	if a.err != nil {
		t.Fatalf("chat sent at %s: %v", c.sent.Format(time.StampMilli), a.err)
	}
	return a
}

// sameAnswer checks that the answer through the gate is the backend's own,
// byte for byte: status, content type and body.
func sameAnswer(t *testing.T, viaGate, direct chatAnswer) {
	t.Helper()
	if viaGate.status != http.StatusOK || direct.status != http.StatusOK {
		t.Fatalf("through the gate HTTP %d (%s), directly HTTP %d (%s)", viaGate.status, viaGate.body, direct.status, direct.body)
	}
	if g, d := viaGate.header.Get("Content-Type"), direct.header.Get("Content-Type"); g != d {
		t.Fatalf("Content-Type through the gate %q, directly %q", g, d)
	}
	if len(direct.body) == 0 {
		t.Fatal("the stand-in's direct answer is empty: nothing to compare")
	}
	if !bytes.Equal(viaGate.body, direct.body) {
		t.Fatalf("the answer through the gate differs from the stand-in's direct answer:\ngate   (%d bytes): %q\ndirect (%d bytes): %q",
			len(viaGate.body), viaGate.body, len(direct.body), direct.body)
	}
	t.Logf("the answer through the gate is the stand-in's, byte for byte (%d bytes, %d lines)", len(direct.body), bytes.Count(direct.body, []byte("\n")))
}

// gateBackend is one backend of GET /_gate/status (gate-spec.md).
type gateBackend struct {
	Name     string        `json:"name"`
	State    string        `json:"state"`
	Held     int           `json:"held"`
	InFlight int           `json:"in_flight"`
	Reason   string        `json:"reason"`
	Replicas []gateReplica `json:"replicas"` // a pool's (pods_test.go)
}

func gateStatus(gateAddr string) (map[string]gateBackend, error) {
	r, err := httpGet("http://" + gateAddr + "/_gate/status")
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK {
		return nil, fmt.Errorf("GET /_gate/status: HTTP %d %s", r.status, r.body)
	}
	var st struct {
		Backends []gateBackend `json:"backends"`
	}
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		return nil, fmt.Errorf("GET /_gate/status: %w: %s", err, r.body)
	}
	out := map[string]gateBackend{}
	for _, b := range st.Backends {
		out[b.Name] = b
	}
	return out, nil
}

// waitHeld waits until the gate reports the request c held for backend,
// and returns when it saw it. The request must not have been answered
// first: the backend was asleep.
func waitHeld(t *testing.T, gateAddr, backend string, c *chatCall) time.Time {
	t.Helper()
	var last gateBackend
	var at time.Time
	err := poll(10*time.Second, 5*time.Millisecond, func() (bool, error) {
		if c.answered() {
			a := <-c.done
			c.done <- a
			return false, fmt.Errorf("answered (HTTP %d %q, err %v) before the gate reported it held", a.status, a.body, a.err)
		}
		st, err := gateStatus(gateAddr)
		if err != nil {
			return false, err
		}
		last = st[backend]
		if last.Held > 0 {
			at = time.Now()
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("the request to backend %s was not held: %v (last status %+v)", backend, err, last)
	}
	t.Logf("gate: backend %s %s (%s), %d held", backend, last.State, last.Reason, last.Held)
	return at
}

// assertOutcome checks openwebui_gate_requests_total{backend,outcome} on
// the exporter's /metrics.
func assertOutcome(t *testing.T, e *exporter, backend, outcome string, want float64) {
	t.Helper()
	r, err := httpGet("http://" + e.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	got, ok := sample(r.body, "openwebui_gate_requests_total", map[string]string{"backend": backend, "outcome": outcome})
	if !ok || got != want {
		t.Fatalf("openwebui_gate_requests_total{backend=%q,outcome=%q} = %v (found %v), want %v", backend, outcome, got, ok, want)
	}
}

// sample finds the value of the series name{labels...} in a text
// exposition (labels given must match; others may be there too).
func sample(exposition, name string, labels map[string]string) (float64, bool) {
	for _, line := range strings.Split(exposition, "\n") {
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		ls, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		matched := 0
		for _, kv := range strings.Split(ls, ",") {
			k, v, _ := strings.Cut(kv, "=")
			if want, ok := labels[k]; ok && strconv.Quote(want) == v {
				matched++
			}
		}
		if matched == len(labels) {
			f, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
			return f, err == nil
		}
	}
	return 0, false
}
