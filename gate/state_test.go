package gate

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
)

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "lists.json")
	sb := newSleepyBackend(t, ollamaLike(nil, nil))
	sb.serve()

	// A gate learns the lists and writes them.
	ctx, cancel := context.WithCancel(context.Background())
	g1, err := New(Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}, StateFile: file})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); g1.Run(ctx) }()
	for _, p := range []string{"/api/tags", "/api/version"} {
		w := &discardWriter{h: http.Header{}}
		r, _ := http.NewRequest(http.MethodGet, "http://gate"+p, nil)
		eventually(t, "up", func() bool { return stats(g1, DefaultName).State == StateUp })
		g1.ServeHTTP(w, r)
	}
	eventually(t, "the state file written", func() bool {
		b, err := os.ReadFile(file)
		return err == nil && strings.Contains(string(b), "/api/version")
	})
	cancel()
	<-done
	if matches, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(matches) != 0 {
		t.Errorf("temporary files left: %v", matches)
	}

	// A fresh gate with the backend asleep serves them from the file.
	sb.stop()
	g2 := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}, StateFile: file})
	eventually(t, "asleep", func() bool { return stats(g2.Gate, DefaultName).State == StateAsleep })
	if code, hdr, body := do(t, "GET", g2.url+"/api/tags", nil, nil); code != 200 || body != tagsBody || hdr.Get(FromMemoryHeader) != "1" {
		t.Errorf("from the state file: %d %q", code, body)
	}
	if d := mustDemand(t, g2.Gate, DefaultName); d.Learning {
		t.Error("a list from the state file still wants a learning wake")
	}

	cases := []struct {
		name    string
		content string
		flag    string
		wantErr string
		lists   int
	}{
		{"corrupt: warned and ignored", "{not json", sb.url(), "", 0},
		{"another version: ignored", `{"version":2}`, sb.url(), "", 0},
		{"another URL: not used", "", "http://127.0.0.1:1", "", 0},
		{"the same URL", "", sb.url(), "", 2},
	}
	good, _ := os.ReadFile(file)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "s.json")
			content := tc.content
			if content == "" {
				content = string(good)
			}
			if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			var logged strings.Builder
			g, err := New(Config{Backends: []BackendConfig{backendURL(t, tc.flag)}, StateFile: f, Logger: log.NewLogfmtLogger(&logged)})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if n := len(g.backends[0].lists); n != tc.lists {
				t.Errorf("%d lists loaded, want %d", n, tc.lists)
			}
			if tc.lists == 0 && !strings.Contains(logged.String(), "level=warn") {
				t.Errorf("no warning logged: %q", logged.String())
			}
		})
	}
	if _, err := New(Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}, StateFile: filepath.Join(dir, "missing", "s.json")}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("a state file in a missing directory: %v", err)
	}
	if _, err := New(Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}, StateFile: filepath.Join(dir, "new.json")}); err != nil {
		t.Errorf("a state file that does not exist yet: %v", err)
	}
}

// A list still being learnt when the gate stops (it woke the backend for a
// page load just before) is in the state file when Run returns: the last
// write waits for it.
func TestAListLearntAtShutdownIsWritten(t *testing.T) {
	file := filepath.Join(t.TempDir(), "lists.json")
	arrived, release := make(chan struct{}), make(chan struct{})
	sb := newSleepyBackend(t, ollamaLike(arrived, release))
	g, err := New(Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}, StateFile: file})
	if err != nil {
		t.Fatal(err)
	}
	g.probeHeld, g.probeIdle, g.learnWait = 10*time.Millisecond, 50*time.Millisecond, 10*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	eventually(t, "asleep", func() bool { return stats(g, DefaultName).State == StateAsleep })
	w := &discardWriter{h: http.Header{}}
	r, _ := http.NewRequest(http.MethodGet, "http://gate/api/tags", nil)
	g.ServeHTTP(w, r) // a 503 after learnWait; the list is to be learnt at the wake
	if w.code != http.StatusServiceUnavailable {
		t.Fatalf("/api/tags while asleep: %d, want 503", w.code)
	}

	sb.serve()
	<-arrived // the gate learns /api/tags, and the backend takes its time
	cancel()
	// Lets the state loop end before the list is in, as it did when the last
	// write did not wait for it; the test passes however long this takes.
	time.Sleep(100 * time.Millisecond)
	close(release)
	<-done
	if b, err := os.ReadFile(file); err != nil || !strings.Contains(string(b), "/api/tags") {
		t.Errorf("the state file after Run: %q, %v; want the list learnt at the stop", b, err)
	}
}

// discardWriter is a ResponseWriter that keeps nothing.
type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header { return d.h }

func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

func (d *discardWriter) WriteHeader(code int) { d.code = code }
