package keda_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/gate"
	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeclock"
	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
	"github.com/openwebui-exporter/openwebui_exporter/internal/heldport"
)

// The external-push stream follows the real gate through a wake=request
// backend's whole cycle, while Open WebUI does not answer and the one peer
// the gate is told of accepts connections and never answers (a node that
// vanished behind a headless Service): false while nothing is asked; true
// as soon as a chat is held; still true after it was delivered, for idle;
// false once idle has passed with nothing else happening (the gate's
// expiry, not a request, has to tell the stream).
func TestPushFollowsTheRealGateThroughSleepWakeAndIdle(t *testing.T) {
	backendPort, err := heldport.Hold("127.0.0.1", 0) // asleep: refused
	if err != nil {
		t.Fatal(err)
	}
	defer backendPort.Close()
	blackHoledPeer, err := net.Listen("tcp", "127.0.0.1:0") // never accepted: the kernel's backlog takes the connection, no answer comes
	if err != nil {
		t.Fatal(err)
	}
	defer blackHoledPeer.Close()

	const idle = time.Minute
	clock := fakeclock.New(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	big, err := gate.ParseBackend("big=http://" + backendPort.Addr() + ",wake=request,idle=" + idle.String())
	if err != nil {
		t.Fatal(err)
	}
	g, err := gate.New(gate.Config{Backends: []gate.BackendConfig{big}, Now: clock.Now, Peers: blackHoledPeer.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); g.Run(ctx) }()
	front := httptest.NewServer(g)
	defer func() { front.CloseClientConnections(); front.Close(); cancel(); <-ran }()

	client := serveDecider(t, demand.New(people{block: true}, g))
	stream, err := client.StreamIsActive(ctxFor(t, 30*time.Second), ref(map[string]string{"backend": "big"}))
	if err != nil {
		t.Fatal(err)
	}
	expectPush(t, stream, false)

	type answer struct {
		status int
		body   string
		err    error
	}
	answered := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, front.URL+"/big/api/chat", strings.NewReader(`{"model":"tiny:1b","stream":false}`))
		req.Header.Set(gate.UserHeader, "alice")
		resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		answered <- answer{resp.StatusCode, string(b), err}
	}()
	expectPush(t, stream, true) // held, and KEDA told at once

	// The backend wakes on its held port.
	ln, err := net.Listen("tcp", backendPort.Addr())
	if err != nil {
		t.Fatal(err)
	}
	backend := httptest.NewUnstartedServer(fakeollama.New(fakeollama.Config{ChunkInterval: -1}))
	backend.Listener.Close()
	backend.Listener = ln
	backend.Start()
	defer backend.Close()
	if a := <-answered; a.err != nil || a.status != http.StatusOK || !strings.Contains(a.body, `"done":true`) {
		t.Fatalf("the held chat: %d %q %v, want it delivered", a.status, a.body, a.err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if d, _ := g.Demand("big"); d.InFlight == 0 && d.Held == 0 {
			if d.Recent != 1 {
				t.Fatalf("after the chat: %+v, want alice recent", d)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the delivered chat is still counted in flight after 10 s")
		}
	}

	// The gate looks for expiries once a second of real time, and tells
	// when Recent changed since its last look. In production alice counts
	// for idle (a minute at least), so it has looked many times; here the
	// clock jumps, so let it look at her a few times first.
	time.Sleep(3 * time.Second)
	clock.Advance(idle + time.Second)
	expectPush(t, stream, false)
}
