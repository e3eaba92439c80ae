// Package snapshot keeps the latest count from Open WebUI, so that /metrics,
// /active_users (and every other reader) share one upstream request per TTL.
package snapshot

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
)

// errorTTL bounds how long a failed fetch is served: long enough that an
// outage costs Open WebUI at most one request per errorTTL, short enough that
// a recovery shows at once.
const errorTTL = 5 * time.Second

// freshWait is how long a reader that has a good count within the stale
// bound still waits for a refresh that is under way. A healthy Open WebUI
// answers well within it, so the reader gets the fresh count: answering
// stale at once would leave a sole reader (KEDA polling /active_users) one
// poll behind and double its wake-up time. A slow one costs readers at most
// this, and only in the first freshWait of each refresh.
const freshWait = 250 * time.Millisecond

// Snapshot is what the exporter knows about Open WebUI's count right now.
type Snapshot struct {
	// Count is the latest good count; meaningless when Err is set.
	openwebui.Count
	// Err says why the count is unknown: the latest fetch failed and no good
	// count is younger than the stale bound. Readers must not report a number.
	Err error
	// FetchErr is the error of the latest completed fetch, nil if it
	// succeeded. It can be set while Err is not: a good count within the
	// stale bound is still served.
	FetchErr error
	// LastSuccess is when the good count was fetched; zero if never.
	LastSuccess time.Time
	// FetchedAt and Duration describe the latest completed fetch.
	FetchedAt time.Time
	Duration  time.Duration
}

// FetchFunc asks Open WebUI for the count.
type FetchFunc func(context.Context) (openwebui.Count, error)

// Config configures a Cache.
type Config struct {
	Fetch FetchFunc
	// TTL is how long a successful fetch is served before the next reader
	// triggers a refresh; 0 refreshes for every reader (readers that arrive
	// together still share one request).
	TTL time.Duration
	// MaxStale is how old a good count may be and still be served, at once,
	// while a refresh runs or after it failed. 0 serves nothing stale.
	MaxStale time.Duration
	// Timeout bounds one fetch, all its upstream requests included.
	Timeout time.Duration
	Now     func() time.Time // nil: time.Now
	Logger  log.Logger       // nil: no logging
}

// result is one completed fetch.
type result struct {
	count    openwebui.Count
	err      error
	at       time.Time // when it finished
	duration time.Duration
}

// Cache serves the latest count and refreshes it when it has expired.
// Concurrent readers of an expired count share one in-flight fetch, no lock
// is held while Open WebUI is asked, and a reader never waits longer than
// one fetch's timeout.
type Cache struct {
	cfg Config

	mu       sync.Mutex
	latest   *result       // the latest completed fetch
	good     *result       // the latest successful fetch
	inflight chan struct{} // closed when the running fetch has stored its result
	// inflightSince is when the running fetch started (real time, for freshWait).
	inflightSince time.Time
}

// New returns a Cache. It fetches nothing until the first read.
func New(cfg Config) *Cache {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = log.NewNopLogger()
	}
	return &Cache{cfg: cfg}
}

// TTL is the configured time-to-live of a successful count.
func (c *Cache) TTL() time.Duration { return c.cfg.TTL }

// Timeout is the configured deadline of one fetch. No read waits longer than
// it (plus overrunGrace) for a fetch, whatever the context it is given.
func (c *Cache) Timeout() time.Duration { return c.cfg.Timeout }

// overrunGrace is how long past its timeout a fetch is waited for before
// readers give up on it: a fetch that ignores its context (a call that
// blocks in the kernel) must not hold readers, or a scrape, for ever.
const overrunGrace = 500 * time.Millisecond

// Get returns the current snapshot. If the count has expired it starts a
// refresh; with a good count within the stale bound, Get waits at most
// freshWait from the refresh's start and then answers with that count, and
// only without one does it wait for the refresh (or for ctx).
func (c *Cache) Get(ctx context.Context) Snapshot {
	return c.read(ctx, c.cfg.TTL, true)
}

// Refresh returns a snapshot no older than maxAge, waiting for a fetch (its
// own, or one already running) if the latest is older. Push loops use it to
// poll Open WebUI faster than the TTL through the same cache.
func (c *Cache) Refresh(ctx context.Context, maxAge time.Duration) Snapshot {
	return c.read(ctx, maxAge, false)
}

