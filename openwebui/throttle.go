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
// not move with them shows the throttle. The spacing of the writes that do
// land is T with one Open WebUI process (at least T, less than T plus the
// gap between two of its counts), but with several each writes once per T
// and their writes can come evenly every T/R: the spacing is only reported
// (the warning), and not told, the count assumes MaxStatusUpdateInterval
// (see interval).
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
	lastGap        time.Duration // between the last two counts (0: none)
	warned         bool
	// firstStamp is the own last_active_at at the first sighting; known:
	// a request of the exporter's own came more than the tolerance after
	// it, so that a dropped write would have shown (seen). Until then a 0
	// is not known to be right (see countAdmin).
	firstStamp int64
	known      bool
}

// timed is a duration seen at an epoch second of Open WebUI's clock.
type timed struct {
	at int64
	d  time.Duration
	// withCount, for a spacing: it was no longer than the gaps between the
	// counts around the write that ended it (the larger of the last two,
	// plus the tolerance), so that write came with a count.
	withCount bool
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

// writesWithCounts says whether every own write seen (at least two
// spacings) came with a count: no spacing was longer than the gaps between
// the counts around it. Then there is no throttle, and a dropped write was
// seen by mistake. It is each spacing against its own gaps, not the longest
// against the longest: one pause in the counts (Open WebUI down, nobody
// asking) longer than T makes one spacing as long as that gap, and must not
// make the throttle's own spacings of T, within many counts, look like
// writes with every count.
func (w *writeThrottle) writesWithCounts() bool {
	if len(w.spacings) < 2 {
		return false
	}
	for _, s := range w.spacings {
		if !s.withCount {
			return false
		}
	}
	return true
}

// interval is the T the count assumes: the value told, or what was seen if
// larger. Not told (0), MaxStatusUpdateInterval once the throttle is seen:
// the spacing of its own writes is T only with one Open WebUI process.
// Behind several, each process writes the account once per T, and the
// writes of R processes can come evenly every T/R (a balancer that moves
// the exporter's connection now and then), exactly as one process with T/R
// would write them; no spacing tells the two apart, and taking T/R for T
// loses people (TestSpacingIsNoIntervalWithSeveralProcesses). So what it
// sees only goes into the warning, and the operator tells it T. Writes
// that come with its counts (spacings no longer than the gaps between
// them) are no throttle: a dropped write seen by mistake is forgotten.
// Told, the value told stands, or what was seen if larger (a spacing is T
// plus up to a gap between counts: one that agrees with the value told
// within that gap confirms it).
func (w *writeThrottle) interval() time.Duration {
	if !w.seen {
		return w.told
	}
	seen, agree, slack := w.measured()
	switch {
	case w.writesWithCounts():
		return max(w.told, w.age)
	case w.told == 0:
		return MaxStatusUpdateInterval
	case agree && seen > w.told+slack:
		return max(seen, w.age)
	}
	return max(w.told, w.age)
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
	var gap time.Duration // since the count before, 0: none
	if !s.prev.IsZero() {
		gap = s.at.Sub(s.prev)
	}
	// A JWT's stamp is the count before's: the gap that ended its write is
	// the one before this count's, hence the larger of the two.
	around := max(gap, w.lastGap)
	w.lastGap = gap
	if gap > 0 && w.seen {
		w.gaps = append(w.gaps, timed{at: now, d: gap})
	}
	if !s.found {
		if !s.ref.IsZero() && s.covered <= s.ref.Unix()-int64(s.tolerance/time.Second) {
			// Every stamp from ref on was read, and none is ours: the
			// interval assumed was too short; measure it again.
			w.seen, w.known, w.spacings = true, true, nil
		}
		return
	}
	if w.firstStamp == 0 {
		w.firstStamp = s.stamp
	}
	// A request of its own made more than the tolerance after that first
	// write would have shown as dropped (below) or has written (a JWT's
	// stamp of the count before, or of this count's first request).
	if tol := int64(s.tolerance / time.Second); (!s.ref.IsZero() && s.ref.Unix()-w.firstStamp > tol) || s.stamp-w.firstStamp > tol {
		w.known = true
	}
	if s.stamp > w.stamp {
		if w.seen && w.stamp != 0 {
			d := time.Duration(s.stamp-w.stamp) * time.Second
			w.spacings = append(w.spacings, timed{at: s.stamp, d: d, withCount: around > 0 && d <= around+s.tolerance})
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

// unsure reports whether a count of 0 from the window assumed is not known
// to be right: not told, nothing seen yet (the first count after a cold
// start; a JWT's first two), and somebody was written within 180 s + the
// longest interval accepted, who may have made a request a moment ago whose
// write the throttle dropped.
func (w *writeThrottle) unsure(counted int, newestOther int64, serverNow time.Time) bool {
	return w.told == 0 && !w.seen && !w.known && counted == 0 &&
		newestOther >= windowSince(serverNow, MaxStatusUpdateInterval)
}

// warnThrottle logs, once, what the exporter saw of a throttle it was not
// told of (or told less of), when two spacings of its own writes are seen.
func (c *Client) warnThrottle() {
	w := &c.throttle
	seen, agree, slack := w.measured()
	if w.warned || len(w.spacings) < 2 || w.writesWithCounts() || (w.told > 0 && (!agree || seen <= w.told+slack)) {
		return
	}
	w.warned = true
	const what = "Open WebUI throttles the activity writes (DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL): the exporter's own last_active_at does not move with its requests. "
	const fix = "; set --openwebui.status-update-interval to the value of DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL"
	lo := seen
	for _, s := range w.spacings {
		lo = min(lo, s.d)
	}
	if w.told > 0 {
		level.Warn(c.cfg.Logger).Log("msg", what+fmt.Sprintf("Its writes come every %s, more than the %s told: counting the users active within 180s plus that, so that nobody goes missing (openwebui_activity_write_interval_seconds)", seen, w.told)+fix,
			"seen", seen, "told", w.told)
		return
	}
	level.Warn(c.cfg.Logger).Log("msg", what+fmt.Sprintf("Its writes come %s to %s apart: that is the interval with one Open WebUI process, and less with several (each writes once per interval), which the exporter cannot tell apart, so it counts the users active within 180s plus %s, the most accepted, so that nobody goes missing, which keeps Ollama up that much longer after people leave (openwebui_activity_write_interval_seconds)", lo, seen, MaxStatusUpdateInterval)+fix,
		"seen_min", lo, "seen", seen, "told", w.told)
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
// For T it takes MaxStatusUpdateInterval: as in admin mode
// (writeThrottle.interval), the spacing of its own writes is T only with
// one Open WebUI process, and can be T/R with R.
type usageHold struct {
	seen   bool
	counts []heldCount // counts of the last 180 s + MaxStatusUpdateInterval
}

type heldCount struct {
	at time.Time
	n  int
}

// observe records that a request of its own was just seen dropped (the
// throttle), if seen.
func (h *usageHold) observe(seen bool) {
	h.seen = h.seen || seen
}

// hold records the exact count n at now and returns the largest of the
// last 180 s + MaxStatusUpdateInterval, with that interval; n and 0 while
// no throttle was seen. Counts are kept from the start, so that the first
// count that sees the throttle already holds what came before.
func (h *usageHold) hold(now time.Time, n int) (int, time.Duration) {
	h.counts = append(h.counts, heldCount{now, n})
	for len(h.counts) > 0 && now.Sub(h.counts[0].at) > ActivityWindow+MaxStatusUpdateInterval {
		h.counts = h.counts[1:]
	}
	if !h.seen {
		return n, 0
	}
	held := n
	for _, c := range h.counts {
		held = max(held, c.n)
	}
	return held, MaxStatusUpdateInterval
}
