// Command gatebench measures the wake gate beside the same stand-in Ollama
// reached directly and through nginx, in one run (issue 17, item 9):
//
// A fourth target, go-proxy (bench/goproxy), is a bare httputil.ReverseProxy
// with the gate's transport over the same stand-ins: Go's own floor here.
//
//   - the latency a proxy adds to a small non-streaming chat at 16
//     connections (wrk; medians over runs);
//   - what it adds to a stream's first chunk and to the time between chunks,
//     seen by the client;
//   - 1,000 held requests: the memory they add to the exporter, and how long
//     after the backend's first HTTP answer each of them reaches it.
//
// bench/gate.sh builds the binaries and runs it; see BENCHMARKS.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

const token = "sk-0123456789abcdef0123456789abcdef"

type options struct {
	bin, nginx               string
	runs, conns, threads     int
	wrkDuration              string
	streams                  int
	streamDuration           time.Duration
	chunks                   int
	chunkInterval            time.Duration
	pacedRate                int
	pacedDuration            time.Duration
	held, heldRuns           int
	startDelay               time.Duration
	noGate, noNginx          bool
	noGoProxy                bool
	replicas                 int
	skipLatency, skipStreams bool
	skipHeld                 bool
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "", "directory with openwebui_exporter, fakeopenwebui, fakeollama and goproxy (bench/gate.sh builds them)")
	flag.StringVar(&o.nginx, "nginx", "nginx", "nginx binary")
	flag.IntVar(&o.runs, "runs", 5, "runs of each latency and stream measurement, targets interleaved")
	flag.IntVar(&o.conns, "conns", 16, "wrk connections")
	flag.IntVar(&o.threads, "threads", 1, "wrk threads (1 leaves a core to the proxy and the stand-in)")
	flag.StringVar(&o.wrkDuration, "wrk-duration", "5s", "each wrk run")
	flag.IntVar(&o.pacedRate, "paced-rate", 320, "requests/s of the paced small chat (spread over --conns clients); 0 skips it")
	flag.DurationVar(&o.pacedDuration, "paced-duration", 5*time.Second, "each paced run")
	flag.IntVar(&o.streams, "streams", 16, "concurrent streamed chats")
	flag.DurationVar(&o.streamDuration, "stream-duration", 3*time.Second, "each stream run")
	flag.IntVar(&o.chunks, "chunks", 8, "chunks per streamed answer")
	flag.DurationVar(&o.chunkInterval, "chunk-interval", 20*time.Millisecond, "between chunks")
	flag.IntVar(&o.held, "held", 1000, "requests held at once")
	flag.IntVar(&o.heldRuns, "held-runs", 3, "runs of the held measurement (a fresh exporter each)")
	flag.DurationVar(&o.startDelay, "start-delay", 2*time.Second, "the stand-in's port is open this long before it serves HTTP, in the held measurement")
	flag.BoolVar(&o.noGate, "no-gate", false, "leave the gate out (an exporter without --gate.listen-address)")
	flag.IntVar(&o.replicas, "replicas", 1, "stand-in Ollama replicas: more than 1 puts them behind the gate as one pool (served under /pool) and behind nginx as one upstream; direct is the first")
	flag.BoolVar(&o.noNginx, "no-nginx", false, "leave nginx out")
	flag.BoolVar(&o.noGoProxy, "no-goproxy", false, "leave out go-proxy (bench/goproxy: a bare Go reverse proxy with the gate's transport, round robin over the same stand-ins)")
	flag.BoolVar(&o.skipLatency, "skip-latency", false, "skip the wrk latency measurement")
	flag.BoolVar(&o.skipStreams, "skip-streams", false, "skip the stream measurement")
	flag.BoolVar(&o.skipHeld, "skip-held", false, "skip the held measurement")
	flag.Parse()
	if o.bin == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: gatebench --bin DIR [flags]; see -h")
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; stopAll(); os.Exit(1) }()
	err := run(o)
	stopAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gatebench:", err)
		os.Exit(1)
	}
}

type target struct{ name, url string }

// Each process's address, held for the whole run (internal/heldport): a
// fixed port range could be another program's, and a port chosen free and
// bound later could be taken in between.
var (
	fakeAddr, ollamaAddr, exporterAddr, gateAddr, nginxAddr = harness.HeldAddr(), harness.HeldAddr(), harness.HeldAddr(), harness.HeldAddr(), harness.HeldAddr()
	goProxyAddr                                             = harness.HeldAddr()
	heldOllamaAddr, heldExporterAddr, heldGateAddr          = harness.HeldAddr(), harness.HeldAddr(), harness.HeldAddr()
)

