package gate

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
)

// replicaNet is a pool's replicas as the gate's transport sees them: names
// (r1.test:11434, ...) or addresses that only this transport dials, each a
// stand-in Ollama replica served on loopback, refused as the kernel would
// while stopped.
type replicaNet struct {
	t       testing.TB
	mu      sync.Mutex
	servers map[string]*httptest.Server
	fakes   map[string]*fakeollama.Replica
	stopped map[string]bool
	tr      *http.Transport
}

func newReplicaNet(t testing.TB) *replicaNet {
	return &replicaNet{t: t, servers: map[string]*httptest.Server{}, fakes: map[string]*fakeollama.Replica{}, stopped: map[string]bool{}}
}

// add serves h (a stand-in replica of models when nil) at host:port.
func (n *replicaNet) add(addr string, h http.Handler, models ...string) {
	if h == nil {
		if models == nil {
			models = []string{"tiny:1b"}
		}
		rp := fakeollama.NewReplica(fakeollama.New(fakeollama.Config{Models: models, ChunkInterval: -1}), fakeollama.ReplicaConfig{})
		n.fakes[addr] = rp
		h = rp
	}
	srv := httptest.NewServer(h)
	n.t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	n.mu.Lock()
	n.servers[addr] = srv
	n.mu.Unlock()
}

// setStopped stops a replica (its connections closed, new ones refused) or
// starts it again.
func (n *replicaNet) setStopped(addr string, stopped bool) {
	n.mu.Lock()
	n.stopped[addr] = stopped
	srv, tr := n.servers[addr], n.tr
	n.mu.Unlock()
	if stopped {
		srv.CloseClientConnections()
		// The transport reads the servers' FIN on its idle connections and
		// drops them; do it now rather than race the next request (a POST
		// written to a connection that is being closed is not sent again:
		// the server might have read it).
		tr.CloseIdleConnections()
	}
}

func (n *replicaNet) answers(addr string) int { return n.fakes[addr].Stats().Answers }

func (n *replicaNet) transport() http.RoundTripper {
	t := NewTransport()
	n.tr = t
	var d net.Dialer
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		n.mu.Lock()
		srv, stopped := n.servers[addr], n.stopped[addr]
		n.mu.Unlock()
		if srv == nil || stopped {
			return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
		}
		return d.DialContext(ctx, network, srv.Listener.Addr().String())
	}
	return t
}

func poolConfig(t testing.TB, flags ...string) []BackendConfig {
	t.Helper()
	bcs, err := ParseBackends(flags)
	if err != nil {
		t.Fatalf("ParseBackends: %v", err)
	}
	return bcs
}

// waitReplicas waits until every replica of pool name was probed up and its
// model list read.
func waitReplicas(t testing.TB, g *testGate, name string, up int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d replicas of %s up with their lists", up, name), func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		n := 0
		for _, r := range g.byName[name].pool.replicas {
			if r.state == StateUp && r.models != nil {
				n++
			}
		}
		return n == up
	})
}

// waitLoaded waits until the gate saw model loaded on n replicas of pool name.
func waitLoaded(t testing.TB, g *testGate, name, model string, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s loaded on %d replicas", model, n), func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		k := 0
		for _, r := range g.byName[name].pool.replicas {
			if loaded, _ := r.loaded.Loaded(time.Now(), model); loaded {
				k++
			}
		}
		return k == n
	})
}

// settle waits until the gate counts nothing in flight for pool name: an
// answer reaches the client just before the gate's count of it ends.
func settle(t testing.TB, g *testGate, name string) {
	t.Helper()
	eventually(t, "nothing in flight", func() bool { return stats(g.Gate, name).InFlight == 0 })
}

