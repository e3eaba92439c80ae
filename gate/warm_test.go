package gate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
)

func TestParseWarm(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Warm // after New's defaults
		wantErr string
	}{
		{in: "http://o:1", want: Warm{Mode: WarmAuto, MaxLoaded: 1}},
		{in: "a=http://o:1", want: Warm{Mode: WarmAuto, MaxLoaded: 1}},
		{in: "a=http://o:1,wake=request", want: Warm{Mode: WarmOff, MaxLoaded: 1}},
		{in: "a=http://o:1,wake=request,warm=auto", want: Warm{Mode: WarmAuto, MaxLoaded: 1}},
		{in: "a=http://o:1,warm=off", want: Warm{Mode: WarmOff, MaxLoaded: 1}},
		{in: "a=http://o:1,warm=llama3.1:8b+qwen3:32b+llama3.1:8b", want: Warm{Mode: WarmList, Models: []string{"llama3.1:8b", "qwen3:32b"}, MaxLoaded: 1}},
		{in: "a=http://o:1,warm=auto,max-loaded=3", want: Warm{Mode: WarmAuto, MaxLoaded: 3}},
		{in: "a=http://o:1,warm=hf.co/org/model:Q4_K_M", want: Warm{Mode: WarmList, Models: []string{"hf.co/org/model:Q4_K_M"}, MaxLoaded: 1}},
		{in: "a=http://o:1,warm=", wantErr: "empty model name"},
		{in: "a=http://o:1,warm=a++b", wantErr: "empty model name"},
		{in: "a=http://o:1,warm=list", wantErr: "want warm=MODEL"},
		{in: "a=http://o:1,max-loaded=0", wantErr: "max-loaded=\"0\": want a whole number from 1 to 64"},
		{in: "a=http://o:1,max-loaded=many", wantErr: "want a whole number"},
		{in: "a=http://o:1,wake=request,max-loaded=2", wantErr: "max-loaded= needs warming"},
		{in: "http://o:1,warm=off", wantErr: "options need a named backend"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			bc, err := ParseBackend(tc.in)
			if expectError(t, err, tc.wantErr) {
				return
			}
			g, err := New(Config{Backends: []BackendConfig{bc}})
			if err != nil {
				t.Fatal(err)
			}
			if got := g.Backends()[0].Warm; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("warm = %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := New(Config{Backends: []BackendConfig{{URL: mustURL(t, "http://o:1"), Warm: Warm{Mode: WarmList}}}}); err == nil || !strings.Contains(err.Error(), "a list with no model") {
		t.Errorf("New with an empty list: %v, want an error", err)
	}
}

func TestModelOf(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"model":"llama3.1:8b","messages":[]}`, "llama3.1:8b"},
		{`{"messages":[{"role":"user","content":"{\"model\":\"x\"}"}],"options":{"model":"y"},"model":"qwen3:32b"}`, "qwen3:32b"},
		{`{"stream":true,"model":"a:1","messages":[{"content":"cut sho`, "a:1"},
		{`{"messages":[{"content":"cut sho`, ""},
		{`{"model":42}`, ""},
		{`{"model":"has space"}`, ""},
		{`[{"model":"x"}]`, ""},
		{``, ""},
	} {
		if got := modelOf([]byte(tc.body)); got != tc.want {
			t.Errorf("modelOf(%s) = %q, want %q", tc.body, got, tc.want)
		}
	}
}

// The runner options a load request's body carries, as the warm-ups repeat
// them, and when they are unknown.
func TestRequestOf(t *testing.T) {
	for _, tc := range []struct {
		body, runner string
		known        bool
	}{
		{`{"model":"a:1","messages":[{"role":"user","content":"hi"}],"options":{"temperature":0.7,"num_ctx":16384}}`, `{"num_ctx":16384}`, true},
		{`{"model":"a:1","options":{"use_mmap":false,"num_thread":8,"num_gpu":99,"main_gpu":1,"num_batch":512,"num_ctx": 4096}}`,
			`{"main_gpu":1,"num_batch":512,"num_ctx":4096,"num_gpu":99,"num_thread":8,"use_mmap":false}`, true},
		{`{"model":"a:1","options":{"temperature":0.7}}`, "", true},
		{`{"model":"a:1","options":null}`, "", true},
		{`{"model":"a:1","options":{"num_ctx":null}}`, "", true},
		{`{"model":"a:1","messages":[]}`, "", true},
		{`{"model":"a:1","messages":[{"content":"cut sho`, "", false},
		{`{"options":{"num_ctx":2048},"model":"a:1","messages":[{"content":"cut sho`, `{"num_ctx":2048}`, true},
		{`not json`, "", false},
	} {
		if got := requestOf([]byte(tc.body)); got.runner != tc.runner || got.runnerKnown != tc.known {
			t.Errorf("requestOf(%s): runner %q known %v, want %q %v", tc.body, got.runner, got.runnerKnown, tc.runner, tc.known)
		}
	}
}

// people is a stand-in for Open WebUI's presence.
type people struct {
	mu       sync.Mutex
	ids      []string
	known    bool
	defaults []string
}

func (p *people) Present() ([]string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.ids...), p.known
}

func (p *people) DefaultModels() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.defaults...)
}

