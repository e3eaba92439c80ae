package fakeollama

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"time"
)

// LoaderConfig shapes how the stand-in loads models, as Ollama's scheduler
// does (server/sched.go): one load at a time, a bounded number of models in
// memory, and a keep-alive timer that starts when a model's last request ends.
type LoaderConfig struct {
	// LoadTime is how long loading each model takes (reading the file into
	// GPU memory); a model not named takes DefaultLoadTime.
	LoadTime        map[string]time.Duration
	DefaultLoadTime time.Duration
	// MaxLoaded is OLLAMA_MAX_LOADED_MODELS: models in memory at once; 0: 1
	// (a GPU that holds one model). Loading one more first unloads an idle
	// model (the one that expires first); while every loaded model has a
	// request in flight, the load waits, as Ollama's does.
	MaxLoaded int
	// KeepAlive is OLLAMA_KEEP_ALIVE; a request's keep_alive overrides it.
	// 0: 5m; negative: for ever.
	KeepAlive time.Duration
}

// Loader wraps a Handler with Ollama's model loading: a request for a model
// that is not in memory, or in memory with other runner options (num_ctx,
// num_batch, num_gpu, main_gpu, use_mmap, num_thread: Ollama's needsReload
// in server/sched.go), waits for its load (no response header until then;
// a reload waits until the model is idle),
// loads run one at a time in arrival order, /api/ps lists what is in memory
// with its expires_at, and a preload (POST /api/generate with a model and no
// prompt, or /api/chat with no messages) loads the model and answers
// done_reason "load" (with keep_alive 0: unloads it, "unload"). Other
// requests pass to the Handler unchanged.
type Loader struct {
	h   http.Handler
	cfg LoaderConfig

	loader chan struct{} // one load at a time

	mu      sync.Mutex
	models  map[string]*inMemory
	changed chan struct{} // closed when a model becomes idle or leaves memory
	loads   []string      // every load completed, in order
	loading string        // the model being loaded now, "" none
}

// inMemory is a loaded model.
type inMemory struct {
	runner  string        // the runner options it was loaded with (runnerOf)
	refs    int           // requests using it now
	keep    time.Duration // the keep-alive of its latest request
	expires time.Time     // set when refs drops to 0; zero while in use or kept for ever
	loaded  time.Time
}

// NewLoader returns a Loader around h (usually a Handler).
func NewLoader(h http.Handler, cfg LoaderConfig) *Loader {
	if cfg.MaxLoaded <= 0 {
		cfg.MaxLoaded = 1
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 5 * time.Minute
	}
	return &Loader{h: h, cfg: cfg, loader: make(chan struct{}, 1), models: map[string]*inMemory{}, changed: make(chan struct{})}
}

// Loads lists every load completed so far, in order: tests read which model
// Ollama's loader took first (loads run one at a time, so a load that began
// later never ends first).
func (l *Loader) Loads() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.loads...)
}

// Loading is the model being loaded now, "" when none.
func (l *Loader) Loading() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.loading
}

// Loaded lists the models in memory now, sorted.
func (l *Loader) Loaded() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked(time.Now())
	out := make([]string, 0, len(l.models))
	for m := range l.models {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// Reset empties the memory and the load history, as a pod that was scaled
// in and started again.
func (l *Loader) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.models = map[string]*inMemory{}
	l.loads = nil
	l.signalLocked()
}

// loadPaths are the requests that need their model in memory.
var loadPaths = map[string]bool{"/api/chat": true, "/api/generate": true, "/api/embed": true, "/api/embeddings": true,
	"/v1/chat/completions": true, "/v1/completions": true, "/v1/embeddings": true,
	"/v1/responses": true, "/v1/messages": true, "/v1/images/generations": true, "/v1/images/edits": true}

// loadRequest is what the Loader reads of a request body.
type loadRequest struct {
	Model     string            `json:"model"`
	Prompt    *string           `json:"prompt"`
	Messages  []json.RawMessage `json:"messages"`
	KeepAlive json.RawMessage   `json:"keep_alive"`
	Options   map[string]any    `json:"options"`
}

// runnerKeys are Ollama's runner options (api.Runner).
var runnerKeys = []string{"num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread"}

// runnerOf is the runner options of a request, as JSON with sorted keys.
// Unlike Ollama it takes no defaults: a num_ctx given as the default and
// none given differ here (Ollama takes them alike), so a test sees any
// load request that does not repeat a chat's options.
func runnerOf(opts map[string]any) string {
	runner := map[string]any{}
	for _, k := range runnerKeys {
		if v, ok := opts[k]; ok && v != nil {
			runner[k] = v
		}
	}
	b, _ := json.Marshal(runner)
	return string(b)
}

func (l *Loader) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/api/ps" {
		writeJSON(w, http.StatusOK, map[string]any{"models": l.ps()})
		return
	}
	if r.Method != http.MethodPost || !loadPaths[r.URL.Path] {
		l.h.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		return // the client went away
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var req loadRequest
	if json.Unmarshal(body, &req) != nil || req.Model == "" || !l.known(req.Model) {
		l.h.ServeHTTP(w, r) // the Handler answers the error
		return
	}
	keep, err := keepAlive(req.KeepAlive, l.cfg.KeepAlive)
	if err != nil {
		l.h.ServeHTTP(w, r)
		return
	}
	preload := (r.URL.Path == "/api/generate" && (req.Prompt == nil || *req.Prompt == "")) ||
		(r.URL.Path == "/api/chat" && len(req.Messages) == 0)
	if preload && keep == 0 {
		l.unload(req.Model)
		writeJSON(w, http.StatusOK, map[string]any{"model": req.Model, "created_at": Epoch, "response": "", "done": true, "done_reason": "unload"})
		return
	}
	if err := l.acquire(r, req.Model, runnerOf(req.Options)); err != nil {
		return // the client went away while it waited
	}
	defer l.release(req.Model, keep)
	if preload {
		writeJSON(w, http.StatusOK, map[string]any{"model": req.Model, "created_at": Epoch, "response": "", "done": true, "done_reason": "load"})
		return
	}
	l.h.ServeHTTP(w, r)
}

