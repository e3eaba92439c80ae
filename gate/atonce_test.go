package gate

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// A pool set to parallel=1 in front of replicas that run more answers at
// once: the gate sees a replica stream two, warns (and shows it in its
// status), and from then on gives each replica two answers at once, so that
// bind=late does not keep a request in the gate while a replica has a slot
// free. Replicas that run one answer, as parallel= says, are never taken for
// more: a request sent to a busy one gets nothing until its slot frees. Nor
// is a replica that streams one answer of each of two models: Ollama gives
// each loaded model a runner, with slots, of its own.
func TestPoolAnswersAtOnceSeen(t *testing.T) {
	for _, tc := range []struct {
		name       string
		realSlots  int    // the stand-in replicas' slots (OLLAMA_NUM_PARALLEL, or two runners)
		thirdModel string // the third chat's; the first two ask for tiny:1b
		wantAtOnce int    // what the gate shows for the replica of the third chat
	}{
		{"parallel= right", 1, "tiny:1b", 0},
		{"two models side by side, one answer each", 2, "other:1b", 0},
		{"parallel= below the replicas'", 2, "tiny:1b", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const overlap = time.Second
			lp := startLatePool(t, tc.realSlots, func(g *Gate) {
				g.lateBindWait, g.answerOverlap = 50*time.Millisecond, overlap
				g.answerGap = 5 * time.Second // a stalled ticker on a loaded machine is no pause
			}, "tiny:1b", "other:1b")
			g, reps, started := lp.g, lp.reps, lp.started
			send := func(model, id string) { lp.send(t, model, id) }
			send("tiny:1b", "a")
			send("tiny:1b", "b")
			first, second := lp.next(t, "chat a"), lp.next(t, "chat b")
			if first == second {
				t.Fatalf("the first two chats both on %s", first)
			}
			// Both replicas stream one answer: the third chat waits in the
			// gate 50 ms, then goes to a busy replica.
			send(tc.thirdModel, "c")
			eventually(t, "the third chat sent to a replica", func() bool {
				n := 0
				for _, r := range stats(g.Gate, "pool").Replicas {
					n += r.InFlight
				}
				return n == 3
			})
			third := ""
			if tc.realSlots > 1 {
				third = lp.next(t, "chat c")      // streams at once: that replica has a second slot
				time.Sleep(overlap + 3*overlap/2) // side by side long enough to count
			}
			atOnce := func() map[string]int {
				m := map[string]int{}
				for _, r := range stats(g.Gate, "pool").Replicas {
					m[r.ID] = r.AtOnce
				}
				return m
			}
			if tc.wantAtOnce == 0 {
				// The third chat waits in its replica's queue, and streams
				// once the answer ahead of it ends; or streams beside it, of
				// another model. Never two of one model at once.
				for _, s := range reps {
					s.finishAll()
				}
				settle(t, g, "pool") // every answer's header counted, and its end
				if seen := atOnce(); seen["r1.test:11434"]+seen["r2.test:11434"] != 0 {
					t.Errorf("answers seen at once %v, want none", seen)
				}
				return
			}
			// That replica ends one of its two answers: the gate counts the
			// two as run at once, for the whole pool. Each replica then has a
			// slot free by what the gate has seen (not by parallel=1), so a
			// fourth chat starts at once, though the gate would now keep it
			// for an hour.
			g.mu.Lock()
			g.lateBindWait = time.Hour
			g.mu.Unlock()
			reps[third].finish()
			eventually(t, "two answers seen at once on "+third, func() bool { return atOnce()[third] == tc.wantAtOnce })
			eventually(t, "the finished answer counted out", func() bool { return stats(g.Gate, "pool").InFlight == 2 })
			send("tiny:1b", "d")
			select {
			case <-started:
			case <-time.After(10 * time.Second):
				t.Fatal("the fourth chat still waits in the gate 10 s later, while each replica has a slot free")
			}
		})
	}
}

