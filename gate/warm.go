package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-kit/log/level"
)

// Warming: the gate loads a backend's models before the first message needs
// them (docs/warming.md). Ollama loads a model on its first request, and a
// load reads the whole model file into GPU memory: seconds for 8B, tens of
// seconds for 70B. The gate sends Ollama's load request (POST /api/generate
// with a model and no prompt, answered with done_reason "load") as soon as a
// backend answers HTTP after a wake, and when a known person arrives while it
// is up. It never gets in the way of a request: see warmStep.

// WarmMode says what a backend warms.
type WarmMode string

// The warm modes of --gate.backend's warm= option.
const (
	WarmOff  WarmMode = "off"  // nothing (the default of wake=request: the waking request names its model)
	WarmAuto WarmMode = "auto" // what the gate learned its people use (the default of wake=arrival and the unnamed backend)
	WarmList WarmMode = "list" // the models named in warm=A+B, loaded as given
)

// DefaultMaxLoaded is how many models auto warming keeps in memory at once
// per backend without max-loaded=: one, what a GPU sized for one model holds.
const DefaultMaxLoaded = 1

// Warm is a backend's warm= (and max-loaded=) setting.
type Warm struct {
	Mode   WarmMode
	Models []string // WarmList: the models, in order
	// MaxLoaded bounds what auto warming fills: it warms a model only while
	// fewer than this many are loaded (per /api/ps), so that a warm-up never
	// makes Ollama unload anything. Set it to what the pool's GPU memory
	// holds at once, at most its OLLAMA_MAX_LOADED_MODELS. 0: 1.
	MaxLoaded int
}

// parseWarm parses the value of warm=.
func parseWarm(val string) (Warm, error) {
	switch WarmMode(val) {
	case WarmOff, WarmAuto:
		return Warm{Mode: WarmMode(val)}, nil
	case WarmList:
		return Warm{}, fmt.Errorf("warm=list: want warm=MODEL[+MODEL...], auto or off")
	}
	var models []string
	seen := map[string]bool{}
	for _, m := range strings.Split(val, "+") {
		if err := checkModelName(m); err != nil {
			return Warm{}, fmt.Errorf("warm=%q: %w", val, err)
		}
		if !seen[m] {
			seen[m] = true
			models = append(models, m)
		}
	}
	return Warm{Mode: WarmList, Models: models}, nil
}

// checkModelName refuses what cannot be an Ollama model name (the flag's own
// separators, spaces, control characters), not what Ollama might refuse.
func checkModelName(m string) error {
	if m == "" {
		return errors.New("empty model name: want warm=MODEL[+MODEL...], auto or off")
	}
	if len(m) > 200 {
		return fmt.Errorf("model name %.20q... is over 200 characters", m)
	}
	for _, r := range m {
		if r <= ' ' || r == 0x7f || r == ',' || r == '=' || r == '+' || r == '"' {
			return fmt.Errorf("model name %q: no spaces, control characters, ',', '=', '+' or '\"'", m)
		}
	}
	return nil
}

// parseMaxLoaded parses the value of max-loaded=.
func parseMaxLoaded(val string) (int, error) {
	n, err := strconv.Atoi(val)
	if err != nil || n < 1 || n > 64 {
		return 0, fmt.Errorf("max-loaded=%q: want a whole number from 1 to 64 (the models the pool's GPU memory holds at once)", val)
	}
	return n, nil
}

// checkWarm checks a Warm as New receives it.
func checkWarm(w Warm) error {
	switch w.Mode {
	case "", WarmOff, WarmAuto:
		if len(w.Models) > 0 {
			return fmt.Errorf("warm=%s names models: want warm=MODEL[+MODEL...] for a list", w.Mode)
		}
	case WarmList:
		if len(w.Models) == 0 {
			return errors.New("warm: a list with no model")
		}
		for _, m := range w.Models {
			if err := checkModelName(m); err != nil {
				return fmt.Errorf("warm: %w", err)
			}
		}
	default:
		return fmt.Errorf("warm %q: want auto, off or a list of models", w.Mode)
	}
	if w.MaxLoaded < 0 || w.MaxLoaded > 64 {
		return fmt.Errorf("max-loaded %d: want 1 to 64", w.MaxLoaded)
	}
	return nil
}

// defaultWarm is the warm setting of a backend that names none.
func defaultWarm(w Warm, wake WakeRule) Warm {
	if w.Mode == "" {
		w.Mode = WarmAuto
		if wake == WakeRequest {
			w.Mode = WarmOff
		}
	}
	if w.MaxLoaded == 0 {
		w.MaxLoaded = DefaultMaxLoaded
	}
	return w
}

// room is how many models a warm-up may leave loaded: MaxLoaded, and for an
// explicit list at least the list (it is loaded as given).
func (w Warm) room() int {
	if w.Mode == WarmList {
		return max(w.MaxLoaded, len(w.Models))
	}
	return w.MaxLoaded
}

// People is what the gate may know of the people behind its requests, from
// outside the gate (main wires Open WebUI's, see openwebui.Presence); the
// gate keeps only hashes of the ids.
type People interface {
	// Present returns the ids (the values of X-OpenWebUI-User-Id) of the
	// people here now; ok is false while that is unknown.
	Present() (ids []string, ok bool)
	// DefaultModels returns the models new chats start with (Open WebUI's
	// default_models), nil if unknown.
	DefaultModels() []string
}

