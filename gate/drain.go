package gate

import (
	"context"
	"fmt"
	"net/http"
)

// A replica that is being stopped (a rollout, a node drain) drains: it keeps
// serving everything while it leaves its Service, delivers what it holds and
// streams, and answers what it could not deliver before it exits. See
// docs/gate.md, "Stopping: the drain".
//
//  1. Drain: /_gate/status (the readiness probe) answers 503, so new
//     connections go to the other replicas. Everything else goes on: requests
//     that still arrive are served, held ones are delivered once their
//     backend is up, and this replica's demand stays in Demand and on
//     /_gate/demand, so that KEDA (through any replica) and the peers keep
//     counting it.
//  2. WaitDrained returns once nothing is held, read or in flight here.
//  3. EndDrain, at the drain's deadline: what is still held gets a 503
//     gate_shutting_down (it was not sent: a retry reaches another replica),
//     what was sent and has no answer yet a 504, and answers still streaming
//     are cut. Requests held after it are answered the same way at once.
type drain struct {
	draining bool // guarded by Gate.mu
	// ended is cancelled by EndDrain: held requests and pass-throughs select on it.
	ended  context.Context
	endNow context.CancelFunc
}

// Drain marks the gate as draining (see above). Calling it again does nothing.
func (g *Gate) Drain() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.drain.draining = true
}

// Draining reports whether Drain was called.
func (g *Gate) Draining() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.drain.draining
}

// WaitDrained waits until no demand request is held, reading its body or in
// flight, and no list request waits to learn, on any backend; or until ctx
// ends (its error then).
func (g *Gate) WaitDrained(ctx context.Context) error {
	for {
		changed := g.Changed()
		if held, inFlight := g.Pending(); held+inFlight == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Pending counts what a drain waits for, over all backends: requests held
// (their bodies read or still reading), and requests in flight (demand
// requests passed through or delivered, and list requests waiting to learn).
func (g *Gate) Pending() (held, inFlight int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, b := range g.backends {
		held += b.queue.Len() + b.reading
		inFlight += b.inFlight + b.learnWaiter
	}
	return held, inFlight
}

// EndDrain answers what is still held and cuts what is still in flight (see
// above). Calling it again does nothing.
func (g *Gate) EndDrain() {
	g.drain.endNow()
}

// shuttingDown answers a held request that the drain's end caught before it
// was sent.
func (g *Gate) shuttingDown(w http.ResponseWriter, b *backend, path string) {
	g.mu.Lock()
	st, reason := b.state, b.reason
	g.mu.Unlock()
	writeError(w, path, http.StatusServiceUnavailable, codeShuttingDown, fmt.Sprintf(
		"gate: this gate replica is shutting down (--gate.drain-timeout) and backend %q was %s (%s); the request was not sent, try again",
		b.name, st, reasonOr(reason)))
}

// cutByDrain answers a request that was sent to b but had no answer yet when
// the drain ended.
func cutByDrain(w http.ResponseWriter, b *backend, path string) {
	writeError(w, path, http.StatusGatewayTimeout, codeShuttingDown, fmt.Sprintf(
		"gate: this gate replica is shutting down (--gate.drain-timeout) and backend %q had not answered yet; the request may have reached it",
		b.name))
}
