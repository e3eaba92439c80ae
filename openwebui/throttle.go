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
// do land measures T (from above, with one Open WebUI process).
type writeThrottle struct {
	told time.Duration
	// seen: a request of the exporter's own was seen dropped.
	seen bool
	// spacing is the latest spacing of two own writes with a drop seen
	// between them; 0 while not measured since the throttle was seen.
	spacing time.Duration
	// stamp is the own last_active_at seen last (epoch seconds, 0: none),
	// dropped whether a request was seen dropped since it was written, age
	// how old it was then at most.
	stamp   int64
	dropped bool
	age     time.Duration
	warned  bool
}

// interval is the T the count assumes: the value told, or what was seen if
// larger; MaxStatusUpdateInterval while the throttle is seen but not yet
// measured, so that nobody goes missing meanwhile.
func (w *writeThrottle) interval() time.Duration {
	if !w.seen {
		return w.told
	}
	if w.spacing == 0 {
		return max(w.told, MaxStatusUpdateInterval)
	}
	return max(w.told, w.spacing, w.age)
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
	// covered is the oldest last_active_at the count read all users down
	// to: an own account not found is older than that.
	covered int64
	// tolerance is how far the clocks of ref and the stamp may disagree.
	tolerance time.Duration
}

// observe learns from one sighting, and logs once when Open WebUI writes
// the own account less often than the value told.
func (c *Client) observe(s ownSighting) {
	w := &c.throttle
	if s.ref.IsZero() {
		if s.found {
			w.stamp = max(w.stamp, s.stamp)
		}
		return
	}
	ref := s.ref.Unix()
	if !s.found {
		if s.covered <= ref-int64(s.tolerance/time.Second) {
			// Every stamp from ref on was read: none of ours. The interval
			// assumed was too short; measure it again.
			w.seen, w.dropped, w.spacing = true, true, 0
		}
		return
	}
	if s.stamp > w.stamp {
		if w.dropped && w.stamp != 0 {
			w.spacing = time.Duration(s.stamp-w.stamp) * time.Second
			c.warnThrottle()
		}
		w.stamp, w.dropped, w.age = s.stamp, false, 0
	}
	if age := time.Duration(ref-s.stamp) * time.Second; age > s.tolerance {
		w.seen, w.dropped, w.age = true, true, max(w.age, age)
	}
}

// warnThrottle logs, once, that Open WebUI throttles the activity writes
// more than the exporter was told.
func (c *Client) warnThrottle() {
	w := &c.throttle
	if w.warned || w.spacing <= w.told {
		return
	}
	w.warned = true
	level.Warn(c.cfg.Logger).Log("msg", fmt.Sprintf("Open WebUI writes the exporter's own last_active_at only every %s: it throttles the activity writes (DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL). Counting the users active within 180s plus that interval, so that nobody goes missing; set --openwebui.status-update-interval to the value of DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL (with several Open WebUI processes the spacing seen can be shorter than it)", w.spacing),
		"seen", w.spacing, "told", w.told)
}

// windowSince is the oldest last_active_at that counts at serverNow: Open
// WebUI's 180 s plus the write interval T, in whole seconds (Open WebUI
// stores int(time.time()), and a write dropped at t-T+0.9 left t-T).
func windowSince(serverNow time.Time, interval time.Duration) int64 {
	return serverNow.Unix() - int64(ActivityWindow/time.Second) - int64((interval+time.Second-1)/time.Second)
}
