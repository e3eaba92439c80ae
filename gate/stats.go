package gate

import (
	"time"
)

// State is a backend's state as the gate sees it.
type State string

// The backend states.
const (
	StateUnknown  State = "unknown"  // nothing seen yet (a fresh gate before its first probe or pass-through)
	StateAsleep   State = "asleep"   // connection refused, no such host, dial timeout
	StateStarting State = "starting" // TCP connects but no HTTP answer within the probe timeout, or the probe answers 5xx
	StateUp       State = "up"       // the readiness probe (or a pass-through) got an HTTP answer
	// StateMisconfigured: the connection opens but TLS fails (an untrusted
	// certificate, a wrong host name, an https URL for an HTTP server).
	// Waiting does not fix that: requests are answered at once, not held.
	StateMisconfigured State = "misconfigured"
)

// Outcome is how a request through the gate ended.
type Outcome string

// The outcomes, as counted in BackendStats.Requests.
const (
	OutcomePassed       Outcome = "passed"        // passed through while up (any HTTP status from the backend)
	OutcomeDelivered    Outcome = "delivered"     // passed through after a hold
	OutcomeFromMemory   Outcome = "from_memory"   // a list served from memory (or the empty /api/ps)
	OutcomeHoldTimeout  Outcome = "hold_timeout"  // held past the hold timeout: 504
	OutcomeRejected     Outcome = "rejected"      // over --gate.max-held or --gate.max-held-bytes: 503
	OutcomeClientGone   Outcome = "client_gone"   // the client went away before the answer ended
	OutcomeBackendError Outcome = "backend_error" // the backend failed after the request may have reached it: 502 (or an aborted stream)
	OutcomeLearning     Outcome = "learning"      // a never-seen list while not up: 503 after the learning wait
	OutcomeShutdown     Outcome = "shutdown"      // the replica's drain ended first: 503 if held (not sent), 504 if sent without an answer yet, or a stream cut
)

// Outcomes lists every Outcome, in the order above.
var Outcomes = []Outcome{OutcomePassed, OutcomeDelivered, OutcomeFromMemory, OutcomeHoldTimeout,
	OutcomeRejected, OutcomeClientGone, OutcomeBackendError, OutcomeLearning, OutcomeShutdown}

// States lists every State.
var States = []State{StateUnknown, StateAsleep, StateStarting, StateUp, StateMisconfigured}

// HoldBuckets are the upper bounds (seconds) of the hold-time histogram.
var HoldBuckets = []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// HoldHistogram is a cumulative histogram of how long requests were held
// (every request that left the hold: delivered, timed out or gone).
type HoldHistogram struct {
	Buckets []float64 // upper bounds, seconds (HoldBuckets)
	Counts  []uint64  // cumulative: Counts[i] = held requests with a hold ≤ Buckets[i]
	Count   uint64
	Sum     float64 // seconds
}

// BackendStats is one backend as this replica sees it (no peers).
type BackendStats struct {
	Name      string
	State     State
	Since     time.Time      // when State began
	Reason    string         // what the gate saw last when not up: "connection refused", "no HTTP answer", "HTTP 503 from /api/version"
	Held      int            // requests held now
	InFlight  int            // demand requests being passed through or streamed now (delivered ones included)
	HeldBytes int64          // bytes of held requests in memory now, headers and bodies: held ones and released ones whose body is not sent yet
	Replicas  []ReplicaStats // a pool's replicas, by id; nil for a single backend
	Requests  map[Outcome]uint64
	Hold      HoldHistogram
	Warm      WarmStats // zero with warm=off
	// Learning: a learning wake is under way (a list never seen was asked
	// while the backend was not up). ListsKnown: the gate has the backend's
	// model list (/api/tags or /v1/models), learned or from the state file.
	Learning, ListsKnown bool
}

// holdHist is the non-cumulative form kept while counting.
type holdHist struct {
	counts []uint64 // per bucket, plus one for +Inf
	count  uint64
	sum    float64
}

func (h *holdHist) observe(d time.Duration) {
	if h.counts == nil {
		h.counts = make([]uint64, len(HoldBuckets)+1)
	}
	s := d.Seconds()
	i := 0
	for i < len(HoldBuckets) && s > HoldBuckets[i] {
		i++
	}
	h.counts[i]++
	h.count++
	h.sum += s
}

func (h *holdHist) snapshot() HoldHistogram {
	out := HoldHistogram{Buckets: append([]float64(nil), HoldBuckets...), Counts: make([]uint64, len(HoldBuckets)), Count: h.count, Sum: h.sum}
	var c uint64
	for i := range HoldBuckets {
		if h.counts != nil {
			c += h.counts[i]
		}
		out.Counts[i] = c
	}
	return out
}

// Stats returns this replica's numbers per backend, in flag order.
func (g *Gate) Stats() []BackendStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]BackendStats, len(g.backends))
	for i, b := range g.backends {
		req := make(map[Outcome]uint64, len(Outcomes))
		for _, o := range Outcomes {
			req[o] = b.requests[o]
		}
		out[i] = BackendStats{
			Name: b.name, State: b.state, Since: b.since, Reason: b.reason,
			Held: b.queue.Len() + b.reading, InFlight: b.inFlight, HeldBytes: b.heldBytes,
			Requests: req, Hold: b.hold.snapshot(),
			Learning: b.learning, ListsKnown: b.lists[pathTags] != nil || b.lists[pathModels] != nil,
		}
		if b.pool != nil {
			out[i].Replicas = b.pool.stats()
		}
		if b.warm != nil {
			out[i].Warm = b.warm.stats()
		}
	}
	return out
}

func (g *Gate) count(b *backend, o Outcome) {
	g.mu.Lock()
	b.requests[o]++
	g.mu.Unlock()
}
