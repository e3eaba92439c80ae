package fakeollama_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
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
		{"POST", "/api/pull", `{"model":"big:70b"}`, 200, "application/x-ndjson",
			`{"status":"pulling manifest"}` + "\n" +
				`{"completed":1073741824,"digest":"sha256:6a0746a1ec1aef3e7ec53868f220ff6e389f6f8ef87a01d77c96807de94ca2aa","status":"pulling 6a0746a1ec1a","total":1073741824}` + "\n" +
				`{"status":"verifying sha256 digest"}` + "\n" + `{"status":"writing manifest"}` + "\n" + `{"status":"success"}` + "\n"},
		{"POST", "/api/pull", `{"model":"big:70b","stream":false}`, 200, "application/json; charset=utf-8", `{"status":"success"}`},
		{"POST", "/api/pull", `{}`, 400, "application/json; charset=utf-8", `{"error":"invalid model name"}`},
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
	if got := h.Requests(); got != 10 {
		t.Errorf("Requests = %d, want the 10 POSTs (lists, version and / are not counted)", got)
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
	if err := refused(client, s.URL()); err != nil {
		t.Fatalf("stopped: %v", err)
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
	if err := refused(client, s.URL()); err != nil {
		t.Fatalf("stopped again: %v", err)
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

// refused is nil when a request to base is refused, as by a pod at zero.
func refused(client *http.Client, base string) error {
	resp, err := client.Get(base + "/api/version")
	if err == nil {
		resp.Body.Close()
		return fmt.Errorf("answered %s, want connection refused", resp.Status)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w, want connection refused", err)
	}
	return nil
}

// get fetches path from ts and returns the body.
func get(t *testing.T, ts *httptest.Server, path string) string {
	t.Helper()
	resp, err := http.Get(ts.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

func post(t *testing.T, ts *httptest.Server, path, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(ts.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// A fresh Ollama has no models: empty lists, and OpenAI's data is null.
func TestNoModels(t *testing.T) {
	ts := httptest.NewServer(fakeollama.New(fakeollama.Config{Models: []string{}}))
	defer ts.Close()
	for path, want := range map[string]string{
		"/api/tags":  `{"models":[]}`,
		"/api/ps":    `{"models":[]}`,
		"/v1/models": `{"data":null,"object":"list"}`,
	} {
		if got := get(t, ts, path); got != want {
			t.Errorf("%s = %s, want %s", path, got, want)
		}
	}
	if status, body := post(t, ts, "/api/chat", `{"model":"tiny:1b"}`); status != 404 || body != `{"error":"model 'tiny:1b' not found"}` {
		t.Errorf("chat = %d %s, want 404 model not found", status, body)
	}
}

// /api/ps lists a model after a request for as long as its keep-alive says.
func TestKeepAlive(t *testing.T) {
	for _, tc := range []struct {
		name, keepAlive string // the request's keep_alive, raw JSON ("" none)
		wantStatus      int
		wantPS          string
	}{
		{"default 5m", ``, 200, `"expires_at":"2026-01-02T03:09:05Z"`},
		{"duration string", `"1h"`, 200, `"expires_at":"2026-01-02T04:04:05Z"`},
		{"seconds", `60`, 200, `"expires_at":"2026-01-02T03:05:05Z"`},
		{"for ever", `-1`, 200, `"expires_at":"2318-01-01T00:00:00Z"`},
		{"unload at once", `0`, 200, `{"models":[]}`},
		{"already expired", `"1ns"`, 200, `{"models":[]}`},
		{"bad", `"soon"`, 400, `{"models":[]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := httptest.NewServer(fakeollama.New(fakeollama.Config{Chunks: 1}))
			defer ts.Close()
			body := `{"model":"tiny:1b","stream":false}`
			if tc.keepAlive != "" {
				body = `{"model":"tiny:1b","stream":false,"keep_alive":` + tc.keepAlive + `}`
			}
			if status, answer := post(t, ts, "/api/chat", body); status != tc.wantStatus {
				t.Fatalf("chat = %d %s, want %d", status, answer, tc.wantStatus)
			}
			if ps := get(t, ts, "/api/ps"); !strings.Contains(ps, tc.wantPS) {
				t.Errorf("/api/ps = %s, want it to contain %s", ps, tc.wantPS)
			}
		})
	}
}

// OnRequest sees every request but the model lists, /api/version and /.
func TestOnRequest(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string
	)
	ts := httptest.NewServer(fakeollama.New(fakeollama.Config{ChunkInterval: -1, OnRequest: func(r *http.Request, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if at.IsZero() {
			t.Error("OnRequest got a zero time")
		}
		seen = append(seen, r.Method+" "+r.URL.Path)
	}}))
	defer ts.Close()
	for _, path := range []string{"/", "/api/version", "/api/tags", "/api/ps", "/v1/models"} {
		get(t, ts, path)
	}
	post(t, ts, "/api/chat", `{"model":"tiny:1b"}`)
	post(t, ts, "/api/embed", `{"model":"tiny:1b","input":"x"}`)
	mu.Lock()
	defer mu.Unlock()
	if got, want := strings.Join(seen, ","), "POST /api/chat,POST /api/embed"; got != want {
		t.Errorf("OnRequest saw %s, want %s", got, want)
	}
}

// A pull streams the layer's progress for PullDuration, growing to the
// layer's size, between Ollama's first and last statuses.
func TestPullTakesItsDuration(t *testing.T) {
	const took = 300 * time.Millisecond
	ts := httptest.NewServer(fakeollama.New(fakeollama.Config{PullDuration: took, ChunkInterval: 50 * time.Millisecond}))
	defer ts.Close()
	start := time.Now()
	resp, err := http.Post(ts.URL+"/api/pull", "application/json", strings.NewReader(`{"model":"big:70b"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var statuses []string
	var completed []int64
	for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
		var line struct {
			Status    string
			Completed int64
			Total     int64
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if line.Status == "pulling 6a0746a1ec1a" {
			if line.Total != 1<<30 {
				t.Errorf("total = %d, want %d", line.Total, 1<<30)
			}
			completed = append(completed, line.Completed)
			continue
		}
		statuses = append(statuses, line.Status)
	}
	if elapsed := time.Since(start); elapsed < took {
		t.Errorf("the pull ended after %s, before its %s", elapsed, took)
	}
	if want := []string{"pulling manifest", "verifying sha256 digest", "writing manifest", "success"}; !slices.Equal(statuses, want) {
		t.Errorf("statuses = %q, want %q around the progress", statuses, want)
	}
	if len(completed) == 0 || completed[len(completed)-1] != 1<<30 || !slices.IsSorted(completed) {
		t.Errorf("progress %v: want it growing to %d", completed, 1<<30)
	}
}
