// Package demand decides what KEDA gets: the one number per backend that
// /active_users, the gRPC external scaler and /metrics all report.
//
// Two things make demand: people (Open WebUI's active or engaged users, from
// the snapshot cache) and the wake gate (requests it holds, streams or has
// seen recently). The rules, in one place:
//
//   - No backend named (the paths as they were before the gate): the people
//     count, but at least 1 while the gate holds or streams anything for any
//     backend, so KEDA never scales Ollama in under a running answer nor
//     leaves a held message waiting.
//   - A backend woken on arrival: the larger of the people count and its own
//     held plus in-flight requests.
//   - A backend woken on request: its own recent demand (distinct users, or
//     requests, within its idle time), at least 1 while it holds or streams
//     anything. People do not wake it.
//   - A pool of replicas (docs/replicas.md) scales on its load: its held plus
//     in-flight requests, so that KEDA's targetValue is the answers one
//     replica runs at once (parallel=). A floor keeps one replica's worth
//     (parallel) while anybody is there, or, with people=N, a replica per N
//     active people: people are a leading signal, a queue a late one. A pool
//     woken on request has the floor of one replica while it saw requests
//     within its idle time.
//
// Waking for a waiting request is always safe, so a known gate demand is
// answered even while the people count is unknown. Only when the answer
// depends on people and they cannot be counted is it an error, never 0: 0
// means "turn the GPUs off".
package demand

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/gate"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

// People is the shared snapshot cache of Open WebUI's count.
type People interface {
	Get(ctx context.Context) snapshot.Snapshot
	Refresh(ctx context.Context, maxAge time.Duration) snapshot.Snapshot
}

// Gate is what the decision needs of the wake gate.
type Gate interface {
	Backends() []gate.BackendConfig
	Demand(name string) (gate.Demand, bool)
	Changed() <-chan struct{}
}

// ErrNoSuchBackend is returned for a backend name the gate does not serve.
var ErrNoSuchBackend = errors.New("no such backend")

// CountUnknownError says that the answer needs Open WebUI's count and the
// count is unknown (Open WebUI down, token rejected, ...).
type CountUnknownError struct{ Err error }

func (e *CountUnknownError) Error() string { return "active user count unknown: " + e.Err.Error() }
func (e *CountUnknownError) Unwrap() error { return e.Err }

// Decider computes what KEDA gets. Its zero gate (nil) is the exporter
// without --gate.listen-address: every answer is the people count.
type Decider struct {
	people People
	gate   Gate // nil without a gate
}

// New returns a Decider over the people count and the gate (nil for none).
func New(people People, g Gate) *Decider {
	return &Decider{people: people, gate: g}
}

// Value is what KEDA gets for backend ("" when the trigger names none). It
// reads the people count only when the answer depends on it.
func (d *Decider) Value(ctx context.Context, backend string) (int, error) {
	rule, err := d.rule(backend)
	if err != nil {
		return 0, err
	}
	if rule == gate.WakeRequest {
		return d.Decide(snapshot.Snapshot{}, backend)
	}
	return d.Decide(d.people.Get(ctx), backend)
}

// Refresh refreshes the people count through the shared cache (the push
// loop polls Open WebUI faster than the TTL with it).
func (d *Decider) Refresh(ctx context.Context, maxAge time.Duration) snapshot.Snapshot {
	return d.people.Refresh(ctx, maxAge)
}

// Changed is closed at the next change of the gate's demand; nil (never
// ready) without a gate.
func (d *Decider) Changed() <-chan struct{} {
	if d.gate == nil {
		return nil
	}
	return d.gate.Changed()
}

// Backends lists the gate's backend names, in flag order; none without a gate.
func (d *Decider) Backends() []string {
	if d.gate == nil {
		return nil
	}
	var names []string
	for _, b := range d.gate.Backends() {
		names = append(names, b.Name)
	}
	return names
}

// Check says whether backend may be asked for: "" always, a name only if
// the gate serves it.
func (d *Decider) Check(backend string) error {
	_, err := d.rule(backend)
	return err
}

// Decide applies the rules to a people snapshot and the gate's demand now.
func (d *Decider) Decide(people snapshot.Snapshot, backend string) (int, error) {
	rule, err := d.rule(backend)
	if err != nil {
		return 0, err
	}
	pool, isPool := d.pool(backend)
	var own int // what the gate alone asks for
	switch {
	case backend == "":
		own = min(d.anyDemand(), 1) // 1 while anything is held or streams
	case rule == gate.WakeRequest && isPool:
		dm, _ := d.gate.Demand(backend)
		floor := 0
		if dm.Recent > 0 {
			floor = max(pool.Parallel, 1)
		}
		return max(active(dm), floor), nil
	case rule == gate.WakeRequest:
		dm, _ := d.gate.Demand(backend)
		return max(dm.Recent, min(1, active(dm))), nil
	default:
		dm, _ := d.gate.Demand(backend)
		own = active(dm)
	}
	if people.Err != nil {
		if own > 0 {
			return own, nil
		}
		return 0, &CountUnknownError{Err: people.Err}
	}
	if isPool {
		return max(peopleFloor(people.Scaling(), pool), own), nil
	}
	return max(people.Scaling(), own), nil
}

// peopleFloor is a pool's value from the people count alone: one replica's
// worth (its parallel answers) per People active people, or one replica
// while anybody is there when People is not set.
func peopleFloor(n int, pool gate.BackendConfig) int {
	if n <= 0 {
		return 0
	}
	replicas := 1
	if pool.People > 0 {
		replicas = (n + pool.People - 1) / pool.People
	}
	return replicas * max(pool.Parallel, 1)
}

// pool returns backend's configuration when it is a pool of replicas.
func (d *Decider) pool(backend string) (gate.BackendConfig, bool) {
	if d.gate == nil || backend == "" {
		return gate.BackendConfig{}, false
	}
	for _, b := range d.gate.Backends() {
		if b.Name == backend {
			return b, b.Pool()
		}
	}
	return gate.BackendConfig{}, false
}

// active is what the gate holds or streams for a backend right now; a gate
// that has never seen the backend's model list asks for one wake to learn it.
func active(dm gate.Demand) int {
	n := dm.Held + dm.InFlight
	if dm.Learning {
		n = max(n, 1)
	}
	return n
}

// anyDemand is the gate's demand over all backends (0 without a gate).
func (d *Decider) anyDemand() int {
	if d.gate == nil {
		return 0
	}
	n := 0
	for _, b := range d.gate.Backends() {
		dm, _ := d.gate.Demand(b.Name)
		n += active(dm)
	}
	return n
}

// rule is the wake rule that applies to backend; "" is the people count.
func (d *Decider) rule(backend string) (gate.WakeRule, error) {
	if backend == "" {
		return gate.WakeArrival, nil
	}
	if d.gate == nil {
		return "", fmt.Errorf("%w %q: the exporter runs no wake gate (--gate.listen-address and --gate.backend)", ErrNoSuchBackend, backend)
	}
	for _, b := range d.gate.Backends() {
		if b.Name == backend {
			return b.Wake, nil
		}
	}
	return "", fmt.Errorf("%w %q: the gate serves %s", ErrNoSuchBackend, backend, strings.Join(d.Backends(), ", "))
}
