package gate

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

// Item 9: a learning wake for a backend that never comes up (a bad image, a
// wrong port) ends after the hold timeout; the backend is then reported as
// not learnable (status and log), and page loads no longer ask for a wake.
func TestALearningWakeEndsAfterTheHoldTimeout(t *testing.T) {
	sb := newSleepyBackend(t, ollamaLike(nil, nil)) // never serves
	logs := &harness.SyncBuffer{}
	g := startGate(t, Config{
		Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())},
		HoldTimeout: 300 * time.Millisecond, Logger: log.NewLogfmtLogger(logs),
	}, func(g *Gate) { g.learnWait = 50 * time.Millisecond })
	eventually(t, "asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })
	if code, _, _ := do(t, "GET", g.url+"/api/tags", nil, nil); code != 503 {
		t.Fatalf("/api/tags never seen: %d, want 503", code)
	}
	if !mustDemand(t, g.Gate, DefaultName).Learning {
		t.Fatal("no learning wake")
	}
	eventually(t, "the learning wake ended", func() bool { return !mustDemand(t, g.Gate, DefaultName).Learning })
	st := g.status().Backends[0]
	if st.Learning || !strings.Contains(st.NotLearnable, "did not come up within 300ms") {
		t.Errorf("status learning=%v not_learnable=%q, want the backend reported as not learnable", st.Learning, st.NotLearnable)
	}
	if !strings.Contains(logs.String(), "not learnable") {
		t.Errorf("no log line says the backend is not learnable:\n%s", logs.String())
	}
	// Another page load: answered at once, no new wake.
	code, _, body := do(t, "GET", g.url+"/api/tags", nil, nil)
	if code != 503 || !strings.Contains(body, "not learnable") {
		t.Errorf("/api/tags after the learning wake gave up: %d %q", code, body)
	}
	if mustDemand(t, g.Gate, DefaultName).Learning {
		t.Error("a page load started a new learning wake for a backend that is not learnable")
	}
	// Once the backend is up (a held chat woke it), lists are learned again.
	c := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+"/api/chat", strings.NewReader(`{}`), nil)
	sb.serve()
	c.wait(t)
	eventually(t, "learnable again", func() bool { return g.status().Backends[0].NotLearnable == "" })
}

// Item 10: on a fresh gate whose backend accepts connections but does not
// answer, the whole first-list wait (first probe and learning wake) is one
// learnWait, not a probe timeout plus a learnWait.
func TestTheFirstListWaitIsOneLearnWait(t *testing.T) {
	sb := newSleepyBackend(t, ollamaLike(nil, nil))
	sb.listen() // TCP accepted, no HTTP answer: the probe waits its whole timeout
	const learn = 2 * time.Second
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}},
		func(g *Gate) { g.probeTimeout, g.learnWait = time.Hour, learn })
	start := time.Now()
	code, _, _ := do(t, "GET", g.url+"/api/tags", nil, nil)
	waited := time.Since(start)
	if code != 503 {
		t.Fatalf("status %d, want 503", code)
	}
	// Not a timing: two learnWait timers run one after the other (the old
	// code: the first-probe wait, then the learning wake) cannot end before
	// 2×learn, whatever the load; one deadline ends at learn, and only a
	// whole extra learn (2 s) of stall on the way back could reach 2×learn.
	if waited >= 2*learn {
		t.Errorf("the first list waited %s: a first-probe wait and a learning wake of %s each, not one wait", waited, learn)
	}
}

// Item 11: Open WebUI asks //api/tags when the Ollama URL ends in a slash;
// the unnamed backend takes it as /api/tags, as named ones do.
func TestUnnamedBackendToleratesOpenWebUIsDoubleSlash(t *testing.T) {
	sb := newSleepyBackend(t, ollamaLike(nil, nil))
	sb.serve()
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}, HoldTimeout: time.Second})
	eventually(t, "up", func() bool { return stats(g.Gate, DefaultName).State == StateUp })
	if code, _, body := do(t, "GET", g.url+"//api/tags", nil, nil); code != 200 || body != tagsBody {
		t.Fatalf("//api/tags while up: %d %q", code, body)
	}
	sb.stop()
	eventually(t, "asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })
	code, hdr, body := do(t, "GET", g.url+"//api/tags", nil, nil)
	if code != 200 || body != tagsBody || hdr.Get(FromMemoryHeader) != "1" {
		t.Errorf("//api/tags while asleep: %d %q, want the remembered list", code, body)
	}
	if d := mustDemand(t, g.Gate, DefaultName); d != (Demand{}) {
		t.Errorf("//api/tags is demand: %+v", d)
	}
}

