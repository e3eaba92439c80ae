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
}

// reader is the body for the next attempt.
func (rb *requestBody) reader(r *http.Request) io.Reader {
	switch {
	case rb.none:
		return nil
	case rb.live:
		return r.Body
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
	var model, conversation string
	if b.pool != nil && r.Method == http.MethodPost {
		var first string
		switch {
		case body.live:
			// Read the beginning for the choice, and put it back in front of
			// the rest (r.Body stays the client's body for the transport's
			// recording).
			p, kept := peekBody(r.Body)
			r.Body = replayBody(bytes.NewReader(kept), r.Body)
			model, first = p.Model, p.FirstUser
		case body.held != nil:
			p, _ := peekBody(body.held.reader(func() {})) // the chunks stay: this reads a copy's start
			model, first = p.Model, p.FirstUser
		}
		conversation = conversationKey(r.Header, first)
	}
	var tried map[*replica]bool
	resets := 0
	for {
		var rep *replica
		if b.pool != nil {
			g.mu.Lock()
			rep = g.choose(b, model, conversation, tried)
			g.mu.Unlock()
			if rep == nil {
				return &attempt{b: b, rel: rel, retry: true, reason: "no replica takes requests"}
			}
		}
		a := g.passToReplica(w, r, b, rep, rel, body.reader(r))
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

// passToReplica is passTo that ends rep's in-flight count however the pass
// ends: a stream cut mid-answer (its client gone, its replica broken) aborts
// the handler with http.ErrAbortHandler, which must not leave the replica
// counted busy (to the balancer, the peers and its drain) for ever.
func (g *Gate) passToReplica(w http.ResponseWriter, r *http.Request, b *backend, rep *replica, rel *url.URL, body io.Reader) (a *attempt) {
	if rep != nil {
		defer func() {
			g.mu.Lock()
			rep.inFlight--
			if a != nil && a.retry && !a.reset {
				rep.state, rep.reason = StateAsleep, a.reason
				rep.refused++
			}
			g.mu.Unlock()
		}()
	}
	return g.passTo(w, r, b, rep, rel, body)
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

// neverReached says whether a request that failed with err before any
// answer cannot have been read whole by the server:
//   - its write failed: the server closed or reset the connection before the
//     last byte was sent (a kept-alive connection the server had closed, or
//     a new one it reset). When the reset reaches the transport's reader
//     first, the transport closes the connection and its writer reports a
//     write on a closed connection;
//   - on a new connection, a reset: a server whose listen backlog overflowed
//     resets connections it never read (issue 23).
//
// A reset of a kept-alive connection after the request was written may come
// from a server that read it and failed: that one is not sent again.
func neverReached(err error, reused bool) bool {
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
