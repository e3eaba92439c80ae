//go:build linux

package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

// osThreads is the number of OS threads of this process.
func osThreads(t *testing.T) int {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads: line in /proc/self/status")
	return 0
}

// hangingFile makes path a FIFO without a writer: opening it blocks, like a
// read from a hung NFS or FUSE mount. The cleanup writes token into it, so
// that the blocked reader finishes.
func hangingFile(t *testing.T, path, token string) {
	t.Helper()
	os.Remove(path)
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Opening for writing without blocking succeeds while a reader waits.
		f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return // nobody is reading
		}
		_, _ = f.WriteString(token) // best effort: only frees a hung reader
		f.Close()
	})
}

// answerWithin serves one request on h and fails unless it is answered
// within d; a handler that blocks for ever fails the test instead of
// hanging it.
func answerWithin(t *testing.T, h http.Handler, path string, d time.Duration) (int, string) {
	t.Helper()
	type answer struct {
		code int
		body string
	}
	done := make(chan answer, 1)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		done <- answer{rec.Code, rec.Body.String()}
	}()
	select {
	case a := <-done:
		return a.code, a.body
	case <-time.After(d):
		t.Fatalf("%s: no answer within %s", path, d)
		return 0, ""
	}
}

// TestTokenFileThatHangs: a token file whose read blocks (a FIFO, a hung
// NFS or FUSE mount) neither blocks start-up nor any endpoint. /readyz
// answers within a second, /metrics and /active_users within the fetch
// timeout, a good token read earlier keeps being used, and 60 probes cost
// no OS thread each.
func TestTokenFileThatHangs(t *testing.T) {
	srv, token := upstream(t, fakeopenwebui.Config{}, nil)
	path := filepath.Join(t.TempDir(), "token")
	logs := &harness.SyncBuffer{}
	logger := level.NewFilter(log.NewLogfmtLogger(logs), level.AllowDebug())

	build := func() http.Handler {
		type built struct {
			h   http.Handler
			err error
		}
		done := make(chan built, 1)
		go func() { // as in main: a start-up that blocks on the file fails here
			src, err := tokenSource(path, logger)
			if err != nil {
				done <- built{err: err}
				return
			}
			src() // main's first read, for its warning
			base, _ := parseBaseURL(srv.URL)
			client := openwebui.NewClient(openwebui.Config{BaseURL: base, Token: src, Logger: logger})
			cache := snapshot.New(snapshot.Config{Fetch: client.Count, Timeout: 2 * time.Second, Logger: logger})
			h, err := newHandler(cache, src, "/metrics", logger)
			done <- built{h, err}
		}()
		select {
		case b := <-done:
			if b.err != nil {
				t.Fatal(b.err)
			}
			return b.h
		case <-time.After(3 * time.Second):
			t.Fatal("start-up blocks on the token file")
			return nil
		}
	}

	t.Run("no token read yet", func(t *testing.T) {
		hangingFile(t, path, token)
		h := build()
		before := osThreads(t)
		const probes = 60
		for i := range probes {
			code, body := answerWithin(t, h, "/readyz", time.Second)
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "has not finished after") {
				t.Fatalf("probe %d: /readyz %d %q, want 503 saying the read has not finished", i+1, code, body)
			}
		}
		after := osThreads(t)
		t.Logf("OS threads: %d before %d /readyz probes, %d after", before, probes, after)
		if after > before+2 {
			t.Errorf("OS threads grew from %d to %d over %d probes of a hanging token file", before, after, probes)
		}
		code, body := answerWithin(t, h, "/active_users", 3*time.Second)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "--openwebui.token-file: reading "+path+" has not finished") {
			t.Errorf("/active_users: %d %s, want 503 naming the flag and the file", code, body)
		}
		code, body = answerWithin(t, h, "/metrics", 3*time.Second)
		if code != http.StatusOK || !strings.Contains(body, "\nopenwebui_up 0\n") || strings.Contains(body, "\nopenwebui_active_users ") {
			t.Errorf("/metrics: %d, want openwebui_up 0 and no count:\n%s", code, body)
		}
	})

	t.Run("a good token read before", func(t *testing.T) {
		os.Remove(path)
		if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		h := build()
		if code, body := answerWithin(t, h, "/active_users", 3*time.Second); code != http.StatusOK || body != `{"active_users":1}` {
			t.Fatalf("with a readable file: %d %s", code, body)
		}
		hangingFile(t, path, token)
		for _, path := range []string{"/readyz", "/readyz"} {
			if code, body := answerWithin(t, h, path, time.Second); code != http.StatusOK {
				t.Errorf("%s with a hanging file and a good token: %d %s, want 200", path, code, body)
			}
		}
		if code, body := answerWithin(t, h, "/active_users", 3*time.Second); code != http.StatusOK || body != `{"active_users":1}` {
			t.Errorf("/active_users with a hanging file and a good token: %d %s, want 200 {\"active_users\":1}", code, body)
		}
		if !bytes.Contains([]byte(logs.String()), []byte("the token file hangs; using the last token read from it")) {
			t.Errorf("the hang is not logged:\n%s", logs)
		}
	})
}