func chat(t testing.TB, url, model, chatID, user, first string, more ...string) int {
	t.Helper()
	msgs := fmt.Sprintf(`{"role":"user","content":%q}`, first)
	for _, m := range more {
		msgs += fmt.Sprintf(`,{"role":"assistant","content":"ok"},{"role":"user","content":%q}`, m)
	}
	hdr := http.Header{}
	if chatID != "" {
		hdr.Set(ChatHeader, chatID)
	}
	if user != "" {
		hdr.Set(UserHeader, user)
	}
	status, _, body := do(t, http.MethodPost, url+"/pool/api/chat",
		strings.NewReader(fmt.Sprintf(`{"model":%q,"messages":[%s],"stream":false}`, model, msgs)), hdr)
	if status != http.StatusOK {
		t.Errorf("chat: HTTP %d: %s", status, body)
	}
	return status
}

// The turns of one conversation land on one replica: by Open WebUI's chat
// id, or by who asks and the chat's first message.
func TestPoolConversationAffinity(t *testing.T) {
	for _, tc := range []struct {
		name           string
		chatID, user   string
		firstQuestions []string // one conversation per first question
	}{
		{"chat id header", "chat", "", []string{"hello", "hello", "hello", "hello", "hello", "hello", "hello", "hello"}},
		{"first user message", "", "alice", []string{"why is the sky blue", "write a haiku", "what is 2+2", "hi", "translate this",
			"summarize", "a poem", "tell me a joke"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newReplicaNet(t)
			for _, a := range []string{"r1.test:11434", "r2.test:11434", "r3.test:11434"} {
				n.add(a, nil)
			}
			g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434", "pool=http://r2.test:11434", "pool=http://r3.test:11434"), Transport: n.transport()})
			// Each replica has the model loaded (as its /api/ps says), so that
			// loads alone decide where a new conversation goes.
			for _, srv := range n.servers {
				do(t, http.MethodPost, srv.URL+"/api/generate", strings.NewReader(`{"model":"tiny:1b","prompt":"","stream":false}`), nil)
			}
			waitLoaded(t, g, "pool", "tiny:1b", 3)
			used := map[string]bool{}
			for i, first := range tc.firstQuestions {
				before := map[string]int{}
				for a := range n.fakes {
					before[a] = n.answers(a)
				}
				id := tc.chatID
				if id != "" {
					id = fmt.Sprintf("%s-%d", id, i)
				}
				turns := []string{}
				for turn := 0; turn < 4; turn++ {
					chat(t, g.url, "tiny:1b", id, tc.user, first, turns...)
					settle(t, g, "pool")
					turns = append(turns, fmt.Sprintf("and then %d?", turn))
				}
				var on []string
				for a := range n.fakes {
					if d := n.answers(a) - before[a]; d > 0 {
						on = append(on, fmt.Sprintf("%s:%d", a, d))
						used[a] = true
					}
				}
				if len(on) != 1 {
					t.Errorf("conversation %d (%q): four turns landed on %v, want all on one replica", i, first, on)
				}
			}
			if len(used) < 2 {
				t.Errorf("eight conversations all went to %v, want them spread", used)
			}
		})
	}
}

// gatedReplica answers a chat only when told; it counts what it started.
type gatedReplica struct {
	fake    http.Handler
	started chan string
	release chan struct{}
	addr    string
}

func (g *gatedReplica) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		g.started <- g.addr
		<-g.release
	}
	g.fake.ServeHTTP(w, r)
}

// A new conversation goes to a free replica while another is busy, and
// requests of one model go only to the replicas that list it.
func TestPoolFreeBeatsBusy(t *testing.T) {
	n := newReplicaNet(t)
	started, release := make(chan string, 10), make(chan struct{})
	addrs := []string{"r1.test:11434", "r2.test:11434", "r3.test:11434"}
	for _, a := range addrs {
		n.add(a, &gatedReplica{fake: fakeollama.New(fakeollama.Config{ChunkInterval: -1}), started: started, release: release, addr: a})
	}
	g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434,parallel=1", "pool=http://r2.test:11434", "pool=http://r3.test:11434"), Transport: n.transport()})
	waitReplicas(t, g, "pool", 3)
	var wg sync.WaitGroup
	got := map[string]int{}
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			chat(t, g.url, "tiny:1b", fmt.Sprintf("c%d", i), "", "hi")
		}()
		got[<-started]++ // each starts before the next is sent
	}
	close(release)
	wg.Wait()
	if len(got) != 3 {
		t.Errorf("three conversations at once went to %v, want one on each replica", got)
	}
}

