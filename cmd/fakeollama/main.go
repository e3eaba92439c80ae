// Command fakeollama runs the stand-in Ollama (internal/fakeollama) as a
// process, for the cluster suite, the benchmarks and by hand:
//
//	go run ./cmd/fakeollama --listen=127.0.0.1:11434 --start-delay=5s
//
// With --start-delay the port is open at once but HTTP is served only after
// the delay, as `ollama serve` does while it discovers GPUs.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:11434", "address to listen on")
	delay := flag.Duration("start-delay", 0, "how long the port is open before HTTP is served")
	models := flag.String("models", "tiny:1b", "comma-separated model names")
	chunks := flag.Int("chunks", 8, "streamed chunks per answer (a request's num_predict overrides it)")
	interval := flag.Duration("chunk-interval", 20*time.Millisecond, "time between streamed chunks")
	version := flag.String("version", "0.17.4", "what /api/version answers")
	flag.Parse()
	if *delay < 0 || *chunks < 1 || *interval < 0 {
		fmt.Fprintln(os.Stderr, "fakeollama: --start-delay and --chunk-interval must be 0 or more, --chunks at least 1")
		os.Exit(2)
	}
	var names []string
	for _, m := range strings.Split(*models, ",") {
		if m = strings.TrimSpace(m); m != "" {
			names = append(names, m)
		}
	}
	h := fakeollama.New(fakeollama.Config{Models: names, Chunks: *chunks, ChunkInterval: *interval, Version: *version})
	s, err := fakeollama.NewServer(*listen, h)
	if err == nil {
		err = s.Start(*delay)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakeollama:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "fakeollama: listening on %s, serving HTTP after %s\n", s.Addr(), *delay)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	select {
	case <-s.Ready():
		fmt.Fprintf(os.Stderr, "fakeollama: ready at %s\n", s.ReadyAt().UTC().Format(time.RFC3339Nano))
	case <-stop:
		s.Stop()
		return
	}
	<-stop
	s.Stop()
}