// What counts as answers run at once, as an answer ends: answers of its
// model that streamed steadily beside it for answerOverlap at least.
func TestAnswerEndedCountsAnswersSideBySide(t *testing.T) {
	start := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	end := start.Add(time.Minute)
	type stream struct {
		model       string
		since, last time.Time // its current run of bytes
	}
	steady := func(model string, since time.Time) stream { return stream{model, since, end} }
	for _, tc := range []struct {
		name       string
		parallel   int
		ending     stream   // the answer that ends now
		others     []stream // still streaming from the replica
		wantAtOnce int
	}{
		{"alone", 1, steady("tiny:1b", start), nil, 0},
		{"the next answer's first token just before this one's end", 1, steady("tiny:1b", start),
			[]stream{steady("tiny:1b", end.Add(-10*time.Millisecond))}, 0},
		{"side by side for the overlap", 1, steady("tiny:1b", start), []stream{steady("tiny:1b", end.Add(-answerOverlap))}, 2},
		{"three side by side", 1, steady("tiny:1b", start), []stream{steady("tiny:1b", start), steady("tiny:1b", end.Add(-time.Minute/2))}, 3},
		{"one model under two names", 1, steady("tiny", start), []stream{steady("tiny:latest", start)}, 2},
		{"beside another model's answer", 1, steady("tiny:1b", start), []stream{steady("other:1b", start)}, 0},
		{"two side by side with parallel=2", 2, steady("tiny:1b", start), []stream{steady("tiny:1b", start)}, 0},
		{"after an answer that went silent for a slot again when this one took it (a thinking model asked for a format)", 1,
			steady("tiny:1b", end.Add(-30*time.Second)), []stream{{"tiny:1b", start, end.Add(-30 * time.Second)}}, 0},
		{"this answer's client stopped reading: its last bytes came in one go", 1, stream{"tiny:1b", end.Add(-10 * time.Millisecond), end},
			[]stream{steady("tiny:1b", start)}, 0},
		{"this answer's client stopped reading and left: no bytes since", 1, stream{"tiny:1b", start, end.Add(-10 * time.Second)},
			[]stream{steady("tiny:1b", end.Add(-9*time.Second))}, 0},
		{"two side by side at different times beside a third: never three at once", 2, steady("tiny:1b", start),
			[]stream{{"tiny:1b", start, start.Add(3 * time.Second)}, steady("tiny:1b", end.Add(-3*time.Second))}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := New(Config{Backends: poolConfig(t, fmt.Sprintf("pool=http://r1.test:11434,parallel=%d", tc.parallel), "pool=http://r2.test:11434")})
			if err != nil {
				t.Fatal(err)
			}
			g.now = func() time.Time { return end }
			b := g.byName["pool"]
			r := b.pool.replicas[0]
			add := func(s stream) *attempt {
				a := &attempt{answerModel: s.model}
				g.answerStarted(r, a, io.NopCloser(strings.NewReader("")))
				r.streams[a].since.Store(s.since.Sub(g.epoch).Nanoseconds())
				r.streams[a].last.Store(s.last.Sub(g.epoch).Nanoseconds())
				return a
			}
			ending := add(tc.ending)
			for _, o := range tc.others {
				add(o)
			}
			g.mu.Lock()
			g.answerEnded(b, r, ending)
			g.mu.Unlock()
			if got := b.pool.slots(); r.atOnce != tc.wantAtOnce || got != max(tc.parallel, tc.wantAtOnce) {
				t.Errorf("answers seen at once %d, slots %d; want %d, %d", r.atOnce, got, tc.wantAtOnce, max(tc.parallel, tc.wantAtOnce))
			}
			if _, still := r.streams[ending]; still || len(r.streams) != len(tc.others) {
				t.Errorf("streams after the end: %d, want the %d others", len(r.streams), len(tc.others))
			}
		})
	}
}

// A stream's run of bytes starts again after a pause of answerGap, or when a
// read fills the buffer (a backlog: the gate is behind the replica).
func TestStreamClock(t *testing.T) {
	c := &streamClock{ReadCloser: io.NopCloser(strings.NewReader("")), gap: int64(time.Second)}
	for _, step := range []struct {
		after     time.Duration // since the last bytes
		behind    bool          // the read filled the buffer
		wantSince time.Duration // from the first bytes
	}{
		{500 * time.Millisecond, false, 0},
		{time.Second, false, 0}, // a pause of exactly the gap: the same run
		{1500 * time.Millisecond, false, 3 * time.Second},
		{10 * time.Millisecond, false, 3 * time.Second},
		{10 * time.Millisecond, true, 3020 * time.Millisecond},
		{10 * time.Millisecond, false, 3020 * time.Millisecond},
	} {
		c.tick(c.last.Load()+step.after.Nanoseconds(), step.behind)
		if got := time.Duration(c.since.Load()); got != step.wantSince {
			t.Errorf("bytes %s after the last (behind %v): the run starts %s after the first bytes, want %s", step.after, step.behind, got, step.wantSince)
		}
	}
}

