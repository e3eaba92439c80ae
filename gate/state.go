package gate

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/go-kit/log/level"
)

// The state file: the remembered lists of every backend, keyed by name, with
// the URL they came from (lists of another URL are not served).
type stateFile struct {
	Version  int                     `json:"version"`
	Backends map[string]stateBackend `json:"backends"`
}

type stateBackend struct {
	URL   string               `json:"url"`
	Lists map[string]stateList `json:"lists"`
	Warm  *stateWarm           `json:"warm,omitempty"` // what warming learned (warm.go)
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
		if b.warm != nil && sb.Warm != nil {
			b.warm.loadState(*sb.Warm)
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
		if b.warm != nil {
			sb.Warm = b.warm.state()
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

// stateLoop writes the state file after every change of a list until ctx
// ends; Run writes a change still pending after that (flushState).
func (g *Gate) stateLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.stateDirty:
			g.writeStateOrWarn()
		}
	}
}

// flushState writes the state file if a change is pending. Run calls it last,
// once the lists being learnt (g.bg) are in, so that none of them is lost.
func (g *Gate) flushState() {
	if g.cfg.StateFile == "" {
		return
	}
	select {
	case <-g.stateDirty:
		g.writeStateOrWarn()
	default:
	}
}

func (g *Gate) writeStateOrWarn() {
	if err := g.writeState(); err != nil {
		level.Warn(g.logger).Log("msg", "state file not written", "file", g.cfg.StateFile, "err", err)
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

// volatileKeys are fields of a list answer that change on every request
// without the models changing: vLLM's ModelCard and llama.cpp's server stamp
// /v1/models entries with "created" = now, and vLLM adds a "permission" list
// with a fresh random id and "created" each time. They do not make the
// state file worth rewriting (an fsync and a rename on every page load).
var volatileKeys = map[string]bool{"created": true, "permission": true}

// listFingerprint is what of a list answer is worth keeping in the state
// file: the JSON without volatileKeys, keys sorted; the bytes themselves
// when it is not JSON.
func listFingerprint(body []byte) []byte {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return body
	}
	fp, err := json.Marshal(withoutVolatile(v))
	if err != nil {
		return body
	}
	return fp
}

func withoutVolatile(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if volatileKeys[k] {
				delete(x, k)
				continue
			}
			x[k] = withoutVolatile(e)
		}
	case []any:
		for i, e := range x {
			x[i] = withoutVolatile(e)
		}
	}
	return v
}

// fingerprint is rem's listFingerprint (nil-safe; lists read from the state
// file get theirs on first use, g.mu held).
func (rem *remembered) fingerprint() []byte {
	if rem == nil {
		return nil
	}
	if rem.fp == nil {
		rem.fp = listFingerprint(rem.Body)
	}
	return rem.fp
}
