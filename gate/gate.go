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
package gate

import (
	"container/list"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
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

// Timings of the probes, peers and waits (fields of Gate, so that tests can
// shorten them).
const (
	defaultProbeTimeout = 2 * time.Second        // an HTTP answer to /api/version within this, or "no HTTP answer"
	defaultProbeHeld    = 100 * time.Millisecond // probe period while anything is held or waits to learn
	defaultProbeIdle    = 5 * time.Second        // probe period otherwise
	defaultLearnWait    = 8 * time.Second        // under Open WebUI's 10 s model-list timeout
	defaultPeerEvery    = 250 * time.Millisecond
	defaultPeerTTL      = 2 * time.Second
	dialTimeout         = 3 * time.Second
	notifyCoalesce      = 5 * time.Millisecond
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
	lookup                                                            func(ctx context.Context, host string) ([]net.IPAddr, error)

	mu        sync.Mutex // guards everything below and every backend's mutable fields
	heldCount int        // held requests, all backends
	heldBytes int64      // bytes of held bodies in memory, all backends
	peers     map[string]*peerEntry

	stateDirty chan struct{}

	chMu        sync.Mutex
	changed     chan struct{}
	lastFire    time.Time
	firePending bool
	fired       int // closes of changed, for tests
}

// backend is one --gate.backend with its state; mutable fields are guarded by Gate.mu.
type backend struct {
	cfg    BackendConfig
	name   string // DefaultName for the unnamed one
	prefix string // "/" or "/NAME/"
	kick   chan struct{}

	state   State
	since   time.Time
	reason  string
	upCh    chan struct{} // closed while up; list requests that wait to learn select on it
	known   chan struct{} // closed once the state is no longer unknown
	queue   list.List     // *heldReq, arrival order
	reading int           // held requests still reading their bodies
	// inFlight counts demand requests being passed through, delivered ones included.
	inFlight  int
	releasing int // delivered requests in flight, bounded by ReleaseConcurrency
	heldBytes int64
	requests  map[Outcome]uint64
	hold      holdHist

	lists       map[string]*remembered // by backend path
	learning    bool                   // a never-seen list was asked while not up: wants one wake
	learnPaths  map[string]http.Header // lists to fetch at that wake, with the asking request's headers
	learnWaiter int                    // list requests waiting to learn now

	// wake=request: who was seen within Idle.
	active     map[string]int       // hashed user -> held/in-flight requests
	lastSeen   map[string]time.Time // hashed user -> end of their last request
	activeAnon int                  // held/in-flight requests without a user header
	anonSeen   []anonBucket         // ends of requests without a user header, by second, ascending
}

// anonBucket counts the requests without a user id that ended within one
// second; they count until Idle after the last of them.
type anonBucket struct {
	first, last time.Time
	n           int
}

type heldReq struct {
	arrived  time.Time
	bytes    int64
	ready    chan struct{} // closed at release
	released bool
	observed bool // its hold time is in the histogram (once, even if it goes back to the queue)
	elem     *list.Element
	body     *heldBody // nil: no body
	err      error     // reading the body failed
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
		cfg:          cfg,
		logger:       cfg.Logger,
		now:          cfg.Now,
		transport:    cfg.Transport,
		byName:       map[string]*backend{},
		instance:     randomID(),
		probeTimeout: defaultProbeTimeout,
		probeHeld:    defaultProbeHeld,
		probeIdle:    defaultProbeIdle,
		learnWait:    defaultLearnWait,
		peerEvery:    defaultPeerEvery,
		peerTTL:      defaultPeerTTL,
		lookup:       net.DefaultResolver.LookupIPAddr,
		peers:        map[string]*peerEntry{},
		stateDirty:   make(chan struct{}, 1),
		changed:      make(chan struct{}),
	}
	if g.logger == nil {
		g.logger = log.NewNopLogger()
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.transport == nil {
		g.transport = NewTransport()
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite:        g.rewrite,
		Transport:      g.transport,
		FlushInterval:  -1, // flush every write: NDJSON and SSE go on chunk by chunk
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

// copyBuffers are ReverseProxy's 32 KiB copy buffers, shared instead of one
// allocated per request.
var copyBuffers = &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte  { return *p.pool.Get().(*[]byte) }
func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }

// NewTransport returns the transport the gate uses when Config.Transport is
// nil: a clone of http.DefaultTransport with no response-header timeout (Ollama
// sends no header until the model is loaded), a 3 s dial timeout (a dial that
// fails marks the backend asleep), keep-alives with idle connections kept per
// backend (256, so that a released burst reuses its connections), HTTP/1.1 only (what Ollama speaks), no transparent compression (the
// client's Accept-Encoding passes through unchanged) and a 1 s
// Expect: 100-continue timeout.
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.ResponseHeaderTimeout = 0
	t.MaxIdleConns = 0
	t.MaxIdleConnsPerHost = DefaultReleaseConcurrency
	t.IdleConnTimeout = 90 * time.Second
	t.ExpectContinueTimeout = time.Second
	t.DisableCompression = true
	t.ForceAttemptHTTP2 = false
	p := new(http.Protocols)
	p.SetHTTP1(true)
	t.Protocols = p
	return t
}

func cloneURL(u *url.URL) *url.URL { c := *u; return &c }

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Backends returns the backends in flag order; the unnamed one is named "default".
func (g *Gate) Backends() []BackendConfig {
	out := make([]BackendConfig, len(g.backends))
	for i, b := range g.backends {
		out[i] = b.cfg
		out[i].Name = b.name
		out[i].URL = cloneURL(b.cfg.URL)
	}
	return out
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

// ServeHTTP serves the whole gate surface: /_gate/status, /_gate/demand, and
// every backend under its prefix.
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_gate/") {
		g.serveOwn(w, r)
		return
	}
	b, rel, ok := g.route(r)
	if !ok {
		prefixes := make([]string, len(g.backends))
		for i, b := range g.backends {
			prefixes[i] = b.prefix
		}
		writeError(w, r.URL.Path, http.StatusNotFound, codeNotFound,
			fmt.Sprintf("gate: no backend at %s: the backends are served under %s", r.URL.Path, strings.Join(prefixes, ", ")))
		return
	}
	switch {
	case isList(r.Method, rel.Path):
		g.serveList(w, r, b, rel)
	default:
		g.serveDemand(w, r, b, rel)
	}
}

