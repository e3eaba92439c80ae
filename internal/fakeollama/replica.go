package fakeollama

import (
	"bytes"
	"encoding/json"
	"hash/fnv"
	"io"
	"net/http"
	"sync"
	"time"
)

// ReplicaConfig shapes how one stand-in replica spends its time, as a GPU
// running Ollama does.
type ReplicaConfig struct {
	// Parallel is OLLAMA_NUM_PARALLEL: answers generated at once; the rest
	// wait, without a bound, in arrival order (Ollama queues requests for a
	// loaded model). 0: 1, Ollama's default.
	Parallel int
	// CacheSlots is how many conversations' prompts it keeps (the KV cache of
	// the runner's slots). 0: Parallel, as Ollama's runner keeps one prompt
	// per parallel slot.
	CacheSlots int
	// PrefillPerKiB is the time to read each KiB of prompt that is not in a
	// cache slot, before the first token; 0: none.
	PrefillPerKiB time.Duration
}

// ReplicaStats is what a Replica did.
type ReplicaStats struct {
	Answers      int   // generation requests served
	MaxWaiting   int   // most requests waiting for a slot at once (not counting those that found one free)
	PrefillBytes int64 // prompt bytes read without a cache
	CachedBytes  int64 // prompt bytes found in a cache slot
}

// Replica wraps a Handler with Ollama's scheduling of generation: Parallel
// answers at a time, the rest queued, and a prompt cache that makes a turn
// whose earlier turns it served cost less prefill. Other requests pass at once.
type Replica struct {
	h     http.Handler
	cfg   ReplicaConfig
	slots chan struct{}

	mu      sync.Mutex
	waiting int
	cache   []cachedPrompt // most recently used last
	stats   ReplicaStats
}

// cachedPrompt is the prompt of one conversation's last turn, as message
// hashes and sizes.
type cachedPrompt struct {
	hashes    []uint64
	sizes     []int
	assistant []bool // the message is the assistant's
}

// NewReplica returns a Replica around h (usually a Handler).
func NewReplica(h http.Handler, cfg ReplicaConfig) *Replica {
	if cfg.Parallel <= 0 {
		cfg.Parallel = 1
	}
	if cfg.CacheSlots <= 0 {
		cfg.CacheSlots = cfg.Parallel
	}
	return &Replica{h: h, cfg: cfg, slots: make(chan struct{}, cfg.Parallel)}
}

// Stats returns what it did so far.
func (rp *Replica) Stats() ReplicaStats {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.stats
}

// Waiting is how many requests wait for a slot now.
func (rp *Replica) Waiting() int {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.waiting
}

func (rp *Replica) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method + " " + r.URL.Path {
	case "POST /api/chat", "POST /api/generate", "POST /v1/chat/completions", "POST /v1/completions":
	default:
		rp.h.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		return // the client went away
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	prompt := promptOf(body)

	if !rp.acquire(r) {
		return // the client went away while it waited
	}
	defer func() { <-rp.slots }()
	rp.mu.Lock()
	uncached := rp.take(prompt)
	rp.stats.Answers++
	rp.mu.Unlock()

	if d := time.Duration(float64(rp.cfg.PrefillPerKiB) * float64(uncached) / 1024); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	rp.h.ServeHTTP(w, r)
}

// acquire takes a slot, waiting in line when none is free; false when the
// client went away first.
func (rp *Replica) acquire(r *http.Request) bool {
	select {
	case rp.slots <- struct{}{}:
		return true
	default:
	}
	rp.mu.Lock()
	rp.waiting++
	rp.stats.MaxWaiting = max(rp.stats.MaxWaiting, rp.waiting)
	rp.mu.Unlock()
	defer func() {
		rp.mu.Lock()
		rp.waiting--
		rp.mu.Unlock()
	}()
	select {
	case rp.slots <- struct{}{}:
		return true
	case <-r.Context().Done():
		return false
	}
}

// take finds the cache slot with the longest prefix of prompt, puts prompt
// in it (or in the least recently used slot) and returns the bytes of prompt
// that were not cached (rp.mu held). The answer it is about to generate is
// cached too: the next turn's assistant message after a cached prefix counts
// as cached.
func (rp *Replica) take(p cachedPrompt) int64 {
	bestSlot, bestLen := -1, 0
	for i, c := range rp.cache {
		n := commonPrefix(c.hashes, p.hashes)
		if n == len(c.hashes) && n < len(p.hashes) && p.assistant[n] {
			n++ // generated here last turn
		}
		if n > bestLen {
			bestSlot, bestLen = i, n
		}
	}
	var cached, uncached int64
	for i, s := range p.sizes {
		if i < bestLen {
			cached += int64(s)
		} else {
			uncached += int64(s)
		}
	}
	rp.stats.CachedBytes += cached
	rp.stats.PrefillBytes += uncached
	if bestSlot >= 0 {
		rp.cache = append(rp.cache[:bestSlot], rp.cache[bestSlot+1:]...)
	} else if len(rp.cache) >= rp.cfg.CacheSlots {
		rp.cache = rp.cache[1:]
	}
	rp.cache = append(rp.cache, p)
	return uncached
}

func commonPrefix(a, b []uint64) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// promptOf reads the messages (or the prompt) of a generation request; a
// body it cannot read is one uncached message of its own size.
func promptOf(body []byte) cachedPrompt {
	var req struct {
		Prompt   *string `json:"prompt"`
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	var p cachedPrompt
	if err := json.Unmarshal(body, &req); err != nil || (req.Prompt == nil && len(req.Messages) == 0) {
		return cachedPrompt{hashes: []uint64{hashOf(body)}, sizes: []int{len(body)}, assistant: []bool{false}}
	}
	if req.Prompt != nil {
		return cachedPrompt{hashes: []uint64{hashOf([]byte(*req.Prompt))}, sizes: []int{len(*req.Prompt)}, assistant: []bool{false}}
	}
	for _, m := range req.Messages {
		p.hashes = append(p.hashes, hashOf(append([]byte(m.Role+"\x00"), m.Content...)))
		p.sizes = append(p.sizes, len(m.Content))
		p.assistant = append(p.assistant, m.Role == "assistant")
	}
	return p
}

func hashOf(b []byte) uint64 {
	h := fnv.New64a()
	_, _ = h.Write(b)
	return h.Sum64()
}
