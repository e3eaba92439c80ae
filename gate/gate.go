// Package gate is the wake gate: an Ollama-compatible reverse proxy that sits
// between clients (Open WebUI) and one or more backends (Ollama, or
// OpenAI-compatible servers) that scale to zero.
//
// While a backend answers, the gate is transparent. While it sleeps or starts,
// the gate serves the backend's model lists from memory and holds every other
// request until the backend serves HTTP, then delivers it unchanged. What it
// holds and streams is the backend's demand (Demand, Changed), which another
// package turns into what KEDA reads. The gate knows nothing of Open WebUI's
// user count. See docs/gate.md.
//
// The files, in the order a request meets them:
//
//   - gate.go: the Gate, New, Run (the background loops), Changed.
//   - route.go: ServeHTTP: the gate's own /_gate/ paths, or which backend and
//     which path; a list goes to lists.go, any other request (demand) passes
//     through while its backend is up and is held otherwise (serveDemand).
//   - deliver.go: a demand request's passes: to a replica of a pool (chosen
//     per request), again elsewhere after a refused dial, again after a
//     connection closed before the request was read.
//   - peek.go: the model and first user message read from a body that streams
//     through, for the choice.
//   - pool.go: a pool's replicas, their own probes and state, DNS discovery,
//     the choice (package balance decides), per-replica counts for the peers.
//   - latebind.go: bind=late, a request waiting in the gate for a free slot.
//   - slots.go: a replica's slots, parallel= checked against the answers it
//     streams at once.
//   - poollists.go: a pool's model lists, the union of its replicas'.
//   - replicadrain.go: /_gate/drain, a replica's preStop before its pod stops.
//   - paths.go: what route refuses or adjusts (dot segments, Open WebUI's
//     doubled slash) and CORS preflights (never demand).
//   - passthrough.go: one pass of a request to its backend (the reverse proxy
//     and its hooks), the transport.
//   - hop.go: a proxy in front of the backend (a mesh sidecar, an ingress):
//     its "no backend" answer told from the backend's own 5xx.
//   - hold.go: holding a request while its backend is not up, its body in
//     memory within the bounds, and the release in arrival order.
//   - lists.go: the model lists, remembered and served from memory; the
//     learning wake for a list never seen.
//   - learning.go: the bound of a learning wake (not learnable after the hold
//     timeout).
//   - backend.go: a backend and its state (asleep, starting, up,
//     misconfigured), and what a change of state sets off.
//   - probe.go: the probes that find a backend's state.
//   - demand.go: what a backend's requests ask of it (Demand): held, in flight,
//     who was seen within Idle.
//   - peers.go: demand exchanged with the other replicas (/_gate/demand).
//   - peercheck.go: what a peer's report may say.
//   - state.go: --gate.state-file, the remembered lists across restarts.
//   - stats.go, status.go: the numbers (Stats) and /_gate/status.
//   - errors.go: errors in the backend's own shape; what a failed dial means.
//   - warm.go: warming, loading a backend's models before the first message
//     needs them (warm=), and keeping them loaded while their people are here.
//   - config.go: Config and --gate.backend.
package gate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// Header names the gate reads or writes.
const (
	// UserHeader is the header Open WebUI sends with ENABLE_FORWARD_USER_INFO_HEADERS=true;
	// wake=request backends count its distinct values.
	UserHeader = "X-OpenWebUI-User-Id"
	// FromMemoryHeader marks an answer served from the gate's memory.
	FromMemoryHeader = "X-Gate-From-Memory"
)

// The canonical forms of the names read on every request: Header.Get
// canonicalizes a name that is not (UserHeader and ChatHeader are spelt as
// Open WebUI spells them), in a new string each time.
var (
	userHeaderKey = http.CanonicalHeaderKey(UserHeader)
	chatHeaderKey = http.CanonicalHeaderKey(ChatHeader)
)

// Timings of the probes, peers and waits (fields of Gate, so that tests can
// shorten them).
const (
	defaultProbeTimeout = 2 * time.Second        // an HTTP answer to /api/version within this, or "no HTTP answer"
	defaultProbeHeld    = 100 * time.Millisecond // probe period while anything is held or waits to learn
	defaultProbeIdle    = 5 * time.Second        // probe period otherwise
	defaultLearnWait    = 8 * time.Second        // under Open WebUI's 10 s model-list timeout
	defaultPeerEvery    = 250 * time.Millisecond
	defaultPeerTTL      = 2 * time.Second
	defaultPeerLookup   = time.Second // half the TTL: a hanging lookup still lets stale peers age out
	// A peer listed by --gate.peers that answers nothing for this long is
	// logged: past a rollout's blips, it is a NetworkPolicy or a wrong port,
	// and its demand (perhaps a stream KEDA must keep up) is not counted.
	defaultPeerSilentWarn = 30 * time.Second
	dialTimeout           = 3 * time.Second
	notifyCoalesce        = 5 * time.Millisecond
)

