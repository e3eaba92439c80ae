// Command busyhour runs the busy hour of issue 25 against real stand-in
// Ollama replicas on loopback, time compressed: 20 people chatting in turns
// with N replicas of one answer at a time, placed by the gate's balancing,
// by Open WebUI's random.choice over N URLs, and by a Kubernetes Service
// (round robin per new connection under one client's keep-alive pool).
//
//	go run ./bench/busyhour                  # one model, then two; 30x faster than real time
//	go run ./bench/busyhour -scale=10 -models=2
//
// It prints time to first token (p50, p99, in real-time seconds: measured
// times the scale), answers per minute, model loads and replica-minutes.
// gate/balance's simulated busy hour (go test ./gate/balance -run BusyHour -v)
// is the same workload on a virtual clock.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/gate"
	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
)

// The workload in real time (divided by -scale when run): the same as
// gate/balance's simulated busy hour.
const (
	people      = 20
	turns       = 8
	think       = 90 * time.Second
	answer      = 12 * time.Second
	prefillKiB  = 120 * time.Millisecond
	load        = 15 * time.Second
	userBytes   = 400
	answerBytes = 2500
)

func main() {
	scale := flag.Float64("scale", 30, "how much faster than real time")
	minutes := flag.Float64("minutes", 60, "length of the hour, in real-time minutes")
	replicas := flag.Int("replicas", 3, "stand-in replicas, one answer at a time each")
	models := flag.Int("models", 0, "models the people spread over; 0: 1 then 2")
	seed := flag.Uint64("seed", 1, "random seed (the same people for each placement)")
	flag.Parse()
	counts := []int{1, 2}
	if *models > 0 {
		counts = []int{*models}
	}
	for _, m := range counts {
		fmt.Printf("busy hour: %d people, %d replicas, %d model(s), %gx faster (%.1f min)\n", people, *replicas, m, *scale, *minutes / *scale)
		fmt.Printf("%-28s %9s %9s %12s %12s %16s %6s\n", "placement", "TTFT p50", "TTFT p99", "answers/min", "model loads", "replica-minutes", "failed")
		// The placements run at once, each on its own replicas and with the
		// same people, so that a shared machine's load falls on all of them
		// alike (each mostly sleeps: its own load is small).
		places := []string{"gate", "random.choice", "round robin per connection"}
		results := make([]result, len(places))
		errs := make([]error, len(places))
		var wg sync.WaitGroup
		for i, place := range places {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = run(place, *replicas, m, *scale, time.Duration(*minutes*float64(time.Minute)), *seed)
			}()
		}
		wg.Wait()
		for i, place := range places {
			if errs[i] != nil {
				fmt.Fprintln(os.Stderr, "busyhour:", place+":", errs[i])
				os.Exit(1)
			}
			r := results[i]
			fmt.Printf("%-28s %8.1fs %8.1fs %12.1f %12d %16.1f %6d\n", place, r.p(.5), r.p(.99), r.perMin, r.loads, r.replicaMinutes, r.failed)
		}
		fmt.Println()
	}
}

type result struct {
	ttft           []float64 // real-time seconds
	perMin         float64
	loads          int
	replicaMinutes float64
	failed         int
}

func (r result) p(q float64) float64 {
	if len(r.ttft) == 0 {
		return 0
	}
	s := slices.Clone(r.ttft)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

// loader is a stand-in replica's GPU memory: one model at a time; an answer
// for another model first loads it (behind the replica's slot, so the answers
// before it keep theirs).
type loader struct {
	next   http.Handler
	load   time.Duration
	mu     sync.Mutex
	model  string
	loads  *atomic.Int64
	models []string
}

func (l *loader) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		model := ""
		for _, m := range l.models {
			if strings.Contains(string(body), `"model":"`+m+`"`) {
				model = m
			}
		}
		l.mu.Lock()
		if model != "" && model != l.model {
			l.model = model
			l.loads.Add(1)
			time.Sleep(l.load) // the replica loads it, holding everything behind
		}
		l.mu.Unlock()
	}
	l.next.ServeHTTP(w, r)
}

// ollamaPS answers /api/ps with the loaded model, so that the gate's probe
// sees it (the stand-in's own /api/ps lists what it served within keep-alive).
func (l *loader) ps(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Path != "/api/ps" {
		return false
	}
	l.mu.Lock()
	m := l.model
	l.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if m == "" {
		_, _ = io.WriteString(w, `{"models":[]}`)
	} else {
		fmt.Fprintf(w, `{"models":[{"name":%q,"model":%q}]}`, m, m)
	}
	return true
}

