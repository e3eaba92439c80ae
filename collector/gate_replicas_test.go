package collector_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/openwebui-exporter/openwebui_exporter/collector"
	"github.com/openwebui-exporter/openwebui_exporter/gate"
)

func TestGateReplicasCollector(t *testing.T) {
	stats := gateStats{
		{Name: "single", State: gate.StateUp}, // not a pool: no series
		{Name: "chat", State: gate.StateUp, Replicas: []gate.ReplicaStats{
			{ID: "10.0.0.1:11434", State: gate.StateUp, InFlight: 2, Requests: 40, Refused: 0, AtOnce: 2},
			{ID: "10.0.0.2:11434", State: gate.StateAsleep, Draining: true, Requests: 7, Refused: 3},
		}},
	}
	want := `
# HELP openwebui_gate_replica_answers_at_once_seen Answers of one model the replica was seen streaming side by side, when more than the pool's parallel= (its OLLAMA_NUM_PARALLEL is higher); else 0.
# TYPE openwebui_gate_replica_answers_at_once_seen gauge
openwebui_gate_replica_answers_at_once_seen{backend="chat",replica="10.0.0.1:11434"} 2
openwebui_gate_replica_answers_at_once_seen{backend="chat",replica="10.0.0.2:11434"} 0
# HELP openwebui_gate_replica_draining 1 while the replica is drained (its pod's preStop asked the gate): it gets nothing new, its streams run to their end.
# TYPE openwebui_gate_replica_draining gauge
openwebui_gate_replica_draining{backend="chat",replica="10.0.0.1:11434"} 0
openwebui_gate_replica_draining{backend="chat",replica="10.0.0.2:11434"} 1
# HELP openwebui_gate_replica_inflight_requests Requests this gate replica passes to the replica right now, streaming answers included.
# TYPE openwebui_gate_replica_inflight_requests gauge
openwebui_gate_replica_inflight_requests{backend="chat",replica="10.0.0.1:11434"} 2
openwebui_gate_replica_inflight_requests{backend="chat",replica="10.0.0.2:11434"} 0
# HELP openwebui_gate_replica_refused_total Requests whose connection the replica refused before a byte was sent: they went to another replica (or were held).
# TYPE openwebui_gate_replica_refused_total counter
openwebui_gate_replica_refused_total{backend="chat",replica="10.0.0.1:11434"} 0
openwebui_gate_replica_refused_total{backend="chat",replica="10.0.0.2:11434"} 3
# HELP openwebui_gate_replica_requests_total Requests this gate replica routed to the replica (its share of the pool).
# TYPE openwebui_gate_replica_requests_total counter
openwebui_gate_replica_requests_total{backend="chat",replica="10.0.0.1:11434"} 40
openwebui_gate_replica_requests_total{backend="chat",replica="10.0.0.2:11434"} 7
# HELP openwebui_gate_replica_up 1 while the replica's own probe says it serves HTTP, else 0.
# TYPE openwebui_gate_replica_up gauge
openwebui_gate_replica_up{backend="chat",replica="10.0.0.1:11434"} 1
openwebui_gate_replica_up{backend="chat",replica="10.0.0.2:11434"} 0
`
	if err := testutil.CollectAndCompare(collector.NewGateReplicas(stats), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(collector.NewGateReplicas(gateStats{{Name: "single"}})); n != 0 {
		t.Errorf("no pool: %d series, want none", n)
	}
}
