package collector

import (
	"github.com/prometheus/client_golang/prometheus"
)

// GateReplicasCollector exposes the replicas of the gate's pools, one
// series per replica ("host:port"), as this gate replica sees them.
type GateReplicasCollector struct {
	gate GateStats

	up, inFlight, requests, refused, draining, atOnce *prometheus.Desc
}

// NewGateReplicas returns the collector of the gate's pools' replicas.
func NewGateReplicas(g GateStats) *GateReplicasCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "gate", name), help, []string{"backend", "replica"}, nil)
	}
	return &GateReplicasCollector{
		gate: g,
		up: desc("replica_up",
			"1 while the replica's own probe says it serves HTTP, else 0."),
		inFlight: desc("replica_inflight_requests",
			"Requests this gate replica passes to the replica right now, streaming answers included."),
		requests: desc("replica_requests_total",
			"Requests this gate replica routed to the replica (its share of the pool)."),
		refused: desc("replica_refused_total",
			"Requests whose connection the replica refused before a byte was sent: they went to another replica (or were held)."),
		draining: desc("replica_draining",
			"1 while the replica is drained (its pod's preStop asked the gate): it gets nothing new, its streams run to their end."),
		atOnce: desc("replica_answers_at_once_seen",
			"Answers of one model the replica was seen streaming side by side, when more than the pool's parallel= (its OLLAMA_NUM_PARALLEL is higher); else 0."),
	}
}

// Describe implements prometheus.Collector.
func (c *GateReplicasCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.inFlight, c.requests, c.refused, c.draining, c.atOnce} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *GateReplicasCollector) Collect(ch chan<- prometheus.Metric) {
	for _, b := range c.gate.Stats() {
		for _, r := range b.Replicas {
			ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, boolValue(r.State == "up"), b.Name, r.ID)
			ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(r.InFlight), b.Name, r.ID)
			ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(r.Requests), b.Name, r.ID)
			ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(r.Refused), b.Name, r.ID)
			ch <- prometheus.MustNewConstMetric(c.draining, prometheus.GaugeValue, boolValue(r.Draining), b.Name, r.ID)
			ch <- prometheus.MustNewConstMetric(c.atOnce, prometheus.GaugeValue, float64(r.AtOnce), b.Name, r.ID)
		}
	}
}
