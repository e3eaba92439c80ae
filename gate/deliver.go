package gate

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"time"
)

// Retrying a request that cannot have reached a server.
const (
	// replayLimit bounds the bytes of a streaming body the gate keeps so that
	// it can send it again after a reset; a larger body is not retried.
	replayLimit = 256 << 10
	// resetTries bounds the tries of a request whose new connections are
	// reset before any answer (a listen backlog that overflows).
	resetTries = 5
	resetPause = 50 * time.Millisecond // doubled at each try, with jitter
)

// requestBody is a demand request's body, given again for another attempt.
type requestBody struct {
	held []byte // a held body, in memory: replayed whole
	free func() // called once a held body was read to its end
	live *replayBody
	none bool // no body
}

// reader is the body for the next attempt.
func (rb *requestBody) reader() io.Reader {
	switch {
	case rb.none:
		return nil
	case rb.live != nil:
		return rb.live.view()
	}
	return &freeOnEOF{r: bytes.NewReader(rb.held), free: rb.free}
}

// rewind says whether the body can be sent again from its start.
func (rb *requestBody) rewind() bool {
	if rb.live == nil {
		return true
	}
	return rb.live.rewind()
}

// replayBody passes a client's body on and keeps what it passed, up to
// replayLimit, so that it can be given again. An attempt's transport may
// still be reading when the next attempt starts (its writer outlives a failed
// round trip): each attempt reads through its own view, and a view of an
// earlier attempt reads nothing once the body was rewound.
type replayBody struct {
	mu   sync.Mutex // held across a read of src, so that rewind sees every byte read
	src  io.Reader
	kept bytes.Buffer
	over bool
	gen  int // attempts so far
}

// view is what one attempt reads.
func (rp *replayBody) view() io.Reader {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return &replayView{rp: rp, gen: rp.gen}
}

type replayView struct {
	rp  *replayBody
	gen int
}

var errStaleAttempt = errors.New("gate: the request body was given to another attempt")

func (v *replayView) Read(p []byte) (int, error) {
	rp := v.rp
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if v.gen != rp.gen {
		return 0, errStaleAttempt
	}
	n, err := rp.src.Read(p)
	if !rp.over {
		if rp.kept.Len()+n > replayLimit {
			rp.over, rp.kept = true, bytes.Buffer{}
		} else {
			rp.kept.Write(p[:n])
		}
	}
	return n, err
}

func (rp *replayBody) rewind() bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.over {
		return false
	}
	rp.gen++
	again := bytes.Clone(rp.kept.Bytes())
	rp.kept.Reset()
	rp.src = io.MultiReader(bytes.NewReader(again), rp.src)
	return true
}

// liveBody is the body of a request passed through as it arrives.
func liveBody(r *http.Request) *requestBody {
	if r.Body == nil || r.Body == http.NoBody {
		return &requestBody{none: true}
	}
	var src io.Reader = r.Body
	if r.ContentLength > 0 {
		// The transport reads once more past the end to check the length;
		// that read must not reach the client's body (see pass).
		src = io.LimitReader(src, r.ContentLength)
	}
	return &requestBody{live: &replayBody{src: src}}
}

// heldBodyOf is the body of a held request.
func heldBodyOf(hb *heldBody, free func()) *requestBody {
	if hb == nil {
		return &requestBody{none: true}
	}
	return &requestBody{held: hb.data, free: free}
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
		case body.live != nil:
			var p peeked
			p, body.live.src = peekBody(body.live.src)
			model, first = p.Model, p.FirstUser
		case body.held != nil:
			p := peekBytes(body.held)
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
		a := g.passTo(w, r, b, rep, rel, body.reader())
		if rep != nil {
			g.mu.Lock()
			rep.inFlight--
			if a.retry && !a.reset {
				rep.state, rep.reason = StateAsleep, a.reason
				rep.refused++
			}
			g.mu.Unlock()
		}
		if !a.retry {
			return a
		}
		if a.reset {
			resets++
			again := resets < resetTries && body.rewind()
			if !again {
				a.retry = false
				a.outcome = OutcomeBackendError
				writeError(w, rel.Path, http.StatusBadGateway, codeProxy, resetMessage(b.name, resets, resets < resetTries))
				return a
			}
			if !pause(r, resets) {
				a.retry, a.outcome = false, OutcomeClientGone
				return a
			}
			continue
		}
		if rep == nil {
			return a // the backend refused: the caller holds the request
		}
		if tried == nil {
			tried = map[*replica]bool{}
		}
		tried[rep] = true
	}
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
