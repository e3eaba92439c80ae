// Package snapshot keeps the latest count from Open WebUI, so that /metrics,
// /active_users (and every other reader) share one upstream request per TTL.
package snapshot

import (
	"context"
	"errors"
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

// Snapshot is the result of one fetch from Open WebUI.
type Snapshot struct {
	openwebui.Count
	// Err is why the count is unknown; when it is set, Count is meaningless.
	Err       error
	FetchedAt time.Time     // when the fetch finished
	Duration  time.Duration // how long the fetch took
}

// FetchFunc asks Open WebUI for the count.
type FetchFunc func(context.Context) (openwebui.Count, error)

// Config configures a Cache.
type Config struct {
	Fetch FetchFunc
	// TTL is how long a successful fetch is served; 0 fetches for every
	// reader (readers that arrive together still share one request).
	TTL time.Duration
	// Timeout bounds one fetch, all its upstream requests included.
	Timeout time.Duration
	Now     func() time.Time // nil: time.Now
	Logger  log.Logger       // nil: no logging
}

// Cache serves the latest Snapshot and refreshes it when it has expired.
// Concurrent readers of an expired snapshot share one in-flight fetch, and no
// lock is held while Open WebUI is asked.
type Cache struct {
	cfg Config

	mu       sync.Mutex
	current  *Snapshot
	inflight chan struct{} // closed when the running fetch has stored its result
}

// New returns a Cache. It fetches nothing until the first Get.
func New(cfg Config) *Cache {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = log.NewNopLogger()
	}
	return &Cache{cfg: cfg}
}

// TTL is the configured time-to-live of a successful snapshot.
func (c *Cache) TTL() time.Duration { return c.cfg.TTL }

// Get returns the current snapshot, fetching a new one if it has expired.
// If ctx ends first, Get returns a snapshot whose Err says so.
func (c *Cache) Get(ctx context.Context) Snapshot {
	c.mu.Lock()
	if c.current != nil && c.fresh(c.current) {
		s := *c.current
		c.mu.Unlock()
		return s
	}
	if c.inflight == nil {
		c.inflight = make(chan struct{})
		go c.refresh(c.inflight)
	}
	done := c.inflight
	c.mu.Unlock()

	select {
	case <-done:
	case <-ctx.Done():
		return Snapshot{Err: fmt.Errorf("waiting for Open WebUI: %w", ctx.Err())}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return *c.current
}

func (c *Cache) fresh(s *Snapshot) bool {
	ttl := c.cfg.TTL
	if s.Err != nil {
		ttl = min(ttl, errorTTL)
	}
	return c.cfg.Now().Sub(s.FetchedAt) < ttl
}

// refresh runs one fetch on its own context, so that a reader that gives up
// does not cancel the fetch the others are waiting for.
func (c *Cache) refresh(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	start := c.cfg.Now()
	n, err := c.cfg.Fetch(ctx)
	if errors.Is(err, context.DeadlineExceeded) || (err != nil && ctx.Err() != nil) {
		err = fmt.Errorf("no answer from Open WebUI within --openwebui.timeout=%s: %w", c.cfg.Timeout, err)
	}
	end := c.cfg.Now()
	s := &Snapshot{Count: n, Err: err, FetchedAt: end, Duration: end.Sub(start)}

	c.mu.Lock()
	prev := c.current
	c.current = s
	c.inflight = nil
	c.mu.Unlock()
	close(done)
	c.logTransition(prev, s)
}

// logTransition logs a failure when it starts or changes, and the recovery;
// a failure that repeats is logged at debug level only.
func (c *Cache) logTransition(prev, s *Snapshot) {
	switch {
	case s.Err != nil && (prev == nil || prev.Err == nil || prev.Err.Error() != s.Err.Error()):
		level.Error(c.cfg.Logger).Log("msg", "cannot count Open WebUI's active users", "err", s.Err)
	case s.Err != nil:
		level.Debug(c.cfg.Logger).Log("msg", "still cannot count Open WebUI's active users", "err", s.Err)
	case prev != nil && prev.Err != nil:
		level.Info(c.cfg.Logger).Log("msg", "counting Open WebUI's active users again", "active_users", s.ActiveUsers)
	default:
		level.Debug(c.cfg.Logger).Log("msg", "fetched active users", "active_users", s.ActiveUsers, "duration", s.Duration)
	}
}
