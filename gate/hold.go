package gate

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
		var gone, drained bool
		select {
		case <-d.hr.ready:
		case <-r.Context().Done():
			gone = true
		case <-g.drain.ended.Done():
			drained = true
		case <-timer.C:
		}
		g.mu.Lock()
		if !d.hr.released && !gone && !drained {
			if left := g.holdLeft(b, arrived); left > 0 {
				// Its backend is up (or was, within the hold timeout): it
				// waits for a release slot, not for the backend.
				g.mu.Unlock()
				timer.Reset(left)
				continue
			}
		}
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
			if drained {
				d.outcome = OutcomeShutdown
				g.shuttingDown(w, b, rel.Path)
				return
			}
			d.outcome = OutcomeHoldTimeout
			writeError(w, rel.Path, http.StatusGatewayTimeout, codeHoldTimeout, holdTimeoutMessage(b.name, st, reason, g.cfg.HoldTimeout))
			return
		}
		// Released (pump moved it from held to in flight).
		d.inFlight, d.releasing = true, true
		if body == nil {
			g.freeLocked(b, d.hr) // its headers: a body's bytes go once it is sent
		}
		g.mu.Unlock()

		var rd io.Reader
		if body != nil {
			rd = body.reader(func() {
				g.mu.Lock()
				g.freeLocked(b, d.hr)
				g.mu.Unlock()
			})
		}
		a := g.pass(w, r, b, rel, rd, false)
		if !a.retry {
			d.outcome = passOutcome(a, OutcomeDelivered)
			return
		}
		// Asleep again before the request reached it: back to the front of
		// the queue. A hop may have taken the whole body, which gave its bytes
		// back: they are in memory again (counted even past the bound, as they
		// were never let go).
		g.mu.Lock()
		if body != nil && d.hr.bytes == 0 {
			n := body.size
			d.hr.bytes, g.heldBytes, b.heldBytes = n, g.heldBytes+n, b.heldBytes+n
		}
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
	hr := &heldReq{arrived: arrived, ready: make(chan struct{})}
	g.mu.Lock()
	if g.heldCount >= g.cfg.MaxHeld {
		st, reason := b.state, b.reason
		g.mu.Unlock()
		return nil, http.StatusServiceUnavailable, codeTooMany, fmt.Sprintf(
			"gate: backend %q is %s (%s) and the gate already holds %d requests (--gate.max-held); try again once it is up",
			b.name, st, reasonOr(reason), g.cfg.MaxHeld)
	}
	if !g.reserveLocked(b, hr, heldHeaderBytes(r)) {
		st, reason := b.state, b.reason
		g.mu.Unlock()
		return nil, http.StatusServiceUnavailable, codeTooLarge, g.tooLargeMessage(b, st, reason)
	}
	g.heldCount++
	b.reading++
	g.mu.Unlock()
	b.kickProbe()
	g.notify()

	hr.body, hr.err = g.readHeld(w, r, b, hr, arrived.Add(g.cfg.HoldTimeout))

	g.mu.Lock()
	b.reading--
	if hr.err != nil {
		g.heldCount--
		g.freeLocked(b, hr)
		st, reason := b.state, b.reason
		g.mu.Unlock()
		if errors.Is(hr.err, errTooLarge) {
			return nil, http.StatusServiceUnavailable, codeTooLarge, g.tooLargeMessage(b, st, reason)
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
		return g.reserveLocked(b, hr, n)
	}
	length := r.ContentLength // -1: unknown (chunked), each read reserved as it comes
	if length > 0 && !reserve(length) {
		return nil, errTooLarge
	}
	return readHeldBody(r.Body, length, reserve)
}

// heldHeaderBytes is what r's request line and headers take as they were
// sent. They stay in memory while r is held, up to the server's 1 MiB
// MaxHeaderBytes a request, so they count in --gate.max-held-bytes like its
// body: a bound on bodies alone let 150 requests with 900 KiB of headers take
// 190 MiB past --gate.max-held-bytes=1KiB (issue 23).
func heldHeaderBytes(r *http.Request) int64 {
	n := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + 2
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return int64(n)
}

// reserveLocked counts n more bytes of hr within --gate.max-held-bytes, or
// reports that they do not fit (g.mu held).
func (g *Gate) reserveLocked(b *backend, hr *heldReq, n int64) bool {
	if g.heldBytes+n > g.cfg.MaxHeldBytes {
		return false
	}
	g.heldBytes += n
	b.heldBytes += n
	hr.bytes += n
	return true
}

func (g *Gate) tooLargeMessage(b *backend, st State, reason string) string {
	return fmt.Sprintf("gate: backend %q is %s (%s) and this request's headers and body would take the held requests over %d bytes (--gate.max-held-bytes); try again once it is up",
		b.name, st, reasonOr(reason), g.cfg.MaxHeldBytes)
}

var errTooLarge = errors.New("held requests over --gate.max-held-bytes")

// pump releases held requests of b in arrival order while it is up, at most
// ReleaseConcurrency in flight at once (g.mu held).
func (g *Gate) pump(b *backend) {
	for b.sends() && b.releasing < g.cfg.ReleaseConcurrency {
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

// reserveBytes counts n bytes of a body in memory for b within
// --gate.max-held-bytes; releaseBytes gives them back (g.mu not held).
func (g *Gate) reserveBytes(b *backend, n int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.heldBytes+n > g.cfg.MaxHeldBytes {
		return false
	}
	g.heldBytes += n
	b.heldBytes += n
	return true
}

func (g *Gate) releaseBytes(b *backend, n int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.heldBytes -= n
	b.heldBytes -= n
}

// freeLocked gives back the bytes of hr's body (once; g.mu held).
func (g *Gate) freeLocked(b *backend, hr *heldReq) {
	g.heldBytes -= hr.bytes
	b.heldBytes -= hr.bytes
	hr.bytes = 0
}

// holdLeft is how much longer a request held since arrived may wait for b
// (g.mu held). The hold timeout bounds the wait for the backend to become
// ready, not the wait for a release slot behind a slow burst: it runs from
// the request's arrival or from the moment b was last up, whichever is later,
// and not at all while b is up (then the next look is a hold timeout away).
func (g *Gate) holdLeft(b *backend, arrived time.Time) time.Duration {
	if b.state == StateUp {
		return g.cfg.HoldTimeout
	}
	from := arrived
	if b.upUntil.After(from) {
		from = b.upUntil
	}
	return time.Until(from.Add(g.cfg.HoldTimeout))
}

func holdTimeoutMessage(name string, st State, reason string, waited time.Duration) string {
	return fmt.Sprintf("gate: backend %q did not become ready within %s (--gate.hold-timeout): it was %s, last seen: %s; the request was not sent",
		name, waited, st, reasonOr(reason))
}
