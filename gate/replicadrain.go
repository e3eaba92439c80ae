package gate

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-kit/log/level"
)

// Draining a replica before its pod stops (docs/replicas.md).
const (
	// defaultDrainTimeout bounds a drain without timeout=; the pod's grace
	// period usually ends it first.
	defaultDrainTimeout = 10 * time.Minute
	maxDrainTimeout     = 24 * time.Hour
	drainPoll           = 100 * time.Millisecond
	// drainForget ends a drain whose replica still serves this long after the
	// drain answered. Its pod gets SIGTERM as soon as the preStop hook
	// returns, and Ollama closes its server at once, so a replica still up
	// then is a new pod on the same address that started between two probes
	// (never seen down), or one that was not stopped after all.
	drainForget = time.Minute
)

// DrainReport is the answer of /_gate/drain.
type DrainReport struct {
	Replica  string   `json:"replica"`
	Backends []string `json:"backends"`  // the pools that have it
	Drained  bool     `json:"drained"`   // no request of any gate replica runs on it any more
	InFlight int      `json:"in_flight"` // this gate's and its peers', when the answer was written
}

// serveDrain serves POST /_gate/drain?replica=HOST:PORT[&timeout=DURATION],
// which an Ollama pod's preStop hook sends before the pod is stopped (Ollama
// closes its server at once on SIGTERM, cutting every stream). The replica
// gets no new request from this gate (nor, through the peers' reports, from
// the other gate replicas), and the answer comes once no request of any gate
// replica runs on it: the hook then returns and Kubernetes stops the pod.
//
// Only the replica itself may drain itself when it is named by an IP
// address: the request must come from that address.
func (g *Gate) serveDrain(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, r.URL.Path, http.StatusMethodNotAllowed, codeNotFound, "gate: /_gate/drain answers POST only")
		return
	}
	id := r.URL.Query().Get("replica")
	host, _, err := net.SplitHostPort(id)
	if err != nil {
		writeError(w, r.URL.Path, http.StatusBadRequest, codeNotFound, fmt.Sprintf("gate: /_gate/drain?replica=HOST:PORT: %q: %v", id, err))
		return
	}
	timeout := defaultDrainTimeout
	if t := r.URL.Query().Get("timeout"); t != "" {
		if timeout, err = time.ParseDuration(t); err != nil || timeout <= 0 || timeout > maxDrainTimeout {
			writeError(w, r.URL.Path, http.StatusBadRequest, codeNotFound, fmt.Sprintf("gate: /_gate/drain: timeout=%q: want a duration up to %s", t, maxDrainTimeout))
			return
		}
	}
	if ip := net.ParseIP(host); ip != nil {
		from, _, _ := net.SplitHostPort(r.RemoteAddr)
		if fromIP := net.ParseIP(from); fromIP == nil || !fromIP.Equal(ip) {
			writeError(w, r.URL.Path, http.StatusForbidden, codeNotFound, fmt.Sprintf("gate: /_gate/drain: replica %s may only be drained from its own address, not from %s", id, from))
			return
		}
	}
	rep := DrainReport{Replica: id, Backends: g.drainReplica(id)}
	level.Info(g.logger).Log("msg", "draining replica", "replica", id, "backends", fmt.Sprint(rep.Backends))
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	quiet := 0 // polls in a row with nothing in flight
	for {
		rep.InFlight = g.replicaInFlight(id)
		if rep.InFlight == 0 {
			quiet++
		} else {
			quiet = 0
		}
		// Nothing in flight for longer than the peers take to learn of the
		// drain: a peer cannot start a request on it any more.
		settle := time.Duration(0)
		if g.cfg.Peers != "" {
			settle = 2*g.peerEvery + g.peerTTL/2
		}
		if (quiet > 0 && time.Duration(quiet-1)*drainPoll >= settle) || len(rep.Backends) == 0 {
			rep.Drained = rep.InFlight == 0
			break
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-r.Context().Done():
			// The hook gave up (killed at the pod's grace period): the pod
			// stops now, as after an answer.
			g.drainAnswered(id)
			return
		case <-t.C:
		}
	}
	g.drainAnswered(id)
	status := http.StatusOK
	if !rep.Drained {
		status = http.StatusGatewayTimeout
	}
	body, _ := json.Marshal(rep)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// drainReplica marks replica id draining in every pool that has it and returns their
// names.
func (g *Gate) drainReplica(id string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	names := []string{}
	for _, b := range g.backends {
		if b.pool == nil {
			continue
		}
		if r := b.pool.byID(id); r != nil {
			r.draining, r.drainedAt = true, time.Time{}
			names = append(names, b.name)
			st, reason := g.poolState(b)
			if b.state == StateUp && st != StateUp {
				g.setState(b, st, reason)
			}
			// A request waiting (bind=late) for this replica's model may
			// now take a slot on another replica.
			g.handSlots(b)
		}
	}
	g.notify()
	return names
}

// drainAnswered notes when the drain of replica id answered, from which
// drainForget counts.
func (g *Gate) drainAnswered(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, b := range g.backends {
		if b.pool == nil {
			continue
		}
		if r := b.pool.byID(id); r != nil && r.draining {
			r.drainedAt = g.now()
		}
	}
}

// replicaInFlight is the requests on replica id, this gate's and its peers'.
func (g *Gate) replicaInFlight(id string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, b := range g.backends {
		if b.pool == nil {
			continue
		}
		if r := b.pool.byID(id); r != nil {
			n += r.inFlight
		}
		load, _ := g.peerReplicas(b.name)
		n += load[id]
	}
	return n
}