func (p *people) set(ids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ids, p.known = ids, true
}

// warmRig is a gate in front of a stand-in Ollama that loads models as
// Ollama does, behind a backend that sleeps and wakes.
type warmRig struct {
	t      *testing.T
	gate   *testGate
	loader *fakeollama.Loader
	be     *sleepyBackend
	people *people
}

func newWarmRig(t *testing.T, backend string, lcfg fakeollama.LoaderConfig, tune ...func(*Config)) *warmRig {
	t.Helper()
	return newWarmRigOf(t, backend, fakeollama.Config{Chunks: 2, ChunkInterval: -1}, lcfg, tune...)
}

// newWarmRigOf is newWarmRig with the stand-in's answers shaped by fcfg.
func newWarmRigOf(t *testing.T, backend string, fcfg fakeollama.Config, lcfg fakeollama.LoaderConfig, tune ...func(*Config)) *warmRig {
	t.Helper()
	fcfg.Models = []string{"small:8b", "big:70b"}
	loader := fakeollama.NewLoader(fakeollama.New(fcfg), lcfg)
	be := newSleepyBackend(t, loader)
	p := &people{}
	cfg := Config{Backends: []BackendConfig{backendURL(t, strings.ReplaceAll(backend, "URL", be.url()))}, Transport: be.transport(), People: p}
	for _, f := range tune {
		f(&cfg)
	}
	g := startGate(t, cfg, func(g *Gate) {
		g.warmEvery = 10 * time.Millisecond
		g.warmKeepEvery = 20 * time.Millisecond
	})
	return &warmRig{t: t, gate: g, loader: loader, be: be, people: p}
}

func (r *warmRig) name() string { return r.gate.backends[0].name }

// chat sends a chat through the gate as Open WebUI does, with the user header.
func (r *warmRig) chat(user, model string) {
	r.t.Helper()
	if err := r.send(user, model); err != nil {
		r.t.Fatal(err)
	}
}

// embed sends an embedding request as Open WebUI's RAG does, with the user
// header.
func (r *warmRig) embed(user, model string) {
	r.t.Helper()
	if err := r.post(user, "api/embed", `{"model":"`+model+`","input":"a document"}`); err != nil {
		r.t.Fatal(err)
	}
}

// send is chat for any goroutine: it reports instead of failing the test.
func (r *warmRig) send(user, model string) error {
	return r.post(user, "api/chat", `{"model":"`+model+`","stream":false,"messages":[{"role":"user","content":"hi"}]}`)
}

