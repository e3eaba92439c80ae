package gate

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log/level"

	"github.com/openwebui-exporter/openwebui_exporter/gate/balance"
)

// ChatHeader is the header Open WebUI (v0.6.18 and later, with
// ENABLE_FORWARD_USER_INFO_HEADERS=true) sends with a chat's requests: the
// conversation a pool keeps on one replica.
const ChatHeader = "X-OpenWebUI-Chat-Id"

// Timings of a pool.
const (
	defaultResolveEvery = 5 * time.Second // a dns+http pool re-resolves its name this often
	// modelKeep is how long a model the gate routed to a replica counts as
	// loaded there without its /api/ps saying so: Ollama's default keep-alive.
	modelKeep = 5 * time.Minute
)

// pool is the replica set of a pooled backend; its fields are guarded by
// Gate.mu, except chooser (safe on its own) and the fixed configuration.
type pool struct {
	parallel   int
	maxLoaded  int      // models one replica's GPU holds at once (max-loaded=, 1 by default): the bound of what the gate believes loaded there
	discover   *url.URL // dns+http(s): the name resolved for replicas; nil for a static list
	chooser    *balance.Chooser
	bindLate   bool      // bind=late: a request waits in the gate for a free slot (latebind.go)
	atOnce     int       // the most answers of one model a replica was seen running at once, when more than parallel= (slots.go)
	peerAtOnce int       // the most a live peer gate reports it saw itself (slots.go, mergePeers)
	waiting    list.List // of *slotWaiter, oldest first (bind=late)

	replicas   []*replica // by id
	resolvedAt time.Time  // last DNS answer (dns+http only)
	resolveErr string
}

// replica is one server of a pool, with its own probe state.
type replica struct {
	url       *url.URL
	id        string // host:port
	state     State
	reason    string
	draining  bool                      // asked to drain (preStop): routes nothing new until it was seen down and up again
	drainedAt time.Time                 // when its drain answered; zero while it runs
	gone      bool                      // no longer in the DNS answer: routes nothing new, forgotten once its streams end
	inFlight  int                       // this gate's requests to it
	streams   map[*attempt]*streamClock // this gate's answers it streams now (slots.go)
	atOnce    int                       // the most answers of one model it was seen streaming at once, when more than parallel=; 0 otherwise
	models    map[string]bool           // what its /api/tags lists; nil until known (then it may serve anything)
	loaded    balance.Resident          // what it has, or will have once the requests there started: its /api/ps, then what was sent here since or is still here
	requests  uint64                    // routed to it
	refused   uint64                    // its dial failed and the request went elsewhere
}

func newPool(bc BackendConfig) *pool {
	// What a replica's GPU holds is what warming may fill (max-loaded=, at
	// least an explicit warm list): the bound of the gate's belief.
	p := &pool{parallel: max(bc.Parallel, 1), maxLoaded: defaultWarm(bc.Warm, bc.Wake).room(), chooser: balance.NewChooser(balance.DefaultPolicy, 0),
		bindLate: bc.BindLate}
	if bc.Discover {
		p.discover = cloneURL(bc.URL)
		return p
	}
	for _, u := range bc.Replicas {
		p.replicas = append(p.replicas, p.newReplica(u))
	}
	p.sort()
	return p
}

func (p *pool) newReplica(u *url.URL) *replica {
	return &replica{url: cloneURL(u), id: u.Host, state: StateUnknown, loaded: balance.Resident{Capacity: p.maxLoaded, Same: sameModel}}
}

// sameModel says whether two names are one model to Ollama, either way round
// ("llama3" is "llama3:latest"): a model as a request names it, and as
// Ollama lists it or another request named it.
func sameModel(model, name string) bool {
	return name == model || name == model+":latest" || model == name+":latest"
}

func (p *pool) sort() {
	sort.Slice(p.replicas, func(i, j int) bool { return p.replicas[i].id < p.replicas[j].id })
}

func (p *pool) byID(id string) *replica {
	for _, r := range p.replicas {
		if r.id == id {
			return r
		}
	}
	return nil
}

// routable says whether new requests may go to r.
func (r *replica) routable() bool { return r.state == StateUp && !r.draining && !r.gone }

