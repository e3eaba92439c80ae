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
	drainTimeout  *time.Duration
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
		backends:      app.Flag("gate.backend", "The backend behind the gate: URL (one backend, served at /), or NAME=URL[,wake=arrival|request][,idle=DURATION][,warm=auto|off|MODEL[+MODEL...]][,max-loaded=N] (served under /NAME/; repeatable). wake=arrival (default): woken by people arriving in Open WebUI; wake=request: woken only by requests for it, asleep once none came within idle (default 10m). warm: which models the gate loads into Ollama as soon as it answers after a wake, and when a known person arrives (auto, the default for wake=arrival: what its people used last; off, the default for wake=request; or a list); max-loaded (default 1): how many models auto keeps loaded at once (docs/warming.md). A pool of replicas (docs/replicas.md): the same NAME again adds a replica, or NAME=dns+http://HEADLESS-SERVICE:PORT; parallel=N is each replica's OLLAMA_NUM_PARALLEL (default 1), people=N the active people one replica serves; bind=late makes a request wait in the gate for a free slot while every replica is busy (needs parallel=).").PlaceHolder("[NAME=]URL[,wake=...][,idle=...][,warm=...][,parallel=N][,people=N][,bind=late]").Strings(),
		holdTimeout:   app.Flag("gate.hold-timeout", "How long a request is held while its backend sleeps or starts, before it gets an error (504).").Default(defaultHoldTimeout).Duration(),
		maxHeld:       app.Flag("gate.max-held", "Requests held at once over all backends; more get a 503.").Default("1000").Int(),
		maxHeldBytes:  app.Flag("gate.max-held-bytes", "Bytes of held requests (headers and bodies) at once over all backends (e.g. 256MiB); a request past it gets a 503.").Default("256MiB").Bytes(),
		stateFile:     app.Flag("gate.state-file", "File where the backends' model lists are kept across restarts, so that a gate started while the backend sleeps still lists its models; none when empty.").Default("").String(),
		peers:         app.Flag("gate.peers", "HOST:PORT of a headless Service of every gate replica: each replica adds the others' held and in-flight requests to its own, so KEDA sees a request held by any replica through whichever it asks.").Default("").String(),
		drainTimeout:  app.Flag("gate.drain-timeout", "After SIGTERM, how long the gate keeps delivering what it holds and streams (still serving, counted by KEDA and its peers, but not ready); then what it still holds gets a 503 and it exits. A second SIGTERM ends the drain at once. 0 (default): --gate.hold-timeout plus 30s. Kubernetes' terminationGracePeriodSeconds must be longer (the chart's gate.terminationGracePeriodSeconds sets both).").Default("0s").Duration(),
	}
}

