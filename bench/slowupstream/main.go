// Command slowupstream measures what callers of /active_users wait while Open
// WebUI (the fake) takes 4 s to answer and the cache has expired. With a good
// count within --cache.max-stale, the stale count is answered at once
// (target p99 < 5 ms). Without one (a fresh exporter), callers wait for the
// fetch, never longer than --openwebui.timeout.
//
//	go run ./bench/slowupstream --exporter BIN --fake BIN   (bench/slow-upstream.sh builds them)
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

var (
	exporterBin = flag.String("exporter", "./openwebui_exporter", "exporter binary")
	fakeBin     = flag.String("fake", "./fakeopenwebui", "fake Open WebUI binary")
	runs        = flag.Int("runs", 5, "runs of each case")
	clients     = flag.Int("clients", 16, "concurrent callers")
	perClient   = flag.Int("requests", 200, "requests per caller and run (stale case)")
)

const (
	upstreamDelay = 4 * time.Second
	timeout       = 2500 * time.Millisecond // the exporter's default --openwebui.timeout
	ttl           = time.Second
)

func main() {
	flag.Parse()
	fmt.Printf("Open WebUI answers in %s; exporter --cache.ttl=%s --openwebui.timeout=%s; %d callers; %d runs\n",
		upstreamDelay, ttl, timeout, *clients, *runs)

	var staleP50, staleP99, staleMax, coldMax []time.Duration
	for run := 1; run <= *runs; run++ {
		lat, codes := staleCase()
		p50, p99, worst := harness.Percentile(lat, 50), harness.Percentile(lat, 99), harness.Percentile(lat, 100)
		staleP50, staleP99, staleMax = append(staleP50, p50), append(staleP99, p99), append(staleMax, worst)
		fmt.Printf("  within the stale bound, run %d: %d requests %v, p50 %s, p99 %s, max %s\n", run, len(lat), codes, harness.Ms(p50), harness.Ms(p99), harness.Ms(worst))
	}
	for run := 1; run <= *runs; run++ {
		lat, codes := coldCase()
		worst := harness.Percentile(lat, 100)
		coldMax = append(coldMax, worst)
		fmt.Printf("  no good count yet,       run %d: %d requests %v, min %s, max %s\n", run, len(lat), codes, harness.Ms(harness.Percentile(lat, 0)), harness.Ms(worst))
	}
	fmt.Printf("within the stale bound: median p50 %s, median p99 %s, median max %s (target p99 < 5 ms)\n",
		harness.Ms(harness.Percentile(staleP50, 50)), harness.Ms(harness.Percentile(staleP99, 50)), harness.Ms(harness.Percentile(staleMax, 50)))
	fmt.Printf("no good count yet:      median max %s, worst max %s (bound: --openwebui.timeout=%s)\n",
		harness.Ms(harness.Percentile(coldMax, 50)), harness.Ms(harness.Percentile(coldMax, 100)), timeout)
}

// staleCase: a good count, then Open WebUI turns slow and the TTL passes.
func staleCase() ([]time.Duration, map[int]int) {
	fake, exporter, base := start()
	defer harness.Stop(fake)
	defer harness.Stop(exporter)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *clients}}
	must(harness.WaitFor(10*time.Second, func() bool { c, _ := harness.Get(client, base+"/active_users"); return c == 200 }))
	must(harness.Post("http://" + fakeAddr + "/_fake/fault?kind=slow&delay=" + upstreamDelay.String()))
	time.Sleep(ttl + 100*time.Millisecond)
	return hammer(client, base, *perClient)
}

// coldCase: a fresh exporter in front of an already slow Open WebUI.
func coldCase() ([]time.Duration, map[int]int) {
	fake, err := harness.StartFake(*fakeBin, fakeAddr)
	must(err)
	defer harness.Stop(fake)
	must(harness.Post("http://" + fakeAddr + "/_fake/fault?kind=slow&delay=" + upstreamDelay.String()))
	exporter, err := harness.StartExporter(*exporterBin, exporterAddr, fakeAddr, "--cache.ttl="+ttl.String())
	must(err)
	defer harness.Stop(exporter)
	client := &http.Client{Timeout: 10 * time.Second}
	return hammer(client, "http://"+exporterAddr, 1)
}

var fakeAddr, exporterAddr = harness.HeldAddr(), harness.HeldAddr()

func start() (fake, exporter *exec.Cmd, base string) {
	fake, err := harness.StartFake(*fakeBin, fakeAddr)
	must(err)
	exporter, err = harness.StartExporter(*exporterBin, exporterAddr, fakeAddr, "--cache.ttl="+ttl.String())
	must(err)
	return fake, exporter, "http://" + exporterAddr
}

// hammer sends n requests from each caller and returns every latency.
func hammer(client *http.Client, base string, n int) ([]time.Duration, map[int]int) {
	var mu sync.Mutex
	var lat []time.Duration
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range *clients {
		wg.Go(func() {
			for range n {
				t0 := time.Now()
				code, _ := harness.Get(client, base+"/active_users")
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				codes[code]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return lat, codes
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "slowupstream:", err)
		os.Exit(2)
	}
}
