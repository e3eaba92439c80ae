package binary

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

// startGate runs the built exporter with its gate in front of the stand-in
// Ollama ollama; it returns the process and the gate's base URL.
func startGate(t *testing.T, ollama *fakeollama.Server, args ...string) (*process, string) {
	t.Helper()
	_, upstream, _, token := fakeUpstream(t, nil)
	gateAddr := harness.HeldAddr()
	p := startExporter(t, []string{"API_URL=" + upstream, "TOKEN=" + token},
		append([]string{"--gate.listen-address=" + gateAddr, "--gate.backend=" + ollama.URL(), "--cache.ttl=0"}, args...)...)
	gateURL := "http://" + gateAddr
	if err := harness.WaitFor(10*time.Second, func() bool {
		code, _ := harness.Get(&http.Client{Timeout: time.Second}, gateURL+"/_gate/status")
		return code == http.StatusOK
	}); err != nil {
		t.Fatalf("the gate did not serve: %v\n%s", err, p.output)
	}
	return p, gateURL
}

// startStandIn starts a stand-in Ollama on a held port, serving at once.
func startStandIn(t *testing.T, cfg fakeollama.Config) *fakeollama.Server {
	t.Helper()
	ollama, err := fakeollama.NewServer("127.0.0.1:0", fakeollama.New(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if err := ollama.Start(0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ollama.Stop)
	return ollama
}

const chatBody = `{"model":"tiny:1b","messages":[{"role":"user","content":"hi"}]}`

// The whole wake-up, as Open WebUI and KEDA see it through the binary.
func TestGateHoldsWhileOllamaSleeps(t *testing.T) {
	ollama := startStandIn(t, fakeollama.Config{ChunkInterval: -1})
	p, gateURL := startGate(t, ollama)
	client := &http.Client{Timeout: 20 * time.Second}

	// Up: passed through, and the list remembered.
	direct := fetchBody(t, client, "POST", ollama.URL()+"/api/chat", chatBody)
	if got := fetchBody(t, client, "POST", gateURL+"/api/chat", chatBody); got != direct {
		t.Errorf("through the gate:\n%s\ndirect:\n%s", got, direct)
	}
	tags := fetchBody(t, client, "GET", gateURL+"/api/tags", "")

	// Asleep: the list from memory, and nobody is counted but alice.
	ollama.Stop()
	if got := fetchBody(t, client, "GET", gateURL+"/api/tags", ""); got != tags {
		t.Errorf("/api/tags while Ollama sleeps = %q, want the remembered %q", got, tags)
	}
	if code, body := fetch(t, client, "http://"+p.addr+"/active_users"); code != 200 || body != `{"active_users":1}` {
		t.Errorf("/active_users with nothing held = %d %s, want alice alone", code, body)
	}

	// A chat is held: demand on /active_users (alice and the held chat: 1)
	// and /metrics; then Ollama starts (port first, HTTP later) and the chat
	// is delivered unchanged.
	held := make(chan string, 1)
	go func() {
		resp, err := client.Post(gateURL+"/api/chat", "application/json", strings.NewReader(chatBody))
		if err != nil {
			held <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		held <- string(b)
	}()
	if err := harness.WaitFor(10*time.Second, func() bool {
		_, body := fetch(t, client, "http://"+p.addr+"/metrics")
		return strings.Contains(body, `openwebui_gate_held_requests{backend="default"} 1`) &&
			strings.Contains(body, `openwebui_backend_demand{backend="default"} 1`)
	}); err != nil {
		t.Fatalf("the held chat is not on /metrics: %v", err)
	}
	if err := ollama.Start(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-held:
		if got != direct {
			t.Errorf("the held chat:\n%s\nwant, as Ollama answers it:\n%s", got, direct)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the held chat was not delivered within 20 s of Ollama's start")
	}
	_, metrics := fetch(t, client, "http://"+p.addr+"/metrics")
	for _, want := range []string{
		`openwebui_gate_requests_total{backend="default",outcome="delivered"} 1`,
		`openwebui_gate_requests_total{backend="default",outcome="from_memory"} 1`,
		`openwebui_gate_hold_duration_seconds_count{backend="default"} 1`,
		`openwebui_gate_backend_state{backend="default",state="up"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// A stream still running at SIGTERM is finished, not cut: the gate gets
// longer than the exporter's other endpoints to shut down.
func TestGateSIGTERMLetsAStreamFinish(t *testing.T) {
	ollama := startStandIn(t, fakeollama.Config{Chunks: 20, ChunkInterval: 100 * time.Millisecond})
	p, gateURL := startGate(t, ollama)
	resp, err := http.Post(gateURL+"/api/chat", "application/json", strings.NewReader(chatBody))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if _, err := r.ReadString('\n'); err != nil { // streaming now
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil || !strings.Contains(string(rest), `"done":true`) {
		t.Errorf("the stream after SIGTERM: %v, %q; want it to the end", err, rest)
	}
	select {
	case err := <-p.exited:
		p.exited <- err // for the cleanup
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, p.output)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit within 30 s of SIGTERM")
	}
}

func TestGateFlagsStopStartup(t *testing.T) {
	bin := exporterBinary(t)
	env := []string{"API_URL=http://127.0.0.1:1", "TOKEN=sk-x"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--gate.listen-address=127.0.0.1:0"}, "--gate.listen-address needs --gate.backend"},
		{[]string{"--gate.backend=http://ollama:11434"}, "need --gate.listen-address"},
		{[]string{"--gate.listen-address=127.0.0.1:0", "--gate.backend=ollama:11434"}, "--gate.backend: "},
		{[]string{"--gate.listen-address=127.0.0.1:0", "--gate.backend=http://a:1", "--gate.backend=big=http://b:1"}, "cannot be mixed"},
		{[]string{"--gate.listen-address=127.0.0.1:0", "--gate.backend=big=http://b:1,wake=sometimes"}, `want arrival or request`},
		{[]string{"--gate.listen-address=127.0.0.1:0", "--gate.backend=big=http://b:1,idle=10m"}, "idle= needs wake=request"},
		{[]string{"--gate.listen-address=127.0.0.1:0", "--gate.backend=http://b:1", "--gate.hold-timeout=0s"}, "--gate.hold-timeout must be between 1s and 24h"},
		{[]string{"--gate.listen-address=256.0.0.1:1", "--gate.backend=http://b:1"}, "--gate.listen-address: listen tcp"},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("args %v: exit %v, output %q; want a failure saying %q", tc.args, err, out, tc.want)
		}
	}
}

func fetchBody(t *testing.T, client *http.Client, method, url, body string) string {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return string(b)
}

// A pull (minutes long in life, seconds here) sent while Ollama sleeps is
// held, then streamed through as Ollama sends it: every progress line, to
// "success", with the pull counted as demand while it runs.
func TestGateHoldsAPullAndStreamsItThrough(t *testing.T) {
	ollama := startStandIn(t, fakeollama.Config{PullDuration: 2 * time.Second, ChunkInterval: 200 * time.Millisecond})
	p, gateURL := startGate(t, ollama)
	ollama.Stop()
	client := &http.Client{Timeout: 30 * time.Second}
	type pulled struct {
		statuses []string // in order, the progress lines as one "progress" each
		err      error
	}
	done := make(chan pulled, 1)
	firstLine := make(chan struct{})
	go func() {
		resp, err := client.Post(gateURL+"/api/pull", "application/json", strings.NewReader(`{"model":"big:70b"}`))
		if err != nil {
			done <- pulled{err: err}
			return
		}
		defer resp.Body.Close()
		var got pulled
		for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
			if len(got.statuses) == 0 {
				close(firstLine)
			}
			var line struct{ Status, Digest string }
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				got.err = fmt.Errorf("line %q: %w", sc.Text(), err)
				break
			}
			if line.Digest != "" {
				line.Status = "progress"
			}
			if n := len(got.statuses); n == 0 || line.Status != got.statuses[n-1] {
				got.statuses = append(got.statuses, line.Status)
			}
		}
		done <- got
	}()
	if err := harness.WaitFor(10*time.Second, func() bool {
		_, body := fetch(t, client, "http://"+p.addr+"/metrics")
		return strings.Contains(body, `openwebui_gate_held_requests{backend="default"} 1`)
	}); err != nil {
		t.Fatalf("the pull is not held: %v", err)
	}
	if err := ollama.Start(0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-firstLine:
	case <-time.After(20 * time.Second):
		t.Fatal("no line of the pull within 20 s of Ollama's start")
	}
	if code, body := fetch(t, client, "http://"+p.addr+"/active_users"); code != 200 || body != `{"active_users":1}` {
		t.Errorf("/active_users while the pull streams = %d %s, want it counted", code, body)
	}
	got := <-done
	if want := []string{"pulling manifest", "progress", "verifying sha256 digest", "writing manifest", "success"}; got.err != nil || !slices.Equal(got.statuses, want) {
		t.Errorf("the pull through the gate: %q, %v; want %q", got.statuses, got.err, want)
	}
}