// Timings of warming.
const (
	warmTick     = time.Second      // how often the warm loop looks at arrivals and pending warm-ups
	warmKeepTick = 30 * time.Second // how often a kept model's keep_alive is checked (/api/ps)
	warmTimeout  = 10 * time.Minute // one load request; Ollama's own OLLAMA_LOAD_TIMEOUT is 5m
	// releaseKeepAlive hands a model the gate no longer keeps back to
	// Ollama's default timer.
	releaseKeepAlive = "5m"
	maxLearnedUsers  = 10000 // people whose last model is remembered per backend
	maxRecentModels  = 8
	maxPeerLearned   = 1000 // newest learned entries sent to peers
	maxSniffBytes    = 1 << 20
)

// answerPaths are the load paths whose answer takes one of the runner's
// slots until it ends (an embedding's is short, and not streamed).
var answerPaths = map[string]bool{"/api/chat": true, "/api/generate": true, "/v1/chat/completions": true, "/v1/completions": true}

// loadPaths are the requests that make Ollama load their model (Ollama
// 0.17.4, server/routes.go: the handlers that call scheduleRunner).
var loadPaths = map[string]bool{"/api/chat": true, "/api/generate": true, "/api/embed": true, "/api/embeddings": true,
	"/v1/chat/completions": true, "/v1/completions": true, "/v1/embeddings": true,
	"/v1/responses": true, "/v1/messages": true, "/v1/images/generations": true, "/v1/images/edits": true}

// Learned is the model a person used last on a backend, and when.
type Learned struct {
	Model string    `json:"model"`
	At    time.Time `json:"at"`
}

// warmer is one backend's warming state; guarded by Gate.mu.
type warmer struct {
	cfg  Warm
	kick chan struct{}

	learned map[string]Learned // hashed user -> last model
	recent  []string           // models served, newest first
	reqs    map[*loadReq]struct{}
	// begun counts the load requests begun. A warm-up or keep_alive decided
	// on an /api/ps read does not go if a request began since the read: it
	// may have made Ollama load (or be about to load) another model, and the
	// warm-up would evict it.
	begun uint64

	wakeDone  bool                 // this wake's warm-ups are planned
	pending   []string             // models to warm, in order
	failed    map[string]bool      // failed since the backend came up: not tried again until the next wake
	present   map[string]bool      // hashed ids present at the previous look
	arrivedAt map[string]time.Time // hashed id present -> when it was first seen present
	kept      map[string]bool      // models the gate keeps loaded (keep_alive -1)
	pinned    map[string]bool      // of kept, those the gate set to keep_alive -1 itself: only these it hands back to Ollama's timer
	// runner is, per model, the runner options (num_ctx, ...) it was last
	// loaded with through this gate: a request answered 200, or the gate's
	// own warm-up. The gate's own load requests for a loaded model send the
	// same, as Ollama loads a model again for a request whose runner options
	// differ (server/sched.go needsReload): a keep_alive set with other
	// options would reload the model of somebody who set num_ctx.
	runner      map[string]runnerSeen
	loading     string // the gate's own warm-up under way, "" none
	loadingFrom time.Time
	notOllama   bool // /api/ps answered 404: an OpenAI-compatible server, nothing to warm
	lastKeep    time.Time
	wokeAt      time.Time // when the backend last came up (wall clock)

	outcomes  map[string]map[WarmOutcome]uint64 // model -> outcome -> count
	durations map[string]*holdHist              // model -> load time of loaded warm-ups
}

// WarmOutcome is how a warm-up ended.
type WarmOutcome string

// The warm-up outcomes of openwebui_gate_warmups_total.
const (
	WarmLoaded  WarmOutcome = "loaded"  // Ollama answered done_reason "load"
	WarmFailed  WarmOutcome = "failed"  // any other answer, or none: logged, not retried until the next wake
	WarmSkipped WarmOutcome = "skipped" // auto: it does not fit (max-loaded models already loaded)
)

// WarmBuckets are the upper bounds (seconds) of the load-time histogram.
var WarmBuckets = []float64{.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600}

func newWarmer(cfg Warm) *warmer {
	return &warmer{
		cfg:       cfg,
		kick:      make(chan struct{}, 1),
		learned:   map[string]Learned{},
		reqs:      map[*loadReq]struct{}{},
		failed:    map[string]bool{},
		present:   map[string]bool{},
		arrivedAt: map[string]time.Time{},
		kept:      map[string]bool{},
		pinned:    map[string]bool{},
		runner:    map[string]runnerSeen{},
		outcomes:  map[string]map[WarmOutcome]uint64{},
		durations: map[string]*holdHist{},
	}
}

func (w *warmer) kickNow() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// warmWoke is called as b comes up (g.mu held): its warm-ups go out now.
func (g *Gate) warmWoke(b *backend) {
	if b.warm == nil {
		return
	}
	b.warm.wokeAt = time.Now()
	b.warm.kickNow()
}

// stateChanged asks for the state file to be written (learned models).
func (g *Gate) stateChanged() {
	if g.cfg.StateFile == "" {
		return
	}
	select {
	case g.stateDirty <- struct{}{}:
	default:
	}
}

