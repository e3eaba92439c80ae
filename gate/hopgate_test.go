package gate

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// standInHop is a proxy in front of a backend, as a mesh sidecar or an
// ingress is: it accepts every connection, passes requests on while the
// backend serves, and answers with its own "no backend" answer while the
// backend sleeps.
type standInHop struct {
	srv     *httptest.Server
	up      atomic.Bool
	asleep  func(w http.ResponseWriter) // the hop's answer while the backend sleeps
	proxied atomic.Int64                // requests that reached the backend
}

func newStandInHop(t testing.TB, backend http.Handler, asleep func(w http.ResponseWriter)) *standInHop {
	t.Helper()
	h := &standInHop{asleep: asleep}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.proxied.Add(1)
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(be.Close)
	rp := httputil.NewSingleHostReverseProxy(mustURL(t, be.URL))
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.up.Load() {
			_, _ = io.Copy(io.Discard, r.Body) // a hop reads the request, then answers for the backend
			h.asleep(w)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// The hops' real "no backend" answers (see hop_test.go for where they come from).
var hopShapes = []struct {
	name   string
	answer func(w http.ResponseWriter)
}{
	{"envoy no healthy upstream", func(w http.ResponseWriter) {
		w.Header().Set("Server", "istio-envoy")
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "no healthy upstream")
	}},
	{"envoy connect failure", func(w http.ResponseWriter) {
		w.Header().Set("Server", "envoy")
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused")
	}},
	{"linkerd fail-fast", func(w http.ResponseWriter) {
		w.Header().Set("L5d-Proxy-Error", "logical service ollama.ai.svc.cluster.local:11434: service in fail-fast")
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusGatewayTimeout)
	}},
}

