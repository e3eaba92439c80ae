package gate

import (
	"testing"
	"time"
)

func TestChangedCoalescesAndLosesNoChange(t *testing.T) {
	g, err := New(Config{Backends: []BackendConfig{backendURL(t, "http://127.0.0.1:1")}})
	if err != nil {
		t.Fatal(err)
	}
	first := g.Changed()
	start := time.Now()
	for i := 0; i < 10000; i++ {
		g.notify()
	}
	elapsed := time.Since(start)
	select {
	case <-first:
	default:
		t.Error("the first change did not close Changed at once")
	}
	last := g.Changed() // taken after the last change: must still close
	select {
	case <-last:
	case <-time.After(10 * time.Second):
		t.Fatal("the last change of a burst was lost")
	}
	g.chMu.Lock()
	fires := g.fired
	g.chMu.Unlock()
	if limit := 2 + int(elapsed/notifyCoalesce); fires > limit {
		t.Errorf("10000 changes in %v closed Changed %d times, want at most %d (one per %v)", elapsed, fires, limit, notifyCoalesce)
	}
}
