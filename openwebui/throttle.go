package openwebui

import (
	"fmt"
	"time"

	"github.com/go-kit/log/level"
)

// MaxStatusUpdateInterval is the largest value of Open WebUI's
// DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL the exporter accepts, and what
// admin mode assumes while it has seen the throttle but not yet measured it.
// Open WebUI's docs recommend 300-500 s for production.
const MaxStatusUpdateInterval = time.Hour

// Open WebUI's write throttle (DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL
// = T, utils/misc.py throttle around Users.update_last_active_by_id) is per
// process and per user, and acts on the leading edge: a call writes, and
// every call within T of that process's last write for the user is dropped.
// So a request at time t leaves the user's last_active_at later than t - T,
// whichever of R processes served it and whatever R is: it either wrote t,
// or was dropped because that process wrote less than T before. Everybody
// who made a request in the last 180 s therefore has last_active_at >=
// now - (180 s + T): admin mode counts that window (see countAdmin).
//
// writeThrottle is what admin mode knows of T: the value it was told
// (--openwebui.status-update-interval) and what it sees of its own account.
// Its own requests stamp it like anybody's, so a last_active_at that does
// not move with them shows the throttle, and the spacing of the writes that
// do land measures T: with one Open WebUI process every spacing is at least
// T and less than T plus the gap between two of its counts. With several
// processes behind a load balancer that spreads its requests, some writes
// come soon after others (each process writes once per T): spacings that
// disagree by more than that gap show it, and then the spacing says nothing
// of T, so the count assumes MaxStatusUpdateInterval until it is told.
type writeThrottle struct {
	told time.Duration
	// seen: a request of the exporter's own was seen dropped.
	seen bool
	// stamp is the own last_active_at seen last (epoch seconds, 0: none),
	// age how old it was, at most, when a request was seen dropped.
	stamp int64
	age   time.Duration
	// spacings between the own writes seen since the throttle was, and the
	// gaps between the counts that saw them, within spacingHorizon.
	spacings, gaps []timed
	warned         bool
}

// timed is a duration seen at an epoch second of Open WebUI's clock.
type timed struct {
	at int64
	d  time.Duration
}

// spacingHorizon is how long a spacing or gap seen is remembered: long
// enough to hold two spacings of the longest interval accepted.
const spacingHorizon = 2*MaxStatusUpdateInterval + ActivityWindow

// measured returns the interval the spacings seen show, and whether they
// agree (one process, as far as the exporter can see), with the slack
// they may disagree by: the longest gap between two counts.
func (w *writeThrottle) measured() (seen time.Duration, agree bool, slack time.Duration) {
	if len(w.spacings) < 2 {
		return 0, false, 0
	}
	lo, hi := w.spacings[0].d, w.spacings[0].d
	for _, s := range w.spacings[1:] {
		lo, hi = min(lo, s.d), max(hi, s.d)
	}
	for _, g := range w.gaps {
		slack = max(slack, g.d)
	}
	slack += ownStampTolerance
	return hi, hi-lo <= slack, slack
}

// interval is the T the count assumes: the value told, or what was seen if
// larger. Not told (0), MaxStatusUpdateInterval while the throttle is seen
// but not measured, so that nobody goes missing meanwhile; told, the value
// told stands then: spacings that disagree are what several Open WebUI
// processes look like.
func (w *writeThrottle) interval() time.Duration {
	if !w.seen {
		return w.told
	}
	seen, agree, slack := w.measured()
	switch {
	case agree && seen > w.told+slack:
		return max(seen, w.age)
	case agree || w.told > 0:
		// A spacing is T plus up to a gap between counts: one that
		// agrees with the value told within that gap confirms it.
		return max(w.told, w.age)
	}
	return MaxStatusUpdateInterval
}

// ownSighting is what one admin count saw of the exporter's own account.
type ownSighting struct {
	found bool
	stamp int64 // its last_active_at, if found
	// ref is a time (Open WebUI's clock) by which a request of the
	// exporter's own had stamped the account unless the throttle dropped
	// it: the count's own first request for an API key (stamped before the
	// handler runs), the previous count's for a JWT (stamped after the
	// answer). Zero: none known.
	ref time.Time
	// at is Open WebUI's clock at this count, prev at the one before (zero:
	// none).
	at, prev time.Time
	// covered is the oldest last_active_at the count read all users down
	// to: an own account not found is older than that.
	covered int64
	// tolerance is how far the clocks of ref and the stamp may disagree.
	tolerance time.Duration
}

// observe learns from one sighting, and logs once what it saw.
func (c *Client) observe(s ownSighting) {
	w := &c.throttle
	now := s.at.Unix()
	forget := func(xs []timed) []timed {
		for len(xs) > 0 && now-xs[0].at > int64(spacingHorizon/time.Second) {
			xs = xs[1:]
		}
		return xs
	}
	w.spacings, w.gaps = forget(w.spacings), forget(w.gaps)
	if !s.prev.IsZero() && w.seen {
		w.gaps = append(w.gaps, timed{now, s.at.Sub(s.prev)})
	}
	if !s.found {
		if !s.ref.IsZero() && s.covered <= s.ref.Unix()-int64(s.tolerance/time.Second) {
			// Every stamp from ref on was read, and none is ours: the
			// interval assumed was too short; measure it again.
			w.seen, w.spacings = true, nil
		}
		return
	}
	if s.stamp > w.stamp {
		if w.seen && w.stamp != 0 {
			w.spacings = append(w.spacings, timed{s.stamp, time.Duration(s.stamp-w.stamp) * time.Second})
			c.warnThrottle()
		}
		w.stamp, w.age = s.stamp, 0
	}
	if s.ref.IsZero() {
		return
	}
	if age := time.Duration(s.ref.Unix()-s.stamp) * time.Second; age > s.tolerance {
		w.seen, w.age = true, max(w.age, age)
	}
}

