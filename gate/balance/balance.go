// Package balance chooses which replica of a pooled backend serves a
// request. It knows nothing of HTTP: the gate tells it, per request, which
// replicas may serve (up, not draining, listing the model) and how loaded
// each is, and it answers with one of them.
//
// The rules, in order (docs/replicas.md says why):
//
//  1. Conversation affinity: a later turn of a conversation goes back to the
//     replica that served the last one, where its prompt is cached, unless
//     the move rule (Policy) says that waiting there costs more than
//     prefilling the whole history elsewhere.
//  2. A free replica (fewer answers than its parallel slots) always beats a
//     busy one.
//  3. Model affinity: a replica that has the model loaded beats one that
//     would have to load it.
//  4. Least in flight: the fewest answers running or queued, per slot.
//  5. Ties: a hash of the conversation and the replica (rendezvous hashing),
//     so that two gates that share nothing still agree on a conversation's
//     first replica when loads are equal; requests without a conversation
//     take turns.
package balance

import (
	"container/list"
	"hash/fnv"
	"sync"
)

// Replica is what the choice knows of one replica when a request comes.
type Replica struct {
	ID       string // "host:port" of the replica
	InFlight int    // answers it runs or queues, counted by the gates (this one and its peers)
	Parallel int    // answers it runs at once (its OLLAMA_NUM_PARALLEL); below 1 counts as 1
	Loaded   bool   // it has the request's model loaded (its /api/ps, or the gate routed the model there)
	Evicts   bool   // not Loaded, and loading the model would unload another one that is loaded there
}

func (r Replica) slots() int { return max(r.Parallel, 1) }

// Free says whether a new answer would start at once.
func (r Replica) Free() bool { return r.InFlight < r.slots() }

// StartsNow says whether a new answer for the model would start at once: a
// free slot and the model loaded. A free replica that must load the model
// first is not free for this request.
func (r Replica) StartsNow() bool { return r.Free() && r.Loaded }

// cost is the wait a new answer would see there, in half answers: two per
// answer ahead, one for loading the model on a replica that has none loaded
// (a fresh replica after a scale-out takes work before a busy one), three
// when the load unloads another model (the load, and the load back that the
// other model's next request pays).
func (r Replica) cost() int {
	c := 2 * r.Ahead()
	switch {
	case r.Loaded:
	case r.Evicts:
		c += 4
	default:
		c++
	}
	return c
}

// Ahead is how many answers a new one would wait behind (0 when free).
// With parallel slots, one slot frees per answer that ends, so the wait is
// the queue beyond the slots plus one.
func (r Replica) Ahead() int { return max(0, r.InFlight-r.slots()+1) }

// Policy says when a conversation leaves the replica that served it.
type Policy struct {
	// MoveQueue: a conversation whose replica would make its turn wait at
	// least this many answers (a model load counts as half, two when it
	// unloads another model) moves to a replica
	// that starts it at once. 1 (the default, tuned on the busy hour:
	// docs/replicas.md) moves as soon as its replica is busy and another is
	// free; a very large value never moves it while its replica serves.
	MoveQueue int
	// MoveMargin: when no replica can start the answer at once, a
	// conversation moves only to a replica with at least this many fewer
	// answers ahead (default 1, tuned on the busy hour).
	MoveMargin int
	// LoadFactor > 0 replaces both by KubeAI's bounded load: a conversation
	// stays while its replica's in-flight count is at most LoadFactor times
	// the mean (with the new request counted), e.g. 1.25. Kept for the
	// comparison in the busy-hour benchmark.
	LoadFactor float64
}

// DefaultPolicy is the move rule the gate uses.
var DefaultPolicy = Policy{MoveQueue: 1, MoveMargin: 1}

// DefaultMemory is how many conversations a Chooser remembers (about 100
// bytes each).
const DefaultMemory = 100_000

// Chooser chooses replicas and remembers which one served each
// conversation (the most recent Memory of them). It is safe for concurrent
// use.
type Chooser struct {
	policy Policy
	memory int

	mu     sync.Mutex
	homes  map[string]*list.Element // conversation -> element of lru (*home)
	lru    list.List                // most recently used first
	turn   int                      // for requests without a conversation
	moved  uint64
	stayed uint64
}

type home struct{ conversation, replica string }

