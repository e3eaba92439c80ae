package gate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Demand is what a backend's requests ask of it.
type Demand struct {
	Held, InFlight int
	Recent         int  // wake=request: distinct X-OpenWebUI-User-Id (else requests) within Idle, held/in-flight ones included
	Learning       bool // no list learned yet for this backend: it wants one wake
}

// Demand returns the backend's demand: this replica's plus its peers'. The
// second result is false when there is no backend of that name.
func (g *Gate) Demand(name string) (Demand, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.byName[name]
	if b == nil {
		return Demand{}, false
	}
	now := g.now()
	own := b.ownDemand(now)
	d := Demand{Held: own.Held, InFlight: own.InFlight, Learning: own.Learning}
	users := map[string]time.Time{}
	anon, unlisted := own.Anonymous, 0
	for u, age := range own.Users {
		users[u] = now.Add(-time.Duration(age * float64(time.Second)))
	}
	wall := time.Now()
	for _, p := range g.peers {
		if wall.Sub(p.at) > g.peerTTL {
			continue
		}
		pd, ok := p.backends[name]
		if !ok {
			continue
		}
		d.Held += pd.Held
		d.InFlight += pd.InFlight
		d.Learning = d.Learning || pd.Learning
		anon += pd.Anonymous
		if pd.Users == nil && pd.Recent > pd.Anonymous {
			// Too many users to list: only their number, which may count a
			// user seen by this replica too (an upper bound).
			unlisted += pd.Recent - pd.Anonymous
		}
		for u, age := range pd.Users {
			t := p.atNow.Add(-time.Duration(age * float64(time.Second)))
			if t.After(users[u]) {
				users[u] = t
			}
		}
	}
	if b.cfg.Wake == WakeRequest {
		for _, t := range users {
			if now.Sub(t) <= b.cfg.Idle {
				d.Recent++
			}
		}
		d.Recent += anon + unlisted
	}
	return d, true
}

// ownDemand is this replica's demand of b (g.mu held), in the form peers exchange.
func (b *backend) ownDemand(now time.Time) BackendDemand {
	d := BackendDemand{
		Held:     b.queue.Len() + b.reading,
		InFlight: b.inFlight,
		Learning: b.learning,
	}
	if b.cfg.Wake != WakeRequest {
		return d
	}
	b.prune(now)
	d.Users = map[string]float64{}
	for u, t := range b.lastSeen {
		d.Users[u] = now.Sub(t).Seconds()
	}
	for u := range b.active {
		d.Users[u] = 0
	}
	d.Anonymous = b.activeAnon
	for _, a := range b.anonSeen {
		d.Anonymous += a.n
	}
	d.Recent = len(d.Users) + d.Anonymous
	return d
}

// prune forgets who was seen longer than Idle ago.
func (b *backend) prune(now time.Time) {
	for u, t := range b.lastSeen {
		if now.Sub(t) > b.cfg.Idle {
			delete(b.lastSeen, u)
		}
	}
	i := 0
	for i < len(b.anonSeen) && now.Sub(b.anonSeen[i].last) > b.cfg.Idle {
		i++
	}
	b.anonSeen = b.anonSeen[i:]
}

// anonBucket counts the requests without a user id that ended within one
// second; they count until Idle after the last of them.
type anonBucket struct {
	first, last time.Time
	n           int
}

// begin and end track a demand request of a wake=request backend (g.mu held).
func (b *backend) begin(user string) {
	if b.cfg.Wake != WakeRequest {
		return
	}
	if user == "" {
		b.activeAnon++
		return
	}
	b.active[user]++
}

func (b *backend) end(user string, now time.Time) {
	if b.cfg.Wake != WakeRequest {
		return
	}
	if user == "" {
		b.activeAnon--
		if n := len(b.anonSeen); n > 0 && now.Sub(b.anonSeen[n-1].first) < time.Second {
			// Within the same second (or a clock that stepped back): one bucket,
			// so that memory stays bounded by Idle in seconds, not requests.
			last := &b.anonSeen[n-1]
			last.n++
			if now.After(last.last) {
				last.last = now
			}
		} else {
			b.anonSeen = append(b.anonSeen, anonBucket{first: now, last: now, n: 1})
		}
		b.prune(now)
		return
	}
	if b.active[user]--; b.active[user] <= 0 {
		delete(b.active, user)
	}
	b.lastSeen[user] = now
}

// userKey hashes a user id: the gate exchanges and keeps only hashes.
func userKey(id string) string {
	if id == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:12])
}

// expiryLoop fires Changed when a wake=request backend's Recent drops because
// time passed (nothing else happens then).
func (g *Gate) expiryLoop(ctx context.Context) {
	last := map[string]int{}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed := false
		for _, b := range g.backends {
			if b.cfg.Wake != WakeRequest {
				continue
			}
			d, _ := g.Demand(b.name)
			if d.Recent != last[b.name] {
				last[b.name], changed = d.Recent, true
			}
		}
		if changed {
			g.notify()
		}
	}
}
