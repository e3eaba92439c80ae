package demand_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/gate"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

// people is a fixed snapshot; gets counts the reads, so that a test can
// say when the people count was (not) needed.
type people struct {
	snap snapshot.Snapshot
	gets int
}

func (p *people) Get(context.Context) snapshot.Snapshot { p.gets++; return p.snap }
func (p *people) Refresh(context.Context, time.Duration) snapshot.Snapshot {
	p.gets++
	return p.snap
}

// gateDemand is a gate with fixed backends and demand.
type gateDemand struct {
	backends []gate.BackendConfig
	demand   map[string]gate.Demand
}

func (g gateDemand) Backends() []gate.BackendConfig { return g.backends }
func (g gateDemand) Demand(name string) (gate.Demand, bool) {
	for _, b := range g.backends {
		if b.Name == name {
			return g.demand[name], true
		}
	}
	return gate.Demand{}, false
}
func (g gateDemand) Changed() <-chan struct{} { return nil }

func known(active int) snapshot.Snapshot {
	return snapshot.Snapshot{Count: openwebui.Count{ActiveUsers: active}}
}

func engaged(active, engaged int) snapshot.Snapshot {
	return snapshot.Snapshot{Count: openwebui.Count{ActiveUsers: active, IdlePolicy: true, EngagedUsers: engaged}}
}

var unknown = snapshot.Snapshot{Err: errors.New("GET /api/usage: HTTP 401")}

func twoPools(small, big gate.Demand) gateDemand {
	return gateDemand{
		backends: []gate.BackendConfig{
			{Name: "small", Wake: gate.WakeArrival},
			{Name: "big", Wake: gate.WakeRequest, Idle: 10 * time.Minute},
		},
		demand: map[string]gate.Demand{"small": small, "big": big},
	}
}

func TestValue(t *testing.T) {
	one := gateDemand{backends: []gate.BackendConfig{{Name: "default", Wake: gate.WakeArrival}}, demand: map[string]gate.Demand{}}
	holding := gateDemand{backends: one.backends, demand: map[string]gate.Demand{"default": {Held: 2}}}
	for _, tc := range []struct {
		name    string
		people  snapshot.Snapshot
		gate    demand.Gate // nil: no gate
		backend string
		want    int
		wantErr string // substring; "" for no error
		noFetch bool   // the answer must not need Open WebUI's count
	}{
		{name: "no gate: the people count", people: known(3), want: 3},
		{name: "no gate: the idle policy's engaged users", people: engaged(5, 2), want: 2},
		{name: "no gate: unknown is an error, never 0", people: unknown, wantErr: "active user count unknown: GET /api/usage: HTTP 401"},
		{name: "no gate: a backend is an error", people: known(3), backend: "small", wantErr: "runs no wake gate"},

		{name: "gate idle: the people count", people: known(3), gate: one, want: 3},
		{name: "gate idle: nobody is 0", people: known(0), gate: one, want: 0},
		{name: "gate holds: at least 1 with nobody counted", people: known(0), gate: holding, want: 1},
		{name: "gate holds: people above 1 win", people: known(4), gate: holding, want: 4},
		{name: "gate holds: known while the count is unknown", people: unknown, gate: holding, want: 1},
		{name: "gate idle: unknown count is an error", people: unknown, gate: one, wantErr: "active user count unknown"},
		{name: "the unnamed backend by its name", people: known(0), gate: holding, backend: "default", want: 2},
		{name: "a learning gate asks for one wake", people: known(0), backend: "default",
			gate: gateDemand{backends: one.backends, demand: map[string]gate.Demand{"default": {Learning: true}}}, want: 1},

		{name: "arrival pool: people", people: known(3), gate: twoPools(gate.Demand{}, gate.Demand{}), backend: "small", want: 3},
		{name: "arrival pool: its own requests above people", people: known(1), gate: twoPools(gate.Demand{Held: 1, InFlight: 2}, gate.Demand{}), backend: "small", want: 3},
		{name: "arrival pool: unknown people, own demand answers", people: unknown, gate: twoPools(gate.Demand{InFlight: 1}, gate.Demand{}), backend: "small", want: 1},
		{name: "arrival pool: unknown people, no demand is an error", people: unknown, gate: twoPools(gate.Demand{}, gate.Demand{Held: 3}), backend: "small", wantErr: "active user count unknown"},
		{name: "request pool: people do not wake it", people: known(20), gate: twoPools(gate.Demand{}, gate.Demand{}), backend: "big", want: 0, noFetch: true},
		{name: "request pool: a held request wakes it", people: known(0), gate: twoPools(gate.Demand{}, gate.Demand{Held: 1, Recent: 1}), backend: "big", want: 1, noFetch: true},
		{name: "request pool: distinct recent users", people: known(0), gate: twoPools(gate.Demand{}, gate.Demand{Recent: 3}), backend: "big", want: 3, noFetch: true},
		{name: "request pool: streaming keeps it at 1 past its idle time", people: unknown, gate: twoPools(gate.Demand{}, gate.Demand{InFlight: 1}), backend: "big", want: 1, noFetch: true},
		{name: "request pool: unknown people do not matter", people: unknown, gate: twoPools(gate.Demand{}, gate.Demand{}), backend: "big", want: 0, noFetch: true},
		{name: "no backend: any pool's held request counts", people: known(0), gate: twoPools(gate.Demand{}, gate.Demand{Held: 1}), want: 1},
		{name: "unknown backend names the ones served", people: known(1), gate: twoPools(gate.Demand{}, gate.Demand{}), backend: "huge", wantErr: `no such backend "huge": the gate serves small, big`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &people{snap: tc.people}
			var g demand.Gate
			if tc.gate != nil {
				g = tc.gate
			}
			got, err := demand.New(p, g).Value(context.Background(), tc.backend)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Value = %d, %v; want an error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Value = %d, %v; want %d", got, err, tc.want)
			}
			if tc.noFetch && p.gets != 0 {
				t.Errorf("read the people count %d times; a request-woken backend must not need it", p.gets)
			}
		})
	}
}

