// Package fakeollama is a stand-in Ollama for tests, benchmarks and the demo:
// the endpoints Open WebUI calls, in Ollama's shapes (read from Ollama 0.17.4
// and its API docs; see ../../../shared/docs/ollama-gate.md), with answers
// that are the same on every run so that a test can compare them byte for
// byte. Server adds what matters for a wake gate: a port that is open before
// HTTP is served, as `ollama serve` opens its port before GPU discovery.
package fakeollama

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config shapes the stand-in's answers.
type Config struct {
	Models        []string      // model names; nil: tiny:1b; empty (not nil): none, as a fresh Ollama
	Chunks        int           // streamed chunks per answer unless the request sets num_predict; default 8
	ChunkInterval time.Duration // between streamed chunks; 0: 20ms; negative: none
	Version       string        // /api/version; default 0.17.4
	// KeepAlive is how long a model stays in /api/ps after its last
	// request, as OLLAMA_KEEP_ALIVE (a request's keep_alive overrides it);
	// 0: 5m, Ollama's default; negative: for ever.
	KeepAlive time.Duration
	// Clock stamps created_at and friends; default a fixed instant, so that
	// answers are byte-for-byte repeatable. Keep-alive expiry runs on the
	// real clock whatever Clock says.
	Clock func() time.Time
	// OnRequest, if set, is called as each request other than model lists,
	// /api/version and / arrives (before its body is read): benchmarks use it
	// to time when held requests reach the backend.
	OnRequest func(r *http.Request, at time.Time)
	// PullDuration is how long POST /api/pull downloads: a progress line
	// every ChunkInterval (or once a second when there is none) until then;
	// 0: at once.
	PullDuration time.Duration
}

// Epoch is the fixed instant of the default clock.
var Epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Handler serves Ollama's API.
type Handler struct {
	cfg Config

	mu     sync.Mutex
	loaded map[string]loaded // by model; /api/ps lists those not yet unloaded

	requests atomic.Int64 // requests other than model lists, version and /
}

// loaded is a model in memory.
type loaded struct {
	until time.Time     // on the real clock; zero: never unloads
	keep  time.Duration // the keep-alive that set until, for expires_at
}

// New returns a Handler.
func New(cfg Config) *Handler {
	if cfg.Models == nil {
		cfg.Models = []string{"tiny:1b"}
	}
	if cfg.Chunks <= 0 {
		cfg.Chunks = 8
	}
	if cfg.ChunkInterval == 0 {
		cfg.ChunkInterval = 20 * time.Millisecond
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 5 * time.Minute
	}
	if cfg.Version == "" {
		cfg.Version = "0.17.4"
	}
	if cfg.Clock == nil {
		cfg.Clock = func() time.Time { return Epoch }
	}
	return &Handler{cfg: cfg, loaded: map[string]loaded{}}
}

// Requests is how many requests other than model lists, /api/version and /
// reached the stand-in.
func (h *Handler) Requests() int64 { return h.requests.Load() }

// words make up every answer: chunk i is words[i % len(words)].
var words = []string{"Hello", " from", " the", " stand-in", " Ollama", ",", " one", " word", " at", " a", " time", "."}

// Answer is the whole text of an answer of n chunks.
func Answer(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(words[i%len(words)])
	}
	return b.String()
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method + " " + r.URL.Path {
	case "GET /", "HEAD /":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "Ollama is running")
	case "GET /api/version":
		writeJSON(w, http.StatusOK, map[string]string{"version": h.cfg.Version})
	case "GET /api/tags":
		writeJSON(w, http.StatusOK, map[string]any{"models": h.tags()})
	case "GET /api/ps":
		writeJSON(w, http.StatusOK, map[string]any{"models": h.ps()})
	case "GET /v1/models":
		writeJSON(w, http.StatusOK, h.openAIModels())
	case "POST /api/pull":
		h.requests.Add(1)
		if h.cfg.OnRequest != nil {
			h.cfg.OnRequest(r, time.Now())
		}
		h.pull(w, r)
	case "POST /api/chat", "POST /api/generate", "POST /v1/chat/completions", "POST /v1/completions", "POST /api/embed", "POST /api/embeddings", "POST /api/show":
		h.requests.Add(1)
		if h.cfg.OnRequest != nil {
			h.cfg.OnRequest(r, time.Now())
		}
		h.generate(w, r)
	default:
		// gin's answer to an unknown route
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, "404 page not found")
	}
}