func (c *Cache) read(ctx context.Context, maxAge time.Duration, answerStale bool) Snapshot {
	c.mu.Lock()
	now := c.cfg.Now()
	fresh := c.latest != nil && now.Sub(c.latest.at) < c.ttlFor(c.latest, maxAge)
	if !fresh && c.inflight == nil {
		c.inflight = make(chan struct{})
		c.inflightSince = time.Now()
		// The refresh belongs to every reader, not to the request that
		// noticed: it must outlive that request's context.
		go c.refresh(c.inflight) //nolint:gosec // G118: see above
	}
	if fresh {
		s := c.view(now)
		c.mu.Unlock()
		return s
	}
	done := c.inflight
	overrun := time.NewTimer(c.cfg.Timeout + overrunGrace - time.Since(c.inflightSince))
	defer overrun.Stop()
	// With a good count within the bound, wait only for what is left of
	// freshWait since the refresh started, then answer with that count.
	var staleAfter <-chan time.Time
	if answerStale && c.goodWithinBound(now) {
		t := time.NewTimer(freshWait - time.Since(c.inflightSince))
		defer t.Stop()
		staleAfter = t.C
	}
	c.mu.Unlock()

	select {
	case <-done:
	case <-staleAfter:
	case <-ctx.Done():
		return c.gaveUp(fmt.Errorf("waiting for Open WebUI: %w", ctx.Err()), ctx.Err())
	case <-overrun.C:
		err := fmt.Errorf("the fetch from Open WebUI has not returned %s after its --openwebui.timeout=%s", overrunGrace, c.cfg.Timeout)
		return c.gaveUp(err, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.view(c.cfg.Now())
}

// gaveUp is what a reader that stops waiting for the fetch sees: the good
// count within the stale bound, or the error.
func (c *Cache) gaveUp(err, fetchErr error) Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goodWithinBound(c.cfg.Now()) {
		return c.view(c.cfg.Now())
	}
	return Snapshot{Err: err, FetchErr: fetchErr}
}

// ttlFor is how long a result is served before a reader refreshes it.
func (c *Cache) ttlFor(r *result, maxAge time.Duration) time.Duration {
	if r.err != nil {
		return min(maxAge, errorTTL)
	}
	return maxAge
}

func (c *Cache) goodWithinBound(now time.Time) bool {
	return c.good != nil && now.Sub(c.good.at) < c.cfg.MaxStale
}

// view builds the snapshot readers see; c.mu must be held and latest set.
func (c *Cache) view(now time.Time) Snapshot {
	s := Snapshot{FetchErr: c.latest.err, FetchedAt: c.latest.at, Duration: c.latest.duration}
	if c.good != nil {
		s.LastSuccess = c.good.at
	}
	switch {
	case c.latest.err == nil:
		s.Count = c.latest.count
	case c.goodWithinBound(now):
		s.Count = c.good.count
	default:
		s.Err = c.latest.err
	}
	return s
}

// refresh runs one fetch on its own context, so that a reader that gives up
// does not cancel the fetch the others are waiting for.
func (c *Cache) refresh(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	start := c.cfg.Now()
	n, err := c.cfg.Fetch(ctx)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("no answer from Open WebUI within --openwebui.timeout=%s: %w", c.cfg.Timeout, err)
	}
	end := c.cfg.Now()
	r := &result{count: n, err: err, at: end, duration: end.Sub(start)}

	c.mu.Lock()
	prev := c.latest
	c.latest = r
	if err == nil {
		c.good = r
	}
	c.inflight = nil
	c.mu.Unlock()
	close(done)
	c.logTransition(prev, r)
}

// logTransition logs a failure when it starts or changes, and the recovery;
// a failure that repeats is logged at debug level only.
func (c *Cache) logTransition(prev, r *result) {
	switch {
	case r.err != nil && (prev == nil || prev.err == nil || prev.err.Error() != r.err.Error()):
		level.Error(c.cfg.Logger).Log("msg", "cannot count Open WebUI's active users", "err", r.err)
	case r.err != nil:
		level.Debug(c.cfg.Logger).Log("msg", "still cannot count Open WebUI's active users", "err", r.err)
	case prev != nil && prev.err != nil:
		level.Info(c.cfg.Logger).Log("msg", "counting Open WebUI's active users again", "active_users", r.count.ActiveUsers)
	default:
		level.Debug(c.cfg.Logger).Log("msg", "fetched active users", "active_users", r.count.ActiveUsers, "duration", r.duration)
	}
}