// Item 12: a CORS preflight is never demand: while asleep it is answered
// without a wake and without granting anything the backend did not.
func TestACORSPreflightIsNotDemand(t *testing.T) {
	sb := newSleepyBackend(t, ollamaLike(nil, nil))
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}, HoldTimeout: time.Second})
	eventually(t, "asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })
	for _, path := range []string{"/api/tags", "/v1/models", "/api/chat"} {
		hdr := http.Header{"Origin": {"https://chat.example"}, "Access-Control-Request-Method": {"GET"}}
		changed := g.Changed()
		code, h, _ := do(t, "OPTIONS", g.url+path, nil, hdr)
		if code != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("OPTIONS %s while asleep: %d, Allow-Origin %q; want 204 granting nothing", path, code, h.Get("Access-Control-Allow-Origin"))
		}
		select {
		case <-changed:
			t.Errorf("OPTIONS %s changed the demand", path)
		case <-time.After(20 * time.Millisecond):
		}
		if d := mustDemand(t, g.Gate, DefaultName); d != (Demand{}) {
			t.Errorf("OPTIONS %s is demand: %+v", path, d)
		}
	}
}

// Item 13: dot segments never reach the backend above its path.
func TestDotSegmentsAreRejected(t *testing.T) {
	rec := &recorder{resp: func(http.ResponseWriter, *http.Request) {}}
	backend := httptest.NewServer(withVersion(rec))
	defer backend.Close()
	for _, tc := range []struct{ flag, path string }{
		{"big=" + backend.URL + "/ollama", "/big/../../admin/secret"},
		{"big=" + backend.URL + "/ollama", "/big/api/%2e%2e/%2E%2E/admin"},
		{"big=" + backend.URL + "/ollama", "/big/./api/tags"},
		{backend.URL + "/ollama", "/../admin/secret"},
		{backend.URL + "/ollama", "/api/.%2e/secret"},
	} {
		g := startGate(t, Config{Backends: []BackendConfig{backendURL(t, tc.flag)}})
		req, _ := http.NewRequest(http.MethodGet, g.url+"/", nil)
		req.URL.Opaque = tc.path // sent as written, not cleaned by the client
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", tc.path, res.StatusCode)
		}
		g.stop()
	}
	for _, s := range rec.requests() {
		if s.RequestURI != "/ollama/api/version" {
			t.Errorf("the backend got %s", s.RequestURI)
		}
	}
}

// Item 16: "/" is Ollama's liveness answer. While the backend sleeps the
// gate answers GET and HEAD / as Ollama does, without demand or a wake, even
// when it never saw the backend's answer.
func TestRootIsAnsweredWhileAsleepWithoutDemand(t *testing.T) {
	sb := newSleepyBackend(t, ollamaLike(nil, nil))
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}})
	eventually(t, "asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })
	for _, method := range []string{"HEAD", "GET"} {
		code, hdr, body := do(t, method, g.url+"/", nil, nil)
		want := "Ollama is running"
		if method == "HEAD" {
			want = ""
		}
		if code != 200 || body != want || hdr.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Errorf("%s / while asleep: %d %q %q, want 200 %q", method, code, body, hdr.Get("Content-Type"), want)
		}
	}
	if d := mustDemand(t, g.Gate, DefaultName); d != (Demand{}) {
		t.Errorf("/ is demand: %+v", d)
	}
}