// NewChooser returns a Chooser with policy p (zero fields take the
// defaults) that remembers up to memory conversations (0: DefaultMemory).
func NewChooser(p Policy, memory int) *Chooser {
	if p.MoveQueue <= 0 {
		p.MoveQueue = DefaultPolicy.MoveQueue
	}
	if p.MoveMargin <= 0 {
		p.MoveMargin = DefaultPolicy.MoveMargin
	}
	if memory <= 0 {
		memory = DefaultMemory
	}
	return &Chooser{policy: p, memory: memory, homes: map[string]*list.Element{}}
}

// Choose returns the index in replicas of the one to serve a request of
// conversation ("" for none), and remembers it as the conversation's home.
// replicas are those that may serve it; -1 when there is none.
func (c *Chooser) Choose(replicas []Replica, conversation string) int {
	if len(replicas) == 0 {
		return -1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	h := -1
	if conversation != "" {
		if e, ok := c.homes[conversation]; ok {
			id := e.Value.(*home).replica
			for i, r := range replicas {
				if r.ID == id {
					h = i
					break
				}
			}
		}
	}
	best := c.best(replicas, conversation)
	pick := best
	if h >= 0 {
		if c.stays(replicas, h, best) {
			pick = h
			c.stayed++
		} else {
			c.moved++
		}
	}
	if conversation != "" {
		c.remember(conversation, replicas[pick].ID)
	}
	return pick
}

// Forget drops what the Chooser remembers of a replica that is gone, so that
// its conversations are placed afresh rather than kept on a stale name.
func (c *Chooser) Forget(replicaID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.lru.Front(); e != nil; {
		next := e.Next()
		if hm := e.Value.(*home); hm.replica == replicaID {
			c.lru.Remove(e)
			delete(c.homes, hm.conversation)
		}
		e = next
	}
}

// Moves returns how many remembered conversations stayed on their replica
// and how many moved for load.
func (c *Chooser) Moves() (stayed, moved uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stayed, c.moved
}

// stays applies the move rule to the conversation's home h against the best
// other choice.
func (c *Chooser) stays(rs []Replica, h, best int) bool {
	home := rs[h]
	if c.policy.LoadFactor > 0 {
		total := 0
		for _, r := range rs {
			total += r.InFlight
		}
		mean := float64(total+1) / float64(len(rs))
		return float64(home.InFlight) <= mean*c.policy.LoadFactor
	}
	if !home.Loaded {
		return h == best // the model is not there: neither is its prompt cache
	}
	if home.StartsNow() || h == best {
		return true
	}
	alt := rs[best]
	if alt.StartsNow() {
		return home.cost() < 2*c.policy.MoveQueue
	}
	return alt.cost()+2*c.policy.MoveMargin > home.cost()
}

// best orders replicas by the rules 2 to 5 and returns the first.
func (c *Chooser) best(rs []Replica, conversation string) int {
	best := 0
	for i := 1; i < len(rs); i++ {
		if better(rs[i], rs[best]) {
			best = i
		}
	}
	// Ties of the first rank: rendezvous hash, or take turns.
	var ties []int
	for i := range rs {
		if !better(rs[best], rs[i]) {
			ties = append(ties, i)
		}
	}
	if len(ties) == 1 {
		return best
	}
	if conversation == "" {
		c.turn = (c.turn + 1) % len(ties)
		return ties[c.turn]
	}
	top, topScore := ties[0], uint64(0)
	for _, i := range ties {
		if s := score(conversation, rs[i].ID); s > topScore {
			top, topScore = i, s
		}
	}
	return top
}

// better says whether a ranks before b by rules 2 to 4.
func better(a, b Replica) bool {
	if a.StartsNow() != b.StartsNow() {
		return a.StartsNow()
	}
	if a.cost() != b.cost() {
		return a.cost() < b.cost()
	}
	if a.Loaded != b.Loaded {
		return a.Loaded
	}
	// Least in flight per slot: compare a.InFlight/a.slots with b's without division.
	return a.InFlight*b.slots() < b.InFlight*a.slots()
}

func score(conversation, id string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(conversation))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(id))
	return h.Sum64()
}

func (c *Chooser) remember(conversation, replica string) {
	if e, ok := c.homes[conversation]; ok {
		e.Value.(*home).replica = replica
		c.lru.MoveToFront(e)
		return
	}
	c.homes[conversation] = c.lru.PushFront(&home{conversation: conversation, replica: replica})
	for c.lru.Len() > c.memory {
		e := c.lru.Back()
		c.lru.Remove(e)
		delete(c.homes, e.Value.(*home).conversation)
	}
}