// loadReq is one request that makes its backend load a model, from its
// arrival until it ends. It waits for the model until its response header
// comes back (Ollama sends none before the model is loaded): a released
// request still counts as waiting, since a warm-up sent beside it could
// reach Ollama's loader first.
type loadReq struct {
	user    string
	model   string // "" until read from the body
	answers bool   // a chat or a completion (answerPaths): what warming learns from
	// runner is the request's runner options as sniffed (runnerOptions);
	// runnerKnown false when the body was cut before they could be seen.
	runner      string
	runnerKnown bool
	arrived     time.Time
	headers     bool // the response header came back
	status      int
}

// beginLoad registers r if it makes b load a model (nil otherwise). The model
// is read from the body: at once for a held body, while it passes otherwise.
func (g *Gate) beginLoad(b *backend, r *http.Request, path, user string) *loadReq {
	if b.warm == nil || r.Method != http.MethodPost || !loadPaths[path] {
		return nil
	}
	lr := &loadReq{user: user, answers: answerPaths[path], arrived: time.Now()}
	g.mu.Lock()
	b.warm.reqs[lr] = struct{}{}
	b.warm.begun++
	g.mu.Unlock()
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &modelSniffer{ReadCloser: r.Body, left: r.ContentLength, done: func(req sniffed) {
			g.mu.Lock()
			lr.model, lr.runner, lr.runnerKnown = modelKey(req.model), req.runner, req.runnerKnown
			g.mu.Unlock()
		}}
	}
	return lr
}

type loadReqKey struct{}

// withLoad carries lr to the proxy's hooks.
func withLoad(r *http.Request, lr *loadReq) *http.Request {
	if lr == nil {
		return r
	}
	return r.WithContext(context.WithValue(r.Context(), loadReqKey{}, lr))
}

// loadHeaders marks the request of ctx as no longer waiting for its model:
// its response header came back. A 200 means Ollama has the model loaded
// with the request's runner options from now on, while the answer streams
// (a keep_alive set meanwhile must carry them).
func (g *Gate) loadHeaders(ctx context.Context, b *backend, status int) {
	lr, _ := ctx.Value(loadReqKey{}).(*loadReq)
	if lr == nil || b.warm == nil {
		return
	}
	g.mu.Lock()
	lr.headers, lr.status = true, status
	if status == http.StatusOK && lr.model != "" {
		b.warm.loadedWith(lr.model, runnerSeen{opts: lr.runner, known: lr.runnerKnown})
	}
	g.mu.Unlock()
	b.warm.kickNow()
}

// endLoad forgets lr and learns from it: the model a person used last, and
// the backend's most recent models (answered 200 only). Only a chat or a
// completion teaches that: an embedding (Open WebUI's RAG, with the user's
// header too) names the embedding model, which would take the room of the
// model that person chats with. An embedding is learnt as a recent model
// only while the backend has served nothing else (a backend that only
// embeds warms its embedding model).
func (g *Gate) endLoad(b *backend, lr *loadReq) {
	if lr == nil {
		return
	}
	g.mu.Lock()
	w := b.warm
	delete(w.reqs, lr)
	if lr.status == http.StatusOK && lr.model != "" {
		w.loadedWith(lr.model, runnerSeen{opts: lr.runner, known: lr.runnerKnown})
	}
	switch {
	case lr.status != http.StatusOK || lr.model == "":
	case lr.answers && w.learn(lr.user, lr.model, g.now()):
		g.stateChanged()
	case !lr.answers && len(w.recent) == 0 && w.learn("", lr.model, g.now()):
		g.stateChanged()
	}
	g.mu.Unlock()
	w.kickNow()
}

// modelKey is how warming names a model: Ollama's "NAME:latest" and "NAME"
// are the same model, so the tag is left out (Ollama takes "NAME" for it).
func modelKey(m string) string { return strings.TrimSuffix(m, ":latest") }

// learn records that user (hashed; "" anonymous) was answered by model; it
// reports whether that changed what a restart should know (the newest
// model, or a person's model), so that the state file is not written at
// every message.
func (w *warmer) learn(user, model string, at time.Time) bool {
	model = modelKey(model)
	changed := len(w.recent) == 0 || w.recent[0] != model
	w.recent = append([]string{model}, removeString(w.recent, model)...)
	if len(w.recent) > maxRecentModels {
		w.recent = w.recent[:maxRecentModels]
	}
	if user == "" {
		return changed
	}
	if old, ok := w.learned[user]; !ok || old.Model != model {
		changed = true
	}
	w.learned[user] = Learned{Model: model, At: at}
	if len(w.learned) > maxLearnedUsers {
		oldest, first := "", true
		for u, l := range w.learned {
			if first || l.At.Before(w.learned[oldest].At) {
				oldest, first = u, false
			}
		}
		delete(w.learned, oldest)
	}
	return changed
}

// stateWarm is what warming keeps in the state file.
type stateWarm struct {
	Learned map[string]Learned `json:"learned"` // hashed user id -> last model
	Recent  []string           `json:"recent"`  // newest first
}

func (w *warmer) state() *stateWarm {
	return &stateWarm{Learned: w.newestLearned(maxLearnedUsers), Recent: append([]string{}, w.recent...)}
}