// Item 8: what a peer sends is checked: negative or absurd counts are
// refused with a log line, and never lower this replica's own demand.
func TestBadPeerReportsAreRefused(t *testing.T) {
	for _, tc := range []struct{ what, report, log string }{
		{"negative held", `{"instance":"p1","backends":{"default":{"held":-1000,"in_flight":0}}}`, "negative"},
		{"absurd in flight", `{"instance":"p1","backends":{"default":{"held":0,"in_flight":1000000000}}}`, "absurd"},
		{"wrong type", `{"instance":"p1","backends":{"default":{"held":"1"}}}`, "unreadable"},
		{"negative user age", `{"instance":"p1","backends":{"default":{"users":{"u":-5}}}}`, "negative"},
		{"negative answers at once", `{"instance":"p1","backends":{"default":{"answers_at_once_seen":-2}}}`, "answers_at_once_seen is negative"},
		{"absurd answers at once", `{"instance":"p1","backends":{"default":{"answers_at_once_seen":100000}}}`, "answers_at_once_seen is absurd"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write([]byte(tc.report))
			}))
			defer peer.Close()
			sb := newSleepyBackend(t, ollamaLike(nil, nil))
			logs := &harness.SyncBuffer{}
			g := startGate(t, Config{
				Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())},
				Peers: peer.Listener.Addr().String(), Logger: log.NewLogfmtLogger(logs),
			}, func(g *Gate) { g.peerEvery = 10 * time.Millisecond })
			c := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+"/api/chat", strings.NewReader(`{}`), nil)
			defer c.wait(t)
			defer g.stop()
			eventually(t, "held", func() bool { return queued(g.Gate, DefaultName) == 1 })
			eventually(t, "the bad report logged", func() bool { return strings.Contains(logs.String(), "peer") && strings.Contains(logs.String(), tc.log) })
			if d := mustDemand(t, g.Gate, DefaultName); d.Held != 1 || d.InFlight != 0 || d.Recent != 0 {
				t.Errorf("Demand %+v, want only this replica's held request", d)
			}
		})
	}
}