func TestPoolModelOnlySomeList(t *testing.T) {
	n := newReplicaNet(t)
	n.add("r1.test:11434", nil, "small:1b")
	n.add("r2.test:11434", nil, "small:1b", "big:70b")
	g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434", "pool=http://r2.test:11434"), Transport: n.transport()})
	waitReplicas(t, g, "pool", 2)
	for i := range 4 {
		chat(t, g.url, "big:70b", fmt.Sprintf("c%d", i), "", "hi")
	}
	if a1, a2 := n.answers("r1.test:11434"), n.answers("r2.test:11434"); a1 != 0 || a2 != 4 {
		t.Errorf("big:70b answers: r1 %d, r2 %d; want 0 and 4 (only r2 lists it)", a1, a2)
	}
}

// A replica that refuses the connection: its requests go to another, and
// the client sees nothing of it. With every replica refusing, requests are
// held until one serves.
func TestPoolFailover(t *testing.T) {
	n := newReplicaNet(t)
	n.add("r1.test:11434", nil)
	n.add("r2.test:11434", nil)
	g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434", "pool=http://r2.test:11434"), Transport: n.transport()},
		func(g *Gate) { g.probeIdle = time.Hour }) // only requests see the stop
	waitReplicas(t, g, "pool", 2)

	n.setStopped("r1.test:11434", true)
	for i := range 6 {
		chat(t, g.url, "tiny:1b", fmt.Sprintf("c%d", i), "", "hi")
	}
	st := stats(g.Gate, "pool")
	if n.answers("r2.test:11434") != 6 || st.State != StateUp {
		t.Errorf("with r1 stopped: r2 answered %d of 6, backend %s; want 6, up", n.answers("r2.test:11434"), st.State)
	}
	if r1 := st.Replicas[0]; r1.ID != "r1.test:11434" || r1.Refused == 0 || r1.State != StateAsleep {
		t.Errorf("r1: %+v; want refused at least once and asleep", r1)
	}

	n.setStopped("r2.test:11434", true)
	done := make(chan int)
	go func() { done <- chat(t, g.url, "tiny:1b", "held", "", "hi") }()
	eventually(t, "the request held", func() bool { return mustDemand(t, g.Gate, "pool").Held == 1 })
	if st := stats(g.Gate, "pool"); st.State == StateUp {
		t.Errorf("every replica refuses: backend %s, want not up", st.State)
	}
	n.setStopped("r1.test:11434", false)
	g.byName["pool"].kickProbe()
	if status := <-done; status != http.StatusOK {
		t.Errorf("held request: HTTP %d once r1 served again", status)
	}
	if n.answers("r1.test:11434") != 1 {
		t.Errorf("r1 answered %d, want the held one", n.answers("r1.test:11434"))
	}
}

// resettingListener resets its next n connections as a server whose listen
// backlog overflowed does: accepted by the kernel, then closed with a reset
// before the server read the request.
type resettingListener struct {
	net.Listener
	mu   sync.Mutex
	n    int
	read int // bytes read of each before the reset (at least 1, so that the client's dial is over)
}

func (l *resettingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		reset, read := l.n > 0, max(l.read, 1)
		if reset {
			l.n--
		}
		l.mu.Unlock()
		if !reset {
			return c, nil
		}
		_, _ = io.ReadFull(c, make([]byte, read))
		_ = c.(*net.TCPConn).SetLinger(0)
		_ = c.Close()
	}
}

