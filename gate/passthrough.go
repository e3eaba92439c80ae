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

// NewTransport returns the transport the gate uses when Config.Transport is
// nil: a clone of http.DefaultTransport with no response-header timeout (Ollama
// sends no header until the model is loaded), a 3 s dial timeout (a dial that
// fails marks the backend asleep), keep-alives with idle connections kept per
// backend (256, so that a released burst reuses its connections), HTTP/1.1 only (what Ollama speaks), no transparent compression (the
// client's Accept-Encoding passes through unchanged) and a 1 s
// Expect: 100-continue timeout.
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
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