// known asks the Handler's model list (a Loader around another handler
// takes any model).
func (l *Loader) known(model string) bool {
	if h, ok := l.h.(*Handler); ok {
		return h.known(model)
	}
	return true
}

// acquire waits until model is in memory with runner options runner
// (loading it, one load at a time) and counts a request on it.
func (l *Loader) acquire(r *http.Request, model, runner string) error {
	l.mu.Lock()
	l.expireLocked(time.Now())
	if m := l.models[model]; m != nil && m.runner == runner {
		m.refs++
		m.expires = time.Time{}
		l.mu.Unlock()
		return nil
	}
	l.mu.Unlock()
	// Not in memory: take the loader (one load at a time, in order).
	select {
	case l.loader <- struct{}{}:
	case <-r.Context().Done():
		return r.Context().Err()
	}
	defer func() { <-l.loader }()
	return l.load(r, model, runner)
}

// load makes room (waiting while every loaded model is in use; a model in
// memory with other runner options is unloaded once idle), loads model and
// counts the caller's request on it; the caller holds the loader.
func (l *Loader) load(r *http.Request, model, runner string) error {
	for {
		l.mu.Lock()
		l.expireLocked(time.Now())
		m := l.models[model]
		if m != nil && m.runner == runner { // loaded by the request before it
			m.refs++
			m.expires = time.Time{}
			l.mu.Unlock()
			return nil
		}
		if m != nil && m.refs == 0 {
			delete(l.models, model) // other runner options: unloaded to load again
			m = nil
		}
		if m == nil && (len(l.models) < l.cfg.MaxLoaded || l.evictLocked()) {
			l.loading = model
			l.mu.Unlock()
			break
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-r.Context().Done():
			return r.Context().Err()
		}
	}
	d, ok := l.cfg.LoadTime[model]
	if !ok {
		d = l.cfg.DefaultLoadTime
	}
	t := time.NewTimer(d)
	defer t.Stop()
	defer func() {
		l.mu.Lock()
		l.loading = ""
		l.mu.Unlock()
	}()
	select {
	case <-t.C:
	case <-r.Context().Done():
		// Ollama goes on loading for the requests behind it; the stand-in
		// drops the load, and the next request in line loads again.
		return r.Context().Err()
	}
	l.mu.Lock()
	l.models[model] = &inMemory{runner: runner, refs: 1, loaded: time.Now()}
	l.loads = append(l.loads, model)
	l.mu.Unlock()
	return nil
}

// evictLocked unloads the idle model that expires first; false when every
// loaded model is in use.
func (l *Loader) evictLocked() bool {
	victim := ""
	for name, m := range l.models {
		if m.refs > 0 {
			continue
		}
		if victim == "" || sooner(m, l.models[victim]) {
			victim = name
		}
	}
	if victim == "" {
		return false
	}
	delete(l.models, victim)
	return true
}

// sooner: a model kept for ever goes last.
func sooner(a, b *inMemory) bool {
	switch {
	case a.expires.IsZero():
		return false
	case b.expires.IsZero():
		return true
	}
	return a.expires.Before(b.expires)
}

// release ends a request on model; its keep-alive starts when the last one ends.
func (l *Loader) release(model string, keep time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.models[model]
	if m == nil {
		return
	}
	m.refs--
	m.keep = keep
	if m.refs > 0 {
		return
	}
	switch {
	case keep < 0:
		m.expires = time.Time{}
	case keep == 0:
		delete(l.models, model)
	default:
		m.expires = time.Now().Add(keep)
	}
	l.signalLocked()
}

func (l *Loader) unload(model string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := l.models[model]; m != nil && m.refs == 0 {
		delete(l.models, model)
		l.signalLocked()
	}
}

func (l *Loader) expireLocked(now time.Time) {
	for name, m := range l.models {
		if m.refs == 0 && !m.expires.IsZero() && !now.Before(m.expires) {
			delete(l.models, name)
			l.signalLocked()
		}
	}
}

func (l *Loader) signalLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// farFuture is the expires_at of a model kept for ever, as Ollama shows it.
var farFuture = time.Date(2318, 1, 1, 0, 0, 0, 0, time.UTC)

// ps lists the models in memory, the one that expires last first, as
// Ollama's /api/ps does.
func (l *Loader) ps() []any {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.expireLocked(now)
	type row struct {
		name    string
		expires time.Time
	}
	var rows []row
	for name, m := range l.models {
		exp := m.expires
		switch {
		case m.refs > 0 && m.keep >= 0:
			exp = now.Add(m.keep) // in use: its timer has not started
		case exp.IsZero():
			exp = farFuture
		}
		rows = append(rows, row{name, exp})
	}
	sort.Slice(rows, func(i, j int) bool {
		if !rows[i].expires.Equal(rows[j].expires) {
			return rows[i].expires.After(rows[j].expires)
		}
		return rows[i].name < rows[j].name
	})
	models := []any{}
	for i, rw := range rows {
		models = append(models, map[string]any{"name": rw.name, "model": rw.name, "size": 1000000 + i, "digest": fmt.Sprintf("%064x", i+1),
			"details": details(), "expires_at": rw.expires.UTC(), "size_vram": 1000000 + i, "context_length": 4096})
	}
	return models
}