// takes says whether r takes new requests from this gate: routable, and not
// drained by a peer gate (peerDrain, from peerReplicas).
func (r *replica) takes(peerDrain map[string]bool) bool { return r.routable() && !peerDrain[r.id] }

// aggregate is the backend's state from its replicas': up while any serves
// (a draining or vanished one included: it still serves its streams),
// starting while any starts, else asleep with the first reason seen.
func (p *pool) aggregate() (State, string) {
	st, reason := StateAsleep, ""
	for _, r := range p.replicas {
		switch {
		case r.state == StateUp && !r.gone && !r.draining:
			return StateUp, ""
		case r.state == StateStarting && st != StateStarting:
			st, reason = StateStarting, r.id+": "+r.reason
		case reason == "" && r.reason != "":
			reason = r.id + ": " + r.reason
		}
	}
	if len(p.replicas) == 0 {
		reason = "no replica"
		if p.resolveErr != "" {
			reason = "no replica: " + p.resolveErr
		}
	}
	if st == StateAsleep && reason == "" {
		reason = "no replica serves"
	}
	return st, reason
}

// poolState is b's state from its replicas' (g.mu held): as aggregate, but a
// replica that a peer drains does not make the pool up.
func (g *Gate) poolState(b *backend) (State, string) {
	_, drained := g.peerReplicas(b.name)
	if len(drained) == 0 {
		return b.pool.aggregate()
	}
	for _, r := range b.pool.replicas {
		if r.takes(drained) {
			return StateUp, ""
		}
	}
	st, reason := b.pool.aggregate()
	if st == StateUp {
		return StateStarting, "every replica that serves is draining"
	}
	return st, reason
}

// listsModel says whether r's /api/tags lists model (latest: model +
// ":latest", for a model named without a tag).
func (r *replica) listsModel(model, latest string) bool {
	return model != "" && r.models != nil && (r.models[model] || (!strings.Contains(model, ":") && r.models[latest]))
}

// choose picks a replica for a request of model in conversation among the
// routable ones not in tried, counting peers' in-flight requests (g.mu held);
// nil when there is none. The choice is counted in flight at once, and, when
// the request loads its model (loads: a chat, a completion, an embedding; not
// /api/show or a pull), the model is believed loaded there.
func (g *Gate) choose(b *backend, model, conversation string, loads bool, tried map[*replica]bool) *replica {
	p := b.pool
	now := g.now()
	peerLoad, peerDrain := g.peerReplicas(b.name)
	latest := "" // "NAME:latest" for a model named without a tag
	if model != "" {
		latest = model + ":latest"
	}
	// A model that only some replicas list goes only to them; one that none
	// lists goes anywhere (its 404 comes from Ollama itself). On the stack
	// for a pool of up to 8.
	var openBuf, listingBuf [8]*replica
	open, listing := openBuf[:0], listingBuf[:0]
	for _, r := range p.replicas {
		if !r.takes(peerDrain) || tried[r] {
			continue
		}
		open = append(open, r)
		if r.listsModel(model, latest) {
			listing = append(listing, r)
		}
	}
	cands := open
	if len(listing) > 0 {
		cands = listing
	}
	if len(cands) == 0 {
		return nil
	}
	views := make([]balance.Replica, len(cands))
	for i, r := range cands {
		loaded, other := r.loaded.Loaded(now, model)
		views[i] = balance.Replica{ID: r.id, InFlight: r.inFlight + peerLoad[r.id], Parallel: p.slots(),
			Loaded: loaded || model == "", Evicts: !loaded && other}
	}
	r := cands[p.chooser.Choose(views, conversation)]
	r.inFlight++
	r.requests++
	if model != "" && loads {
		r.loaded.Route(model, now.Add(modelKeep)) // deliver's passToReplica ends it
	}
	return r
}

// conversationKey is what keeps a conversation on one replica: Open WebUI's
// chat id, else a hash of who asks and the chat's first user message; ""
// when neither is known.
func conversationKey(h http.Header, firstUser string) string {
	if id := h.Get(chatHeaderKey); id != "" {
		return "chat:" + id
	}
	if firstUser == "" {
		return ""
	}
	user := h.Get(userHeaderKey)
	sum := sha256.Sum256(append(append(append(make([]byte, 0, len(user)+1+len(firstUser)), user...), 0), firstUser...))
	var key [4 + 32]byte
	copy(key[:], "msg:")
	hex.Encode(key[4:], sum[:16])
	return string(key[:])
}

