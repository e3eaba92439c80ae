package main

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
	"github.com/openwebui-exporter/openwebui_exporter/internal/heldport"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

// exporter is the real HTTP handler of the exporter in front of an upstream,
// logging at debug level into logs.
type exporter struct {
	handler http.Handler
	logs    *harness.SyncBuffer
	token   string
	cache   *snapshot.Cache
}

type exporterOptions struct {
	upstream   string
	token      string
	httpClient *http.Client
	timeout    time.Duration
	maxStale   time.Duration
	ttl        time.Duration
	mode       openwebui.Mode
}

func newExporter(t *testing.T, o exporterOptions) *exporter {
	t.Helper()
	logs := &harness.SyncBuffer{}
	logger := level.NewFilter(log.NewLogfmtLogger(logs), level.AllowDebug())
	base, err := parseBaseURL(o.upstream)
	if err != nil {
		t.Fatal(err)
	}
	token, err := openwebui.StaticToken(o.token)
	if err != nil {
		t.Fatal(err)
	}
	if o.timeout == 0 {
		o.timeout = 2 * time.Second
	}
	client := openwebui.NewClient(openwebui.Config{BaseURL: base, Token: token, HTTPClient: o.httpClient, Logger: logger, Mode: o.mode})
	cache := snapshot.New(snapshot.Config{Fetch: client.Count, TTL: o.ttl, MaxStale: o.maxStale, Timeout: o.timeout, Logger: logger})
	h, err := newHandler(cache, token, "/metrics", logger)
	if err != nil {
		t.Fatal(err)
	}
	return &exporter{handler: h, logs: logs, token: o.token, cache: cache}
}

