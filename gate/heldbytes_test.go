package gate

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
)

// zeros is an endless body of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// A held body sent chunked (no Content-Length) takes about its own size,
// like one with a length: never a doubling buffer's two or three times
// (issue 23, item 5). Allocation, not time: deterministic.
func TestAHeldChunkedBodyTakesAboutItsSize(t *testing.T) {
	const size = 32 << 20
	sb := newSleepyBackend(t, withVersion(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}, MaxHeldBytes: 64 << 20})
	eventually(t, "the backend seen asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+"/api/chat", chunked{io.LimitReader(zeros{}, size)}, nil)
	eventually(t, "the chunked request held", func() bool { return queued(g.Gate, DefaultName) == 1 || c.ended() })
	runtime.ReadMemStats(&after)
	if c.ended() {
		t.Fatalf("not held: %d %q %v", c.status, c.body, c.err)
	}
	if got := stats(g.Gate, DefaultName).HeldBytes; got < size {
		t.Errorf("HeldBytes = %d, want at least the body's %d", got, size)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("holding a %d MiB chunked body allocated %.1f MiB", size>>20, float64(allocated)/(1<<20))
	if allocated > size*5/4 {
		t.Errorf("holding a %d MiB chunked body allocated %.1f MiB, want at most 1.25 times its size", size>>20, float64(allocated)/(1<<20))
	}
}

// The headers of a held request count in --gate.max-held-bytes like its body
// (issue 23, item 6): a request whose headers alone are over the bound gets
// the 503 of a body over it, and held headers are in HeldBytes.
func TestHeldHeadersCountInTheBound(t *testing.T) {
	const limit = 64 << 10
	sb := newSleepyBackend(t, withVersion(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}, MaxHeldBytes: limit})
	eventually(t, "the backend seen asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })

	bigHeader := func(n int) http.Header { return http.Header{"X-Big": {strings.Repeat("h", n)}} }
	// Within the bound: held, and its headers counted.
	held := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+"/api/chat", strings.NewReader(`{}`), bigHeader(40<<10))
	eventually(t, "the first request held", func() bool { return queued(g.Gate, DefaultName) == 1 || held.ended() })
	if held.ended() {
		t.Fatalf("a request within the bound was not held: %d %q %v", held.status, held.body, held.err)
	}
	if got := stats(g.Gate, DefaultName).HeldBytes; got < 40<<10 {
		t.Errorf("HeldBytes = %d with 40 KiB of headers held, want them counted", got)
	}

	for _, tc := range []struct {
		name string
		path string
		hdr  http.Header
	}{
		{"over the bound with what is held", "/api/chat", bigHeader(40 << 10)},
		{"over the bound alone", "/v1/chat/completions", bigHeader(100 << 10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := sendAsync(context.Background(), http.DefaultClient, "POST", g.url+tc.path, strings.NewReader(`{}`), tc.hdr)
			eventually(t, "an answer or a hold", func() bool { return c.ended() || queued(g.Gate, DefaultName) > 1 })
			if !c.ended() {
				t.Fatal("held: its headers were not counted in --gate.max-held-bytes")
			}
			if c.status != http.StatusServiceUnavailable {
				t.Fatalf("status %d %q %v, want 503", c.status, c.body, c.err)
			}
			msg := errorMessage(t, c.body, isOpenAIPath(tc.path))
			if !strings.Contains(msg, "--gate.max-held-bytes") || !strings.Contains(msg, "headers") {
				t.Errorf("message %q, want it to name the headers and --gate.max-held-bytes", msg)
			}
		})
	}
}

// BenchmarkHeldBodyMemory holds one 64 MiB body, sent with a Content-Length
// or chunked, and reports what the heap took: allocated while it was read
// (alloc-MiB), the peak of the live heap meanwhile, sampled every
// millisecond (peak-MiB), and what stays live while it is held (held-MiB).
// Numbers to compare, not a bound: go test -run '^$' -bench HeldBodyMemory -benchtime 3x ./gate/
func BenchmarkHeldBodyMemory(b *testing.B) {
	const size = 64 << 20
	for _, framing := range []struct {
		name string
		body func() io.Reader
	}{
		{"content-length", func() io.Reader { return bytesReader(size) }},
		{"chunked", func() io.Reader { return chunked{io.LimitReader(zeros{}, size)} }},
	} {
		b.Run(framing.name, func(b *testing.B) {
			var alloc, peak, held float64
			for range b.N {
				sb := newSleepyBackend(b, withVersion(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
				g := startGate(b, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(b, sb.url())}, MaxHeldBytes: 2 * size})
				eventually(b, "asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })
				body := framing.body() // the client's side, outside the numbers
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				stop := make(chan struct{})
				peakHeap := make(chan uint64)
				go func() {
					var top uint64
					var m runtime.MemStats
					for {
						runtime.ReadMemStats(&m)
						top = max(top, m.HeapAlloc)
						select {
						case <-stop:
							peakHeap <- top
							return
						case <-time.After(time.Millisecond):
						}
					}
				}()
				ctx, cancel := context.WithCancel(context.Background())
				c := sendAsync(ctx, http.DefaultClient, "POST", g.url+"/api/chat", body, nil)
				eventually(b, "held", func() bool { return queued(g.Gate, DefaultName) == 1 || c.ended() })
				close(stop)
				top := <-peakHeap
				runtime.ReadMemStats(&after)
				alloc += float64(after.TotalAlloc - before.TotalAlloc)
				peak += float64(top - before.HeapAlloc)
				runtime.GC()
				runtime.ReadMemStats(&after)
				held += float64(after.HeapAlloc) - float64(before.HeapAlloc)
				cancel()
				c.wait(b)
				g.stop()
			}
			n := float64(b.N) * (1 << 20)
			b.ReportMetric(alloc/n, "alloc-MiB")
			b.ReportMetric(peak/n, "peak-MiB")
			b.ReportMetric(held/n, "held-MiB")
		})
	}
}

func bytesReader(n int) io.Reader { return bytes.NewReader(make([]byte, n)) }

// sentHeaderBytes is what the gate counts for the headers of a request that
// the Go client sends like this: measured on a server that sees them as the
// gate does.
func sentHeaderBytes(t testing.TB, method, path string, body io.Reader, hdr http.Header) int64 {
	t.Helper()
	got := make(chan int64, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		got <- heldHeaderBytes(r)
	}))
	defer srv.Close()
	do(t, method, srv.URL+path, body, hdr)
	return <-got
}
