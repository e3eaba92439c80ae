package snapshot

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
)

func newTestCache(ttl time.Duration, fetch FetchFunc) (*Cache, *fakeopenwebui.Clock) {
	clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
	return New(Config{Fetch: fetch, TTL: ttl, Timeout: time.Second, Now: clock.Now}), clock
}

func TestCacheServesWithinTTLAndRefreshesAfter(t *testing.T) {
	var calls atomic.Int32
	cache, clock := newTestCache(time.Minute, func(context.Context) (openwebui.Count, error) {
		return openwebui.Count{ActiveUsers: int(calls.Add(1))}, nil
	})
	steps := []struct {
		advance   time.Duration
		wantUsers int
	}{
		{0, 1},
		{59 * time.Second, 1}, // still within the TTL
		{time.Second, 2},      // expired: fetched again
		{30 * time.Second, 2},
	}
	for i, step := range steps {
		clock.Advance(step.advance)
		s := cache.Get(context.Background())
		if s.Err != nil || s.ActiveUsers != step.wantUsers {
			t.Fatalf("step %d: got (%d, %v), want (%d, nil)", i, s.ActiveUsers, s.Err, step.wantUsers)
		}
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("upstream fetches = %d, want 2", got)
	}
}

func TestCacheKeepsErrorsBriefly(t *testing.T) {
	var calls atomic.Int32
	cache, clock := newTestCache(time.Minute, func(context.Context) (openwebui.Count, error) {
		if calls.Add(1) == 1 {
			return openwebui.Count{}, errors.New("boom")
		}
		return openwebui.Count{ActiveUsers: 3}, nil
	})
	if s := cache.Get(context.Background()); s.Err == nil {
		t.Fatal("first Get: want the upstream error")
	}
	clock.Advance(errorTTL - time.Millisecond)
	if s := cache.Get(context.Background()); s.Err == nil || calls.Load() != 1 {
		t.Fatalf("within errorTTL: got err=%v after %d fetches, want the cached error after 1", s.Err, calls.Load())
	}
	clock.Advance(time.Millisecond)
	if s := cache.Get(context.Background()); s.Err != nil || s.ActiveUsers != 3 {
		t.Fatalf("after errorTTL: got (%d, %v), want (3, nil)", s.ActiveUsers, s.Err)
	}
}

func TestCacheSharesOneInFlightFetch(t *testing.T) {
	for _, ttl := range []time.Duration{0, time.Minute} {
		var calls atomic.Int32
		release := make(chan struct{})
		cache, _ := newTestCache(ttl, func(context.Context) (openwebui.Count, error) {
			calls.Add(1)
			<-release
			return openwebui.Count{ActiveUsers: 7}, nil
		})
		const readers = 50
		var wg sync.WaitGroup
		results := make(chan Snapshot, readers)
		for range readers {
			wg.Go(func() { results <- cache.Get(context.Background()) })
		}
		// Let every reader reach the wait before the fetch returns.
		for deadline := time.Now().Add(5 * time.Second); calls.Load() == 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
		close(release)
		wg.Wait()
		close(results)
		for s := range results {
			if s.Err != nil || s.ActiveUsers != 7 {
				t.Fatalf("ttl %s: reader got (%d, %v), want (7, nil)", ttl, s.ActiveUsers, s.Err)
			}
		}
		if got := calls.Load(); got != 1 {
			t.Errorf("ttl %s: %d concurrent readers made %d fetches, want 1", ttl, readers, got)
		}
	}
}

