//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
)

const (
	// The model the pool backend warms (--gate.backend=pool=URL,warm=...).
	warmModel = "tiny:1b"
	// How long a stand-in replica takes to load a model: the warm-up's
	// duration is at least this.
	warmLoadTime = 200 * time.Millisecond
)

// standInReplica is one replica of the pool backend: a stand-in Ollama that
// loads models as Ollama's scheduler does (fakeollama.Loader), so that the
// gate's warm-up (a load request) is answered done_reason "load".
type standInReplica struct {
	srv    *fakeollama.Server
	ollama *fakeollama.Handler
	loader *fakeollama.Loader
}

// startStandInReplica starts a replica on a held loopback port, serving at once.
func startStandInReplica(t *testing.T) *standInReplica {
	t.Helper()
	h := fakeollama.New(fakeollama.Config{ChunkInterval: -1})
	l := fakeollama.NewLoader(h, fakeollama.LoaderConfig{DefaultLoadTime: warmLoadTime})
	srv, err := fakeollama.NewServer("127.0.0.1:0", l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	if err := srv.Start(0); err != nil {
		t.Fatal(err)
	}
	return &standInReplica{srv: srv, ollama: h, loader: l}
}

// checkPool checks what Prometheus sees of the pool backend (two replicas,
// warm=warmModel): the warm-up as soon as it was up, before any message,
// and a chat routed to one of its replicas. How many of the replicas are
// warmed is left open: today the gate sends a pool's warm-up to its first
// replica only.
func checkPool(t *testing.T, p prom, poolURL string, pool []*standInReplica) {
	sel := `job="` + job + `", backend="pool"`
	warm := fmt.Sprintf(`openwebui_gate_warmups_total{%s, model=%q, outcome="loaded"} >= 1
  and on (backend, model) openwebui_gate_warm_models{%s} == 1
  and on (backend, model) openwebui_gate_warmup_duration_seconds_count{%s} >= 1
  and on (backend, model) openwebui_gate_warmup_duration_seconds_sum{%s} >= %g`,
		sel, warmModel, sel, sel, sel, warmLoadTime.Seconds())
	eventually(t, settle, "Prometheus sees the pool's warm-up of "+warmModel+": loaded, kept, and its load time", func() (bool, string) {
		s, err := p.query(warm)
		return err == nil && len(s) == 1, p.describe(warm)
	})
	// The stand-ins loaded it (and nothing else), and no message has reached
	// them yet.
	var loads []string
	var messages int64
	for _, r := range pool {
		loads = append(loads, r.loader.Loads()...)
		messages += r.ollama.Requests()
	}
	if len(loads) == 0 || slices.ContainsFunc(loads, func(m string) bool { return m != warmModel }) || messages != 0 {
		t.Fatalf("the pool's stand-ins loaded %q and served %d messages; want %s loaded before any message", loads, messages, warmModel)
	}
	t.Logf("ok: the pool's stand-ins loaded %q before any message", loads)

	r, err := post(poolURL+"/api/chat", `{"model":"`+warmModel+`","messages":[{"role":"user","content":"hi"}]}`, time.Minute)
	if err != nil || r.status != http.StatusOK || !strings.Contains(string(r.body), `"done":true`) {
		t.Fatalf("a chat through the pool: %v HTTP %d %s", err, r.status, r.body)
	}
	messages = 0
	for _, r := range pool {
		messages += r.ollama.Requests()
	}
	if messages != 1 {
		t.Fatalf("the pool's stand-ins served %d messages, want 1", messages)
	}

	// One series per replica, labelled with its address; total is the sum
	// over both.
	replicas := []string{pool[0].srv.Addr(), pool[1].srv.Addr()}
	slices.Sort(replicas)
	for _, c := range []struct {
		metric, what string
		total        float64
	}{
		{"openwebui_gate_replica_up", "both serve", 2},
		{"openwebui_gate_replica_inflight_requests", "no request in flight", 0},
		{"openwebui_gate_replica_refused_total", "no connection refused", 0},
		{"openwebui_gate_replica_draining", "none draining", 0},
		{"openwebui_gate_replica_answers_at_once_seen", "no more answers at once than parallel=", 0},
		{"openwebui_gate_replica_requests_total", "the chat routed to one of them", 1},
	} {
		q := c.metric + "{" + sel + "}"
		eventually(t, settle, fmt.Sprintf("Prometheus sees %s for both replicas of the pool, %g in all: %s", c.metric, c.total, c.what), func() (bool, string) {
			s, err := p.query(q)
			if err != nil || len(s) != 2 {
				return false, p.describe(q)
			}
			var got []string
			var total float64
			for _, x := range s {
				v, err := x.value()
				if err != nil {
					return false, p.describe(q)
				}
				got = append(got, x.Metric["replica"])
				total += v
			}
			slices.Sort(got)
			return slices.Equal(got, replicas) && total == c.total, p.describe(q)
		})
	}
}