// Through a hop the dial always succeeds: the gate must still see the
// backend asleep, hold a chat (the KEDA value counts it) and deliver it
// once, when the backend serves.
func TestAHopsNoBackendAnswerIsHeldAndDelivered(t *testing.T) {
	for _, shape := range hopShapes {
		t.Run(shape.name, func(t *testing.T) {
			rec := &recorder{resp: func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"done":true}`) }}
			hop := newStandInHop(t, withVersion(rec), shape.answer)
			hop.up.Store(true)
			g := startGate(t, Config{Backends: []BackendConfig{backendURL(t, hop.srv.URL)}})
			eventually(t, "up", func() bool { return stats(g.Gate, DefaultName).State == StateUp })

			hop.up.Store(false) // the backend went to zero; the hop stays
			c := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+"/api/chat", strings.NewReader(`{"model":"m"}`), nil)
			eventually(t, "the chat held (or answered)", func() bool { return mustDemand(t, g.Gate, DefaultName).Held == 1 || c.ended() })
			if c.ended() {
				t.Fatalf("the chat was answered while the backend slept behind the hop: %d %q %v", c.status, c.body, c.err)
			}
			if s := stats(g.Gate, DefaultName); s.State != StateAsleep || !strings.HasPrefix(s.Reason, "a proxy in front answered HTTP ") {
				t.Errorf("state %s (%q), want asleep with the hop's answer as the reason", s.State, s.Reason)
			}
			hop.up.Store(true)
			if c.wait(t); c.err != nil || c.status != 200 || c.body != `{"done":true}` {
				t.Fatalf("the held chat: %d %q %v", c.status, c.body, c.err)
			}
			n := 0
			for _, s := range rec.requests() {
				if s.RequestURI == "/api/chat" {
					n++
					if string(s.Body) != `{"model":"m"}` {
						t.Errorf("the chat reached the backend with body %q", s.Body)
					}
				}
			}
			if n != 1 {
				t.Errorf("the backend got the chat %d times, want once", n)
			}
		})
	}
}

// The probe agrees with the pass-throughs: through a hop, a sleeping backend
// is asleep, and a list is served from memory.
func TestTheProbeSeesABackendAsleepBehindAHop(t *testing.T) {
	hop := newStandInHop(t, ollamaLike(nil, nil), hopShapes[0].answer)
	hop.up.Store(true)
	g := startGate(t, Config{Backends: []BackendConfig{backendURL(t, hop.srv.URL)}})
	eventually(t, "up", func() bool { return stats(g.Gate, DefaultName).State == StateUp })
	if code, _, _ := do(t, "GET", g.url+"/api/tags", nil, nil); code != 200 {
		t.Fatalf("/api/tags while up: %d", code)
	}
	hop.up.Store(false)
	eventually(t, "asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })
	if r := stats(g.Gate, DefaultName).Reason; r != "a proxy in front answered HTTP 503: no healthy upstream" {
		t.Errorf("reason %q", r)
	}
	code, hdr, body := do(t, "GET", g.url+"/api/tags", nil, nil)
	if code != 200 || body != tagsBody || hdr.Get(FromMemoryHeader) != "1" {
		t.Errorf("/api/tags behind a hop while asleep: %d %q, want the remembered list", code, body)
	}
}

// A busy backend's own 503 behind a hop is its answer: passed on, not held,
// and the backend stays up.
func TestABusyBackendsOwn503PassesThroughAHop(t *testing.T) {
	busy := `{"error":"server busy, please try again.  maximum pending requests exceeded"}`
	backend := withVersion(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, busy)
	}))
	hop := newStandInHop(t, backend, hopShapes[0].answer)
	hop.up.Store(true)
	g := startGate(t, Config{Backends: []BackendConfig{backendURL(t, hop.srv.URL)}})
	eventually(t, "up", func() bool { return stats(g.Gate, DefaultName).State == StateUp })
	code, _, body := do(t, "POST", g.url+"/api/chat", strings.NewReader(`{}`), nil)
	if code != 503 || body != busy {
		t.Errorf("got %d %q, want the backend's own 503", code, body)
	}
	if s := stats(g.Gate, DefaultName); s.State != StateUp {
		t.Errorf("state %s after a busy 503, want up", s.State)
	}
}

// A body the gate could not keep while a hop took it (past
// --gate.max-held-bytes) cannot be held: the client is told, in the
// backend's error shape, that the request did not reach the backend.
func TestAHopAnsweredBodyPastTheBoundIsRefusedClearly(t *testing.T) {
	rec := &recorder{resp: func(http.ResponseWriter, *http.Request) {}}
	hop := newStandInHop(t, withVersion(rec), hopShapes[0].answer)
	hop.up.Store(true)
	g := startGate(t, Config{Backends: []BackendConfig{backendURL(t, hop.srv.URL)}, MaxHeldBytes: 16}, func(g *Gate) { g.probeIdle = time.Hour })
	eventually(t, "up", func() bool { return stats(g.Gate, DefaultName).State == StateUp })
	hop.up.Store(false)
	code, hdr, body := do(t, "POST", g.url+"/api/chat", strings.NewReader(strings.Repeat("x", 1024)), nil)
	if code != 503 || hdr.Get("X-Gate-Error") != codeHop || !strings.Contains(errorMessage(t, body, false), "did not reach it") {
		t.Errorf("got %d %s %q, want a 503 %s saying the request did not reach the backend", code, hdr.Get("X-Gate-Error"), body, codeHop)
	}
	if s := stats(g.Gate, DefaultName); s.State != StateAsleep || s.HeldBytes != 0 {
		t.Errorf("state %s, held bytes %d; want asleep, 0", s.State, s.HeldBytes)
	}
	if len(rec.requests()) != 0 {
		t.Errorf("the backend got %d requests", len(rec.requests()))
	}
}

// A released request that meets the hop's "no backend" answer again (the
// probe passed, the next request did not) goes back to the queue with its
// body, its bytes counted again, and is delivered once.
func TestAReleasedRequestAnsweredByTheHopIsHeldAgain(t *testing.T) {
	rec := &recorder{resp: func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"done":true}`) }}
	var refuseChats atomic.Int64
	hop := newStandInHop(t, withVersion(rec), hopShapes[0].answer)
	inner := hop.srv.Config.Handler
	hop.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/chat" && refuseChats.Add(-1) >= 0 {
			_, _ = io.Copy(io.Discard, r.Body)
			hopShapes[0].answer(w)
			return
		}
		inner.ServeHTTP(w, r)
	})
	g := startGate(t, Config{Backends: []BackendConfig{backendURL(t, hop.srv.URL)}})
	eventually(t, "asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })
	body := strings.Repeat("b", 1000)
	c := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+"/api/chat", strings.NewReader(body), nil)
	eventually(t, "held", func() bool { return queued(g.Gate, DefaultName) == 1 })
	refuseChats.Store(2) // the first two deliveries meet the hop's answer
	hop.up.Store(true)
	if c.wait(t); c.err != nil || c.status != 200 {
		t.Fatalf("the chat: %d %q %v", c.status, c.body, c.err)
	}
	var chats []seen
	for _, s := range rec.requests() {
		if s.RequestURI == "/api/chat" {
			chats = append(chats, s)
		}
	}
	if len(chats) != 1 || string(chats[0].Body) != body {
		t.Errorf("the backend got the chat %d times (want once, whole)", len(chats))
	}
	eventually(t, "its bytes given back", func() bool { return stats(g.Gate, DefaultName).HeldBytes == 0 })
	if n := refuseChats.Load(); n >= 0 {
		t.Errorf("the hop answered only %d of the 2 deliveries: the test did not test a re-queue", 2-n)
	}
}
