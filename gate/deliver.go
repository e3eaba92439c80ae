package gate

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"
)

// Retrying a request that cannot have reached a server.
const (
	// resetTries bounds the tries of a request whose connections are closed
	// before the request was read (a listen backlog that overflows).
	resetTries = 5
	resetPause = 50 * time.Millisecond // doubled at each try, with jitter
)

// requestBody is a demand request's body, given again for another attempt:
// a held one from memory; a live one (the client's, r.Body) as the transport
// recorded it (trackingBody.record), put back in front of the rest.
type requestBody struct {
	held *heldBody // a held body, in memory: replayed whole
	free func()    // called once a held body was read to its end
	live bool      // the client's body, r.Body
	none bool      // no body
	read []byte    // not nil: the client's whole body, read by the peek, replayed whole
}

// reader is the body for the next attempt.
func (rb *requestBody) reader(r *http.Request) io.Reader {
	switch {
	case rb.none:
		return nil
	case rb.live:
		return r.Body
	case rb.read != nil:
		return bytes.NewReader(rb.read)
	}
	return rb.held.reader(rb.free)
}

// liveBody is the body of a request passed through as it arrives.
func liveBody(r *http.Request) *requestBody {
	if r.Body == nil || r.Body == http.NoBody {
		return &requestBody{none: true}
	}
	return &requestBody{live: true}
}

// heldBodyOf is the body of a held request.
func heldBodyOf(hb *heldBody, free func()) *requestBody {
	if hb == nil {
		return &requestBody{none: true}
	}
	return &requestBody{held: hb, free: free}
}

// deliver sends r to b, or to one of its replicas for a pool, and sends it
// again (to another replica when there is one) while nothing of it can have
// reached a server: its dial failed, or its new connection was reset before
// any answer. Its attempt has retry set when no server could take it: the
// caller holds it. Counted in b.inFlight by the caller.
func (g *Gate) deliver(w http.ResponseWriter, r *http.Request, b *backend, rel *url.URL, body *requestBody) *attempt {
	var model, conversation, first string
	// A body names the model: POST for generating and reading, DELETE for
	// Ollama's /api/delete.
	if b.pool != nil && (r.Method == http.MethodPost || r.Method == http.MethodDelete) {
		switch {
		case body.live:
			// Read the beginning for the choice, and put it back in front of
			// the rest (r.Body stays the client's body for the transport's
			// recording).
			p, kept, whole := peekBody(r.Body, r.ContentLength)
			r.Body = &peekedBody{read: kept, rest: r.Body}
			model, first = p.Model, p.FirstUser
			if whole {
				// The peek read all of it (a small body comes in one go): every
				// attempt sends it from memory, as a held body's, and nothing of
				// the client's body is left to record for another attempt.
				body = &requestBody{read: kept}
			}
		case body.held != nil:
			p, _, _ := peekBody(body.held.reader(func() {}), body.held.size) // the chunks stay: this reads a copy's start
			model, first = p.Model, p.FirstUser
		}
		conversation = conversationKey(r.Header, first)
	}
	loads := loadPaths[rel.Path] // makes Ollama load model: counts as loaded where it goes
	// An answer that takes one of the replica's slots until it ends (not an
	// embedding, nor a load request without a message, which Ollama answers
	// without a slot): its streaming counts the replica's slots.
	answers := loads && answerPaths[rel.Path] && first != "" && model != ""
	var given *replica // bind=late: the replica whose slot it waited for, counted in flight
	if b.pool != nil && b.pool.bindLate && loads {
		var ended Outcome
		switch given, ended = g.awaitSlot(r, b, model, conversation, loads); ended {
		case OutcomeClientGone:
			return &attempt{b: b, rel: rel, outcome: ended}
		case OutcomeShutdown:
			g.shuttingDown(w, b, rel.Path)
			return &attempt{b: b, rel: rel, outcome: ended}
		}
	}
	var tried map[*replica]bool
	resets := 0
	for {
		var rep *replica
		if given != nil {
			rep, given = given, nil
		} else if b.pool != nil {
			g.mu.Lock()
			rep = g.choose(b, model, conversation, loads, tried)
			g.mu.Unlock()
			if rep == nil {
				return &attempt{b: b, rel: rel, retry: true, reason: "no replica takes requests"}
			}
		}
		loaded := "" // the model the pass counts in rep's belief, and ends there
		if loads {
			loaded = model
		}
		a := g.passToReplica(w, r, b, rep, loaded, answers, rel, body.reader(r))
		if !a.retry {
			return a
		}
		if body.live && a.replay != nil && a.replay.size > 0 {
			// What the transport took of the client's body, in front of the
			// rest: the next attempt (or the hold) sends it whole.
			r.Body = replayBody(a.replay.reader(func() {}), r.Body)
			a.replay = nil
		}
		if a.reset {
			if resets++; resets >= resetTries {
				a.retry = false
				a.outcome = OutcomeBackendError
				writeError(w, rel.Path, http.StatusBadGateway, codeProxy, resetMessage(b.name, resets))
				return a
			}
			if !pause(r, resets) {
				a.retry, a.outcome = false, OutcomeClientGone
				return a
			}
			continue
		}
		if rep == nil {
			return a // the backend refused (or a hop answered for it): the caller holds the request
		}
		if tried == nil {
			tried = map[*replica]bool{}
		}
		tried[rep] = true
	}
}