// Item 7: a report of many users stays small (counts, not lists), and the
// held and in-flight counts of a peer are never lost.
func TestALargeDemandReportStaysBoundedAndKeepsCounts(t *testing.T) {
	backend := httptest.NewServer(withVersion(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	defer backend.Close()
	g := startGate(t, Config{Backends: []BackendConfig{backendURL(t, "big="+backend.URL+",wake=request,idle=10m")}})
	b := g.byName["big"]
	g.mu.Lock()
	now := g.now()
	for i := range 120000 {
		b.lastSeen[userKey("u"+strconv.Itoa(i))] = now
	}
	b.reading++ // a held request still reading its body (never released by the probe)
	b.inFlight += 2
	g.mu.Unlock()
	defer func() { g.mu.Lock(); b.reading--; b.inFlight -= 2; g.mu.Unlock() }()
	_, _, body := do(t, "GET", g.url+"/_gate/demand", nil, nil)
	if len(body) > 64<<10 {
		t.Errorf("/_gate/demand is %d bytes for 120000 users, want it bounded", len(body))
	}
	var rep DemandReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatal(err)
	}
	// What a peer fetches and takes from it.
	got, err := fetchDemand(context.Background(), http.DefaultClient, strings.TrimPrefix(g.url, "http://"))
	if err != nil {
		t.Fatalf("a peer could not read the report: %v", err)
	}
	other := startGate(t, Config{Backends: []BackendConfig{backendURL(t, "big="+backend.URL+",wake=request,idle=10m")}})
	other.mergePeers([]*DemandReport{got})
	if d := mustDemand(t, other.Gate, "big"); d.Held != 1 || d.InFlight != 2 || d.Recent != 120000 {
		t.Errorf("the peer's demand as seen by another replica: %+v, want held 1, in flight 2, recent 120000", d)
	}
}

// A lookup of --gate.peers that hangs is given up: the loop goes on, logs
// it, and the peers' reports age out.
func TestAHangingPeerLookupTimesOut(t *testing.T) {
	backend := httptest.NewServer(withVersion(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	defer backend.Close()
	logs := &harness.SyncBuffer{}
	var lookups sync.WaitGroup
	lookups.Add(2)
	var once [2]sync.Once
	n := 0
	var mu sync.Mutex
	startGate(t, Config{Backends: []BackendConfig{backendURL(t, backend.URL)}, Peers: "peers.test:9100", Logger: log.NewLogfmtLogger(logs)},
		func(g *Gate) {
			g.peerEvery, g.peerLookupTimeout = 10*time.Millisecond, 50*time.Millisecond
			g.lookup = func(ctx context.Context, _ string) ([]net.IPAddr, error) {
				mu.Lock()
				i := n
				n++
				mu.Unlock()
				if i < 2 {
					defer once[i].Do(lookups.Done)
				}
				<-ctx.Done() // a resolver that never answers
				return nil, ctx.Err()
			}
		})
	done := make(chan struct{})
	go func() { lookups.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the peer loop never looked up again: the first lookup hangs")
	}
	if !strings.Contains(logs.String(), "resolving the gate's peers failed") || !strings.Contains(logs.String(), "deadline exceeded") {
		t.Errorf("no log line for the timed-out lookup:\n%s", logs.String())
	}
}

// Item 14: a TLS failure (an untrusted certificate, an https URL for a plain
// HTTP server) is a misconfiguration, not a start-up: the state says so, the
// reason and the log name the TLS error, and requests are answered at once.
func TestTLSFailuresAreAMisconfiguration(t *testing.T) {
	tlsBackend := httptest.NewTLSServer(ollamaLike(nil, nil)) // its certificate is trusted by nobody
	defer tlsBackend.Close()
	plain := httptest.NewServer(ollamaLike(nil, nil))
	defer plain.Close()
	for _, tc := range []struct{ what, url, reason string }{
		{"untrusted certificate", tlsBackend.URL, "x509: certificate signed by unknown authority"},
		{"https to a plain HTTP server", strings.Replace(plain.URL, "http://", "https://", 1), "does not speak TLS"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			logs := &harness.SyncBuffer{}
			g := startGate(t, Config{Backends: []BackendConfig{backendURL(t, tc.url)}, Logger: log.NewLogfmtLogger(logs)})
			eventually(t, "misconfigured", func() bool { return stats(g.Gate, DefaultName).State == StateMisconfigured })
			if r := stats(g.Gate, DefaultName).Reason; !strings.Contains(r, tc.reason) {
				t.Errorf("reason %q, want it to name %q", r, tc.reason)
			}
			if !strings.Contains(logs.String(), tc.reason) {
				t.Errorf("the log does not name %q:\n%s", tc.reason, logs.String())
			}
			code, hdr, body := do(t, "POST", g.url+"/api/chat", strings.NewReader(`{}`), nil)
			if code != http.StatusBadGateway || hdr.Get("X-Gate-Error") != codeTLS || !strings.Contains(errorMessage(t, body, false), tc.reason) {
				t.Errorf("a chat: %d %s %q, want a 502 %s naming the TLS error", code, hdr.Get("X-Gate-Error"), body, codeTLS)
			}
		})
	}
}

// Item 15: vLLM and llama.cpp stamp /v1/models with "created" = now (vLLM
// also a fresh "permission" id): the memory keeps the latest answer, but the
// state file is written only when the models change.
func TestTheStateFileIsWrittenOnlyWhenTheModelsChange(t *testing.T) {
	g, err := New(Config{Backends: []BackendConfig{backendURL(t, "http://vllm.test:8000")}, StateFile: t.TempDir() + "/state.json"})
	if err != nil {
		t.Fatal(err)
	}
	b := g.byName[DefaultName]
	vllm := func(created int, ids ...string) []byte {
		var data []string
		for _, id := range ids {
			data = append(data, `{"id":"`+id+`","object":"model","created":`+strconv.Itoa(created)+`,"owned_by":"vllm","root":"`+id+`","parent":null,"max_model_len":8192,"permission":[{"id":"modelperm-`+strconv.Itoa(created)+`","object":"model_permission","created":`+strconv.Itoa(created)+`}]}`)
		}
		return []byte(`{"object":"list","data":[` + strings.Join(data, ",") + `]}`)
	}
	steps := []struct {
		what  string
		body  []byte
		write bool
	}{
		{"the first list", vllm(1000, "qwen"), true},
		{"the same model, a new created and permission id", vllm(1001, "qwen"), false},
		{"again", vllm(1002, "qwen"), false},
		{"a model added", vllm(1003, "qwen", "llama"), true},
		{"llama.cpp's shape, created only", []byte(`{"object":"list","data":[{"id":"qwen","object":"model","created":1004,"owned_by":"llamacpp"},{"id":"llama","object":"model","created":1004,"owned_by":"llamacpp"}]}`), true},
		{"llama.cpp again", []byte(`{"object":"list","data":[{"id":"qwen","object":"model","created":1005,"owned_by":"llamacpp"},{"id":"llama","object":"model","created":1005,"owned_by":"llamacpp"}]}`), false},
	}
	for _, st := range steps {
		g.remember(b, pathModels, "application/json", st.body)
		var dirty bool
		select {
		case <-g.stateDirty:
			dirty = true
		default:
		}
		if dirty != st.write {
			t.Errorf("%s: state file written %v, want %v", st.what, dirty, st.write)
		}
		if got := string(b.lists[pathModels].Body); got != string(st.body) {
			t.Errorf("%s: memory serves %s, want the latest answer", st.what, got)
		}
	}
}

// Item 16 at the gate: the request shapes of the Go CLI (`ollama run`: HEAD
// /, then /api/show and the chat) and of the official JavaScript and Python
// clients (their User-Agent, Accept and Content-Type) through a sleeping
// backend: / and the lists are answered without demand, the rest is held and
// delivered once.
func TestOllamaClientsThroughASleepingGate(t *testing.T) {
	rec := &recorder{resp: func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = w.Write([]byte(`{"done":true}`))
	}}
	lists := ollamaLike(nil, nil)
	sb := newSleepyBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isList(r.Method, r.URL.Path) {
			lists.ServeHTTP(w, r)
			return
		}
		rec.ServeHTTP(w, r)
	}))
	sb.serve()
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}})
	eventually(t, "up", func() bool { return stats(g.Gate, DefaultName).State == StateUp })
	do(t, "GET", g.url+"/api/tags", nil, nil)
	sb.stop()
	eventually(t, "asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })

	cli := http.Header{"User-Agent": {"ollama/0.17.4 (amd64 linux) Go/go1.24.1"}, "Accept": {"application/x-ndjson"}, "Content-Type": {"application/json"}}
	js := http.Header{"User-Agent": {"ollama-js/0.6.0 (x64 linux Node.js/v22.12.0)"}, "Accept": {"application/json"}, "Content-Type": {"application/json"}}
	py := http.Header{"User-Agent": {"ollama-python/0.5.1 (x86_64 linux) Python/3.12.8"}, "Accept": {"application/json"}, "Content-Type": {"application/json"}}
	for _, c := range []struct {
		who          string
		hdr          http.Header
		method, path string
	}{
		{"cli heartbeat", cli, "HEAD", "/"},
		{"cli list", cli, "GET", "/api/tags"},
		{"cli ps", cli, "GET", "/api/ps"},
		{"js list", js, "GET", "/api/tags"},
		{"python list", py, "GET", "/api/tags"},
	} {
		if code, _, _ := do(t, c.method, g.url+c.path, nil, c.hdr); code != 200 {
			t.Errorf("%s (%s %s) while asleep: %d, want 200", c.who, c.method, c.path, code)
		}
	}
	if d := mustDemand(t, g.Gate, DefaultName); d != (Demand{}) {
		t.Fatalf("heartbeat and lists are demand: %+v", d)
	}
	var clients []*heldClient
	for _, c := range []struct {
		hdr        http.Header
		path, body string
	}{
		{cli, "/api/show", `{"model":"tiny"}`},
		{cli, "/api/chat", `{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`},
		{js, "/api/chat", `{"model":"tiny","messages":[{"role":"user","content":"js"}],"stream":false}`},
		{py, "/api/generate", `{"model":"tiny","prompt":"py","stream":false}`},
	} {
		clients = append(clients, sendAsync(context.Background(), http.DefaultClient, "POST", g.url+c.path, strings.NewReader(c.body), c.hdr))
	}
	eventually(t, "all four held", func() bool { return mustDemand(t, g.Gate, DefaultName).Held == 4 })
	sb.serve()
	for i, c := range clients {
		if c.wait(t); c.err != nil || c.status != 200 {
			t.Errorf("request %d through the wake: %d %q %v", i, c.status, c.body, c.err)
		}
	}
	if n := len(rec.requests()); n != 4 {
		t.Errorf("the backend got %d requests, want the 4 held ones once each", n)
	}
}

// A report listing more users than a replica lists now (an older replica in
// a rollout) is kept: its users become a number, its held count stays.
func TestAnOlderPeersLongUserListIsKept(t *testing.T) {
	rep := &DemandReport{Instance: "old", Backends: map[string]BackendDemand{"big": {Held: 2, Users: map[string]float64{}, Anonymous: 1}}}
	for i := range maxReportUsers + 5 {
		rep.Backends["big"].Users[strconv.Itoa(i)] = 1
	}
	if err := rep.check(); err != nil {
		t.Fatalf("check: %v", err)
	}
	if d := rep.Backends["big"]; d.Held != 2 || d.Users != nil || d.Recent != maxReportUsers+5+1 {
		t.Errorf("kept as %+v, want held 2 and the %d users as a number", d, maxReportUsers+5)
	}
}
