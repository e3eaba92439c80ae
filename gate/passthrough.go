package gate

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log/level"
)

// attempt is one pass of a request to its backend, carried to the proxy's
// hooks in the request context.
type attempt struct {
	b       *backend
	rel     *url.URL // the backend-relative path (prefix stripped)
	body    *trackingBody
	capture bool // a list GET: remember a 200 answer
	// set by the hooks:
	retry    bool   // the dial failed before any byte was sent: hold instead
	reason   string // what the dial saw
	outcome  Outcome
	response bool // the backend answered with a status line
}

type attemptKey struct{}

// forwardHeaders are removed by ReverseProxy's Rewrite mode; the gate puts
// back the client's own values so the request reaches the backend unchanged.
var forwardHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// pass sends r to b once. body nil: r carries no body.
func (g *Gate) pass(w http.ResponseWriter, r *http.Request, b *backend, rel *url.URL, body io.Reader, capture bool) *attempt {
	a := &attempt{b: b, rel: rel, capture: capture}
	out := r.WithContext(context.WithValue(r.Context(), attemptKey{}, a))
	if body != nil {
		if body == io.Reader(r.Body) && r.ContentLength > 0 {
			// The transport reads once more past the end to check the length;
			// that read must not reach the client's body (see below).
			body = io.LimitReader(body, r.ContentLength)
		}
		a.body = &trackingBody{r: body}
		out.Body = a.body
	}
	// A backend may answer before it has read the whole request (Ollama binds
	// the JSON and starts streaming). Go's HTTP/1 server then closes the
	// request body when the answer's header is written, and the transport,
	// still sending the request, fails and closes the backend connection
	// under the streaming answer (about 1 % of streams in bench/gate.sh).
	// Full duplex keeps the body readable while the answer streams.
	_ = http.NewResponseController(w).EnableFullDuplex() // unsupported (HTTP/2, recorders): nothing to fix there
	g.proxy.ServeHTTP(w, out)
	return a
}

func (g *Gate) rewrite(pr *httputil.ProxyRequest) {
	a := pr.In.Context().Value(attemptKey{}).(*attempt)
	pr.Out.URL.Path, pr.Out.URL.RawPath = a.rel.Path, a.rel.RawPath
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery // unchanged, even where Go would drop a parameter
	pr.SetURL(a.b.cfg.URL)                   // also makes Host the backend's
	for _, h := range forwardHeaders {
		if v, ok := pr.In.Header[h]; ok {
			pr.Out.Header[h] = v
		}
	}
}

func (g *Gate) proxyError(w http.ResponseWriter, out *http.Request, err error) {
	a := out.Context().Value(attemptKey{}).(*attempt)
	if out.Context().Err() != nil {
		a.outcome = OutcomeClientGone
		return
	}
	if reason, ok := dialFailure(err); ok && !a.body.touched() {
		a.retry, a.reason = true, reason
		return
	}
	a.outcome = OutcomeBackendError
	level.Warn(g.logger).Log("msg", "backend failed", "backend", a.b.name, "path", a.rel.Path, "err", err)
	writeError(w, a.rel.Path, http.StatusBadGateway, codeProxy,
		fmt.Sprintf("gate: backend %q failed to answer: %v", a.b.name, err))
}

func (g *Gate) modifyResponse(res *http.Response) error {
	a := res.Request.Context().Value(attemptKey{}).(*attempt)
	a.response = true
	g.mu.Lock()
	if a.b.state != StateUp {
		// Any status line proves the backend serves HTTP.
		g.setState(a.b, StateUp, "")
	}
	g.mu.Unlock()
	enc := res.Header.Get("Content-Encoding")
	if a.capture && res.StatusCode == http.StatusOK && res.Request.Method == http.MethodGet &&
		(enc == "" || enc == "identity" || enc == "gzip") && res.ContentLength <= maxListBytes {
		b, path := a.b, a.rel.Path
		ctype := res.Header.Get("Content-Type")
		res.Body = &captureBody{ReadCloser: res.Body, done: func(body []byte) {
			if enc == "gzip" { // kept as identity: that suits every client
				var err error
				if body, err = gunzip(body); err != nil {
					return
				}
			}
			g.remember(b, path, ctype, body)
		}}
	}
	return nil
}

// gunzip decodes a remembered list that came compressed, within maxListBytes.
func gunzip(body []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(io.LimitReader(zr, maxListBytes+1))
	if err != nil {
		return nil, err
	}
	if len(out) > maxListBytes {
		return nil, errors.New("over 4 MiB")
	}
	return out, nil
}

// trackingBody tells whether the transport ever read the request body (then
// the request may have reached the backend and must not be sent again), and
// never closes the client's body (it is needed again when the request is held).
type trackingBody struct {
	r    io.Reader
	read atomic.Bool
}

func (t *trackingBody) Read(p []byte) (int, error) {
	t.read.Store(true)
	return t.r.Read(p)
}

func (t *trackingBody) Close() error { return nil }

func (t *trackingBody) touched() bool { return t != nil && t.read.Load() }