func TestErrorKinds(t *testing.T) {
	d := demand.New(&people{snap: unknown}, twoPools(gate.Demand{}, gate.Demand{}))
	_, err := d.Value(context.Background(), "nope")
	if !errors.Is(err, demand.ErrNoSuchBackend) {
		t.Errorf("unknown backend: %v, want ErrNoSuchBackend", err)
	}
	_, err = d.Value(context.Background(), "small")
	var unknownErr *demand.CountUnknownError
	if !errors.As(err, &unknownErr) || errors.Is(err, demand.ErrNoSuchBackend) {
		t.Errorf("unknown count: %v, want a CountUnknownError", err)
	}
	if err := d.Check("big"); err != nil {
		t.Errorf("Check(big) = %v", err)
	}
	if got := d.Backends(); strings.Join(got, ",") != "small,big" {
		t.Errorf("Backends = %v", got)
	}
	if demand.New(&people{}, nil).Changed() != nil {
		t.Error("without a gate Changed must be nil (never ready)")
	}
}

// replicated is a gate with one pool of replicas ("chat", parallel answers
// each, people per replica) and its demand.
func replicated(wake gate.WakeRule, parallel, people int, dm gate.Demand) gateDemand {
	u, _ := url.Parse("dns+http://ollama-headless:11434")
	bc := gate.BackendConfig{Name: "chat", URL: u, Discover: true, Wake: wake, Parallel: parallel, People: people}
	if wake == gate.WakeRequest {
		bc.Idle = 10 * time.Minute
	}
	return gateDemand{backends: []gate.BackendConfig{bc}, demand: map[string]gate.Demand{"chat": dm}}
}

// A pool scales on its load (held plus in flight), KEDA's targetValue being
// parallel; the people count sets a floor.
func TestValuePool(t *testing.T) {
	for _, tc := range []struct {
		name    string
		people  snapshot.Snapshot
		gate    gateDemand
		want    int
		wantErr string
	}{
		{"nobody, nothing: 0", known(0), replicated(gate.WakeArrival, 2, 0, gate.Demand{}), 0, ""},
		{"people without people=: one replica's worth", known(15), replicated(gate.WakeArrival, 2, 0, gate.Demand{}), 2, ""},
		{"people=5: a replica per 5 people, rounded up", known(11), replicated(gate.WakeArrival, 2, 5, gate.Demand{}), 6, ""},
		{"load above the floor: held plus in flight", known(3), replicated(gate.WakeArrival, 1, 0, gate.Demand{Held: 2, InFlight: 3}), 5, ""},
		{"floor above the load", known(20), replicated(gate.WakeArrival, 1, 4, gate.Demand{InFlight: 3}), 5, ""},
		{"the idle policy's engaged users set the floor", engaged(30, 6), replicated(gate.WakeArrival, 1, 2, gate.Demand{}), 3, ""},
		{"unknown people: the load answers", unknown, replicated(gate.WakeArrival, 2, 0, gate.Demand{InFlight: 3}), 3, ""},
		{"unknown people, no load: an error, never 0", unknown, replicated(gate.WakeArrival, 2, 0, gate.Demand{}), 0, "active user count unknown"},
		{"learning asks for one wake", known(0), replicated(gate.WakeArrival, 2, 0, gate.Demand{Learning: true}), 1, ""},
		{"wake=request: recent users keep one replica's worth", known(0), replicated(gate.WakeRequest, 4, 0, gate.Demand{Recent: 9}), 4, ""},
		{"wake=request: the load above it", unknown, replicated(gate.WakeRequest, 2, 0, gate.Demand{Recent: 3, Held: 4, InFlight: 3}), 7, ""},
		{"wake=request: nothing recent is 0", known(50), replicated(gate.WakeRequest, 2, 0, gate.Demand{}), 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := demand.New(&people{snap: tc.people}, tc.gate).Value(context.Background(), "chat")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Value = %d, %v; want an error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Value = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}
