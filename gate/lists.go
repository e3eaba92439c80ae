package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/go-kit/log/level"
)

// maxListBytes bounds a remembered list answer.
const maxListBytes = 4 << 20

// The backend paths whose last 200 answer the gate remembers and serves from
// memory while the backend is not up.
const (
	pathTags    = "/api/tags"
	pathVersion = "/api/version"
	pathModels  = "/v1/models"
	pathPS      = "/api/ps"
	pathRoot    = "/"
)

// learnable lists trigger a learning wake when never seen; "/" ("Ollama is
// running") is remembered but never worth a wake.
var learnable = map[string]bool{pathTags: true, pathVersion: true, pathModels: true}

// isList tells the requests that are never demand: GET (or HEAD) of the model
// lists, /api/ps and /.
func isList(method, path string) bool {
	if method != http.MethodGet && method != http.MethodHead {
		return false
	}
	return learnable[path] || path == pathPS || path == pathRoot
}

// remembered is a list answer kept in memory.
type remembered struct {
	ContentType string
	Body        []byte
	At          time.Time
	fp          []byte // listFingerprint of Body, computed once
}

// serveList passes a list request through while b is up (not demand), or
// answers it from memory while b is not up.
func (g *Gate) serveList(w http.ResponseWriter, r *http.Request, b *backend, rel *url.URL) {
	path := rel.Path
	// The whole wait of a list, first probe and learning wake together, is
	// one learnWait: under Open WebUI's 10 s model-list timeout.
	deadline := time.Now().Add(g.learnWait)
	g.mu.Lock()
	st, known := b.state, b.known
	g.mu.Unlock()
	if st == StateUnknown {
		// A fresh gate: the first probe decides (it runs at once in Run).
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-known:
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
		g.mu.Lock()
		st = b.state
		g.mu.Unlock()
	}
	if st == StateUp && b.pool != nil {
		if g.servePoolList(w, r, b, rel) {
			return
		}
		g.mu.Lock()
		g.afterRefusal(b, "no replica answered "+path)
		g.mu.Unlock()
		b.kickProbe()
	} else if st == StateUp && g.passWhileUp(w, r, b, rel, true) {
		return
	}
	if path == pathPS {
		g.serveMemory(w, b, &remembered{ContentType: "application/json; charset=utf-8", Body: []byte(`{"models":[]}`)})
		return
	}
	g.mu.Lock()
	rem := b.lists[path]
	g.mu.Unlock()
	if rem == nil && path == pathRoot {
		rem = ollamaIsRunning
	}
	if rem != nil {
		g.serveMemory(w, b, rem)
		return
	}
	if !learnable[path] {
		g.count(b, OutcomeLearning)
		writeError(w, path, http.StatusServiceUnavailable, codeLearning, fmt.Sprintf(
			"gate: backend %q is %s (%s) and the gate has not seen its answer to %s yet", b.name, st, reasonOr(b.reasonNow(g)), path))
		return
	}
	g.learnWake(w, r, b, rel, deadline)
}

// ollamaIsRunning is Ollama's answer to GET / (its liveness check, and the
// ollama CLI's heartbeat before every command), given while the backend
// sleeps when the gate never saw the backend's own: a monitor or a CLI must
// not wake a GPU, nor fail, for asking whether the server is there.
var ollamaIsRunning = &remembered{ContentType: "text/plain; charset=utf-8", Body: []byte("Ollama is running")}

// servePreflight answers a CORS preflight, which is never demand: passed
// through while b is up (the backend's CORS policy decides); while it is
// not, a 204 that grants nothing, since the gate cannot know what the
// backend would grant. Open WebUI asks its backends from its server, without
// preflights; only browsers that call a backend directly see the difference.
func (g *Gate) servePreflight(w http.ResponseWriter, r *http.Request, b *backend, rel *url.URL) {
	g.mu.Lock()
	st := b.state
	g.mu.Unlock()
	if st == StateUp && g.passWhileUp(w, r, b, rel, false) {
		return
	}
	w.Header().Set(FromMemoryHeader, "1")
	w.WriteHeader(http.StatusNoContent)
	g.count(b, OutcomeFromMemory)
}

// learnWake handles a list never seen while b is not up: b's demand says
// Learning (one wake, to learn the list), and the request waits for b to come
// up for at most learnWait, then gets a 503 that says so.
func (g *Gate) learnWake(w http.ResponseWriter, r *http.Request, b *backend, rel *url.URL, deadline time.Time) {
	g.mu.Lock()
	if b.notLearnable != "" {
		st, reason, why := b.state, b.reason, b.notLearnable
		g.mu.Unlock()
		g.count(b, OutcomeLearning)
		writeError(w, rel.Path, http.StatusServiceUnavailable, codeLearning, fmt.Sprintf(
			"gate: backend %q is %s (%s) and the gate has not seen its model list (%s) yet; it is not learnable now: %s",
			b.name, st, reasonOr(reason), rel.Path, why))
		return
	}
	g.startLearning(b)
	b.learnPaths[rel.Path] = r.Header.Clone()
	b.learnWaiter++
	up := b.upCh
	g.mu.Unlock()
	b.kickProbe()
	g.notify()
	defer func() {
		g.mu.Lock()
		b.learnWaiter--
		g.mu.Unlock()
		g.notify() // a drain waits for learnWaiter too (Pending)
	}()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-up:
		a := g.pass(w, r, b, rel, r.Body, true)
		if !a.retry {
			g.count(b, passOutcome(a, OutcomePassed))
			return
		}
	case <-r.Context().Done():
		g.count(b, OutcomeClientGone)
		return
	case <-t.C:
	}
	g.mu.Lock()
	st, reason := b.state, b.reason
	g.mu.Unlock()
	g.count(b, OutcomeLearning)
	writeError(w, rel.Path, http.StatusServiceUnavailable, codeLearning, fmt.Sprintf(
		"gate: backend %q is %s (%s) and the gate has not seen its model list (%s) yet; it is waking the backend once to learn it, try again in a moment",
		b.name, st, reasonOr(reason), rel.Path))
}

