// Command busyhour runs the busy hour of issue 25 against real stand-in
// Ollama replicas on loopback, time compressed: 20 people chatting in turns
// with N replicas of one answer at a time, placed by the gate's balancing,
// by Open WebUI's random.choice over N URLs, and by a Kubernetes Service
// (round robin per new connection under one client's keep-alive pool); and
// the gate's pool scaled 1..N by KEDA's HPA on the gate's own demand value
// (a small scaler loop: internal/hpa over demand.Decider, replicas started
// after a start-up delay and stopped through the gate's preStop drain).
//
//	go run ./bench/busyhour                  # one model, then two; 30x faster than real time
//	go run ./bench/busyhour -scale=10 -models=2
//
// It prints time to first token (p50, p99, in real-time seconds: measured
// times the scale), answers per minute, model loads and replica-minutes.
// Every timer of the workload and of the gate's probe is compressed alike.
// gate/balance's simulated busy hour (go test ./gate/balance -run BusyHour -v)
// is the same workload on a virtual clock.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/gate"
	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
	"github.com/openwebui-exporter/openwebui_exporter/internal/heldport"
	"github.com/openwebui-exporter/openwebui_exporter/internal/hpa"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

// The workload in real time (divided by -scale when run): the same as
// gate/balance's simulated busy hour.
const (
	turns       = 8
	think       = 90 * time.Second
	answer      = 12 * time.Second
	prefillKiB  = 120 * time.Millisecond
	load        = 15 * time.Second
	userBytes   = 400
	answerBytes = 2500
	probeEvery  = 5 * time.Second  // the gate's probe (and /api/ps reading) while nothing is held
	startup     = 10 * time.Second // a scaled-out replica: pod and Ollama start, before it listens
)

