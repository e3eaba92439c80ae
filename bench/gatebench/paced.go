package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// measurePaced sends the small chat from conns clients, each one request
// every interval (not as fast as it can, as wrk does): the latency a proxy
// adds when the CPU is not saturated, as with Open WebUI's few requests.
func measurePaced(url string, conns int, interval, duration time.Duration) ([]time.Duration, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	var (
		mu        sync.Mutex
		latencies []time.Duration
		firstErr  error
		wg        sync.WaitGroup
	)
	deadline := time.Now().Add(duration)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// spread the clients over the interval
			time.Sleep(interval * time.Duration(i) / time.Duration(conns))
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for ; time.Now().Before(deadline); <-tick.C {
				sent := time.Now()
				resp, err := client.Post(url+"/api/chat", "application/json", strings.NewReader(chatBody))
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				took := time.Since(sent)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("paced chat to %s: %w", url, err)
				}
				latencies = append(latencies, took)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return latencies, firstErr
}
