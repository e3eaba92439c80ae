package gate

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A released request gives its held bytes back once its body is sent, not
// when its answer ends: a long stream must not keep --gate.max-held-bytes
// taken (found in review: the pass-through's LimitReader stopped before the
// EOF that freed them).
func TestReleasedBytesAreFreedOnceTheBodyIsSent(t *testing.T) {
	release := make(chan struct{})
	got := make(chan struct{}, 1)
	sb := newSleepyBackend(t, withVersion(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		got <- struct{}{}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-release // a long stream
	})))
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, sb.url())}})
	defer close(release)
	eventually(t, "asleep", func() bool { return stats(g.Gate, DefaultName).State == StateAsleep })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sendAsync(ctx, http.DefaultClient, http.MethodPost, g.url+"/api/chat", strings.NewReader(strings.Repeat("a", 1000)), nil)
	eventually(t, "held", func() bool { return stats(g.Gate, DefaultName).HeldBytes == 1000 })
	sb.serve()
	select {
	case <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("the held request never reached the backend")
	}
	eventually(t, "the bytes given back while the answer streams", func() bool {
		s := stats(g.Gate, DefaultName)
		return s.HeldBytes == 0 && s.InFlight == 1
	})
}