// loadState takes what the state file says, leaving out what is not a user
// key or a model name (the file is only a cache).
func (w *warmer) loadState(s stateWarm) {
	w.mergeLearned(s.Learned)
	for _, m := range s.Recent {
		if m = modelKey(m); checkModelName(m) == nil && !containsString(w.recent, m) && len(w.recent) < maxRecentModels {
			w.recent = append(w.recent, m)
		}
	}
}

// mergeLearned takes what a peer or the state file learned where it is newer.
func (w *warmer) mergeLearned(in map[string]Learned) {
	for u, l := range in {
		if len(u) != 24 || checkModelName(l.Model) != nil {
			continue // not a user key the gate makes, or not a model name
		}
		l.Model = modelKey(l.Model)
		if old, ok := w.learned[u]; !ok || l.At.After(old.At) {
			w.learned[u] = l
		}
	}
	if len(w.learned) > maxLearnedUsers {
		w.learned = w.newestLearned(maxLearnedUsers)
	}
}

// newestLearned is what a replica sends its peers: the newest entries.
func (w *warmer) newestLearned(n int) map[string]Learned {
	if len(w.learned) <= n {
		out := make(map[string]Learned, len(w.learned))
		for u, l := range w.learned {
			out[u] = l
		}
		return out
	}
	users := make([]string, 0, len(w.learned))
	for u := range w.learned {
		users = append(users, u)
	}
	sort.Slice(users, func(i, j int) bool { return w.learned[users[i]].At.After(w.learned[users[j]].At) })
	out := make(map[string]Learned, n)
	for _, u := range users[:n] {
		out[u] = w.learned[u]
	}
	return out
}

func removeString(list []string, s string) []string {
	out := list[:0:0]
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// warmLoop plans and sends b's warm-ups until ctx ends.
func (g *Gate) warmLoop(ctx context.Context, b *backend) {
	t := time.NewTicker(g.warmEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.warm.kick:
		case <-t.C:
		}
		g.warmStep(ctx, b)
	}
}

// warmStep does what is due: plan at a wake and at arrivals, send the next
// pending warm-up when nothing would wait behind it, and keep the kept
// models loaded.
func (g *Gate) warmStep(ctx context.Context, b *backend) {
	var present map[string]bool
	known := false
	if g.cfg.People != nil {
		ids, ok := g.cfg.People.Present()
		if ok {
			known = true
			present = make(map[string]bool, len(ids))
			for _, id := range ids {
				present[userKey(id)] = true
			}
		}
	}
	var defaults []string
	if g.cfg.People != nil {
		defaults = g.cfg.People.DefaultModels()
	}

	g.mu.Lock()
	w := b.warm
	if known {
		now := time.Now()
		for u := range present {
			if _, ok := w.arrivedAt[u]; !ok {
				w.arrivedAt[u] = now
			}
		}
		for u := range w.arrivedAt {
			if !present[u] {
				delete(w.arrivedAt, u)
			}
		}
	}
	if b.state != StateUp {
		// Asleep or starting: the next time it is up is a wake.
		w.wakeDone, w.pending, w.failed, w.kept, w.pinned, w.notOllama = false, nil, map[string]bool{}, map[string]bool{}, map[string]bool{}, false
		if known {
			w.present = present
		}
		g.mu.Unlock()
		return
	}
	if w.notOllama || !g.leadsWarming() {
		g.mu.Unlock()
		return
	}
	arrived := false
	if known {
		for u := range present {
			if !w.present[u] {
				arrived = true
			}
		}
		w.present = present
	}
	if !w.wakeDone || arrived {
		w.wakeDone = true
		for _, m := range g.planLocked(b, present, defaults) {
			if !w.failed[m] && !containsString(w.pending, m) {
				w.pending = append(w.pending, m)
			}
		}
	}
	g.mu.Unlock()

	for g.warmNext(ctx, b) {
	}
	g.keepWarm(ctx, b, present, known)
}

