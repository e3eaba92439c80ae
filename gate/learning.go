package gate

import (
	"fmt"
	"time"

	"github.com/go-kit/log/level"
)

// startLearning starts a learning wake of b unless one is under way (g.mu
// held). A learning wake asks for the backend once; if it is not up within
// the hold timeout (a bad image, a wrong port), the wake ends and the backend
// is not learnable until it is next up (a held request still wakes it), so a
// page load that finds no list cannot keep a GPU wanted forever.
func (g *Gate) startLearning(b *backend) {
	if b.learning {
		return
	}
	b.learning = true
	b.learnGen++
	gen := b.learnGen
	time.AfterFunc(g.cfg.HoldTimeout, func() { g.endLearning(b, gen) })
}

// endLearning gives up learning wake gen of b if it is still under way.
func (g *Gate) endLearning(b *backend, gen int) {
	g.mu.Lock()
	if !b.learning || b.learnGen != gen || b.state == StateUp {
		g.mu.Unlock()
		return
	}
	b.learning = false
	b.notLearnable = fmt.Sprintf("a learning wake ended: the backend did not come up within %s (--gate.hold-timeout); it was %s, last seen: %s",
		g.cfg.HoldTimeout, b.state, reasonOr(b.reason))
	level.Warn(g.logger).Log("msg", "backend not learnable: the learning wake ended without the backend up; page loads no longer wake it until it is up (a held request wakes it)",
		"backend", b.name, "hold_timeout", g.cfg.HoldTimeout, "state", b.state, "reason", reasonOr(b.reason))
	g.mu.Unlock()
	g.notify()
}
