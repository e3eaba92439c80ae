package gate

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// probeLoop keeps b's state: it probes every 100 ms while anything is held for
// b (or waits to learn a list), every Config.ProbeInterval (5 s) otherwise, and
// at once when a request is held.
//
// When ctx ends it goes on while requests are held for b (at most the hold
// timeout), so that a gate shutting down still delivers what it holds.
func (g *Gate) probeLoop(ctx context.Context, b *backend) {
	t := time.NewTimer(0) // the first probe at once
	defer t.Stop()
	stop, pctx, draining := ctx.Done(), ctx, false
	for {
		select {
		case <-stop:
			stop, pctx, draining = nil, context.WithoutCancel(ctx), true
			if !g.busy(b) {
				return
			}
			continue
		case <-b.kick:
		case <-t.C:
		}
		st, reason := g.probe(pctx, b)
		g.mu.Lock()
		// While up, only a refused dial takes the backend down: a slow or 5xx
		// probe of a busy backend must not hold requests it would answer.
		if b.state != StateUp || st != StateStarting {
			g.setState(b, st, reason)
		}
		busy := b.queue.Len()+b.reading > 0 || b.learnWaiter > 0
		g.mu.Unlock()
		if draining && !busy {
			return
		}
		next := g.probeIdle
		if busy {
			next = g.probeHeld
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

func (g *Gate) busy(b *backend) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return b.queue.Len()+b.reading > 0 || b.learnWaiter > 0
}

// probe asks b whether it serves HTTP: GET /api/version 2xx is up; a 404
// there asks GET /v1/models (OpenAI-compatible servers). Any other answer
// below 500 is up too (the server serves HTTP; a 401 is an authenticated
// server). A 5xx or no HTTP answer within the probe timeout is starting; a
// refused or failed dial is asleep.
func (g *Gate) probe(ctx context.Context, b *backend) (State, string) {
	if b.pool != nil {
		return g.probePool(ctx, b)
	}
	return g.probeURL(ctx, b.cfg.URL)
}

// probeURL is probe for one server (a backend, or a replica of a pool).
func (g *Gate) probeURL(ctx context.Context, base *url.URL) (State, string) {
	code, st, reason := g.probeGet(ctx, base, pathVersion)
	if st != "" {
		return st, reason
	}
	if code == http.StatusNotFound {
		code, st, reason = g.probeGet(ctx, base, pathModels)
		if st != "" {
			return st, reason
		}
		if code >= 500 {
			return StateStarting, fmt.Sprintf("HTTP %d from %s", code, pathModels)
		}
		return StateUp, ""
	}
	if code >= 500 {
		return StateStarting, fmt.Sprintf("HTTP %d from %s", code, pathVersion)
	}
	return StateUp, ""
}

// ownRequest is a request of the gate's own (a probe, a list, a warm-up) for
// path under base, which names the gate as its User-Agent.
func ownRequest(ctx context.Context, method string, base url.URL, path string, body io.Reader) (*http.Request, error) {
	base.Path, base.RawPath = singleJoin(base.Path, path), ""
	req, err := http.NewRequestWithContext(ctx, method, base.String(), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "openwebui-exporter-gate")
	return req, nil
}

// probeGet returns the status of GET path, or the state and reason when no
// HTTP answer came.
func (g *Gate) probeGet(ctx context.Context, base *url.URL, path string) (int, State, string) {
	ctx, cancel := context.WithTimeout(ctx, g.probeTimeout)
	defer cancel()
	req, err := ownRequest(ctx, http.MethodGet, *base, path, nil)
	if err != nil {
		return 0, StateAsleep, err.Error()
	}
	res, err := g.transport.RoundTrip(req)
	if err != nil {
		if reason, ok := tlsFailure(err); ok {
			return 0, StateMisconfigured, reason
		}
		if reason, ok := dialFailure(err); ok {
			return 0, StateAsleep, reason
		}
		return 0, StateStarting, "no HTTP answer"
	}
	if reason, ok := hopAnswer(res); ok {
		// A proxy in front answered for the backend: asleep, as a refused dial.
		_ = res.Body.Close()
		return 0, StateAsleep, reason
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	_ = res.Body.Close()
	return res.StatusCode, "", ""
}
