package gate

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

const (
	tagsBody    = `{"models":[{"name":"m:8b","model":"m:8b","size":1}]}`
	versionBody = `{"version":"0.17.4"}`
	modelsBody  = `{"object":"list","data":null}`
)

// ollamaLike answers the lists like Ollama; /api/tags signals arrived and
// waits for release when they are not nil.
func ollamaLike(arrived, release chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		switch r.URL.Path {
		case "/api/tags":
			if arrived != nil {
				arrived <- struct{}{}
				<-release
			}
			_, _ = io.WriteString(w, tagsBody)
		case "/api/version":
			_, _ = io.WriteString(w, versionBody)
		case "/v1/models":
			_, _ = io.WriteString(w, modelsBody)
		case "/api/ps":
			_, _ = io.WriteString(w, `{"models":[{"name":"m:8b"}]}`)
		case "/":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = io.WriteString(w, "Ollama is running")
		default:
			_, _ = io.WriteString(w, `{"done":true}`)
		}
	})
}

func TestListsAreServedFromMemoryWhileNotUp(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	sb := newSleepyBackend(t, ollamaLike(arrived, release))
	sb.serve()
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}})
	eventually(t, "up", func() bool { return stats(g.Gate, DefaultName).State == StateUp })

	// While up, a list passes through and is not demand.
	c := sendAsync(context.Background(), http.DefaultClient, "GET", g.url+"/api/tags", nil, nil)
	<-arrived
	if d := mustDemand(t, g.Gate, DefaultName); d != (Demand{}) {
		t.Errorf("a list passing through is demand: %+v", d)
	}
	close(release)
	if c.wait(t); c.status != 200 || c.body != tagsBody {
		t.Fatalf("/api/tags through the gate: %d %q", c.status, c.body)
	}
	for _, p := range []string{"/api/version", "/v1/models", "/"} {
		if code, _, _ := do(t, "GET", g.url+p, nil, nil); code != 200 {
			t.Fatalf("%s: %d", p, code)
		}
	}

	sb.stop()
	eventually(t, "asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })
	cases := []struct{ path, body, ctype string }{
		{"/api/tags", tagsBody, "application/json; charset=utf-8"},
		{"/api/version", versionBody, "application/json; charset=utf-8"},
		{"/v1/models", modelsBody, "application/json; charset=utf-8"},
		{"/api/ps", `{"models":[]}`, "application/json; charset=utf-8"},
		{"/", "Ollama is running", "text/plain; charset=utf-8"},
	}
	changed := g.Changed()
	for _, tc := range cases {
		code, hdr, body := do(t, "GET", g.url+tc.path, nil, nil)
		if code != 200 || body != tc.body || hdr.Get("Content-Type") != tc.ctype || hdr.Get(FromMemoryHeader) != "1" {
			t.Errorf("%s while asleep: %d %q %q %s=%q, want 200 %q %q 1", tc.path, code, body, hdr.Get("Content-Type"), FromMemoryHeader, hdr.Get(FromMemoryHeader), tc.body, tc.ctype)
		}
	}
	if d := mustDemand(t, g.Gate, DefaultName); d != (Demand{}) {
		t.Errorf("lists from memory are demand: %+v", d)
	}
	select {
	case <-changed:
		t.Error("Changed fired for lists served from memory")
	case <-time.After(50 * time.Millisecond):
	}
	waitCount(t, g.Gate, DefaultName, OutcomeFromMemory, uint64(len(cases)))
	if n := stats(g.Gate, DefaultName).Requests[OutcomeFromMemory]; n != uint64(len(cases)) {
		t.Errorf("from_memory = %d, want %d", n, len(cases))
	}
	var st StatusReport
	_, _, body := do(t, "GET", g.url+"/_gate/status", nil, nil)
	if err := json.Unmarshal([]byte(body), &st); err != nil || len(st.Backends) != 1 || strings.Join(st.Backends[0].Models, ",") != "m:8b" {
		t.Errorf("status %s: want the remembered model m:8b (%v)", body, err)
	}
}

