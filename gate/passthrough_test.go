package gate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// seen is what a backend received.
type seen struct {
	Method     string
	RequestURI string
	Host       string
	Header     http.Header
	Body       []byte
}

// recorder is a backend that records requests and answers a fixed response.
type recorder struct {
	mu   sync.Mutex
	got  []seen
	resp func(w http.ResponseWriter, r *http.Request)
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.got = append(rec.got, seen{r.Method, r.RequestURI, r.Host, r.Header.Clone(), body})
	rec.mu.Unlock()
	rec.resp(w, r)
}

func (rec *recorder) requests() []seen {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]seen(nil), rec.got...)
}

// hopByHop are the headers no proxy passes on (RFC 9110 7.6.1), and what Go's
// client adds on the wire.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Transfer-Encoding", "Upgrade"}

func TestPassThroughIsTransparent(t *testing.T) {
	rec := &recorder{resp: func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["X-Backend"] = []string{"one", "two"}
		h.Set("Set-Cookie", "a=b")
		h.Set("Content-Type", "application/x-ndjson")
		h.Set("Www-Authenticate", `Bearer realm="x"`)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "answer\x00\xff to %s", r.Method)
	}}
	backend := httptest.NewServer(rec)
	defer backend.Close()

	cases := []struct {
		name      string
		flag      string // --gate.backend
		method    string
		gatePath  string // path and query on the gate
		wantURI   string // what the backend must see
		body      string
		header    http.Header
		wantState State
	}{
		{name: "chat with Authorization", flag: backend.URL, method: "POST", gatePath: "/api/chat", wantURI: "/api/chat",
			body: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
			header: http.Header{"Authorization": {"Bearer secret"}, "X-Openwebui-User-Id": {"u1"}, "Content-Type": {"application/json"},
				"X-Forwarded-For": {"10.0.0.1"}, "X-Custom": {"a", "b"}, "Accept-Encoding": {"gzip"}}},
		{name: "list GET with a query", flag: backend.URL, method: "GET", gatePath: "/api/tags?x=1&y=%20", wantURI: "/api/tags?x=1&y=%20",
			header: http.Header{"Authorization": {"Bearer k"}}},
		{name: "escaped path and a query Go calls unparsable", flag: backend.URL, method: "PUT", gatePath: "/api/a%2Fb/c?q=a;b", wantURI: "/api/a%2Fb/c?q=a;b",
			body: "x"},
		{name: "DELETE with a body", flag: backend.URL, method: "DELETE", gatePath: "/api/delete", wantURI: "/api/delete", body: `{"model":"m"}`},
		{name: "OpenAI path", flag: backend.URL, method: "POST", gatePath: "/v1/chat/completions", wantURI: "/v1/chat/completions", body: `{}`},
		{name: "named backend, prefix stripped", flag: "big=" + backend.URL, method: "POST", gatePath: "/big/api/chat?a=b", wantURI: "/api/chat?a=b", body: "{}"},
		{name: "named backend with a path prefix", flag: "big=" + backend.URL + "/ollama", method: "POST", gatePath: "/big/api/embed", wantURI: "/ollama/api/embed", body: "{}"},
		{name: "path prefix with a slash", flag: backend.URL + "/ollama/", method: "GET", gatePath: "/api/version", wantURI: "/ollama/api/version"},
		{name: "named backend escaped", flag: "big=" + backend.URL, method: "POST", gatePath: "/big/api/x%2Fy", wantURI: "/api/x%2Fy", body: "{}"},
		{name: "named backend without slash", flag: "big=" + backend.URL, method: "GET", gatePath: "/big", wantURI: "/"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec.mu.Lock()
			rec.got = nil
			rec.mu.Unlock()
			g := startGate(t, Config{Backends: []BackendConfig{backendURL(t, tc.flag)}}, func(g *Gate) { g.probeIdle = time.Hour })
			eventually(t, "the backend up", func() bool { return g.Stats()[0].State == StateUp })
			rec.mu.Lock()
			rec.got = nil // the probes
			rec.mu.Unlock()
			var atGate http.Header
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				atGate = r.Header.Clone()
				g.ServeHTTP(w, r)
			}))
			defer front.Close()

			req, _ := http.NewRequest(tc.method, front.URL+tc.gatePath, strings.NewReader(tc.body))
			for k, v := range tc.header {
				req.Header[k] = v
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()

			got := rec.requests()
			if len(got) != 1 {
				t.Fatalf("backend got %d requests, want 1", len(got))
			}
			s := got[0]
			if s.Method != tc.method || s.RequestURI != tc.wantURI || string(s.Body) != tc.body {
				t.Errorf("backend saw %s %s %q, want %s %s %q", s.Method, s.RequestURI, s.Body, tc.method, tc.wantURI, tc.body)
			}
			if want := strings.TrimPrefix(backend.URL, "http://"); s.Host != want {
				t.Errorf("Host = %q, want the backend's %q", s.Host, want)
			}
			want := atGate.Clone()
			for _, h := range hopByHop {
				want.Del(h)
				s.Header.Del(h)
			}
			if !reflect.DeepEqual(s.Header, want) {
				t.Errorf("backend headers differ from the gate's:\n got %v\nwant %v", s.Header, want)
			}

			if res.StatusCode != http.StatusCreated {
				t.Errorf("status %d, want 201", res.StatusCode)
			}
			if wantBody := "answer\x00\xff to " + tc.method; !bytes.Equal(body, []byte(wantBody)) {
				t.Errorf("body %q, want %q", body, wantBody)
			}
			for k, v := range map[string][]string{"X-Backend": {"one", "two"}, "Set-Cookie": {"a=b"}, "Content-Type": {"application/x-ndjson"}, "Www-Authenticate": {`Bearer realm="x"`}} {
				if !reflect.DeepEqual(res.Header[k], v) {
					t.Errorf("response header %s = %q, want %q", k, res.Header[k], v)
				}
			}
			if res.Header.Get(FromMemoryHeader) != "" {
				t.Errorf("a pass-through is marked from memory")
			}
		})
	}
}

