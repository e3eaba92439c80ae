package gate

import (
	"encoding/json"
	"net/http"
	"time"
)

// StatusReport is the answer of /_gate/status (this replica's view).
type StatusReport struct {
	// Draining: the replica is being stopped (Drain); /_gate/status, its
	// readiness, then answers 503 with this report.
	Draining bool            `json:"draining"`
	Backends []BackendStatus `json:"backends"`
}

// BackendStatus is one backend in /_gate/status.
type BackendStatus struct {
	Name               string   `json:"name"`
	Prefix             string   `json:"prefix"`
	State              State    `json:"state"`
	Since              string   `json:"since"` // RFC 3339
	WaitingSeconds     float64  `json:"waiting_seconds"`
	Held               int      `json:"held"`
	InFlight           int      `json:"in_flight"`
	HoldTimeoutSeconds float64  `json:"hold_timeout_seconds"`
	Models             []string `json:"models"`
	Reason             string   `json:"reason"`
	// Warm is what the gate keeps loaded (warm.go); Loading what the backend
	// loads now, for the filter's "loading MODEL … (N s)".
	Warm         []string       `json:"warm"`
	Loading      []LoadingModel `json:"loading"`
	Learning     bool           `json:"learning"`                // a learning wake is under way
	NotLearnable string         `json:"not_learnable,omitempty"` // why the last learning wake gave up (until the backend is next up)
	Replicas     []ReplicaStats `json:"replicas,omitempty"`      // a pool's replicas
}

func (g *Gate) status() StatusReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	rep := StatusReport{Draining: g.drain.draining, Backends: []BackendStatus{}}
	for _, b := range g.backends {
		var waiting float64
		if e := b.queue.Front(); e != nil {
			waiting = time.Since(e.Value.(*heldReq).arrived).Seconds()
		}
		rep.Backends = append(rep.Backends, BackendStatus{
			Name: b.name, Prefix: b.prefix, State: b.state, Since: b.since.UTC().Format(time.RFC3339),
			WaitingSeconds: waiting, Held: b.queue.Len() + b.reading, InFlight: b.inFlight,
			HoldTimeoutSeconds: g.cfg.HoldTimeout.Seconds(), Models: b.models(), Reason: b.reason,
			Learning: b.learning, NotLearnable: b.notLearnable,
			Warm: b.warmModels(), Loading: b.loadingLocked(time.Now()),
		})
		if b.pool != nil {
			rep.Backends[len(rep.Backends)-1].Replicas = b.pool.stats()
		}
	}
	return rep
}

// serveOwn serves the gate's own endpoints under /_gate/ (never proxied).
func (g *Gate) serveOwn(w http.ResponseWriter, r *http.Request) {
	var v any
	status := http.StatusOK
	switch r.URL.Path {
	case "/_gate/status":
		rep := g.status()
		if rep.Draining {
			status = http.StatusServiceUnavailable // not ready: out of the Service, still serving
		}
		v = rep
	case "/_gate/demand":
		v = g.demandReport()
	case "/_gate/drain":
		g.serveDrain(w, r)
		return
	default:
		writeError(w, r.URL.Path, http.StatusNotFound, codeNotFound, "gate: no such gate endpoint "+r.URL.Path+": /_gate/status, /_gate/demand and /_gate/drain exist")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, r.URL.Path, http.StatusMethodNotAllowed, codeNotFound, "gate: "+r.URL.Path+" answers GET only")
		return
	}
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