// Issue 23 item 3: a released burst meets a small accept backlog. A reset of
// a new connection before any answer is retried (the request never reached
// the server); nothing is sent twice.
//
// Before the fix, the first request got the gate's 502 "backend "default"
// failed to answer: read tcp ...: connection reset by peer" and the server
// saw nothing.
func TestResetBeforeAnswerRetried(t *testing.T) {
	for _, tc := range []struct {
		name     string
		resets   int
		read     int // bytes the server reads before each reset
		body     string
		status   int
		received int
	}{
		{"two resets", 2, 1, `{"model":"tiny:1b","prompt":"hi"}`, http.StatusOK, 1},
		{"a reset on each try", resetTries, 1, `{"model":"tiny:1b","prompt":"hi"}`, http.StatusBadGateway, 0},
		{"a reset after more of the body than the gate keeps (--gate.max-held-bytes)", 1, 320 << 10, `{"prompt":"` + strings.Repeat("x", 512<<10) + `"}`, http.StatusBadGateway, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			received := 0
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPost {
					_, _ = io.Copy(io.Discard, r.Body)
					mu.Lock()
					received++
					mu.Unlock()
				}
				_, _ = io.WriteString(w, `{"done":true}`)
			}))
			srv.Listener = &resettingListener{Listener: srv.Listener, n: 0}
			srv.Start()
			t.Cleanup(srv.Close)
			// Probes only at the start: the resets are for the request alone.
			g := startGate(t, Config{Backends: []BackendConfig{backendURL(t, srv.URL)}, MaxHeldBytes: 256 << 10}, func(g *Gate) { g.probeIdle = time.Hour })
			eventually(t, "backend up", func() bool { return stats(g.Gate, "default").State == StateUp })
			// No kept-alive connection may be reused: each try dials anew.
			g.transport.(*http.Transport).CloseIdleConnections()
			l := srv.Listener.(*resettingListener)
			l.mu.Lock()
			l.n, l.read = tc.resets, tc.read
			l.mu.Unlock()
			status, _, body := do(t, http.MethodPost, g.url+"/api/generate", strings.NewReader(tc.body), nil)
			mu.Lock()
			got := received
			mu.Unlock()
			if status != tc.status || got != tc.received {
				t.Errorf("HTTP %d (%.120s), the server received %d; want %d and %d", status, body, got, tc.status, tc.received)
			}
		})
	}
}

