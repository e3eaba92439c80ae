package binary

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

// answer is how a request through the gate ended, as its client saw it.
type answer struct {
	status int
	header http.Header
	body   string
	err    error
}

// postAsync sends a POST in the background.
func postAsync(client *http.Client, url, body string) <-chan answer {
	out := make(chan answer, 1)
	go func() {
		resp, err := client.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			out <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		out <- answer{status: resp.StatusCode, header: resp.Header, body: string(b), err: err}
	}()
	return out
}

func waitAnswer(t *testing.T, what string, ch <-chan answer) answer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no answer within 30 s", what)
		return answer{}
	}
}

func waitExit(t *testing.T, p *process, within time.Duration) {
	t.Helper()
	select {
	case err := <-p.exited:
		p.exited <- err // for the cleanup
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0\n%s", err, p.output)
		}
	case <-time.After(within):
		t.Fatalf("still running %s after SIGTERM:\n%s", within, p.output)
	}
}

// heldOnMetrics waits until the exporter's /metrics shows n held requests.
func heldOnMetrics(t *testing.T, p *process, n int) {
	t.Helper()
	want := `openwebui_gate_held_requests{backend="default"} ` + string(rune('0'+n))
	if err := harness.WaitFor(10*time.Second, func() bool {
		_, body := harness.Get(&http.Client{Timeout: time.Second}, "http://"+p.addr+"/metrics")
		return strings.Contains(body, want)
	}); err != nil {
		t.Fatalf("%s is not on /metrics: %v\n%s", want, err, p.output)
	}
}