// route finds the backend of r and the path to ask it, with the /NAME prefix
// stripped (escaping kept).
func (g *Gate) route(r *http.Request) (*backend, *url.URL, bool) {
	ep := r.URL.EscapedPath()
	if ep == "" {
		ep = "/"
	}
	if g.unnamed != nil {
		return g.unnamed, &url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath}, true
	}
	seg, rest, _ := strings.Cut(strings.TrimPrefix(ep, "/"), "/")
	b := g.byName[seg]
	if b == nil {
		return nil, nil, false
	}
	rawRest := "/" + rest // "/NAME" is served as "/NAME/"
	// Open WebUI keeps a trailing slash of an OLLAMA_BASE_URLS entry and
	// appends "/api/...": http://gate/big/ asks for /big//api/tags.
	for strings.HasPrefix(rawRest, "//") {
		rawRest = rawRest[1:]
	}
	p, err := url.PathUnescape(rawRest)
	if err != nil {
		return b, &url.URL{Path: rawRest}, true
	}
	rel := &url.URL{Path: p}
	if rawRest != rel.EscapedPath() {
		rel.RawPath = rawRest
	}
	return b, rel, true
}

// Demand returns the backend's demand: this replica's plus its peers'. The
// second result is false when there is no backend of that name.
func (g *Gate) Demand(name string) (Demand, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.byName[name]
	if b == nil {
		return Demand{}, false
	}
	now := g.now()
	own := b.ownDemand(now)
	d := Demand{Held: own.Held, InFlight: own.InFlight, Learning: own.Learning}
	users := map[string]time.Time{}
	anon := own.Anonymous
	for u, age := range own.Users {
		users[u] = now.Add(-time.Duration(age * float64(time.Second)))
	}
	wall := time.Now()
	for _, p := range g.peers {
		if wall.Sub(p.at) > g.peerTTL {
			continue
		}
		pd, ok := p.backends[name]
		if !ok {
			continue
		}
		d.Held += pd.Held
		d.InFlight += pd.InFlight
		d.Learning = d.Learning || pd.Learning
		anon += pd.Anonymous
		for u, age := range pd.Users {
			t := p.atNow.Add(-time.Duration(age * float64(time.Second)))
			if t.After(users[u]) {
				users[u] = t
			}
		}
	}
	if b.cfg.Wake == WakeRequest {
		for _, t := range users {
			if now.Sub(t) <= b.cfg.Idle {
				d.Recent++
			}
		}
		d.Recent += anon
	}
	return d, true
}

// Demand is what a backend's requests ask of it.
type Demand struct {
	Held, InFlight int
	Recent         int  // wake=request: distinct X-OpenWebUI-User-Id (else requests) within Idle, held/in-flight ones included
	Learning       bool // no list learned yet for this backend: it wants one wake
}

