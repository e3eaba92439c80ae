package gate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// A backend that starts its streamed answer before it has read the whole
// request (as Ollama does once it has bound the JSON) gets the rest of the
// request, and the client the whole answer: the server must not close the
// request body under the proxy when the answer's header goes out.
func TestAnswerBeforeTheWholeRequestStreamsToTheEnd(t *testing.T) {
	const chunks = 20
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Model string }
		_ = json.NewDecoder(r.Body).Decode(&req) // stops after the JSON value, before the padding
		w.Header().Set("Content-Type", "application/x-ndjson")
		for i := 0; i < chunks; i++ {
			fmt.Fprintf(w, "{\"n\":%d}\n", i)
			w.(http.Flusher).Flush()
		}
	}))
	defer backend.Close()
	u, _ := url.Parse(backend.URL)
	g, err := New(Config{Backends: []BackendConfig{{URL: u, Wake: WakeArrival}}})
	if err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	g.setState(g.unnamed, StateUp, "")
	g.mu.Unlock()
	front := httptest.NewServer(g)
	defer front.Close()

	// A JSON value followed by white space the backend never reads, large
	// enough that the transport is still writing when the answer starts.
	body := `{"model":"m"}` + strings.Repeat(" ", 256<<10)
	var wg sync.WaitGroup
	cut := make(chan string, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(front.URL+"/api/chat", "application/json", bytes.NewReader([]byte(body)))
			if err != nil {
				cut <- err.Error()
				return
			}
			defer resp.Body.Close()
			n := 0
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				n++
			}
			if err := sc.Err(); err != nil || n != chunks {
				cut <- fmt.Sprintf("%d of %d chunks, %v", n, chunks, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
		}()
		if i%8 == 7 {
			wg.Wait() // 8 at a time: the loopback, not the scheduler, is the test
		}
	}
	wg.Wait()
	close(cut)
	var failures []string
	for c := range cut {
		failures = append(failures, c)
	}
	if len(failures) > 0 {
		t.Errorf("%d of 200 streams cut short, e.g. %s", len(failures), failures[0])
	}
}
