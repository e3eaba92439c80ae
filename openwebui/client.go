// Package openwebui speaks the parts of Open WebUI's HTTP API that tell how
// many people use it right now. It knows Open WebUI, not Prometheus or KEDA.
package openwebui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// ActivityWindow is how long Open WebUI (0.6.41+) counts a user as active
// after their last request or heartbeat; hard-coded upstream.
const ActivityWindow = 180 * time.Second

// primeMargin is how much earlier than the activity window the exporter
// re-stamps its own account; it absorbs request latency and clock drift.
const primeMargin = 30 * time.Second

// maxBodyBytes caps what is read of any upstream answer.
const maxBodyBytes = 1 << 20

// Mode selects how active users are counted.
type Mode string

const (
	// ModeUsage reads GET /api/usage; any verified account works.
	ModeUsage Mode = "usage"
	// ModeAdmin pages GET /api/v1/users/ by last_active_at; needs an admin
	// account, excludes the exporter by id and also yields the user total.
	ModeAdmin Mode = "admin"
)

// Config configures a Client.
type Config struct {
	BaseURL *url.URL
	// Token returns the current credential: an API key (sk-...) or a JWT.
	// It is called for every fetch, so a rotated secret is picked up.
	Token func() (string, error)
	Mode  Mode
	// StatusUpdateInterval mirrors Open WebUI's
	// DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL (0 when unset there or
	// not told; admin mode also sees it: see throttle.go). Usage mode
	// refuses any value above 0: see CheckStatusUpdateInterval.
	StatusUpdateInterval time.Duration
	HTTPClient           *http.Client     // nil: a client without redirects
	Now                  func() time.Time // nil: time.Now
	UserAgent            string
	Logger               log.Logger // nil: no logging
	// IdlePolicy, when set (admin mode only), also counts who is engaged:
	// see activity.go and --activity.idle-timeout.
	IdlePolicy *IdlePolicy
	// MaxClockSkew, when not 0, replaces the clock tolerance (maxClockSkew,
	// or the idle policy's): only for simulations whose Open WebUI runs on
	// a compressed clock.
	MaxClockSkew time.Duration
}

// Count is one answer to "how many people use Open WebUI right now".
type Count struct {
	ActiveUsers int    // active users other than the token's own account
	TotalUsers  int    // registered users; -1 unless counted in admin mode
	Version     string // Open WebUI version, "" if unknown
	// IdlePolicy is true when the idle-tab policy is on; EngagedUsers is
	// then the count of active users who arrived or wrote within its timeout.
	IdlePolicy   bool
	EngagedUsers int
	// WriteInterval is the activity-write interval T the count assumed:
	// admin mode counts who was stamped within 180 s + T.
	WriteInterval time.Duration
	// SkippedRows counts, by reason, the rows of Open WebUI's answers that
	// were skipped as unreadable since the client started (a copy; nil if
	// none): one user's bad row must not fail everybody's count.
	SkippedRows map[string]uint64
}

// Scaling is the number KEDA scales Ollama by: the engaged users when the
// idle-tab policy is on, else Open WebUI's own active users.
func (n Count) Scaling() int {
	if n.IdlePolicy {
		return n.EngagedUsers
	}
	return n.ActiveUsers
}

// Client counts Open WebUI's active users, excluding its own account.
// Count calls are serialised; the caller (a cache) shares their results.
type Client struct {
	cfg  Config
	http *http.Client

	mu        sync.Mutex
	self      *Session  // learned from GET /api/v1/auths/; nil until known, after an auth error, or when due again
	version   string    // from GET /api/version, refreshed with self
	lastStamp time.Time // local time of the last accepted authenticated request
	token     string    // the token self was learned with
	announced string    // version and role last logged, to log changes only
	learnedAt time.Time // when self and version were learned

	// For the idle policy (activity.go): what countAdmin saw last.
	seenActive     map[string]struct{} // active users other than self
	seenAt         time.Time           // the server's clock when they were read
	analyticsOffAt time.Time           // when the analytics router was found missing
	wroteAt        map[string]int64    // active user -> newest write seen (epoch seconds, server clock)
	futureSeen     map[string]int64    // active user -> newest future write already counted as now
	skipped        map[string]uint64   // unreadable rows skipped, by reason (openwebui_skipped_rows_total)
	stampMu        sync.Mutex          // guards lastStamp while chat lists are read in parallel

	// For the write throttle (throttle.go), admin mode only.
	throttle  writeThrottle
	prevCount time.Time // Open WebUI's clock at the previous good admin count
	// usageThrottleWarned: usage mode logged that it saw the throttle;
	// usageHold is what it does then (throttle.go).
	usageThrottleWarned bool
	usageHold           usageHold

	// scrubbedToken is the token scrub was built for.
	scrubbedToken string
	clockWarned   bool     // the Date-header disagreement was logged
	scrub         scrubber // removes token from server-derived text; rebuilt with token
	// used maps every account the exporter has authenticated as to its last
	// accepted request: Open WebUI counts such an account as active for
	// ActivityWindow after it, so it is left out of the count that long,
	// also after the token was rotated to another account.
	used map[string]time.Time
}