// request is what the stand-in reads of a request body.
type request struct {
	Model   string `json:"model"`
	Name    string `json:"name"` // /api/show before 0.5
	Stream  *bool  `json:"stream"`
	Options struct {
		NumPredict int `json:"num_predict"`
	} `json:"options"`
	MaxTokens int             `json:"max_tokens"`
	KeepAlive json.RawMessage `json:"keep_alive"` // "5m", a number of seconds, or absent
}

// keepAlive reads a request's keep_alive as Ollama does: a duration string
// or a number of seconds; negative keeps the model loaded for ever.
func keepAlive(raw json.RawMessage, def time.Duration) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return def, nil
	}
	var seconds float64
	if err := json.Unmarshal(raw, &seconds); err == nil {
		return time.Duration(seconds * float64(time.Second)), nil
	}
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		return 0, fmt.Errorf("keep_alive: want a duration or a number of seconds, got %s", raw)
	}
	d, err := time.ParseDuration(text)
	if err != nil {
		return 0, fmt.Errorf("keep_alive: %w", err)
	}
	return d, nil
}

func (h *Handler) generate(w http.ResponseWriter, r *http.Request) {
	openAI := strings.HasPrefix(r.URL.Path, "/v1/")
	var req request
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<20)).Decode(&req); err != nil {
		h.fail(w, openAI, http.StatusBadRequest, "invalid request: "+err.Error())
		return
	}
	if req.Model == "" {
		req.Model = req.Name
	}
	if !h.known(req.Model) {
		h.fail(w, openAI, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	keep, err := keepAlive(req.KeepAlive, h.cfg.KeepAlive)
	if err != nil {
		h.fail(w, openAI, http.StatusBadRequest, err.Error())
		return
	}
	if r.URL.Path != "/api/show" { // show reads the file; it loads nothing
		h.load(req.Model, keep)
	}
	n := h.cfg.Chunks
	if req.Options.NumPredict > 0 {
		n = req.Options.NumPredict
	} else if req.MaxTokens > 0 {
		n = req.MaxTokens
	}
	// Ollama streams by default; OpenAI's endpoints only when asked.
	stream := !openAI
	if req.Stream != nil {
		stream = *req.Stream
	}
	switch r.URL.Path {
	case "/api/show":
		writeJSON(w, http.StatusOK, h.show(req.Model))
	case "/api/embed":
		writeJSON(w, http.StatusOK, map[string]any{"model": req.Model, "embeddings": [][]float64{{0.25, -0.5, 0.125, 1}}, "total_duration": 1000, "load_duration": 10, "prompt_eval_count": 1})
	case "/api/embeddings":
		writeJSON(w, http.StatusOK, map[string]any{"embedding": []float64{0.25, -0.5, 0.125, 1}})
	default:
		h.stream(w, r, req.Model, n, stream)
	}
}

// stream writes n chunks, flushing each, in the shape of r's endpoint; it
// stops when the client goes away.
func (h *Handler) stream(w http.ResponseWriter, r *http.Request, model string, n int, stream bool) {
	created := h.cfg.Clock()
	path := r.URL.Path
	if !stream {
		writeJSON(w, http.StatusOK, final(path, model, created, Answer(n), n))
		return
	}
	if strings.HasPrefix(path, "/v1/") {
		w.Header().Set("Content-Type", "text/event-stream")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	emit := func(v any) {
		b, _ := json.Marshal(v)
		if strings.HasPrefix(path, "/v1/") {
			fmt.Fprintf(w, "data: %s\n\n", b)
		} else {
			w.Write(append(b, '\n'))
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
	for i := 0; i < n; i++ {
		if i > 0 && h.cfg.ChunkInterval > 0 {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(h.cfg.ChunkInterval):
			}
		}
		emit(chunk(path, model, created, words[i%len(words)]))
	}
	emit(last(path, model, created, n))
	if strings.HasPrefix(path, "/v1/") {
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
		if flusher != nil {
			flusher.Flush()
		}
	}
}

func chunk(path, model string, created time.Time, word string) any {
	switch path {
	case "/api/generate":
		return map[string]any{"model": model, "created_at": created, "response": word, "done": false}
	case "/v1/chat/completions":
		return map[string]any{"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": created.Unix(), "model": model, "system_fingerprint": "fp_ollama",
			"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": word}, "finish_reason": nil}}}
	case "/v1/completions":
		return map[string]any{"id": "cmpl-1", "object": "text_completion", "created": created.Unix(), "model": model, "system_fingerprint": "fp_ollama",
			"choices": []any{map[string]any{"index": 0, "text": word, "finish_reason": nil}}}
	}
	return map[string]any{"model": model, "created_at": created, "message": map[string]any{"role": "assistant", "content": word}, "done": false}
}