func run(o options) error {
	dir, err := os.MkdirTemp("", "gatebench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := func(name string) string { return filepath.Join(o.bin, name) }
	exporterEnv := []string{"API_URL=http://" + fakeAddr, "TOKEN=" + token}

	if _, err := start(dir, "fakeopenwebui", bin("fakeopenwebui"), nil, "--listen="+fakeAddr, "--token="+token); err != nil {
		return err
	}
	if err := waitHTTP("http://"+fakeAddr+"/health", ""); err != nil {
		return err
	}
	if _, err := start(dir, "fakeollama", bin("fakeollama"), nil, "--listen="+ollamaAddr,
		"--chunks="+strconv.Itoa(o.chunks), "--chunk-interval="+o.chunkInterval.String()); err != nil {
		return err
	}
	replicas := []string{ollamaAddr}
	for i := 1; i < o.replicas; i++ { // more stand-ins, each on a held address
		a := harness.HeldAddr()
		replicas = append(replicas, a)
		if _, err := start(dir, fmt.Sprintf("fakeollama-%d", i), bin("fakeollama"), nil, "--listen="+a,
			"--chunks="+strconv.Itoa(o.chunks), "--chunk-interval="+o.chunkInterval.String()); err != nil {
			return err
		}
	}
	targets := []target{{"direct", "http://" + ollamaAddr}}
	if !o.noGate {
		args := []string{"--web.listen-address=" + exporterAddr, "--log.level=warn", "--gate.listen-address=" + gateAddr}
		gateURL := "http://" + gateAddr
		if len(replicas) == 1 {
			args = append(args, "--gate.backend=http://"+ollamaAddr)
		} else {
			for _, r := range replicas {
				args = append(args, "--gate.backend=pool=http://"+r)
			}
			gateURL += "/pool"
		}
		if _, err := start(dir, "exporter", bin("openwebui_exporter"), exporterEnv, args...); err != nil {
			return err
		}
		targets = append(targets, target{"gate", gateURL})
	}
	if !o.noGoProxy {
		args := []string{"--listen=" + goProxyAddr}
		for _, r := range replicas {
			args = append(args, "http://"+r)
		}
		if _, err := start(dir, "goproxy", bin("goproxy"), nil, args...); err != nil {
			return err
		}
		targets = append(targets, target{"go-proxy", "http://" + goProxyAddr})
	}
	if !o.noNginx {
		if _, err := startNginx(dir, o.nginx, nginxAddr, replicas...); err != nil {
			return err
		}
		targets = append(targets, target{"nginx", "http://" + nginxAddr})
	}
	for _, t := range targets {
		if err := waitHTTP(t.url+"/api/version", `"version"`); err != nil {
			return fmt.Errorf("%s: %w (logs in %s)", t.name, err, dir)
		}
	}
	fmt.Printf("gatebench: %d cores; stand-in Ollama (cmd/fakeollama) direct, %s\n", numCPU(), names(targets[1:]))

	table := newTable(targets)
	if !o.skipLatency {
		if err := latency(o, dir, targets, table); err != nil {
			return err
		}
	}
	if !o.skipStreams {
		if err := streamsTable(o, targets, table); err != nil {
			return err
		}
	}
	table.print()
	if !o.skipHeld && !o.noGate && o.heldRuns > 0 {
		if err := heldTable(o, dir, bin, exporterEnv); err != nil {
			return err
		}
	}
	return nil
}

func names(ts []target) string {
	var s []string
	for _, t := range ts {
		s = append(s, t.name)
	}
	if len(s) == 0 {
		return "no proxy"
	}
	return "through " + strings.Join(s, ", ")
}

// rotate gives each run another order of targets, so that none always
// runs first or last on a machine whose load drifts.
func rotate(ts []target, run int) []target {
	k := run % len(ts)
	return append(append([]target(nil), ts[k:]...), ts[:k]...)
}

func latency(o options, dir string, targets []target, tb *table) error {
	fmt.Printf("\nsmall chat (POST /api/chat, stream false, 1 chunk), %d connections: paced at %d req/s for %s, then wrk -t%d -c%d -d%s --latency flat out; %d runs each, targets interleaved\n",
		o.conns, o.pacedRate, o.pacedDuration, o.threads, o.conns, o.wrkDuration, o.runs)
	for _, t := range targets { // warm up connections and caches
		if _, err := runWrk(dir, t.url, o.threads, o.conns, "1s"); err != nil {
			return err
		}
	}
	for run := 0; run < o.runs && o.pacedRate > 0; run++ {
		for _, t := range rotate(targets, run) {
			interval := time.Duration(o.conns) * time.Second / time.Duration(o.pacedRate)
			l, err := measurePaced(t.url, o.conns, interval, o.pacedDuration)
			if err != nil {
				return err
			}
			p50, p99 := percentile(l, 50), percentile(l, 99)
			fmt.Printf("  run %d %-6s paced %d req/s  p50 %7.3f ms  p99 %7.3f ms\n", run+1, t.name, o.pacedRate, ms(p50), ms(p99))
			tb.add(fmt.Sprintf("small chat at %d req/s, p50 (ms)", o.pacedRate), t.name, ms(p50))
			tb.add(fmt.Sprintf("small chat at %d req/s, p99 (ms)", o.pacedRate), t.name, ms(p99))
		}
	}
	for run := 0; run < o.runs; run++ {
		for _, t := range rotate(targets, run) {
			r, err := runWrk(dir, t.url, o.threads, o.conns, o.wrkDuration)
			if err != nil {
				return err
			}
			fmt.Printf("  run %d %-6s %8.0f req/s  p50 %7.3f ms  p99 %7.3f ms\n", run+1, t.name, r.rps, r.p50, r.p99)
			tb.add("small chat, wrk -c16 flat out, p50 (ms)", t.name, r.p50)
			tb.add("small chat, wrk -c16 flat out, p99 (ms)", t.name, r.p99)
			tb.add("small chat, wrk -c16 flat out, req/s", t.name, r.rps)
		}
	}
	return nil
}

func streamsTable(o options, targets []target, tb *table) error {
	fmt.Printf("\nstreamed chat (POST /api/chat, %d chunks %s apart): %d streams for %s, %d runs, targets interleaved\n",
		o.chunks, o.chunkInterval, o.streams, o.streamDuration, o.runs)
	_, want, err := measureStreams(targets[0].url, 1, time.Millisecond, nil)
	if err != nil {
		return err
	}
	for run := 0; run < o.runs; run++ {
		for _, t := range rotate(targets, run) {
			s, _, err := measureStreams(t.url, o.streams, o.streamDuration, want)
			if err != nil {
				return err
			}
			f50, f99 := percentile(s.first, 50), percentile(s.first, 99)
			g50, g99 := percentile(s.gaps, 50), percentile(s.gaps, 99)
			fmt.Printf("  run %d %-6s %5d answers (%d cut)  first chunk p50 %7.3f p99 %7.3f ms  between chunks p50 %7.3f p99 %7.3f ms\n",
				run+1, t.name, len(s.first), s.cut, ms(f50), ms(f99), ms(g50), ms(g99))
			tb.add("first chunk p50 (ms)", t.name, ms(f50))
			tb.add("first chunk p99 (ms)", t.name, ms(f99))
			tb.add("between chunks p50 (ms)", t.name, ms(g50))
			tb.add("between chunks p99 (ms)", t.name, ms(g99))
			tb.add("streams cut short, % of answers", t.name, 100*float64(s.cut)/float64(s.cut+len(s.first)))
		}
	}
	return nil
}

func heldTable(o options, dir string, bin func(string) string, env []string) error {
	fmt.Printf("\n%d held chats (stream false): the gate's backend stopped, then started with --start-delay=%s; %d runs, a fresh exporter each\n",
		o.held, o.startDelay, o.heldRuns)
	var rss, heap, p50, p99, maxs []float64
	for run := 0; run < o.heldRuns; run++ {
		exporter, err := start(dir, "exporter-held", bin("openwebui_exporter"), env, "--web.listen-address="+heldExporterAddr,
			"--log.level=warn", "--gate.listen-address="+heldGateAddr, "--gate.backend=http://"+heldOllamaAddr)
		if err != nil {
			return err
		}
		if err := waitHTTP("http://"+heldGateAddr+"/_gate/status", ""); err != nil {
			stop(exporter)
			return err
		}
		r, err := measureHeld(dir, bin("fakeollama"), "http://"+heldGateAddr, "http://"+heldExporterAddr+"/metrics", heldOllamaAddr, o.held, o.startDelay)
		stop(exporter)
		if err != nil {
			return fmt.Errorf("held run %d: %w (logs in %s)", run+1, err, dir)
		}
		a50, a99, amax := percentile(r.afterReady, 50), percentile(r.afterReady, 99), percentile(r.afterReady, 100)
		fmt.Printf("  run %d  RSS %.1f → %.1f MiB (+%.1f)  heap in use %.1f → %.1f MiB (+%.1f)  reached the backend after its first HTTP answer: p50 %.1f p99 %.1f max %.1f ms\n",
			run+1, r.rssBefore, r.rssHolding, r.rssHolding-r.rssBefore, r.heapBefore, r.heapHolding, r.heapHolding-r.heapBefore, ms(a50), ms(a99), ms(amax))
		rss = append(rss, r.rssHolding-r.rssBefore)
		heap = append(heap, r.heapHolding-r.heapBefore)
		p50, p99, maxs = append(p50, ms(a50)), append(p99, ms(a99)), append(maxs, ms(amax))
	}
	fmt.Printf("\n| %d held requests (median of %d runs) | value | target |\n|---|---:|---|\n", o.held, o.heldRuns)
	fmt.Printf("| RSS added | %.1f MiB | ≤ 50 MiB |\n", median(rss))
	fmt.Printf("| Go heap in use added | %.1f MiB | |\n", median(heap))
	fmt.Printf("| reached the backend after its first HTTP answer, p50 | %.1f ms | |\n", median(p50))
	fmt.Printf("| reached the backend after its first HTTP answer, p99 | %.1f ms | ≤ 300 ms |\n", median(p99))
	fmt.Printf("| reached the backend after its first HTTP answer, last | %.1f ms | |\n", median(maxs))
	return nil
}

func numCPU() int {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}
