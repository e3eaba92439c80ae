// Command wakepull measures the wake latency of the pull paths that
// external-push replaces: KEDA's metrics-api trigger polling /active_users
// every pollingInterval, with the exporter's cache in between and Prometheus
// scraping /metrics meanwhile (which refreshes the same cache). It marks a
// human active in the fake Open WebUI at a random moment and records when a
// KEDA poll first answers more than 0.
//
// With the defaults (cache 60 s, pollingInterval 120 s, scrape 15 s) one
// sample takes minutes, so the whole time base is divided by -scale (60 by
// default: cache 1 s, poll 2 s, scrape 250 ms); every duration in the model
// scales with it, and the figures are printed both as measured and
// multiplied back.
//
//	go run ./bench/wakepull            # 25 runs at 1/60 scale, about 2 minutes
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/go-kit/log"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
	"github.com/openwebui-exporter/openwebui_exporter/keda"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

func main() {
	runs := flag.Int("n", 25, "wake-ups to measure")
	scale := flag.Float64("scale", 60, "divide every duration by this")
	ttl := flag.Duration("cache-ttl", time.Minute, "--cache.ttl")
	polling := flag.Duration("polling-interval", 2*time.Minute, "KEDA pollingInterval")
	scrape := flag.Duration("scrape-interval", 15*time.Second, "Prometheus scrape interval (0: no Prometheus)")
	flag.Parse()
	div := func(d time.Duration) time.Duration { return time.Duration(float64(d) / *scale) }

	fake := fakeopenwebui.New(fakeopenwebui.Config{})
	token := fake.IssueAPIKey(fake.AddUser("exporter", "user"))
	fake.SetActiveHumans(0)
	upstream := httptest.NewServer(fake)
	defer upstream.Close()
	base, _ := url.Parse(upstream.URL)
	client := openwebui.NewClient(openwebui.Config{BaseURL: base, Token: func() (string, error) { return token, nil }})
	cache := snapshot.New(snapshot.Config{Fetch: client.Count, TTL: div(*ttl), MaxStale: div(2 * time.Minute), Timeout: 2500 * time.Millisecond})
	exporter := httptest.NewServer(keda.ActiveUsersHandler(demand.New(cache, nil), log.NewNopLogger()))
	defer exporter.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if *scrape > 0 {
		go every(ctx, div(*scrape), func() { cache.Get(ctx) })
	}
	// KEDA's poll loop: it publishes each answer's time and value.
	type answer struct {
		at    time.Time
		users string
	}
	var mu sync.Mutex
	var answers []answer
	httpClient := &http.Client{Timeout: 5 * time.Second}
	go every(ctx, div(*polling), func() {
		_, body := harness.Get(httpClient, exporter.URL)
		mu.Lock()
		answers = append(answers, answer{time.Now(), body})
		mu.Unlock()
	})
	firstAfter := func(t0 time.Time, body string) (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range answers {
			if a.at.After(t0) && a.users == body {
				return a.at, true
			}
		}
		return time.Time{}, false
	}

	fmt.Printf("wake latency, metrics-api: cache TTL %s, pollingInterval %s, Prometheus scrape %s; run at 1/%g scale; %d runs\n",
		*ttl, *polling, *scrape, *scale, *runs)
	var samples []time.Duration
	limit := 3 * div(*ttl+*polling)
	for i := range *runs {
		// Nobody there, and KEDA has seen it.
		fake.SetActiveHumans(0)
		settled := time.Now()
		must(harness.WaitFor(limit, func() bool { _, ok := firstAfter(settled.Add(div(*ttl)), `{"active_users":0}`); return ok }))
		time.Sleep(rand.N(div(*polling))) // arrive at a random point of KEDA's cycle
		t0 := time.Now()
		fake.SetActiveHumans(1)
		var seen time.Time
		must(harness.WaitFor(limit, func() bool {
			var ok bool
			seen, ok = firstAfter(t0, `{"active_users":1}`)
			return ok
		}))
		d := seen.Sub(t0)
		samples = append(samples, d)
		fmt.Printf("  run %2d: %s measured = %s at full scale\n", i+1, d.Round(time.Millisecond), scaleUp(d, *scale))
	}
	p50, p99 := harness.Percentile(samples, 50), harness.Percentile(samples, 99)
	fmt.Printf("metrics-api (measured at 1/%g scale): median %s, p99 %s -> at full scale: median %s, p99 %s\n",
		*scale, p50.Round(time.Millisecond), p99.Round(time.Millisecond), scaleUp(p50, *scale), scaleUp(p99, *scale))
}

func scaleUp(d time.Duration, scale float64) time.Duration {
	return time.Duration(float64(d) * scale).Round(time.Second)
}

func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		f()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "wakepull:", err)
		os.Exit(1)
	}
}
