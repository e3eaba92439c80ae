package collector_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/openwebui-exporter/openwebui_exporter/collector"
	"github.com/openwebui-exporter/openwebui_exporter/gate"
)

func TestGateCollectorWarm(t *testing.T) {
	stats := gateStats{
		{
			Name: "big", State: gate.StateUp, Requests: map[gate.Outcome]uint64{},
			Warm: gate.WarmStats{
				Mode: gate.WarmAuto,
				Outcomes: map[string]map[gate.WarmOutcome]uint64{
					"llama3.1:70b": {gate.WarmLoaded: 2, gate.WarmSkipped: 1},
					"nope:1b":      {gate.WarmFailed: 1},
				},
				Durations: map[string]gate.HoldHistogram{
					"llama3.1:70b": {Buckets: []float64{10, 60}, Counts: []uint64{0, 2}, Count: 2, Sum: 81.5},
				},
				Kept: []string{"llama3.1:70b"},
			},
		},
		{Name: "small", State: gate.StateAsleep, Requests: map[gate.Outcome]uint64{}}, // warm=off: no series
	}
	c := collector.NewGate(stats, backendDemand{"small": 0, "big": 1}, time.Second)
	want := `
# HELP openwebui_gate_warm_models 1 for each model the gate keeps loaded now (keep_alive follows the people who use it).
# TYPE openwebui_gate_warm_models gauge
openwebui_gate_warm_models{backend="big",model="llama3.1:70b"} 1
# HELP openwebui_gate_warmup_duration_seconds How long the gate's loaded warm-ups took: the model's load into memory.
# TYPE openwebui_gate_warmup_duration_seconds histogram
openwebui_gate_warmup_duration_seconds_bucket{backend="big",model="llama3.1:70b",le="10"} 0
openwebui_gate_warmup_duration_seconds_bucket{backend="big",model="llama3.1:70b",le="60"} 2
openwebui_gate_warmup_duration_seconds_bucket{backend="big",model="llama3.1:70b",le="+Inf"} 2
openwebui_gate_warmup_duration_seconds_sum{backend="big",model="llama3.1:70b"} 81.5
openwebui_gate_warmup_duration_seconds_count{backend="big",model="llama3.1:70b"} 2
# HELP openwebui_gate_warmups_total Models the gate loaded before a message needed them (--gate.backend warm=), by outcome: loaded (Ollama answered done_reason load), failed (logged; not tried again until the next wake), skipped (auto: max-loaded models were loaded already).
# TYPE openwebui_gate_warmups_total counter
openwebui_gate_warmups_total{backend="big",model="llama3.1:70b",outcome="loaded"} 2
openwebui_gate_warmups_total{backend="big",model="llama3.1:70b",outcome="skipped"} 1
openwebui_gate_warmups_total{backend="big",model="nope:1b",outcome="failed"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"openwebui_gate_warm_models", "openwebui_gate_warmup_duration_seconds", "openwebui_gate_warmups_total"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}
