package fakeollama_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
)

func TestShapes(t *testing.T) {
	h := fakeollama.New(fakeollama.Config{Models: []string{"tiny:1b"}, Chunks: 2, ChunkInterval: -1})
	ts := httptest.NewServer(h)
	defer ts.Close()
	for _, tc := range []struct {
		method, path, body string
		wantStatus         int
		wantType           string
		want               string
	}{
		{"GET", "/", "", 200, "text/plain; charset=utf-8", "Ollama is running"},
		{"GET", "/api/version", "", 200, "application/json; charset=utf-8", `{"version":"0.17.4"}`},
		{"GET", "/api/tags", "", 200, "application/json; charset=utf-8",
			`{"models":[{"details":{"families":["llama"],"family":"llama","format":"gguf","parameter_size":"1B","parent_model":"","quantization_level":"Q4_0"},"digest":"0000000000000000000000000000000000000000000000000000000000000001","model":"tiny:1b","modified_at":"2026-01-02T03:04:05Z","name":"tiny:1b","size":1000000}]}`},
		{"GET", "/api/ps", "", 200, "application/json; charset=utf-8", `{"models":[]}`},
		{"GET", "/v1/models", "", 200, "application/json; charset=utf-8", `{"data":[{"created":1767323045,"id":"tiny:1b","object":"model","owned_by":"library"}],"object":"list"}`},
		{"POST", "/api/chat", `{"model":"nope"}`, 404, "application/json; charset=utf-8", `{"error":"model 'nope' not found"}`},
		{"POST", "/v1/chat/completions", `{"model":"nope"}`, 404, "application/json; charset=utf-8", `{"error":{"code":null,"message":"model 'nope' not found","param":null,"type":"api_error"}}`},
		{"POST", "/api/chat", `{"model":"tiny:1b"}`, 200, "application/x-ndjson",
			`{"created_at":"2026-01-02T03:04:05Z","done":false,"message":{"content":"Hello","role":"assistant"},"model":"tiny:1b"}` + "\n" +
				`{"created_at":"2026-01-02T03:04:05Z","done":false,"message":{"content":" from","role":"assistant"},"model":"tiny:1b"}` + "\n" +
				`{"created_at":"2026-01-02T03:04:05Z","done":true,"done_reason":"stop","eval_count":2,"eval_duration":1000,"load_duration":1000,"message":{"content":"","role":"assistant"},"model":"tiny:1b","prompt_eval_count":1,"prompt_eval_duration":1000,"total_duration":1000000}` + "\n"},
		{"POST", "/api/generate", `{"model":"tiny:1b","stream":false,"options":{"num_predict":3}}`, 200, "application/json; charset=utf-8",
			`{"created_at":"2026-01-02T03:04:05Z","done":true,"done_reason":"stop","eval_count":3,"eval_duration":1000,"load_duration":1000,"model":"tiny:1b","prompt_eval_count":1,"prompt_eval_duration":1000,"response":"Hello from the","total_duration":1000000}`},
		{"POST", "/v1/chat/completions", `{"model":"tiny:1b","stream":true,"max_tokens":1}`, 200, "text/event-stream",
			`data: {"choices":[{"delta":{"content":"Hello","role":"assistant"},"finish_reason":null,"index":0}],"created":1767323045,"id":"chatcmpl-1","model":"tiny:1b","object":"chat.completion.chunk","system_fingerprint":"fp_ollama"}` + "\n\n" +
				`data: {"choices":[{"delta":{"content":"","role":"assistant"},"finish_reason":"stop","index":0}],"created":1767323045,"id":"chatcmpl-1","model":"tiny:1b","object":"chat.completion.chunk","system_fingerprint":"fp_ollama"}` + "\n\n" +
				"data: [DONE]\n\n"},
		{"POST", "/api/embed", `{"model":"tiny:1b","input":"x"}`, 200, "application/json; charset=utf-8",
			`{"embeddings":[[0.25,-0.5,0.125,1]],"load_duration":10,"model":"tiny:1b","prompt_eval_count":1,"total_duration":1000}`},
		{"POST", "/api/chat", `{"model":`, 400, "application/json; charset=utf-8", `{"error":"invalid request: unexpected EOF"}`},
		{"GET", "/nope", "", 404, "text/plain", "404 page not found"},
	} {
		t.Run(tc.method+" "+tc.path+" "+tc.body, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, ts.URL+tc.path, strings.NewReader(tc.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus || resp.Header.Get("Content-Type") != tc.wantType || string(body) != tc.want {
				t.Errorf("got %d %q\n%s\nwant %d %q\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.wantStatus, tc.wantType, tc.want)
			}
		})
	}
	// A model that answered is loaded, as /api/ps shows it.
	resp, err := http.Get(ts.URL + "/api/ps")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"name":"tiny:1b"`) {
		t.Errorf("/api/ps after a chat = %s, want tiny:1b loaded", body)
	}
	if got := h.Requests(); got != 7 {
		t.Errorf("Requests = %d, want the 7 POSTs (lists, version and / are not counted)", got)
	}
}

// Each chunk reaches the client before the next is written.
func TestStreamFlushesEachChunk(t *testing.T) {
	ts := httptest.NewServer(fakeollama.New(fakeollama.Config{Chunks: 3, ChunkInterval: time.Hour}))
	defer ts.Close()
	resp, err := http.Post(ts.URL+"/api/chat", "application/json", strings.NewReader(`{"model":"tiny:1b"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, `"content":"Hello"`) {
		t.Fatalf("first chunk = %q, %v; want it flushed although the next comes in an hour", line, err)
	}
}

func TestServerSleepsAndWakes(t *testing.T) {
	s, err := fakeollama.NewServer("127.0.0.1:0", fakeollama.New(fakeollama.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	if _, err := client.Get(s.URL() + "/api/version"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("stopped: %v, want connection refused", err)
	}
	const delay = 300 * time.Millisecond
	if err := s.Start(delay); err != nil {
		t.Fatal(err)
	}
	// The port is open before HTTP is served: a connection succeeds, and
	// the answer comes only once it is ready.
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatalf("starting: %v, want the port open", err)
	}
	conn.Close()
	resp, err := client.Get(s.URL() + "/api/version")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	answered := time.Now()
	if ready := s.ReadyAt(); ready.IsZero() || answered.Before(ready) {
		t.Errorf("answered at %s, ready at %s: no answer may come before it is ready", answered, ready)
	}
	if err := s.Start(0); err == nil {
		t.Error("a second Start succeeded")
	}
	s.Stop()
	if _, err := client.Get(s.URL() + "/api/version"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("stopped again: %v, want connection refused", err)
	}
	// Stopped while starting: Stop does not wait for the delay.
	if err := s.Start(time.Hour); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if s.Running() {
		t.Error("still running after Stop")
	}
}