// planLocked lists what b should have loaded, in order (g.mu held). An
// explicit list is loaded as given. auto: the models the people here used
// last on b, first the model of the person who arrived last (the likeliest
// to write next: bench/simday -warm), then the most wanted; when none is known, Open WebUI's default
// models and then the models b served most recently; no more than its room,
// and only models b lists (once its list is known).
func (g *Gate) planLocked(b *backend, present map[string]bool, defaults []string) []string {
	w := b.warm
	if w.cfg.Mode == WarmList {
		var plan []string
		for _, m := range w.cfg.Models {
			plan = append(plan, modelKey(m))
		}
		return plan
	}
	var plan []string
	wanted := map[string]int{}
	newest := map[string]time.Time{}
	for u := range present {
		if l, ok := w.learned[u]; ok {
			wanted[l.Model]++
			if a := w.arrivedAt[u]; a.After(newest[l.Model]) {
				newest[l.Model] = a
			}
		}
	}
	if len(wanted) > 0 {
		for m := range wanted {
			plan = append(plan, m)
		}
		rank := func(m string) int {
			for i, r := range w.recent {
				if r == m {
					return i
				}
			}
			return len(w.recent)
		}
		sort.Slice(plan, func(i, j int) bool {
			if !newest[plan[i]].Equal(newest[plan[j]]) {
				return newest[plan[i]].After(newest[plan[j]])
			}
			if wanted[plan[i]] != wanted[plan[j]] {
				return wanted[plan[i]] > wanted[plan[j]]
			}
			return rank(plan[i]) < rank(plan[j])
		})
	} else {
		for _, m := range append(append([]string(nil), defaults...), w.recent...) {
			if m = modelKey(m); !containsString(plan, m) {
				plan = append(plan, m)
			}
		}
	}
	if listed := b.models(); len(listed) > 0 {
		kept := plan[:0]
		for _, m := range plan {
			if containsString(listed, m) || containsString(listed, m+":latest") {
				kept = append(kept, m)
			}
		}
		plan = kept
	}
	if len(plan) > w.cfg.room() {
		plan = plan[:w.cfg.room()]
	}
	return plan
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// leadsWarming says whether this replica sends the warm-ups: the one with
// the smallest instance id among those that answered lately, so that
// replicas do not load the same model twice (g.mu held).
func (g *Gate) leadsWarming() bool {
	wall := time.Now()
	for id, p := range g.peers {
		if wall.Sub(p.at) <= g.peerTTL && id < g.instance {
			return false
		}
	}
	return true
}

// warmNext sends the first pending warm-up if it may go now, and reports
// whether to look at the next one. A warm-up of M waits while any request
// for another model (or one whose model is not read yet) waits for its
// model: Ollama loads one model at a time, so M would go first. A pending M
// that a request asks for anyway is dropped. auto skips M when max-loaded
// models are loaded (a warm-up never makes Ollama unload a model); an
// explicit list waits instead while a request for another model is in
// flight, so that no model in use is unloaded for it.
func (g *Gate) warmNext(ctx context.Context, b *backend) bool {
	g.mu.Lock()
	w := b.warm
	if b.state != StateUp || len(w.pending) == 0 {
		g.mu.Unlock()
		return false
	}
	m := w.pending[0]
	for lr := range w.reqs {
		if !lr.headers && lr.model == m {
			w.pending = w.pending[1:] // the request loads it
			g.mu.Unlock()
			return true
		}
	}
	for lr := range w.reqs {
		if !lr.headers {
			g.mu.Unlock()
			return false // a request waits for another model: it goes first
		}
	}
	if g.peersHold(b.name) {
		g.mu.Unlock()
		return false // another gate replica holds a request, released at its next probe: it goes first
	}
	inUse := map[string]bool{}
	for lr := range w.reqs {
		inUse[lr.model] = true
	}
	begun := w.begun
	g.mu.Unlock()

	loaded, err := g.loadedModels(ctx, b)
	if errors.Is(err, errNotOllama) {
		g.mu.Lock()
		w.notOllama, w.pending = true, nil
		g.mu.Unlock()
		level.Info(g.logger).Log("msg", "backend has no /api/ps (OpenAI-compatible?): not warming it", "backend", b.name)
		return false
	}
	if err != nil {
		level.Warn(g.logger).Log("msg", "warming: reading /api/ps failed; trying again at the next arrival or wake", "backend", b.name, "err", err)
		g.mu.Lock()
		w.pending = nil
		g.mu.Unlock()
		return false
	}
	g.mu.Lock()
	if w.begun != begun {
		g.mu.Unlock()
		return false // what was read is out of date: decided again once that request's header comes back (it kicks the loop)
	}
	w.pending = removeString(w.pending, m)
	if loaded[m] {
		w.kept[m] = true // loaded by someone's request: keep it while it is wanted
		g.mu.Unlock()
		return true
	}
	fits := len(loaded)+1 <= w.cfg.room()
	if !fits && w.cfg.Mode != WarmList {
		w.count(m, WarmSkipped)
		g.mu.Unlock()
		level.Info(g.logger).Log("msg", "warming skipped: the backend has max-loaded models loaded", "backend", b.name, "model", m, "loaded", len(loaded), "max_loaded", w.cfg.room())
		return true
	}
	if !fits {
		delete(inUse, m)
		if len(inUse) > 0 {
			w.pending = append([]string{m}, w.pending...) // after the requests in flight end
			g.mu.Unlock()
			return false
		}
	}
	w.loading, w.loadingFrom = m, time.Now()
	runner := w.runner[m] // the options its people's chats load it with; none known: Ollama's defaults
	g.mu.Unlock()

	start := time.Now()
	err = g.sendLoad(ctx, b, m, "-1", runner.opts, "load")
	took := time.Since(start)

	g.mu.Lock()
	w.loading = ""
	if err != nil {
		w.failed[m] = true
		w.count(m, WarmFailed)
	} else {
		w.kept[m], w.pinned[m] = true, true
		w.loadedWith(m, runnerSeen{opts: runner.opts, known: true})
		w.count(m, WarmLoaded)
		h := w.durations[m]
		if h == nil {
			h = &holdHist{}
			w.durations[m] = h
		}
		h.observeIn(WarmBuckets, took)
	}
	g.mu.Unlock()
	if err != nil {
		level.Warn(g.logger).Log("msg", "warm-up failed; not tried again until the backend wakes again", "backend", b.name, "model", m, "err", err)
	} else {
		level.Info(g.logger).Log("msg", "warmed", "backend", b.name, "model", m, "seconds", took.Seconds())
	}
	return ctx.Err() == nil
}

func (w *warmer) count(model string, o WarmOutcome) {
	if w.outcomes[model] == nil {
		w.outcomes[model] = map[WarmOutcome]uint64{}
	}
	w.outcomes[model][o]++
}

// keepWarm keeps loaded what the people here use (docs/warming.md,
// "keep_alive"). Every warmKeepEvery it reads /api/ps:
//   - a wanted model that is loaded on a timer (a chat sets Ollama's
//     default keep_alive again) gets keep_alive -1 again. Wanted: an explicit
//     list; else the models the people here used last, and, while none of
//     theirs is known, what the gate warmed;
//   - a model the gate kept that nobody here uses any more, while others are
//     still here, goes back to Ollama's default timer (releaseKeepAlive);
//   - with nobody here nothing changes: the pool's demand is gone, and KEDA's
//     cooldown ends the pod with its models.
func (g *Gate) keepWarm(ctx context.Context, b *backend, present map[string]bool, known bool) {
	g.mu.Lock()
	w := b.warm
	due := time.Since(w.lastKeep) >= g.warmKeepEvery && b.state == StateUp
	for lr := range w.reqs {
		if !lr.headers {
			due = false // never beside a request that waits for a load
		}
	}
	if !due {
		g.mu.Unlock()
		return
	}
	w.lastKeep = time.Now()
	begun := w.begun
	wanted := map[string]bool{}
	for u := range present {
		if l, ok := w.learned[u]; ok {
			wanted[l.Model] = true
		}
	}
	theirsKnown := len(wanted) > 0
	for m := range w.kept {
		if !known || !theirsKnown {
			wanted[m] = true
		}
	}
	if w.cfg.Mode == WarmList {
		for _, m := range w.cfg.Models {
			wanted[modelKey(m)] = true
		}
	}
	release := known && len(present) > 0
	kept := maps.Clone(w.kept)
	pinned := maps.Clone(w.pinned)
	runner := maps.Clone(w.runner)
	g.mu.Unlock()

	expires, err := g.loadedExpiry(ctx, b)
	if err != nil {
		return
	}
	forever := time.Now().Add(100 * 365 * 24 * time.Hour)
	// unchanged says whether no request began since the read: each load
	// below is sent only then (a model evicted since would be loaded again).
	// Otherwise the next look reads again, once that request's model is
	// loaded (its header kicks the loop), not warmKeepEvery later.
	unchanged := func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		if w.begun != begun {
			w.lastKeep = time.Time{}
			return false
		}
		return true
	}
	for m := range kept {
		if _, loaded := expires[m]; !loaded {
			g.mu.Lock()
			delete(w.kept, m) // unloaded (evicted for a request, or by hand): planned again at the next arrival or wake
			delete(w.pinned, m)
			g.mu.Unlock()
		}
	}
	for m, exp := range expires {
		// A loaded model whose runner options the gate does not know (not
		// loaded through it, or its last request was cut before them) is
		// left alone: a load request with other options would reload it.
		opts, ours := runner[m]
		ours = ours && opts.known
		switch {
		case wanted[m]:
			sent := false
			if exp.Before(forever) && ours {
				if !unchanged() {
					return
				}
				if err := g.sendLoad(ctx, b, m, "-1", opts.opts, "load"); err != nil {
					level.Warn(g.logger).Log("msg", "keeping a model loaded failed", "backend", b.name, "model", m, "err", err)
					continue
				}
				sent = true
			}
			g.mu.Lock()
			w.kept[m] = true
			if sent {
				w.pinned[m] = true
			}
			g.mu.Unlock()
		case kept[m] && release:
			// Only a keep_alive the gate set goes back to Ollama's timer: one
			// set by OLLAMA_KEEP_ALIVE=-1 or by a request stays.
			if pinned[m] && ours {
				if !unchanged() {
					return
				}
				if err := g.sendLoad(ctx, b, m, strconv.Quote(releaseKeepAlive), opts.opts, "load"); err != nil {
					level.Warn(g.logger).Log("msg", "handing a model back to Ollama's timer failed", "backend", b.name, "model", m, "err", err)
				}
			}
			g.mu.Lock()
			delete(w.kept, m)
			delete(w.pinned, m)
			g.mu.Unlock()
		}
	}
}