func main() {
	scale := flag.Float64("scale", 30, "how much faster than real time")
	minutes := flag.Float64("minutes", 60, "length of the hour, in real-time minutes")
	replicas := flag.Int("replicas", 3, "stand-in replicas, one answer at a time each")
	models := flag.Int("models", 0, "models the people spread over; 0: 1 then 2")
	people := flag.Int("people", 20, "people chatting (all of them active for the hour)")
	seed := flag.Uint64("seed", 1, "random seed (the same people for each placement)")
	scaled := flag.Bool("scaled", true, "also run the gate's pool scaled 1..replicas by KEDA's HPA on its demand value")
	compressProbe := flag.Bool("compress-probe", true, "compress the gate's probe period (5 s) by -scale too; false: 5 s of real time, as before")
	late := flag.Bool("late", true, "also run the gate's pool with bind=late (a request waits in the gate for a free slot, at most 30 s compressed)")
	flag.Parse()
	if *scale <= 0 || *minutes <= 0 || *replicas < 1 || *people < 1 || *models < 0 || *models > 2 {
		fmt.Fprintln(os.Stderr, "busyhour: want -scale and -minutes above 0, -replicas and -people at least 1, -models 0, 1 or 2")
		os.Exit(2)
	}
	counts := []int{1, 2}
	if *models > 0 {
		counts = []int{*models}
	}
	for _, m := range counts {
		fmt.Printf("busy hour: %d people, %d replicas, %d model(s), %gx faster (%.1f min)\n", *people, *replicas, m, *scale, *minutes / *scale)
		fmt.Printf("%-28s %9s %9s %12s %12s %16s %6s\n", "placement", "TTFT p50", "TTFT p99", "answers/min", "model loads", "replica-minutes", "failed")
		// The placements run at once, each on its own replicas and with the
		// same people, so that a shared machine's load falls on all of them
		// alike (each mostly sleeps: its own load is small).
		places := []string{placeGate, placeRandom, placeService}
		if *scaled {
			places = slices.Insert(places, 1, placeScaled)
		}
		if *late {
			places = slices.Insert(places, 1, placeLate)
		}
		results := make([]result, len(places))
		errs := make([]error, len(places))
		var wg sync.WaitGroup
		for i, place := range places {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = run(setup{place: place, people: *people, replicas: *replicas, models: m, scale: *scale,
					hour: time.Duration(*minutes * float64(time.Minute)), seed: *seed, compressProbe: *compressProbe})
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
		for i, place := range places {
			if results[i].scaling != "" {
				fmt.Printf("%s: %s\n", place, results[i].scaling)
			}
		}
		for i, place := range places {
			if r := results[i]; r.nominal > 0 {
				fmt.Printf("%s: answers generated for %.2f times their nominal length\n", place, r.generating.Seconds()/r.nominal.Seconds())
			}
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
	scaling        string // a scaled pool: what its scaler did
	// generating is how long the answers took from their first chunk to
	// their last, nominal how long their chunk intervals add up to: timers
	// that run late on a loaded machine make the replicas busier than the
	// workload says.
	generating, nominal time.Duration
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

// The placements.
const (
	placeGate    = "gate"
	placeScaled  = "gate, scaled 1..N"
	placeLate    = "gate, bind=late"
	placeRandom  = "random.choice"
	placeService = "round robin per connection"
)

type setup struct {
	place                    string
	people, replicas, models int
	scale                    float64
	hour                     time.Duration
	seed                     uint64
	compressProbe            bool
}

// standIn is one stand-in replica on a held loopback port: it refuses
// connections until started and after it stopped, as a pod that is not
// there (yet, or any more).
type standIn struct {
	port       *heldport.Port
	newHandler func() http.Handler // a fresh replica: nothing loaded, nothing cached
	srv        *http.Server        // nil while stopped
}

func (s *standIn) start() error {
	ln, err := net.Listen("tcp", s.port.Addr())
	if err != nil {
		return fmt.Errorf("starting the stand-in on %s: %w", s.port.Addr(), err)
	}
	s.srv = &http.Server{Handler: s.newHandler()}
	go func() { _ = s.srv.Serve(ln) }()
	return nil
}

func (s *standIn) stop() {
	if s.srv != nil {
		_ = s.srv.Close()
		s.srv = nil
	}
}

func run(su setup) (result, error) {
	sc := func(d time.Duration) time.Duration { return time.Duration(float64(d) / su.scale) }
	var loads atomic.Int64
	names := []string{"chat:8b", "code:8b"}[:su.models]
	// A scaled pool has room for twice its maximum: a draining replica is
	// still there while a new one starts, as a terminating pod beside a new
	// one.
	slots := su.replicas
	if su.place == placeScaled {
		slots = 2 * su.replicas
	}
	var reps []*standIn
	var addrs []string
	for range slots {
		port, err := heldport.Hold("127.0.0.1", 0)
		if err != nil {
			return result{}, err
		}
		reps = append(reps, &standIn{port: port, newHandler: func() http.Handler {
			// A slot first (the queue), then the prefill, then the model load if
			// another model is in memory, then the answer.
			fake := fakeollama.New(fakeollama.Config{Models: names, ChunkInterval: sc(answer) / 20})
			l := &loader{next: fake, load: sc(load), loads: &loads, models: names}
			rp := fakeollama.NewReplica(l, fakeollama.ReplicaConfig{PrefillPerKiB: sc(prefillKiB)})
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !l.ps(w, r) {
					rp.ServeHTTP(w, r)
				}
			})
		}})
		addrs = append(addrs, port.Addr())
	}
	var pods *scaler
	if su.place == placeScaled {
		pods = &scaler{reps: reps, people: su.people, up: map[int]*pod{}}
		if err := pods.startNow(0, time.Now()); err != nil { // the pool's floor before the hour: one replica
			return result{}, err
		}
	} else {
		for _, r := range reps {
			if err := r.start(); err != nil {
				return result{}, err
			}
		}
	}
	defer func() {
		if pods != nil {
			pods.mu.Lock()
			defer pods.mu.Unlock()
		}
		for _, r := range reps {
			r.stop()
		}
	}()

	var target func(person int) string
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	rng := rand.New(rand.NewPCG(su.seed, 99))
	var rngMu sync.Mutex
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	switch su.place {
	case placeGate, placeScaled, placeLate:
		var flags []string
		for _, a := range addrs {
			flags = append(flags, "pool=http://"+a)
		}
		if su.place == placeLate {
			flags[0] += ",parallel=1,bind=late"
		}
		bcs, err := gate.ParseBackends(flags)
		if err != nil {
			return result{}, err
		}
		cfg := gate.Config{Backends: bcs}
		if su.compressProbe {
			cfg.ProbeInterval = sc(probeEvery)
		}
		cfg.LateBindWait = sc(30 * time.Second) // the gate's bound, compressed like every timer
		g, err := gate.New(cfg)
		if err != nil {
			return result{}, err
		}
		go g.Run(ctx)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return result{}, err
		}
		srv := &http.Server{Handler: g}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		base := "http://" + ln.Addr().String()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if st := g.Stats()[0]; st.State == gate.StateUp {
				break
			}
			if time.Now().After(deadline) {
				return result{}, fmt.Errorf("the gate's pool did not come up")
			}
		}
		target = func(int) string { return base + "/pool" }
		if pods != nil {
			pods.drainURL = base + "/_gate/drain"
			pods.decider = demand.New(nil, g)
		}
	case placeRandom:
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
	end := start.Add(sc(su.hour))
	var scaling sync.WaitGroup
	if pods != nil {
		h, err := hpa.New(hpa.Config{Min: 1, Max: su.replicas, Target: 1})
		if err != nil {
			return result{}, err
		}
		pods.hpa, pods.startup, pods.scale = h, sc(startup), su.scale
		scaling.Add(1)
		go func() {
			defer scaling.Done()
			pods.loop(ctx, start, end, sc(hpa.DefaultSyncPeriod))
		}()
	}
	var wg sync.WaitGroup
	for p := range su.people {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(su.seed, uint64(p)))
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
				ttft, generating, ok := stream(client, req)
				mu.Lock()
				if ok {
					res.ttft = append(res.ttft, ttft.Seconds()*su.scale)
					answers++
					res.generating += generating
					res.nominal += time.Duration(chunks-1) * (sc(answer) / 20)
				} else {
					res.failed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	finish := time.Now()
	elapsed := finish.Sub(start).Seconds() * su.scale / 60 // real-time minutes
	res.perMin = float64(answers) / elapsed
	res.loads = int(loads.Load())
	res.replicaMinutes = float64(su.replicas) * elapsed
	if pods != nil {
		cancel()
		scaling.Wait()
		res.replicaMinutes = pods.minutes(start, finish) * su.scale
		res.scaling = fmt.Sprintf("%d scale-outs, %d scale-ins (drained through the gate, then stopped), %d faults", pods.outs, pods.ins, pods.faults)
		if pods.faults > 0 {
			fmt.Fprintf(os.Stderr, "busyhour: %d scale operations failed (see above): a replica stopped without a finished drain, or one that did not start\n", pods.faults)
		}
	}
	return res, nil
}

// pod is a scaled replica's life: created at the scale-up, listening after
// the start-up delay, drained through the gate and stopped at the scale-in.
type pod struct {
	slot                    int
	created, ready, stopped time.Time // zero: not (yet)
	draining                bool
}

// scaler is KEDA's HPA over the stand-ins of a scaled pool: every sync it
// reads the gate's demand value for the pool as the exporter would answer
// KEDA (demand.Decider, every person active), asks internal/hpa for the
// replica count, starts replicas (listening after the start-up delay) or
// drains them as Kubernetes' preStop hook would (POST /_gate/drain from the
// replica's address, then stop).
type scaler struct {
	reps     []*standIn
	people   int
	hpa      *hpa.HPA
	decider  *demand.Decider
	drainURL string
	startup  time.Duration
	scale    float64

	mu        sync.Mutex
	up        map[int]*pod // by slot: created and not stopped
	done      []*pod
	outs, ins int // scale-outs and scale-ins (replicas started, drained and stopped)
	faults    int // a drain that did not finish, a start that failed
	work      sync.WaitGroup
}

// startNow starts slot at once (the pod the pool had before the hour).
func (s *scaler) startNow(slot int, now time.Time) error {
	if err := s.reps[slot].start(); err != nil {
		return err
	}
	s.up[slot] = &pod{slot: slot, created: now, ready: now}
	return nil
}

func (s *scaler) loop(ctx context.Context, start, end time.Time, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.work.Wait()
			return
		case now := <-t.C:
			if now.After(end) {
				continue // the hour is over: the people finish their answers
			}
			s.sync(ctx, time.Duration(float64(now.Sub(start))*s.scale))
		}
	}
}