// A dns+http pool: the addresses of the name are the replicas. A replica
// that leaves the answer (a pod that terminates) gets nothing new, and its
// running stream goes on to its end.
func TestPoolDNS(t *testing.T) {
	n := newReplicaNet(t)
	started, release := make(chan string, 10), make(chan struct{})
	for _, a := range []string{"127.0.0.1:11434", "127.0.0.2:11434"} {
		n.add(a, &gatedReplica{fake: fakeollama.New(fakeollama.Config{ChunkInterval: -1}), started: started, release: release, addr: a})
	}
	var mu sync.Mutex
	ips := []string{"127.0.0.1", "127.0.0.2"}
	lookups := 0
	lookup := func(_ context.Context, host string) ([]net.IPAddr, error) {
		mu.Lock()
		defer mu.Unlock()
		if host != "ollama-headless.test" {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		lookups++
		var out []net.IPAddr
		for _, ip := range ips {
			out = append(out, net.IPAddr{IP: net.ParseIP(ip)})
		}
		return out, nil
	}
	g := startGate(t, Config{Backends: poolConfig(t, "pool=dns+http://ollama-headless.test:11434"), Transport: n.transport()},
		func(g *Gate) { g.lookup, g.resolveEvery = lookup, 20*time.Millisecond })
	waitReplicas(t, g, "pool", 2)

	streamed := make(chan int)
	go func() { streamed <- chat(t, g.url, "tiny:1b", "long", "", "hi") }()
	on := <-started
	other := map[string]string{"127.0.0.1:11434": "127.0.0.2:11434", "127.0.0.2:11434": "127.0.0.1:11434"}[on]
	mu.Lock()
	ips = []string{strings.TrimSuffix(other, ":11434")}
	mu.Unlock()
	eventually(t, on+" gone from the pool", func() bool {
		for _, r := range stats(g.Gate, "pool").Replicas {
			if r.ID == on {
				return r.Gone
			}
		}
		return false
	})
	go func() { streamed <- chat(t, g.url, "tiny:1b", "long", "", "hi") }() // the same conversation: its replica is gone
	if next := <-started; next != other {
		t.Errorf("after %s left DNS, a request went to %s, want %s", on, next, other)
	}
	close(release)
	for range 2 {
		if status := <-streamed; status != http.StatusOK {
			t.Errorf("stream: HTTP %d", status)
		}
	}
	eventually(t, on+" forgotten once its stream ended", func() bool {
		reps := stats(g.Gate, "pool").Replicas
		return len(reps) == 1 && reps[0].ID == other
	})
}

// Two gates: each counts the other's requests in flight per replica (from
// the peers' reports) when it chooses.
func TestPoolPeersInFlight(t *testing.T) {
	n := newReplicaNet(t)
	n.add("r1.test:11434", nil)
	n.add("r2.test:11434", nil)
	g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434", "pool=http://r2.test:11434"), Transport: n.transport()})
	waitReplicas(t, g, "pool", 2)
	for _, srv := range n.servers {
		do(t, http.MethodPost, srv.URL+"/api/generate", strings.NewReader(`{"model":"tiny:1b","prompt":"","stream":false}`), nil)
	}
	waitLoaded(t, g, "pool", "tiny:1b", 2)
	for _, tc := range []struct {
		busy, want string
	}{{"r1.test:11434", "r2.test:11434"}, {"r2.test:11434", "r1.test:11434"}} {
		// A peer streams one answer on tc.busy.
		g.mergePeers([]*DemandReport{{Instance: "peer", Backends: map[string]BackendDemand{
			"pool": {InFlight: 1, Replicas: map[string]ReplicaDemand{tc.busy: {InFlight: 1}}},
		}}})
		before := n.answers(tc.want)
		for i := range 3 {
			chat(t, g.url, "tiny:1b", fmt.Sprintf("%s-%d", tc.busy, i), "", "hi")
			settle(t, g, "pool")
		}
		if got := n.answers(tc.want) - before; got != 3 {
			t.Errorf("a peer streams on %s: %d of 3 new conversations went to %s, want 3", tc.busy, got, tc.want)
		}
	}
	// And this gate reports its own.
	if r := g.demandReport().Backends["pool"].Replicas; len(r) != 0 {
		t.Errorf("nothing in flight: report lists replicas %v", r)
	}
}

// A replica's preStop drains it: it gets nothing new, the answer comes once
// its streams have ended, and they end whole.
func TestPoolDrain(t *testing.T) {
	n := newReplicaNet(t)
	started, release := make(chan string, 10), make(chan struct{})
	for _, a := range []string{"127.0.0.1:11434", "127.0.0.2:11434"} {
		n.add(a, &gatedReplica{fake: fakeollama.New(fakeollama.Config{ChunkInterval: -1}), started: started, release: release, addr: a})
	}
	g := startGate(t, Config{Backends: poolConfig(t, "pool=http://127.0.0.1:11434", "pool=http://127.0.0.2:11434"), Transport: n.transport()})
	waitReplicas(t, g, "pool", 2)

	// A replica named by its IP is drained only from that address (the pod's own).
	if status, _, body := do(t, http.MethodPost, g.url+"/_gate/drain?replica=127.0.0.2:11434", nil, nil); status != http.StatusForbidden {
		t.Errorf("draining 127.0.0.2 from 127.0.0.1: HTTP %d %s, want 403", status, body)
	}
	for _, bad := range []string{"/_gate/drain?replica=nope", "/_gate/drain?replica=127.0.0.1:11434&timeout=soon"} {
		if status, _, _ := do(t, http.MethodPost, g.url+bad, nil, nil); status != http.StatusBadRequest {
			t.Errorf("POST %s: HTTP %d, want 400", bad, status)
		}
	}
	if status, _, _ := do(t, http.MethodGet, g.url+"/_gate/drain?replica=127.0.0.1:11434", nil, nil); status != http.StatusMethodNotAllowed {
		t.Errorf("GET /_gate/drain: HTTP %d, want 405", status)
	}

	// Two streams, one on each replica.
	streams := make(chan int, 3)
	go func() { streams <- chat(t, g.url, "tiny:1b", "a", "", "hi") }()
	first := <-started
	go func() { streams <- chat(t, g.url, "tiny:1b", "b", "", "hi") }()
	second := <-started
	if first == second {
		t.Fatalf("two streams on %s", first)
	}
	drained := make(chan string)
	go func() {
		status, _, body := do(t, http.MethodPost, g.url+"/_gate/drain?replica=127.0.0.1:11434", nil, nil)
		drained <- fmt.Sprintf("%d %s", status, strings.TrimSpace(body))
	}()
	eventually(t, "127.0.0.1 draining", func() bool { return stats(g.Gate, "pool").Replicas[0].Draining })
	go func() { streams <- chat(t, g.url, "tiny:1b", "c", "", "hi") }()
	if next := <-started; next != "127.0.0.2:11434" {
		t.Errorf("a request during the drain went to %s, want 127.0.0.2:11434", next)
	}
	select {
	case d := <-drained:
		t.Fatalf("the drain answered while a stream ran: %s", d)
	default:
	}
	close(release)
	for range 3 {
		if status := <-streams; status != http.StatusOK {
			t.Errorf("stream: HTTP %d", status)
		}
	}
	if d := <-drained; d != `200 {"replica":"127.0.0.1:11434","backends":["pool"],"drained":true,"in_flight":0}` {
		t.Errorf("drain: %s", d)
	}
}

// A pool's model lists are the union of the lists of the replicas that
// answer; while none does, they come from memory.
func TestPoolLists(t *testing.T) {
	n := newReplicaNet(t)
	n.add("r1.test:11434", nil, "small:1b")
	n.add("r2.test:11434", nil, "small:1b", "big:70b")
	g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434", "pool=http://r2.test:11434"), Transport: n.transport()},
		func(g *Gate) { g.probeIdle = time.Hour }) // only requests see the stops
	waitReplicas(t, g, "pool", 2)
	names := func(path string) (string, string) {
		status, hdr, body := do(t, http.MethodGet, g.url+"/pool"+path, nil, nil)
		if status != http.StatusOK {
			t.Fatalf("GET %s: HTTP %d %s", path, status, body)
		}
		var v struct {
			Models []struct{ Name string } `json:"models"`
			Data   []struct{ ID string }   `json:"data"`
		}
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, body)
		}
		var out []string
		for _, m := range v.Models {
			out = append(out, m.Name)
		}
		for _, m := range v.Data {
			out = append(out, m.ID)
		}
		return strings.Join(out, " "), hdr.Get(FromMemoryHeader)
	}
	for _, path := range []string{"/api/tags", "/v1/models"} {
		if got, _ := names(path); got != "small:1b big:70b" {
			t.Errorf("%s of both: %q, want each model once", path, got)
		}
	}
	n.setStopped("r2.test:11434", true)
	if got, _ := names("/api/tags"); got != "small:1b" {
		t.Errorf("/api/tags with r2 stopped: %q, want r1's", got)
	}
	n.setStopped("r1.test:11434", true)
	if got, mem := names("/api/tags"); got != "small:1b" || mem == "" {
		t.Errorf("/api/tags with both stopped: %q (from memory: %q), want the last answer from memory", got, mem)
	}
}

