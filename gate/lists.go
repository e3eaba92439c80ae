package gate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"
	"unicode/utf8"

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
}

// serveList passes a list request through while b is up (not demand), or
// answers it from memory while b is not up.
func (g *Gate) serveList(w http.ResponseWriter, r *http.Request, b *backend, rel *url.URL) {
	path := rel.Path
	g.mu.Lock()
	st, known := b.state, b.known
	g.mu.Unlock()
	if st == StateUnknown {
		// A fresh gate: the first probe decides (it runs at once in Run).
		t := time.NewTimer(g.learnWait)
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
	if st == StateUp {
		a := g.pass(w, r, b, rel, r.Body, true)
		if !a.retry {
			g.count(b, passOutcome(a, OutcomePassed))
			return
		}
		g.mu.Lock()
		g.setState(b, StateAsleep, a.reason)
		g.mu.Unlock()
		b.kickProbe()
	}
	if path == pathPS {
		g.serveMemory(w, b, &remembered{ContentType: "application/json; charset=utf-8", Body: []byte(`{"models":[]}`)})
		return
	}
	g.mu.Lock()
	rem := b.lists[path]
	g.mu.Unlock()
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
	g.learnWake(w, r, b, rel)
}

func (b *backend) reasonNow(g *Gate) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return b.reason
}

// learnWake handles a list never seen while b is not up: b's demand says
// Learning (one wake, to learn the list), and the request waits for b to come
// up for at most learnWait, then gets a 503 that says so.
func (g *Gate) learnWake(w http.ResponseWriter, r *http.Request, b *backend, rel *url.URL) {
	g.mu.Lock()
	b.learning = true
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
	}()
	t := time.NewTimer(g.learnWait)
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

func (g *Gate) count(b *backend, o Outcome) {
	g.mu.Lock()
	b.requests[o]++
	g.mu.Unlock()
}

// remember keeps a complete 200 answer to a list GET.
func (g *Gate) remember(b *backend, path, ctype string, body []byte) {
	g.mu.Lock()
	old := b.lists[path]
	changed := old == nil || old.ContentType != ctype || !bytes.Equal(old.Body, body)
	if changed {
		b.lists[path] = &remembered{ContentType: ctype, Body: body, At: g.now()}
	}
	g.mu.Unlock()
	if changed && g.cfg.StateFile != "" {
		select {
		case g.stateDirty <- struct{}{}:
		default:
		}
	}
}

// learn fetches, once the backend is up after a learning wake, the lists that
// were asked while it was not, with the headers of the request that asked.
func (g *Gate) learn(b *backend, paths map[string]http.Header) {
	for path, hdr := range paths {
		g.mu.Lock()
		known := b.lists[path] != nil
		g.mu.Unlock()
		if known {
			continue
		}
		u := *b.cfg.URL
		u.Path, u.RawPath = singleJoin(u.Path, path), ""
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
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

func singleJoin(a, b string) string {
	if len(a) > 0 && a[len(a)-1] == '/' {
		a = a[:len(a)-1]
	}
	return a + b
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

// The state file: the remembered lists of every backend, keyed by name, with
// the URL they came from (lists of another URL are not served).
type stateFile struct {
	Version  int                     `json:"version"`
	Backends map[string]stateBackend `json:"backends"`
}

type stateBackend struct {
	URL   string               `json:"url"`
	Lists map[string]stateList `json:"lists"`
}

type stateList struct {
	ContentType string    `json:"content_type"`
	Body        string    `json:"body,omitempty"`        // the answer, when it is UTF-8
	BodyBase64  string    `json:"body_base64,omitempty"` // else
	At          time.Time `json:"at"`
	SHA256      string    `json:"sha256"`
}

func (g *Gate) loadState() error {
	path := g.cfg.StateFile
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("gate: state file %s: its directory %s does not exist", path, dir)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		level.Warn(g.logger).Log("msg", "state file unreadable, starting without remembered lists", "file", path, "err", err)
		return nil
	}
	var sf stateFile
	if err := json.Unmarshal(data, &sf); err != nil || sf.Version != 1 {
		if err == nil {
			err = fmt.Errorf("version %d, want 1", sf.Version)
		}
		level.Warn(g.logger).Log("msg", "state file corrupt, starting without remembered lists (it is rewritten at the next list)", "file", path, "err", err)
		return nil
	}
	for name, sb := range sf.Backends {
		b := g.byName[name]
		if b == nil {
			continue
		}
		if sb.URL != b.cfg.URL.String() {
			level.Warn(g.logger).Log("msg", "state file lists are of another URL, not used", "backend", name, "file_url", sb.URL, "url", b.cfg.URL.String())
			continue
		}
		for p, l := range sb.Lists {
			body := []byte(l.Body)
			if l.BodyBase64 != "" {
				if body, err = base64.StdEncoding.DecodeString(l.BodyBase64); err != nil {
					level.Warn(g.logger).Log("msg", "state file list corrupt, not used", "backend", name, "path", p, "err", err)
					continue
				}
			}
			if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != l.SHA256 || !learnable[p] && p != pathRoot {
				level.Warn(g.logger).Log("msg", "state file list corrupt, not used", "backend", name, "path", p)
				continue
			}
			b.lists[p] = &remembered{ContentType: l.ContentType, Body: body, At: l.At}
		}
	}
	return nil
}

// writeState writes the state file atomically (a temporary file in the same
// directory, synced, then renamed over it).
func (g *Gate) writeState() error {
	sf := stateFile{Version: 1, Backends: map[string]stateBackend{}}
	g.mu.Lock()
	for _, b := range g.backends {
		sb := stateBackend{URL: b.cfg.URL.String(), Lists: map[string]stateList{}}
		for _, p := range sortedNames(b.lists) {
			rem := b.lists[p]
			sum := sha256.Sum256(rem.Body)
			l := stateList{ContentType: rem.ContentType, At: rem.At, SHA256: hex.EncodeToString(sum[:])}
			if utf8.Valid(rem.Body) {
				l.Body = string(rem.Body)
			} else {
				l.BodyBase64 = base64.StdEncoding.EncodeToString(rem.Body)
			}
			sb.Lists[p] = l
		}
		sf.Backends[b.name] = sb
	}
	g.mu.Unlock()
	data, err := json.MarshalIndent(sf, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the state: %w", err)
	}
	path := g.cfg.StateFile
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing the state file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename: no such file, harmless
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("writing the state file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("writing the state file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing the state file %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing the state file: %w", err)
	}
	return nil
}

// stateLoop writes the state file after every change of a list, and once more
// at the end if a change is pending.
func (g *Gate) stateLoop(ctx context.Context) {
	write := func() {
		if err := g.writeState(); err != nil {
			level.Warn(g.logger).Log("msg", "state file not written", "file", g.cfg.StateFile, "err", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			select {
			case <-g.stateDirty:
				write()
			default:
			}
			return
		case <-g.stateDirty:
			write()
		}
	}
}

// userKey hashes a user id: the gate exchanges and keeps only hashes.
func userKey(id string) string {
	if id == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:12])
}
