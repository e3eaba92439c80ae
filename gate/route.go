package gate

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// ServeHTTP serves the whole gate surface: /_gate/status, /_gate/demand, and
// every backend under its prefix.
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_gate/") {
		g.serveOwn(w, r)
		return
	}
	b, rel, ok := g.route(r)
	if ok && rel == nil {
		writeError(w, r.URL.Path, http.StatusBadRequest, codeBadPath,
			fmt.Sprintf("gate: the path %s %v; the gate does not pass such paths on", r.URL.EscapedPath(), errDotSegment))
		return
	}
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
	case isPreflight(r):
		g.servePreflight(w, r, b, rel)
	case isList(r.Method, rel.Path):
		g.serveList(w, r, b, rel)
	default:
		g.serveDemand(w, r, b, rel)
	}
}

// route finds the backend of r and the path to ask it, with the /NAME prefix
// stripped (escaping kept). A path with dot segments has a backend and a nil
// path: it is refused.
func (g *Gate) route(r *http.Request) (*backend, *url.URL, bool) {
	ep := r.URL.EscapedPath()
	if ep == "" {
		ep = "/"
	}
	b, rawRest := g.unnamed, ep
	if b == nil {
		trimmed := strings.TrimPrefix(ep, "/")
		seg, _, found := strings.Cut(trimmed, "/")
		if b = g.byName[seg]; b == nil {
			return nil, nil, false
		}
		rawRest = "/" // "/NAME" is served as "/NAME/"
		if found {
			rawRest = trimmed[len(seg):] // "/" and the rest, without a new string
		}
	}
	// Open WebUI keeps a trailing slash of its Ollama URL and appends
	// "/api/...": http://gate/big/ asks for /big//api/tags, http://gate/ for
	// //api/tags.
	rawRest = collapseLeadingSlashes(rawRest)
	if checkSegments(rawRest) != nil {
		return b, nil, true
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
	user := userKey(r.Header.Get(userHeaderKey))
	d := &demandReq{load: g.beginLoad(b, r, rel.Path, user)}
	r = withLoad(r, d.load) // its model and response header reach warming (warm.go)
	g.mu.Lock()
	b.begin(user)
	direct := b.sends() && b.queue.Len()+b.reading == 0 // never ahead of one held before it
	if direct {
		b.inFlight++
		d.inFlight = true
	}
	g.mu.Unlock()
	g.notify()

	defer func() {
		p := recover() // an aborted stream (http.ErrAbortHandler) still ends the accounting
		if p != nil && (d.outcome == "" || d.outcome == OutcomePassed || d.outcome == OutcomeDelivered) {
			switch {
			case r.Context().Err() != nil:
				d.outcome = OutcomeClientGone
			case g.drain.ended.Err() != nil:
				d.outcome = OutcomeShutdown // a stream cut at the end of the drain
			default:
				d.outcome = OutcomeBackendError
			}
		}
		g.mu.Lock()
		if d.inFlight {
			b.inFlight--
		}
		if d.releasing {
			b.releasing--
			g.pump(b)
		}
		if d.hr != nil {
			g.freeLocked(b, d.hr)
		}
		b.end(user, g.now())
		if d.outcome != "" {
			b.requests[d.outcome]++
		}
		g.mu.Unlock()
		g.endLoad(b, d.load)
		g.notify()
		if p != nil {
			panic(p)
		}
	}()

	if direct {
		body := liveBody(r)
		a := g.deliver(w, r, b, rel, body)
		if !a.retry {
			d.outcome = passOutcome(a, OutcomePassed)
			return
		}
		// The request did not reach the backend (any replica of a pool): it
		// went to sleep. Hold the request instead; deliver put back in r.Body
		// what was taken of its body.
		g.mu.Lock()
		b.inFlight--
		d.inFlight = false
		g.afterRefusal(b, a.reason)
		g.mu.Unlock()
	}

	g.holdAndDeliver(w, r, b, rel, d)
}

// demandReq is what one demand request counts while it is served; serveDemand
// gives it all back when the request ends, however it ends.
type demandReq struct {
	inFlight  bool // counted in b.inFlight
	releasing bool // counted in b.releasing
	hr        *heldReq
	outcome   Outcome
	load      *loadReq // a request that makes b load a model; nil otherwise
}