// peerReplicas sums the fresh peers' in-flight counts per replica of backend
// name and says which replicas a peer drains (g.mu held); nil maps (read as
// empty) when no peer reports any, as on every request of a gate without
// peers.
func (g *Gate) peerReplicas(name string) (map[string]int, map[string]bool) {
	if len(g.peers) == 0 {
		return nil, nil
	}
	var load map[string]int
	var drain map[string]bool
	wall := time.Now()
	for _, p := range g.peers {
		if wall.Sub(p.at) > g.peerTTL {
			continue
		}
		for id, rd := range p.backends[name].Replicas {
			if load == nil {
				load, drain = map[string]int{}, map[string]bool{}
			}
			load[id] += rd.InFlight
			drain[id] = drain[id] || rd.Draining
		}
	}
	return load, drain
}

// ReplicaDemand is what a gate replica tells its peers of one replica of a
// pool: its requests in flight there, and whether it drains it.
type ReplicaDemand struct {
	InFlight int  `json:"in_flight"`
	Draining bool `json:"draining,omitempty"`
}

// ownReplicas is this gate's view of b's replicas for its peers (g.mu held).
func (p *pool) ownReplicas() map[string]ReplicaDemand {
	out := map[string]ReplicaDemand{}
	for _, r := range p.replicas {
		if r.inFlight > 0 || r.draining {
			out[r.id] = ReplicaDemand{InFlight: r.inFlight, Draining: r.draining}
		}
	}
	return out
}

// probePool resolves a dns+http pool's name when due, probes every replica
// at once and returns the backend's state from theirs.
func (g *Gate) probePool(ctx context.Context, b *backend) (State, string) {
	p := b.pool
	if p.discover != nil {
		g.mu.Lock()
		due := len(p.replicas) == 0 || time.Since(p.resolvedAt) >= g.resolveEvery
		g.mu.Unlock()
		if due {
			g.resolvePool(ctx, b)
		}
	}
	g.mu.Lock()
	reps := append([]*replica(nil), p.replicas...)
	g.mu.Unlock()
	type seen struct {
		st              State
		reason          string
		models, loaded  []string
		listed, psKnown bool
	}
	results := make([]seen, len(reps))
	var wg sync.WaitGroup
	for i, r := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &results[i]
			s.st, s.reason = g.probeURL(ctx, r.url)
			if s.st == StateUp {
				s.models, s.listed = g.replicaModels(ctx, r.url, pathTags)
				s.loaded, s.psKnown = g.replicaModels(ctx, r.url, pathPS)
			}
		}()
	}
	wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	for i, r := range reps {
		s := results[i]
		if r.state == StateUp && s.st == StateStarting {
			// As for a backend: while up, only a refused dial takes a replica
			// down; a busy one may answer its probe late.
			continue
		}
		if r.state != s.st {
			level.Info(g.logger).Log("msg", "replica state", "backend", b.name, "replica", r.id, "from", r.state, "to", s.st, "reason", s.reason)
			if s.st == StateUp && r.state != StateUnknown {
				r.draining, r.drainedAt = false, time.Time{} // back after it was down: a new pod on the same address
			}
		}
		if r.draining && s.st == StateUp && !r.drainedAt.IsZero() && now.Sub(r.drainedAt) >= drainForget {
			level.Warn(g.logger).Log("msg", "a drained replica still serves long after its drain answered: routing to it again (restarted on the same address between two probes, or not stopped)",
				"backend", b.name, "replica", r.id, "drained_at", r.drainedAt)
			r.draining, r.drainedAt = false, time.Time{}
		}
		r.state, r.reason = s.st, s.reason
		if s.listed {
			r.models = map[string]bool{}
			for _, m := range s.models {
				r.models[m] = true
			}
		}
		if s.psKnown {
			// What the replica has loaded now, then what the requests still
			// running or waiting there will load.
			r.loaded.Observe(s.loaded, now.Add(modelKeep))
		}
	}
	p.forgetGone()
	if p.bindLate {
		g.handSlots(b) // a replica that came up, or a peer's answer that ended
	}
	return g.poolState(b)
}

