package gate

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
)

// heldReplica is a stand-in replica whose chats start (reported on started)
// and then wait until their own release, one per chat in the order they
// started. With slots, it has Ollama's runner slots: a chat waits, with
// nothing sent, until one is free, then sends its header with its first
// token and a token every 50 ms until its release.
type heldReplica struct {
	fake    http.Handler
	addr    string
	started chan string
	slots   chan struct{} // nil: every chat starts at once, and sends nothing until its release
	mu      sync.Mutex
	release []chan struct{}
	open    bool // finishAll: every chat, now and later, ends at once
}

// addHeldReplicas serves heldReplicas at r1.test:11434 and r2.test:11434, of
// these models (tiny:1b when none), each with slots runner slots (0: none).
func addHeldReplicas(n *replicaNet, started chan string, slots int, models ...string) map[string]*heldReplica {
	reps := map[string]*heldReplica{}
	for _, a := range []string{"r1.test:11434", "r2.test:11434"} {
		h := &heldReplica{fake: fakeollama.New(fakeollama.Config{Models: models, ChunkInterval: -1}), addr: a, started: started}
		if slots > 0 {
			h.slots = make(chan struct{}, slots)
		}
		reps[a] = h
		n.add(a, h)
	}
	return reps
}

// latePool is a gate with one pool of two heldReplicas (slots as for
// addHeldReplicas), parallel=1 and bind=late, and the chats sent through it.
// Its cleanup ends every chat; a chat still waiting in the gate 10 s later
// (the test failed) is ended by stopping the gate.
type latePool struct {
	g       *testGate
	reps    map[string]*heldReplica
	started chan string
	wg      sync.WaitGroup
}

func startLatePool(t *testing.T, slots int, tune func(*Gate), models ...string) *latePool {
	t.Helper()
	n := newReplicaNet(t)
	lp := &latePool{started: make(chan string, 10)}
	lp.reps = addHeldReplicas(n, lp.started, slots, models...)
	lp.g = startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434,parallel=1,bind=late", "pool=http://r2.test:11434"), Transport: n.transport()}, tune)
	waitReplicas(t, lp.g, "pool", 2)
	t.Cleanup(func() {
		for _, h := range lp.reps {
			h.finishAll()
		}
		ended := make(chan struct{})
		go func() {
			lp.wg.Wait()
			close(ended)
		}()
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			lp.g.stop()
			<-ended
		}
	})
	return lp
}

// waitInGate waits until one request of the pool "pool" waits in the gate
// for a slot.
func waitInGate(t *testing.T, g *Gate, what string) {
	t.Helper()
	eventually(t, what, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.byName["pool"].pool.waiting.Len() == 1
	})
}

// next is the replica where the next chat started, within 10 s.
func (lp *latePool) next(t *testing.T, what string) string {
	t.Helper()
	select {
	case at := <-lp.started:
		return at
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no chat started on a replica within 10 s", what)
		return ""
	}
}