// post sends body to path of the backend, with the user header.
func (r *warmRig) post(user, path, body string) error {
	what := path + " " + modelOf([]byte(body))
	req, err := http.NewRequest(http.MethodPost, r.gate.url+r.gate.backends[0].prefix+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if user != "" {
		req.Header.Set(UserHeader, user)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer res.Body.Close()
	answer, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("%s: reading the answer: %w", what, err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", what, res.StatusCode, answer)
	}
	return nil
}

// restart stops the backend and starts it again with nothing loaded.
func (r *warmRig) restart() {
	r.be.stop()
	r.loader.Reset()
	eventually(r.t, "the gate sees the backend asleep", func() bool { return stats(r.gate.Gate, r.name()).State == StateAsleep })
	r.be.serve()
}

// awake waits until the gate has seen the backend up and settled that
// wake's warm-ups. A test that chats before then races the wake's plan: it is
// made from the models served so far, so a plan made between two chats can
// warm (or skip) a model the test does not expect.
func (r *warmRig) awake() {
	r.t.Helper()
	eventually(r.t, "the wake's warm-ups settled", func() bool {
		r.gate.mu.Lock()
		defer r.gate.mu.Unlock()
		b := r.gate.backends[0]
		return b.state == StateUp && b.warm.wakeDone && len(b.warm.pending) == 0 && b.warm.loading == ""
	})
}

// keepChecks waits until the keep_alive check has begun n times from now
// (the first may have read /api/ps before now; the later ones did not).
func (r *warmRig) keepChecks(n int) {
	r.t.Helper()
	last := time.Now()
	for i := range n {
		eventually(r.t, fmt.Sprintf("keep_alive check %d", i+1), func() bool {
			r.gate.mu.Lock()
			defer r.gate.mu.Unlock()
			if at := r.gate.backends[0].warm.lastKeep; at.After(last) {
				last = at
				return true
			}
			return false
		})
	}
}

func (r *warmRig) warmups(model string, o WarmOutcome) uint64 {
	return stats(r.gate.Gate, r.name()).Warm.Outcomes[model][o]
}

// isForever says whether model is loaded with keep_alive -1 (/api/ps).
func (r *warmRig) isForever(model string) bool {
	exp, err := r.gate.loadedExpiry(r.t.Context(), r.gate.backends[0])
	return err == nil && exp[model].After(time.Now().Add(100*365*24*time.Hour))
}

func (r *warmRig) status() BackendStatus {
	r.t.Helper()
	_, _, body := do(r.t, http.MethodGet, r.gate.url+"/_gate/status", nil, nil)
	var rep StatusReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		r.t.Fatal(err)
	}
	return rep.Backends[0]
}

// What is warmed at a wake, before any chat.
func TestWarmOnWake(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend string
		learn   func(r *warmRig) // while up, before the restart
		present []string
		want    []string // loaded after the wake
	}{
		{
			name: "an explicit list", backend: "pool=URL,warm=small:8b",
			want: []string{"small:8b"},
		},
		{
			name: "auto: the model each person here used last", backend: "pool=URL,warm=auto",
			learn:   func(r *warmRig) { r.chat("alice", "big:70b"); r.chat("bob", "small:8b") },
			present: []string{"alice"},
			want:    []string{"big:70b"},
		},
		{
			name: "auto: an embedding is not the model a person chats with", backend: "pool=URL,warm=auto",
			learn:   func(r *warmRig) { r.chat("alice", "big:70b"); r.embed("alice", "small:8b") },
			present: []string{"alice"},
			want:    []string{"big:70b"},
		},
		{
			name: "auto: a backend that only embeds warms its embedding model", backend: "pool=URL,warm=auto",
			learn:   func(r *warmRig) { r.embed("alice", "small:8b") },
			present: []string{"alice"},
			want:    []string{"small:8b"},
		},
		{
			name: "auto: the most wanted when only one fits", backend: "pool=URL,warm=auto",
			learn:   func(r *warmRig) { r.chat("alice", "big:70b"); r.chat("bob", "small:8b"); r.chat("carol", "small:8b") },
			present: []string{"alice", "bob", "carol"},
			want:    []string{"small:8b"},
		},
		{
			name: "auto: two when two fit", backend: "pool=URL,warm=auto,max-loaded=2",
			learn:   func(r *warmRig) { r.chat("alice", "big:70b"); r.chat("bob", "small:8b") },
			present: []string{"alice", "bob"},
			want:    []string{"big:70b", "small:8b"},
		},
		{
			name: "auto: nobody known, the most recent model", backend: "pool=URL,warm=auto",
			learn: func(r *warmRig) { r.chat("", "small:8b"); r.chat("", "big:70b") },
			want:  []string{"big:70b"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newWarmRig(t, tc.backend, fakeollama.LoaderConfig{MaxLoaded: 2})
			r.be.serve()
			if tc.learn != nil {
				tc.learn(r)
			}
			r.people.set(tc.present...)
			r.restart()
			eventually(t, "the warm-ups", func() bool { return reflect.DeepEqual(r.loader.Loaded(), tc.want) })
			// Nothing but the gate's warm-ups reached the backend, and they
			// were never demand.
			if d := mustDemand(t, r.gate.Gate, r.name()); d.Held+d.InFlight != 0 {
				t.Errorf("demand %+v during warming, want none", d)
			}
			eventually(t, "/_gate/status shows what is warm", func() bool { return reflect.DeepEqual(r.status().Warm, tc.want) })
			for _, m := range tc.want {
				eventually(t, "the warm-up counted", func() bool { return r.warmups(m, WarmLoaded) == 1 })
				if h := stats(r.gate.Gate, r.name()).Warm.Durations[m]; h.Count != 1 {
					t.Errorf("%s: load time observed %d times, want 1", m, h.Count)
				}
			}
		})
	}
}

// A request held for one model goes before a warm-up of another: Ollama
// loads one model at a time.
func TestWarmNeverAheadOfAHeldRequest(t *testing.T) {
	for _, tc := range []struct {
		name, backend string
		wantLoads     []string
		wantOutcome   WarmOutcome
	}{
		// auto never makes Ollama unload: the held request's model fills the room.
		{"auto skips what does not fit", "pool=URL,warm=auto", []string{"big:70b"}, WarmSkipped},
		// an explicit list is loaded as given, once the request in flight is done.
		{"a list waits for the request in flight", "pool=URL,warm=small:8b", []string{"big:70b", "small:8b"}, WarmLoaded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newWarmRig(t, tc.backend, fakeollama.LoaderConfig{LoadTime: map[string]time.Duration{"big:70b": 100 * time.Millisecond}})
			r.people.set("alice")
			r.be.serve()
			r.chat("alice", "small:8b") // auto learns small:8b
			// Let warming settle (the chat started Ollama's timer; the gate
			// sets keep_alive -1 again), so that nothing of it is on the wire
			// when the backend stops.
			eventually(t, "small:8b kept", func() bool { return r.isForever("small:8b") })
			r.be.stop()
			r.loader.Reset()
			eventually(t, "asleep", func() bool { return stats(r.gate.Gate, r.name()).State == StateAsleep })
			before := r.warmups("small:8b", tc.wantOutcome) // a list was warmed at the first wake too
			done := make(chan struct{})
			go func() {
				defer close(done)
				r.chat("bob", "big:70b")
			}()
			eventually(t, "the chat held", func() bool { return queued(r.gate.Gate, r.name()) == 1 })
			r.be.serve()
			<-done
			eventually(t, "the warm-up decided", func() bool { return r.warmups("small:8b", tc.wantOutcome) == before+1 })
			if got := r.loader.Loads(); !reflect.DeepEqual(got, tc.wantLoads) {
				t.Errorf("loads %v, want %v: the held request's model first", got, tc.wantLoads)
			}
		})
	}
}

