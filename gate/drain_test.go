package gate

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// While a gate drains it is not ready (/_gate/status answers 503) but serves
// on: its demand stays on /_gate/demand and in Demand, what it holds is
// delivered once the backend is up, and WaitDrained returns when nothing is
// left (issue 23, item 1).
func TestADrainingGateDeliversWhatItHolds(t *testing.T) {
	sb := newSleepyBackend(t, withVersion(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"done":true}`))
	})))
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}})
	eventually(t, "the backend seen asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })
	held := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+"/api/chat", strings.NewReader(`{}`), nil)
	eventually(t, "the request held", func() bool { return queued(g.Gate, DefaultName) == 1 })

	if code, _, _ := do(t, "GET", g.url+"/_gate/status", nil, nil); code != http.StatusOK {
		t.Errorf("/_gate/status before the drain: %d, want 200", code)
	}
	g.Drain()
	code, _, body := do(t, "GET", g.url+"/_gate/status", nil, nil)
	var st StatusReport
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusServiceUnavailable || err != nil || !st.Draining || st.Backends[0].Held != 1 {
		t.Errorf("/_gate/status while draining: %d %s, want 503 with draining true and the held request", code, body)
	}
	_, _, body = do(t, "GET", g.url+"/_gate/demand", nil, nil)
	var rep DemandReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil || rep.Backends[DefaultName].Held != 1 {
		t.Errorf("/_gate/demand while draining: %s, want the held request (the peers count it)", body)
	}
	if d := mustDemand(t, g.Gate, DefaultName); d.Held != 1 {
		t.Errorf("Demand while draining: %+v, want Held 1 (KEDA counts it)", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := g.WaitDrained(ctx); err == nil {
		t.Error("WaitDrained returned while a request was held")
	}

	sb.serve()
	if held.wait(t); held.err != nil || held.status != http.StatusOK || held.body != `{"done":true}` {
		t.Errorf("the request held at the drain: %d %q %v, want it delivered", held.status, held.body, held.err)
	}
	if err := g.WaitDrained(context.Background()); err != nil {
		t.Errorf("WaitDrained: %v", err)
	}
	if h, f := g.Pending(); h+f != 0 {
		t.Errorf("Pending after the drain: %d held, %d in flight", h, f)
	}
}

// EndDrain answers what the drain could not deliver, in the backend's own
// error shape: a held request gets a 503 (not sent), a request sent to a
// backend that has not answered yet a 504; both count as shutdown.
func TestEndDrainAnswersWhatIsLeft(t *testing.T) {
	sb := newSleepyBackend(t, withVersion(http.NotFoundHandler()))
	var reached atomic.Int32
	release := make(chan struct{})
	slow := httptest.NewServer(withVersion(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		select { // a model that takes its time to load: no header yet
		case <-r.Context().Done():
		case <-release:
		}
	})))
	t.Cleanup(func() { close(release); slow.Close() })
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{
		backendURL(t, "sleepy="+sb.url()), backendURL(t, "slow="+slow.URL)}})
	eventually(t, "sleepy seen asleep and slow up", func() bool {
		return stats(g.Gate, "sleepy").State == StateAsleep && stats(g.Gate, "slow").State == StateUp
	})
	ollama := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+"/sleepy/api/chat", strings.NewReader(`{}`), nil)
	openai := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+"/sleepy/v1/chat/completions", strings.NewReader(`{}`), nil)
	sent := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+"/slow/api/chat", strings.NewReader(`{}`), nil)
	eventually(t, "two held, one at the backend", func() bool { return queued(g.Gate, "sleepy") == 2 && reached.Load() == 1 })

	g.Drain()
	g.EndDrain()
	for _, tc := range []struct {
		name   string
		c      *heldClient
		status int
		openai bool
		want   string
	}{
		{"held, Ollama's shape", ollama, http.StatusServiceUnavailable, false, "the request was not sent"},
		{"held, OpenAI's shape", openai, http.StatusServiceUnavailable, true, "the request was not sent"},
		{"sent, no answer yet", sent, http.StatusGatewayTimeout, false, "the request may have reached it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.c.wait(t); tc.c.err != nil || tc.c.status != tc.status {
				t.Fatalf("%d %q %v, want %d", tc.c.status, tc.c.body, tc.c.err, tc.status)
			}
			if msg := errorMessage(t, tc.c.body, tc.openai); !strings.Contains(msg, "shutting down (--gate.drain-timeout)") || !strings.Contains(msg, tc.want) {
				t.Errorf("message %q, want it to say the gate is shutting down and %q", msg, tc.want)
			}
		})
	}
	waitCount(t, g.Gate, "sleepy", OutcomeShutdown, 2)
	waitCount(t, g.Gate, "slow", OutcomeShutdown, 1)
	// A request held after the end of the drain is answered at once.
	if code, hdr, _ := do(t, "POST", g.url+"/sleepy/api/chat", strings.NewReader(`{}`), nil); code != http.StatusServiceUnavailable || hdr.Get("X-Gate-Error") != codeShuttingDown {
		t.Errorf("a request held after EndDrain: %d %s, want 503 %s", code, hdr.Get("X-Gate-Error"), codeShuttingDown)
	}
}

// A list request waiting to learn (a page load while the backend sleeps) is
// something a drain waits for; once it is answered, by the backend that woke
// or with the 503 at the end of the learning wait, WaitDrained returns at
// once, not at the next unrelated change or at the drain's deadline (it once
// waited for that: the end of the wait changed no demand, so it signalled
// nothing).
func TestADrainEndsWhenTheLearningListIsAnswered(t *testing.T) {
	for _, tc := range []struct {
		name      string
		learnWait time.Duration
		wake      bool
		want      int
	}{
		{"the backend wakes", time.Minute, true, http.StatusOK},
		{"the learning wait runs out", 2 * time.Second, false, http.StatusServiceUnavailable}, // long enough to be seen waiting
	} {
		t.Run(tc.name, func(t *testing.T) {
			sb := newSleepyBackend(t, ollamaLike(nil, nil))
			g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}},
				func(g *Gate) { g.learnWait = tc.learnWait })
			eventually(t, "asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })
			list := sendAsync(context.Background(), http.DefaultClient, "GET", g.url+"/api/tags", nil, nil)
			eventually(t, "the list waiting to learn", func() bool { _, f := g.Pending(); return f == 1 })

			g.Drain()
			drained := make(chan error, 1)
			go func() {
				// Far beyond the answer: an error here is a drain that missed it.
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				drained <- g.WaitDrained(ctx)
			}()
			if tc.wake {
				sb.serve()
			}
			if list.wait(t); list.err != nil || list.status != tc.want {
				t.Fatalf("the list: %d %v, want %d", list.status, list.err, tc.want)
			}
			if err := <-drained; err != nil {
				t.Errorf("WaitDrained after the list was answered: %v", err)
			}
		})
	}
}