func TestAListWhoseDialFailsIsServedFromMemory(t *testing.T) {
	sb := newSleepyBackend(t, ollamaLike(nil, nil))
	sb.serve()
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}}, func(g *Gate) { g.probeIdle = time.Hour })
	eventually(t, "up", func() bool { return stats(g.Gate, DefaultName).State == StateUp })
	if code, hdr, _ := do(t, "GET", g.url+"/api/tags", nil, nil); code != 200 || hdr.Get(FromMemoryHeader) != "" {
		t.Fatalf("/api/tags while up: %d", code)
	}
	sb.stop() // gone to zero; the gate does not know yet
	code, hdr, body := do(t, "GET", g.url+"/api/tags", nil, nil)
	if code != 200 || body != tagsBody || hdr.Get(FromMemoryHeader) != "1" {
		t.Errorf("got %d %q from memory=%q, want the remembered list", code, body, hdr.Get(FromMemoryHeader))
	}
	if s := stats(g.Gate, DefaultName); s.State != StateAsleep {
		t.Errorf("state %s, want asleep", s.State)
	}
}

func TestLearningWake(t *testing.T) {
	sb := newSleepyBackend(t, ollamaLike(nil, nil))
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}})
	eventually(t, "asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })

	changed := g.Changed()
	c := sendAsync(context.Background(), http.DefaultClient, "GET", g.url+"/api/tags", nil, nil)
	eventually(t, "a learning wake", func() bool { return mustDemand(t, g.Gate, DefaultName).Learning })
	<-changed
	c.wait(t)
	if c.status != http.StatusServiceUnavailable {
		t.Fatalf("never-seen list while asleep: %d %q, want 503", c.status, c.body)
	}
	if msg := errorMessage(t, c.body, false); !strings.Contains(msg, "has not seen its model list (/api/tags) yet") || !strings.Contains(msg, "waking the backend once to learn it") {
		t.Errorf("message %q", msg)
	}
	// /v1/models gets the OpenAI shape.
	if code, _, body := do(t, "GET", g.url+"/v1/models", nil, nil); code != 503 || !strings.Contains(errorMessage(t, body, true), "(/v1/models)") {
		t.Errorf("/v1/models: %d %s", code, body)
	}
	if d := mustDemand(t, g.Gate, DefaultName); !d.Learning || d.Held != 0 {
		t.Errorf("after the 503 the wake is still wanted: %+v", d)
	}

	sb.serve() // KEDA woke it
	eventually(t, "learned", func() bool {
		d := mustDemand(t, g.Gate, DefaultName)
		g.mu.Lock()
		defer g.mu.Unlock()
		return !d.Learning && g.backends[0].lists["/api/tags"] != nil && g.backends[0].lists["/v1/models"] != nil
	})
	sb.stop()
	eventually(t, "asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })
	if code, hdr, body := do(t, "GET", g.url+"/api/tags", nil, nil); code != 200 || body != tagsBody || hdr.Get(FromMemoryHeader) != "1" {
		t.Errorf("after the learning wake: %d %q", code, body)
	}
	waitCount(t, g.Gate, DefaultName, OutcomeLearning, 2)
	if s := stats(g.Gate, DefaultName); s.Requests[OutcomeLearning] != 2 {
		t.Errorf("learning = %d, want 2", s.Requests[OutcomeLearning])
	}
}

func TestALearningListPassesThroughWhenTheBackendWakesInTime(t *testing.T) {
	sb := newSleepyBackend(t, ollamaLike(nil, nil))
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}}, func(g *Gate) { g.learnWait = time.Minute })
	eventually(t, "asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })
	c := sendAsync(context.Background(), http.DefaultClient, "GET", g.url+"/api/tags", nil, nil)
	eventually(t, "a learning wake", func() bool { return mustDemand(t, g.Gate, DefaultName).Learning })
	sb.serve()
	if c.wait(t); c.status != 200 || c.body != tagsBody {
		t.Errorf("got %d %q, want the backend's list", c.status, c.body)
	}
}

func TestAGzippedListIsRememberedAsIdentity(t *testing.T) {
	sb := newSleepyBackend(t, withVersion(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		_, _ = io.WriteString(zw, tagsBody)
		_ = zw.Close()
	})))
	sb.serve()
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}})
	eventually(t, "up", func() bool { return stats(g.Gate, DefaultName).State == StateUp })
	// Go's client asks for gzip itself and decodes; the gate passes it compressed.
	if code, _, body := do(t, "GET", g.url+"/api/tags", nil, nil); code != 200 || body != tagsBody {
		t.Fatalf("through the gate: %d %q", code, body)
	}
	sb.stop()
	eventually(t, "asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })
	code, hdr, body := do(t, "GET", g.url+"/api/tags", nil, http.Header{"Accept-Encoding": {"identity"}})
	if code != 200 || body != tagsBody || hdr.Get("Content-Encoding") != "" || hdr.Get(FromMemoryHeader) != "1" {
		t.Errorf("from memory: %d %q encoding %q", code, body, hdr.Get("Content-Encoding"))
	}
}