func run(place string, n, models int, scale float64, hour time.Duration, seed uint64) (result, error) {
	sc := func(d time.Duration) time.Duration { return time.Duration(float64(d) / scale) }
	var loads atomic.Int64
	names := []string{"chat:8b", "code:8b"}[:models]
	var addrs []string
	var servers []*http.Server
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return result{}, err
		}
		// A slot first (the queue), then the prefill, then the model load if
		// another model is in memory, then the answer.
		fake := fakeollama.New(fakeollama.Config{Models: names, ChunkInterval: sc(answer) / 20})
		l := &loader{next: fake, load: sc(load), loads: &loads, models: names}
		rp := fakeollama.NewReplica(l, fakeollama.ReplicaConfig{PrefillPerKiB: sc(prefillKiB)})
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !l.ps(w, r) {
				rp.ServeHTTP(w, r)
			}
		})}
		go func() { _ = srv.Serve(ln) }()
		servers = append(servers, srv)
		addrs = append(addrs, ln.Addr().String())
	}
	defer func() {
		for _, s := range servers {
			_ = s.Close()
		}
	}()

	var target func(person int) string
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	rng := rand.New(rand.NewPCG(seed, 99))
	var rngMu sync.Mutex
	switch place {
	case "gate":
		var flags []string
		for _, a := range addrs {
			flags = append(flags, "pool=http://"+a)
		}
		bcs, err := gate.ParseBackends(flags)
		if err != nil {
			return result{}, err
		}
		g, err := gate.New(gate.Config{Backends: bcs})
		if err != nil {
			return result{}, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go g.Run(ctx)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return result{}, err
		}
		srv := &http.Server{Handler: g}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		base := "http://" + ln.Addr().String() + "/pool"
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if st := g.Stats()[0]; st.State == gate.StateUp {
				break
			}
			if time.Now().After(deadline) {
				return result{}, fmt.Errorf("the gate's pool did not come up")
			}
		}
		target = func(int) string { return base }
	case "random.choice":
		target = func(int) string {
			rngMu.Lock()
			defer rngMu.Unlock()
			return "http://" + addrs[rng.IntN(len(addrs))]
		}
	default: // a Service: each new connection to the next replica, kept alive after
		var next atomic.Int64
		var d net.Dialer
		client.Transport = &http.Transport{MaxIdleConnsPerHost: 100, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addrs[int(next.Add(1)-1)%len(addrs)])
		}}
		target = func(int) string { return "http://ollama-svc" }
	}

	var mu sync.Mutex
	var res result
	answers := 0
	start := time.Now()
	end := start.Add(sc(hour))
	var wg sync.WaitGroup
	for p := range people {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(p)))
			exp := func(mean time.Duration) time.Duration { return time.Duration(r.ExpFloat64() * float64(mean)) }
			model := names[p%len(names)]
			chat := 0
			for turn := 0; ; turn = (turn + 1) % turns {
				time.Sleep(sc(exp(think)))
				if time.Now().After(end) {
					return
				}
				if turn == 0 {
					chat++
				}
				chunks := max(1, int(r.ExpFloat64()*20))
				var msgs []string
				for i := 0; i <= turn; i++ {
					if i > 0 {
						msgs = append(msgs, fmt.Sprintf(`{"role":"assistant","content":%q}`, strings.Repeat("a", answerBytes)))
					}
					msgs = append(msgs, fmt.Sprintf(`{"role":"user","content":%q}`, fmt.Sprintf("person %d chat %d turn %d ", p, chat, i)+strings.Repeat("q", userBytes)))
				}
				body := fmt.Sprintf(`{"model":%q,"messages":[%s],"stream":true,"options":{"num_predict":%d}}`, model, strings.Join(msgs, ","), chunks)
				req, _ := http.NewRequest(http.MethodPost, target(p)+"/api/chat", strings.NewReader(body))
				req.Header.Set("X-OpenWebUI-Chat-Id", fmt.Sprintf("p%d-c%d", p, chat))
				req.Header.Set("X-OpenWebUI-User-Id", fmt.Sprintf("user-%d", p))
				ttft, ok := stream(client, req)
				mu.Lock()
				if ok {
					res.ttft = append(res.ttft, ttft.Seconds()*scale)
					answers++
				} else {
					res.failed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds() * scale / 60 // real-time minutes
	res.perMin = float64(answers) / elapsed
	res.loads = int(loads.Load())
	res.replicaMinutes = float64(n) * elapsed
	return res, nil
}

// stream sends req and reads its NDJSON answer to the end; it returns the
// time to the first chunk and whether the answer ended with done:true.
func stream(c *http.Client, req *http.Request) (time.Duration, bool) {
	sent := time.Now()
	res, err := c.Do(req)
	if err != nil {
		return 0, false
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, res.Body)
		return 0, false
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var first time.Duration
	done := false
	for sc.Scan() {
		if first == 0 {
			first = time.Since(sent)
		}
		done = strings.Contains(sc.Text(), `"done":true`)
	}
	return first, done && sc.Err() == nil
}