func (s *scaler) sync(ctx context.Context, at time.Duration) {
	value, err := s.decider.Decide(snapshot.Snapshot{Count: openwebui.Count{ActiveUsers: s.people}}, "pool")
	if err != nil {
		fmt.Fprintln(os.Stderr, "busyhour: the pool's value:", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	current := 0
	for _, p := range s.up {
		if !p.draining {
			current++
		}
	}
	want := s.hpa.Desired(at, float64(value), current)
	now := time.Now()
	for ; current < want; current++ {
		slot := -1
		for i := range s.reps {
			if s.up[i] == nil {
				slot = i
				break
			}
		}
		p := &pod{slot: slot, created: now}
		s.up[slot] = p
		s.outs++
		s.work.Add(1)
		go func() {
			defer s.work.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.startup):
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if p.draining { // scaled in before it was ready: it never served
				s.retire(p, time.Now())
				return
			}
			if err := s.reps[slot].start(); err != nil {
				fmt.Fprintln(os.Stderr, "busyhour:", err)
				s.faults++
				return
			}
			p.ready = time.Now()
		}()
	}
	for ; current > want; current-- {
		var pick *pod
		for _, p := range s.up {
			if !p.draining && (pick == nil || deletedFirst(p, pick)) {
				pick = p
			}
		}
		pick.draining = true
		s.ins++
		if pick.ready.IsZero() {
			continue // its start-up ends it
		}
		s.work.Add(1)
		go func() {
			defer s.work.Done()
			drained := s.drain(s.reps[pick.slot].port.Addr())
			s.mu.Lock()
			defer s.mu.Unlock()
			if !drained {
				s.faults++
			}
			s.reps[pick.slot].stop()
			s.retire(pick, time.Now())
		}()
	}
}

// drain is the preStop hook: POST /_gate/drain?replica=ADDR from the
// replica's own address; it answers once no request runs there.
func (s *scaler) drain(addr string) bool {
	res, err := http.Post(s.drainURL+"?replica="+addr, "", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "busyhour: drain:", err)
		return false
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "busyhour: drain of", addr, "answered", res.Status)
		return false
	}
	return true
}