// A person the gate knows arrives while the backend is up: their model is
// loaded if it is not.
func TestWarmOnArrival(t *testing.T) {
	r := newWarmRig(t, "pool=URL,warm=auto", fakeollama.LoaderConfig{})
	r.be.serve()
	r.people.set()
	r.awake() // nobody here, nothing served: the wake warms nothing
	r.chat("alice", "big:70b")
	r.chat("bob", "small:8b") // one fits: big:70b is unloaded
	if got := r.loader.Loaded(); !reflect.DeepEqual(got, []string{"small:8b"}) {
		t.Fatalf("loaded %v", got)
	}
	// bob's small:8b is kept only while he is here; he leaves, alice arrives.
	r.people.set("alice")
	eventually(t, "alice's model loaded", func() bool {
		return reflect.DeepEqual(r.loader.Loaded(), []string{"big:70b"}) || r.warmups("big:70b", WarmSkipped) > 0
	})
	// max-loaded=1 and small:8b still in memory on Ollama's timer: auto does
	// not unload it, so the arrival is skipped, counted, and not retried.
	if r.warmups("big:70b", WarmSkipped) != 1 {
		t.Errorf("warm-ups of big:70b: %v, want 1 skipped (small:8b fills the room)", stats(r.gate.Gate, r.name()).Warm.Outcomes)
	}
}

// afterRead is the gate's transport with a hook: once armed, the next
// /api/ps answer is handed back only after the hook ran.
type afterRead struct {
	http.RoundTripper
	mu    sync.Mutex
	hook  func()
	reads int
}

func (a *afterRead) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := a.RoundTripper.RoundTrip(req)
	if req.URL.Path != "/api/ps" || err != nil {
		return res, err
	}
	a.mu.Lock()
	hook := a.hook
	a.hook = nil
	a.reads++
	a.mu.Unlock()
	if hook != nil {
		// The answer is read before the hook runs: what the gate decodes is
		// what Ollama listed then, however long the hook takes.
		body, readErr := io.ReadAll(res.Body)
		res.Body.Close()
		if readErr != nil {
			return nil, readErr
		}
		res.Body = io.NopCloser(bytes.NewReader(body))
		hook()
	}
	return res, err
}

func (a *afterRead) arm(hook func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hook = hook
}

func (a *afterRead) readCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reads
}

