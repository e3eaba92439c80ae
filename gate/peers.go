package gate

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"reflect"
	"sync"
	"time"

	"github.com/go-kit/log/level"
)

// BackendDemand is one backend's demand as replicas exchange it on /_gate/demand
// (this replica's own only).
type BackendDemand struct {
	Held      int                `json:"held"`
	InFlight  int                `json:"in_flight"`
	Learning  bool               `json:"learning"`
	Users     map[string]float64 `json:"users,omitempty"` // wake=request: hashed user id -> seconds since last seen (0: held or in flight)
	Anonymous int                `json:"anonymous"`       // wake=request: requests without a user id within Idle, held and in-flight ones included
	// Learned is what warming learned (warm.go): hashed user id -> the model
	// they used last, the newest entries; replicas take what is newer.
	Learned map[string]Learned `json:"learned,omitempty"`
}

// DemandReport is the answer of /_gate/demand: this replica's own demand.
type DemandReport struct {
	Instance string                   `json:"instance"`
	Backends map[string]BackendDemand `json:"backends"`
}

type peerEntry struct {
	at       time.Time // when it answered (real time)
	atNow    time.Time // the same moment on g.now's clock
	backends map[string]BackendDemand
}

func (g *Gate) demandReport() DemandReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	rep := DemandReport{Instance: g.instance, Backends: map[string]BackendDemand{}}
	for _, b := range g.backends {
		d := b.ownDemand(now)
		if b.warm != nil {
			d.Learned = b.warm.newestLearned(maxPeerLearned)
		}
		rep.Backends[b.name] = d
	}
	return rep
}

// peerLoop resolves the peers' name every peerEvery, asks each address for its
// demand and keeps what answered; what did not answer for peerTTL is dropped.
func (g *Gate) peerLoop(ctx context.Context) {
	host, port, _ := net.SplitHostPort(g.cfg.Peers)
	client := &http.Client{Transport: g.transport, Timeout: time.Second}
	t := time.NewTicker(g.peerEvery)
	defer t.Stop()
	var lastErr string
	for {
		ips, err := g.lookup(ctx, host)
		if ctx.Err() != nil {
			return
		}
		if err != nil && err.Error() != lastErr {
			level.Warn(g.logger).Log("msg", "resolving the gate's peers failed", "peers", g.cfg.Peers, "err", err)
		}
		lastErr = ""
		if err != nil {
			lastErr = err.Error()
		}
		var wg sync.WaitGroup
		reports := make([]*DemandReport, len(ips))
		for i, ip := range ips {
			wg.Add(1)
			go func() {
				defer wg.Done()
				reports[i] = fetchDemand(ctx, client, net.JoinHostPort(ip.String(), port))
			}()
		}
		wg.Wait()
		if g.mergePeers(reports) {
			g.notify()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func fetchDemand(ctx context.Context, client *http.Client, addr string) *DemandReport {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/_gate/demand", nil)
	if err != nil {
		return nil
	}
	res, err := client.Do(req)
	if err != nil {
		return nil
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil
	}
	var rep DemandReport
	if json.NewDecoder(io.LimitReader(res.Body, 4<<20)).Decode(&rep) != nil || rep.Instance == "" {
		return nil
	}
	return &rep
}

// mergePeers keeps the reports of other instances and drops stale ones; it
// reports whether the peers' demand changed.
func (g *Gate) mergePeers(reports []*DemandReport) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	wall, now := time.Now(), g.now()
	changed := false
	for _, rep := range reports {
		if rep == nil || rep.Instance == g.instance {
			continue
		}
		old := g.peers[rep.Instance]
		if old == nil || !sameDemand(old.backends, rep.Backends) {
			changed = true
		}
		g.peers[rep.Instance] = &peerEntry{at: wall, atNow: now, backends: rep.Backends}
		for name, d := range rep.Backends {
			if b := g.byName[name]; b != nil && b.warm != nil && len(d.Learned) > 0 {
				b.warm.mergeLearned(d.Learned)
			}
		}
	}
	for id, p := range g.peers {
		if wall.Sub(p.at) > g.peerTTL {
			delete(g.peers, id)
			changed = true
		}
	}
	return changed
}

// sameDemand compares what Demand takes from a peer (user ages aside).
func sameDemand(a, b map[string]BackendDemand) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok || x.Held != y.Held || x.InFlight != y.InFlight || x.Learning != y.Learning || x.Anonymous != y.Anonymous ||
			!reflect.DeepEqual(keys(x.Users), keys(y.Users)) {
			return false
		}
	}
	return true
}

func keys(m map[string]float64) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}
