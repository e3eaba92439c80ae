package gate

import (
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-kit/log/level"
)

// A replica's slots: parallel= says how many answers one replica runs at
// once (its OLLAMA_NUM_PARALLEL), and the gate checks it against what it
// sees. Ollama sends an answer's header with its first token, once the
// answer has one of its model runner's slots (a request waiting for a slot
// gets nothing), and then streams a chunk per token. So answers of one model
// that a replica streams side by side, steadily, ran at once: more of them
// than parallel= means parallel= is set too low. KEDA then scales the pool
// out early, and bind=late would keep requests in the gate while replicas
// have slots free. The gate warns, and counts the slots it has seen for every
// replica of the pool (one Deployment, one OLLAMA_NUM_PARALLEL) from then on.
//
// What is not taken for two answers at once:
//   - the next answer's first token, which can reach the gate a moment
//     before the end of the answer whose slot it took (from 6 ms before to
//     107 ms after, with Ollama 0.17.4 in test/ollama): side by side means
//     for answerOverlap at least;
//   - an answer whose stream stays open without bytes while another
//     streams: Ollama answers a thinking model asked for a format in two
//     runs, waiting for a slot again in between; and a client that stops
//     reading makes the gate read nothing more of its answer meanwhile
//     (then a backlog at once, which the gate sees in reads that fill its
//     buffer). All must have streamed without a pause of answerGap over
//     the same answerOverlap;
//   - answers of two models: each loaded model has a runner, and slots, of
//     its own ("tiny" and "tiny:latest" are one model).
//
// Only streamed answers count (stream false sends the header at the end),
// and a pause of answerGap between tokens (a thinking parser holding output
// back, a slow model) makes the gate see fewer: it may miss slots, never
// invent them.
const (
	answerOverlap = 2 * time.Second
	answerGap     = time.Second
)

// slots is how many answers r runs at once: parallel=, or more once the
// pool was seen running more, by this gate or by a peer.
func (p *pool) slots() int {
	return max(p.parallel, p.atOnce, p.peerAtOnce)
}

// streamClock times the bytes of an answer as the gate reads them from its
// replica, in ns since the gate's epoch (a monotonic reading: a step of the
// wall clock changes nothing). The answer's own goroutine writes it,
// answerEnded reads it.
type streamClock struct {
	io.ReadCloser
	model string // without ":latest"
	gap   int64  // answerGap in ns
	now   func() time.Time
	epoch time.Time
	since atomic.Int64 // the start of its current run of bytes, without a pause of gap
	last  atomic.Int64 // its last bytes
}

func (c *streamClock) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if n > 0 {
		// A read that fills the buffer finds the gate behind the replica
		// (its client reads slowly): what comes now was made earlier, so
		// the run starts again.
		c.tick(c.now().Sub(c.epoch).Nanoseconds(), n == len(p))
	}
	return n, err
}

func (c *streamClock) tick(now int64, behind bool) {
	if behind || now-c.last.Load() > c.gap {
		c.since.Store(now)
	}
	c.last.Store(now)
}

// answerStarted counts a's answer as streamed by r from now, its header
// having come (g.mu held), and returns its body, timed.
func (g *Gate) answerStarted(r *replica, a *attempt, body io.ReadCloser) io.ReadCloser {
	c := &streamClock{ReadCloser: body, model: strings.TrimSuffix(a.answerModel, ":latest"), gap: int64(g.answerGap), now: g.now, epoch: g.epoch}
	now := g.now().Sub(g.epoch).Nanoseconds()
	c.since.Store(now)
	c.last.Store(now)
	if r.streams == nil {
		r.streams = map[*attempt]*streamClock{}
	}
	r.streams[a] = c
	return c
}

// answerEnded counts, as a's answer ends, the most answers of its model,
// itself included, that r streamed steadily side by side for answerOverlap
// (g.mu held), and raises the pool's slots when they were more.
func (g *Gate) answerEnded(b *backend, r *replica, a *attempt) {
	c, ok := r.streams[a]
	if !ok {
		return
	}
	delete(r.streams, a)
	type run struct{ since, last int64 }
	runs := []run{{c.since.Load(), c.last.Load()}} // c's first
	for _, o := range r.streams {
		if o.model == c.model { // another model has a runner of its own
			last := o.last.Load() // before since: a run caught starting again looks shorter, never longer
			runs = append(runs, run{o.since.Load(), last})
		}
	}
	// The window of answerOverlap that the most runs cover, c's among them,
	// starts where one of them starts.
	overlap := int64(g.answerOverlap)
	together := 0
	for _, w := range runs {
		if w.since < runs[0].since || w.since+overlap > runs[0].last {
			continue
		}
		n := 0
		for _, x := range runs {
			if x.since <= w.since && x.last >= w.since+overlap {
				n++
			}
		}
		together = max(together, n)
	}
	if together <= max(b.pool.parallel, b.pool.atOnce) { // what this gate saw itself: a peer's count is not kept
		return
	}
	r.atOnce = max(r.atOnce, together)
	b.pool.atOnce = together
	level.Warn(g.logger).Log("msg", "a replica streamed more answers at once than parallel= says: its OLLAMA_NUM_PARALLEL is higher (or its address is a Service in front of several Ollamas). Set parallel= (chart: gate.backends[].parallel) to it, or KEDA scales the pool out too early; the gate counts the answers seen",
		"backend", b.name, "replica", r.id, "model", c.model, "parallel", b.pool.parallel, "answers_at_once", together)
}

// peerSlots takes the answers at once the live peer gates saw themselves
// on b's replicas (g.mu held; mergePeers calls it whenever what the peers
// report changes, or a peer expires). All of a pool's replicas run one
// OLLAMA_NUM_PARALLEL, so what a peer saw on one counts for all. It counts
// only while that peer reports it, and is not passed on: a gate restarted
// after OLLAMA_NUM_PARALLEL was lowered is not taught the old number back by
// a newer gate that learned it from an old one.
func (g *Gate) peerSlots(b *backend) {
	before, seen, by := b.pool.slots(), 0, ""
	for id, p := range g.peers {
		if n := p.backends[b.name].AtOnce; n > seen {
			seen, by = n, id
		}
	}
	b.pool.peerAtOnce = seen
	if seen > before {
		level.Warn(g.logger).Log("msg", "a peer gate saw a replica stream more answers at once than parallel= says; this gate counts them too while the peer reports them. Set parallel= (chart: gate.backends[].parallel) to the replicas' OLLAMA_NUM_PARALLEL",
			"backend", b.name, "peer", by, "parallel", b.pool.parallel, "answers_at_once", seen)
	}
}
