package gate

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// A stream that ends early (its client goes away, or its replica breaks
// mid-answer) aborts the handler with http.ErrAbortHandler. The replica's
// in-flight count must still end with it: a count left behind makes the
// replica look busy to the balancer for ever, and makes its drain (preStop)
// wait out the whole grace period.
func TestPoolAbortedStreamEndsReplicaCount(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(cancel context.CancelFunc, replicaDone chan struct{})
	}{
		{"client goes away", func(cancel context.CancelFunc, _ chan struct{}) { cancel() }},
		{"replica breaks mid-answer", func(_ context.CancelFunc, replicaDone chan struct{}) { close(replicaDone) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newReplicaNet(t)
			replicaDone := make(chan struct{})
			streaming := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost {
					_, _ = io.WriteString(w, `{"models":[{"name":"tiny:1b"}],"version":"0.17.4"}`)
					return
				}
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/x-ndjson")
				_, _ = io.WriteString(w, `{"message":{"content":"a"},"done":false}`+"\n")
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
				case <-replicaDone:
					panic(http.ErrAbortHandler) // the connection is cut mid-answer
				}
			})
			n.add("r1.test:11434", streaming)
			n.add("r2.test:11434", streaming)
			g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434", "pool=http://r2.test:11434"), Transport: n.transport()})
			waitReplicas(t, g, "pool", 2)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.url+"/pool/api/chat",
				strings.NewReader(`{"model":"tiny:1b","messages":[{"role":"user","content":"hi"}]}`))
			if err != nil {
				t.Fatal(err)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("chat: %v", err)
			}
			defer res.Body.Close()
			first := make([]byte, 1)
			if _, err := io.ReadFull(res.Body, first); err != nil {
				t.Fatalf("reading the first byte of the stream: %v", err)
			}
			tc.end(cancel, replicaDone)
			_, _ = io.Copy(io.Discard, res.Body)

			// The backend's own count ends in serveDemand's deferred
			// accounting, after the abort has gone through deliver.
			settle(t, g, "pool")
			st := stats(g.Gate, "pool")
			for _, r := range st.Replicas {
				if r.InFlight != 0 {
					t.Errorf("after the aborted stream replica %s counts %d in flight, want 0", r.ID, r.InFlight)
				}
			}
		})
	}
}
