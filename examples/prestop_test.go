package examples_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/gate"
	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
)

// preStopScript is the bash script of the preStop hook in
// gate-pool/ollama-values.yaml (the block after "- |", unindented).
func preStopScript(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("gate-pool/ollama-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "  preStop:")
	if !ok {
		t.Fatal("gate-pool/ollama-values.yaml: no preStop")
	}
	_, rest, ok = strings.Cut(rest, "- |\n")
	if !ok {
		t.Fatal("gate-pool/ollama-values.yaml: no script block in preStop")
	}
	var script []string
	for _, line := range strings.Split(rest, "\n") {
		body, ok := strings.CutPrefix(line, strings.Repeat(" ", 10))
		if !ok {
			break
		}
		script = append(script, body)
	}
	return strings.Join(script, "\n")
}

// The preStop hook of the pool example, run by bash as the kubelet would in
// Ollama's pod: it drains the replica through the gate, returns only once
// the stream on it has ended, and the stream ends whole.
func TestPreStopDrainsThroughTheGate(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash here (Ollama's image has it)")
	}
	script := preStopScript(t)
	const gateAddr = "openwebui-exporter-gate.open-webui.svc/11434"
	if !strings.Contains(script, "/dev/tcp/"+gateAddr) || !strings.Contains(script, `"$POD_IP"`) {
		t.Fatalf("the preStop script no longer sends to %s with $POD_IP:\n%s", gateAddr, script)
	}

	// The replica 127.0.0.1:11434 (this pod) streams until released; the
	// pool's other replica is stopped. Only the gate's transport dials these
	// addresses, so nothing else on the machine is involved.
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	fake := fakeollama.New(fakeollama.Config{ChunkInterval: -1})
	ollama := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			started <- struct{}{}
			<-release
		}
		fake.ServeHTTP(w, r)
	}))
	defer ollama.Close()
	tr := gate.NewTransport()
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == "127.0.0.1:11434" {
			return d.DialContext(ctx, network, ollama.Listener.Addr().String())
		}
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	bcs, err := gate.ParseBackends([]string{"chat=http://127.0.0.1:11434", "chat=http://127.0.0.2:11434"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := gate.New(gate.Config{Backends: bcs, Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go g.Run(ctx)
	gw := httptest.NewServer(g)
	defer gw.Close()
	replica := func() gate.ReplicaStats {
		for _, r := range g.Stats()[0].Replicas {
			if r.ID == "127.0.0.1:11434" {
				return r
			}
		}
		return gate.ReplicaStats{}
	}
	waitFor(t, "the replica up", func() bool { return replica().State == gate.StateUp })

	streamed := make(chan string)
	go func() {
		res, err := http.Post(gw.URL+"/chat/api/chat", "application/json",
			strings.NewReader(`{"model":"tiny:1b","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			streamed <- err.Error()
			return
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		streamed <- fmt.Sprintf("%d %v %s", res.StatusCode, err, body)
	}()
	<-started

	u, _ := url.Parse(gw.URL)
	cmd := exec.Command(bash, "-c", strings.ReplaceAll(script, gateAddr, "127.0.0.1/"+u.Port()))
	cmd.Env = append(os.Environ(), "POD_IP=127.0.0.1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	hook := make(chan error, 1)
	go func() { hook <- cmd.Wait() }()
	waitFor(t, "the replica draining", func() bool { return replica().Draining })
	select {
	case err := <-hook:
		t.Fatalf("the hook returned while the stream ran: %v: %s", err, out.String())
	default:
	}
	close(release)
	stream := <-streamed
	if err := <-hook; err != nil {
		t.Fatalf("hook: %v: %s", err, out.String())
	}
	if !strings.HasPrefix(stream, "200 <nil> ") || !strings.Contains(stream, `"done":true`) {
		t.Errorf("the stream did not end whole: %.200s", stream)
	}
	if !strings.HasPrefix(out.String(), "HTTP/1.1 200 OK") || !strings.Contains(out.String(), `"drained":true`) {
		t.Errorf("the hook's answer: %s", out.String())
	}
}

// waitFor polls cond with a generous bound (it stops a broken test; it
// times nothing).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
