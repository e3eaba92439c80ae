package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"sync"
)

// unionKeys are the lists a pool answers with the union of its replicas'
// lists: the array that holds the entries, and the field that names one.
var unionKeys = map[string][2]string{
	pathTags:   {"models", "name"},
	pathPS:     {"models", "name"},
	pathModels: {"data", "id"},
}

// servePoolList answers a list request of a pool while it is up: the model
// lists are the union of what the replicas that answer list (the first entry
// of each name kept, in replica order); other list paths go to one replica.
// False when no replica answered (the caller serves from memory).
func (g *Gate) servePoolList(w http.ResponseWriter, r *http.Request, b *backend, rel *url.URL) bool {
	keys, union := unionKeys[rel.Path]
	if !union || r.Method != http.MethodGet {
		a := g.deliver(w, r, b, rel, liveBody(r))
		if a.retry {
			return false
		}
		g.count(b, passOutcome(a, OutcomePassed))
		return true
	}
	g.mu.Lock()
	var urls []*url.URL
	for _, rep := range b.pool.replicas {
		if rep.routable() {
			urls = append(urls, rep.url)
		}
	}
	g.mu.Unlock()
	type answer struct {
		status int
		ctype  string
		body   []byte
	}
	answers := make([]answer, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i].status, answers[i].ctype, answers[i].body = g.fetchList(r.Context(), u, rel.Path, r.Header)
		}()
	}
	wg.Wait()
	var lists [][]byte
	var first *answer
	for i := range answers {
		a := &answers[i]
		if a.status == http.StatusOK {
			lists = append(lists, a.body)
		} else if a.status != 0 && first == nil {
			first = a
		}
	}
	if len(lists) == 0 {
		if first == nil {
			return false // nobody answered
		}
		w.Header().Set("Content-Type", first.ctype)
		w.WriteHeader(first.status)
		_, _ = w.Write(first.body)
		g.count(b, OutcomePassed)
		return true
	}
	body := unionList(lists, keys[0], keys[1])
	const ctype = "application/json; charset=utf-8"
	if rel.Path != pathPS {
		g.remember(b, rel.Path, ctype, body)
	}
	w.Header().Set("Content-Type", ctype)
	_, _ = w.Write(body)
	g.count(b, OutcomePassed)
	return true
}

// fetchList GETs path of one replica with the client's headers; status 0
// when it did not answer.
func (g *Gate) fetchList(ctx context.Context, base *url.URL, path string, hdr http.Header) (int, string, []byte) {
	u := *base
	u.Path, u.RawPath = singleJoin(u.Path, path), ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, "", nil
	}
	req.Header = hdr.Clone()
	req.Header.Del("Accept-Encoding") // identity, to merge
	res, err := g.transport.RoundTrip(req)
	if err != nil {
		return 0, "", nil
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxListBytes+1))
	if err != nil || len(body) > maxListBytes {
		return 0, "", nil
	}
	return res.StatusCode, res.Header.Get("Content-Type"), body
}

// unionList merges JSON objects whose field arr lists entries named by
// field key: the first object's other fields, and each name once. A list
// that is not of that shape is left out.
func unionList(lists [][]byte, arr, key string) []byte {
	var out map[string]json.RawMessage
	var merged []json.RawMessage
	seen := map[string]bool{}
	for _, l := range lists {
		var obj map[string]json.RawMessage
		if json.Unmarshal(l, &obj) != nil {
			continue
		}
		var entries []json.RawMessage
		if raw := obj[arr]; len(raw) > 0 && !bytes.Equal(raw, []byte("null")) && json.Unmarshal(raw, &entries) != nil {
			continue
		}
		if out == nil {
			out = obj
		}
		for _, e := range entries {
			var named map[string]json.RawMessage
			if json.Unmarshal(e, &named) != nil {
				continue
			}
			var name string
			_ = json.Unmarshal(named[key], &name)
			if seen[name] {
				continue
			}
			seen[name] = true
			merged = append(merged, e)
		}
	}
	if out == nil {
		return lists[0]
	}
	if merged == nil {
		merged = []json.RawMessage{}
	}
	out[arr], _ = json.Marshal(merged)
	body, _ := json.Marshal(out)
	return body
}

// listURL is where a list is learned: a pool's first replica that takes
// requests, else the backend's URL.
func (g *Gate) listURL(b *backend) *url.URL {
	g.mu.Lock()
	defer g.mu.Unlock()
	if b.pool != nil {
		for _, rep := range b.pool.replicas {
			if rep.routable() {
				return rep.url
			}
		}
	}
	return b.cfg.URL
}
