package gate

import (
	"container/list"
	"net/http"
	"time"
)

// Late binding (bind=late, docs/replicas.md): while every replica of a pool
// runs parallel= answers, a request that loads a model waits in the gate, in
// arrival order, and goes to the first replica that frees a slot, instead of
// waiting in the queue of a replica chosen at arrival, behind an answer of
// unknown length. A freed slot goes to the oldest request whose model that
// replica has loaded, or that finds it empty, or whose model no other
// replica has (a load is due anyway); a request for a model that another
// replica has waits for a slot there at most lateBindMax. Then any request
// is placed as without late binding: late binding is only as good as
// parallel=, and a parallel= set below the replicas' real
// OLLAMA_NUM_PARALLEL must not leave their other slots idle for long.

// lateBindMax bounds a request's wait in the gate for a slot (a Gate field,
// lateBindWait, so that tests can shorten it).
const lateBindMax = 30 * time.Second

// slotWaiter is a request waiting in the gate for a slot of a pool.
type slotWaiter struct {
	model, conversation string
	loads               bool
	ready               chan struct{} // closed once rep is set
	rep                 *replica      // the replica whose slot it was given, counted in flight there
}

// awaitSlot waits until a replica of b's pool has a slot for a request of
// model, and returns that replica, already chosen and counted in flight
// (nil: none within the gate's wait; the caller chooses as usual). Its
// outcome is "" then; OutcomeClientGone when the client went away meanwhile,
// and OutcomeShutdown when this gate's drain ended first (the request was
// not sent: the caller answers so, as for a held request).
func (g *Gate) awaitSlot(r *http.Request, b *backend, model, conversation string, loads bool) (*replica, Outcome) {
	p := b.pool
	w := &slotWaiter{model: model, conversation: conversation, loads: loads, ready: make(chan struct{})}
	g.mu.Lock()
	e := p.waiting.PushBack(w)
	g.handSlots(b)
	wait := g.lateBindWait
	g.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	var ended Outcome
	select {
	case <-w.ready:
		return w.rep, ""
	case <-t.C:
	case <-r.Context().Done():
		ended = OutcomeClientGone
	case <-g.drain.ended.Done():
		ended = OutcomeShutdown
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.rep == nil {
		p.waiting.Remove(e)
	} else if ended != "" {
		g.releaseSlot(b, w.rep, w) // given at the last moment to a request that ends here
		w.rep = nil
	}
	return w.rep, ended
}

// handSlots gives the free slots of b's pool to the requests waiting for
// one (g.mu held): each free slot to the oldest request whose model its
// replica has loaded, or that finds it empty.
func (g *Gate) handSlots(b *backend) {
	p := b.pool
	if p == nil || p.waiting.Len() == 0 {
		return
	}
	now := g.now()
	peerLoad, peerDrain := g.peerReplicas(b.name)
	for _, r := range p.replicas {
		if !r.takes(peerDrain) {
			continue
		}
		for r.inFlight+peerLoad[r.id] < p.slots() {
			e := p.nextWaiter(r, now, peerDrain)
			if e == nil {
				break
			}
			w := e.Value.(*slotWaiter)
			others := make(map[*replica]bool, len(p.replicas)-1)
			for _, o := range p.replicas {
				if o != r {
					others[o] = true
				}
			}
			if w.rep = g.choose(b, w.model, w.conversation, w.loads, others); w.rep == nil {
				break // cannot happen (r may serve it): it keeps its place
			}
			p.waiting.Remove(e) // r, counted in flight by choose
			close(w.ready)
		}
	}
}

// nextWaiter is the oldest waiting request that replica r may serve now: its
// model listed there (when another replica lists it) and loaded there, or
// nothing loaded there yet, or loaded on no other replica (a load is due
// anyway); nil when there is none. Replicas that a peer drains (peerDrain)
// count as having nothing: no request goes there.
func (p *pool) nextWaiter(r *replica, now time.Time, peerDrain map[string]bool) *list.Element {
	for e := p.waiting.Front(); e != nil; e = e.Next() {
		w := e.Value.(*slotWaiter)
		if w.model != "" && r.models != nil && !r.listsModel(w.model, w.model+":latest") && p.listed(w.model, peerDrain) {
			continue // another replica lists it: choose would send it only there
		}
		if loaded, other := r.loaded.Loaded(now, w.model); w.model != "" && !loaded && other && p.loadedOnAnother(r, w.model, now, peerDrain) {
			continue // a load here would unload another model, and another replica has this one: wait for it
		}
		return e
	}
	return nil
}

// loadedOnAnother says whether a replica other than r that takes requests
// (routable, and not drained by a peer) has model loaded (or will have, once
// the requests sent there start).
func (p *pool) loadedOnAnother(r *replica, model string, now time.Time, peerDrain map[string]bool) bool {
	for _, o := range p.replicas {
		if o == r || !o.takes(peerDrain) {
			continue
		}
		if loaded, _ := o.loaded.Loaded(now, model); loaded {
			return true
		}
	}
	return false
}

// listed says whether a replica that takes requests (routable, and not
// drained by a peer) lists model.
func (p *pool) listed(model string, peerDrain map[string]bool) bool {
	for _, r := range p.replicas {
		if r.takes(peerDrain) && r.listsModel(model, model+":latest") {
			return true
		}
	}
	return false
}

// releaseSlot undoes a slot given to w on rep that w will not use (g.mu
// held), and gives it to the next.
func (g *Gate) releaseSlot(b *backend, rep *replica, w *slotWaiter) {
	rep.inFlight--
	if w.loads && w.model != "" {
		rep.loaded.Done(w.model)
	}
	g.handSlots(b)
}