// passToReplica sends r once to rep, a replica of b's pool (nil: b's URL),
// and ends rep's in-flight count (its answer streaming, and its request for
// model in what the gate believes loaded there) however the pass ends: a
// stream cut mid-answer (its client gone, its replica broken) aborts the
// handler with http.ErrAbortHandler, which must not leave the replica counted
// busy (to the balancer, the peers and its drain) for ever.
func (g *Gate) passToReplica(w http.ResponseWriter, r *http.Request, b *backend, rep *replica, model string, answers bool, rel *url.URL, body io.Reader) (a *attempt) {
	pass := &attempt{b: b, rel: rel, rep: rep, retryable: true}
	if answers {
		pass.answerModel = model
	}
	if rep != nil {
		defer func() {
			g.mu.Lock()
			rep.inFlight--
			if pass.answering {
				g.answerEnded(b, rep, pass)
			}
			if model != "" {
				rep.loaded.Done(model)
			}
			if a != nil && a.retry && !a.reset {
				rep.state, rep.reason = StateAsleep, a.reason
				rep.refused++
			}
			if b.pool.bindLate {
				g.handSlots(b) // its slot, to the oldest request waiting for one
			}
			g.mu.Unlock()
		}()
	}
	return g.send(w, r, pass, body)
}

// pause waits before another try after a reset: a listen backlog drains as
// its server accepts. False when the client went away meanwhile.
func pause(r *http.Request, try int) bool {
	d := resetPause << (try - 1)
	d += time.Duration(rand.Int64N(int64(d))) //nolint:gosec // jitter, not a secret
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// serverClosedIdle is the text of net/http's errServerClosedIdle.
const serverClosedIdle = "http: server closed idle connection"

// neverReached says whether a request that failed with err before any
// answer cannot have been read whole by the server:
//   - its write failed: the server closed or reset the connection before the
//     last byte was sent (a kept-alive connection the server had closed, or
//     a new one it reset). When the reset reaches the transport's reader
//     first, the transport closes the connection and its writer reports a
//     write on a closed connection;
//   - on a new connection, a reset: a server whose listen backlog overflowed
//     resets connections it never read (issue 23);
//   - Go's transport found the kept-alive connection closed by the server
//     before the request was handed to it ("http: server closed idle
//     connection", unexported: golang/go#19943), as at Ollama's shutdown
//     when it scales to zero. The server closed it idle: it read nothing.
//
// A reset of a kept-alive connection after the request was written may come
// from a server that read it and failed: that one is not sent again.
func neverReached(err error, reused bool) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if e.Error() == serverClosedIdle {
			return true
		}
	}
	var op *net.OpError
	for e := err; errors.As(e, &op); e = op.Err {
		if op.Op == "write" {
			return true
		}
	}
	return !reused && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
}

// afterRefusal sets b's state once deliver found no server to take a request
// (g.mu held): a single backend is asleep; a pool takes its replicas' state,
// and is not up while no replica takes requests (so that what is held is not
// released into the same refusal at once).
func (g *Gate) afterRefusal(b *backend, reason string) {
	if b.pool == nil {
		g.setState(b, StateAsleep, reason)
		return
	}
	st, why := g.poolState(b)
	if st == StateUp {
		st, why = StateStarting, reason
	}
	g.setState(b, st, why)
}

// peekedBody is the client's body whole again after the peek read its start:
// what was read, then the rest (replayBody in one allocation, for every
// request to a pool).
type peekedBody struct {
	read []byte
	rest io.ReadCloser
	eof  bool // the rest ended: it is not read again (as io.MultiReader)
}

func (b *peekedBody) Read(p []byte) (int, error) {
	if len(b.read) > 0 {
		n := copy(p, b.read)
		b.read = b.read[n:]
		return n, nil
	}
	if b.eof {
		return 0, io.EOF
	}
	n, err := b.rest.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof = true
	}
	return n, err
}

func (b *peekedBody) Close() error { return b.rest.Close() }