// What a peer reports of a pool's replicas is checked like its counts.
func TestPeerReplicaReportsChecked(t *testing.T) {
	many := map[string]ReplicaDemand{}
	for i := range maxReportReplicas + 1 {
		many[fmt.Sprintf("10.0.%d.%d:11434", i/256, i%256)] = ReplicaDemand{InFlight: 1}
	}
	for _, tc := range []struct {
		name     string
		replicas map[string]ReplicaDemand
		want     string
	}{
		{"fine", map[string]ReplicaDemand{"10.0.0.1:11434": {InFlight: 2}, "10.0.0.2:11434": {Draining: true}}, ""},
		{"negative", map[string]ReplicaDemand{"10.0.0.1:11434": {InFlight: -5}}, "negative"},
		{"absurd", map[string]ReplicaDemand{"10.0.0.1:11434": {InFlight: maxPeerCount + 1}}, "absurd"},
		{"too many", many, "replicas, over"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := &DemandReport{Instance: "p", Backends: map[string]BackendDemand{"pool": {Replicas: tc.replicas}}}
			err := rep.check()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("check() = %v, want %q", err, tc.want)
			}
		})
	}
}

// Only a request that makes Ollama load its model counts as "loaded there"
// for the balancing: a read (/api/show) or a management call does not.
func TestPoolLoadedOnlyByLoadingRequests(t *testing.T) {
	for _, tc := range []struct {
		path, body string
		loaded     int // replicas the gate then believes have the model loaded
	}{
		{"/api/show", `{"model":"tiny:1b"}`, 0},
		{"/api/pull", `{"model":"tiny:1b","stream":false}`, 0},
		{"/api/copy", `{"source":"tiny:1b","destination":"tiny:copy"}`, 0},
		{"/api/chat", `{"model":"tiny:1b","messages":[{"role":"user","content":"hi"}],"stream":false}`, 1},
		{"/api/generate", `{"model":"tiny:1b","prompt":"hi","stream":false}`, 1},
		{"/api/embed", `{"model":"tiny:1b","input":"hi"}`, 1},
	} {
		t.Run(tc.path, func(t *testing.T) {
			n := newReplicaNet(t)
			n.add("r1.test:11434", nil)
			n.add("r2.test:11434", nil)
			g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434", "pool=http://r2.test:11434"), Transport: n.transport()},
				func(g *Gate) { g.probeIdle = time.Hour }) // only the gate's own routing counts after the first probe
			waitReplicas(t, g, "pool", 2)
			do(t, http.MethodPost, g.url+"/pool"+tc.path, strings.NewReader(tc.body), nil)
			settle(t, g, "pool")
			g.mu.Lock()
			defer g.mu.Unlock()
			loaded := 0
			for _, r := range g.byName["pool"].pool.replicas {
				if ok, _ := r.loaded.Loaded(time.Now(), "tiny:1b"); ok {
					loaded++
				}
			}
			if loaded != tc.loaded {
				t.Errorf("after POST %s: tiny:1b believed loaded on %d replicas, want %d", tc.path, loaded, tc.loaded)
			}
		})
	}
}

