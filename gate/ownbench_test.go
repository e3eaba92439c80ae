package gate

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// memoryOllama is a transport that answers as three idle Ollama replicas
// would, in memory: no sockets, so that a benchmark sees only the proxy's
// own work.
type memoryOllama struct{}

func (memoryOllama) RoundTrip(r *http.Request) (*http.Response, error) {
	answer := `{"message":{"role":"assistant","content":"hi"},"done":true}`
	switch r.URL.Path {
	case pathVersion:
		answer = `{"version":"0.17.4"}`
	case pathTags, pathPS:
		answer = `{"models":[{"name":"m:latest","model":"m:latest"}]}`
	}
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json; charset=utf-8"}},
		Body:          io.NopCloser(strings.NewReader(answer)),
		ContentLength: int64(len(answer)), Request: r}, nil
}

// nullWriter is a ResponseWriter that keeps nothing, and flushes and goes
// full duplex as Go's server does.
type nullWriter struct{ h http.Header }

func (w *nullWriter) Flush()                  {}
func (w *nullWriter) EnableFullDuplex() error { return nil }

func (w *nullWriter) Header() http.Header         { return w.h }
func (w *nullWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nullWriter) WriteHeader(int)             {}

// BenchmarkOwnCost is the CPU and allocations of one small chat inside the
// proxy alone (the transport answers from memory, the client is a function
// call): the gate with a pool of three replicas (routing, peek, choice,
// accounting, httputil.ReverseProxy), beside a bare httputil.ReverseProxy
// that takes the replicas in turn (what any Go proxy costs; bench/goproxy).
// The difference is the gate's own per-request work.
func BenchmarkOwnCost(b *testing.B) {
	const body = `{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"stream":false}`
	var targets []*url.URL
	for _, h := range []string{"10.0.0.1:11434", "10.0.0.2:11434", "10.0.0.3:11434"} {
		targets = append(targets, &url.URL{Scheme: "http", Host: h})
	}
	var next atomic.Uint64
	bare := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(targets[next.Add(1)%3]) },
		Transport:  memoryOllama{},
		BufferPool: copyBuffers,
	}
	flags := []string{}
	for _, u := range targets {
		flags = append(flags, "pool="+u.String())
	}
	g := startGate(b, Config{Transport: memoryOllama{}, Backends: warmAuto(poolConfig(b, flags...))})
	eventually(b, "up", func() bool { return g.Stats()[0].State == StateUp })
	for _, proxy := range []struct {
		name string
		h    http.Handler
		path string
	}{{"go-proxy", bare, "/api/chat"}, {"gate-pool", g.Gate, "/pool/api/chat"}} {
		b.Run(proxy.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := &nullWriter{h: http.Header{}}
				for pb.Next() {
					r, _ := http.NewRequest(http.MethodPost, "http://gate"+proxy.path, strings.NewReader(body))
					r.Header.Set(ChatHeader, "chat")
					r.Header.Set("Content-Type", "application/json")
					clear(w.h)
					proxy.h.ServeHTTP(w, r)
				}
			})
		})
	}
}

// BenchmarkOwnCostSockets is BenchmarkOwnCost over loopback sockets, as
// bench/gatebench runs it: three replicas (httptest servers), the proxy
// served by Go's HTTP server, 16 clients at once. The proxies' difference
// here also holds what the sockets make them do differently (connections
// per replica, the choice's spread); the rest is the same for both.
func BenchmarkOwnCostSockets(b *testing.B) {
	const body = `{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"stream":false}`
	var targets []*url.URL
	var flags []string
	for range 3 {
		backend := smallChatBackend(b)
		u, _ := url.Parse(backend.URL)
		targets = append(targets, u)
		flags = append(flags, "pool="+backend.URL)
	}
	var next atomic.Uint64
	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		(&httputil.ReverseProxy{
			Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(targets[next.Add(1)%3]) },
			Transport:  bareTransport,
			BufferPool: copyBuffers,
		}).ServeHTTP(w, r)
	}))
	defer bare.Close()
	g := startGate(b, Config{Backends: warmAuto(poolConfig(b, flags...))})
	eventually(b, "up", func() bool { return g.Stats()[0].State == StateUp })
	for _, proxy := range []struct{ name, url string }{{"go-proxy", bare.URL + "/api/chat"}, {"gate-pool", g.url + "/pool/api/chat"}} {
		b.Run(proxy.name, func(b *testing.B) {
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			b.SetParallelism(8) // 16 goroutines on 2 cores
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					res, err := client.Post(proxy.url, "application/json", strings.NewReader(body))
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
	for _, r := range g.Stats()[0].Replicas {
		b.Logf("replica %s: %d requests", r.ID, r.Requests)
	}
}

// bareTransport is the gate's transport for the bare proxy of
// BenchmarkOwnCostSockets.
var bareTransport = NewTransport()

// warmAuto sets warming as the exporter does by default (auto: the model of
// each request is read for it), where the tests' startGate leaves it off.
func warmAuto(bcs []BackendConfig) []BackendConfig {
	for i := range bcs {
		bcs[i].Warm.Mode = WarmAuto
	}
	return bcs
}
