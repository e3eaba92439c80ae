package gate

import (
	"fmt"
	"math"
)

// Bounds of what a peer may report for one backend. Each one is far above
// what one replica can have (--gate.max-held defaults to 1000), so only a
// broken or hostile peer exceeds them.
const (
	maxPeerCount = 1_000_000 // held, in flight, anonymous, recent
	// maxReportUsers bounds the user ids a replica lists in its report; past
	// it, it reports only their number (Recent), so the report stays small
	// (the ids are 24 hex characters each: 1000 of them are about 35 KiB).
	maxReportUsers = 1000
	// maxReportReplicas bounds the replicas of one pool a peer reports (only
	// those with requests in flight or draining are listed).
	maxReportReplicas = 10_000
	// maxPeerAtOnce bounds the answers at once a peer saw a replica run
	// (Ollama's OLLAMA_NUM_PARALLEL is a few; slots.go).
	maxPeerAtOnce = 1024
)

// check tells what is wrong with a peer's report of one backend, or nil.
func (d BackendDemand) check() error {
	for _, c := range []struct {
		name string
		n    int
	}{{"held", d.Held}, {"in_flight", d.InFlight}, {"anonymous", d.Anonymous}, {"recent", d.Recent}} {
		switch {
		case c.n < 0:
			return fmt.Errorf("%s is negative (%d)", c.name, c.n)
		case c.n > maxPeerCount:
			return fmt.Errorf("%s is absurd (%d, over %d)", c.name, c.n, maxPeerCount)
		}
	}
	switch {
	case d.AtOnce < 0:
		return fmt.Errorf("answers_at_once_seen is negative (%d)", d.AtOnce)
	case d.AtOnce > maxPeerAtOnce:
		return fmt.Errorf("answers_at_once_seen is absurd (%d, over %d)", d.AtOnce, maxPeerAtOnce)
	}
	if len(d.Replicas) > maxReportReplicas {
		return fmt.Errorf("%d replicas, over %d", len(d.Replicas), maxReportReplicas)
	}
	for id, r := range d.Replicas {
		switch {
		case r.InFlight < 0:
			return fmt.Errorf("replica %q: in_flight is negative (%d)", id, r.InFlight)
		case r.InFlight > maxPeerCount:
			return fmt.Errorf("replica %q: in_flight is absurd (%d, over %d)", id, r.InFlight, maxPeerCount)
		}
	}
	for _, age := range d.Users {
		switch {
		case math.IsNaN(age) || math.IsInf(age, 0):
			return fmt.Errorf("a user's age is %v", age)
		case age < 0:
			return fmt.Errorf("a user's age is negative (%v s)", age)
		}
	}
	return nil
}

// check tells what is wrong with a peer's report, or nil. A report that
// lists more users than maxReportUsers (a replica of an older version) is
// kept, its users taken as a number: its held and in-flight counts matter
// more than who its users are.
func (rep *DemandReport) check() error {
	if rep.Instance == "" {
		return fmt.Errorf("no instance")
	}
	for name, d := range rep.Backends {
		if err := d.check(); err != nil {
			return fmt.Errorf("backend %q: %w", name, err)
		}
		if len(d.Users) > maxReportUsers {
			d.Recent = max(d.Recent, len(d.Users)+d.Anonymous)
			d.Users = nil
			rep.Backends[name] = d
		}
	}
	return nil
}