var errNotOllama = errors.New("no /api/ps: not Ollama")

// loadedModels is what /api/ps lists now.
func (g *Gate) loadedModels(ctx context.Context, b *backend) (map[string]bool, error) {
	exp, err := g.loadedExpiry(ctx, b)
	out := make(map[string]bool, len(exp))
	for m := range exp {
		out[m] = true
	}
	return out, err
}

// peersHold says whether a fresh peer reports a request held for backend
// name (g.mu held). At a wake the replica that warms is not always the one
// that holds the messages: theirs go before its warm-ups, as its own do.
func (g *Gate) peersHold(name string) bool {
	wall := time.Now()
	for _, p := range g.peers {
		if wall.Sub(p.at) <= g.peerTTL && p.backends[name].Held > 0 {
			return true
		}
	}
	return false
}

// warmURL is where warm-ups of b go: its URL, or for a pool the first
// replica that serves (by address). A pool woken from zero has one replica,
// and the balancer sends a model's requests to a free replica that has it
// loaded: warming that one is what the first message needs.
func (g *Gate) warmURL(b *backend) url.URL {
	if b.pool != nil {
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, r := range b.pool.replicas {
			if r.routable() {
				return *r.url
			}
		}
	}
	return *b.cfg.URL
}

// loadedExpiry reads /api/ps: each loaded model's expires_at.
func (g *Gate) loadedExpiry(ctx context.Context, b *backend) (map[string]time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, g.probeTimeout)
	defer cancel()
	req, err := ownRequest(ctx, http.MethodGet, g.warmURL(b), pathPS, nil)
	if err != nil {
		return nil, fmt.Errorf("GET /api/ps: %w", err)
	}
	res, err := g.transport.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("GET /api/ps: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusNotFound {
		return nil, errNotOllama
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/ps: HTTP %d", res.StatusCode)
	}
	var v struct {
		Models []struct {
			Name      string    `json:"name"`
			Model     string    `json:"model"`
			ExpiresAt time.Time `json:"expires_at"`
		} `json:"models"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, maxListBytes)).Decode(&v); err != nil {
		return nil, fmt.Errorf("GET /api/ps: %w", err)
	}
	out := map[string]time.Time{}
	for _, m := range v.Models {
		name := m.Name
		if name == "" {
			name = m.Model
		}
		out[modelKey(name)] = m.ExpiresAt
	}
	return out, nil
}

// sendLoad sends Ollama's load request for model with keepAlive (JSON) and
// the runner options runner (a JSON object, "" none), and wants done_reason
// want.
func (g *Gate) sendLoad(ctx context.Context, b *backend, model, keepAlive, runner, want string) error {
	ctx, cancel := context.WithTimeout(ctx, warmTimeout)
	defer cancel()
	load := map[string]any{"model": model, "keep_alive": json.RawMessage(keepAlive)}
	if runner != "" {
		load["options"] = json.RawMessage(runner)
	}
	body, _ := json.Marshal(load)
	req, err := ownRequest(ctx, http.MethodPost, g.warmURL(b), "/api/generate", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("POST /api/generate: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := g.transport.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("POST /api/generate: %w", err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("POST /api/generate: reading the answer: %w", err)
	}
	var v struct {
		DoneReason string `json:"done_reason"`
		Error      string `json:"error"`
	}
	_ = json.Unmarshal(bytes.TrimSpace(firstLine(data)), &v)
	switch {
	case res.StatusCode != http.StatusOK && v.Error != "":
		return fmt.Errorf("POST /api/generate: HTTP %d: %s", res.StatusCode, v.Error)
	case res.StatusCode != http.StatusOK:
		return fmt.Errorf("POST /api/generate: HTTP %d", res.StatusCode)
	case v.DoneReason != want:
		return fmt.Errorf("POST /api/generate: done_reason %q, want %q", v.DoneReason, want)
	}
	return nil
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i]
	}
	return b
}

// modelOf reads the top-level "model" of a JSON request body; "" if none.
// Only the top level counts (a message may say "model" too), the first
// "model" wins, and a body cut short still yields a model that came before
// the cut. It reads as encoding/json would (peek.go's scanner; the first
// version, with encoding/json's decoder, is kept in the tests to compare).
func modelOf(body []byte) string { return requestOf(body).model }

// sniffed is what warming reads of a load request's body.
type sniffed struct {
	model string
	// runner is the request's runner options (runnerOptions), "" none;
	// runnerKnown is false when the body ended (cut at maxSniffBytes, or
	// unreadable) before its top-level object did, with no "options" seen.
	runner      string
	runnerKnown bool
}

// runnerSeen is a model's runner options as warming knows them.
type runnerSeen struct {
	opts  string
	known bool
}

// maxRunnerModels bounds the models whose runner options a warmer keeps.
const maxRunnerModels = 256

// loadedWith records the runner options model was last loaded with.
func (w *warmer) loadedWith(model string, r runnerSeen) {
	if _, ok := w.runner[model]; ok || len(w.runner) < maxRunnerModels {
		w.runner[model] = r
	}
}

// requestOf reads the model (as modelOf) and the runner options of a JSON
// request body. It walks the whole top-level object: Open WebUI puts
// "options" after the messages.
func requestOf(body []byte) sniffed {
	var out sniffed
	s := &peekScanner{buf: body}
	modelSeen := false
	more, ok := s.open('{')
	for ; more && ok; more, ok = s.after('}') {
		key, kok := s.key()
		if !kok {
			return out
		}
		switch string(key) {
		case "model":
			m, _, sok := s.str()
			if !sok {
				return out
			}
			if name := string(m); !modelSeen && checkModelName(name) == nil {
				out.model = name
			}
			modelSeen = true
		case "options":
			if _, tok := s.token(); !tok {
				return out
			}
			start := s.pos
			if !s.skip(0) {
				return out
			}
			out.runner, out.runnerKnown = runnerOptions(body[start:s.pos]), true
		default:
			if !s.skip(0) {
				return out
			}
		}
	}
	if ok && !out.runnerKnown {
		out.runnerKnown = true // the whole object was read: no options
	}
	return out
}

// runnerKeys are Ollama's runner options (api.Runner): a request whose
// differ from those of the loaded model makes Ollama load it again.
var runnerKeys = []string{"main_gpu", "num_batch", "num_ctx", "num_gpu", "num_thread", "use_mmap"}

// runnerOptions is the runner options of a request's "options" value, as a
// JSON object with its keys in order ("" none): the rest of the options
// (temperature, ...) do not make Ollama reload a model.
func runnerOptions(raw []byte) string {
	var all map[string]json.RawMessage
	if json.Unmarshal(raw, &all) != nil {
		return "" // null, or not an object: Ollama takes no options from it
	}
	var out bytes.Buffer
	for _, k := range runnerKeys {
		v, ok := all[k]
		if !ok || string(v) == "null" {
			continue
		}
		if out.Len() == 0 {
			out.WriteByte('{')
		} else {
			out.WriteByte(',')
		}
		out.WriteString(strconv.Quote(k) + ":")
		_ = json.Compact(&out, v)
	}
	if out.Len() == 0 {
		return ""
	}
	out.WriteByte('}')
	return out.String()
}

// modelSniffer copies the first maxSniffBytes of a body while it is read
// (passed through, or read into memory to be held) and reads its model at
// the end: an error or EOF, the Content-Length read (readers that know the
// length stop there without asking for EOF), or a full copy.
type modelSniffer struct {
	io.ReadCloser
	left int64 // bytes of the Content-Length still to come; negative: unknown
	buf  bytes.Buffer
	done func(req sniffed)
	once bool
}

func (s *modelSniffer) Read(p []byte) (int, error) {
	n, err := s.ReadCloser.Read(p)
	if !s.once {
		room := maxSniffBytes - s.buf.Len()
		s.buf.Write(p[:min(n, room)])
		if s.left >= 0 {
			s.left -= int64(n)
		}
		if err != nil || s.left == 0 || s.buf.Len() >= maxSniffBytes {
			s.once = true
			s.done(requestOf(s.buf.Bytes()))
			s.buf = bytes.Buffer{}
		}
	}
	return n, err
}

// observeIn is observe with other buckets.
func (h *holdHist) observeIn(buckets []float64, d time.Duration) {
	if h.counts == nil {
		h.counts = make([]uint64, len(buckets)+1)
	}
	s := d.Seconds()
	i := 0
	for i < len(buckets) && s > buckets[i] {
		i++
	}
	h.counts[i]++
	h.count++
	h.sum += s
}

// snapshotIn is snapshot with other buckets.
func (h *holdHist) snapshotIn(buckets []float64) HoldHistogram {
	out := HoldHistogram{Buckets: append([]float64(nil), buckets...), Counts: make([]uint64, len(buckets)), Count: h.count, Sum: h.sum}
	var c uint64
	for i := range buckets {
		if h.counts != nil {
			c += h.counts[i]
		}
		out.Counts[i] = c
	}
	return out
}

// WarmStats is what a backend's warming did (this replica's).
type WarmStats struct {
	Mode      WarmMode
	Outcomes  map[string]map[WarmOutcome]uint64 // model -> outcome -> warm-ups
	Durations map[string]HoldHistogram          // model -> load time of loaded warm-ups (WarmBuckets)
	Kept      []string                          // models the gate keeps loaded now, sorted
}

func (w *warmer) stats() WarmStats {
	s := WarmStats{Mode: w.cfg.Mode, Outcomes: map[string]map[WarmOutcome]uint64{}, Durations: map[string]HoldHistogram{}, Kept: []string{}}
	for m, os := range w.outcomes {
		s.Outcomes[m] = map[WarmOutcome]uint64{}
		for o, n := range os {
			s.Outcomes[m][o] = n
		}
	}
	for m, h := range w.durations {
		s.Durations[m] = h.snapshotIn(WarmBuckets)
	}
	for m := range w.kept {
		s.Kept = append(s.Kept, m)
	}
	sort.Strings(s.Kept)
	return s
}

// warmModels lists the models the gate keeps loaded now, sorted (g.mu held).
func (b *backend) warmModels() []string {
	if b.warm == nil {
		return []string{}
	}
	return b.warm.stats().Kept
}

// LoadingModel is a model a backend is loading now, in /_gate/status: the
// filter shows "loading MODEL … (N s)" while a message waits for it.
type LoadingModel struct {
	Model   string  `json:"model"`
	Seconds float64 `json:"seconds"`
	By      string  `json:"by"` // "warm-up" (the gate's) or "request"
}

// loadingLocked lists what b loads now: the gate's warm-up, and the models
// of requests that wait for their response header while b is up (g.mu held).
func (b *backend) loadingLocked(now time.Time) []LoadingModel {
	out := []LoadingModel{}
	if b.warm == nil || b.state != StateUp {
		return out
	}
	w := b.warm
	if w.loading != "" {
		out = append(out, LoadingModel{Model: w.loading, Seconds: now.Sub(w.loadingFrom).Seconds(), By: "warm-up"})
	}
	oldest := map[string]time.Time{}
	for lr := range w.reqs {
		if lr.headers || lr.model == "" || lr.model == w.loading {
			continue
		}
		from := lr.arrived
		if w.wokeAt.After(from) {
			from = w.wokeAt // held while it slept: loading since the wake
		}
		if t, ok := oldest[lr.model]; !ok || from.Before(t) {
			oldest[lr.model] = from
		}
	}
	models := make([]string, 0, len(oldest))
	for m := range oldest {
		models = append(models, m)
	}
	sort.Strings(models)
	for _, m := range models {
		out = append(out, LoadingModel{Model: m, Seconds: now.Sub(oldest[m]).Seconds(), By: "request"})
	}
	return out
}