func TestCacheReaderGivingUpDoesNotCancelTheFetch(t *testing.T) {
	release := make(chan struct{})
	var fetchErr atomic.Value
	cache, _ := newTestCache(time.Minute, func(ctx context.Context) (openwebui.Count, error) {
		<-release
		if err := ctx.Err(); err != nil {
			fetchErr.Store(err)
		}
		return openwebui.Count{ActiveUsers: 1}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if s := cache.Get(ctx); !errors.Is(s.Err, context.Canceled) {
		t.Fatalf("cancelled reader: got err %v, want context.Canceled", s.Err)
	}
	close(release)
	if s := cache.Get(context.Background()); s.Err != nil || s.ActiveUsers != 1 {
		t.Fatalf("next reader: got (%d, %v), want (1, nil)", s.ActiveUsers, s.Err)
	}
	if err := fetchErr.Load(); err != nil {
		t.Errorf("the shared fetch saw its context end: %v", err)
	}
}

func TestCacheFetchTimeoutNamesTheFlag(t *testing.T) {
	cache := New(Config{TTL: time.Minute, Timeout: 20 * time.Millisecond,
		Fetch: func(ctx context.Context) (openwebui.Count, error) {
			<-ctx.Done()
			return openwebui.Count{}, ctx.Err()
		}})
	s := cache.Get(context.Background())
	if s.Err == nil || !errors.Is(s.Err, context.DeadlineExceeded) {
		t.Fatalf("got err %v, want a deadline error", s.Err)
	}
	if want := "--openwebui.timeout=20ms"; !strings.Contains(s.Err.Error(), want) {
		t.Errorf("error %q does not mention %q", s.Err, want)
	}
}

func TestCacheServesStaleWithinBoundWhileRefreshing(t *testing.T) {
	var calls atomic.Int32
	release := make(chan struct{})
	clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
	cache := New(Config{TTL: time.Minute, MaxStale: 2 * time.Minute, Timeout: 5 * time.Second, Now: clock.Now,
		Fetch: func(context.Context) (openwebui.Count, error) {
			if calls.Add(1) > 1 {
				<-release // the refresh is slow
			}
			return openwebui.Count{ActiveUsers: int(calls.Load())}, nil
		}})
	if s := cache.Get(context.Background()); s.ActiveUsers != 1 {
		t.Fatalf("first Get = %d, want 1", s.ActiveUsers)
	}
	clock.Advance(90 * time.Second) // expired, but within the stale bound
	for range 10 {
		// Waits freshWait at most; were it to wait for the refresh, this
		// would block until release below, that is forever.
		s := cache.Get(context.Background())
		if s.Err != nil || s.ActiveUsers != 1 || s.FetchErr != nil {
			t.Fatalf("while refreshing: got (%d, err %v, fetch err %v), want the stale 1", s.ActiveUsers, s.Err, s.FetchErr)
		}
	}
	close(release)
	// The one refresh lands; bounded wait for it.
	for deadline := time.Now().Add(5 * time.Second); cache.Get(context.Background()).ActiveUsers != 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the refresh never landed")
		}
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2 (one refresh for all readers)", got)
	}
}

func TestCacheStaleBoundDuringAnOutage(t *testing.T) {
	var failing atomic.Bool
	clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
	cache := New(Config{TTL: time.Minute, MaxStale: 2 * time.Minute, Timeout: time.Second, Now: clock.Now,
		Fetch: func(context.Context) (openwebui.Count, error) {
			if failing.Load() {
				return openwebui.Count{}, errors.New("connection refused")
			}
			return openwebui.Count{ActiveUsers: 4}, nil
		}})
	first := cache.Get(context.Background())
	failing.Store(true)
	steps := []struct {
		at        time.Duration // since the good fetch
		wantKnown bool
	}{
		{61 * time.Second, true},   // refresh fails: the good count is served, marked as a failed fetch
		{63 * time.Second, true},   // the error is fresh, the good count still within the bound
		{119 * time.Second, true},  // last moment within the bound
		{120 * time.Second, false}, // past the bound: unknown
		{200 * time.Second, false},
	}
	for _, step := range steps {
		clock.Advance(first.LastSuccess.Add(step.at).Sub(clock.Now()))
		s := cache.Get(context.Background())
		if s.FetchErr == nil {
			// The first read after expiry may answer stale before the refresh
			// finished; read again once it has.
			s = cache.Refresh(context.Background(), 0)
		}
		switch {
		case step.wantKnown && (s.Err != nil || s.ActiveUsers != 4 || s.FetchErr == nil):
			t.Errorf("at +%s: got (%d, err %v, fetch err %v), want the stale 4 with the fetch error", step.at, s.ActiveUsers, s.Err, s.FetchErr)
		case !step.wantKnown && s.Err == nil:
			t.Errorf("at +%s: got %d, want the count unknown past the stale bound", step.at, s.ActiveUsers)
		}
		if !s.LastSuccess.Equal(first.LastSuccess) {
			t.Errorf("at +%s: LastSuccess = %s, want %s", step.at, s.LastSuccess, first.LastSuccess)
		}
	}
}

