package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// streamBody asks for a streamed chat (Ollama streams by default); the
// stand-in answers with --chunks chunks, --chunk-interval apart.
const streamBody = `{"model":"tiny:1b","messages":[{"role":"user","content":"hi"}]}`

// streamSamples are what the client saw of many streamed answers.
type streamSamples struct {
	first []time.Duration // request sent → first chunk read
	gaps  []time.Duration // between consecutive answer chunks (the done line excluded)
	cut   int             // answers that ended before their last line (counted, not timed)
}

// errCut is an answer that ended early: the run goes on, and counts it.
var errCut = errors.New("the answer ended early")

// measureStreams runs streams concurrent clients against url/api/chat for
// duration, each reading answers line by line. Every answer must be
// byte-identical to want (when want is not nil): a proxy must not change it.
func measureStreams(url string, streams int, duration time.Duration, want []byte) (streamSamples, []byte, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: streams, DisableCompression: true}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	var (
		mu       sync.Mutex
		all      streamSamples
		firstErr error
		body0    []byte
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(duration)
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				s, body, err := oneStream(client, url)
				mu.Lock()
				if errors.Is(err, errCut) {
					all.cut++
					mu.Unlock()
					continue
				}
				if err == nil && want != nil && !bytes.Equal(body, want) {
					err = fmt.Errorf("%s: answer differs from the direct one:\n%s\nwant\n%s", url, body, want)
				}
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				if body0 == nil {
					body0 = body
				}
				all.first = append(all.first, s.first...)
				all.gaps = append(all.gaps, s.gaps...)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return all, body0, firstErr
}

func oneStream(client *http.Client, url string) (streamSamples, []byte, error) {
	var s streamSamples
	sent := time.Now()
	resp, err := client.Post(url+"/api/chat", "application/json", strings.NewReader(streamBody))
	if err != nil {
		return s, nil, fmt.Errorf("streamed chat to %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return s, nil, fmt.Errorf("streamed chat to %s: %d %s", url, resp.StatusCode, b)
	}
	var body bytes.Buffer
	r := bufio.NewReader(resp.Body)
	last := sent
	for n := 0; ; n++ {
		line, err := r.ReadBytes('\n')
		now := time.Now()
		body.Write(line)
		if err == io.EOF && len(line) == 0 {
			break
		}
		if err != nil {
			return s, nil, fmt.Errorf("reading the stream from %s after %d bytes: %w: %w", url, body.Len(), errCut, err)
		}
		if bytes.Contains(line, []byte(`"done":true`)) {
			continue // written right after the last chunk, no interval: not a gap
		}
		if n == 0 {
			s.first = append(s.first, now.Sub(sent))
		} else {
			s.gaps = append(s.gaps, now.Sub(last))
		}
		last = now
	}
	return s, body.Bytes(), nil
}
