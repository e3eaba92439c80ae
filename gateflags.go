package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/alecthomas/units"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/openwebui-exporter/openwebui_exporter/gate"
)

// gateFlags configure the wake gate (an Ollama-compatible endpoint in front
// of Ollama), off by default.
type gateFlags struct {
	listenAddress *string
	backends      *[]string
	holdTimeout   *time.Duration
	maxHeld       *int
	maxHeldBytes  *units.Base2Bytes
	stateFile     *string
	peers         *string
}

// defaultHoldTimeout covers a pod start, an image pull and Ollama's own
// start-up, and matches Ollama's OLLAMA_LOAD_TIMEOUT (5m) and the HTTP
// add-on's response header timeout (300 s). Open WebUI waits without limit
// (AIOHTTP_CLIENT_TIMEOUT is unset by default), so the gate's bound is the
// one a person meets: raise it where GPU nodes are provisioned on demand.
const defaultHoldTimeout = "5m"

func addGateFlags(app *kingpin.Application) *gateFlags {
	return &gateFlags{
		listenAddress: app.Flag("gate.listen-address", "Address (e.g. :11434) of the wake gate: an Ollama-compatible endpoint for Open WebUI's OLLAMA_BASE_URL(S) that passes everything through to --gate.backend while it is up, serves the model lists from memory while it sleeps, and holds every other request until it answers; off when empty.").Default("").String(),
		backends:      app.Flag("gate.backend", "The backend behind the gate: URL (one backend, served at /), or NAME=URL[,wake=arrival|request][,idle=DURATION][,warm=auto|off|MODEL[+MODEL...]][,max-loaded=N] (served under /NAME/; repeatable). wake=arrival (default): woken by people arriving in Open WebUI; wake=request: woken only by requests for it, asleep once none came within idle (default 10m). warm: which models the gate loads into Ollama as soon as it answers after a wake, and when a known person arrives (auto, the default for wake=arrival: what its people used last; off, the default for wake=request; or a list); max-loaded (default 1): how many models auto keeps loaded at once. See docs/warming.md.").PlaceHolder("[NAME=]URL[,wake=...][,idle=...][,warm=...]").Strings(),
		holdTimeout:   app.Flag("gate.hold-timeout", "How long a request is held while its backend sleeps or starts, before it gets an error (504).").Default(defaultHoldTimeout).Duration(),
		maxHeld:       app.Flag("gate.max-held", "Requests held at once over all backends; more get a 503.").Default("1000").Int(),
		maxHeldBytes:  app.Flag("gate.max-held-bytes", "Bytes of held request bodies at once over all backends (e.g. 256MiB); a request past it gets a 503.").Default("256MiB").Bytes(),
		stateFile:     app.Flag("gate.state-file", "File where the backends' model lists are kept across restarts, so that a gate started while the backend sleeps still lists its models; none when empty.").Default("").String(),
		peers:         app.Flag("gate.peers", "HOST:PORT of a headless Service of every gate replica: each replica adds the others' held and in-flight requests to its own, so KEDA sees a request held by any replica through whichever it asks.").Default("").String(),
	}
}

// newGate checks the gate's flags and builds it; nil when it is off.
// people tells it who is here and Open WebUI's default models, for warming.
func newGate(f *gateFlags, people gate.People, logger log.Logger) (*gate.Gate, error) {
	if *f.listenAddress == "" {
		if len(*f.backends) > 0 || *f.stateFile != "" || *f.peers != "" {
			return nil, errors.New("--gate.backend, --gate.state-file and --gate.peers need --gate.listen-address")
		}
		return nil, nil
	}
	if len(*f.backends) == 0 {
		return nil, errors.New("--gate.listen-address needs --gate.backend: the URL of Ollama (or another server the gate stands in front of)")
	}
	if *f.holdTimeout < time.Second || *f.holdTimeout > 24*time.Hour {
		return nil, fmt.Errorf("--gate.hold-timeout must be between 1s and 24h, got %s", *f.holdTimeout)
	}
	if *f.maxHeld < 1 {
		return nil, fmt.Errorf("--gate.max-held must be at least 1, got %d", *f.maxHeld)
	}
	if *f.maxHeldBytes < units.KiB {
		return nil, fmt.Errorf("--gate.max-held-bytes must be at least 1KiB, got %s", *f.maxHeldBytes)
	}
	if *f.peers != "" {
		if _, _, err := net.SplitHostPort(*f.peers); err != nil {
			return nil, fmt.Errorf("--gate.peers: want HOST:PORT of a headless Service, got %q: %w", *f.peers, err)
		}
	}
	var backends []gate.BackendConfig
	for _, raw := range *f.backends {
		b, err := gate.ParseBackend(raw)
		if err != nil {
			return nil, fmt.Errorf("--gate.backend: %w", err)
		}
		backends = append(backends, b)
	}
	g, err := gate.New(gate.Config{
		Backends:     backends,
		HoldTimeout:  *f.holdTimeout,
		MaxHeld:      *f.maxHeld,
		MaxHeldBytes: int64(*f.maxHeldBytes),
		StateFile:    *f.stateFile,
		Peers:        *f.peers,
		People:       people,
		Logger:       log.With(logger, "component", "gate"),
	})
	if err != nil {
		return nil, fmt.Errorf("--gate.*: %w", err)
	}
	return g, nil
}

// gateShutdownTimeout is how long answers that are still streaming through
// the gate get at shutdown: within Kubernetes' default 30 s grace period.
const gateShutdownTimeout = 25 * time.Second

// gateServer serves the gate on its own port. Plain HTTP, like Ollama; no
// read or write timeout, since an answer may stream for minutes.
type gateServer struct {
	gate     *gate.Gate
	server   *http.Server
	listener net.Listener
}

func listenGate(address string, g *gate.Gate, errorLog *slog.Logger) (*gateServer, error) {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("--gate.listen-address: %w", err)
	}
	return &gateServer{
		gate:     g,
		listener: ln,
		server: &http.Server{
			Handler:           g,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(errorLog.Handler(), slog.LevelError),
		},
	}, nil
}

// serve runs the gate's probes and serves until ctx ends, then lets what
// streams finish (at most gateShutdownTimeout).
func (s *gateServer) serve(ctx context.Context, logger log.Logger) error {
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	go s.gate.Run(runCtx)
	served := make(chan error, 1)
	go func() { served <- s.server.Serve(s.listener) }()
	select {
	case err := <-served:
		return fmt.Errorf("wake gate: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), gateShutdownTimeout)
	defer cancel()
	if err := s.server.Shutdown(shutdownCtx); err != nil {
		level.Warn(logger).Log("msg", "answers still streaming through the gate were cut at shutdown", "err", err)
		s.server.Close()
	}
	return nil
}
