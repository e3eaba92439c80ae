// Command startup measures the exporter's time from process start to its
// first correct answer, and its resident memory when idle after that.
//
//	go run ./bench/startup --exporter BIN --fake BIN   (bench/footprint.sh builds them)
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

var (
	exporterBin = flag.String("exporter", "./openwebui_exporter", "exporter binary")
	fakeBin     = flag.String("fake", "./fakeopenwebui", "fake Open WebUI binary")
	runs        = flag.Int("runs", 9, "runs")
)

func main() {
	flag.Parse()
	fakeAddr, exporterAddr := harness.HeldAddr(), harness.HeldAddr()
	fake, err := harness.StartFake(*fakeBin, fakeAddr, "--humans", "3")
	must(err)
	defer harness.Stop(fake)
	client := &http.Client{Timeout: 5 * time.Second}

	var firstAnswer []time.Duration
	var idleRSS []time.Duration // KiB, kept as durations to reuse Percentile
	for run := 1; run <= *runs; run++ {
		t0 := time.Now()
		exporter, err := harness.Start(*exporterBin, []string{"API_URL=http://" + fakeAddr, "TOKEN=" + harness.Token},
			"--web.listen-address="+exporterAddr, "--log.level=warn")
		must(err)
		err = harness.WaitFor(10*time.Second, func() bool {
			code, body := harness.Get(client, "http://"+exporterAddr+"/active_users")
			return code == 200 && body == `{"active_users":3}`
		})
		took := time.Since(t0)
		must(err)
		time.Sleep(2 * time.Second) // idle: no requests
		rss := harness.RSSKiB(exporter.Process.Pid)
		harness.Stop(exporter)
		client.CloseIdleConnections()
		firstAnswer = append(firstAnswer, took)
		idleRSS = append(idleRSS, time.Duration(rss))
		fmt.Printf("  run %d: first correct answer after %s, idle RSS %.1f MiB\n", run, harness.Ms(took), float64(rss)/1024)
	}
	fmt.Printf("start to first correct answer: median %s, max %s\n", harness.Ms(harness.Percentile(firstAnswer, 50)), harness.Ms(harness.Percentile(firstAnswer, 100)))
	fmt.Printf("idle RSS: median %.1f MiB, max %.1f MiB (target < 20 MB)\n",
		float64(harness.Percentile(idleRSS, 50))/1024, float64(harness.Percentile(idleRSS, 100))/1024)
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "startup:", err)
		os.Exit(2)
	}
}