func TestStreamsAreFlushedChunkByChunk(t *testing.T) {
	cases := []struct {
		name, path, ctype string
		chunks            []string
	}{
		{"Ollama NDJSON", "/api/chat", "application/x-ndjson", []string{`{"message":{"content":"hel"},"done":false}` + "\n", `{"message":{"content":"lo"},"done":false}` + "\n", `{"done":true}` + "\n"}},
		{"OpenAI SSE", "/v1/chat/completions", "text/event-stream", []string{"data: {\"a\":1}\n\n", "data: {\"a\":2}\n\n", "data: [DONE]\n\n"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			next := make(chan struct{})
			backend := httptest.NewServer(withVersion(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				for i, c := range tc.chunks {
					if i > 0 {
						select {
						case <-next: // the client saw the previous chunk
						case <-r.Context().Done():
							return
						}
					}
					_, _ = io.WriteString(w, c)
					w.(http.Flusher).Flush()
				}
			})))
			defer backend.Close()
			g := startGate(t, Config{Backends: []BackendConfig{backendURL(t, backend.URL)}})

			res, err := http.Post(g.url+tc.path, "application/json", strings.NewReader(`{"stream":true}`))
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			br := bufio.NewReader(res.Body)
			for i, c := range tc.chunks {
				got := make([]byte, len(c))
				read := make(chan error, 1)
				go func() { _, err := io.ReadFull(br, got); read <- err }()
				select {
				case err := <-read:
					if err != nil {
						t.Fatalf("chunk %d: %v", i+1, err)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("chunk %d did not reach the client before the backend wrote chunk %d: the gate buffers", i+1, i+2)
				}
				if string(got) != c {
					t.Fatalf("chunk %d = %q, want %q", i+1, got, c)
				}
				if i < len(tc.chunks)-1 {
					next <- struct{}{}
				}
			}
			if rest, _ := io.ReadAll(br); len(rest) != 0 {
				t.Errorf("after the last chunk: %q", rest)
			}
			if ct := res.Header.Get("Content-Type"); ct != tc.ctype {
				t.Errorf("Content-Type %q, want %q", ct, tc.ctype)
			}
		})
	}
}

