package collector

import (
	"context"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/openwebui-exporter/openwebui_exporter/gate"
)

// GateStats is the wake gate as its collector reads it: gate.Gate.
type GateStats interface {
	Stats() []gate.BackendStats
}

// Demand is what KEDA gets per backend: demand.Decider.
type Demand interface {
	Backends() []string
	Value(ctx context.Context, backend string) (int, error)
}

// gateStates are the states openwebui_gate_backend_state always has a
// series for, so that a query for one of them never finds nothing.
var gateStates = []gate.State{gate.StateUnknown, gate.StateAsleep, gate.StateStarting, gate.StateUp, gate.StateMisconfigured}

// GateCollector exposes the wake gate's state and what KEDA gets for each
// of its backends.
type GateCollector struct {
	gate    GateStats
	demand  Demand
	timeout time.Duration

	state, held, heldBytes, inFlight, hold, requests, backendDemand *prometheus.Desc
	warmups, warmupDuration, warmModels                             *prometheus.Desc
	learning, listsKnown                                            *prometheus.Desc
}

// NewGate returns the gate's collector. timeout bounds how long Collect
// waits for Open WebUI's count (arrival-woken backends need it).
func NewGate(g GateStats, d Demand, timeout time.Duration) *GateCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "gate", name), help, labels, nil)
	}
	return &GateCollector{
		gate:    g,
		demand:  d,
		timeout: timeout,
		state: desc("backend_state",
			"The backend's state as this gate replica sees it: 1 for the current one of asleep (connections refused), starting (no HTTP answer yet), up (its readiness probe answers), unknown (not probed yet), misconfigured (TLS fails: requests are answered at once, not held).", "backend", "state"),
		held: desc("held_requests",
			"Requests this replica holds until the backend answers.", "backend"),
		heldBytes: desc("held_request_bytes",
			"Bytes of the requests this replica holds, headers and bodies (bounded by --gate.max-held-bytes over all backends).", "backend"),
		inFlight: desc("inflight_requests",
			"Requests passing through this replica to the backend right now, streaming answers included (model lists excluded).", "backend"),
		hold: desc("hold_duration_seconds",
			"How long requests were held before they went on, timed out or their client went away.", "backend"),
		requests: desc("requests_total",
			"Requests by outcome: passed (the backend was up), delivered (after a hold), from_memory (a model list while the backend sleeps), hold_timeout, rejected (over --gate.max-held or --gate.max-held-bytes), client_gone (while held), backend_error (the backend failed after the request was sent), learning (no model list learned yet), shutdown (the replica's drain ended first).", "backend", "outcome"),
		learning: desc("learning",
			"1 while a learning wake is under way for the backend (a model list never seen was asked while it slept: demand without anything held), else 0. It ends when the backend is up, or after --gate.hold-timeout (then /_gate/status says not_learnable).", "backend"),
		listsKnown: desc("lists_known",
			"1 once this replica has the backend's model list (/api/tags or /v1/models, learned or from the state file), else 0.", "backend"),
		warmups: desc("warmups_total",
			"Models the gate loaded before a message needed them (--gate.backend warm=), by outcome: loaded (Ollama answered done_reason load), failed (logged; not tried again until the next wake), skipped (auto: max-loaded models were loaded already).", "backend", "model", "outcome"),
		warmupDuration: desc("warmup_duration_seconds",
			"How long the gate's loaded warm-ups took: the model's load into memory.", "backend", "model"),
		warmModels: desc("warm_models",
			"1 for each model the gate keeps loaded now (keep_alive follows the people who use it).", "backend", "model"),
		backendDemand: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "backend_demand"),
			"What KEDA gets for the backend on every trigger (/active_users?backend=NAME, external-push metadata backend: NAME): people and the gate's demand, see the README. Absent while it depends on Open WebUI's count and that is unknown.", []string{"backend"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *GateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.held, c.heldBytes, c.inFlight, c.hold, c.requests, c.backendDemand, c.learning, c.listsKnown, c.warmups, c.warmupDuration, c.warmModels} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *GateCollector) Collect(ch chan<- prometheus.Metric) {
	for _, b := range c.gate.Stats() {
		for _, s := range gateStates {
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, boolValue(b.State == s), b.Name, string(s))
		}
		ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, float64(b.Held), b.Name)
		ch <- prometheus.MustNewConstMetric(c.heldBytes, prometheus.GaugeValue, float64(b.HeldBytes), b.Name)
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(b.InFlight), b.Name)
		ch <- prometheus.MustNewConstMetric(c.learning, prometheus.GaugeValue, boolValue(b.Learning), b.Name)
		ch <- prometheus.MustNewConstMetric(c.listsKnown, prometheus.GaugeValue, boolValue(b.ListsKnown), b.Name)
		ch <- prometheus.MustNewConstHistogram(c.hold, b.Hold.Count, b.Hold.Sum, buckets(b.Hold), b.Name)
		outcomes := make([]string, 0, len(b.Requests))
		for o := range b.Requests {
			outcomes = append(outcomes, string(o))
		}
		sort.Strings(outcomes)
		for _, o := range outcomes {
			ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(b.Requests[gate.Outcome(o)]), b.Name, o)
		}
		c.collectWarm(ch, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout+time.Second)
	defer cancel()
	for _, name := range c.demand.Backends() {
		if n, err := c.demand.Value(ctx, name); err == nil {
			ch <- prometheus.MustNewConstMetric(c.backendDemand, prometheus.GaugeValue, float64(n), name)
		}
	}
}

// collectWarm exposes a backend's warming: nothing with warm=off.
func (c *GateCollector) collectWarm(ch chan<- prometheus.Metric, b gate.BackendStats) {
	models := make([]string, 0, len(b.Warm.Outcomes))
	for m := range b.Warm.Outcomes {
		models = append(models, m)
	}
	sort.Strings(models)
	for _, m := range models {
		for _, o := range []gate.WarmOutcome{gate.WarmLoaded, gate.WarmFailed, gate.WarmSkipped} {
			if n, ok := b.Warm.Outcomes[m][o]; ok {
				ch <- prometheus.MustNewConstMetric(c.warmups, prometheus.CounterValue, float64(n), b.Name, m, string(o))
			}
		}
		if h, ok := b.Warm.Durations[m]; ok {
			ch <- prometheus.MustNewConstHistogram(c.warmupDuration, h.Count, h.Sum, buckets(h), b.Name, m)
		}
	}
	for _, m := range b.Warm.Kept {
		ch <- prometheus.MustNewConstMetric(c.warmModels, prometheus.GaugeValue, 1, b.Name, m)
	}
}

func buckets(h gate.HoldHistogram) map[float64]uint64 {
	m := make(map[float64]uint64, len(h.Buckets))
	for i, upper := range h.Buckets {
		if i < len(h.Counts) {
			m[upper] = h.Counts[i]
		}
	}
	return m
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
