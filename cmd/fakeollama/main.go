// Command fakeollama runs the stand-in Ollama (internal/fakeollama) as a
// process, for the cluster suite, the benchmarks and by hand:
//
//	go run ./cmd/fakeollama --listen=127.0.0.1:11434 --start-delay=5s
//
// With --start-delay the port is open at once but HTTP is served only after
// the delay, as `ollama serve` does while it discovers GPUs. It says on
// stderr when it serves ("fakeollama: ready at RFC3339Nano"); with
// --arrivals=FILE it writes to FILE, one line each, when every request other
// than model lists, /api/version and / arrived (Unix nanoseconds, a space,
// method and path), so that a benchmark can time held requests against the
// ready moment (a line "UNIXNANO ready"). With --load-time it loads models
// as Ollama does (fakeollama.Loader): a load time per model, one load at a
// time, --max-loaded models in memory, /api/ps, and the preload request.
// With --parallel=N it generates N answers at once and queues the rest, as
// Ollama with OLLAMA_NUM_PARALLEL=N (fakeollama.Replica).
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:11434", "address to listen on")
	delay := flag.Duration("start-delay", 0, "how long the port is open before HTTP is served")
	models := flag.String("models", "tiny:1b", "comma-separated model names; empty: none, as a fresh Ollama")
	chunks := flag.Int("chunks", 8, "streamed chunks per answer (a request's num_predict overrides it)")
	interval := flag.Duration("chunk-interval", 20*time.Millisecond, "time between streamed chunks (0: none)")
	version := flag.String("version", "0.17.4", "what /api/version answers")
	keepAlive := flag.Duration("keep-alive", 5*time.Minute, "how long a model stays in /api/ps after a request, as OLLAMA_KEEP_ALIVE (negative: for ever)")
	pull := flag.Duration("pull-duration", 0, "how long POST /api/pull downloads, with a progress line every --chunk-interval (1s when 0)")
	arrivals := flag.String("arrivals", "", "file to write each request's arrival to (Unix nanoseconds, method, path); none when empty")
	loadTime := flag.String("load-time", "", "load models as Ollama does, taking this long each: DURATION for every model, or MODEL=DURATION,...[,DURATION for the rest]; off when empty")
	maxLoaded := flag.Int("max-loaded", 1, "with --load-time: models in memory at once (OLLAMA_MAX_LOADED_MODELS)")
	parallel := flag.Int("parallel", 0, "answers generated at once, the rest queued, as OLLAMA_NUM_PARALLEL; 0: no limit")
	flag.Parse()
	if flag.NArg() > 0 {
		fail(2, fmt.Errorf("unexpected arguments %q", flag.Args()))
	}
	if *delay < 0 || *chunks < 1 || *interval < 0 || *keepAlive == 0 || *pull < 0 || *parallel < 0 {
		fail(2, fmt.Errorf("--start-delay, --chunk-interval, --pull-duration and --parallel must be 0 or more, --chunks at least 1, --keep-alive not 0"))
	}
	names := []string{} // not nil: an empty --models means no models
	for _, m := range strings.Split(*models, ",") {
		if m = strings.TrimSpace(m); m != "" {
			names = append(names, m)
		}
	}
	if *interval == 0 {
		*interval = -1 // the package's "none"
	}
	cfg := fakeollama.Config{Models: names, Chunks: *chunks, ChunkInterval: *interval, Version: *version, KeepAlive: *keepAlive, PullDuration: *pull}
	var arrivalsLog *arrivalLog
	if *arrivals != "" {
		var err error
		if arrivalsLog, err = newArrivalLog(*arrivals); err != nil {
			fail(1, err)
		}
		defer arrivalsLog.close()
		cfg.OnRequest = arrivalsLog.record
	}
	var handler http.Handler = fakeollama.New(cfg)
	if *loadTime != "" {
		lcfg, err := parseLoadTime(*loadTime)
		if err != nil {
			fail(2, fmt.Errorf("--load-time: want DURATION or MODEL=DURATION,...: %w", err))
		}
		if *maxLoaded < 1 {
			fail(2, fmt.Errorf("--max-loaded %d: want at least 1", *maxLoaded))
		}
		lcfg.MaxLoaded, lcfg.KeepAlive = *maxLoaded, *keepAlive
		handler = fakeollama.NewLoader(handler, lcfg)
	}
	if *parallel > 0 {
		handler = fakeollama.NewReplica(handler, fakeollama.ReplicaConfig{Parallel: *parallel})
	}
	s, err := fakeollama.NewServer(*listen, handler)
	if err == nil {
		err = s.Start(*delay)
	}
	if err != nil {
		fail(1, err)
	}
	fmt.Fprintf(os.Stderr, "fakeollama: listening on %s, serving HTTP after %s\n", s.Addr(), *delay)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	select {
	case <-s.Ready():
		fmt.Fprintf(os.Stderr, "fakeollama: ready at %s\n", s.ReadyAt().UTC().Format(time.RFC3339Nano))
		if arrivalsLog != nil {
			arrivalsLog.write(s.ReadyAt(), "ready")
		}
	case <-stop:
		s.Stop()
		return
	}
	<-stop
	s.Stop()
}

// parseLoadTime reads --load-time: "8s", or "llama3.1:8b=8s,llama3.1:70b=40s[,2s]".
func parseLoadTime(v string) (fakeollama.LoaderConfig, error) {
	cfg := fakeollama.LoaderConfig{LoadTime: map[string]time.Duration{}}
	for _, part := range strings.Split(v, ",") {
		model, d, named := strings.Cut(part, "=")
		if !named {
			d = model
		}
		dur, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil || dur < 0 {
			return cfg, fmt.Errorf("%q: want a duration of 0 or more", part)
		}
		if named {
			cfg.LoadTime[strings.TrimSpace(model)] = dur
		} else {
			cfg.DefaultLoadTime = dur
		}
	}
	return cfg, nil
}

func fail(code int, err error) {
	fmt.Fprintln(os.Stderr, "fakeollama:", err)
	os.Exit(code)
}

// arrivalLog writes one line per event, unbuffered, so that a reader sees
// each line at once.
type arrivalLog struct {
	mu sync.Mutex
	f  *os.File
}

func newArrivalLog(path string) (*arrivalLog, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--arrivals: %w", err)
	}
	return &arrivalLog{f: f}, nil
}

func (l *arrivalLog) write(at time.Time, what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.f, "%d %s\n", at.UnixNano(), what)
}

func (l *arrivalLog) record(r *http.Request, at time.Time) { l.write(at, r.Method+" "+r.URL.Path) }

func (l *arrivalLog) close() error { return l.f.Close() }
