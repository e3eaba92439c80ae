package gate

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A held request that waits for a release slot while its backend is up is
// not timed out as "did not become ready": the backend is up, the request
// waits its turn (issue 23, item 4).
func TestWaitingForAReleaseSlotIsNotATimeout(t *testing.T) {
	const hold = 2 * time.Second
	var started atomic.Int32
	unblock := make(chan struct{})
	sb := newSleepyBackend(t, withVersion(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		started.Add(1)
		<-unblock // a slow generation: every slot stays taken
		_, _ = w.Write([]byte(`{"done":true}`))
	})))
	t.Cleanup(func() {
		select {
		case <-unblock:
		default:
			close(unblock)
		}
	})
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())},
		HoldTimeout: hold, ReleaseConcurrency: 1})
	eventually(t, "the backend seen asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })

	first := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+"/api/chat", strings.NewReader(`{"n":1}`), nil)
	eventually(t, "the first request held", func() bool { return queued(g.Gate, DefaultName) == 1 })
	arrived := time.Now()
	second := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+"/api/chat", strings.NewReader(`{"n":2}`), nil)
	eventually(t, "the second request held", func() bool { return queued(g.Gate, DefaultName) == 2 })

	sb.serve()
	eventually(t, "the first request at the backend", func() bool { return started.Load() == 1 })
	// Past the second request's hold timeout, all of it with the backend up
	// and the one release slot taken by the first.
	time.Sleep(time.Until(arrived.Add(2 * hold)))
	if second.ended() {
		t.Fatalf("the request waiting for a release slot ended while its backend was up: %d %q", second.status, second.body)
	}
	close(unblock)
	for i, c := range []*heldClient{first, second} {
		if c.wait(t); c.err != nil || c.status != http.StatusOK || c.body != `{"done":true}` {
			t.Errorf("request %d: %d %q %v, want it delivered", i+1, c.status, c.body, c.err)
		}
	}
	if n := stats(g.Gate, DefaultName).Requests[OutcomeHoldTimeout]; n != 0 {
		t.Errorf("%d hold timeouts counted, want 0", n)
	}
}

// The hold timeout still ends a wait once the backend is gone again: a
// request that waited for a release slot while the backend was up, then
// finds it asleep, gets its 504 a hold timeout after the backend went, not
// never.
func TestAHoldTimeoutStillEndsAWaitOnceTheBackendIsGone(t *testing.T) {
	const hold = time.Second
	var started atomic.Int32
	unblock := make(chan struct{})
	sb := newSleepyBackend(t, withVersion(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		started.Add(1)
		<-unblock
	})))
	t.Cleanup(func() { close(unblock) }) // before the backend's own cleanup, which waits for its handlers
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())},
		HoldTimeout: hold, ReleaseConcurrency: 1})
	eventually(t, "the backend seen asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })
	first := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+"/api/chat", strings.NewReader(`{"n":1}`), nil)
	eventually(t, "the first request held", func() bool { return queued(g.Gate, DefaultName) == 1 })
	second := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+"/api/chat", strings.NewReader(`{"n":2}`), nil)
	eventually(t, "the second request held", func() bool { return queued(g.Gate, DefaultName) == 2 })
	sb.serve()
	eventually(t, "the first request at the backend", func() bool { return started.Load() == 1 })

	sb.stop() // gone for good, the first request cut at the backend
	first.wait(t)
	if second.wait(t); second.status != http.StatusGatewayTimeout {
		t.Fatalf("the waiting request once the backend was gone: %d %q %v, want a 504", second.status, second.body, second.err)
	}
	if msg := errorMessage(t, second.body, false); !strings.Contains(msg, "did not become ready within 1s") || !strings.Contains(msg, "it was asleep") {
		t.Errorf("message %q, want it to say the backend did not become ready and was asleep", msg)
	}
	if n := started.Load(); n != 1 {
		t.Errorf("the backend saw %d requests, want only the first", n)
	}
}
