package fakeollama_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
)

func newLoader(t *testing.T, cfg fakeollama.LoaderConfig, fcfg fakeollama.Config) (*fakeollama.Loader, string) {
	t.Helper()
	if fcfg.Models == nil {
		fcfg.Models = []string{"small:8b", "big:70b"}
	}
	if fcfg.ChunkInterval == 0 {
		fcfg.ChunkInterval = -1
	}
	l := fakeollama.NewLoader(fakeollama.New(fcfg), cfg)
	ts := httptest.NewServer(l)
	t.Cleanup(ts.Close)
	return l, ts.URL
}

func postJSON(t *testing.T, url, path, body string) (int, string) {
	t.Helper()
	res, err := http.Post(url+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

type psModel struct {
	Name      string    `json:"name"`
	ExpiresAt time.Time `json:"expires_at"`
}

func ps(t *testing.T, url string) []psModel {
	t.Helper()
	res, err := http.Get(url + "/api/ps")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var v struct {
		Models []psModel `json:"models"`
	}
	if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v.Models
}

func TestLoaderPreload(t *testing.T) {
	for _, tc := range []struct {
		name, path, body string
		wantBody         string
		wantLoaded       []string
		wantForever      bool
	}{
		{"generate without a prompt loads", "/api/generate", `{"model":"small:8b"}`,
			`{"created_at":"2026-01-02T03:04:05Z","done":true,"done_reason":"load","model":"small:8b","response":""}`, []string{"small:8b"}, false},
		{"chat without messages loads", "/api/chat", `{"model":"small:8b","messages":[]}`,
			`{"created_at":"2026-01-02T03:04:05Z","done":true,"done_reason":"load","model":"small:8b","response":""}`, []string{"small:8b"}, false},
		{"keep_alive -1 keeps it for ever", "/api/generate", `{"model":"small:8b","keep_alive":-1}`,
			`{"created_at":"2026-01-02T03:04:05Z","done":true,"done_reason":"load","model":"small:8b","response":""}`, []string{"small:8b"}, true},
		{"keep_alive 0 unloads", "/api/generate", `{"model":"small:8b","keep_alive":0}`,
			`{"created_at":"2026-01-02T03:04:05Z","done":true,"done_reason":"unload","model":"small:8b","response":""}`, []string{}, false},
		{"an unknown model is Ollama's 404", "/api/generate", `{"model":"nope"}`,
			`{"error":"model 'nope' not found"}`, []string{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, url := newLoader(t, fakeollama.LoaderConfig{DefaultLoadTime: time.Millisecond}, fakeollama.Config{})
			if tc.name == "keep_alive 0 unloads" {
				postJSON(t, url, "/api/generate", `{"model":"small:8b"}`)
			}
			_, body := postJSON(t, url, tc.path, tc.body)
			if strings.TrimSpace(body) != tc.wantBody {
				t.Errorf("answer = %s, want %s", body, tc.wantBody)
			}
			if got := l.Loaded(); !reflect.DeepEqual(got, tc.wantLoaded) {
				t.Errorf("loaded = %v, want %v", got, tc.wantLoaded)
			}
			for _, m := range ps(t, url) {
				if forever := m.ExpiresAt.Year() > 2300; forever != tc.wantForever {
					t.Errorf("/api/ps %s expires_at %s: for ever = %v, want %v", m.Name, m.ExpiresAt, forever, tc.wantForever)
				}
			}
		})
	}
}

// Ollama loads one model at a time: a request for another model waits for
// the load under way, and a full memory waits for a model that is in use.
func TestLoaderOneLoadAtATime(t *testing.T) {
	l, url := newLoader(t, fakeollama.LoaderConfig{LoadTime: map[string]time.Duration{"big:70b": 200 * time.Millisecond}},
		fakeollama.Config{})
	bigDone := make(chan struct{})
	go func() {
		defer close(bigDone)
		if res, err := http.Post(url+"/api/generate", "application/json", strings.NewReader(`{"model":"big:70b"}`)); err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	}()
	// Wait until the big load has begun (bounded: the loop ends by itself):
	// the big model's request holds the loader, and nothing is loaded yet.
	for i := 0; i < 1000 && l.Loading() == ""; i++ {
		time.Sleep(time.Millisecond)
	}
	if _, body := postJSON(t, url, "/api/chat", `{"model":"small:8b","stream":false,"messages":[{"role":"user","content":"hi"}]}`); !strings.Contains(body, `"done_reason":"stop"`) {
		t.Fatalf("chat = %s", body)
	}
	<-bigDone
	// The small model loads at once (no load time): had it not waited for
	// the big load, it would have ended first.
	if got, want := l.Loads(), []string{"big:70b", "small:8b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("loads = %v, want %v: Ollama loads one model at a time", got, want)
	}
	if got, want := l.Loaded(), []string{"small:8b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("loaded = %v, want %v (one fits: the idle big model was unloaded)", got, want)
	}
}

func TestLoaderNeverEvictsAModelInUse(t *testing.T) {
	l, url := newLoader(t, fakeollama.LoaderConfig{DefaultLoadTime: time.Millisecond},
		fakeollama.Config{Chunks: 5, ChunkInterval: 20 * time.Millisecond})
	// The small model streams: its header came, so it is loaded and in use.
	headers, smallDone := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(smallDone)
		res, err := http.Post(url+"/api/chat", "application/json", strings.NewReader(`{"model":"small:8b","messages":[{"role":"user","content":"hi"}]}`))
		headers <- err
		if err != nil {
			return
		}
		defer res.Body.Close()
		_, _ = io.Copy(io.Discard, res.Body)
	}()
	if err := <-headers; err != nil {
		t.Fatal(err)
	}
	postJSON(t, url, "/api/generate", `{"model":"big:70b"}`)
	select {
	case <-smallDone:
	default:
		t.Error("the big model loaded while the small one was still answering")
	}
	if got, want := l.Loaded(), []string{"big:70b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("loaded = %v, want %v", got, want)
	}
}

func TestLoaderKeepAliveExpires(t *testing.T) {
	l, url := newLoader(t, fakeollama.LoaderConfig{MaxLoaded: 2, KeepAlive: 50 * time.Millisecond}, fakeollama.Config{})
	postJSON(t, url, "/api/generate", `{"model":"small:8b"}`)
	postJSON(t, url, "/api/generate", `{"model":"big:70b","keep_alive":"1h"}`)
	got := ps(t, url)
	if len(got) != 2 || got[0].Name != "big:70b" {
		t.Fatalf("/api/ps = %v, want both, the one that expires last first", got)
	}
	for i := 0; i < 500 && len(l.Loaded()) == 2; i++ {
		time.Sleep(5 * time.Millisecond)
	}
	if got, want := l.Loaded(), []string{"big:70b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("loaded = %v, want %v: OLLAMA_KEEP_ALIVE ended the small one, the request's 1h keeps the big one", got, want)
	}
}

// A request for a model in memory with other runner options (num_ctx, ...)
// loads it again, as Ollama's scheduler does; the same runner options, or
// other options that are not runner options (temperature), do not.
func TestLoaderReloadsOnOtherRunnerOptions(t *testing.T) {
	for _, tc := range []struct {
		name, second string
		wantLoads    []string
	}{
		{"the same num_ctx", `{"model":"small:8b","options":{"num_ctx":16384}}`, []string{"small:8b"}},
		{"the same num_ctx and another temperature", `{"model":"small:8b","options":{"num_ctx":16384,"temperature":0.1}}`, []string{"small:8b"}},
		{"no options: Ollama's default num_ctx", `{"model":"small:8b","keep_alive":-1}`, []string{"small:8b", "small:8b"}},
		{"another num_ctx", `{"model":"small:8b","options":{"num_ctx":8192}}`, []string{"small:8b", "small:8b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, url := newLoader(t, fakeollama.LoaderConfig{DefaultLoadTime: time.Millisecond}, fakeollama.Config{})
			postJSON(t, url, "/api/chat", `{"model":"small:8b","messages":[{"role":"user","content":"hi"}],"stream":false,"options":{"num_ctx":16384,"temperature":0.7}}`)
			if code, body := postJSON(t, url, "/api/generate", tc.second); code != http.StatusOK {
				t.Fatalf("second request: %d %s", code, body)
			}
			if got := l.Loads(); !reflect.DeepEqual(got, tc.wantLoads) {
				t.Errorf("loads = %v, want %v", got, tc.wantLoads)
			}
		})
	}
}