// Gate is the wake gate. Create it with New, serve it with ServeHTTP, and run
// its probes, peer exchange and state file with Run.
type Gate struct {
	cfg       Config
	logger    log.Logger
	now       func() time.Time
	transport http.RoundTripper
	proxy     *httputil.ReverseProxy
	backends  []*backend
	byName    map[string]*backend
	unnamed   *backend // the single unnamed backend, or nil
	instance  string   // random, so that a replica can tell its own /_gate/demand from its peers'
	bg        sync.WaitGroup

	probeTimeout, probeHeld, probeIdle, learnWait, peerEvery, peerTTL time.Duration
	resolveEvery                                                      time.Duration // a dns+ pool's name is resolved again this often
	warmEvery, warmKeepEvery                                          time.Duration // warm.go
	peerLookupTimeout                                                 time.Duration
	peerSilentWarn                                                    time.Duration // peers.go
	lateBindWait                                                      time.Duration // latebind.go
	answerOverlap, answerGap                                          time.Duration // slots.go
	epoch                                                             time.Time     // slots.go: streams are timed since
	lookup                                                            func(ctx context.Context, host string) ([]net.IPAddr, error)

	mu        sync.Mutex // guards everything below and every backend's mutable fields
	heldCount int        // held requests, all backends
	heldBytes int64      // bytes of held bodies in memory, all backends
	peers     map[string]*peerEntry

	stateDirty chan struct{}
	drain      drain

	chMu        sync.Mutex
	changed     chan struct{}
	lastFire    time.Time
	firePending bool
	fired       int // closes of changed, for tests
}

