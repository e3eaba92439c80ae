package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

func TestBusyPortFailsAtOnceAndStartsNothing(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free := harness.HeldAddr()
	cases := []struct {
		name      string
		cfg       config
		wantText  []string
		stillFree string
	}{
		{"fake's port busy", config{fakeAddr: busy.Addr().String(), exporterAddr: free, gateAddr: harness.HeldAddr(), humans: 2, cacheTTL: time.Second},
			[]string{"cannot listen on " + busy.Addr().String() + " for the fake Open WebUI", "address already in use", "-fake.listen"}, free},
		{"exporter's port busy", config{fakeAddr: free, exporterAddr: busy.Addr().String(), gateAddr: harness.HeldAddr(), humans: 2, cacheTTL: time.Second},
			[]string{"cannot listen on " + busy.Addr().String() + " for the exporter", "address already in use", "-listen"}, free},
		{"gate's port busy", config{fakeAddr: free, exporterAddr: harness.HeldAddr(), gateAddr: busy.Addr().String(), humans: 2, cacheTTL: time.Second},
			[]string{"cannot listen on " + busy.Addr().String() + " for the wake gate", "address already in use", "-gate.listen"}, free},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			err := run(ctx, tc.cfg, io.Discard, io.Discard)
			if err == nil {
				t.Fatal("run succeeded on a busy port")
			}
			if ctx.Err() != nil {
				t.Fatalf("run returned only after its context ended (%s): %v", time.Since(start), err)
			}
			for _, want := range tc.wantText {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			// Nothing was left listening on the other address.
			ln, err := net.Listen("tcp", tc.stillFree)
			if err != nil {
				t.Errorf("%s still taken after the failed start: %v", tc.stillFree, err)
			} else {
				ln.Close()
			}
		})
	}
}

func TestBothServeAndCancelStopsBoth(t *testing.T) {
	cfg := config{fakeAddr: harness.HeldAddr(), exporterAddr: harness.HeldAddr(), gateAddr: harness.HeldAddr(), humans: 2, cacheTTL: 0,
		startDelay: 300 * time.Millisecond, cooldown: 500 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &harness.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, out, io.Discard) }()
	if err := harness.WaitFor(10*time.Second, func() bool { return strings.Contains(out.String(), "Ctrl-C stops all of it") }); err != nil {
		t.Fatalf("no instructions printed: %v\n%s", err, out)
	}
	for _, want := range []string{"curl -sS " + cfg.exporterAddr + "/active_users", "curl -sS -X POST '" + cfg.fakeAddr + "/_fake/humans?active=0'"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("instructions lack %q:\n%s", want, out)
		}
	}

	client := &http.Client{Timeout: 5 * time.Second}
	if code, body := harness.Get(client, "http://"+cfg.exporterAddr+"/active_users"); code != 200 || body != `{"active_users":2}` {
		t.Errorf("exporter /active_users: %d %q, want 200 {\"active_users\":2}", code, body)
	}
	if code, body := harness.Get(client, "http://"+cfg.fakeAddr+"/api/version"); code != 200 || !strings.Contains(body, `"version"`) {
		t.Errorf("fake /api/version: %d %q", code, body)
	}
	if err := harness.Post("http://" + cfg.fakeAddr + "/_fake/humans?active=0"); err != nil {
		t.Fatal(err)
	}
	if code, body := harness.Get(client, "http://"+cfg.exporterAddr+"/active_users"); code != 200 || body != `{"active_users":0}` {
		t.Errorf("after everybody left: %d %q, want 200 {\"active_users\":0}", code, body)
	}

	// The README's gate lines: once Ollama sleeps, the models are listed
	// from memory, and a chat is held, wakes it, and is delivered.
	gateURL := "http://" + cfg.gateAddr
	if err := harness.WaitFor(20*time.Second, func() bool {
		_, body := harness.Get(client, gateURL+"/_gate/status")
		return strings.Contains(body, `"state":"asleep"`)
	}); err != nil {
		t.Fatalf("Ollama never went to sleep after everybody left: %v", err)
	}
	if code, body := harness.Get(client, gateURL+"/api/tags"); code != 200 || !strings.Contains(body, `"name":"tiny:1b"`) {
		t.Errorf("gate /api/tags while Ollama sleeps: %d %q, want the remembered list", code, body)
	}
	resp, err := client.Post(gateURL+"/api/chat", "application/json", strings.NewReader(`{"model":"tiny:1b","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	chat, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(chat), `"done":true`) {
		t.Errorf("held chat: %d %q, want the whole streamed answer", resp.StatusCode, chat)
	}

	cancel() // what Ctrl-C does
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within 10s of cancel")
	}
	for _, addr := range []string{cfg.fakeAddr, cfg.exporterAddr, cfg.gateAddr} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after cancel", addr)
		}
	}
}

func TestBadFlagValues(t *testing.T) {
	for _, cfg := range []config{
		{fakeAddr: "127.0.0.1:0", exporterAddr: "127.0.0.1:0", humans: -1},
		{fakeAddr: "127.0.0.1:0", exporterAddr: "127.0.0.1:0", cacheTTL: -time.Second},
		{fakeAddr: "127.0.0.1:0", exporterAddr: "127.0.0.1:0", startDelay: -time.Second},
	} {
		if err := run(context.Background(), cfg, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%+v) succeeded, want an error", cfg)
		}
	}
}
