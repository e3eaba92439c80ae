package gate

import (
	"bytes"
	"container/list"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"
)

type heldReq struct {
	arrived  time.Time
	bytes    int64
	ready    chan struct{} // closed at release
	released bool
	observed bool // its hold time is in the histogram (once, even if it goes back to the queue)
	elem     *list.Element
	body     *heldBody // nil: no body
	err      error     // reading the body failed
}

// holdAndDeliver holds r until b is up, then delivers it (again, if b went
// back to sleep before a byte was sent), or answers why it was not sent. What
// it counts is in d, for serveDemand to give back.
func (g *Gate) holdAndDeliver(w http.ResponseWriter, r *http.Request, b *backend, rel *url.URL, d *demandReq) {
	arrived := time.Now()
	deadline := arrived.Add(g.cfg.HoldTimeout)
	var status int
	var code, msg string
	d.hr, status, code, msg = g.admit(w, r, b, arrived)
	if status != 0 {
		d.outcome = OutcomeRejected
		if status == http.StatusBadRequest || r.Context().Err() != nil {
			d.outcome = OutcomeClientGone // it did not send its whole body
		}
		if r.Context().Err() == nil {
			writeError(w, rel.Path, status, code, msg)
		}
		return
	}
	body := d.hr.body

	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		var gone bool
		select {
		case <-d.hr.ready:
		case <-r.Context().Done():
			gone = true
		case <-timer.C:
		}
		g.mu.Lock()
		if !d.hr.released {
			// Gone or timed out while held: it stops counting now and is never sent.
			b.queue.Remove(d.hr.elem)
			d.hr.elem = nil
			g.heldCount--
			if !d.hr.observed {
				b.hold.observe(time.Since(arrived))
			}
			st, reason := b.state, b.reason
			g.mu.Unlock()
			if gone {
				d.outcome = OutcomeClientGone
				return
			}
			d.outcome = OutcomeHoldTimeout
			writeError(w, rel.Path, http.StatusGatewayTimeout, codeHoldTimeout, holdTimeoutMessage(b.name, st, reason, g.cfg.HoldTimeout))
			return
		}
		// Released (pump moved it from held to in flight).
		d.inFlight, d.releasing = true, true
		g.mu.Unlock()

		var rd io.Reader
		if body != nil {
			rd = &freeOnEOF{r: bytes.NewReader(body.data), free: func() {
				g.mu.Lock()
				g.freeLocked(b, d.hr)
				g.mu.Unlock()
			}}
		}
		a := g.pass(w, r, b, rel, rd, false)
		if !a.retry {
			d.outcome = passOutcome(a, OutcomeDelivered)
			return
		}
		// Asleep again before a byte was sent: back to the front of the queue.
		g.mu.Lock()
		b.inFlight--
		b.releasing--
		d.inFlight, d.releasing = false, false
		d.hr.released = false
		d.hr.ready = make(chan struct{})
		d.hr.elem = b.queue.PushFront(d.hr)
		g.heldCount++
		g.setState(b, StateAsleep, a.reason)
		g.mu.Unlock()
		b.kickProbe()
		g.notify()
	}
}

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

var errTooLarge = errors.New("held bodies over --gate.max-held-bytes")

// heldBody is a held request's body, read into memory.
type heldBody struct{ data []byte }

// pump releases held requests of b in arrival order while it is up, at most
// ReleaseConcurrency in flight at once (g.mu held).
func (g *Gate) pump(b *backend) {
	for b.state == StateUp && b.releasing < g.cfg.ReleaseConcurrency {
		e := b.queue.Front()
		if e == nil {
			return
		}
		hr := b.queue.Remove(e).(*heldReq)
		hr.elem, hr.released = nil, true
		g.heldCount--
		b.inFlight++
		b.releasing++
		if !hr.observed {
			hr.observed = true
			b.hold.observe(time.Since(hr.arrived))
		}
		close(hr.ready)
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

func holdTimeoutMessage(name string, st State, reason string, waited time.Duration) string {
	return fmt.Sprintf("gate: backend %q did not become ready within %s (--gate.hold-timeout): it was %s, last seen: %s; the request was not sent",
		name, waited, st, reasonOr(reason))
}
