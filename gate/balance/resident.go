package balance

import (
	"slices"
	"time"
)

// Resident is what a gate believes one replica has in memory, or will have
// once the requests sent there started: what its /api/ps listed at the last
// reading, then the models of the requests the gate sent there since or that
// still run or wait there, each until Ollama's keep-alive would unload it.
//
//   - A replica's GPU holds only so many models at once: a request for one
//     more than Capacity forgets the one sent (or listed) least recently, as
//     the replica itself unloads it to load the new one. Without that bound,
//     a model sent to a replica counted as loaded beside the one it replaced
//     until the next reading, and the next request for the replaced model
//     went there to load it back.
//   - A reading does not forget the requests that still run or wait there:
//     /api/ps lists what is loaded now, not what the requests queued there
//     will load. Without that, each reading (every 5 s) made the gate
//     believe a busy replica keeps the model it is about to unload.
//
// The zero Resident holds no model, has no bound and names models alike
// only when their names are equal. It is not safe for concurrent use (the
// gate guards it with its own lock).
type Resident struct {
	Capacity int                           // models the replica holds at once; 0: no bound
	Same     func(model, name string) bool // whether a listed name is the model a request names (nil: equal)

	models  []resident // least recently sent or listed first
	pending []string   // the models of the requests sent there and not ended, in the order sent
}

type resident struct {
	name  string
	until time.Time
}

func (r *Resident) same(model, name string) bool {
	if r.Same == nil {
		return model == name
	}
	return r.Same(model, name)
}

// Observe replaces the belief by what the replica lists as loaded now (its
// /api/ps), then applies the requests that still run or wait there, each
// counted until until. A list is never cut to Capacity: it is what the
// replica has.
func (r *Resident) Observe(names []string, until time.Time) {
	r.models = r.models[:0]
	for _, n := range names {
		r.models = append(r.models, resident{name: n, until: until})
	}
	for _, m := range r.pending {
		r.use(m, until)
	}
}

// Route records that the gate sent a request for model to the replica: it
// counts as loaded until until, and the least recent others beyond Capacity
// are forgotten. Done ends it.
func (r *Resident) Route(model string, until time.Time) {
	r.use(model, until)
	r.pending = append(r.pending, model)
}

// Done records that a request Route recorded ended (answered, refused or
// cut).
func (r *Resident) Done(model string) {
	if i := slices.Index(r.pending, model); i >= 0 {
		r.pending = slices.Delete(r.pending, i, i+1)
	}
}

// use makes model the most recent one. Only a model not held yet is a load,
// which unloads the least recent model when the replica is believed full;
// one model only, as Ollama frees room for one: a replica seen holding more
// than Capacity (a max-loaded below its real room) keeps the rest.
func (r *Resident) use(model string, until time.Time) {
	before := len(r.models)
	r.models = slices.DeleteFunc(r.models, func(m resident) bool { return r.same(model, m.name) })
	held := len(r.models) < before
	r.models = append(r.models, resident{name: model, until: until})
	if !held && r.Capacity > 0 && len(r.models) > r.Capacity {
		r.models = slices.Delete(r.models, 0, 1)
	}
}

// Loaded says, at now, whether the replica is believed to have model and
// whether it has another one; models past their time are forgotten.
func (r *Resident) Loaded(now time.Time, model string) (loaded, other bool) {
	r.models = slices.DeleteFunc(r.models, func(m resident) bool { return now.After(m.until) })
	for _, m := range r.models {
		if r.same(model, m.name) {
			loaded = true
		} else {
			other = true
		}
	}
	return loaded, other
}
