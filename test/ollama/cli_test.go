package ollama

import (
	"context"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ollamaCLI runs the real `ollama` binary as a client of host (OLLAMA_HOST)
// and returns its output; it fails the test if the command fails.
func ollamaCLI(t *testing.T, host string, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ollamaBinary(t), args...)
	cmd.Env = cleanEnv("OLLAMA_HOST="+host, "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("OLLAMA_HOST=%s ollama %s: %v\n%s", host, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Every ollama CLI command starts with a heartbeat (HEAD /). Through a gate
// whose Ollama sleeps, `ollama list` and `ollama ps` answer from the gate's
// memory without waking it, and `ollama run` is held through the wake:
// its /api/show and chat are delivered once Ollama serves again.
func TestTheOllamaCLIThroughASleepingGate(t *testing.T) {
	o := startOllama(t, "ollama")
	g := startGate(t, o.url())
	createModel(t, g.url(), "tiny", hello)
	if out := ollamaCLI(t, g.addr, time.Minute, "list"); !strings.Contains(out, "tiny") {
		t.Fatalf("ollama list while Ollama is up:\n%s", out)
	}
	// Open WebUI asks //api/tags when its Ollama URL ends in a slash. Ollama
	// answers it as /api/tags; so does the gate, also from memory.
	direct, plain := get(t, o.url()+"//api/tags"), get(t, o.url()+"/api/tags")
	if direct.status != http.StatusOK || direct.body != plain.body {
		t.Errorf("Ollama %s answers GET //api/tags with %s, /api/tags with %s", ollamaVersion, direct, plain)
	}
	if r := get(t, g.url()+"//api/tags"); r.status != http.StatusOK || r.body != plain.body {
		t.Errorf("GET //api/tags through the gate while Ollama is up: %s, want Ollama's /api/tags", r)
	}

	o.stop()
	eventually(t, 10*time.Second, "the gate sees Ollama asleep", func() (bool, string) {
		st := g.status(t)
		return st.Backends[0].State == "asleep", g.statusString(t)
	})
	if out := ollamaCLI(t, g.addr, time.Minute, "list"); !strings.Contains(out, "tiny") {
		t.Errorf("ollama list while Ollama sleeps:\n%s", out)
	}
	ollamaCLI(t, g.addr, time.Minute, "ps")
	if r := get(t, g.url()+"//api/tags"); r.status != http.StatusOK || r.header.Get("X-Gate-From-Memory") != "1" {
		t.Errorf("GET //api/tags while Ollama sleeps: %s, want the remembered list", r)
	}
	if st := g.status(t); st.Backends[0].State != "asleep" || st.Backends[0].Held != 0 {
		t.Fatalf("after ollama list and ps: %s, want asleep with nothing held (no wake)", g.statusString(t))
	}

	bin, home := ollamaBinary(t), t.TempDir()
	done := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "run", "tiny", "hi")
		cmd.Env = cleanEnv("OLLAMA_HOST="+g.addr, "HOME="+home)
		out, err := cmd.CombinedOutput()
		if err != nil {
			done <- "error: " + err.Error() + "\n" + string(out)
			return
		}
		done <- string(out)
	}()
	eventually(t, 30*time.Second, "the gate holds ollama run's request", func() (bool, string) {
		select {
		case out := <-done:
			t.Fatalf("ollama run ended while Ollama sleeps:\n%s", out)
		default:
		}
		return g.status(t).Backends[0].Held > 0, g.statusString(t)
	})
	o.start()
	select {
	case out := <-done:
		// The CLI draws a spinner and writes each token with terminal escapes
		// between them: the words are what it printed.
		if strings.HasPrefix(out, "error: ") || !strings.Contains(out, "hello") || !strings.Contains(out, "world") {
			t.Errorf("ollama run through the wake:\n%s\nwant %q", out, hello.Text())
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("ollama run did not end within 2 minutes of Ollama serving again")
	}
}
