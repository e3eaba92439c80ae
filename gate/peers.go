package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
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
	Users     map[string]float64 `json:"users,omitempty"` // wake=request: hashed user id -> seconds since last seen (0: held or in flight); absent past maxReportUsers
	Anonymous int                `json:"anonymous"`       // wake=request: requests without a user id within Idle, held and in-flight ones included
	// Learned is what warming learned (warm.go): hashed user id -> the model
	// they used last, the newest entries; replicas take what is newer.
	Learned map[string]Learned `json:"learned,omitempty"`
	Recent  int                `json:"recent"` // wake=request: users within Idle plus Anonymous (what Users cannot list past maxReportUsers)
	// A pool: this gate's requests in flight per replica ("host:port"), and
	// the replicas it drains; replicas with neither are left out.
	Replicas map[string]ReplicaDemand `json:"replicas,omitempty"`
	// A pool: the most answers of one model this gate saw a replica stream at
	// once itself, when more than parallel= (slots.go); its peers count
	// that many slots while it reports them.
	AtOnce int `json:"answers_at_once_seen,omitempty"`
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
		if len(d.Users) > maxReportUsers {
			d.Users = nil // Recent still counts them
		}
		if b.warm != nil {
			d.Learned = b.warm.newestLearned(maxPeerLearned)
		}
		if b.pool != nil {
			d.AtOnce = min(b.pool.atOnce, maxPeerAtOnce) // more would have the peers refuse the whole report
		}
		rep.Backends[b.name] = d
	}
	return rep
}

// peerLoop resolves the peers' name every peerEvery, asks each address for its
// demand and keeps what answered; what did not answer for peerTTL is dropped.
// A lookup that hangs is given up after peerLookupTimeout, so that the
// peers' reports still age out instead of freezing at their last value.
func (g *Gate) peerLoop(ctx context.Context) {
	host, port, _ := net.SplitHostPort(g.cfg.Peers)
	client := &http.Client{Transport: g.transport, Timeout: time.Second}
	t := time.NewTicker(g.peerEvery)
	defer t.Stop()
	var lastErr string
	bad := map[string]string{}         // address -> what was wrong with its last report (logged once)
	silent := map[string]*silentPeer{} // address -> since when it has answered nothing
	for {
		lctx, cancel := context.WithTimeout(ctx, g.peerLookupTimeout)
		ips, err := g.lookup(lctx, host)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil && err.Error() != lastErr {
			level.Warn(g.logger).Log("msg", "resolving the gate's peers failed", "peers", g.cfg.Peers, "timeout", g.peerLookupTimeout, "err", err)
		}
		lastErr = ""
		if err != nil {
			lastErr = err.Error()
		}
		var wg sync.WaitGroup
		reports := make([]*DemandReport, len(ips))
		errs := make([]error, len(ips))
		for i, ip := range ips {
			wg.Add(1)
			go func() {
				defer wg.Done()
				reports[i], errs[i] = fetchDemand(ctx, client, net.JoinHostPort(ip.String(), port))
			}()
		}
		wg.Wait()
		seen := map[string]bool{}
		now := time.Now()
		for i, ip := range ips {
			addr := ip.String()
			seen[addr] = true
			g.noteSilence(silent, net.JoinHostPort(addr, port), addr, errs[i], now)
			var ce *peerReportError
			if !errors.As(errs[i], &ce) {
				delete(bad, addr)
				continue
			}
			if bad[addr] != ce.Error() {
				level.Warn(g.logger).Log("msg", "a peer's demand report refused: its demand is not counted", "peer", net.JoinHostPort(addr, port), "err", ce)
			}
			bad[addr] = ce.Error()
		}
		for addr := range bad {
			if !seen[addr] {
				delete(bad, addr)
			}
		}
		for addr := range silent {
			if !seen[addr] && err == nil {
				delete(silent, addr) // out of DNS: gone, as in a rollout (a failed lookup says nothing)
			}
		}
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

// silentPeer is a peer address that has not answered since since.
type silentPeer struct {
	since  time.Time
	warned bool
}

// noteSilence keeps track of a peer that does not answer at all (err, not a
// report the gate refused) and logs it once after peerSilentWarn, then once
// more when it answers again. A rollout's peers come and go within seconds;
// one listed and silent for longer is cut off from this gate (a
// NetworkPolicy, a wrong port in --gate.peers), and its demand, which may be
// a stream KEDA must keep its backend up for, is not counted here.
func (g *Gate) noteSilence(silent map[string]*silentPeer, peer, addr string, err error, now time.Time) {
	var refused *peerReportError
	if err == nil || errors.As(err, &refused) {
		if s := silent[addr]; s != nil && s.warned {
			level.Info(g.logger).Log("msg", "a peer answers again: its demand is counted", "peer", peer, "silent_for", now.Sub(s.since).Round(time.Second))
		}
		delete(silent, addr)
		return
	}
	s := silent[addr]
	if s == nil {
		s = &silentPeer{since: now}
		silent[addr] = s
	}
	if !s.warned && now.Sub(s.since) >= g.peerSilentWarn {
		s.warned = true
		level.Warn(g.logger).Log("msg", "a peer listed by --gate.peers does not answer: its demand is not counted here, so KEDA may scale its backends down under it; check that the gate replicas reach each other on this port (NetworkPolicy) and that --gate.peers names the gate's port",
			"peer", peer, "silent_for", now.Sub(s.since).Round(time.Second), "err", err)
	}
}

// peerReportError is a peer that answered with a report the gate refuses
// (as opposed to a peer that did not answer, which is normal in a rollout).
type peerReportError struct{ err error }

func (e *peerReportError) Error() string { return e.err.Error() }
func (e *peerReportError) Unwrap() error { return e.err }

// maxReportBytes bounds a peer's report: with users listed up to
// maxReportUsers per backend, a report is tens of KiB.
const maxReportBytes = 4 << 20

// fetchDemand asks one peer for its report. A report the gate refuses is a
// *peerReportError.
func fetchDemand(ctx context.Context, client *http.Client, addr string) (*DemandReport, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/_gate/demand", nil)
	if err != nil {
		return nil, err
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, &peerReportError{fmt.Errorf("/_gate/demand answered HTTP %d", res.StatusCode)}
	}
	var rep DemandReport
	dec := json.NewDecoder(io.LimitReader(res.Body, maxReportBytes))
	if err := dec.Decode(&rep); err != nil {
		return nil, &peerReportError{fmt.Errorf("report unreadable (over %d bytes, or not a demand report): %w", maxReportBytes, err)}
	}
	if err := rep.check(); err != nil {
		return nil, &peerReportError{fmt.Errorf("report refused: %w", err)}
	}
	return &rep, nil
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
	if changed {
		for _, b := range g.backends {
			if b.pool == nil {
				continue
			}
			g.peerSlots(b)
			// A peer's answer that ended (or the slots a peer saw) frees a
			// slot for a request waiting here (bind=late) now, not at this
			// gate's next probe.
			if b.pool.bindLate {
				g.handSlots(b)
			}
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
		if !ok || x.Held != y.Held || x.InFlight != y.InFlight || x.Learning != y.Learning || x.Anonymous != y.Anonymous || x.Recent != y.Recent || x.AtOnce != y.AtOnce ||
			!reflect.DeepEqual(keys(x.Users), keys(y.Users)) || !maps.Equal(x.Replicas, y.Replicas) {
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