// A rollout stops a gate replica while it holds a chat for a sleeping
// Ollama (issue 23, item 1). While it drains it leaves the Service (its
// readiness, /_gate/status, answers 503), keeps serving its demand to KEDA
// (/active_users, /metrics) and to its peers (/_gate/demand), delivers the
// chat once Ollama is up, and only then exits.
func TestGateSIGTERMDeliversWhatItHolds(t *testing.T) {
	ollama := startStandIn(t, fakeollama.Config{ChunkInterval: -1})
	client := &http.Client{Timeout: 30 * time.Second}
	want := fetchBody(t, client, "POST", ollama.URL()+"/api/chat", chatBody)
	ollama.Stop()
	p, gateURL := startGate(t, ollama, "--gate.hold-timeout=1m")

	held := postAsync(client, gateURL+"/api/chat", chatBody)
	heldOnMetrics(t, p, 1)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	short := &http.Client{Timeout: 2 * time.Second}
	if err := harness.WaitFor(10*time.Second, func() bool {
		code, _ := harness.Get(short, gateURL+"/_gate/status")
		return code == http.StatusServiceUnavailable
	}); err != nil {
		code, body := harness.Get(short, gateURL+"/_gate/status")
		t.Fatalf("/_gate/status while draining: %d %q, want 503 (not ready: out of the Service)\n%s", code, body, p.output)
	}
	// A SIGHUP while draining (a token rotated meanwhile) re-reads, as at
	// any other time: it must not end the process and its drain.
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitFor(10*time.Second, func() bool { return strings.Contains(p.output.String(), "SIGHUP: re-read") }); err != nil {
		t.Errorf("no log line of the SIGHUP while draining:\n%s", p.output)
	}
	if code, body := harness.Get(short, "http://"+p.addr+"/active_users"); code != http.StatusOK || body != `{"active_users":1}` {
		t.Errorf("/active_users while draining = %d %q, want 200 with the held chat's demand", code, body)
	}
	_, metrics := harness.Get(short, "http://"+p.addr+"/metrics")
	if !strings.Contains(metrics, `openwebui_backend_demand{backend="default"} 1`) {
		t.Errorf("/metrics while draining lacks the held chat's demand")
	}
	code, body := harness.Get(short, gateURL+"/_gate/demand")
	var rep struct {
		Backends map[string]struct {
			Held int `json:"held"`
		} `json:"backends"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &rep) != nil || rep.Backends["default"].Held != 1 {
		t.Errorf("/_gate/demand (what the peers read) while draining = %d %q, want the held chat", code, body)
	}

	if err := ollama.Start(0); err != nil {
		t.Fatal(err)
	}
	if a := waitAnswer(t, "the held chat", held); a.err != nil || a.status != http.StatusOK || a.body != want {
		t.Errorf("the chat held at SIGTERM: %d %q %v; want it delivered:\n%s", a.status, a.body, a.err, want)
	}
	waitExit(t, p, 20*time.Second)
}

// What the gate cannot deliver within --gate.drain-timeout gets a status
// line before it exits: a 503 in the backend's own error shape, which says
// the request was not sent (so a retry reaches another replica).
func TestGateSIGTERMAnswersWhatItCannotDeliver(t *testing.T) {
	ollama := startStandIn(t, fakeollama.Config{})
	ollama.Stop() // and never started again
	p, gateURL := startGate(t, ollama, "--gate.hold-timeout=1m", "--gate.drain-timeout=2s")
	client := &http.Client{Timeout: 30 * time.Second}
	ollamaShape := postAsync(client, gateURL+"/api/chat", chatBody)
	heldOnMetrics(t, p, 1)
	openAIShape := postAsync(client, gateURL+"/v1/chat/completions", `{"model":"tiny:1b","messages":[]}`)
	heldOnMetrics(t, p, 2)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ch   <-chan answer
		msg  func(string) string
	}{
		{"Ollama's shape", ollamaShape, func(b string) string {
			var v struct{ Error string }
			_ = json.Unmarshal([]byte(b), &v)
			return v.Error
		}},
		{"OpenAI's shape", openAIShape, func(b string) string {
			var v struct {
				Error struct{ Message, Type, Code string }
			}
			_ = json.Unmarshal([]byte(b), &v)
			if v.Error.Code != "gate_shutting_down" || v.Error.Type == "" {
				return ""
			}
			return v.Error.Message
		}},
	} {
		a := waitAnswer(t, tc.name, tc.ch)
		if a.err != nil || a.status != http.StatusServiceUnavailable || a.header.Get("X-Gate-Error") != "gate_shutting_down" {
			t.Errorf("%s: %d %q %v, want a 503 gate_shutting_down", tc.name, a.status, a.body, a.err)
			continue
		}
		if msg := tc.msg(a.body); !strings.Contains(msg, "shutting down") || !strings.Contains(msg, "not sent") {
			t.Errorf("%s: message %q (body %q), want it to say the gate is shutting down and the request was not sent", tc.name, msg, a.body)
		}
	}
	waitExit(t, p, 20*time.Second)
}

// A second SIGTERM (or Ctrl-C) ends the drain at once: what is held gets
// its 503, and the process exits without waiting for --gate.drain-timeout.
func TestGateSecondSIGTERMEndsTheDrain(t *testing.T) {
	ollama := startStandIn(t, fakeollama.Config{})
	ollama.Stop()
	p, gateURL := startGate(t, ollama, "--gate.hold-timeout=1m", "--gate.drain-timeout=10m")
	held := postAsync(&http.Client{Timeout: 30 * time.Second}, gateURL+"/api/chat", chatBody)
	heldOnMetrics(t, p, 1)
	for range 2 {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := harness.WaitFor(10*time.Second, func() bool { return strings.Contains(p.output.String(), "draining the wake gate") }); err != nil {
			t.Fatalf("no drain logged after SIGTERM:\n%s", p.output)
		}
	}
	if a := waitAnswer(t, "the held chat", held); a.status != http.StatusServiceUnavailable || a.header.Get("X-Gate-Error") != "gate_shutting_down" {
		t.Errorf("the held chat after a second SIGTERM: %d %q %v, want a 503 gate_shutting_down", a.status, a.body, a.err)
	}
	waitExit(t, p, 20*time.Second)
}