func (g *Gate) serveMemory(w http.ResponseWriter, b *backend, rem *remembered) {
	h := w.Header()
	if rem.ContentType != "" {
		h.Set("Content-Type", rem.ContentType)
	}
	h.Set("Content-Length", fmt.Sprint(len(rem.Body)))
	h.Set(FromMemoryHeader, "1")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(rem.Body)
	g.count(b, OutcomeFromMemory)
}

// remember keeps a complete 200 answer to a list GET.
func (g *Gate) remember(b *backend, path, ctype string, body []byte) {
	g.mu.Lock()
	old := b.lists[path]
	changed := old == nil || old.ContentType != ctype || !bytes.Equal(old.Body, body)
	var persist bool // worth a write of the state file
	if changed {
		rem := &remembered{ContentType: ctype, Body: body, At: g.now(), fp: listFingerprint(body)}
		persist = old == nil || old.ContentType != ctype || !bytes.Equal(old.fingerprint(), rem.fp)
		if !persist {
			rem.At = old.At // the same models: the state file keeps its time
		}
		b.lists[path] = rem // served as the backend last answered
	}
	g.mu.Unlock()
	if persist && g.cfg.StateFile != "" {
		select {
		case g.stateDirty <- struct{}{}:
		default:
		}
	}
}

// learn fetches, once the backend is up after a learning wake, the lists that
// were asked while it was not, with the headers of the request that asked.
func (g *Gate) learn(b *backend, paths map[string]http.Header) {
	for _, path := range []string{pathTags, pathVersion, pathModels} { // the learnable lists, by name: never a path a client wrote
		hdr, asked := paths[path]
		if !asked {
			continue
		}
		g.mu.Lock()
		known := b.lists[path] != nil
		g.mu.Unlock()
		if known {
			continue
		}
		u := *g.listURL(b)
		u.Path, u.RawPath = singleJoin(u.Path, path), ""
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		// The URL is the backend's own (flags) and the path one of the fixed
		// learnable lists; gosec's taint analysis follows b through the request
		// context of the pass-through that saw it come up.
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil) //nolint:gosec // G704: see above
		if err != nil {
			cancel()
			continue
		}
		req.Header = hdr
		req.Header.Del("Accept-Encoding")
		res, err := g.transport.RoundTrip(req)
		if err != nil {
			cancel()
			level.Warn(g.logger).Log("msg", "learning a list failed", "backend", b.name, "path", path, "err", err)
			continue
		}
		body, err := io.ReadAll(io.LimitReader(res.Body, maxListBytes+1))
		_ = res.Body.Close()
		cancel()
		if err == nil && res.StatusCode == http.StatusOK && len(body) <= maxListBytes && res.Header.Get("Content-Encoding") == "" {
			g.remember(b, path, res.Header.Get("Content-Type"), body)
			level.Info(g.logger).Log("msg", "learned a list", "backend", b.name, "path", path, "bytes", len(body))
		} else {
			level.Warn(g.logger).Log("msg", "learning a list failed", "backend", b.name, "path", path, "status", res.StatusCode, "err", err)
		}
	}
}

// models returns the model names of b's remembered lists (/api/tags' names,
// else /v1/models' ids; g.mu held).
func (b *backend) models() []string {
	names := []string{}
	if rem := b.lists[pathTags]; rem != nil {
		var v struct {
			Models []struct {
				Name string `json:"name"`
			} `json:"models"`
		}
		if json.Unmarshal(rem.Body, &v) == nil {
			for _, m := range v.Models {
				names = append(names, m.Name)
			}
			return names
		}
	}
	if rem := b.lists[pathModels]; rem != nil {
		var v struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if json.Unmarshal(rem.Body, &v) == nil {
			for _, m := range v.Data {
				names = append(names, m.ID)
			}
		}
	}
	return names
}

// passWhileUp passes r through to b, which was up when r came (capture: a
// list GET, remembered). False when r did not reach b after all: b is taken
// down and probed again, and the caller answers without it.
func (g *Gate) passWhileUp(w http.ResponseWriter, r *http.Request, b *backend, rel *url.URL, capture bool) bool {
	a := g.pass(w, r, b, rel, r.Body, capture)
	if !a.retry {
		g.count(b, passOutcome(a, OutcomePassed))
		return true
	}
	g.mu.Lock()
	g.afterRefusal(b, a.reason)
	g.mu.Unlock()
	b.kickProbe()
	return false
}
