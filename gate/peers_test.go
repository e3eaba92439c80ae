package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

// listenPair listens on the same port of 127.0.0.1 and 127.0.0.2 (both
// loopback), as two replicas behind one headless Service would.
func listenPair(t *testing.T) (net.Listener, net.Listener, string) {
	t.Helper()
	for i := 0; i < 20; i++ {
		a, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(a.Addr().String())
		b, err := net.Listen("tcp", "127.0.0.2:"+port)
		if err == nil {
			return a, b, port
		}
		a.Close()
	}
	t.Fatal("no port free on both 127.0.0.1 and 127.0.0.2")
	return nil, nil, ""
}

func TestPeersAddTheirDemand(t *testing.T) {
	sb := newSleepyBackend(t, withVersion(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	la, lb, port := listenPair(t)
	cfg := Config{
		Backends:  []BackendConfig{backendURL(t, "big="+sb.url()+",wake=request")},
		Transport: sb.transport(),
		Peers:     "gates.test:" + port,
	}
	tune := func(g *Gate) {
		g.peerEvery = 20 * time.Millisecond
		g.peerTTL = 300 * time.Millisecond
		g.lookup = func(_ context.Context, host string) ([]net.IPAddr, error) {
			if host != "gates.test" {
				return nil, fmt.Errorf("unexpected host %q", host)
			}
			// The third address has no replica: it contributes nothing.
			return []net.IPAddr{{IP: net.ParseIP("127.0.0.1")}, {IP: net.ParseIP("127.0.0.2")}, {IP: net.ParseIP("127.0.0.3")}}, nil
		}
	}
	serveOn := func(ln net.Listener) *testGate {
		g, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		tune(g)
		srv := httptest.NewUnstartedServer(g)
		srv.Listener.Close()
		srv.Listener = ln
		srv.Config.SetKeepAlivesEnabled(false) // closing the listener stops every exchange
		srv.Start()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); g.Run(ctx) }()
		t.Cleanup(func() { cancel(); srv.CloseClientConnections(); srv.Close(); <-done })
		return &testGate{Gate: g, srv: srv, url: srv.URL}
	}
	a, b := serveOn(la), serveOn(lb)
	eventually(t, "asleep", func() bool { return stats(a.Gate, "big").State == StateAsleep })

	// The /_gate/demand answer.
	_, _, body := do(t, "GET", a.url+"/_gate/demand", nil, nil)
	var rep DemandReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil || rep.Instance != a.instance || len(rep.Backends) != 1 {
		t.Fatalf("/_gate/demand: %s (%v)", body, err)
	}

	changed := b.Changed()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sendAsync(ctx, http.DefaultClient, "POST", a.url+"/big/api/chat", strings.NewReader("{}"), http.Header{UserHeader: {"u1"}})
	sendAsync(ctx, http.DefaultClient, "POST", b.url+"/big/api/chat", strings.NewReader("{}"), http.Header{UserHeader: {"u1"}})
	sendAsync(ctx, http.DefaultClient, "POST", a.url+"/big/api/chat", strings.NewReader("{}"), http.Header{UserHeader: {"u2"}})
	eventually(t, "each sees the other's held requests", func() bool {
		return mustDemand(t, a.Gate, "big").Held == 3 && mustDemand(t, b.Gate, "big").Held == 3
	})
	<-changed
	for name, g := range map[string]*testGate{"A": a, "B": b} {
		if d := mustDemand(t, g.Gate, "big"); d.Held != 3 || d.Recent != 2 {
			t.Errorf("%s: %+v, want 3 held and 2 distinct users (u1 on both counts once)", name, d)
		}
	}
	if s := stats(b.Gate, "big"); s.Held != 1 {
		t.Errorf("B's own Stats: %d held, want 1 (Stats has no peers)", s.Held)
	}

	// A stops answering its peers while it still holds: its data expires.
	la.Close()
	eventually(t, "A's demand expired at B", func() bool { return mustDemand(t, b.Gate, "big").Held == 1 })
	cancel()
	eventually(t, "nothing held at B", func() bool { return mustDemand(t, b.Gate, "big").Held == 0 })
}

// A peer that DNS lists but that answers nothing (a NetworkPolicy between the
// gate replicas, a wrong port in --gate.peers) is logged once it has been
// silent for peerSilentWarn, once, and again when it answers: its demand is
// not counted meanwhile, which an operator must be able to see. A lookup
// that fails now and then (every other one here) changes none of that.
func TestASilentPeerIsLogged(t *testing.T) {
	sb := newSleepyBackend(t, withVersion(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	la, lb, port := listenPair(t)
	t.Cleanup(func() { lb.Close() })
	logs := &harness.SyncBuffer{}
	serveOn := func(ln net.Listener, logger log.Logger) {
		g, err := New(Config{
			Backends:  []BackendConfig{backendURL(t, "big="+sb.url()+",wake=request")},
			Transport: sb.transport(),
			Peers:     "gates.test:" + port,
			Logger:    logger,
		})
		if err != nil {
			t.Fatal(err)
		}
		g.peerEvery, g.peerSilentWarn = 20*time.Millisecond, 200*time.Millisecond
		var lookups atomic.Int64
		g.lookup = func(context.Context, string) ([]net.IPAddr, error) {
			if lookups.Add(1)%2 == 0 {
				return nil, errors.New("lookup gates.test: i/o timeout")
			}
			return []net.IPAddr{{IP: net.ParseIP("127.0.0.1")}, {IP: net.ParseIP("127.0.0.2")}}, nil
		}
		srv := httptest.NewUnstartedServer(g)
		srv.Listener.Close()
		srv.Listener = ln
		srv.Start()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); g.Run(ctx) }()
		t.Cleanup(func() { cancel(); srv.CloseClientConnections(); srv.Close(); <-done })
	}
	serveOn(la, log.NewLogfmtLogger(logs))
	peer := "peer=127.0.0.2:" + port
	// 127.0.0.2 takes connections (its listener is open) and answers nothing.
	eventually(t, "the silent peer logged", func() bool {
		return strings.Contains(logs.String(), "does not answer") && strings.Contains(logs.String(), peer)
	})
	serveOn(lb, log.NewNopLogger())
	eventually(t, "the peer logged as answering again", func() bool { return strings.Contains(logs.String(), "a peer answers again") })
	if n := strings.Count(logs.String(), "does not answer"); n != 1 {
		t.Errorf("the silent peer was logged %d times, want once:\n%s", n, logs)
	}
}
