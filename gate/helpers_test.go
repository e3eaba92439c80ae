package gate

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testGate is a Gate served on loopback and run until the test ends.
type testGate struct {
	*Gate
	srv  *httptest.Server
	url  string
	stop func() // ends it (also at the end of the test)
}

// startGate creates a Gate from cfg (backends from urls when cfg has none),
// shortens its timings for tests unless tune says otherwise, runs it and
// serves it on loopback.
//
// Warming is off unless a backend names warm= (its own tests do): the other
// tests count what reaches their backend, and a warm-up would be one more.
func startGate(t testing.TB, cfg Config, tune ...func(*Gate)) *testGate {
	t.Helper()
	cfg.Backends = append([]BackendConfig(nil), cfg.Backends...)
	for i := range cfg.Backends {
		if cfg.Backends[i].Warm.Mode == "" {
			cfg.Backends[i].Warm.Mode = WarmOff
		}
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	g.probeHeld = 10 * time.Millisecond
	g.probeIdle = 50 * time.Millisecond
	g.probeTimeout = 300 * time.Millisecond
	g.learnWait = 500 * time.Millisecond
	for _, f := range tune {
		f(g)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Run(ctx)
	}()
	srv := httptest.NewServer(g)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			srv.CloseClientConnections() // ends what a test left held
			srv.Close()
			<-done
		})
	}
	t.Cleanup(stop)
	return &testGate{Gate: g, srv: srv, url: srv.URL, stop: stop}
}

func backendURL(t testing.TB, raw string) BackendConfig {
	t.Helper()
	bc, err := ParseBackend(raw)
	if err != nil {
		t.Fatalf("ParseBackend(%q): %v", raw, err)
	}
	return bc
}

// sleepyBackend is a backend that is first asleep (connection refused),
// then starting (TCP accepted, no HTTP: its listener is not served yet, so
// connections wait in the backlog like Ollama's before it serves), then up
// (the same listener served). Its address is a name that only its transport
// dials: while asleep that transport refuses as the kernel would, so no other
// process on a shared machine can take the port in between.
type sleepyBackend struct {
	t       testing.TB
	handler http.Handler
	srv     *httptest.Server
	mu      sync.Mutex
	phase   State
	started bool
}

const sleepyHost = "sleepy.test:11434"

func newSleepyBackend(t testing.TB, h http.Handler) *sleepyBackend {
	t.Helper()
	s := &sleepyBackend{t: t, handler: h, phase: StateAsleep}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		asleep := s.phase == StateAsleep
		s.mu.Unlock()
		if asleep {
			// A connection dialled just before stop, or kept alive past
			// it, reaches a pod that is gone: cut it, as a reset would.
			panic(http.ErrAbortHandler)
		}
		s.handler.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		s.mu.Lock()
		started := s.started
		s.mu.Unlock()
		if started {
			s.srv.CloseClientConnections()
			s.srv.Close()
		} else {
			s.srv.Listener.Close()
		}
	})
	return s
}

func (s *sleepyBackend) url() string { return "http://" + sleepyHost }

// transport is the gate's transport for this backend (other addresses are
// dialled as usual).
func (s *sleepyBackend) transport() http.RoundTripper {
	t := NewTransport()
	var d net.Dialer
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr != sleepyHost {
			return d.DialContext(ctx, network, addr)
		}
		s.mu.Lock()
		phase := s.phase
		s.mu.Unlock()
		if phase == StateAsleep {
			return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
		}
		return d.DialContext(ctx, network, s.srv.Listener.Addr().String())
	}
	return t
}

// listen opens the port without serving HTTP (the backend is starting).
func (s *sleepyBackend) listen() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.phase = StateStarting
}

// serve serves HTTP on the port.
func (s *sleepyBackend) serve() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.phase = StateUp
	if !s.started {
		s.started = true
		s.srv.Start()
	}
}

// stop puts it to sleep again: connections refused, open ones closed.
func (s *sleepyBackend) stop() {
	s.mu.Lock()
	s.phase = StateAsleep
	started := s.started
	s.mu.Unlock()
	if started {
		s.srv.CloseClientConnections()
	}
}

// eventually polls cond until it holds, failing after a generous bound (these
// are not timing assertions: they only stop a broken test).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func stats(g *Gate, name string) BackendStats {
	for _, s := range g.Stats() {
		if s.Name == name {
			return s
		}
	}
	return BackendStats{}
}

func mustDemand(t testing.TB, g *Gate, name string) Demand {
	t.Helper()
	d, ok := g.Demand(name)
	if !ok {
		t.Fatalf("Demand(%q): no such backend", name)
	}
	return d
}

// do sends a request and returns status, headers and body.
func do(t testing.TB, method, u string, body io.Reader, hdr http.Header) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading: %v", method, u, err)
	}
	return res.StatusCode, res.Header, string(b)
}

// errorMessage decodes either error shape.
func errorMessage(t testing.TB, body string, openai bool) string {
	t.Helper()
	if openai {
		var v struct {
			Error struct {
				Message string `json:"message"`
				Type    string `json:"type"`
				Code    string `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(body), &v); err != nil || v.Error.Message == "" || v.Error.Type == "" || v.Error.Code == "" {
			t.Fatalf("not an OpenAI error (message, type, code): %q (%v)", body, err)
		}
		return v.Error.Message
	}
	var v struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil || v.Error == "" {
		t.Fatalf("not an Ollama error: %q (%v)", body, err)
	}
	return v.Error
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// withVersion answers the gate's readiness probe (GET /api/version) like
// Ollama and hands everything else to h.
func withVersion(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/version" && r.Method == http.MethodGet {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			_, _ = io.WriteString(w, `{"version":"0.17.4"}`)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// queued is how many requests wait in b's queue, bodies read.
func queued(g *Gate, name string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.byName[name].queue.Len()
}

// waitCount waits until name has counted n requests with outcome o: the gate
// counts a request just after its answer, so a client can be faster.
func waitCount(t testing.TB, g *Gate, name string, o Outcome, n uint64) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d %s requests counted", n, o), func() bool { return stats(g, name).Requests[o] >= n })
}

// expectError checks err against want, a part of the error a case expects
// ("" for none): a mismatch fails the test. It says whether an error was
// expected, so that the case ends there.
func expectError(t *testing.T, err error, want string) bool {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		return false
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
	return true
}

// smallChatBackend is a backend that answers every request with a small,
// whole chat answer (the benchmarks' replicas), closed when the test ends.
func smallChatBackend(tb testing.TB) *httptest.Server {
	srv := httptest.NewServer(withVersion(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = io.WriteString(w, `{"message":{"role":"assistant","content":"hi"},"done":true}`)
	})))
	tb.Cleanup(srv.Close)
	return srv
}
