// Command goproxy is the floor of any Go reverse proxy in bench/gatebench:
// httputil.ReverseProxy with the gate's transport (gate.NewTransport) and
// the gate's proxy settings, round robin over the backends, and nothing
// else (no routing, peeking, choice, accounting or holding). Beside the
// gate and nginx it tells what Go's net/http costs here and what the gate
// adds on top (BENCHMARKS.md, "The gate's own cost with a pool").
//
//	goproxy --listen=127.0.0.1:8080 http://127.0.0.1:11434 http://127.0.0.1:11435
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/gate"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	flag.Parse()
	if err := run(*listen, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "goproxy:", err)
		os.Exit(1)
	}
}

func run(listen string, backends []string) error {
	if len(backends) == 0 {
		return errors.New("no backend URL given (goproxy --listen=ADDR URL [URL])")
	}
	var targets []*url.URL
	for _, b := range backends {
		u, err := url.Parse(b)
		if err != nil || u.Host == "" {
			return fmt.Errorf("backend %q: not an http(s) URL", b)
		}
		targets = append(targets, u)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	server := &http.Server{Handler: newProxy(targets), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	return server.Serve(ln)
}

// newProxy is the gate's ReverseProxy (streams flushed at every write, pooled copy
// buffers, its transport) choosing the next backend in turn, with the one
// fix every Go proxy of streamed answers needs (full duplex, see
// gate/passthrough.go: without it about 1 % of streams are cut).
func newProxy(targets []*url.URL) http.Handler {
	var next atomic.Uint64
	buffers := &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(targets[(next.Add(1)-1)%uint64(len(targets))])
		},
		Transport:     gate.NewTransport(),
		FlushInterval: 0, // as the gate: streams (no Content-Length) and SSE are flushed at every write all the same
		BufferPool:    buffers,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		if r.ContentLength > 0 { // the transport's read past the end must not reach the client's body (as the gate)
			r.Body = struct {
				io.Reader
				io.Closer
			}{io.LimitReader(r.Body, r.ContentLength), r.Body}
		}
		rp.ServeHTTP(w, r)
	})
}

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte { return *p.pool.Get().(*[]byte) }

func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }
