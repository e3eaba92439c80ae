package gate

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// BenchmarkPassThrough compares a small non-streaming POST sent directly to a
// backend with the same POST through the gate (16 clients at once).
func BenchmarkPassThrough(b *testing.B) {
	backend := httptest.NewServer(withVersion(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"embeddings":[[0.1,0.2]]}`)
	})))
	defer backend.Close()
	g := startGate(b, Config{Backends: []BackendConfig{backendURL(b, backend.URL)}})
	eventually(b, "up", func() bool { return g.Stats()[0].State == StateUp })
	for _, target := range []struct{ name, url string }{{"direct", backend.URL}, {"gate", g.url}} {
		b.Run(target.name, func(b *testing.B) {
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			b.SetParallelism(8) // 16 goroutines on 2 cores
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					res, err := client.Post(target.url+"/api/embed", "application/json", strings.NewReader(`{"model":"m","input":"hi"}`))
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
			})
		})
	}
}

// BenchmarkRelease1000 holds 1000 small requests for a sleeping backend and
// reports how long after the gate saw the backend up the last of them was
// answered (release-ms; the probe runs every 100 ms while anything is held,
// so add up to 100 ms for a backend that goes from refusing to serving at once;
// one that opens its port first, as Ollama does, is seen at its first answer).
func BenchmarkRelease1000(b *testing.B) {
	for i := 0; i < b.N; i++ {
		func() {
			sb := newSleepyBackend(b, withVersion(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
			g := startGate(b, Config{Backends: []BackendConfig{backendURL(b, sb.url())}}, func(g *Gate) { g.probeHeld = defaultProbeHeld })
			defer g.stop()
			defer sb.stop()
			tr := &http.Transport{MaxIdleConnsPerHost: 1000}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			const n = 1000
			var clients []*heldClient
			for j := 0; j < n; j++ {
				clients = append(clients, sendAsync(context.Background(), client, "POST", g.url+"/api/chat", strings.NewReader(`{"model":"m","messages":[]}`), nil))
			}
			eventually(b, "all held", func() bool { return mustDemand(b, g.Gate, DefaultName).Held == n })
			sb.serve()
			eventually(b, "up", func() bool { return g.Stats()[0].State == StateUp })
			start := time.Now()
			for _, c := range clients {
				c.wait(b)
				if c.status != 200 {
					b.Fatalf("status %d %q %v", c.status, c.body, c.err)
				}
			}
			b.ReportMetric(float64(time.Since(start).Milliseconds()), "release-ms")
		}()
	}
}