// NewClient returns a Client. It makes no request until Count.
func NewClient(cfg Config) *Client {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = log.NewNopLogger()
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeUsage
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	// Never follow a redirect: it would carry the token to wherever the
	// Location points, and it almost always means a wrong base URL.
	copied := *hc
	copied.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{cfg: cfg, http: &copied, used: map[string]time.Time{},
		wroteAt: map[string]int64{}, futureSeen: map[string]int64{}, skipped: map[string]uint64{},
		throttle: writeThrottle{told: cfg.StatusUpdateInterval}}
}

// Count fetches the number of active users other than the exporter's own account.
//
// Everything that leaves it, the error text and the version label, has gone
// through the scrubber: no piece of the token, whatever the server echoes.
func (c *Client) Count(ctx context.Context) (Count, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	token, err := c.cfg.Token()
	if err != nil {
		return Count{}, fmt.Errorf("reading the Open WebUI token: %w", err)
	}
	if token != c.token || c.cfg.Now().Sub(c.learnedAt) >= relearnEvery {
		// A rotated token may belong to another account.
		c.self, c.token = nil, token
	}
	if token != c.scrubbedToken {
		c.scrub, c.scrubbedToken = newScrubber(token), token
	}
	var n Count
	if c.cfg.Mode == ModeAdmin {
		assumed := c.throttle.interval()
		n, err = c.countAdmin(ctx, token)
		if err == nil && c.throttle.interval() > assumed {
			// This count showed the throttle (or a longer one): count
			// again with the wider window, so nobody is missed now.
			n, err = c.countAdmin(ctx, token)
		}
		if err == nil && c.cfg.IdlePolicy != nil {
			n, err = c.engage(ctx, token, n, c.seenActive, c.seenAt)
		}
	} else if c.cfg.IdlePolicy != nil {
		err = errors.New("the idle-tab policy (--activity.idle-timeout) needs --openwebui.count-mode=admin")
	} else {
		n, err = c.countUsage(ctx, token)
	}
	c.rememberSelf()
	if err != nil {
		// Whatever failed, the version and own account are learned again
		// at the next fetch: a failure is often a restart, which may have
		// come with an upgrade (and a new write source), a new database or
		// another account.
		c.self = nil
		return Count{}, c.scrub.err(err)
	}
	n.Version = c.scrub.text(n.Version)
	if len(c.skipped) > 0 {
		n.SkippedRows = make(map[string]uint64, len(c.skipped))
		for reason, k := range c.skipped {
			n.SkippedRows[reason] = k
		}
	}
	return n, nil
}

// rememberSelf records when the own account last made an accepted request,
// and forgets accounts whose stamp has surely left Open WebUI's window.
func (c *Client) rememberSelf() {
	if c.self != nil && !c.lastStamp.IsZero() {
		c.used[c.self.ID] = c.lastStamp
	}
	// Under the write throttle an account's last stamp may be T older than
	// its last request, and admin mode counts T longer.
	for id, at := range c.used {
		if c.cfg.Now().Sub(at) > ActivityWindow+c.throttle.interval()+primeMargin {
			delete(c.used, id)
		}
	}
}

// isOwn reports whether id is an account the exporter authenticated as
// within the activity window: the current one, or one it rotated away from.
func (c *Client) isOwn(id string) bool {
	if c.self != nil && id == c.self.ID {
		return true
	}
	_, ok := c.used[id]
	return ok
}