// newGate checks the gate's flags and builds it; nil when it is off.
// people tells it who is here and Open WebUI's default models, for warming.
func newGate(f *gateFlags, people gate.People, logger log.Logger) (*gate.Gate, error) {
	if *f.listenAddress == "" {
		if len(*f.backends) > 0 || *f.stateFile != "" || *f.peers != "" || *f.drainTimeout != 0 {
			return nil, errors.New("--gate.backend, --gate.state-file, --gate.peers and --gate.drain-timeout need --gate.listen-address")
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
	if *f.drainTimeout < 0 || *f.drainTimeout > 25*time.Hour {
		return nil, fmt.Errorf("--gate.drain-timeout must be between 0 (--gate.hold-timeout plus 30s) and 25h, got %s", *f.drainTimeout)
	}
	if *f.peers != "" {
		if _, _, err := net.SplitHostPort(*f.peers); err != nil {
			return nil, fmt.Errorf("--gate.peers: want HOST:PORT of a headless Service, got %q: %w", *f.peers, err)
		}
	}
	backends, err := gate.ParseBackends(*f.backends)
	if err != nil {
		return nil, fmt.Errorf("--gate.backend: %w", err)
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

// drainTimeout is --gate.drain-timeout, with 0 meaning the hold timeout plus
// 30 s: a request held just before SIGTERM can wait its whole hold and still
// stream a short answer.
func (f *gateFlags) drain() time.Duration {
	if *f.drainTimeout == 0 {
		return *f.holdTimeout + 30*time.Second
	}
	return *f.drainTimeout
}

// Timings of the gate's shutdown (see gateServer.shutdown).
const (
	// drainSettle: the least a draining gate serves on, for requests that were
	// routed to it before Kubernetes took it out of its Service (the endpoint
	// change takes a moment to reach every node), so the pod needs no preStop
	// sleep (its image has no shell).
	drainSettle = 5 * time.Second
	// answerGrace: for the answers EndDrain writes (503, 504) to reach their
	// clients before the connections are closed.
	answerGrace = 2 * time.Second
)

// gateServer serves the gate on its own port. Plain HTTP, like Ollama; no
// read or write timeout, since an answer may stream for minutes.
type gateServer struct {
	gate         *gate.Gate
	server       *http.Server
	listener     net.Listener
	drainTimeout time.Duration
	stopRun      context.CancelFunc
	runDone      chan struct{}
}

func listenGate(address string, g *gate.Gate, drainTimeout time.Duration, errorLog *slog.Logger) (*gateServer, error) {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("--gate.listen-address: %w", err)
	}
	return &gateServer{
		gate:         g,
		listener:     ln,
		drainTimeout: drainTimeout,
		server: &http.Server{
			Handler:           g,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(errorLog.Handler(), slog.LevelError),
		},
	}, nil
}

// start runs the gate's probes and peer exchange and serves; a failure to
// serve goes to served.
func (s *gateServer) start(served chan<- error) {
	var runCtx context.Context
	runCtx, s.stopRun = context.WithCancel(context.Background())
	s.runDone = make(chan struct{})
	go func() {
		defer close(s.runDone)
		s.gate.Run(runCtx)
	}()
	go func() {
		if err := s.server.Serve(s.listener); !errors.Is(err, http.ErrServerClosed) {
			served <- fmt.Errorf("wake gate: %w", err)
		}
	}()
}

// shutdown drains the gate, while the caller keeps the exporter's other
// servers up (KEDA reads this replica's demand there meanwhile), then stops
// it. See docs/gate.md, "Stopping: the drain":
//
//  1. Not ready (out of the Service), no more keep-alive (clients reconnect
//     to another replica), everything still served, at least drainSettle.
//  2. Until nothing is held or in flight, or the drain timeout (or again, a
//     second signal): the listener stays open, so peers still read
//     /_gate/demand and late requests are served.
//  3. The listener closes; what is still held or waits for an answer at the
//     deadline is answered (EndDrain), streams are cut.
func (s *gateServer) shutdown(again context.Context, logger log.Logger) {
	start := time.Now()
	deadline, cancel := context.WithTimeout(context.Background(), s.drainTimeout)
	defer cancel()
	stopAgain := context.AfterFunc(again, cancel)
	defer stopAgain()

	s.gate.Drain()
	s.server.SetKeepAlivesEnabled(false)
	held, inFlight := s.gate.Pending()
	level.Info(logger).Log("msg", "draining the wake gate: not ready, still serving and counted, until nothing is held or in flight (a second SIGTERM ends the drain now)",
		"held", held, "in_flight", inFlight, "drain_timeout", s.drainTimeout)
	settle := time.NewTimer(min(drainSettle, s.drainTimeout))
	select {
	case <-settle.C:
	case <-deadline.Done():
		settle.Stop()
	}
	_ = s.gate.WaitDrained(deadline)
	// Closes the listener; new connections are refused from here on. Waits
	// for requests that came late, still within the deadline.
	if err := s.server.Shutdown(deadline); err != nil {
		held, inFlight := s.gate.Pending()
		level.Warn(logger).Log("msg", "the drain ended before everything was delivered: held requests get a 503, requests without an answer yet a 504, streams are cut",
			"held", held, "in_flight", inFlight, "after", time.Since(start).Round(time.Millisecond))
		s.gate.EndDrain()
		grace, cancelGrace := context.WithTimeout(context.Background(), answerGrace)
		defer cancelGrace()
		if err := s.server.Shutdown(grace); err != nil {
			s.server.Close()
		}
	} else {
		level.Info(logger).Log("msg", "the wake gate drained: everything it held was delivered", "after", time.Since(start).Round(time.Millisecond))
	}
	s.gate.EndDrain() // nothing left to answer; ends the drain's context
	s.stopRun()
	<-s.runDone
}
