package gate

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
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
	capture bool            // a list GET: remember a 200 answer
	client  context.Context // the client's request context
	rep     *replica        // the replica of a pool it goes to; nil: b's URL
	// set by the hooks:
	retry     bool      // the request did not reach the backend (a failed dial, a hop's "no backend" answer, a connection closed before it was read): send it again or hold it
	reset     bool      // with retry: the connection was closed before the request was read (send it again after a pause)
	reason    string    // what the dial or the hop said
	replay    *heldBody // a retried direct pass: what the transport already took of the client's body
	outcome   Outcome
	response  bool          // the backend answered with a status line
	reused    bool          // the transport sent it on a kept-alive connection
	retryable bool          // deliver can send it again after its connection was closed unread
	inMemory  *bytes.Reader // the whole body, in memory (a pool's peeked body): given to the transport as it is
	// To a replica: the model of a chat or completion with a message, whose
	// 2xx header comes with its first token; "" for any other request.
	answerModel string
	answering   bool // set by the hooks: its replica streams it (in rep.streams)
}

type attemptKey struct{}

// forwardHeaders are removed by ReverseProxy's Rewrite mode; the gate puts
// back the client's own values so the request reaches the backend unchanged.
var forwardHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// pass sends r to b once. body nil: r carries no body.
func (g *Gate) pass(w http.ResponseWriter, r *http.Request, b *backend, rel *url.URL, body io.Reader, capture bool) *attempt {
	return g.send(w, r, &attempt{b: b, rel: rel, capture: capture}, body)
}

func (g *Gate) send(w http.ResponseWriter, r *http.Request, a *attempt, body io.Reader) *attempt {
	a.client = r.Context()
	// The end of a drain (EndDrain) cancels what is still in flight.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(g.drain.ended, cancel)()
	ctx = context.WithValue(ctx, attemptKey{}, a)
	// Whether the connection is new decides whether a reset may be retried.
	trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) { a.reused = ci.Reused }}
	if a.inMemory, _ = body.(*bytes.Reader); a.inMemory != nil {
		// A pool's body that the peek read whole goes to the transport as it
		// is (wholeBodyTransport), not through a.body, which then cannot see
		// it read: it is read right after the header is written, and from
		// then on the request may have reached the backend (touched).
		trace.WroteHeaders = func() { a.body.read.Store(true) }
	}
	ctx = httptrace.WithClientTrace(ctx, trace)
	out := r.WithContext(ctx)
	if body != nil {
		if body == io.Reader(r.Body) && r.ContentLength > 0 {
			// The transport reads once more past the end to check the length;
			// that read must not reach the client's body (see below).
			body = io.LimitReader(body, r.ContentLength)
		}
		a.body = &trackingBody{r: body}
		if body != nil && r.Body != nil && isClientBody(body, r) {
			// The client's own body: keep what the transport takes of it until
			// the status line shows that the backend got it (a hop may answer
			// instead), within the held-bytes budget.
			a.body.record(func(n int) bool { return g.reserveBytes(a.b, int64(n)) }, func(n int) { g.releaseBytes(a.b, int64(n)) })
		}
		out.Body = a.body
	}
	defer a.body.stopRecording()
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

func passOutcome(a *attempt, ok Outcome) Outcome {
	if a.outcome != "" {
		return a.outcome
	}
	return ok
}

func (g *Gate) rewrite(pr *httputil.ProxyRequest) {
	a := pr.In.Context().Value(attemptKey{}).(*attempt)
	pr.Out.URL.Path, pr.Out.URL.RawPath = a.rel.Path, a.rel.RawPath
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery // unchanged, even where Go would drop a parameter
	target := a.b.cfg.URL
	if a.rep != nil {
		target = a.rep.url
	}
	pr.SetURL(target) // also makes Host the backend's
	for _, h := range forwardHeaders {
		if v, ok := pr.In.Header[h]; ok {
			pr.Out.Header[h] = v
		}
	}
}