// deleteRecorder answers Ollama's DELETE /api/delete itself (200, as Ollama
// does) and counts them; everything else goes to the stand-in.
type deleteRecorder struct {
	http.Handler
	mu      sync.Mutex
	deletes int
}

func (d *deleteRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodDelete && r.URL.Path == "/api/delete" {
		d.mu.Lock()
		d.deletes++
		d.mu.Unlock()
		return
	}
	d.Handler.ServeHTTP(w, r)
}

func (d *deleteRecorder) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.deletes
}

// Open WebUI deletes a model with DELETE /api/delete and a JSON body: it goes
// to a replica that lists the model, not to one that would answer 404.
func TestPoolDeleteGoesToAReplicaThatListsTheModel(t *testing.T) {
	n := newReplicaNet(t)
	small := &deleteRecorder{Handler: fakeollama.New(fakeollama.Config{Models: []string{"small:1b"}, ChunkInterval: -1})}
	both := &deleteRecorder{Handler: fakeollama.New(fakeollama.Config{Models: []string{"small:1b", "big:70b"}, ChunkInterval: -1})}
	n.add("r1.test:11434", small)
	n.add("r2.test:11434", both)
	g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434", "pool=http://r2.test:11434"), Transport: n.transport()})
	waitReplicas(t, g, "pool", 2)
	for range 6 {
		if status, _, body := do(t, http.MethodDelete, g.url+"/pool/api/delete", strings.NewReader(`{"model":"big:70b"}`), nil); status != http.StatusOK {
			t.Fatalf("DELETE /api/delete: HTTP %d: %s", status, body)
		}
	}
	if s, b := small.count(), both.count(); s != 0 || b != 6 {
		t.Errorf("deletes of big:70b: r1 (small only) %d, r2 (lists it) %d; want 0 and 6", s, b)
	}
}