// forgetGone drops vanished replicas whose streams have ended (g.mu held).
func (p *pool) forgetGone() {
	kept := p.replicas[:0]
	for _, r := range p.replicas {
		if r.gone && r.inFlight == 0 {
			p.chooser.Forget(r.id)
			continue
		}
		kept = append(kept, r)
	}
	p.replicas = kept
}

// resolvePool asks DNS for the addresses of a dns+http pool and makes them its
// replicas: new ones are added (probed next), vanished ones stop receiving
// requests and are forgotten once their streams end. A failed lookup keeps
// the replicas it had.
func (g *Gate) resolvePool(ctx context.Context, b *backend) {
	p := b.pool
	host, port := p.discover.Hostname(), p.discover.Port()
	ctx, cancel := context.WithTimeout(ctx, g.probeTimeout)
	ips, err := g.lookup(ctx, host)
	cancel()
	g.mu.Lock()
	defer g.mu.Unlock()
	p.resolvedAt = time.Now()
	if err != nil {
		if p.resolveErr != err.Error() {
			level.Warn(g.logger).Log("msg", "resolving a pool failed", "backend", b.name, "host", host, "err", err)
		}
		p.resolveErr = err.Error()
		return
	}
	p.resolveErr = ""
	want := map[string]bool{}
	for _, ip := range ips {
		id := net.JoinHostPort(ip.IP.String(), port)
		want[id] = true
		if r := p.byID(id); r != nil {
			r.gone = false
			continue
		}
		u := cloneURL(p.discover)
		u.Host = id
		p.replicas = append(p.replicas, p.newReplica(u))
		level.Info(g.logger).Log("msg", "replica found", "backend", b.name, "replica", id)
	}
	for _, r := range p.replicas {
		if !want[r.id] && !r.gone {
			r.gone = true
			level.Info(g.logger).Log("msg", "replica gone from DNS", "backend", b.name, "replica", r.id, "in_flight", r.inFlight)
		}
	}
	p.sort()
	p.forgetGone()
}

// replicaModels reads the model names of a replica's /api/tags or /api/ps;
// false when it did not answer with a list.
func (g *Gate) replicaModels(ctx context.Context, base *url.URL, path string) ([]string, bool) {
	ctx, cancel := context.WithTimeout(ctx, g.probeTimeout)
	defer cancel()
	req, err := ownRequest(ctx, http.MethodGet, *base, path, nil)
	if err != nil {
		return nil, false
	}
	res, err := g.transport.RoundTrip(req)
	if err != nil {
		return nil, false
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
		return nil, false
	}
	var list struct {
		Models []struct {
			Name  string `json:"name"`
			Model string `json:"model"`
		} `json:"models"`
	}
	if json.NewDecoder(io.LimitReader(res.Body, maxListBytes)).Decode(&list) != nil {
		return nil, false
	}
	var out []string
	for _, m := range list.Models {
		out = append(out, m.Name)
		if m.Model != "" && m.Model != m.Name {
			out = append(out, m.Model)
		}
	}
	return out, true
}

// ReplicaStats is one replica of a pool as this gate sees it.
type ReplicaStats struct {
	ID       string `json:"id"` // host:port
	State    State  `json:"state"`
	Reason   string `json:"reason,omitempty"`
	Draining bool   `json:"draining"`
	Gone     bool   `json:"gone,omitempty"`                 // no longer in DNS; kept while its streams end
	InFlight int    `json:"in_flight"`                      // this gate's
	Requests uint64 `json:"requests"`                       // routed to it
	Refused  uint64 `json:"refused"`                        // its dial failed and the request went elsewhere
	AtOnce   int    `json:"answers_at_once_seen,omitempty"` // answers seen streaming at once, when more than parallel=
}

// stats lists the replicas (g.mu held).
func (p *pool) stats() []ReplicaStats {
	out := make([]ReplicaStats, 0, len(p.replicas))
	for _, r := range p.replicas {
		out = append(out, ReplicaStats{ID: r.id, State: r.state, Reason: r.reason, Draining: r.draining, Gone: r.gone,
			InFlight: r.inFlight, Requests: r.requests, Refused: r.refused, AtOnce: r.atOnce})
	}
	return out
}