// A warm-up, or a keep_alive set again, is decided on what /api/ps listed.
// A chat for another model that begins after that read may make Ollama load
// its model: the gate's load must not follow, or it would evict the model
// somebody is using (Ollama here holds one model).
func TestWarmNeverActsOnAStaleRead(t *testing.T) {
	for _, tc := range []struct {
		name string
		// arm leaves the warming under test to the next /api/ps read, with
		// the hook armed.
		arm func(r *warmRig, arm func())
	}{
		{"a warm-up at a wake", func(r *warmRig, arm func()) {
			r.chat("alice", "big:70b")
			r.be.stop()
			r.loader.Reset()
			eventually(r.t, "asleep", func() bool { return stats(r.gate.Gate, r.name()).State == StateAsleep })
			r.people.set("alice")
			arm()
			r.be.serve() // the wake plans big:70b for alice
		}},
		{"keep_alive -1 set again", func(r *warmRig, arm func()) {
			r.people.set("alice")
			r.chat("alice", "big:70b")
			eventually(r.t, "big:70b kept", func() bool { return r.isForever("big:70b") })
			// Ollama's default timer again, as a chat through another path
			// would set it: keepWarm sets -1 at its next read.
			preload := httptest.NewRecorder()
			r.loader.ServeHTTP(preload, httptest.NewRequest(http.MethodPost, "/api/generate", strings.NewReader(`{"model":"big:70b","keep_alive":"5m"}`)))
			if preload.Code != http.StatusOK {
				r.t.Fatalf("preload: %d %s", preload.Code, preload.Body)
			}
			arm()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reads := &afterRead{}
			r := newWarmRig(t, "pool=URL,warm=auto", fakeollama.LoaderConfig{LoadTime: map[string]time.Duration{"small:8b": 50 * time.Millisecond}},
				func(c *Config) { reads.RoundTripper = c.Transport; c.Transport = reads })
			r.be.serve()
			r.people.set()
			r.awake()
			bob := make(chan error, 1) // how bob's chat ended
			hooked := make(chan error, 1)
			var loadsBefore int
			tc.arm(r, func() {
				loadsBefore = len(r.loader.Loads())
				reads.arm(func() {
					// The hook runs on the gate's warm loop: it reports, the
					// test goroutine asserts.
					go func() { bob <- r.send("bob", "small:8b") }()
					// Until bob's load has reached Ollama's loader (not just
					// the gate), so that a load the gate sends now would come
					// after it and evict it.
					deadline := time.Now().Add(15 * time.Second)
					for r.loader.Loading() != "small:8b" && !slices.Contains(r.loader.Loads()[loadsBefore:], "small:8b") {
						if time.Now().After(deadline) {
							hooked <- errors.New("bob's load never reached the loader")
							return
						}
						time.Sleep(time.Millisecond)
					}
					hooked <- nil
				})
			})
			for _, wait := range []struct {
				what string
				ch   <-chan error
			}{{"the armed /api/ps read", hooked}, {"bob's chat", bob}} {
				select {
				case err := <-wait.ch:
					if err != nil {
						t.Fatalf("%s: %v", wait.what, err)
					}
				case <-time.After(15 * time.Second):
					t.Fatalf("timed out waiting for %s", wait.what)
				}
			}
			// Let the gate look again twice: a load it should not send has
			// had its chance.
			n := reads.readCount()
			eventually(t, "two more reads", func() bool { return reads.readCount() >= n+2 })
			if got := r.loader.Loads()[loadsBefore:]; !reflect.DeepEqual(got, []string{"small:8b"}) {
				t.Errorf("loads after the read %v, want [small:8b]: the gate's own load evicted bob's model", got)
			}
			if got := r.loader.Loaded(); !reflect.DeepEqual(got, []string{"small:8b"}) {
				t.Errorf("loaded %v, want bob's [small:8b]", got)
			}
		})
	}
}

// A failed warm-up is logged and counted once, not retried until the next
// wake, and never demand.
func TestWarmFailureIsNotRetried(t *testing.T) {
	r := newWarmRig(t, "pool=URL,warm=nope:1b", fakeollama.LoaderConfig{})
	r.be.serve()
	eventually(t, "the failure counted", func() bool { return r.warmups("nope:1b", WarmFailed) == 1 })
	// Many warm ticks later (10 ms each), still one.
	for i := 0; i < 20; i++ {
		time.Sleep(10 * time.Millisecond)
		if d := mustDemand(t, r.gate.Gate, r.name()); d.Held+d.InFlight != 0 || d.Learning {
			t.Fatalf("demand %+v from a failed warm-up", d)
		}
	}
	if n := r.warmups("nope:1b", WarmFailed); n != 1 {
		t.Errorf("failed warm-ups %d, want 1 (not retried in a loop)", n)
	}
	r.restart()
	eventually(t, "tried again at the next wake", func() bool { return r.warmups("nope:1b", WarmFailed) == 2 })
}