func (g *Gate) proxyError(w http.ResponseWriter, out *http.Request, err error) {
	a := out.Context().Value(attemptKey{}).(*attempt)
	if out.Context().Err() != nil {
		if a.client.Err() == nil && g.drain.ended.Err() != nil {
			a.outcome = OutcomeShutdown
			cutByDrain(w, a.b, a.rel.Path)
			return
		}
		a.outcome = OutcomeClientGone
		return
	}
	if reason, ok := dialFailure(err); ok && !a.body.touched() {
		a.retry, a.reason = true, reason
		return
	}
	if reason, ok := tlsFailure(err); ok {
		// Nothing was sent, and waiting does not fix it: answered at once.
		g.mu.Lock()
		g.setState(a.b, StateMisconfigured, reason)
		g.mu.Unlock()
		a.body.drain()
		a.outcome = OutcomeBackendError
		writeError(w, a.rel.Path, http.StatusBadGateway, codeTLS, fmt.Sprintf(
			"gate: backend %q is misconfigured: %s; the request was not sent (fix the backend's certificate, the gate's CA bundle or the URL's scheme)", a.b.name, reason))
		return
	}
	var hop *hopError
	if errors.As(err, &hop) {
		// The hop answered for the backend: the request never reached it.
		if rec, ok := a.body.takeReplay(); ok {
			a.retry, a.reason, a.replay = true, hop.reason, rec
			return
		}
		// The hop took more of the body than the gate kept: it cannot be sent
		// again from here. The backend is asleep all the same.
		g.mu.Lock()
		g.setState(a.b, StateAsleep, hop.reason)
		g.mu.Unlock()
		a.b.kickProbe()
		a.body.drain()
		a.outcome = OutcomeBackendError
		writeError(w, a.rel.Path, http.StatusServiceUnavailable, codeHop, fmt.Sprintf(
			"gate: backend %q is asleep (%s); the request did not reach it, and its body was already sent past what the gate keeps (--gate.max-held-bytes), so it was not held: send it again",
			a.b.name, hop.reason))
		return
	}
	if a.retryable && !a.response && neverReached(err, a.reused) {
		// Closed before the request was read: deliver sends it again, with
		// what the transport took of the client's body put back.
		if rec, ok := a.body.takeReplay(); ok {
			a.retry, a.reset, a.replay, a.reason = true, true, rec, "connection closed before the request was read"
			return
		}
	}
	a.outcome = OutcomeBackendError
	level.Warn(g.logger).Log("msg", "backend failed", "backend", a.b.name, "path", a.rel.Path, "err", err)
	writeError(w, a.rel.Path, http.StatusBadGateway, codeProxy,
		fmt.Sprintf("gate: backend %q failed to answer: %v", a.b.name, err))
}

func (g *Gate) modifyResponse(res *http.Response) error {
	a := res.Request.Context().Value(attemptKey{}).(*attempt)
	if reason, ok := hopAnswer(res); ok {
		return &hopError{reason: reason}
	}
	a.body.stopRecording() // the backend answered: its body is its own now
	a.response = true
	g.mu.Lock()
	if a.rep != nil && a.rep.state != StateUp {
		a.rep.state, a.rep.reason = StateUp, ""
	}
	// A streamed answer (no length: Ollama's NDJSON, SSE) shows the slot it
	// holds; an answer of known length (stream false) comes whole at its end.
	if a.rep != nil && a.answerModel != "" && res.StatusCode/100 == 2 && res.ContentLength < 0 {
		a.answering = true
		res.Body = g.answerStarted(a.rep, a, res.Body)
	}
	if a.b.state != StateUp {
		// Any status line proves the backend serves HTTP.
		g.setState(a.b, StateUp, "")
	}
	g.mu.Unlock()
	g.loadHeaders(res.Request.Context(), a.b, res.StatusCode)
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
//
// On a direct pass it also records what the transport takes of the client's
// body, until the status line comes: a hop's "no backend" answer then lets
// the gate hold the request with its whole body (the recorded part, then the
// rest still unread).
type trackingBody struct {
	r    io.Reader
	read atomic.Bool

	mu        sync.Mutex
	cond      sync.Cond // signalled when a Read ends
	reading   bool      // a Read is under way
	recording bool
	frozen    bool     // the replay was taken: the transport gets no more
	over      bool     // over the budget: no replay
	rec       heldBody // in chunks: no slice grown (and copied) by append
	reserve   func(n int) bool
	release   func(n int)
}

// errHopAnswered stops the transport from sending more of a body whose
// request a hop answered.
var errHopAnswered = errors.New("gate: a proxy in front of the backend answered; the body is kept to be sent again")

func (t *trackingBody) record(reserve func(int) bool, release func(int)) {
	t.cond.L = &t.mu
	t.recording, t.reserve, t.release = true, reserve, release
}

func (t *trackingBody) Read(p []byte) (int, error) {
	t.read.Store(true)
	if t.reserve == nil {
		return t.r.Read(p)
	}
	t.mu.Lock()
	if t.frozen {
		t.mu.Unlock()
		return 0, errHopAnswered
	}
	t.reading = true
	t.mu.Unlock()
	n, err := t.r.Read(p)
	t.mu.Lock()
	defer t.mu.Unlock()
	if n > 0 && t.recording && !t.over {
		if t.reserve(n) {
			t.rec.write(p[:n])
		} else {
			t.over = true
			t.release(int(t.rec.size))
			t.rec = heldBody{}
		}
	}
	t.reading = false
	t.cond.Broadcast()
	return n, err
}

// stopRecording forgets the recorded body once the backend answered (nil-safe).
func (t *trackingBody) stopRecording() {
	if t == nil || t.reserve == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.recording && !t.frozen {
		t.recording = false
		t.release(int(t.rec.size))
		t.rec = heldBody{}
	}
}

// takeReplay stops the transport reading and returns what it took of the
// client's body; false when that is more than was kept. A body that is not
// the client's (a held one, in memory) or none is always sent again whole.
func (t *trackingBody) takeReplay() (*heldBody, bool) {
	if t == nil || t.reserve == nil {
		return nil, true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.frozen = true
	for t.reading {
		t.cond.Wait()
	}
	if !t.recording || t.over {
		return nil, false
	}
	t.recording = false
	rec := t.rec
	t.release(int(rec.size)) // held again from here, within the bound (admit)
	t.rec = heldBody{}
	return &rec, true
}

// drain reads what is left of a small body that was never sent, inside the
// handler: with full duplex on, Go's server would otherwise read it after
// the handler returned, alongside its own read of the next request, and
// panic ("invalid concurrent Body.Read call"). Nil-safe; large bodies are
// left to the server, which then closes the connection.
func (t *trackingBody) drain() {
	if t != nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(t.r, 256<<10))
	}
}