// A drained replica that comes back faster than the gate's probe (a pod
// restarted on the same address between two probes) is never seen down: it
// is taken back once it still serves a while after its drain answered, when
// its pod would long have stopped; or after its preStop hook gave up waiting
// for the answer (killed at the pod's grace period), which stops the pod too.
func TestPoolDrainedReplicaNeverSeenDownIsTakenBack(t *testing.T) {
	for _, hookGaveUp := range []bool{false, true} {
		t.Run(fmt.Sprintf("hook gave up=%v", hookGaveUp), func(t *testing.T) {
			n := newReplicaNet(t)
			drained := &psCounter{Handler: fakeollama.New(fakeollama.Config{ChunkInterval: -1})}
			n.add("127.0.0.1:11434", drained)
			n.add("127.0.0.2:11434", nil)
			var mu sync.Mutex
			now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			g := startGate(t, Config{Backends: poolConfig(t, "pool=http://127.0.0.1:11434", "pool=http://127.0.0.2:11434"), Transport: n.transport()},
				func(g *Gate) { g.now, g.probeIdle = clock, 10*time.Millisecond })
			waitReplicas(t, g, "pool", 2)
			replica := func() *replica { return g.byName["pool"].pool.byID("127.0.0.1:11434") }
			if !hookGaveUp {
				if status, _, body := do(t, http.MethodPost, g.url+"/_gate/drain?replica=127.0.0.1:11434", nil, nil); status != http.StatusOK {
					t.Fatalf("drain: HTTP %d %s", status, body)
				}
			} else {
				g.mu.Lock()
				replica().inFlight++ // an answer the drain waits for
				g.mu.Unlock()
				ctx, cancel := context.WithCancel(context.Background())
				hook := sendAsync(ctx, http.DefaultClient, http.MethodPost, g.url+"/_gate/drain?replica=127.0.0.1:11434", nil, nil)
				eventually(t, "draining", func() bool { return stats(g.Gate, "pool").Replicas[0].Draining })
				cancel()
				hook.wait(t)
				eventually(t, "the drain's end noted", func() bool {
					g.mu.Lock()
					defer g.mu.Unlock()
					return !replica().drainedAt.IsZero()
				})
				g.mu.Lock()
				replica().inFlight--
				g.mu.Unlock()
			}
			answered := clock()
			for _, tc := range []struct {
				after        time.Duration // since the drain answered, the replica up all along
				wantDraining bool
			}{
				{0, true},
				{drainForget - time.Second, true},
				{drainForget + time.Second, false},
			} {
				mu.Lock()
				now = answered.Add(tc.after)
				mu.Unlock()
				// A whole probe round at that time: rounds run one after another,
				// so the one that reads /api/ps second is applied by the third.
				before := drained.n.Load()
				eventually(t, "three probes of 127.0.0.1", func() bool { return drained.n.Load() >= before+3 })
				if got := stats(g.Gate, "pool").Replicas[0].Draining; got != tc.wantDraining {
					t.Errorf("%s after its drain answered, up all along: draining %v, want %v", tc.after, got, tc.wantDraining)
				}
			}
		})
	}
}

// psCounter counts the GET /api/ps that end each probe of a pool's replica.
type psCounter struct {
	http.Handler
	n atomic.Int64
}

func (c *psCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/api/ps" {
		c.n.Add(1)
	}
	c.Handler.ServeHTTP(w, r)
}
