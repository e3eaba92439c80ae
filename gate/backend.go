package gate

import (
	"container/list"
	"net/http"
	"time"

	"github.com/go-kit/log/level"
)

// backend is one --gate.backend with its state; mutable fields are guarded by Gate.mu.
type backend struct {
	cfg    BackendConfig
	pool   *pool  // its replicas, for a pool; nil otherwise
	name   string // DefaultName for the unnamed one
	prefix string // "/" or "/NAME/"
	kick   chan struct{}

	state   State
	since   time.Time
	upUntil time.Time // when it last stopped being up (real time; zero: never up and down again)
	reason  string
	upCh    chan struct{} // closed while up; list requests that wait to learn select on it
	known   chan struct{} // closed once the state is no longer unknown
	queue   list.List     // *heldReq, arrival order
	reading int           // held requests still reading their bodies
	// inFlight counts demand requests being passed through, delivered ones included.
	inFlight  int
	releasing int // delivered requests in flight, bounded by ReleaseConcurrency
	heldBytes int64
	requests  map[Outcome]uint64
	hold      holdHist

	lists       map[string]*remembered // by backend path
	learning    bool                   // a never-seen list was asked while not up: wants one wake
	learnPaths  map[string]http.Header // lists to fetch at that wake, with the asking request's headers
	learnWaiter int                    // list requests waiting to learn now
	learnGen    int                    // which learning wake is under way (its bound ends only its own)
	// notLearnable says why a learning wake gave up; until the backend is
	// next up, lists never seen get a 503 at once, without a wake.
	notLearnable string

	// wake=request: who was seen within Idle.
	active     map[string]int       // hashed user -> held/in-flight requests
	lastSeen   map[string]time.Time // hashed user -> end of their last request
	activeAnon int                  // held/in-flight requests without a user header
	anonSeen   []anonBucket         // ends of requests without a user header, by second, ascending

	warm *warmer // nil: warm=off
}

// setState records what the gate saw of b (g.mu held). Going up releases the
// held requests and ends a learning wake.
func (g *Gate) setState(b *backend, st State, reason string) {
	if st == StateUp {
		reason = ""
	}
	if st != b.state {
		level.Info(g.logger).Log("msg", "backend state", "backend", b.name, "from", b.state, "to", st, "reason", reason)
		if b.state == StateUp {
			b.upCh = make(chan struct{})
			b.upUntil = time.Now()
		}
		if b.state == StateUnknown {
			close(b.known)
		}
		b.state, b.since = st, g.now()
		if st == StateUp {
			close(b.upCh)
			g.warmWoke(b)
		}
	}
	b.reason = reason
	if st == StateMisconfigured {
		g.pump(b) // held requests are answered (the TLS error) rather than kept
	}
	if st != StateUp {
		return
	}
	b.notLearnable = ""
	if b.learning || len(b.learnPaths) > 0 {
		b.learning = false
		paths := b.learnPaths
		b.learnPaths = map[string]http.Header{}
		g.bg.Add(1)
		go func() {
			defer g.bg.Done()
			g.learn(b, paths)
		}()
		defer g.notify()
	}
	g.pump(b)
}

// sends tells whether requests go to b now rather than wait: while it is up,
// and while it is misconfigured (each gets the TLS error at once: waiting
// does not fix it). g.mu held.
func (b *backend) sends() bool { return b.state == StateUp || b.state == StateMisconfigured }

func (b *backend) kickProbe() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *backend) reasonNow(g *Gate) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return b.reason
}

func reasonOr(reason string) string {
	if reason == "" {
		return "not seen yet"
	}
	return reason
}

func singleJoin(a, b string) string {
	if len(a) > 0 && a[len(a)-1] == '/' {
		a = a[:len(a)-1]
	}
	return a + b
}