// formerSelves lists the accounts other than the current one that the
// exporter used within the activity window.
func (c *Client) formerSelves() []string {
	var ids []string
	for id := range c.used {
		if c.self == nil || id != c.self.ID {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// relearnEvery bounds how long the version and own account are trusted, so
// an upgraded Open WebUI or a changed role is noticed without an error.
const relearnEvery = 10 * time.Minute

// countUsage reads /api/usage and removes the exporter's own account from it.
//
// 0.6.15-0.6.40 list socket users by id: drop our id. 0.6.41+ only give a
// number, which counts every account written within 180 s, so it counts the
// exporter too, or not, depending on the credential and the write throttle:
//   - an API key is stamped before the handler runs: counted, unless Open
//     WebUI's write throttle (DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL,
//     not told: usage mode refuses it when told) dropped the stamp and the
//     last one it wrote is over 180 s old;
//   - a JWT is stamped after the response (0.9.0+: racy): counted only if an
//     earlier request of ours landed within the window. The client re-stamps
//     itself (GET /api/v1/auths/) when its last request is getting old and
//     waits for Open WebUI to show the stamp.
//
// So the client asks Open WebUI (GET /api/v1/users/{id}/active) whether its
// own account is active right before and right after reading the count, and
// subtracts one only when both say yes. Before: no request of ours between
// that answer and the count can have made the account inactive, only
// time, and the answer after catches that (unless a write of the request
// after made it active again in that very second). After alone would not do:
// with several Open WebUI processes, its own stamp can land on a process
// whose throttle has expired and report active an account that the count
// did not include. Inactive before and active after: a write of ours landed
// in between, before or after the count, so the client counts once more
// (now active before). Not subtracting when in doubt is an overcount by
// one, never a false zero.
func (c *Client) countUsage(ctx context.Context, token string) (Count, error) {
	if err := CheckStatusUpdateInterval(c.cfg.Mode, c.cfg.StatusUpdateInterval); err != nil {
		return Count{}, err
	}
	n, doubt, err := c.countUsageOnce(ctx, token)
	if err == nil && doubt {
		n, _, err = c.countUsageOnce(ctx, token)
	}
	if err == nil {
		n.ActiveUsers, n.WriteInterval = c.usageHold.hold(c.cfg.Now(), n.ActiveUsers)
	}
	return n, err
}

// countUsageOnce is one count of countUsage; doubt reports that the own
// account became active around it, so that it may be in the count.
func (c *Client) countUsageOnce(ctx context.Context, token string) (n Count, doubt bool, err error) {
	isKey := strings.HasPrefix(token, "sk-")
	stale := c.cfg.Now().Sub(c.lastStamp) >= c.primeAfter()
	ownBefore := false
	if c.self == nil || (!isKey && stale) {
		if err := c.learnSelf(ctx, token); err != nil {
			return Count{}, false, err
		}
		if !isKey && stampsByTime(c.version) {
			active, err := c.confirmActive(ctx, token)
			if err != nil {
				// Our stamp is in doubt: check again next time, never
				// subtract on trust.
				c.lastStamp = time.Time{}
				return Count{}, false, err
			}
			if !active {
				c.lastStamp = time.Time{}
				c.warnUsageThrottle("a JWT stamp of its own did not show within 500ms")
			}
			c.usageHold.observe(c.cfg.Now(), active, !active)
			ownBefore = active
		}
	}
	if stampsByTime(c.version) && (isKey || !ownBefore) {
		// A JWT's requests within primeAfter stamped it, or it was primed.
		stamped := isKey || c.cfg.Now().Sub(c.lastStamp) < c.primeAfter()
		active, err := c.userActive(ctx, token, c.self.ID)
		if err != nil {
			return Count{}, false, err
		}
		dropped := stamped && !active
		if dropped {
			c.warnUsageThrottle("a request of its own had just stamped it, and it was not active")
		}
		c.usageHold.observe(c.cfg.Now(), active, dropped)
		ownBefore = active
	}
	body, err := c.get(ctx, "/api/usage", nil, token)
	if err != nil {
		return Count{}, false, c.explainHTML(err)
	}
	usage, err := ParseUsage(body)
	if err != nil {
		return Count{}, false, fmt.Errorf("GET /api/usage: %w", err)
	}
	n = Count{TotalUsers: -1, Version: c.version}
	if usage.HasUserCount {
		own := 0
		ownAfter, err := c.userActive(ctx, token, c.self.ID)
		if err != nil {
			return Count{}, false, err
		}
		switch {
		case ownBefore && ownAfter:
			own = 1
		case !ownBefore && ownAfter:
			doubt = true
		}
		// An account the exporter used before a token rotation is still
		// counted until its stamp leaves the window. The count has no ids:
		// ask Open WebUI whether that account is active right now, and
		// leave it out only then (never on trust: that could reach 0).
		for _, id := range c.formerSelves() {
			active, err := c.userActive(ctx, token, id)
			if err != nil {
				return Count{}, false, err
			}
			if active {
				own++
			}
		}
		n.ActiveUsers = max(usage.UserCount-own, 0)
		return n, doubt, nil
	}
	others := make(map[string]struct{}, len(usage.UserIDs))
	// 0.6.15-0.6.40 list socket sessions: the exporter's HTTP requests never
	// put an account there, so an account it rotated away from is listed
	// only if a person has it open. Its own id is dropped all the same.
	for _, id := range usage.UserIDs {
		if id != c.self.ID {
			others[id] = struct{}{}
		}
	}
	n.ActiveUsers = len(others)
	return n, false, nil
}

// warnUsageThrottle logs, once, that usage mode sees its own account
// inactive right after its own request: Open WebUI throttles the activity
// writes by more than 180 s, which usage mode cannot count right under.
func (c *Client) warnUsageThrottle(why string) {
	if c.usageThrottleWarned {
		return
	}
	c.usageThrottleWarned = true
	level.Warn(c.cfg.Logger).Log("msg", "Open WebUI did not mark the exporter's own account active after its own request: it throttles the activity writes (DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL, whose value usage mode cannot see). Usage mode then misses people for part of every interval; use --openwebui.count-mode=admin with an admin account's token", "why", why)
}

// countAdmin pages the admin user list, most recently active first, and
// counts the other accounts active within the window of the server's clock.
func (c *Client) countAdmin(ctx context.Context, token string) (Count, error) {
	if c.self == nil {
		if err := c.learnSelf(ctx, token); err != nil {
			return Count{}, err
		}
	}
	if c.self.Role != "admin" {
		return Count{}, fmt.Errorf("--openwebui.count-mode=admin needs an admin account's token, but the token belongs to a %q account; use an admin token or --openwebui.count-mode=usage", c.self.Role)
	}
	q := url.Values{"order_by": {"last_active_at"}, "direction": {"desc"}}
	fetchPage := func(page int) (UserPage, http.Header, error) {
		q.Set("page", fmt.Sprint(page))
		body, header, err := c.getWithHeader(ctx, "/api/v1/users/", q, token)
		if err != nil {
			return UserPage{}, nil, err
		}
		p, err := ParseUserPage(body)
		if err != nil {
			return UserPage{}, nil, fmt.Errorf("GET /api/v1/users/ page %d: %w", page, err)
		}
		return p, header, nil
	}
	interval := c.throttle.interval()
	own := ownSighting{tolerance: maxClockSkew}
	var (
		since    int64 // oldest last_active_at that still counts
		serverAt time.Time
		seen     = map[string]struct{}{}
		active   = map[string]struct{}{}
		total    int
		maxPage  = 1
		prevLast = int64(math.MaxInt64)
	)
	countActive := func(u UserActivity) {
		if u.ID == c.self.ID {
			own.found, own.stamp = true, max(own.stamp, u.LastActiveAt)
		}
		if u.LastActiveAt >= since && !c.isOwn(u.ID) {
			active[u.ID] = struct{}{}
		}
	}
	for page := 1; page <= maxPage; page++ {
		p, header, err := fetchPage(page)
		if err != nil {
			return Count{}, err
		}
		// Early stopping at the first inactive user is only right on a list
		// that is what it claims: check the whole page before believing any
		// entry of it.
		if err := validatePage(p, page, prevLast, len(seen)); err != nil {
			return Count{}, err
		}
		if n := len(p.Users); n > 0 {
			prevLast = p.Users[n-1].LastActiveAt
		}
		if page == 1 {
			now, err := c.serverNow(header, p, token)
			if err != nil {
				return Count{}, err
			}
			since = windowSince(now, interval)
			serverAt = now
			own.ref = c.prevCount // a JWT stamps after the answer
			if c.stampsSelfFirst(token) {
				own.ref = now
			}
			if header.Get("Date") != "" {
				// Both clocks are Open WebUI's: only whole seconds and
				// the request's own time part them.
				own.tolerance = ownStampTolerance
			}
			total = p.Total
			// Bounded paging: never more pages than the total allows (+1 for
			// users added meanwhile), whatever the server answers.
			maxPage = total/30 + 2
		}
		done := len(p.Users) == 0
		for _, u := range p.Users {
			if _, dup := seen[u.ID]; dup {
				continue // pushed down a page by a user who became active meanwhile
			}
			seen[u.ID] = struct{}{}
			if u.LastActiveAt < since {
				done = true // sorted by activity: nobody further down counts
				if u.ID == c.self.ID {
					own.found, own.stamp = true, max(own.stamp, u.LastActiveAt)
				}
				break
			}
			countActive(u)
		}
		if done || len(seen) >= total {
			if page > 1 {
				// Whoever became active while later pages were read moved to
				// the top of page 1, which was read before: read it again.
				p, _, err := fetchPage(1)
				if err != nil {
					return Count{}, err
				}
				if err := validatePage(p, 1, math.MaxInt64, 0); err != nil {
					return Count{}, err
				}
				for _, u := range p.Users {
					countActive(u)
				}
			}
			if !own.found && len(seen) >= total && c.stampsSelfFirst(token) {
				return Count{}, fmt.Errorf("GET /api/v1/users/: the exporter's own account is not in the list of all %d users; %s", total, listAdvice)
			}
			own.covered, own.at, own.prev = since, serverAt, c.prevCount
			if own.found && serverAt.Unix()-own.stamp > int64((MaxStatusUpdateInterval+c.clockTolerance())/time.Second) && c.stampsSelfFirst(token) {
				return Count{}, fmt.Errorf("GET /api/v1/users/: the exporter's own last_active_at, which this request should have set, is %s old, more than any write interval accepted (%s), so the list is stale; %s", time.Duration(serverAt.Unix()-own.stamp)*time.Second, MaxStatusUpdateInterval, cacheAdvice)
			}
			c.observe(own)
			c.prevCount = serverAt
			c.seenActive, c.seenAt = active, serverAt
			return Count{ActiveUsers: len(active), TotalUsers: total, Version: c.version, WriteInterval: interval}, nil
		}
	}
	return Count{}, fmt.Errorf("GET /api/v1/users/: still active users after %d pages of %d users in total; the list is not ordered by last_active_at", maxPage, total)
}

// listAdvice ends every error about a user list that cannot be trusted.
const listAdvice = "not counting from it (a proxy that drops the query string makes Open WebUI ignore order_by and page); fix the proxy, or use --openwebui.count-mode=usage"

// validatePage checks one page of the user list for what early stopping
// relies on: every entry has a last_active_at (PostgreSQL sorts NULLs first
// in a descending order), the entries are sorted newest first, also after
// the previous page (newestAllowed), and the page is not empty while the
// total says that users are still unread (read so far).
func validatePage(p UserPage, page int, newestAllowed int64, read int) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("GET /api/v1/users/ page %d: %s; %s", page, fmt.Sprintf(format, args...), listAdvice)
	}
	if len(p.Users) == 0 && read < p.Total {
		return fail("no users, although the total is %d and %d were read", p.Total, read)
	}
	if page == 1 && len(p.Users) > p.Total {
		return fail("%d users, but a total of %d", len(p.Users), p.Total)
	}
	prev := newestAllowed
	for i, u := range p.Users {
		if !u.Stamped {
			return fail("users[%d] has no last_active_at, so the list cannot be ordered by it", i)
		}
		if u.LastActiveAt > prev {
			return fail("not ordered by last_active_at, newest first (users[%d] is newer than the user before it)", i)
		}
		prev = u.LastActiveAt
	}
	return nil
}

// maxClockSkew is how far the clock of Open WebUI's answer (its Date header,
// and with an API key the exporter's own fresh stamp) may be from the
// exporter's own clock. Beyond it the answer is an error, whatever else
// agrees with it: a caching proxy keeps the origin's Date on a replayed
// answer (RFC 9111), so Date and stamp agree on a list that is an hour old.
// With the idle-tab policy the tolerance shrinks to a quarter of its
// timeout (see IdlePolicy.ClockTolerance).
const maxClockSkew = 30 * time.Second

// stampsSelfFirst reports whether the token's own account is stamped active
// before Open WebUI answers: an API key on 0.6.41+.
func (c *Client) stampsSelfFirst(token string) bool {
	return !isJWT(token) && stampsByTime(c.version)
}

// clockTolerance is how far an answer's clock may be from the local one.
func (c *Client) clockTolerance() time.Duration {
	if c.cfg.MaxClockSkew > 0 {
		return c.cfg.MaxClockSkew
	}
	if c.cfg.IdlePolicy != nil {
		return c.cfg.IdlePolicy.ClockTolerance()
	}
	return maxClockSkew
}

// cacheAdvice ends every error about an answer that is old or from another clock.
const cacheAdvice = "a caching proxy between the exporter and Open WebUI replays old answers (let it pass /api/ uncached: the exporter sends Cache-Control: no-cache), or the clocks disagree (check NTP on Open WebUI, the proxy and this host)"

// ownStampTolerance is how far the own stamp may lag the Date header of
// the answer to the request that stamped it: whole seconds on both, and
// the time the request took.
const ownStampTolerance = 2 * time.Second

// serverNow is "now" on Open WebUI's clock, which last_active_at is compared
// with: the Date header, else the own fresh stamp (API key on 0.6.41+), else
// the local clock. Every clock the answer carries must be within the
// tolerance of the local clock: an answer an hour old (a cache) or an hour
// ahead (a wrong clock) would count idle people, or nobody, with up 1.
//
// Under the write throttle the own stamp is not fresh: it may be up to T
// old, and more than a page of people stamped since may have pushed it off
// page 1 (countAdmin learns T from it instead). Only a stamp within the
// tolerance of the local clock stands in for a missing Date header.
func (c *Client) serverNow(header http.Header, page1 UserPage, token string) (time.Time, error) {
	local := c.cfg.Now()
	tolerance := c.clockTolerance()
	date, dateErr := http.ParseTime(header.Get("Date"))
	hasDate := dateErr == nil
	near := func(a, b time.Time, tolerance time.Duration) bool { return absDuration(a.Sub(b)) <= tolerance }
	if hasDate && !near(date, local, tolerance) {
		return time.Time{}, fmt.Errorf("GET /api/v1/users/: the Date header of Open WebUI's answer is %s off the local clock (tolerance %s), so the answer is not from now; %s", date.Sub(local).Round(time.Second), tolerance, cacheAdvice)
	}
	var stamp time.Time
	if c.stampsSelfFirst(token) {
		for _, u := range page1.Users {
			if u.ID == c.self.ID {
				stamp = time.Unix(u.LastActiveAt, 0)
			}
		}
		if !stamp.IsZero() && stamp.After(local.Add(tolerance)) {
			return time.Time{}, fmt.Errorf("GET /api/v1/users/: the exporter's own last_active_at, which this request set, is %s off the local clock (tolerance %s); %s", stamp.Sub(local).Round(time.Second), tolerance, cacheAdvice)
		}
	}
	now := local
	switch {
	case hasDate:
		now = date
	case !stamp.IsZero() && near(stamp, local, tolerance):
		now = stamp
	default:
		level.Debug(c.cfg.Logger).Log("msg", "no Date header from Open WebUI, using the local clock for the activity window")
	}
	// A third of the tolerance is a warning: the clocks drift apart, and
	// past the tolerance every fetch fails.
	if skew := now.Sub(local); absDuration(skew) > tolerance/3 {
		if !c.clockWarned {
			level.Warn(c.cfg.Logger).Log("msg", "Open WebUI's clock is drifting from the exporter's; past the tolerance every fetch fails", "skew", skew.Round(time.Second), "tolerance", tolerance)
			c.clockWarned = true
		}
	} else {
		c.clockWarned = false
	}
	return now, nil
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// learnSelf reads the Open WebUI version and the token's own account. The
// authenticated call also stamps the account active, which countUsage relies on.
func (c *Client) learnSelf(ctx context.Context, token string) error {
	body, err := c.get(ctx, "/api/version", nil, "")
	if err != nil {
		return err
	}
	version, err := ParseVersion(body)
	if err != nil {
		return fmt.Errorf("GET /api/version: %w (is --openwebui.url Open WebUI's base URL?)", err)
	}
	if !versionAtLeast(version, MinVersion) {
		return fmt.Errorf("Open WebUI %s is too old: the usage endpoint exists from %s on; upgrade Open WebUI", version, MinVersion)
	}
	body, err = c.get(ctx, "/api/v1/auths/", nil, token)
	if err != nil {
		return err
	}
	self, err := ParseSession(body)
	if err != nil {
		return fmt.Errorf("GET /api/v1/auths/: %w", err)
	}
	if self.Role == "pending" {
		return errors.New("the token's account is pending: an admin must activate it (Admin Panel > Users) before it can read usage")
	}
	if seen := version + "/" + self.Role; seen != c.announced {
		level.Info(c.cfg.Logger).Log("msg", "connected to Open WebUI", "version", c.scrub.text(version), "role", c.scrub.text(self.Role), "mode", c.cfg.Mode)
		c.announced = seen
	}
	c.self, c.version, c.learnedAt = &self, version, c.cfg.Now()
	return nil
}

// confirmActive waits until Open WebUI reports the exporter's own account as
// active, so that the next count surely includes it. A JWT stamp lands just
// after the response that caused it, so this takes one or two tries. Under
// Open WebUI's write throttle the stamp may never land: then it reports
// false, and the count is not subtracted from.
func (c *Client) confirmActive(ctx context.Context, token string) (bool, error) {
	const tries = 10
	for i := 0; ; i++ {
		active, err := c.userActive(ctx, token, c.self.ID)
		if err != nil || active || i == tries-1 {
			return active, err
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-t.C:
		}
	}
}

// userActive asks Open WebUI whether the account id is active now.
func (c *Client) userActive(ctx context.Context, token, id string) (bool, error) {
	body, _, err := c.do(ctx, "/api/v1/users/{id}/active", id, nil, token)
	if err != nil {
		return false, err
	}
	var a struct {
		Active *bool `json:"active"`
	}
	if err := decodeInto(body, &a); err != nil {
		return false, fmt.Errorf("GET /api/v1/users/{id}/active: %w", err)
	}
	if a.Active == nil {
		return false, errors.New(`GET /api/v1/users/{id}/active: no "active" in the response`)
	}
	return *a.Active, nil
}

// primeAfter is how old our last request may get before the own account has
// to be stamped again.
func (c *Client) primeAfter() time.Duration {
	return ActivityWindow - primeMargin
}

// CheckStatusUpdateInterval tells whether mode can count right when Open
// WebUI's DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL is interval (0 to
// MaxStatusUpdateInterval). Usage mode cannot above 0: /api/usage gives one
// number, of the users written within 180 s, and under the throttle a person
// who made a request within 180 s may have been written up to T before it;
// no rule on such numbers finds everybody without counting people twice
// (docs/how-it-works.md). Admin mode reads every last_active_at and widens
// the window by T.
func CheckStatusUpdateInterval(mode Mode, interval time.Duration) error {
	if interval < 0 || interval > MaxStatusUpdateInterval {
		return fmt.Errorf("must be between 0 and %s (Open WebUI's DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL), got %s", MaxStatusUpdateInterval, interval)
	}
	if mode == ModeUsage && interval > 0 {
		return fmt.Errorf("is %s, but --openwebui.count-mode=usage cannot count right under Open WebUI's activity-write throttle: /api/usage only counts who was written within 180s, and a person active a moment ago may have been written up to %s before; use --openwebui.count-mode=admin (with an admin account's token), which counts everybody written within 180s + %s", interval, interval, interval)
	}
	return nil
}

// explainHTML turns "HTML instead of JSON" on /api/usage into the version hint.
func (c *Client) explainHTML(err error) error {
	var h *htmlError
	if errors.As(err, &h) {
		return fmt.Errorf("%w: Open WebUI before %s answers /api/usage with its web page (found version %q); upgrade Open WebUI, or check --openwebui.url", err, MinVersion, c.version)
	}
	return err
}

// htmlError is a 200 answer that is not JSON: the SPA fallback of Open WebUI,
// or another web server behind the configured URL.
type htmlError struct {
	path, contentType string
}

func (e *htmlError) Error() string {
	return fmt.Sprintf("GET %s: HTTP 200 with Content-Type %q instead of JSON", e.path, e.contentType)
}

func (c *Client) get(ctx context.Context, route string, query url.Values, token string) ([]byte, error) {
	body, _, err := c.getWithHeader(ctx, route, query, token)
	return body, err
}

// getWithHeader performs one GET of route ("{id}" stands for the own
// account's id) and returns the body of a 200 JSON answer. Errors name the
// route, not the path: no user id in a log line or a 503 body. They never
// contain the token either, even if the server echoes it.
func (c *Client) getWithHeader(ctx context.Context, route string, query url.Values, token string) ([]byte, http.Header, error) {
	id := ""
	if c.self != nil {
		id = c.self.ID
	}
	return c.do(ctx, route, id, query, token)
}

// do performs one GET of route with "{id}" standing for the account id.
func (c *Client) do(ctx context.Context, route, id string, query url.Values, token string) ([]byte, http.Header, error) {
	path := strings.ReplaceAll(route, "{id}", url.PathEscape(id))
	u := *c.cfg.BaseURL
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawPath = ""
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", route, err)
	}
	req.Header.Set("Accept", "application/json")
	// Never an answer from a cache: a count that is minutes old looks
	// exactly like a live one (Pragma for HTTP/1.0 caches).
	req.Header.Set("Cache-Control", "no-cache")
	req.Header.Set("Pragma", "no-cache")
	if c.cfg.UserAgent != "" {
		req.Header.Set("User-Agent", c.cfg.UserAgent)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	sent := c.cfg.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", route, stableNetError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: reading the body: %w", route, stableNetError(err))
	}
	if len(body) > maxBodyBytes {
		return nil, nil, fmt.Errorf("GET %s: body larger than %d bytes", route, maxBodyBytes)
	}
	if age := strings.TrimSpace(resp.Header.Get("Age")); age != "" && age != "0" {
		return nil, nil, fmt.Errorf("GET %s: the answer has an Age header of %s s, so it came from a cache, not from Open WebUI now; %s", route, truncate(age, 20), cacheAdvice)
	}
	if resp.StatusCode != http.StatusOK {
		if loc := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode < 400 && loc != "" {
			return nil, nil, fmt.Errorf("GET %s: HTTP %d redirect to %s, not followed: set --openwebui.url to the address Open WebUI answers on", route, resp.StatusCode, redactURL(loc))
		}
		detail := ParseDetail(body)
		// The detail is scrubbed here already (and again with the whole
		// error on its way out), so that truncation cannot cut the token
		// into pieces before the scrubber sees it whole.
		return nil, nil, &APIError{Path: route, StatusCode: resp.StatusCode, Detail: truncate(c.scrub.text(detail), 300), Hint: hintFor(route, resp.StatusCode, detail, isJWT(token))}
	}
	if token != "" {
		c.stampMu.Lock()
		c.lastStamp = sent
		c.stampMu.Unlock()
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, _ := mime.ParseMediaType(ct); mt != "application/json" {
		return nil, nil, &htmlError{path: route, contentType: ct}
	}
	return body, resp.Header, nil
}

// stableNetError drops what changes from one attempt to the next, and what
// must not be shown: *url.Error's "Get \"<url>\":" prefix (the URL may carry
// credentials) and the local address of a *net.OpError (a new ephemeral port
// each time), so that a repeating failure reads the same and is logged once.
func stableNetError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Addr != nil {
		return fmt.Errorf("%s %s %s: %w", op.Op, op.Net, op.Addr, op.Err)
	}
	return err
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable Location)"
	}
	u.RawQuery = ""
	return u.Redacted()
}

// isJWT tells a session JWT from an API key the way Open WebUI does: by the
// "sk-" prefix.
func isJWT(token string) bool { return token != "" && !strings.HasPrefix(token, "sk-") }
