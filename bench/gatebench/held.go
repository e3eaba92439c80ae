package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// heldResult is one run of the held-requests measurement.
type heldResult struct {
	rssBefore, rssHolding   float64 // MiB, process_resident_memory_bytes
	heapBefore, heapHolding float64 // MiB, go_memstats_heap_inuse_bytes
	afterReady              []time.Duration
}

// measureHeld sends n small chats to a gate whose backend (backendAddr) is
// stopped, waits until the gate holds them all, reads the exporter's memory,
// then starts the stand-in there with startDelay (the port opens at once,
// HTTP only after the delay) and times each request's arrival at the
// stand-in from the moment it served HTTP.
func measureHeld(dir, fakeollama, gateURL, metricsURL, backendAddr string, n int, startDelay time.Duration) (heldResult, error) {
	var res heldResult
	if err := waitStatus(gateURL, func(b statusBackend) bool { return b.State == "asleep" }, 10*time.Second); err != nil {
		return res, fmt.Errorf("before holding: %w", err)
	}
	var err error
	if res.rssBefore, res.heapBefore, err = memory(metricsURL); err != nil {
		return res, err
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, DisableCompression: true}, Timeout: 2 * time.Minute}
	defer client.CloseIdleConnections()
	type answer struct {
		status int
		body   []byte
		err    error
	}
	answers := make(chan answer, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Post(gateURL+"/api/chat", "application/json", strings.NewReader(chatBody))
			if err != nil {
				answers <- answer{err: err}
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers <- answer{status: resp.StatusCode, body: body, err: err}
		}()
	}
	if err := waitStatus(gateURL, func(b statusBackend) bool { return b.Held == n }, 30*time.Second); err != nil {
		return res, fmt.Errorf("holding %d: %w", n, err)
	}
	time.Sleep(500 * time.Millisecond) // let what the requests allocated settle
	if res.rssHolding, res.heapHolding, err = memory(metricsURL); err != nil {
		return res, err
	}

	arrivals := filepath.Join(dir, "arrivals.txt")
	backend, err := start(dir, "fakeollama-held", fakeollama, nil, "--listen="+backendAddr, "--start-delay="+startDelay.String(),
		"--chunk-interval=0", "--arrivals="+arrivals)
	if err != nil {
		return res, err
	}
	defer stop(backend)
	go func() { wg.Wait(); close(answers) }()
	var want []byte
	got := 0
	for a := range answers {
		switch {
		case a.err != nil:
			return res, fmt.Errorf("held chat: %w", a.err)
		case a.status != http.StatusOK:
			return res, fmt.Errorf("held chat: %d %s", a.status, a.body)
		case want == nil:
			want = a.body
		case !bytes.Equal(a.body, want):
			return res, fmt.Errorf("held chats answered differently:\n%s\n%s", a.body, want)
		}
		got++
	}
	ready, chats, err := readArrivals(arrivals)
	if err != nil {
		return res, err
	}
	if got != n || len(chats) != n {
		return res, fmt.Errorf("%d answers and %d arrivals at the stand-in, want %d each", got, len(chats), n)
	}
	for _, at := range chats {
		res.afterReady = append(res.afterReady, at.Sub(ready))
	}
	return res, nil
}

// readArrivals reads cmd/fakeollama's --arrivals file: its ready moment and
// the arrival of each request.
func readArrivals(path string) (ready time.Time, chats []time.Time, err error) {
	f, err := os.Open(path)
	if err != nil {
		return ready, nil, fmt.Errorf("arrivals: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		nanos, what, _ := strings.Cut(sc.Text(), " ")
		ns, err := strconv.ParseInt(nanos, 10, 64)
		if err != nil {
			return ready, nil, fmt.Errorf("arrivals: line %q: %w", sc.Text(), err)
		}
		if what == "ready" {
			ready = time.Unix(0, ns)
		} else {
			chats = append(chats, time.Unix(0, ns))
		}
	}
	if ready.IsZero() {
		return ready, nil, fmt.Errorf("arrivals: no ready line in %s", path)
	}
	return ready, chats, sc.Err()
}

type statusBackend struct {
	State string `json:"state"`
	Held  int    `json:"held"`
}

// waitStatus polls the gate's /_gate/status until its one backend
// satisfies ok.
func waitStatus(gateURL string, ok func(statusBackend) bool, within time.Duration) error {
	var last []byte
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(gateURL + "/_gate/status")
		if err != nil {
			return fmt.Errorf("gate status: %w", err)
		}
		last, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		var s struct{ Backends []statusBackend }
		if err := json.Unmarshal(last, &s); err != nil {
			return fmt.Errorf("gate status: %s: %w", last, err)
		}
		if len(s.Backends) != 1 {
			return fmt.Errorf("gate status: %s: want one backend", last)
		}
		if ok(s.Backends[0]) {
			return nil
		}
	}
	return fmt.Errorf("gate status still %s after %s", last, within)
}

// memory reads the exporter's resident memory and Go heap in use (MiB).
func memory(metricsURL string) (rss, heap float64, err error) {
	resp, err := http.Get(metricsURL)
	if err != nil {
		return 0, 0, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, _ := strings.Cut(sc.Text(), " ")
		var dst *float64
		switch name {
		case "process_resident_memory_bytes":
			dst = &rss
		case "go_memstats_heap_inuse_bytes":
			dst = &heap
		default:
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("metrics: %s: %w", sc.Text(), err)
		}
		*dst = v / (1 << 20)
		found++
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("metrics at %s: no process_resident_memory_bytes or go_memstats_heap_inuse_bytes", metricsURL)
	}
	return rss, heap, sc.Err()
}
