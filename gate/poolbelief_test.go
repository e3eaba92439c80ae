package gate

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
)

// Between two readings of /api/ps the gate believes a replica holds what it
// routed there, at most max-loaded models: a request for another model
// unloads the least recently routed one in the belief, as the replica
// itself does. Without the bound, a replica that was sent b still counted as
// holding a, and a's next conversations went there half of the time, to
// load a back.
func TestPoolBeliefHoldsMaxLoaded(t *testing.T) {
	for _, tc := range []struct {
		name      string
		maxLoaded int
		wantOnB   bool // whether a's conversations may still go to the replica that was sent b
	}{
		{"max-loaded 1 (the default): sending b there unloads a", 0, false},
		{"max-loaded 2: a stays beside b", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newReplicaNet(t)
			addrs := []string{"r1.test:11434", "r2.test:11434"}
			for _, a := range addrs {
				n.add(a, nil, "a:1b", "b:1b")
				// Both have a loaded before the gate's first (and, here, only)
				// reading of /api/ps.
				do(t, http.MethodPost, n.servers[a].URL+"/api/generate", strings.NewReader(`{"model":"a:1b","prompt":"","stream":false}`), nil)
			}
			bcs := poolConfig(t, "pool=http://r1.test:11434", "pool=http://r2.test:11434")
			bcs[0].Warm = Warm{Mode: WarmOff, MaxLoaded: tc.maxLoaded}
			g := startGate(t, Config{Backends: bcs, Transport: n.transport()},
				func(g *Gate) { g.probeIdle = time.Hour }) // only the first probe: what the gate routed is all it learns
			waitReplicas(t, g, "pool", 2)
			waitLoaded(t, g, "pool", "a:1b", 2)
			before := map[string]int{}
			for _, a := range addrs {
				before[a] = n.answers(a)
			}
			chat(t, g.url, "b:1b", "b-chat", "", "hi")
			settle(t, g, "pool")
			onB := ""
			for _, a := range addrs {
				if n.answers(a) > before[a] {
					onB = a
				}
				before[a] = n.answers(a)
			}
			for i := range 8 {
				chat(t, g.url, "a:1b", fmt.Sprintf("a-chat-%d", i), "", "hi")
				settle(t, g, "pool")
			}
			aOnB := n.answers(onB) - before[onB]
			if got := aOnB > 0; got != tc.wantOnB {
				t.Errorf("b went to %s, then %d of 8 new conversations of a went there too; want some there: %v", onB, aOnB, tc.wantOnB)
			}
		})
	}
}

// heldChats is a stand-in replica whose chats with a chat id "hold-..." wait
// (before the stand-in sees them, as a request queued in Ollama behind a
// running answer) until release is closed; it counts its /api/ps readings and
// the chats it answered.
type heldChats struct {
	fake     http.Handler
	addr     string
	started  chan string
	release  chan struct{}
	readings atomic.Int64
	answered atomic.Int64
}

func (h *heldChats) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/api/ps" {
		h.readings.Add(1)
	}
	if r.Method == http.MethodPost && r.URL.Path == "/api/chat" {
		if strings.HasPrefix(r.Header.Get(ChatHeader), "hold-") {
			h.started <- h.addr
			<-h.release
		} else {
			h.answered.Add(1)
		}
	}
	h.fake.ServeHTTP(w, r)
}

// A replica's /api/ps lists what it has loaded now, not what the requests
// waiting there will load: a reading must not make the gate forget them.
// Here b waits on one replica that still lists a; a's new conversations go
// to the other, which has a and a free slot. Before, each reading made the
// replica with b count as holding a again, and some of a's conversations went
// there, to load a back after b.
func TestPoolBeliefKeepsWaitingRequests(t *testing.T) {
	n := newReplicaNet(t)
	started, release := make(chan string, 4), make(chan struct{})
	addrs := []string{"r1.test:11434", "r2.test:11434"}
	reps := map[string]*heldChats{}
	for _, a := range addrs {
		fake := fakeollama.New(fakeollama.Config{Models: []string{"a:1b", "b:1b"}, ChunkInterval: -1})
		// a is loaded before the gate starts.
		fake.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/api/generate", strings.NewReader(`{"model":"a:1b","prompt":"","stream":false}`)))
		reps[a] = &heldChats{fake: fake, addr: a, started: started, release: release}
		n.add(a, reps[a])
	}
	g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434,parallel=2", "pool=http://r2.test:11434"), Transport: n.transport()})
	waitReplicas(t, g, "pool", 2)
	waitLoaded(t, g, "pool", "a:1b", 2)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(release)
	hold := func(model, id string) string {
		wg.Add(1)
		go func() {
			defer wg.Done()
			chat(t, g.url, model, id, "", "hi")
		}()
		return <-started
	}
	withB := hold("b:1b", "hold-b")
	// One answer of a runs on the other replica, so that both have one slot
	// busy and one free.
	if withA := hold("a:1b", "hold-a"); withA == withB {
		t.Fatalf("a's first conversation went to %s, where b waits; want the other replica", withA)
	}
	// Two readings of both replicas' /api/ps since: both list a.
	before := map[string]int64{}
	for _, a := range addrs {
		before[a] = reps[a].readings.Load()
	}
	eventually(t, "two readings of /api/ps", func() bool {
		for _, a := range addrs {
			if reps[a].readings.Load() < before[a]+2 {
				return false
			}
		}
		return true
	})
	for i := range 8 {
		chat(t, g.url, "a:1b", fmt.Sprintf("a-chat-%d", i), "", "hi")
		settle2(t, g, "pool")
	}
	if got := reps[withB].answered.Load(); got != 0 {
		t.Errorf("b waits on %s, yet %d of 8 new conversations of a went there; want none (the other replica has a and a free slot)", withB, got)
	}
}

// settle2 waits until the pool counts only the two held requests in flight.
func settle2(t testing.TB, g *testGate, name string) {
	t.Helper()
	eventually(t, "two in flight", func() bool { return stats(g.Gate, name).InFlight == 2 })
}

// Ollama names a model without a tag and the same with ":latest" alike,
// whichever of the two a request or a listing used.
func TestSameModel(t *testing.T) {
	for _, tc := range []struct {
		model, name string
		want        bool
	}{
		{"llama3", "llama3", true},
		{"llama3", "llama3:latest", true},
		{"llama3:latest", "llama3", true},
		{"llama3:8b", "llama3", false},
		{"llama3", "llama3:8b", false},
		{"llama3:latest", "llama3:latest", true},
	} {
		if got := sameModel(tc.model, tc.name); got != tc.want {
			t.Errorf("sameModel(%q, %q) = %v, want %v", tc.model, tc.name, got, tc.want)
		}
	}
}