// An OpenAI-compatible server has no load request: nothing is sent.
func TestWarmLeavesOpenAIServersOut(t *testing.T) {
	var mu sync.Mutex
	var posts int
	be := newSleepyBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			mu.Lock()
			posts++
			mu.Unlock()
		}
		if r.URL.Path == "/v1/models" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"object":"list","data":[{"id":"m"}]}`))
			return
		}
		http.NotFound(w, r)
	}))
	g := startGate(t, Config{Backends: []BackendConfig{backendURL(t, "vllm="+be.url()+",warm=m")}, Transport: be.transport()},
		func(g *Gate) { g.warmEvery = 10 * time.Millisecond })
	be.serve()
	eventually(t, "up", func() bool { return stats(g.Gate, "vllm").State == StateUp })
	eventually(t, "the gate gave up warming it", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.byName["vllm"].warm.notOllama
	})
	mu.Lock()
	defer mu.Unlock()
	if posts != 0 || len(stats(g.Gate, "vllm").Warm.Outcomes) != 0 {
		t.Errorf("%d POSTs, outcomes %v: want none", posts, stats(g.Gate, "vllm").Warm.Outcomes)
	}
}

// /_gate/status shows the gate's own load under way, for the filter.
func TestWarmStatusShowsTheLoad(t *testing.T) {
	r := newWarmRig(t, "pool=URL,warm=big:70b", fakeollama.LoaderConfig{LoadTime: map[string]time.Duration{"big:70b": time.Hour}})
	r.be.serve()
	eventually(t, "loading shown", func() bool {
		l := r.status().Loading
		return len(l) == 1 && l[0].Model == "big:70b" && l[0].By == "warm-up"
	})
	if w := r.status().Warm; len(w) != 0 {
		t.Errorf("warm %v while it still loads, want none", w)
	}
}

// keep_alive follows who is here: a kept model whose timer a chat started
// again is kept for ever again; once its people left while others stay, it
// goes back to Ollama's timer.
func TestWarmKeepAliveFollowsPeople(t *testing.T) {
	r := newWarmRig(t, "pool=URL,warm=auto,max-loaded=2", fakeollama.LoaderConfig{MaxLoaded: 2})
	r.be.serve()
	r.chat("alice", "big:70b")
	r.chat("bob", "small:8b")
	r.people.set("alice", "bob")
	r.restart()
	eventually(t, "both warm", func() bool { return len(r.status().Warm) == 2 })
	forever := r.isForever
	r.chat("alice", "big:70b") // Ollama's default keep_alive again
	eventually(t, "big:70b kept for ever again", func() bool { return forever("big:70b") })
	r.people.set("alice") // bob left
	eventually(t, "small:8b handed back to Ollama's timer", func() bool {
		exp, _ := r.gate.loadedExpiry(t.Context(), r.gate.backends[0])
		_, loaded := exp["small:8b"]
		return loaded && !forever("small:8b") && reflect.DeepEqual(r.status().Warm, []string{"big:70b"})
	})
	r.people.set() // everybody left: nothing changes, KEDA's cooldown decides
	time.Sleep(50 * time.Millisecond)
	if !forever("big:70b") {
		t.Error("big:70b lost its keep_alive when the pool's demand went: KEDA's cooldown decides, not Ollama's timer")
	}
}

// What auto learned survives a restart of the gate (--gate.state-file) and
// reaches the other replicas (/_gate/demand).
func TestWarmLearnedStateSurvivesAndIsShared(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state.json")
	r := newWarmRig(t, "pool=URL,warm=auto", fakeollama.LoaderConfig{}, func(c *Config) { c.StateFile = file })
	r.be.serve()
	r.chat("alice", "big:70b")
	eventually(t, "learned (after the answer)", func() bool {
		r.gate.mu.Lock()
		defer r.gate.mu.Unlock()
		return r.gate.byName["pool"].warm.learned[userKey("alice")].Model == "big:70b"
	})
	rep := r.gate.demandReport()
	r.gate.stop()

	g2, err := New(Config{Backends: []BackendConfig{backendURL(t, "pool=http://o:1")}, StateFile: file})
	if err != nil {
		t.Fatal(err)
	}
	_ = g2 // another URL: the lists and what was learned there are not used
	g3, err := New(Config{Backends: r.gate.cfg.Backends, StateFile: file})
	if err != nil {
		t.Fatal(err)
	}
	if got := g3.byName["pool"].warm.learned[userKey("alice")].Model; got != "big:70b" {
		t.Errorf("after a restart alice's model is %q, want big:70b", got)
	}
	if got := g2.byName["pool"].warm.learned[userKey("alice")].Model; got != "" {
		t.Errorf("a backend of another URL learned %q from the file, want nothing", got)
	}

	peer, err := New(Config{Backends: r.gate.cfg.Backends})
	if err != nil {
		t.Fatal(err)
	}
	peer.mergePeers([]*DemandReport{&rep})
	if got := peer.byName["pool"].warm.learned[userKey("alice")].Model; got != "big:70b" {
		t.Errorf("a peer learned %q, want big:70b", got)
	}
	if _, ok := rep.Backends["pool"].Learned["alice"]; ok {
		t.Error("a raw user id went to the peers; only hashes may")
	}
}

// At a wake with room for one model, the model of the person who arrived
// last goes first: they are the likeliest to write next.
func TestWarmNewestArrivalFirst(t *testing.T) {
	r := newWarmRig(t, "pool=URL,warm=auto", fakeollama.LoaderConfig{MaxLoaded: 2})
	r.be.serve()
	r.chat("alice", "big:70b")
	r.chat("bob", "small:8b")
	r.chat("carol", "small:8b")
	r.be.stop()
	r.loader.Reset()
	eventually(t, "asleep", func() bool { return stats(r.gate.Gate, r.name()).State == StateAsleep })
	r.people.set("bob", "carol")
	eventually(t, "bob and carol seen", func() bool {
		r.gate.mu.Lock()
		defer r.gate.mu.Unlock()
		return len(r.gate.backends[0].warm.arrivedAt) == 2
	})
	time.Sleep(5 * time.Millisecond) // a later arrival on the wall clock
	r.people.set("bob", "carol", "alice")
	eventually(t, "alice seen", func() bool {
		r.gate.mu.Lock()
		defer r.gate.mu.Unlock()
		return len(r.gate.backends[0].warm.arrivedAt) == 3
	})
	r.be.serve()
	eventually(t, "alice's model warmed", func() bool { return reflect.DeepEqual(r.loader.Loaded(), []string{"big:70b"}) })
}

// Ollama's NAME:latest and NAME are one model to warming: a chat to
// "small:latest" is learned, kept and matched as "small".
func TestWarmModelKey(t *testing.T) {
	for in, want := range map[string]string{"small:latest": "small", "small": "small", "llama3.1:8b": "llama3.1:8b", "a:latest:latest": "a:latest"} {
		if got := modelKey(in); got != want {
			t.Errorf("modelKey(%q) = %q, want %q", in, got, want)
		}
	}
	w := newWarmer(Warm{Mode: WarmAuto, MaxLoaded: 1})
	w.learn(userKey("alice"), "small:latest", time.Now())
	if got := w.learned[userKey("alice")].Model; got != "small" {
		t.Errorf("learned %q, want small", got)
	}
}

// A pool's warm-ups go to a replica that serves: its first replica refuses
// here, and the model is loaded on the second before any chat.
func TestWarmPoolGoesToAServingReplica(t *testing.T) {
	n := newReplicaNet(t)
	loader := fakeollama.NewLoader(fakeollama.New(fakeollama.Config{Models: []string{"small:8b"}, ChunkInterval: -1}), fakeollama.LoaderConfig{})
	n.add("r1.test:11434", nil, "small:8b")
	n.add("r2.test:11434", loader)
	tr := n.transport()
	n.setStopped("r1.test:11434", true)
	g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434,warm=small:8b", "pool=http://r2.test:11434"), Transport: tr},
		func(g *Gate) { g.warmEvery = 10 * time.Millisecond })
	eventually(t, "small:8b warmed", func() bool {
		return stats(g.Gate, "pool").Warm.Outcomes["small:8b"][WarmLoaded] == 1
	})
	if got := loader.Loads(); !reflect.DeepEqual(got, []string{"small:8b"}) {
		t.Errorf("r2 loaded %v, want [small:8b] (the warm-up)", got)
	}
	if failed := stats(g.Gate, "pool").Warm.Outcomes["small:8b"][WarmFailed]; failed != 0 {
		t.Errorf("%d warm-ups failed: they went to the refusing replica", failed)
	}
}

// The gate's own load requests (a warm-up, keep_alive set again) carry the
// runner options (num_ctx, ...) its people's chats load the model with:
// Ollama loads a model again for a request whose runner options differ, so
// a keep_alive set without them would reload the model of everybody who set
// a context length. A model whose options it could not read (the body cut
// before them) is left alone.
func TestWarmKeepsTheChatsRunnerOptions(t *testing.T) {
	const options = `"options":{"temperature":0.7,"num_ctx":16384}`
	chat := func(r *warmRig, body string) {
		t.Helper()
		if err := r.post("alice", "api/chat", body); err != nil {
			t.Fatal(err)
		}
	}
	withOptions := `{"model":"big:70b","stream":false,"messages":[{"role":"user","content":"hi"}],` + options + `}`

	t.Run("keep_alive set again", func(t *testing.T) {
		r := newWarmRig(t, "pool=URL,warm=auto", fakeollama.LoaderConfig{})
		r.be.serve()
		r.people.set("alice")
		chat(r, withOptions)
		eventually(t, "big:70b kept for ever", func() bool { return r.isForever("big:70b") })
		if got := r.loader.Loads(); !reflect.DeepEqual(got, []string{"big:70b"}) {
			t.Errorf("loads %v, want big:70b once: keep_alive set with other runner options reloaded it", got)
		}
	})
	t.Run("warmed at a wake", func(t *testing.T) {
		r := newWarmRig(t, "pool=URL,warm=auto", fakeollama.LoaderConfig{})
		r.be.serve()
		chat(r, withOptions)
		r.people.set("alice")
		r.restart()
		r.awake()
		chat(r, withOptions)
		if got := r.loader.Loads(); !reflect.DeepEqual(got, []string{"big:70b"}) {
			t.Errorf("loads since the wake %v, want big:70b once: her first chat reloaded what was warmed", got)
		}
	})
	t.Run("set again while a chat with new options streams", func(t *testing.T) {
		// Answers of 15 tokens, 100 ms apart: the keep_alive check (every
		// 20 ms here) runs while the chat that reloaded with num_ctx streams.
		r := newWarmRigOf(t, "pool=URL,warm=auto", fakeollama.Config{ChunkInterval: 100 * time.Millisecond}, fakeollama.LoaderConfig{})
		r.be.serve()
		r.people.set("alice")
		chat(r, `{"model":"big:70b","stream":false,"messages":[{"role":"user","content":"hi"}],"options":{"num_predict":1}}`) // Ollama's defaults
		// Kept for ever first: a keep_alive decided just before the next chat
		// began could still reach Ollama after it (the race docs/warming.md
		// leaves open), which is not what this case is about.
		eventually(t, "big:70b kept for ever", func() bool { return r.isForever("big:70b") })
		streaming := `{"model":"big:70b","stream":true,"messages":[{"role":"user","content":"hi"}],"options":{"num_ctx":16384,"num_predict":15}}`
		chat(r, streaming) // reloads with num_ctx 16384
		chat(r, streaming)
		if got := r.loader.Loads(); !reflect.DeepEqual(got, []string{"big:70b", "big:70b"}) {
			t.Errorf("loads %v, want big:70b twice (Ollama's defaults, then num_ctx 16384): keep_alive set with the options of before reloaded it", got)
		}
	})
	t.Run("options not read: left alone", func(t *testing.T) {
		r := newWarmRig(t, "pool=URL,warm=auto", fakeollama.LoaderConfig{})
		r.be.serve()
		r.people.set("alice")
		// An image past what the gate reads of a body, then the options.
		big := `{"model":"big:70b","stream":false,"messages":[{"role":"user","content":"hi","images":["` +
			strings.Repeat("A", maxSniffBytes) + `"]}],` + options + `}`
		chat(r, big)
		r.keepChecks(2)
		if r.isForever("big:70b") || !reflect.DeepEqual(r.loader.Loads(), []string{"big:70b"}) {
			t.Errorf("big:70b for ever %v, loads %v; want it left on its timer, loaded once", r.isForever("big:70b"), r.loader.Loads())
		}
	})
}

// A model kept for ever by somebody else (OLLAMA_KEEP_ALIVE=-1, or a
// request's own keep_alive) stays so when its people leave: the gate hands
// back to Ollama's timer only a keep_alive it set itself.
func TestWarmLeavesAKeepAliveItDidNotSet(t *testing.T) {
	r := newWarmRig(t, "pool=URL,warm=auto,max-loaded=2", fakeollama.LoaderConfig{MaxLoaded: 2, KeepAlive: -1})
	r.be.serve()
	r.people.set("alice", "bob")
	r.chat("alice", "big:70b")
	r.chat("bob", "small:8b")
	eventually(t, "both watched", func() bool { return len(r.status().Warm) == 2 })
	r.people.set("alice") // bob left
	eventually(t, "small:8b no longer watched", func() bool { return reflect.DeepEqual(r.status().Warm, []string{"big:70b"}) })
	r.keepChecks(2)
	if !r.isForever("small:8b") {
		t.Error("small:8b went back to a timer: OLLAMA_KEEP_ALIVE=-1 kept it for ever, not the gate")
	}
}

// At a wake, a message another gate replica holds goes before this one's
// warm-ups, as a message it holds itself does: with one model's room, a
// warm-up sent first would make that message wait for two loads.
func TestWarmWaitsForAPeersHeldRequest(t *testing.T) {
	r := newWarmRig(t, "pool=URL,warm=big:70b", fakeollama.LoaderConfig{})
	r.gate.mu.Lock()
	r.gate.peerTTL = time.Hour // the peer's report counts however slow the machine
	r.gate.mu.Unlock()
	peer := func(held int) {
		r.gate.mergePeers([]*DemandReport{{Instance: "peer", Backends: map[string]BackendDemand{r.name(): {Held: held}}}})
	}
	peer(1)
	r.be.serve()
	eventually(t, "the wake's warm-up planned", func() bool {
		r.gate.mu.Lock()
		defer r.gate.mu.Unlock()
		b := r.gate.backends[0]
		return b.state == StateUp && b.warm.wakeDone && len(b.warm.pending) == 1
	})
	time.Sleep(50 * time.Millisecond) // five turns of the warm loop (10 ms here)
	if got := r.loader.Loads(); len(got) != 0 {
		t.Fatalf("loads %v while a peer held a message, want none", got)
	}
	peer(0) // the peer's message was sent
	eventually(t, "the warm-up", func() bool { return reflect.DeepEqual(r.loader.Loads(), []string{"big:70b"}) })
}

// Every request that makes Ollama 0.17.4 load its model is one a warm-up
// waits for (server/routes.go: the handlers that schedule a runner), and
// no other is.
func TestLoadRequests(t *testing.T) {
	r := newWarmRig(t, "pool=URL,warm=auto", fakeollama.LoaderConfig{})
	b := r.gate.backends[0]
	for path, want := range map[string]bool{
		"/api/chat": true, "/api/generate": true, "/api/embed": true, "/api/embeddings": true,
		"/v1/chat/completions": true, "/v1/completions": true, "/v1/embeddings": true,
		"/v1/responses": true, "/v1/messages": true, "/v1/images/generations": true, "/v1/images/edits": true,
		"/api/show": false, "/api/pull": false, "/api/create": false, "/api/copy": false, "/api/tags": false, "/api/ps": false,
	} {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(`{"model":"small:8b"}`))
		lr := r.gate.beginLoad(b, req, path, "")
		if got := lr != nil; got != want {
			t.Errorf("POST %s: a load request %v, want %v", path, got, want)
		}
		r.gate.endLoad(b, lr)
	}
}