func (t *trackingBody) Close() error { return nil }

func (t *trackingBody) touched() bool { return t != nil && t.read.Load() }

// isClientBody tells whether body reads the client's own request body
// (possibly through pass's LimitReader), not a held copy.
func isClientBody(body io.Reader, r *http.Request) bool {
	if body == io.Reader(r.Body) {
		return true
	}
	lr, ok := body.(*io.LimitedReader)
	return ok && lr.R == io.Reader(r.Body)
}

// hopError is a hop's "no backend" answer, returned by modifyResponse so that
// the proxy hands it to proxyError instead of passing it on.
type hopError struct{ reason string }

func (e *hopError) Error() string { return e.reason }

// replayBody gives the whole client body again: what was already taken of it
// (by a hop's pass, or to choose a replica), then the rest.
func replayBody(taken io.Reader, rest io.ReadCloser) io.ReadCloser {
	return &rejoinedBody{Reader: io.MultiReader(taken, rest), Closer: rest}
}

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

// NewTransport returns the transport the gate uses when Config.Transport is
// nil: a clone of http.DefaultTransport with no response-header timeout (Ollama
// sends no header until the model is loaded), a 3 s dial timeout (a dial that
// fails marks the backend asleep), keep-alives with idle connections kept per
// backend (256, so that a released burst reuses its connections), HTTP/1.1 only (what Ollama speaks), no transparent compression (the
// client's Accept-Encoding passes through unchanged), a 1 s
// Expect: 100-continue timeout, and no proxy: HTTP_PROXY and HTTPS_PROXY do
// not apply to backends (or peers). The gate must see a sleeping backend
// refuse its dial; a forward proxy would accept every dial and answer for the
// backend instead, and the backends that scale to zero are in the cluster.
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	// A pooled connection to a pod whose node vanished stays open and
	// silent: keepalive finds an idle one within about 30 s (Go's default
	// takes over 2 minutes), and TCP_USER_TIMEOUT (Linux) ends one a request
	// was written on (setUserTimeout).
	t.DialContext = (&net.Dialer{
		Timeout:         dialTimeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3},
		Control:         setUserTimeout,
	}).DialContext
	t.ResponseHeaderTimeout = 0
	t.MaxIdleConns = 0
	t.MaxIdleConnsPerHost = DefaultReleaseConcurrency
	t.IdleConnTimeout = 90 * time.Second
	t.ExpectContinueTimeout = time.Second
	t.DisableCompression = true
	t.ForceAttemptHTTP2 = false
	p := new(http.Protocols)
	p.SetHTTP1(true)
	t.Protocols = p
	return t
}

// copyBuffers are ReverseProxy's 32 KiB copy buffers, shared instead of one
// allocated per request.
var copyBuffers = &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte { return *p.pool.Get().(*[]byte) }

func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }

// wholeBodyTransport gives the transport an attempt's body that is whole in
// memory as the *bytes.Reader it is. ReverseProxy wraps every request body in
// a reader of its own, and for a reader it does not know Go's transport
// writes the header on its own first, then the body: two writes, where one
// carries both for a body it knows to be in memory. The body is the
// attempt's own copy, so nothing of the client's connection is read from it.
type wholeBodyTransport struct{ http.RoundTripper }

func (t wholeBodyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if a, _ := req.Context().Value(attemptKey{}).(*attempt); a != nil && a.inMemory != nil && req.Body != nil {
		whole := *req // a RoundTripper must not change the request it was given
		whole.Body = io.NopCloser(a.inMemory)
		req = &whole
	}
	return t.RoundTripper.RoundTrip(req)
}