// ownDemand is this replica's demand of b (g.mu held), in the form peers exchange.
func (b *backend) ownDemand(now time.Time) BackendDemand {
	d := BackendDemand{
		Held:     b.queue.Len() + b.reading,
		InFlight: b.inFlight,
		Learning: b.learning,
	}
	if b.cfg.Wake != WakeRequest {
		return d
	}
	b.prune(now)
	d.Users = map[string]float64{}
	for u, t := range b.lastSeen {
		d.Users[u] = now.Sub(t).Seconds()
	}
	for u := range b.active {
		d.Users[u] = 0
	}
	d.Anonymous = b.activeAnon
	for _, a := range b.anonSeen {
		d.Anonymous += a.n
	}
	return d
}

// prune forgets who was seen longer than Idle ago.
func (b *backend) prune(now time.Time) {
	for u, t := range b.lastSeen {
		if now.Sub(t) > b.cfg.Idle {
			delete(b.lastSeen, u)
		}
	}
	i := 0
	for i < len(b.anonSeen) && now.Sub(b.anonSeen[i].last) > b.cfg.Idle {
		i++
	}
	b.anonSeen = b.anonSeen[i:]
}

// begin and end track a demand request of a wake=request backend (g.mu held).
func (b *backend) begin(user string) {
	if b.cfg.Wake != WakeRequest {
		return
	}
	if user == "" {
		b.activeAnon++
		return
	}
	b.active[user]++
}

func (b *backend) end(user string, now time.Time) {
	if b.cfg.Wake != WakeRequest {
		return
	}
	if user == "" {
		b.activeAnon--
		if n := len(b.anonSeen); n > 0 && now.Sub(b.anonSeen[n-1].first) < time.Second {
			// Within the same second (or a clock that stepped back): one bucket,
			// so that memory stays bounded by Idle in seconds, not requests.
			last := &b.anonSeen[n-1]
			last.n++
			if now.After(last.last) {
				last.last = now
			}
		} else {
			b.anonSeen = append(b.anonSeen, anonBucket{first: now, last: now, n: 1})
		}
		b.prune(now)
		return
	}
	if b.active[user]--; b.active[user] <= 0 {
		delete(b.active, user)
	}
	b.lastSeen[user] = now
}

// setState records what the gate saw of b (g.mu held). Going up releases the
// held requests and ends a learning wake.
func (g *Gate) setState(b *backend, st State, reason string) {
	if st == StateUp {
		reason = ""
	}
	if st != b.state {
		level.Info(g.logger).Log("msg", "backend state", "backend", b.name, "from", b.state, "to", st, "reason", reason)
		if b.state == StateUp {
			b.upCh = make(chan struct{})
		}
		if b.state == StateUnknown {
			close(b.known)
		}
		b.state, b.since = st, g.now()
		if st == StateUp {
			close(b.upCh)
		}
	}
	b.reason = reason
	if st != StateUp {
		return
	}
	if b.learning {
		b.learning = false
		paths := b.learnPaths
		b.learnPaths = map[string]http.Header{}
		g.bg.Add(1)
		go func() {
			defer g.bg.Done()
			g.learn(b, paths)
		}()
		defer g.notify()
	}
	g.pump(b)
}

// pump releases held requests of b in arrival order while it is up, at most
// ReleaseConcurrency in flight at once (g.mu held).
func (g *Gate) pump(b *backend) {
	for b.state == StateUp && b.releasing < g.cfg.ReleaseConcurrency {
		e := b.queue.Front()
		if e == nil {
			return
		}
		hr := b.queue.Remove(e).(*heldReq)
		hr.elem, hr.released = nil, true
		g.heldCount--
		b.inFlight++
		b.releasing++
		if !hr.observed {
			hr.observed = true
			b.hold.observe(time.Since(hr.arrived))
		}
		close(hr.ready)
	}
}

func (b *backend) kickProbe() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Stats returns this replica's numbers per backend, in flag order.
func (g *Gate) Stats() []BackendStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]BackendStats, len(g.backends))
	for i, b := range g.backends {
		req := make(map[Outcome]uint64, len(Outcomes))
		for _, o := range Outcomes {
			req[o] = b.requests[o]
		}
		out[i] = BackendStats{
			Name: b.name, State: b.state, Since: b.since, Reason: b.reason,
			Held: b.queue.Len() + b.reading, InFlight: b.inFlight, HeldBytes: b.heldBytes,
			Requests: req, Hold: b.hold.snapshot(),
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
	wg.Wait()
	g.bg.Wait()
}

// expiryLoop fires Changed when a wake=request backend's Recent drops because
// time passed (nothing else happens then).
func (g *Gate) expiryLoop(ctx context.Context) {
	last := map[string]int{}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed := false
		for _, b := range g.backends {
			if b.cfg.Wake != WakeRequest {
				continue
			}
			d, _ := g.Demand(b.name)
			if d.Recent != last[b.name] {
				last[b.name], changed = d.Recent, true
			}
		}
		if changed {
			g.notify()
		}
	}
}

func sortedNames(m map[string]*remembered) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