func TestClientCancelCancelsUpstream(t *testing.T) {
	arrived, canceled := make(chan struct{}), make(chan struct{})
	backend := httptest.NewServer(withVersion(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		_, _ = io.WriteString(w, "{}\n")
		w.(http.Flusher).Flush()
		close(arrived)
		<-r.Context().Done()
		close(canceled)
	})))
	defer backend.Close()
	g := startGate(t, Config{Backends: []BackendConfig{backendURL(t, backend.URL)}})

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.url+"/api/chat", strings.NewReader("{}"))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-arrived
	if d := mustDemand(t, g.Gate, DefaultName); d.InFlight != 1 {
		t.Errorf("a streaming answer: InFlight = %d, want 1", d.InFlight)
	}
	cancel()
	res.Body.Close()
	select {
	case <-canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend's request was not canceled when the client went away")
	}
	eventually(t, "the request to stop counting", func() bool { return mustDemand(t, g.Gate, DefaultName).InFlight == 0 })
	waitCount(t, g.Gate, DefaultName, OutcomeClientGone, 1)
	if n := stats(g.Gate, DefaultName).Requests[OutcomeClientGone]; n != 1 {
		t.Errorf("client_gone = %d, want 1", n)
	}
}

func TestBackendErrorIsInTheBackendsShape(t *testing.T) {
	// A backend that accepts the request and closes the connection without
	// an answer: the request may have reached it, so it is not held or sent
	// again; the client gets a 502 in the backend's shape.
	var hits int
	var mu sync.Mutex
	backend := httptest.NewServer(withVersion(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		_, _ = io.ReadAll(r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	})))
	defer backend.Close()
	g := startGate(t, Config{Backends: []BackendConfig{backendURL(t, backend.URL)}})
	for _, tc := range []struct {
		path   string
		openai bool
	}{{"/api/chat", false}, {"/v1/chat/completions", true}} {
		code, _, body := do(t, "POST", g.url+tc.path, strings.NewReader("{}"), nil)
		if code != http.StatusBadGateway {
			t.Errorf("%s: status %d, want 502", tc.path, code)
		}
		if msg := errorMessage(t, body, tc.openai); !strings.Contains(msg, `backend "default" failed to answer`) {
			t.Errorf("%s: message %q", tc.path, msg)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if hits != 2 {
		t.Errorf("backend hit %d times, want 2 (never replayed)", hits)
	}
	waitCount(t, g.Gate, DefaultName, OutcomeBackendError, 2)
	if n := stats(g.Gate, DefaultName).Requests[OutcomeBackendError]; n != 2 {
		t.Errorf("backend_error = %d, want 2", n)
	}
}

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

// What neverReached takes for a request the server cannot have read, which
// deliver then sends again, and what it leaves alone.
func TestNeverReached(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	for _, tc := range []struct {
		name   string
		err    error
		reused bool
		want   bool
	}{
		{"a write that failed", &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}, true, true},
		{"a reset of a new connection (a full listen backlog)", reset, false, true},
		{"a reset of a kept-alive connection: it may have been read", reset, true, false},
		// net/http's own text (errServerClosedIdle is unexported): the server
		// closed the kept-alive connection before the request was handed to it.
		{"the server closed the kept-alive connection idle", errors.New("http: server closed idle connection"), true, true},
		{"an EOF: the server may have read it", io.EOF, true, false},
		{"a connection broken after a write", fmt.Errorf("net/http: HTTP/1.x transport connection broken: %w", io.ErrUnexpectedEOF), true, false},
	} {
		if got := neverReached(tc.err, tc.reused); got != tc.want {
			t.Errorf("%s: neverReached(%v, reused %v) = %v, want %v", tc.name, tc.err, tc.reused, got, tc.want)
		}
	}
}