// warnThrottle logs, once, what the exporter saw of a throttle it was not
// told of (or told less of), when two spacings of its own writes are seen.
func (c *Client) warnThrottle() {
	w := &c.throttle
	seen, agree, slack := w.measured()
	if w.warned || len(w.spacings) < 2 || (agree && seen <= w.told+slack) || (!agree && w.told > 0) {
		return
	}
	w.warned = true
	const what = "Open WebUI throttles the activity writes (DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL): the exporter's own last_active_at does not move with its requests. "
	const fix = "; set --openwebui.status-update-interval to the value of DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL"
	if agree {
		level.Warn(c.cfg.Logger).Log("msg", what+fmt.Sprintf("Its writes come every %s: counting the users active within 180s plus that, so that nobody goes missing (openwebui_activity_write_interval_seconds)", seen)+fix,
			"seen", seen, "told", w.told)
		return
	}
	lo := seen
	for _, s := range w.spacings {
		lo = min(lo, s.d)
	}
	level.Warn(c.cfg.Logger).Log("msg", what+fmt.Sprintf("Its writes come from %s to %s apart, so several Open WebUI processes write them and the interval cannot be seen: counting the users active within 180s plus %s, the most accepted, so that nobody goes missing, which keeps Ollama up that much longer after people leave", lo, seen, MaxStatusUpdateInterval)+fix,
		"seen_min", lo, "seen_max", seen, "told", w.told)
}

// windowSince is the oldest last_active_at that counts at serverNow: Open
// WebUI's 180 s plus the write interval T, in whole seconds (Open WebUI
// stores int(time.time()), and a write dropped at t-T+0.9 left t-T).
func windowSince(serverNow time.Time, interval time.Duration) int64 {
	return serverNow.Unix() - int64(ActivityWindow/time.Second) - int64((interval+time.Second-1)/time.Second)
}

// usageHold is what usage mode does once it sees a throttle it was not told
// of (its own account inactive right after its own request: T > 180 s with
// an API key). /api/usage then drops a person who keeps working for
// T - 180 s of every T, so a count of 0 under somebody who is there comes
// every T. It answers the largest count of the last 180 s + T instead:
// whoever made a request within the last 180 s was written within the last
// 180 s + T, and a count within 180 s of that write included them, so that
// largest count is 0 only when nobody is there. (It can still be lower than
// the number of people, whose counts may not overlap: admin mode is exact.)
// T comes from the spacing of its own writes, seen as its account turning
// active again; until two spacings agree, MaxStatusUpdateInterval.
type usageHold struct {
	seen      bool
	wasActive bool        // the own account at the previous count
	prevAt    time.Time   // the previous count (local clock)
	writes    []time.Time // own writes seen (when the account turned active again)
	spacings  []timed     // between them, at the epoch second of the later one
	gaps      []timed     // between counts, since seen
	counts    []heldCount // counts of the last 180 s + MaxStatusUpdateInterval
}

type heldCount struct {
	at time.Time
	n  int
}

// interval is the T the hold assumes, and the slack it adds: a write is
// seen at the first count after it, so a spacing is known to within the
// longest gap between counts.
func (h *usageHold) interval() (time.Duration, time.Duration) {
	w := writeThrottle{seen: true, spacings: h.spacings, gaps: h.gaps}
	seen, agree, slack := w.measured()
	if !agree {
		return MaxStatusUpdateInterval, 0
	}
	return seen, slack
}

// observe records whether the own account was active before the count at
// now; seen reports a request of its own just dropped (the throttle).
func (h *usageHold) observe(now time.Time, active, seen bool) {
	if seen {
		h.seen = true
	}
	if h.seen {
		if !h.prevAt.IsZero() {
			h.gaps = append(h.gaps, timed{now.Unix(), now.Sub(h.prevAt)})
		}
		if active && !h.wasActive {
			// Turned active: a request of its own since the previous count
			// was written; its time is known to within that gap. It was
			// inactive, so its last write is over 180 s old: anything
			// shorter is not a spacing (a clock that jumped).
			if n := len(h.writes); n > 0 && now.Sub(h.writes[n-1]) > ActivityWindow {
				h.spacings = append(h.spacings, timed{now.Unix(), now.Sub(h.writes[n-1]).Round(time.Second)})
			}
			h.writes = append(h.writes[max(len(h.writes)-1, 0):], now)
		}
	}
	horizon := now.Unix() - int64(spacingHorizon/time.Second)
	for len(h.spacings) > 0 && h.spacings[0].at < horizon {
		h.spacings = h.spacings[1:]
	}
	for len(h.gaps) > 0 && h.gaps[0].at < horizon {
		h.gaps = h.gaps[1:]
	}
	h.wasActive, h.prevAt = active, now
}

// hold records the exact count n at now and returns the largest of the
// last 180 s + T (+ the slack), with the T assumed; n and 0 while no
// throttle was seen. Counts are kept from the start, so that the first
// count that sees the throttle already holds what came before.
func (h *usageHold) hold(now time.Time, n int) (int, time.Duration) {
	h.counts = append(h.counts, heldCount{now, n})
	for len(h.counts) > 0 && now.Sub(h.counts[0].at) > ActivityWindow+MaxStatusUpdateInterval {
		h.counts = h.counts[1:]
	}
	if !h.seen {
		return n, 0
	}
	interval, slack := h.interval()
	held := n
	for _, c := range h.counts {
		if now.Sub(c.at) <= ActivityWindow+interval+slack {
			held = max(held, c.n)
		}
	}
	return held, interval
}
