// Command demo runs a fake Open WebUI and the exporter in one process, so
// that one command shows the exporter at work and Ctrl-C stops all of it.
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

	"github.com/go-kit/log/level"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/internal/wiring"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

type config struct {
	fakeAddr     string        // the fake Open WebUI
	exporterAddr string        // the exporter
	humans       int           // people active at start
	cacheTTL     time.Duration // the exporter's --cache.ttl
}

func main() {
	var cfg config
	flag.StringVar(&cfg.fakeAddr, "fake.listen", "127.0.0.1:3000", "address of the fake Open WebUI")
	flag.StringVar(&cfg.exporterAddr, "listen", "127.0.0.1:8080", "address of the exporter")
	flag.IntVar(&cfg.humans, "humans", 2, "people active in the fake Open WebUI at start")
	flag.DurationVar(&cfg.cacheTTL, "cache.ttl", 5*time.Second, "the exporter's --cache.ttl (short, so changes show quickly)")
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
	handler, err := wiring.NewHandler(cache, demand.New(cache, nil), nil, token, "/metrics", logger)
	if err != nil {
		return err
	}

	servers := []*http.Server{
		{Handler: fake, ReadHeaderTimeout: 10 * time.Second},
		{Handler: handler, ReadHeaderTimeout: 10 * time.Second},
	}
	served := make(chan error, len(servers))
	for i, ln := range []net.Listener{fakeLn, exporterLn} {
		go func() { served <- servers[i].Serve(ln) }()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go fake.HeartbeatEvery(ctx, 30*time.Second) // every open tab heartbeats

	level.Info(logger).Log("msg", "demo running", "fake_openwebui", fakeURL, "exporter", "http://"+exporterLn.Addr().String(), "cache_ttl", cfg.cacheTTL)
	fmt.Fprint(out, tryText(fakeLn.Addr().String(), exporterLn.Addr().String(), cfg))

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
	level.Info(logger).Log("msg", "demo stopped: the fake Open WebUI and the exporter")
	return serveErr
}

// listen binds addr, or says which port is busy and what to do.
func listen(addr, what, flagName string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s for %s: %w; is an earlier demo or another server still running there? Stop it, or choose another address with %s", addr, what, err, flagName)
	}
	return ln, nil
}

func tryText(fakeAddr, exporterAddr string, cfg config) string {
	return fmt.Sprintf(`
Demo running: a fake Open WebUI on http://%[1]s with %[3]d people active,
and the exporter on http://%[2]s (cache TTL %[4]s). Ctrl-C stops both.

Try, in another terminal:
  curl -sS %[2]s/active_users
  curl -sS %[2]s/metrics | grep ^openwebui_
  curl -sS -X POST '%[1]s/_fake/humans?active=5'   # 5 people arrive
  curl -sS -X POST '%[1]s/_fake/humans?active=0'   # everybody leaves
/active_users follows within the cache TTL (%[4]s).

`, fakeAddr, exporterAddr, cfg.humans, cfg.cacheTTL)
}