// Every replica of a pool runs one OLLAMA_NUM_PARALLEL: the slots one gate
// saw reach its peers through /_gate/demand, so that a peer with bind=late
// does not keep a request waiting for a slot that is free (the replicas here
// run two answers at once; the pool says parallel=1). A peer's count holds
// while the peer reports it, and is neither shown nor passed on.
func TestPeersShareAnswersAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name        string
		peerAtOnce  int // what the peer saw
		wantSlots   int
		wantStarted bool // the third chat streams at once, beside another
	}{
		{"no peer saw more", 0, 1, false},
		{"a peer saw two at once", 2, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lp := startLatePool(t, 2, func(g *Gate) {
				g.probeIdle, g.lateBindWait = time.Hour, time.Hour // a request waits for a slot, nothing else
				g.peerTTL = time.Hour
			}, "tiny:1b")
			g := lp.g
			g.mergePeers([]*DemandReport{{Instance: "peer", Backends: map[string]BackendDemand{"pool": {AtOnce: tc.peerAtOnce}}}})
			slots := func() int {
				g.mu.Lock()
				defer g.mu.Unlock()
				return g.byName["pool"].pool.slots()
			}
			if got := slots(); got != tc.wantSlots {
				t.Errorf("slots %d, want %d", got, tc.wantSlots)
			}

			lp.send(t, "tiny:1b", "a")
			lp.send(t, "tiny:1b", "b")
			lp.next(t, "chat a")
			lp.next(t, "chat b")
			lp.send(t, "tiny:1b", "c")
			if !tc.wantStarted {
				waitInGate(t, g.Gate, "chat c waiting in the gate for a slot")
				select {
				case at := <-lp.started:
					t.Errorf("chat c started on %s: with parallel=1 and nothing learned it waits for a slot", at)
				default:
				}
				return
			}
			lp.next(t, "chat c, on a replica's second slot")
			// Two answers stream side by side on one replica now. What this
			// gate shows and passes on is only what it saw itself (the
			// answers have not ended: nothing seen yet).
			for _, r := range stats(g.Gate, "pool").Replicas {
				if r.AtOnce != 0 {
					t.Errorf("replica %s shows %d answers at once: this gate saw none itself", r.ID, r.AtOnce)
				}
			}
			if n := g.demandReport().Backends["pool"].AtOnce; n != 0 {
				t.Errorf("this gate passes on %d answers at once, want 0: a peer's count is not passed on", n)
			}
			// The peer's report expires (it stopped answering): parallel= again.
			g.mu.Lock()
			g.peers["peer"].at = time.Now().Add(-2 * g.peerTTL)
			g.mu.Unlock()
			g.mergePeers(nil)
			if got := slots(); got != 1 {
				t.Errorf("slots %d once the peer's report expired, want parallel=1", got)
			}
		})
	}
}

// What a gate tells its peers of the answers at once it saw is bounded both
// ways: a report out of bounds is refused whole, so the sender caps its own.
func TestPeerAnswersAtOnceBounds(t *testing.T) {
	for _, tc := range []struct {
		atOnce  int
		wantErr string
	}{
		{0, ""},
		{maxPeerAtOnce, ""},
		{maxPeerAtOnce + 1, "answers_at_once_seen is absurd (1025, over 1024)"},
		{-1, "answers_at_once_seen is negative (-1)"},
	} {
		err := BackendDemand{AtOnce: tc.atOnce}.check()
		if (err == nil) != (tc.wantErr == "") || (err != nil && err.Error() != tc.wantErr) {
			t.Errorf("check of answers_at_once_seen %d: %v, want %q", tc.atOnce, err, tc.wantErr)
		}
	}
	lp := startLatePool(t, 1, func(*Gate) {}, "tiny:1b")
	lp.g.mu.Lock()
	lp.g.byName["pool"].pool.atOnce = 5000 // a Service in front of many Ollamas
	lp.g.mu.Unlock()
	if n := lp.g.demandReport().Backends["pool"].AtOnce; n != maxPeerAtOnce {
		t.Errorf("a gate that saw 5000 at once reports %d, want %d (more would have its whole report refused)", n, maxPeerAtOnce)
	}
}
