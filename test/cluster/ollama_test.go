package cluster

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// ollamaProcess plays the kubelet for one stub Ollama Deployment: there is
// no kubelet here, so when KEDA sets spec.replicas to 1 or more it starts a
// stand-in Ollama process (cmd/fakeollama) at a fixed address, and when
// spec.replicas returns to 0 it stops it. The stand-in opens its port at once
// but answers no HTTP for --start-delay, as Ollama does while it starts.
type ollamaProcess struct {
	t        *testing.T
	name     string // for logs: the Deployment's name
	addr     string // 127.0.0.1:PORT, the Service address the gate is given
	args     []string
	replicas *replicaWatcher

	mu      sync.Mutex
	cur     *proc
	starts  []time.Time // when each process was started
	stops   []time.Time
	outputs []string // output of the processes that ended
	stop    chan struct{}
	done    chan struct{}
}

// fakeOllamaOptions are the stand-in's knobs.
type fakeOllamaOptions struct {
	startDelay    time.Duration // port open, no HTTP answer, for this long after the start
	models        string        // comma-separated model names
	chunks        int           // streamed chunks per answer
	chunkInterval time.Duration // between chunks
	loadTime      time.Duration // > 0: models load as Ollama's do, taking this long each (--load-time)
}

// followReplicas starts the stand-in whenever the watched Deployment has
// spec.replicas >= 1 and stops it at 0, until the test ends.
func followReplicas(t *testing.T, name, addr string, w *replicaWatcher, opt fakeOllamaOptions) *ollamaProcess {
	t.Helper()
	o := &ollamaProcess{
		t: t, name: name, addr: addr, replicas: w,
		args: []string{"--listen", addr, "--start-delay", opt.startDelay.String(), "--models", opt.models,
			"--chunks", strconv.Itoa(opt.chunks), "--chunk-interval", opt.chunkInterval.String()},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	if opt.loadTime > 0 {
		o.args = append(o.args, "--load-time", opt.loadTime.String())
	}
	go o.loop()
	t.Cleanup(func() {
		close(o.stop)
		<-o.done
		if t.Failed() {
			o.mu.Lock()
			defer o.mu.Unlock()
			t.Logf("stand-in Ollama %s: started at %v, stopped at %v", o.name, o.starts, o.stops)
			for i, out := range o.outputs {
				t.Logf("output of stand-in Ollama %s, process %d:\n%s", o.name, i+1, out)
			}
		}
	})
	return o
}

// loop reconciles every 10 ms, the way a kubelet would (much faster than
// one, so the delays measured are KEDA's and the gate's, not ours).
func (o *ollamaProcess) loop() {
	defer close(o.done)
	defer o.setRunning(false)
	for {
		select {
		case <-o.stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
		n, ok := o.replicas.current()
		o.setRunning(ok && n > 0)
	}
}

func (o *ollamaProcess) setRunning(want bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cur != nil && o.cur.exited() {
		// It crashed: keep the output; the next round starts a new one.
		o.outputs = append(o.outputs, o.cur.tail(4000))
		o.stops = append(o.stops, time.Now())
		o.cur = nil
	}
	switch {
	case want && o.cur == nil:
		p, err := startProc("fakeollama-"+o.name, fakeOllamaBin, nil, o.args...)
		if err != nil {
			o.t.Errorf("stand-in Ollama %s: %v", o.name, err)
			return
		}
		o.cur = p
		o.starts = append(o.starts, time.Now())
	case !want && o.cur != nil:
		o.cur.stop()
		o.outputs = append(o.outputs, o.cur.tail(4000))
		o.stops = append(o.stops, time.Now())
		o.cur = nil
	}
}

// running reports whether a stand-in process is up, and since when.
func (o *ollamaProcess) running() (bool, time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cur == nil || len(o.starts) == 0 {
		return false, time.Time{}
	}
	return true, o.starts[len(o.starts)-1]
}

// startCount is how many times a stand-in process was started.
func (o *ollamaProcess) startCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.starts)
}

// waitServing waits until the stand-in answers GET /api/version (the
// gate's readiness probe), and returns when it first did.
func (o *ollamaProcess) waitServing(timeout time.Duration) (time.Time, error) {
	var at time.Time
	err := poll(timeout, 10*time.Millisecond, func() (bool, error) {
		if up, _ := o.running(); !up {
			return false, nil
		}
		r, err := httpGet("http://" + o.addr + "/api/version")
		if err == nil && r.status == 200 {
			at = time.Now()
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return at, fmt.Errorf("stand-in Ollama %s never answered /api/version: %w", o.name, err)
	}
	return at, nil
}

// waitStopped waits until no stand-in process runs and nothing listens.
func (o *ollamaProcess) waitStopped(timeout time.Duration) error {
	return poll(timeout, 20*time.Millisecond, func() (bool, error) {
		if up, _ := o.running(); up {
			return false, nil
		}
		c, err := net.DialTimeout("tcp", o.addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return false, nil
		}
		return true, nil
	})
}
