// Command demo runs a fake Open WebUI, the exporter with its wake gate, and a
// stand-in Ollama that sleeps and wakes, in one process, so that one command
// shows the exporter at work and Ctrl-C stops all of it. A small loop plays
// KEDA: it starts the stand-in (which serves HTTP only after a start-up
// delay) when the exporter's value is above 0, and stops it after a
// cooldown at 0.
//
//	go run ./cmd/demo            # or: make demo
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/gate"
	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/internal/wiring"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

type config struct {
	fakeAddr     string        // the fake Open WebUI
	exporterAddr string        // the exporter
	gateAddr     string        // the exporter's wake gate
	humans       int           // people active at start
	cacheTTL     time.Duration // the exporter's --cache.ttl
	startDelay   time.Duration // the stand-in Ollama's start-up, from "KEDA scales" to its first HTTP answer
	cooldown     time.Duration // KEDA's cooldownPeriod, played by the demo
}

func main() {
	var cfg config
	flag.StringVar(&cfg.fakeAddr, "fake.listen", "127.0.0.1:3000", "address of the fake Open WebUI")
	flag.StringVar(&cfg.exporterAddr, "listen", "127.0.0.1:8080", "address of the exporter")
	flag.IntVar(&cfg.humans, "humans", 2, "people active in the fake Open WebUI at start")
	flag.DurationVar(&cfg.cacheTTL, "cache.ttl", 5*time.Second, "the exporter's --cache.ttl (short, so changes show quickly)")
	flag.StringVar(&cfg.gateAddr, "gate.listen", "127.0.0.1:11434", "address of the exporter's wake gate (Open WebUI's OLLAMA_BASE_URL)")
	flag.DurationVar(&cfg.startDelay, "ollama.start-delay", 5*time.Second, "the stand-in Ollama's start-up: how long after KEDA scales it before it answers HTTP")
	flag.DurationVar(&cfg.cooldown, "ollama.cooldown", 15*time.Second, "KEDA's cooldownPeriod, as the demo plays it: how long at 0 before Ollama is stopped")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, then stops both servers. It listens on both
// addresses before it starts anything, so a busy port fails at once.
func run(ctx context.Context, cfg config, out, logs io.Writer) error {
	if cfg.humans < 0 {
		return fmt.Errorf("-humans must be 0 or more, got %d", cfg.humans)
	}
	if cfg.cacheTTL < 0 {
		return fmt.Errorf("-cache.ttl must be 0 or more, got %s", cfg.cacheTTL)
	}
	if cfg.startDelay < 0 || cfg.cooldown < 0 {
		return fmt.Errorf("-ollama.start-delay and -ollama.cooldown must be 0 or more, got %s and %s", cfg.startDelay, cfg.cooldown)
	}
	fakeLn, err := listen(cfg.fakeAddr, "the fake Open WebUI", "-fake.listen")
	if err != nil {
		return err
	}
	defer fakeLn.Close()
	exporterLn, err := listen(cfg.exporterAddr, "the exporter", "-listen")
	if err != nil {
		return err
	}
	defer exporterLn.Close()
	gateLn, err := listen(cfg.gateAddr, "the wake gate", "-gate.listen")
	if err != nil {
		return err
	}
	defer gateLn.Close()
	ollama, err := fakeollama.NewServer("127.0.0.1:0", fakeollama.New(fakeollama.Config{Models: []string{"tiny:1b"}, ChunkInterval: 200 * time.Millisecond}))
	if err != nil {
		return err
	}
	defer ollama.Stop()

	fake := fakeopenwebui.New(fakeopenwebui.Config{})
	key := fake.IssueAPIKey(fake.AddUser("exporter", "user"))
	fake.SetActiveHumans(cfg.humans)
	fakeURL := &url.URL{Scheme: "http", Host: fakeLn.Addr().String()}

	logger, _, err := wiring.NewLogger(logs, "logfmt", "info")
	if err != nil {
		return err
	}
	token, err := openwebui.StaticToken(key)
	if err != nil {
		return err
	}
	client := openwebui.NewClient(openwebui.Config{BaseURL: fakeURL, Token: token, Mode: openwebui.ModeUsage, UserAgent: "openwebui_exporter-demo", Logger: logger})
	cache := snapshot.New(snapshot.Config{Fetch: client.Count, TTL: cfg.cacheTTL, MaxStale: 2 * time.Minute, Timeout: 2500 * time.Millisecond, Logger: logger})
	ollamaURL, _ := url.Parse(ollama.URL())
	wakeGate, err := gate.New(gate.Config{
		Backends:     []gate.BackendConfig{{URL: ollamaURL, Wake: gate.WakeArrival}},
		HoldTimeout:  5 * time.Minute,
		MaxHeld:      1000,
		MaxHeldBytes: 256 << 20,
		Logger:       log.With(logger, "component", "gate"),
	})
	if err != nil {
		return err
	}
	decider := demand.New(cache, wakeGate)
	handler, err := wiring.NewHandler(cache, decider, wakeGate, token, "/metrics", logger)
	if err != nil {
		return err
	}

	servers := []*http.Server{
		{Handler: fake, ReadHeaderTimeout: 10 * time.Second},
		{Handler: handler, ReadHeaderTimeout: 10 * time.Second},
		{Handler: wakeGate, ReadHeaderTimeout: 10 * time.Second},
	}
	served := make(chan error, len(servers))
	for i, ln := range []net.Listener{fakeLn, exporterLn, gateLn} {
		go func() { served <- servers[i].Serve(ln) }()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go fake.HeartbeatEvery(ctx, 30*time.Second) // every open tab heartbeats
	gateDone := make(chan struct{})
	gateCtx, stopGate := context.WithCancel(context.Background())
	go func() { defer close(gateDone); wakeGate.Run(gateCtx) }()
	defer func() { stopGate(); <-gateDone }()
	go playKEDA(ctx, decider, ollama, cfg, logger)

	level.Info(logger).Log("msg", "demo running", "fake_openwebui", fakeURL, "exporter", "http://"+exporterLn.Addr().String(),
		"gate", "http://"+gateLn.Addr().String(), "ollama", ollama.URL(), "cache_ttl", cfg.cacheTTL)
	fmt.Fprint(out, tryText(fakeLn.Addr().String(), exporterLn.Addr().String(), gateLn.Addr().String(), cfg))

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
		serveErr = fmt.Errorf("serving: %w", serveErr)
	}
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShutdown()
	for _, s := range servers {
		if err := s.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.Close()
		}
	}
	level.Info(logger).Log("msg", "demo stopped: the fake Open WebUI, the exporter, its gate and the stand-in Ollama")
	return serveErr
}