func TestCacheWithoutAGoodCountWaits(t *testing.T) {
	cache, _ := newTestCache(time.Minute, func(context.Context) (openwebui.Count, error) {
		time.Sleep(20 * time.Millisecond)
		return openwebui.Count{ActiveUsers: 5}, nil
	})
	if s := cache.Get(context.Background()); s.Err != nil || s.ActiveUsers != 5 {
		t.Fatalf("got (%d, %v), want the first count (5), waited for", s.ActiveUsers, s.Err)
	}
}

func TestCacheRefreshPollsFasterThanTheTTL(t *testing.T) {
	var calls atomic.Int32
	cache, clock := newTestCache(time.Minute, func(context.Context) (openwebui.Count, error) {
		return openwebui.Count{ActiveUsers: int(calls.Add(1))}, nil
	})
	cache.Get(context.Background())
	clock.Advance(500 * time.Millisecond)
	if s := cache.Refresh(context.Background(), time.Second); s.ActiveUsers != 1 {
		t.Errorf("Refresh within maxAge fetched again: got %d, want 1", s.ActiveUsers)
	}
	clock.Advance(time.Second)
	if s := cache.Refresh(context.Background(), time.Second); s.ActiveUsers != 2 {
		t.Errorf("Refresh past maxAge: got %d, want a new fetch (2)", s.ActiveUsers)
	}
	if s := cache.Get(context.Background()); s.ActiveUsers != 2 {
		t.Errorf("Get after Refresh: got %d, want the refreshed 2 (one cache)", s.ActiveUsers)
	}
}

// BenchmarkCacheGetWarm is the cost every request pays on a warm cache.
func BenchmarkCacheGetWarm(b *testing.B) {
	cache := New(Config{TTL: time.Hour, Timeout: time.Second,
		Fetch: func(context.Context) (openwebui.Count, error) { return openwebui.Count{ActiveUsers: 3}, nil }})
	cache.Get(context.Background())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if s := cache.Get(context.Background()); s.ActiveUsers != 3 {
				b.Fatal(s)
			}
		}
	})
}

// TestCacheExpiredReaderGetsTheFreshCount: a healthy Open WebUI answers
// within freshWait, so the reader that finds the count expired gets the new
// one, not the stale one (else a sole poller would always be one poll behind).
func TestCacheExpiredReaderGetsTheFreshCount(t *testing.T) {
	var calls atomic.Int32
	clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
	cache := New(Config{TTL: time.Minute, MaxStale: 2 * time.Minute, Timeout: 5 * time.Second, Now: clock.Now,
		Fetch: func(context.Context) (openwebui.Count, error) {
			return openwebui.Count{ActiveUsers: int(calls.Add(1))}, nil
		}})
	for want := 1; want <= 3; want++ {
		if s := cache.Get(context.Background()); s.ActiveUsers != want {
			t.Fatalf("read %d: got %d, want the fresh %d", want, s.ActiveUsers, want)
		}
		clock.Advance(time.Minute)
	}
}

// A fetch that ignores its context (a call blocked in the kernel, such as a
// read of a hung token file) must not hold a reader without a deadline of
// its own, such as a /metrics scrape, for ever: it is given up on after the
// fetch timeout plus a grace period.
func TestCacheReaderNeverWaitsPastTheFetchTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	cache := New(Config{TTL: time.Minute, Timeout: 50 * time.Millisecond,
		Fetch: func(context.Context) (openwebui.Count, error) {
			<-release // ignores ctx
			return openwebui.Count{ActiveUsers: 1}, nil
		}})
	got := make(chan Snapshot, 1)
	go func() { got <- cache.Get(context.Background()) }()
	select {
	case s := <-got:
		if s.Err == nil || !strings.Contains(s.Err.Error(), "has not returned 500ms after its --openwebui.timeout=50ms") {
			t.Fatalf("got (%d, %v), want the overrun error", s.ActiveUsers, s.Err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a reader with context.Background() still waits for a fetch that never returns")
	}
	if cache.Timeout() != 50*time.Millisecond {
		t.Errorf("Timeout() = %s", cache.Timeout())
	}
}