func last(path, model string, created time.Time, n int) any {
	switch path {
	case "/v1/chat/completions":
		return map[string]any{"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": created.Unix(), "model": model, "system_fingerprint": "fp_ollama",
			"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": ""}, "finish_reason": "stop"}}}
	case "/v1/completions":
		return map[string]any{"id": "cmpl-1", "object": "text_completion", "created": created.Unix(), "model": model, "system_fingerprint": "fp_ollama",
			"choices": []any{map[string]any{"index": 0, "text": "", "finish_reason": "stop"}}}
	}
	m := map[string]any{"model": model, "created_at": created, "done": true, "done_reason": "stop",
		"total_duration": 1000000, "load_duration": 1000, "prompt_eval_count": 1, "prompt_eval_duration": 1000, "eval_count": n, "eval_duration": 1000}
	if path == "/api/generate" {
		m["response"] = ""
	} else {
		m["message"] = map[string]any{"role": "assistant", "content": ""}
	}
	return m
}

// final is a whole answer, for "stream": false.
func final(path, model string, created time.Time, text string, n int) any {
	switch path {
	case "/v1/chat/completions":
		return map[string]any{"id": "chatcmpl-1", "object": "chat.completion", "created": created.Unix(), "model": model, "system_fingerprint": "fp_ollama",
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": text}, "finish_reason": "stop"}},
			"usage":   map[string]any{"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}}
	case "/v1/completions":
		return map[string]any{"id": "cmpl-1", "object": "text_completion", "created": created.Unix(), "model": model, "system_fingerprint": "fp_ollama",
			"choices": []any{map[string]any{"index": 0, "text": text, "finish_reason": "stop"}},
			"usage":   map[string]any{"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}}
	}
	m := last(path, model, created, n).(map[string]any)
	if path == "/api/generate" {
		m["response"] = text
	} else {
		m["message"] = map[string]any{"role": "assistant", "content": text}
	}
	return m
}

func (h *Handler) known(model string) bool {
	for _, m := range h.cfg.Models {
		if m == model || m == model+":latest" {
			return true
		}
	}
	return false
}

func details() map[string]any {
	return map[string]any{"parent_model": "", "format": "gguf", "family": "llama", "families": []string{"llama"}, "parameter_size": "1B", "quantization_level": "Q4_0"}
}

func (h *Handler) tags() []any {
	models := []any{}
	for i, m := range h.cfg.Models {
		models = append(models, map[string]any{"name": m, "model": m, "modified_at": Epoch, "size": 1000000 + i,
			"digest": fmt.Sprintf("%064x", i+1), "details": details()})
	}
	return models
}

// load marks model loaded for keep after now (for ever if keep < 0;
// keep == 0 unloads it, as keep_alive 0 does once the answer is written).
func (h *Handler) load(model string, keep time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case keep < 0:
		h.loaded[model] = loaded{keep: keep}
	case keep == 0:
		delete(h.loaded, model)
	default:
		h.loaded[model] = loaded{until: time.Now().Add(keep), keep: keep}
	}
}

func (h *Handler) ps() []any {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	models := []any{}
	for i, m := range h.cfg.Models {
		l, ok := h.loaded[m]
		if !ok || (!l.until.IsZero() && !now.Before(l.until)) {
			continue
		}
		// expires_at on Clock, so that it is repeatable; a model kept
		// for ever expires in a far future.
		expires := h.cfg.Clock().Add(l.keep)
		if l.until.IsZero() {
			expires = time.Date(2318, 1, 1, 0, 0, 0, 0, time.UTC)
		}
		models = append(models, map[string]any{"name": m, "model": m, "size": 1000000 + i, "digest": fmt.Sprintf("%064x", i+1),
			"details": details(), "expires_at": expires, "size_vram": 1000000 + i, "context_length": 4096})
	}
	return models
}

func (h *Handler) openAIModels() map[string]any {
	var data []any // null with no models, as Ollama answers
	for _, m := range h.cfg.Models {
		data = append(data, map[string]any{"id": m, "object": "model", "created": Epoch.Unix(), "owned_by": "library"})
	}
	return map[string]any{"object": "list", "data": data}
}

func (h *Handler) show(model string) map[string]any {
	return map[string]any{"modelfile": "FROM " + model, "parameters": "", "template": "{{ .Prompt }}", "details": details(),
		"model_info": map[string]any{"general.architecture": "llama"}, "capabilities": []string{"completion"}, "modified_at": Epoch}
}

// fail answers in Ollama's error shape, or OpenAI's under /v1/.
func (h *Handler) fail(w http.ResponseWriter, openAI bool, status int, msg string) {
	if openAI {
		writeJSON(w, status, map[string]any{"error": map[string]any{"message": msg, "type": "api_error", "param": nil, "code": nil}})
		return
	}
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own maps
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b)
}

// pullDigest is the one layer every pull downloads.
const pullDigest = "sha256:6a0746a1ec1aef3e7ec53868f220ff6e389f6f8ef87a01d77c96807de94ca2aa"

// pullTotal is the layer's size in bytes.
const pullTotal = 1 << 30

// pull answers POST /api/pull as Ollama's PullHandler does for a model it
// can download: "pulling manifest", the layer's progress (status "pulling"
// and the digest's first 12 hex digits, digest, total, completed) for
// PullDuration, then "verifying sha256 digest", "writing manifest",
// "success"; with "stream": false only the last. The model is not added to
// the lists. It stops when the client goes away.
func (h *Handler) pull(w http.ResponseWriter, r *http.Request) {
	var req request
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if req.Model == "" && req.Name == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid model name"})
		return
	}
	every := h.cfg.ChunkInterval
	if every <= 0 {
		every = time.Second
	}
	start := time.Now()
	progress := func(yield func(map[string]any) bool) {
		if !yield(map[string]any{"status": "pulling manifest"}) {
			return
		}
		for {
			done := time.Since(start) >= h.cfg.PullDuration
			completed := int64(pullTotal)
			if !done {
				completed = int64(float64(pullTotal) * float64(time.Since(start)) / float64(h.cfg.PullDuration))
			}
			if !yield(map[string]any{"status": "pulling " + pullDigest[7:19], "digest": pullDigest, "total": pullTotal, "completed": completed}) || done {
				break
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(min(every, h.cfg.PullDuration-time.Since(start))):
			}
		}
		for _, status := range []string{"verifying sha256 digest", "writing manifest", "success"} {
			if !yield(map[string]any{"status": status}) {
				return
			}
		}
	}
	if req.Stream != nil && !*req.Stream {
		var last map[string]any
		progress(func(m map[string]any) bool { last = m; return r.Context().Err() == nil })
		if r.Context().Err() == nil {
			writeJSON(w, http.StatusOK, last)
		}
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	progress(func(m map[string]any) bool {
		b, _ := json.Marshal(m)
		if _, err := w.Write(append(b, '\n')); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	})
}