// playKEDA does what KEDA would do with the exporter's value: above 0 it
// scales the stand-in Ollama to 1 (which then starts for cfg.startDelay);
// at 0 for cfg.cooldown it scales it to 0. It checks every 250 ms, as the
// push trigger's stream would tell KEDA at once.
func playKEDA(ctx context.Context, decider *demand.Decider, ollama *fakeollama.Server, cfg config, logger log.Logger) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var zeroSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n, err := decider.Value(ctx, "")
		switch {
		case err != nil: // unknown: KEDA holds Ollama as it is
			zeroSince = time.Time{}
		case n > 0:
			zeroSince = time.Time{}
			if !ollama.Running() {
				level.Info(logger).Log("msg", "KEDA (played by the demo): scaling Ollama 0 -> 1", "value", n, "start_delay", cfg.startDelay)
				if err := ollama.Start(cfg.startDelay); err != nil {
					level.Error(logger).Log("msg", "starting the stand-in Ollama", "err", err)
				}
			}
		case ollama.Running() && zeroSince.IsZero():
			zeroSince = time.Now()
		case ollama.Running() && time.Since(zeroSince) >= cfg.cooldown:
			level.Info(logger).Log("msg", "KEDA (played by the demo): nobody for the cooldown, scaling Ollama 1 -> 0", "cooldown", cfg.cooldown)
			ollama.Stop()
		}
	}
}

// listen binds addr, or says which port is busy and what to do.
func listen(addr, what, flagName string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s for %s: %w; is an earlier demo or another server still running there? Stop it, or choose another address with %s", addr, what, err, flagName)
	}
	return ln, nil
}

func tryText(fakeAddr, exporterAddr, gateAddr string, cfg config) string {
	return fmt.Sprintf(`
Demo running: a fake Open WebUI on http://%[1]s with %[3]d people active,
the exporter on http://%[2]s (cache TTL %[4]s), its wake gate on
http://%[5]s in front of a stand-in Ollama that KEDA (played by the demo)
wakes while the value is above 0 (start-up %[6]s) and stops after %[7]s at 0.
Ctrl-C stops all of it.

Try, in another terminal:
  curl -sS %[2]s/active_users
  curl -sS %[2]s/metrics | grep ^openwebui_
  curl -sS -X POST '%[1]s/_fake/humans?active=5'   # 5 people arrive
  curl -sS -X POST '%[1]s/_fake/humans?active=0'   # everybody leaves
/active_users follows within the cache TTL (%[4]s).

The wake gate (Open WebUI's OLLAMA_BASE_URL), once everybody left and Ollama sleeps:
  curl -sS %[5]s/_gate/status                     # "state":"asleep"
  curl -sS -i %[5]s/api/tags                      # the models, from memory
  curl -sS %[5]s/api/chat -d '{"model":"tiny:1b","messages":[{"role":"user","content":"hi"}]}'
The chat is held, wakes Ollama at once, and streams once it is up (%[6]s).

`, fakeAddr, exporterAddr, cfg.humans, cfg.cacheTTL, gateAddr, cfg.startDelay, cfg.cooldown)
}