// send sends a streaming chat of model and conversation id, in the
// background.
func (lp *latePool) send(t *testing.T, model, id string) {
	lp.wg.Add(1)
	go func() {
		defer lp.wg.Done()
		body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}],"stream":true}`, model, id)
		if status, _, out := do(t, http.MethodPost, lp.g.url+"/pool/api/chat", strings.NewReader(body), http.Header{ChatHeader: {id}}); status != http.StatusOK {
			t.Errorf("chat %s: HTTP %d: %s", id, status, out)
		}
	}()
}

func (h *heldReplica) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		h.fake.ServeHTTP(w, r)
		return
	}
	if h.slots != nil {
		select {
		case h.slots <- struct{}{}:
		case <-r.Context().Done():
			return
		}
		defer func() { <-h.slots }()
	}
	done := make(chan struct{})
	h.mu.Lock()
	if h.open {
		close(done)
	} else {
		h.release = append(h.release, done)
	}
	h.mu.Unlock()
	if h.slots != nil {
		w.Header().Set("Content-Type", "application/x-ndjson")
		fmt.Fprintln(w, `{"model":"tiny:1b","message":{"role":"assistant","content":"hi"},"done":false}`)
		w.(http.Flusher).Flush()
	}
	h.started <- h.addr
	var tokens <-chan time.Time // nil without slots: nothing is sent until the release
	if h.slots != nil {
		ticker := time.NewTicker(50 * time.Millisecond)
		defer ticker.Stop()
		tokens = ticker.C
	}
	for held := true; held; {
		select {
		case <-done:
			held = false
		case <-r.Context().Done():
			return
		case <-tokens:
			fmt.Fprintln(w, `{"model":"tiny:1b","message":{"role":"assistant","content":"hi"},"done":false}`)
			w.(http.Flusher).Flush()
		}
	}
	if h.slots != nil {
		fmt.Fprintln(w, `{"model":"tiny:1b","message":{"role":"assistant","content":""},"done":true}`)
		return
	}
	h.fake.ServeHTTP(w, r)
}

// finish ends the oldest chat still running on h.
func (h *heldReplica) finish() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.release[0])
	h.release = h.release[1:]
}

// finishAll ends every chat on h, now and later.
func (h *heldReplica) finishAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.release {
		close(c)
	}
	h.release, h.open = nil, true
}

// A pool of two replicas of one answer at a time, both busy: a third chat
// goes to a replica at once with bind=arrival (and waits in its queue), and
// waits in the gate with bind=late until one of them finishes, then goes to
// the replica that finished.
func TestLateBinding(t *testing.T) {
	for _, tc := range []struct {
		bind      string
		waitsHere bool // the third chat waits in the gate
	}{
		{"arrival", false},
		{"late", true},
	} {
		t.Run("bind="+tc.bind, func(t *testing.T) {
			n := newReplicaNet(t)
			started := make(chan string, 10)
			reps := addHeldReplicas(n, started, 0)
			g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434,parallel=1,bind="+tc.bind, "pool=http://r2.test:11434"), Transport: n.transport()})
			waitReplicas(t, g, "pool", 2)
			var wg sync.WaitGroup
			send := func(i int) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					chat(t, g.url, "tiny:1b", fmt.Sprintf("c%d", i), "", "hi")
				}()
			}
			t.Cleanup(func() {
				for _, h := range reps {
					h.finishAll()
				}
				wg.Wait()
			})
			send(0)
			first := <-started
			send(1)
			if second := <-started; second == first {
				t.Fatalf("two chats on %s while the other replica was free", first)
			}
			send(2)
			if tc.waitsHere {
				waitInGate(t, g.Gate, "the third chat waiting in the gate")
				select {
				case at := <-started:
					t.Fatalf("bind=late: the third chat reached %s while both replicas were busy", at)
				default:
				}
				reps[first].finish()
				if at := <-started; at != first {
					t.Errorf("bind=late: the third chat went to %s, want %s, the replica that finished first", at, first)
				}
			} else {
				<-started // at once, into a busy replica's queue
			}
			if st := stats(g.Gate, "pool"); st.InFlight < 2 {
				t.Errorf("in flight %d, want the running chats counted", st.InFlight)
			}
		})
	}
}

// A chat waiting in the gate whose client goes away leaves nothing behind:
// not in the queue, not in flight, and nothing reaches a replica.
func TestLateBindingClientGone(t *testing.T) {
	n := newReplicaNet(t)
	started := make(chan string, 10)
	reps := addHeldReplicas(n, started, 0)
	g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434,parallel=1,bind=late", "pool=http://r2.test:11434"), Transport: n.transport()},
		func(g *Gate) { g.probeIdle = time.Hour })
	waitReplicas(t, g, "pool", 2)
	done := make(chan struct{}, 2)
	for i := range 2 {
		go func() {
			chat(t, g.url, "tiny:1b", fmt.Sprintf("busy%d", i), "", "hi")
			done <- struct{}{}
		}()
		<-started
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.url+"/pool/api/chat",
		strings.NewReader(`{"model":"tiny:1b","messages":[{"role":"user","content":"hi"}],"stream":false}`))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	waiting := func() int {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.byName["pool"].pool.waiting.Len()
	}
	eventually(t, "the chat waiting in the gate", func() bool { return waiting() == 1 })
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("the cancelled chat got an answer")
	}
	eventually(t, "the queue empty", func() bool { return waiting() == 0 })
	for _, h := range reps {
		h.finishAll()
	}
	<-done
	<-done
	settle(t, g, "pool")
	select {
	case at := <-started:
		t.Errorf("the cancelled chat reached %s", at)
	default:
	}
	for _, r := range stats(g.Gate, "pool").Replicas {
		if r.InFlight != 0 {
			t.Errorf("replica %s: %d in flight, want 0", r.ID, r.InFlight)
		}
	}
}

// A chat waits in the gate at most lateBindWait: then it is placed as with
// bind=arrival (a parallel= below the replicas' real one must not idle them).
func TestLateBindingWaitsAtMost(t *testing.T) {
	lp := startLatePool(t, 0, func(g *Gate) { g.lateBindWait = 50 * time.Millisecond })
	for i := range 3 {
		lp.send(t, "tiny:1b", fmt.Sprintf("c%d", i))
		lp.next(t, "chat "+strconv.Itoa(i)) // the third too, without any answer ending: its wait ran out
	}
}

// A request for a model that no replica has loaded takes a free replica at
// once, even one that has another model loaded: a load is due anyway, and
// waiting for a replica with its model would wait for nothing.
func TestLateBindingModelLoadedNowhereTakesAFreeReplica(t *testing.T) {
	n := newReplicaNet(t)
	started := make(chan string, 10)
	reps := addHeldReplicas(n, started, 0, "a:1b", "b:1b", "c:1b")
	g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434,parallel=1,bind=late", "pool=http://r2.test:11434"), Transport: n.transport()},
		func(g *Gate) { g.lateBindWait = time.Hour })
	var wg sync.WaitGroup
	t.Cleanup(func() {
		for _, h := range reps {
			h.finishAll()
		}
		wg.Wait()
	})
	// b loaded on r2, as its /api/ps says.
	go func() {
		n.mu.Lock()
		url := n.servers["r2.test:11434"].URL
		n.mu.Unlock()
		do(t, http.MethodPost, url+"/api/generate", strings.NewReader(`{"model":"b:1b","prompt":"","stream":false}`), nil)
	}()
	<-started
	reps["r2.test:11434"].finish()
	waitReplicas(t, g, "pool", 2)
	waitLoaded(t, g, "pool", "b:1b", 1)
	send := func(model, id string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			chat(t, g.url, model, id, "", "hi")
		}()
	}
	send("a:1b", "first") // r1: free and empty beats r2, where a would unload b
	if at := <-started; at != "r1.test:11434" {
		t.Fatalf("a:1b went to %s, want r1.test:11434 (r2 has b:1b loaded)", at)
	}
	send("c:1b", "second") // loaded nowhere: r2 is free, so at once
	if at := <-started; at != "r2.test:11434" {
		t.Errorf("c:1b went to %s, want the free r2.test:11434", at)
	}
}

// Two gates in front of one pool: a chat waiting in this gate for a slot
// that a peer's answer holds goes as soon as the peer reports that answer
// ended, not at this gate's next probe of the replicas.
func TestLateBindingPeerSlotFreed(t *testing.T) {
	lp := startLatePool(t, 0, func(g *Gate) {
		g.probeIdle, g.lateBindWait = time.Hour, time.Hour // the first probe only
		g.peerTTL = time.Hour                              // the peer's report counts however slow the machine
	})
	g := lp.g
	// peer reports the peer's answers running on these replicas.
	peer := func(busy ...string) {
		d := BackendDemand{InFlight: len(busy), Replicas: map[string]ReplicaDemand{}}
		for _, id := range busy {
			d.Replicas[id] = ReplicaDemand{InFlight: 1}
		}
		g.mergePeers([]*DemandReport{{Instance: "peer", Backends: map[string]BackendDemand{"pool": d}}})
	}
	peer("r1.test:11434", "r2.test:11434") // the peer streams both replicas' one answer
	lp.send(t, "tiny:1b", "c0")
	waitInGate(t, g.Gate, "the chat waiting in the gate")
	peer("r2.test:11434") // the peer's answer on r1 ended
	select {
	case at := <-lp.started:
		if at != "r1.test:11434" {
			t.Errorf("the chat went to %s, want r1.test:11434, whose slot the peer freed", at)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the peer's answer ended, and the chat still waits in the gate 10 s later")
	}
}

// A chat waiting in the gate for the replica that has its model loaded goes to
// another replica as soon as that one is drained, here or by a peer gate
// (whose drain this gate learns from its report), not at the next probe or
// at the end of its wait: the drained replica will never free a slot for it.
func TestLateBindingWaiterLeavesADrainedReplica(t *testing.T) {
	for _, by := range []string{"this gate", "a peer"} {
		t.Run("drained by "+by, func(t *testing.T) {
			lp := startLatePool(t, 0, func(g *Gate) {
				g.probeIdle, g.lateBindWait = time.Hour, time.Hour // the first probe only
				g.peerTTL = time.Hour                              // the peer's report counts however slow the machine
			}, "a:1b", "b:1b")
			g := lp.g
			lp.send(t, "a:1b", "c0")
			busy := lp.next(t, "a:1b")
			lp.send(t, "b:1b", "c1")
			other := lp.next(t, "b:1b")
			if other == busy {
				t.Fatalf("both chats went to %s", busy)
			}
			lp.reps[other].finish() // other is free, with b:1b loaded
			eventually(t, "the b:1b chat ended", func() bool { _, f := g.Pending(); return f == 1 })

			lp.send(t, "a:1b", "c2") // waits for busy, which has a:1b: other would unload b:1b
			waitInGate(t, g.Gate, "the chat waiting in the gate")
			if by == "this gate" {
				g.drainReplica(busy)
			} else {
				g.mergePeers([]*DemandReport{{Instance: "peer", Backends: map[string]BackendDemand{
					"pool": {Replicas: map[string]ReplicaDemand{busy: {Draining: true}}}}}})
			}
			if at := lp.next(t, "after the drain"); at != other {
				t.Errorf("the chat went to %s, want %s (the replica that has a:1b is drained)", at, other)
			}
		})
	}
}

// A chat still waiting in the gate for a slot when this gate's drain ends
// gets the answer of a held request: 503 gate_shutting_down, "not sent, try
// again" (nothing of it reached a replica), not a cut connection or a 504;
// the chats the drain cuts on the replicas get their 504.
func TestLateBindingWaiterAtTheDrainsEnd(t *testing.T) {
	lp := startLatePool(t, 0, func(g *Gate) { g.probeIdle, g.lateBindWait = time.Hour, time.Hour }, "a:1b")
	g := lp.g
	chat := func(id string) *heldClient {
		return sendAsync(context.Background(), http.DefaultClient, http.MethodPost, g.url+"/pool/api/chat",
			strings.NewReader(`{"model":"a:1b","messages":[{"role":"user","content":"`+id+`"}],"stream":true}`), nil)
	}
	running := []*heldClient{chat("c0"), chat("c1")}
	lp.next(t, "c0")
	lp.next(t, "c1") // both replicas busy
	waiting := chat("c2")
	waitInGate(t, g.Gate, "the chat waiting in the gate")
	g.Drain()
	g.EndDrain()
	if waiting.wait(t); waiting.err != nil || waiting.status != http.StatusServiceUnavailable || !strings.Contains(waiting.body, "the request was not sent, try again") {
		t.Errorf("the waiting chat at the drain's end: %d %q %v, want 503, not sent", waiting.status, waiting.body, waiting.err)
	}
	for _, c := range running {
		if c.wait(t); c.status != http.StatusGatewayTimeout {
			t.Errorf("a chat the drain cut: %d %q %v, want 504", c.status, c.body, c.err)
		}
	}
	select {
	case at := <-lp.started:
		t.Errorf("the waiting chat reached %s", at)
	default:
	}
	waitCount(t, g.Gate, "pool", OutcomeShutdown, 3)
}
