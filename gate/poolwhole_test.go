package gate

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

// A pool's request is sent again after its new connection was reset before
// the request was read, with its body whole and unchanged, whether the peek
// read all of it (a small body, with a Content-Length or chunked) or only
// its start (a body beyond the peek's bound, sent again from what the
// transport recorded). Each replica resets its first connection.
func TestPoolResetRetriedWithTheWholeBody(t *testing.T) {
	small := `{"model":"tiny:1b","messages":[{"role":"user","content":"hi \"there\""}],"stream":false}`
	large := `{"model":"tiny:1b","prompt":"` + strings.Repeat("x", 2*peekLimit) + `"}`
	for _, tc := range []struct {
		name    string
		body    string
		chunked bool // no Content-Length
	}{
		{"small, with its length", small, false},
		{"small, chunked", small, true},
		{"beyond the peek's bound", large, false},
		{"beyond the peek's bound, chunked", large, true},
		{"not JSON", "model=tiny&prompt=hi", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &postRecorder{}
			var flags []string
			var listeners []*resettingListener
			for range 2 {
				srv := httptest.NewUnstartedServer(withVersion(rec))
				l := &resettingListener{Listener: srv.Listener}
				srv.Listener = l
				srv.Start()
				t.Cleanup(srv.Close)
				flags = append(flags, "pool="+srv.URL)
				listeners = append(listeners, l)
			}
			g := startGate(t, Config{Backends: poolConfig(t, flags...), MaxHeldBytes: 1 << 20}, func(g *Gate) { g.probeIdle = time.Hour })
			eventually(t, "pool up", func() bool { return stats(g.Gate, "pool").State == StateUp })
			g.transport.(*http.Transport).CloseIdleConnections() // each try dials anew
			for _, l := range listeners {
				l.mu.Lock()
				l.n = 1
				l.mu.Unlock()
			}
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // hides the length from http.NewRequest
			}
			status, _, answer := do(t, http.MethodPost, g.url+"/pool/api/chat", body, nil)
			resets := 0
			for _, l := range listeners {
				l.mu.Lock()
				resets += 1 - l.n
				l.mu.Unlock()
			}
			if resets == 0 {
				t.Error("no connection was reset: the test tests nothing")
			}
			if received := rec.bodies(); status != http.StatusOK || len(received) != 1 || received[0] != tc.body {
				t.Errorf("HTTP %d (%.120s); the replicas received %d requests; want 200 and the body once, unchanged", status, answer, len(received))
			}
		})
	}
}

// peekedBody gives what the peek read, then the rest of the client's body,
// in reads of any size, and ends as the body ends: at its EOF (for good), or
// with its error.
func TestPeekedBody(t *testing.T) {
	boom := errors.New("client went away")
	for _, tc := range []struct {
		name      string
		read      string
		rest      io.Reader
		want      string
		wantError error
	}{
		{"read and rest", `{"model":`, strings.NewReader(`"m"}`), `{"model":"m"}`, nil},
		{"all read", `{"model":"m"}`, strings.NewReader(""), `{"model":"m"}`, nil},
		{"nothing read", ``, strings.NewReader(`{}`), `{}`, nil},
		{"the rest fails", `{"mo`, io.MultiReader(strings.NewReader(`del"`), iotest.ErrReader(boom)), `{"model"`, boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rest := &countingCloser{Reader: tc.rest}
			b := &peekedBody{read: []byte(tc.read), rest: rest}
			got, err := io.ReadAll(iotest.OneByteReader(b))
			if string(got) != tc.want || !errors.Is(err, tc.wantError) {
				t.Errorf("read %q, %v; want %q, %v", got, err, tc.want, tc.wantError)
			}
			if tc.wantError == nil {
				reads := rest.reads
				if n, err := b.Read(make([]byte, 8)); n != 0 || !errors.Is(err, io.EOF) || rest.reads != reads {
					t.Errorf("after the end: %d, %v, the rest read again: %v", n, err, rest.reads != reads)
				}
			}
			if b.Close(); !rest.closed {
				t.Error("Close did not close the client's body")
			}
		})
	}
}

type countingCloser struct {
	io.Reader
	reads  int
	closed bool
}

func (c *countingCloser) Read(p []byte) (int, error) { c.reads++; return c.Reader.Read(p) }
func (c *countingCloser) Close() error               { c.closed = true; return nil }

// bodyTypes is a transport that notes the type of each POST body it is given.
type bodyTypes struct {
	http.RoundTripper
	mu    sync.Mutex
	types []reflect.Type
}

func (b *bodyTypes) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost {
		b.mu.Lock()
		b.types = append(b.types, reflect.TypeOf(r.Body))
		b.mu.Unlock()
	}
	return b.RoundTripper.RoundTrip(r)
}

// A body the peek read whole reaches the transport as a reader it knows to
// be in memory, so that it goes out with the header in one write (Go's
// transport writes the header on its own first for any other reader); a body
// beyond the peek's bound streams through as the client sends it.
func TestPoolWholeBodyReachesTheTransportInMemory(t *testing.T) {
	inMemory := reflect.TypeOf(io.NopCloser(bytes.NewReader(nil)))
	for _, tc := range []struct {
		name string
		body string
		want bool // in memory
	}{
		{"small", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, true},
		{"beyond the peek's bound", `{"model":"m","prompt":"` + strings.Repeat("x", 2*peekLimit) + `"}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &postRecorder{}
			var flags []string
			for range 2 {
				srv := httptest.NewServer(withVersion(rec))
				t.Cleanup(srv.Close)
				flags = append(flags, "pool="+srv.URL)
			}
			tr := &bodyTypes{RoundTripper: NewTransport()}
			g := startGate(t, Config{Backends: poolConfig(t, flags...), Transport: tr})
			eventually(t, "pool up", func() bool { return stats(g.Gate, "pool").State == StateUp })
			status, _, answer := do(t, http.MethodPost, g.url+"/pool/api/chat", strings.NewReader(tc.body), nil)
			if got := rec.bodies(); status != http.StatusOK || len(got) != 1 || got[0] != tc.body {
				t.Fatalf("HTTP %d (%.100s), the replicas received %d bodies; want 200 and the body once, unchanged", status, answer, len(got))
			}
			tr.mu.Lock()
			defer tr.mu.Unlock()
			if len(tr.types) != 1 || (tr.types[0] == inMemory) != tc.want {
				t.Errorf("the transport was given %v; want in memory (%v): %v", tr.types, inMemory, tc.want)
			}
		})
	}
}

// postRecorder is a replica that answers every request at once and keeps the
// body of each POST it received.
type postRecorder struct {
	mu       sync.Mutex
	received []string
}

func (p *postRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		b, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		p.received = append(p.received, string(b))
		p.mu.Unlock()
	}
	_, _ = io.WriteString(w, `{"done":true}`)
}

func (p *postRecorder) bodies() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.received...)
}
