package fakeollama_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
)

// gated is an inner handler whose answers end only when told, counting how
// many run at once.
type gated struct {
	mu            sync.Mutex
	running, most int
	release       chan struct{}
	started       chan struct{}
}

func (g *gated) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	g.mu.Lock()
	g.running++
	g.most = max(g.most, g.running)
	g.mu.Unlock()
	g.started <- struct{}{}
	<-g.release
	g.mu.Lock()
	g.running--
	g.mu.Unlock()
	_, _ = io.WriteString(w, "done")
}

// Parallel answers run at once; the others wait for a slot, in order.
func TestReplicaParallel(t *testing.T) {
	for _, parallel := range []int{1, 2} {
		t.Run(fmt.Sprintf("parallel=%d", parallel), func(t *testing.T) {
			inner := &gated{release: make(chan struct{}), started: make(chan struct{}, 10)}
			rp := fakeollama.NewReplica(inner, fakeollama.ReplicaConfig{Parallel: parallel})
			ts := httptest.NewServer(rp)
			defer ts.Close()
			const n = 3
			var wg sync.WaitGroup
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := http.Post(ts.URL+"/api/chat", "application/json", strings.NewReader(`{"model":"tiny:1b","messages":[{"role":"user","content":"hi"}]}`))
					if err != nil {
						t.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}()
			}
			for range parallel {
				<-inner.started
			}
			// The rest wait: bounded wait for them to reach the queue.
			for i := 0; rp.Waiting() != n-parallel; i++ {
				if i > 500 {
					t.Fatalf("waiting = %d, want %d", rp.Waiting(), n-parallel)
				}
				time.Sleep(10 * time.Millisecond)
			}
			select {
			case <-inner.started:
				t.Fatalf("an answer started beyond %d slots", parallel)
			default:
			}
			for range n {
				inner.release <- struct{}{}
			}
			wg.Wait()
			st := rp.Stats()
			if inner.most != parallel || st.Answers != n || st.MaxWaiting != n-parallel {
				t.Errorf("most at once %d (want %d), answers %d (want %d), max waiting %d (want %d)",
					inner.most, parallel, st.Answers, n, st.MaxWaiting, n-parallel)
			}
		})
	}
}

type msg struct{ Role, Content string }

func chatBody(msgs ...msg) string {
	var ms []map[string]string
	for _, m := range msgs {
		ms = append(ms, map[string]string{"role": m.Role, "content": m.Content})
	}
	b, _ := json.Marshal(map[string]any{"model": "tiny:1b", "messages": ms, "stream": false})
	return string(b)
}

// A turn whose earlier turns the replica served reads only its new message;
// the cache holds CacheSlots conversations.
func TestReplicaPromptCache(t *testing.T) {
	a1 := msg{"user", strings.Repeat("a", 1000)}
	b1 := msg{"user", strings.Repeat("b", 700)}
	ans := msg{"assistant", strings.Repeat("x", 300)}
	a2 := msg{"user", strings.Repeat("c", 50)}
	sys := msg{"system", strings.Repeat("s", 200)}
	quoted := func(s string) int { return len(s) + 2 } // content is counted as its JSON text
	tests := []struct {
		name    string
		slots   int
		bodies  []string
		prefill int64
		cached  int64
	}{
		{"one turn", 1, []string{chatBody(a1)}, int64(quoted(a1.Content)), 0},
		{"second turn of the same chat: the answer generated here is cached too", 1,
			[]string{chatBody(a1), chatBody(a1, ans, a2)},
			int64(quoted(a1.Content) + quoted(a2.Content)), int64(quoted(a1.Content) + quoted(ans.Content))},
		{"another chat in between evicts the only slot", 1,
			[]string{chatBody(a1), chatBody(b1), chatBody(a1, ans, a2)},
			int64(2*quoted(a1.Content) + quoted(b1.Content) + quoted(ans.Content) + quoted(a2.Content)), 0},
		{"two slots keep both chats", 2,
			[]string{chatBody(a1), chatBody(b1), chatBody(a1, ans, a2)},
			int64(quoted(a1.Content) + quoted(b1.Content) + quoted(a2.Content)), int64(quoted(a1.Content) + quoted(ans.Content))},
		{"a shared system prompt is a shared prefix", 1,
			[]string{chatBody(sys, a1), chatBody(sys, b1)},
			int64(quoted(sys.Content) + quoted(a1.Content) + quoted(b1.Content)), int64(quoted(sys.Content))},
		{"a body that is not JSON is one uncached message", 1, []string{"not json"}, int64(len("not json")), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rp := fakeollama.NewReplica(fakeollama.New(fakeollama.Config{ChunkInterval: -1}), fakeollama.ReplicaConfig{CacheSlots: tt.slots})
			for _, b := range tt.bodies {
				req := httptest.NewRequest(http.MethodPost, "/api/chat", strings.NewReader(b))
				rp.ServeHTTP(httptest.NewRecorder(), req)
			}
			st := rp.Stats()
			if st.PrefillBytes != tt.prefill || st.CachedBytes != tt.cached {
				t.Errorf("prefill %d bytes, cached %d; want %d, %d", st.PrefillBytes, st.CachedBytes, tt.prefill, tt.cached)
			}
		})
	}
}

// Lists and other requests are not queued behind answers.
func TestReplicaListsPass(t *testing.T) {
	inner := &gated{release: make(chan struct{}), started: make(chan struct{}, 10)}
	rp := fakeollama.NewReplica(inner, fakeollama.ReplicaConfig{})
	go rp.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/api/chat", strings.NewReader(chatBody(msg{"user", "hi"}))))
	<-inner.started
	done := make(chan struct{})
	go func() {
		rp.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/api/tags", nil))
		close(done)
	}()
	<-inner.started // the list reached the inner handler while the answer runs
	inner.release <- struct{}{}
	inner.release <- struct{}{}
	<-done
	if rp.Stats().Answers != 1 {
		t.Errorf("answers = %d, want 1 (the list is not an answer)", rp.Stats().Answers)
	}
}
