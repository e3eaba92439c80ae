package collector_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/openwebui-exporter/openwebui_exporter/collector"
	"github.com/openwebui-exporter/openwebui_exporter/gate"
)

type gateStats []gate.BackendStats

func (g gateStats) Stats() []gate.BackendStats { return g }

// backendDemand answers a fixed value per backend, or an error.
type backendDemand map[string]any

func (d backendDemand) Backends() []string { return []string{"small", "big"} }
func (d backendDemand) Value(_ context.Context, backend string) (int, error) {
	switch v := d[backend].(type) {
	case int:
		return v, nil
	case error:
		return 0, v
	}
	return 0, errors.New("no such backend")
}

func TestGateCollector(t *testing.T) {
	stats := gateStats{
		{
			Name: "small", State: gate.StateUp, InFlight: 2,
			Requests: map[gate.Outcome]uint64{"passed": 7, "delivered": 1, "from_memory": 3},
			Hold:     gate.HoldHistogram{Buckets: []float64{1, 10}, Counts: []uint64{0, 1}, Count: 1, Sum: 4.5},
		},
		{
			Name: "big", State: gate.StateStarting, Held: 1, HeldBytes: 512,
			Requests: map[gate.Outcome]uint64{},
			Hold:     gate.HoldHistogram{Buckets: []float64{1, 10}, Counts: []uint64{0, 0}},
		},
	}
	for _, tc := range []struct {
		name   string
		demand backendDemand
		want   string
	}{
		{
			name:   "both known",
			demand: backendDemand{"small": 3, "big": 1},
			want: `
# HELP openwebui_backend_demand What KEDA gets for the backend on every trigger (/active_users?backend=NAME, external-push metadata backend: NAME): people and the gate's demand, see the README. Absent while it depends on Open WebUI's count and that is unknown.
# TYPE openwebui_backend_demand gauge
openwebui_backend_demand{backend="big"} 1
openwebui_backend_demand{backend="small"} 3
`,
		},
		{
			name:   "an unknown count leaves the arrival pool out, never 0",
			demand: backendDemand{"small": errors.New("active user count unknown"), "big": 1},
			want: `
# HELP openwebui_backend_demand What KEDA gets for the backend on every trigger (/active_users?backend=NAME, external-push metadata backend: NAME): people and the gate's demand, see the README. Absent while it depends on Open WebUI's count and that is unknown.
# TYPE openwebui_backend_demand gauge
openwebui_backend_demand{backend="big"} 1
`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := collector.NewGate(stats, tc.demand, time.Second)
			if err := testutil.CollectAndCompare(c, strings.NewReader(tc.want), "openwebui_backend_demand"); err != nil {
				t.Error(err)
			}
		})
	}

	c := collector.NewGate(stats, backendDemand{"small": 3, "big": 1}, time.Second)
	want := `
# HELP openwebui_gate_backend_state The backend's state as this gate replica sees it: 1 for the current one of asleep (connections refused), starting (no HTTP answer yet), up (its readiness probe answers), unknown (not probed yet), misconfigured (TLS fails: requests are answered at once, not held).
# TYPE openwebui_gate_backend_state gauge
openwebui_gate_backend_state{backend="big",state="asleep"} 0
openwebui_gate_backend_state{backend="big",state="misconfigured"} 0
openwebui_gate_backend_state{backend="big",state="starting"} 1
openwebui_gate_backend_state{backend="big",state="unknown"} 0
openwebui_gate_backend_state{backend="big",state="up"} 0
openwebui_gate_backend_state{backend="small",state="asleep"} 0
openwebui_gate_backend_state{backend="small",state="misconfigured"} 0
openwebui_gate_backend_state{backend="small",state="starting"} 0
openwebui_gate_backend_state{backend="small",state="unknown"} 0
openwebui_gate_backend_state{backend="small",state="up"} 1
# HELP openwebui_gate_held_requests Requests this replica holds until the backend answers.
# TYPE openwebui_gate_held_requests gauge
openwebui_gate_held_requests{backend="big"} 1
openwebui_gate_held_requests{backend="small"} 0
# HELP openwebui_gate_held_request_bytes Bytes of the requests this replica holds, headers and bodies (bounded by --gate.max-held-bytes over all backends).
# TYPE openwebui_gate_held_request_bytes gauge
openwebui_gate_held_request_bytes{backend="big"} 512
openwebui_gate_held_request_bytes{backend="small"} 0
# HELP openwebui_gate_inflight_requests Requests passing through this replica to the backend right now, streaming answers included (model lists excluded).
# TYPE openwebui_gate_inflight_requests gauge
openwebui_gate_inflight_requests{backend="big"} 0
openwebui_gate_inflight_requests{backend="small"} 2
# HELP openwebui_gate_hold_duration_seconds How long requests were held before they went on, timed out or their client went away.
# TYPE openwebui_gate_hold_duration_seconds histogram
openwebui_gate_hold_duration_seconds_bucket{backend="big",le="1"} 0
openwebui_gate_hold_duration_seconds_bucket{backend="big",le="10"} 0
openwebui_gate_hold_duration_seconds_bucket{backend="big",le="+Inf"} 0
openwebui_gate_hold_duration_seconds_sum{backend="big"} 0
openwebui_gate_hold_duration_seconds_count{backend="big"} 0
openwebui_gate_hold_duration_seconds_bucket{backend="small",le="1"} 0
openwebui_gate_hold_duration_seconds_bucket{backend="small",le="10"} 1
openwebui_gate_hold_duration_seconds_bucket{backend="small",le="+Inf"} 1
openwebui_gate_hold_duration_seconds_sum{backend="small"} 4.5
openwebui_gate_hold_duration_seconds_count{backend="small"} 1
# HELP openwebui_gate_requests_total Requests by outcome: passed (the backend was up), delivered (after a hold), from_memory (a model list while the backend sleeps), hold_timeout, rejected (over --gate.max-held or --gate.max-held-bytes), client_gone (while held), backend_error (the backend failed after the request was sent), learning (no model list learned yet), shutdown (the replica's drain ended first).
# TYPE openwebui_gate_requests_total counter
openwebui_gate_requests_total{backend="small",outcome="delivered"} 1
openwebui_gate_requests_total{backend="small",outcome="from_memory"} 3
openwebui_gate_requests_total{backend="small",outcome="passed"} 7
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"openwebui_gate_backend_state", "openwebui_gate_held_requests", "openwebui_gate_held_request_bytes",
		"openwebui_gate_inflight_requests", "openwebui_gate_hold_duration_seconds", "openwebui_gate_requests_total"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// A learning wake and whether the gate has a backend's model lists, so that
// a wake nobody's message asked for can be told on a dashboard.
func TestGateCollectorLearning(t *testing.T) {
	stats := gateStats{
		{Name: "small", State: gate.StateUp, ListsKnown: true, Requests: map[gate.Outcome]uint64{}},
		{Name: "big", State: gate.StateAsleep, Learning: true, Requests: map[gate.Outcome]uint64{}},
	}
	c := collector.NewGate(stats, backendDemand{"small": 0, "big": 1}, time.Second)
	want := `
# HELP openwebui_gate_learning 1 while a learning wake is under way for the backend (a model list never seen was asked while it slept: demand without anything held), else 0. It ends when the backend is up, or after --gate.hold-timeout (then /_gate/status says not_learnable).
# TYPE openwebui_gate_learning gauge
openwebui_gate_learning{backend="big"} 1
openwebui_gate_learning{backend="small"} 0
# HELP openwebui_gate_lists_known 1 once this replica has the backend's model list (/api/tags or /v1/models, learned or from the state file), else 0.
# TYPE openwebui_gate_lists_known gauge
openwebui_gate_lists_known{backend="big"} 0
openwebui_gate_lists_known{backend="small"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "openwebui_gate_learning", "openwebui_gate_lists_known"); err != nil {
		t.Error(err)
	}
}
