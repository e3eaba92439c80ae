package gate

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

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

// serveDemand passes r through while b is up, holds it while b is asleep or
// starting, and delivers it when b is up.
func (g *Gate) serveDemand(w http.ResponseWriter, r *http.Request, b *backend, rel *url.URL) {
	user := userKey(r.Header.Get(UserHeader))
	var (
		inFlight  bool // counted in b.inFlight
		releasing bool // counted in b.releasing
		hr        *heldReq
		outcome   Outcome
	)
	g.mu.Lock()
	b.begin(user)
	direct := b.state == StateUp && b.queue.Len()+b.reading == 0 // never ahead of one held before it
	if direct {
		b.inFlight++
		inFlight = true
	}
	g.mu.Unlock()
	g.notify()

	defer func() {
		p := recover() // an aborted stream (http.ErrAbortHandler) still ends the accounting
		if p != nil && (outcome == "" || outcome == OutcomePassed || outcome == OutcomeDelivered) {
			outcome = OutcomeBackendError
			if r.Context().Err() != nil {
				outcome = OutcomeClientGone
			}
		}
		g.mu.Lock()
		if inFlight {
			b.inFlight--
		}
		if releasing {
			b.releasing--
			g.pump(b)
		}
		if hr != nil {
			g.freeLocked(b, hr)
		}
		b.end(user, g.now())
		if outcome != "" {
			b.requests[outcome]++
		}
		g.mu.Unlock()
		g.notify()
		if p != nil {
			panic(p)
		}
	}()

	if direct {
		a := g.pass(w, r, b, rel, r.Body, false)
		if !a.retry {
			outcome = passOutcome(a, OutcomePassed)
			return
		}
		// Nothing was sent: the backend went to sleep. Hold the request instead.
		g.mu.Lock()
		b.inFlight--
		inFlight = false
		g.setState(b, StateAsleep, a.reason)
		g.mu.Unlock()
	}

	arrived := time.Now()
	deadline := arrived.Add(g.cfg.HoldTimeout)
	var status int
	var code, msg string
	hr, status, code, msg = g.admit(w, r, b, arrived)
	if status != 0 {
		outcome = OutcomeRejected
		if status == http.StatusBadRequest || r.Context().Err() != nil {
			outcome = OutcomeClientGone // it did not send its whole body
		}
		if r.Context().Err() == nil {
			writeError(w, rel.Path, status, code, msg)
		}
		return
	}
	body := hr.body

	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		var gone bool
		select {
		case <-hr.ready:
		case <-r.Context().Done():
			gone = true
		case <-timer.C:
		}
		g.mu.Lock()
		if !hr.released {
			// Gone or timed out while held: it stops counting now and is never sent.
			b.queue.Remove(hr.elem)
			hr.elem = nil
			g.heldCount--
			if !hr.observed {
				b.hold.observe(time.Since(arrived))
			}
			st, reason := b.state, b.reason
			g.mu.Unlock()
			if gone {
				outcome = OutcomeClientGone
				return
			}
			outcome = OutcomeHoldTimeout
			writeError(w, rel.Path, http.StatusGatewayTimeout, codeHoldTimeout, holdTimeoutMessage(b.name, st, reason, g.cfg.HoldTimeout))
			return
		}
		// Released (pump moved it from held to in flight).
		inFlight, releasing = true, true
		g.mu.Unlock()

		var rd io.Reader
		if body != nil {
			rd = &freeOnEOF{r: bytes.NewReader(body.data), free: func() {
				g.mu.Lock()
				g.freeLocked(b, hr)
				g.mu.Unlock()
			}}
		}
		a := g.pass(w, r, b, rel, rd, false)
		if !a.retry {
			outcome = passOutcome(a, OutcomeDelivered)
			return
		}
		// Asleep again before a byte was sent: back to the front of the queue.
		g.mu.Lock()
		b.inFlight--
		b.releasing--
		inFlight, releasing = false, false
		hr.released = false
		hr.ready = make(chan struct{})
		hr.elem = b.queue.PushFront(hr)
		g.heldCount++
		g.setState(b, StateAsleep, a.reason)
		g.mu.Unlock()
		b.kickProbe()
		g.notify()
	}
}