// New checks cfg and returns a Gate. The state file is read here: a missing
// file is fine, an unreadable or corrupt one is logged and ignored (the lists
// are only a cache), a state-file directory that does not exist is an error.
func New(cfg Config) (*Gate, error) {
	if err := checkBackends(cfg.Backends); err != nil {
		return nil, fmt.Errorf("gate: %w", err)
	}
	switch {
	case cfg.HoldTimeout < 0:
		return nil, fmt.Errorf("gate: hold timeout %s is negative", cfg.HoldTimeout)
	case cfg.MaxHeld < 0:
		return nil, fmt.Errorf("gate: max held %d is negative", cfg.MaxHeld)
	case cfg.MaxHeldBytes < 0:
		return nil, fmt.Errorf("gate: max held bytes %d is negative", cfg.MaxHeldBytes)
	case cfg.ReleaseConcurrency < 0:
		return nil, fmt.Errorf("gate: release concurrency %d is negative", cfg.ReleaseConcurrency)
	case cfg.ProbeInterval < 0:
		return nil, fmt.Errorf("gate: probe interval %s is negative", cfg.ProbeInterval)
	case cfg.LateBindWait < 0:
		return nil, fmt.Errorf("gate: late-binding wait %s is negative", cfg.LateBindWait)
	}
	if cfg.HoldTimeout == 0 {
		cfg.HoldTimeout = DefaultHoldTimeout
	}
	if cfg.MaxHeld == 0 {
		cfg.MaxHeld = DefaultMaxHeld
	}
	if cfg.MaxHeldBytes == 0 {
		cfg.MaxHeldBytes = DefaultMaxHeldBytes
	}
	if cfg.ReleaseConcurrency == 0 {
		cfg.ReleaseConcurrency = DefaultReleaseConcurrency
	}
	if cfg.Peers != "" {
		if _, _, err := net.SplitHostPort(cfg.Peers); err != nil {
			return nil, fmt.Errorf("gate: peers %q: want HOST:PORT: %w", cfg.Peers, err)
		}
	}
	g := &Gate{
		cfg:               cfg,
		logger:            cfg.Logger,
		now:               cfg.Now,
		transport:         cfg.Transport,
		byName:            map[string]*backend{},
		instance:          randomID(),
		probeTimeout:      defaultProbeTimeout,
		probeHeld:         defaultProbeHeld,
		probeIdle:         defaultProbeIdle,
		lateBindWait:      lateBindMax,
		answerOverlap:     answerOverlap,
		answerGap:         answerGap,
		learnWait:         defaultLearnWait,
		peerEvery:         defaultPeerEvery,
		peerTTL:           defaultPeerTTL,
		peerLookupTimeout: defaultPeerLookup,
		peerSilentWarn:    defaultPeerSilentWarn,
		resolveEvery:      defaultResolveEvery,
		warmEvery:         warmTick,
		warmKeepEvery:     warmKeepTick,
		lookup:            net.DefaultResolver.LookupIPAddr,
		peers:             map[string]*peerEntry{},
		stateDirty:        make(chan struct{}, 1),
		changed:           make(chan struct{}),
	}
	g.drain.ended, g.drain.endNow = context.WithCancel(context.Background())
	if cfg.ProbeInterval > 0 {
		g.probeIdle = cfg.ProbeInterval
	}
	if cfg.LateBindWait > 0 {
		g.lateBindWait = cfg.LateBindWait
	}
	if g.logger == nil {
		g.logger = log.NewNopLogger()
	}
	if g.now == nil {
		g.now = time.Now
	}
	g.epoch = g.now()
	if g.transport == nil {
		g.transport = NewTransport()
		if env := proxyEnv(); env != "" {
			level.Info(g.logger).Log("msg", "the gate does not use the environment's proxy for its backends and peers: they are dialled directly", "ignored", env)
		}
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite:   g.rewrite,
		Transport: wholeBodyTransport{g.transport},
		// No flush interval: ReverseProxy flushes every write of an answer
		// without a Content-Length (Ollama's NDJSON streams, chunked) and of
		// SSE itself, so those go on chunk by chunk; an answer of known length
		// (stream false) is written in one go at its end, without the timer
		// and flush that -1 sets up for every answer.
		FlushInterval:  0,
		ErrorHandler:   g.proxyError,
		ModifyResponse: g.modifyResponse,
		BufferPool:     copyBuffers,
	}
	now := g.now()
	for _, bc := range cfg.Backends {
		bc.URL = cloneURL(bc.URL)
		if bc.Wake == "" {
			bc.Wake = WakeArrival
		}
		b := &backend{
			cfg:        bc,
			name:       bc.Name,
			prefix:     "/" + bc.Name + "/",
			kick:       make(chan struct{}, 1),
			state:      StateUnknown,
			since:      now,
			upCh:       make(chan struct{}),
			known:      make(chan struct{}),
			requests:   map[Outcome]uint64{},
			lists:      map[string]*remembered{},
			learnPaths: map[string]http.Header{},
			active:     map[string]int{},
			lastSeen:   map[string]time.Time{},
		}
		if bc.Name == "" {
			b.name, b.prefix = DefaultName, "/"
			g.unnamed = b
		}
		if bc.Pool() {
			b.pool = newPool(bc)
		}
		b.cfg.Warm = defaultWarm(bc.Warm, bc.Wake)
		if b.cfg.Warm.Mode != WarmOff {
			b.warm = newWarmer(b.cfg.Warm)
		}
		g.backends = append(g.backends, b)
		g.byName[b.name] = b
	}
	if cfg.StateFile != "" {
		if err := g.loadState(); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Backends returns the backends in flag order; the unnamed one is named "default".
func (g *Gate) Backends() []BackendConfig {
	out := make([]BackendConfig, len(g.backends))
	for i, b := range g.backends {
		out[i] = b.cfg
		out[i].Name = b.name
		out[i].URL = cloneURL(b.cfg.URL)
		out[i].Replicas = nil
		for _, u := range b.cfg.Replicas {
			out[i].Replicas = append(out[i].Replicas, cloneURL(u))
		}
	}
	return out
}

// Run probes the backends, exchanges demand with peers and writes the state
// file until ctx ends. Held requests are released only while Run runs.
func (g *Gate) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, b := range g.backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.probeLoop(ctx, b)
		}()
	}
	if g.cfg.Peers != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.peerLoop(ctx)
		}()
	}
	if g.cfg.StateFile != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.stateLoop(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		g.expiryLoop(ctx)
	}()
	for _, b := range g.backends {
		if b.warm == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.warmLoop(ctx, b)
		}()
	}
	wg.Wait()
	g.bg.Wait()
	g.flushState()
}

// Changed returns a channel that is closed at the next change of any backend's
// Demand (this replica's or a peer's); call it again after that. Changes are
// coalesced: the first one closes the channel at once, later ones within 5 ms
// close the next channel at the end of those 5 ms.
func (g *Gate) Changed() <-chan struct{} {
	g.chMu.Lock()
	defer g.chMu.Unlock()
	return g.changed
}

func (g *Gate) notify() {
	g.chMu.Lock()
	defer g.chMu.Unlock()
	if g.firePending {
		return
	}
	if wait := notifyCoalesce - time.Since(g.lastFire); wait > 0 {
		g.firePending = true
		time.AfterFunc(wait, func() {
			g.chMu.Lock()
			defer g.chMu.Unlock()
			g.firePending = false
			g.fireLocked()
		})
		return
	}
	g.fireLocked()
}

func (g *Gate) fireLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
	g.lastFire = time.Now()
	g.fired++
}

func cloneURL(u *url.URL) *url.URL { c := *u; return &c }

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