func (e *exporter) get(path string) (int, string) {
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

// canaryKey is the exporter's API key in the fault tests: distinctive, so
// that any 8 characters of it in a row in any output are a leak.
const canaryKey = "sk-c4n4ry0d15t1nc7c0ffee5eed0b5e5"

// upstream is a fake Open WebUI with one exporter account (key canaryKey),
// optionally with a fault in front of /api/usage.
func upstream(t *testing.T, cfg fakeopenwebui.Config, fault http.HandlerFunc) (*httptest.Server, string) {
	t.Helper()
	fake := fakeopenwebui.New(cfg)
	token := canaryKey
	fake.RegisterToken(fake.AddUser("exporter", "user"), token)
	fake.Touch(fake.AddUser("alice", "user"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fault != nil && r.URL.Path == "/api/usage" {
			fault(w, r)
			return
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, token
}

func reply(status int, contentType, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// TestFaultMatrix: every upstream fault gives openwebui_up 0 with no count on
// /metrics, a 503 JSON on /active_users that says what is wrong, exactly one
// error log line however often it is asked, and the token nowhere.
func TestFaultMatrix(t *testing.T) {
	redirectTarget := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		t.Errorf("the redirect was followed to another host (Authorization %q)", r.Header.Get("Authorization"))
	}))
	defer redirectTarget.Close()

	type row struct {
		name    string
		cfg     fakeopenwebui.Config
		fault   http.HandlerFunc
		setup   func(t *testing.T, o *exporterOptions)
		wantErr string
	}
	rows := []row{
		{name: "connection refused", setup: func(t *testing.T, o *exporterOptions) {
			// Held, never listening: refused, and no other listener can be
			// given the port before the exporter dials it.
			p, err := heldport.Hold("127.0.0.1", 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			o.upstream = "http://" + p.Addr()
		}, wantErr: "connect: connection refused"},
		{name: "connection reset mid-response", fault: func(w http.ResponseWriter, _ *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				panic(err)
			}
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user_c")
			conn.(*net.TCPConn).SetLinger(0) // RST, not FIN
			conn.Close()
		}, wantErr: "GET /api/usage: reading the body"},
		{name: "slower than the timeout", fault: func(_ http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, setup: func(_ *testing.T, o *exporterOptions) { o.timeout = 300 * time.Millisecond },
			wantErr: "no answer from Open WebUI within --openwebui.timeout=300ms"},
		{name: "401 unknown key", fault: reply(401, "application/json", `{"detail":"Your session has expired or the token is invalid. Please sign in again."}`),
			wantErr: "unknown API key, or its account was deleted"},
		{name: "403 API keys off", cfg: fakeopenwebui.Config{DisableAPIKeys: true},
			wantErr: "set ENABLE_API_KEYS=true"},
		{name: "403 public count gate", cfg: fakeopenwebui.Config{PublicActiveUsersCountDisabled: true},
			wantErr: "ENABLE_PUBLIC_ACTIVE_USERS_COUNT=false"},
		{name: "403 endpoint restriction", cfg: fakeopenwebui.Config{APIKeyAllowedEndpoints: []string{"/api/v1/auths"}},
			wantErr: "include /api/usage,/api/v1/auths,/api/v1/users"},
		{name: "500", fault: reply(500, "application/json", `{"detail":"Internal Server Error"}`),
			wantErr: `HTTP 500 "Internal Server Error"`},
		{name: "502 HTML from a proxy", fault: reply(502, "text/html", "<html><body>502 Bad Gateway</body></html>"),
			wantErr: "GET /api/usage: HTTP 502: Open WebUI (or a proxy in front of it) failed"},
		{name: "200 HTML", fault: reply(200, "text/html; charset=utf-8", "<!doctype html><html></html>"),
			wantErr: "instead of JSON"},
		{name: "malformed JSON", fault: reply(200, "application/json", `{"user_count":3`),
			wantErr: "invalid JSON"},
		{name: "wrong type", fault: reply(200, "application/json", `{"user_count":"many"}`),
			wantErr: `user_count: is "many", want an integer`},
		{name: "negative count", fault: reply(200, "application/json", `{"user_count":-4}`),
			wantErr: "user_count: is -4, want a count"},
		{name: "body over the size limit", fault: reply(200, "application/json", `{"user_count":1,"pad":"`+strings.Repeat("x", 2<<20)+`"}`),
			wantErr: "body larger than 1048576 bytes"},
		{name: "redirect to another host", fault: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, redirectTarget.URL+"/api/usage", http.StatusFound)
		}, wantErr: "HTTP 302 redirect to " + redirectTarget.URL + "/api/usage, not followed"},
		{name: "server echoes the token", fault: func(w http.ResponseWriter, r *http.Request) {
			reply(401, "application/json", `{"detail":"bad token `+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")+`"}`)(w, r)
		}, wantErr: `HTTP 401 "bad token <redacted>"`},
		{name: "TLS certificate of an unknown CA", setup: func(t *testing.T, o *exporterOptions) {
			srv, token := tlsUpstream(t)
			o.upstream, o.token = srv.URL, token
		}, wantErr: "certificate signed by unknown authority"},
	}

	for _, tc := range rows {
		t.Run(tc.name, func(t *testing.T) {
			srv, token := upstream(t, tc.cfg, tc.fault)
			o := exporterOptions{upstream: srv.URL, token: token}
			if tc.setup != nil {
				tc.setup(t, &o)
			}
			e := newExporter(t, o)
			const asks = 5
			var outputs []string
			for range asks {
				code, body := e.get("/active_users")
				outputs = append(outputs, body)
				if code != http.StatusServiceUnavailable {
					t.Fatalf("/active_users: status %d, want 503; body %s", code, body)
				}
				var answer struct{ Error string }
				if err := json.Unmarshal([]byte(body), &answer); err != nil || !strings.Contains(answer.Error, tc.wantErr) {
					t.Fatalf("/active_users body %s: want a JSON error containing %q", body, tc.wantErr)
				}
				code, metrics := e.get("/metrics")
				outputs = append(outputs, metrics)
				if code != http.StatusOK || !strings.Contains(metrics, "\nopenwebui_up 0\n") || strings.Contains(metrics, "\nopenwebui_active_users ") {
					t.Fatalf("/metrics: status %d, want 200 with openwebui_up 0 and no openwebui_active_users:\n%s", code, metrics)
				}
			}
			t.Logf("/active_users: 503 %s", outputs[0])
			for _, path := range []string{"/", "/healthz", "/readyz"} {
				code, body := e.get(path)
				outputs = append(outputs, body)
				if code != http.StatusOK {
					t.Errorf("%s: status %d, want 200 (they do not depend on Open WebUI)", path, code)
				}
			}
			logs := e.logs.String()
			if n := strings.Count(logs, "level=error"); n != 1 {
				t.Errorf("%d error log lines for %d failing asks, want 1:\n%s", n, 2*asks, logs)
			}
			if !strings.Contains(logs, "level=debug msg=\"still cannot count") {
				t.Errorf("repeats are not logged at debug level:\n%s", logs)
			}
			for _, out := range append(outputs, logs) {
				if piece := leakedPiece(o.token, out); piece != "" {
					t.Fatalf("%q of the token appears in the output:\n%s", piece, out)
				}
			}
		})
	}
}

// leakedPiece returns the first piece of 8 characters in a row of token
// that appears in out, or "".
func leakedPiece(token, out string) string {
	for i := 0; i+8 <= len(token); i++ {
		if strings.Contains(out, token[i:i+8]) {
			return token[i : i+8]
		}
	}
	return ""
}

// tlsUpstream is a fake Open WebUI over TLS with a certificate of its own CA.
func tlsUpstream(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	fake := fakeopenwebui.New(fakeopenwebui.Config{})
	token := fake.IssueAPIKey(fake.AddUser("exporter", "user"))
	fake.Touch(fake.AddUser("alice", "user"))
	srv := httptest.NewTLSServer(fake)
	t.Cleanup(srv.Close)
	return srv, token
}

func TestUpstreamTLSOptions(t *testing.T) {
	srv, token := tlsUpstream(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		caFile   string
		insecure bool
	}{
		{"CA file", caFile, false},
		{"insecure switch", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hc, err := upstreamHTTPClient(tc.caFile, tc.insecure)
			if err != nil {
				t.Fatal(err)
			}
			e := newExporter(t, exporterOptions{upstream: srv.URL, token: token, httpClient: hc})
			if code, body := e.get("/active_users"); code != 200 || body != `{"active_users":1}` {
				t.Errorf("got %d %s, want 200 {\"active_users\":1}", code, body)
			}
		})
	}
	for _, bad := range []string{filepath.Join(t.TempDir(), "missing.pem"), writeFile(t, "not a certificate")} {
		if _, err := upstreamHTTPClient(bad, false); err == nil || !strings.Contains(err.Error(), "--openwebui.tls.ca-file") {
			t.Errorf("upstreamHTTPClient(%s): err = %v, want one naming --openwebui.tls.ca-file", bad, err)
		}
	}
	// The default client trusts only the system's CAs.
	if hc, _ := upstreamHTTPClient("", false); hc.Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify {
		t.Error("certificate verification is off by default")
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNoGoroutineOrMemoryGrowth sends 10,000 requests while the upstream
// flaps between healthy and every kind of fault, then checks that the
// goroutine count returns to where it started.
func TestNoGoroutineOrMemoryGrowth(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	var mode atomic.Int32
	faults := []http.HandlerFunc{
		nil, // healthy
		reply(500, "application/json", `{"detail":"Internal Server Error"}`),
		reply(200, "text/html", "<html>"),
		reply(200, "application/json", `{"user_count":`),
		reply(401, "application/json", `{"detail":"401 Unauthorized"}`),
		func(w http.ResponseWriter, _ *http.Request) {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		},
		func(_ http.ResponseWriter, r *http.Request) { // slower than the timeout
			select {
			case <-r.Context().Done():
			case <-time.After(time.Second):
			}
		},
	}
	srv, token := upstream(t, fakeopenwebui.Config{}, func(w http.ResponseWriter, r *http.Request) {
		if f := faults[int(mode.Load())%len(faults)]; f != nil {
			f(w, r)
			return
		}
		reply(200, "application/json", `{"model_ids":[],"user_count":2}`)(w, r)
	})
	hc, err := upstreamHTTPClient("", false)
	if err != nil {
		t.Fatal(err)
	}
	e := newExporter(t, exporterOptions{upstream: srv.URL, token: token, httpClient: hc, timeout: 50 * time.Millisecond})

	settle := func() int {
		hc.CloseIdleConnections()
		srv.CloseClientConnections()
		runtime.GC()
		return runtime.NumGoroutine()
	}
	baseline := settle()
	var memBefore runtime.MemStats
	runtime.ReadMemStats(&memBefore)

	const requests, workers = 10_000, 8
	var next atomic.Int32
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= requests; i = next.Add(1) {
				if i%200 == 0 {
					mode.Add(1)
				}
				path := "/active_users"
				if i%2 == 0 {
					path = "/metrics"
				}
				if code, body := e.get(path); code != 200 && code != 503 {
					t.Errorf("%s: status %d: %s", path, code, body)
					return
				}
			}
		})
	}
	wg.Wait()

	// Fetches still running finish within the 50ms timeout; poll, bounded.
	var now int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if now = settle(); now <= baseline+2 {
			break
		}
	}
	if now > baseline+2 {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d before, %d after %d requests\n%s", baseline, now, requests, buf[:runtime.Stack(buf, true)])
	}
	var memAfter runtime.MemStats
	runtime.ReadMemStats(&memAfter)
	t.Logf("goroutines %d -> %d; heap in use %d KiB -> %d KiB", baseline, now, memBefore.HeapInuse>>10, memAfter.HeapInuse>>10)
	if memAfter.HeapInuse > memBefore.HeapInuse+32<<20 {
		t.Errorf("heap in use grew from %d to %d bytes over %d requests", memBefore.HeapInuse, memAfter.HeapInuse, requests)
	}
}