// captureBody copies a list answer while it passes and hands it over when it
// ended complete (io.EOF) within maxListBytes.
type captureBody struct {
	io.ReadCloser
	buf  bytes.Buffer
	over bool
	once sync.Once
	done func([]byte)
}

func (c *captureBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if !c.over {
		if c.buf.Len()+n > maxListBytes {
			c.over = true
			c.buf = bytes.Buffer{}
		} else {
			c.buf.Write(p[:n])
		}
	}
	if errors.Is(err, io.EOF) && !c.over {
		c.once.Do(func() { c.done(bytes.Clone(c.buf.Bytes())) })
	}
	return n, err
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

func passOutcome(a *attempt, ok Outcome) Outcome {
	if a.outcome != "" {
		return a.outcome
	}
	return ok
}

// heldBody is a held request's body, read into memory.
type heldBody struct{ data []byte }

// admit counts r as held, reads its body within the bounds and queues it. On
// refusal it returns the status, code and message to answer (nothing queued,
// nothing reserved).
func (g *Gate) admit(w http.ResponseWriter, r *http.Request, b *backend, arrived time.Time) (*heldReq, int, string, string) {
	g.mu.Lock()
	if g.heldCount >= g.cfg.MaxHeld {
		st, reason := b.state, b.reason
		g.mu.Unlock()
		return nil, http.StatusServiceUnavailable, codeTooMany, fmt.Sprintf(
			"gate: backend %q is %s (%s) and the gate already holds %d requests (--gate.max-held); try again once it is up",
			b.name, st, reasonOr(reason), g.cfg.MaxHeld)
	}
	g.heldCount++
	b.reading++
	g.mu.Unlock()
	b.kickProbe()
	g.notify()

	hr := &heldReq{arrived: arrived, ready: make(chan struct{})}
	hr.body, hr.err = g.readHeld(w, r, b, hr, arrived.Add(g.cfg.HoldTimeout))

	g.mu.Lock()
	b.reading--
	if hr.err != nil {
		g.heldCount--
		g.freeLocked(b, hr)
		st, reason := b.state, b.reason
		g.mu.Unlock()
		if errors.Is(hr.err, errTooLarge) {
			return nil, http.StatusServiceUnavailable, codeTooLarge, fmt.Sprintf(
				"gate: backend %q is %s (%s) and this request's body would take the held bodies over %d bytes (--gate.max-held-bytes); try again once it is up",
				b.name, st, reasonOr(reason), g.cfg.MaxHeldBytes)
		}
		return nil, http.StatusBadRequest, codeProxy, fmt.Sprintf("gate: reading the request body: %v", hr.err)
	}
	hr.elem = b.queue.PushBack(hr)
	g.pump(b)
	g.mu.Unlock()
	return hr, 0, "", ""
}

var errTooLarge = errors.New("held bodies over --gate.max-held-bytes")

// readHeld reads the body of a request to hold, reserving its bytes as they
// come (g.mu not held).
func (g *Gate) readHeld(w http.ResponseWriter, r *http.Request, b *backend, hr *heldReq, deadline time.Time) (*heldBody, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	// A client that stalls mid-body must not outlive the hold timeout. The
	// deadline is lifted once the body is in (the server's read that notices a
	// client going away runs under it). Writers without deadlines: no bound.
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(deadline) == nil {
		defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	}
	reserve := func(n int64) bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.heldBytes+n > g.cfg.MaxHeldBytes {
			return false
		}
		g.heldBytes += n
		b.heldBytes += n
		hr.bytes += n
		return true
	}
	if r.ContentLength > 0 {
		if !reserve(r.ContentLength) {
			return nil, errTooLarge
		}
		buf := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			return nil, err
		}
		return &heldBody{data: buf}, nil
	}
	var buf bytes.Buffer
	chunk := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(chunk)
		if n > 0 {
			if !reserve(int64(n)) {
				return nil, errTooLarge
			}
			buf.Write(chunk[:n])
		}
		if errors.Is(err, io.EOF) {
			return &heldBody{data: buf.Bytes()}, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// freeLocked gives back the bytes of hr's body (once; g.mu held).
func (g *Gate) freeLocked(b *backend, hr *heldReq) {
	g.heldBytes -= hr.bytes
	b.heldBytes -= hr.bytes
	hr.bytes = 0
}

// freeOnEOF calls free once the transport has read the whole body.
type freeOnEOF struct {
	r    *bytes.Reader
	once sync.Once
	free func()
}

func (f *freeOnEOF) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	// A reader that wraps this one (a LimitReader) may stop at the length
	// and never ask for the EOF: the last byte read is the end too.
	if errors.Is(err, io.EOF) || f.r.Len() == 0 {
		f.once.Do(f.free)
	}
	return n, err
}

func reasonOr(reason string) string {
	if reason == "" {
		return "not seen yet"
	}
	return reason
}

func holdTimeoutMessage(name string, st State, reason string, waited time.Duration) string {
	return fmt.Sprintf("gate: backend %q did not become ready within %s (--gate.hold-timeout): it was %s, last seen: %s; the request was not sent",
		name, waited, st, reasonOr(reason))
}