// retire records a pod's end (s.mu held).
func (s *scaler) retire(p *pod, at time.Time) {
	p.stopped = at
	delete(s.up, p.slot)
	s.done = append(s.done, p)
}

// deletedFirst says whether Kubernetes' ReplicaSet deletes a before b when
// it scales in: a pod not ready before a ready one, then the one ready the
// shortest time.
func deletedFirst(a, b *pod) bool {
	if a.ready.IsZero() != b.ready.IsZero() {
		return a.ready.IsZero()
	}
	return a.ready.After(b.ready)
}

// minutes is the pods' lifetimes between start and finish, in minutes of
// the compressed clock.
func (s *scaler) minutes(start, finish time.Time) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := 0.0
	for _, p := range append(slices.Collect(maps.Values(s.up)), s.done...) {
		stop := finish
		if !p.stopped.IsZero() && p.stopped.Before(finish) {
			stop = p.stopped
		}
		created := p.created
		if created.Before(start) {
			created = start
		}
		if stop.After(created) {
			total += stop.Sub(created).Minutes()
		}
	}
	return total
}

// stream sends req and reads its NDJSON answer to the end; it returns the
// time to the first chunk, the time from the first chunk to the last, and
// whether the answer ended with done:true.
func stream(c *http.Client, req *http.Request) (time.Duration, time.Duration, bool) {
	sent := time.Now()
	res, err := c.Do(req)
	if err != nil {
		return 0, 0, false
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, res.Body)
		return 0, 0, false
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var first, last time.Duration
	done := false
	for sc.Scan() {
		last = time.Since(sent)
		if first == 0 {
			first = last
		}
		done = strings.Contains(sc.Text(), `"done":true`)
	}
	return first, last - first, done && sc.Err() == nil
}
