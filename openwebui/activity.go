package openwebui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/go-kit/log/level"
)

// MinIdleTimeout is the smallest --activity.idle-timeout. The clock
// tolerance is a quarter of the timeout, but never under
// minClockTolerance (the Date header has whole seconds, and a request takes
// time): at 5 s that floor is 40 % of the timeout, and any shorter timeout
// would be mostly tolerance.
const MinIdleTimeout = 5 * time.Second

// minClockTolerance is the floor of IdlePolicy.ClockTolerance.
const minClockTolerance = 2 * time.Second

// chatListConcurrency bounds the chat-list requests in flight at once: the
// cost of a fetch is about (idle active users / 8) request latencies.
const chatListConcurrency = 8

// analyticsSince is the first Open WebUI version whose chat completion route
// (main.py chat_completion) writes the user's message and an assistant
// placeholder row into chat_message (role "assistant", created_at = the
// server's int(time.time())) before it calls the model, so that GET
// /api/v1/analytics/users, which counts assistant rows, shows a message to a
// sleeping Ollama at once. Seen in v0.10.2, not in v0.9.5 (the backend
// took over persistence from the frontend in between). Before, from 0.8.0
// with the analytics router, the frontend saved an existing chat without
// chat_message rows, and the assistant row came with the answer, or after
// the request to Ollama failed, stamped with the browser's clock. Those
// versions, and any Open WebUI with ENABLE_ADMIN_ANALYTICS=false, use the
// chat list: its updated_at is written, by the server's clock, before the
// model is called on every version.
const analyticsSince = "0.10.0"

// analyticsBefore is the first version whose analytics is not known to count
// chat_message rows written at send time: read in 0.10.2's code and, per the
// project's notes, 0.11.0's; a review saw newer upstream code count a usage
// ledger instead, which may be written only once an answer completes. Newer
// (and unparsable) versions use the chat list, whose updated_at every
// version writes before it calls the model.
const analyticsBefore = "0.12.0"

// IdlePolicy decides who is engaged: active in Open WebUI's sense and either
// arrived (not active at the previous fetch, active now) or wrote a chat
// message, within the timeout. It only remembers who was active at the
// previous fetch and when they arrived; every time it is given is Open
// WebUI's clock (the Date header), never the exporter's, so a skewed host
// cannot shorten or lengthen anybody's grace. Not safe for concurrent use:
// the Client calls it under its own lock.
type IdlePolicy struct {
	timeout    time.Duration
	started    bool
	observedAt time.Time            // serverNow of the previous observation
	arrived    map[string]time.Time // active at the previous fetch -> when first seen active
}

// NewIdlePolicy returns a policy with the given timeout (>= MinIdleTimeout).
func NewIdlePolicy(timeout time.Duration) (*IdlePolicy, error) {
	if timeout < MinIdleTimeout {
		return nil, fmt.Errorf("the idle timeout must be at least %s (or 0 for off), got %s: below it the clock tolerance (a quarter of the timeout, at least %s) would be most of it", MinIdleTimeout, timeout, minClockTolerance)
	}
	return &IdlePolicy{timeout: timeout, arrived: map[string]time.Time{}}, nil
}

// Timeout is the configured idle timeout.
func (p *IdlePolicy) Timeout() time.Duration { return p.timeout }

// ClockTolerance is how far Open WebUI's clock may be from the exporter's
// while the policy is on: a quarter of the timeout, between
// minClockTolerance and 30 s. A skew s shortens or lengthens a write's
// grace by s, so a write counts for at least three quarters of the timeout.
func (p *IdlePolicy) ClockTolerance() time.Duration {
	return min(maxClockSkew, max(p.timeout/4, minClockTolerance))
}

// Observe records the users active at serverNow (the exporter's own account
// already excluded) and returns those who are engaged: arrived within the
// timeout, or wrote within it (wrote reports that, from Open WebUI's data).
// Everybody active counts as just arrived at the first observation (a
// restart of the exporter never drops Ollama under somebody's feet) and
// whenever the previous good observation is older than Open WebUI's
// activity window, whether fetches failed or none were made (KEDA or
// Prometheus down, a long polling interval): meanwhile anybody may have
// left and come back unseen.
func (p *IdlePolicy) Observe(serverNow time.Time, active []string, wrote func(id string) bool) []string {
	fresh := p.fresh(serverNow)
	next := make(map[string]time.Time, len(active))
	var engaged []string
	for _, id := range active {
		since, ok := p.arrived[id]
		if !ok || fresh {
			since = serverNow // not active at the previous fetch: arrives now
		}
		next[id] = since
		if serverNow.Sub(since) < p.timeout || wrote(id) {
			engaged = append(engaged, id)
		}
	}
	// Whoever is not active now leaves the map: coming back is an arrival.
	p.arrived, p.started, p.observedAt = next, true, serverNow
	sort.Strings(engaged)
	return engaged
}

// fresh reports whether an observation at serverNow starts over: none yet,
// or none within Open WebUI's activity window.
func (p *IdlePolicy) fresh(serverNow time.Time) bool {
	return !p.started || serverNow.Sub(p.observedAt) > ActivityWindow
}

// arrivedWithin reports whether id arrived within the timeout as of the latest
// Observe; used to skip asking Open WebUI about writes of those who count anyway.
func (p *IdlePolicy) arrivedWithin(id string, serverNow time.Time) bool {
	since, ok := p.arrived[id]
	return !ok || p.fresh(serverNow) || serverNow.Sub(since) < p.timeout
}

// engage applies the idle policy to an admin count: it asks Open WebUI who
// wrote within the timeout (one analytics request, or one chat-list request
// per active user who has not just arrived) and fills n.EngagedUsers.
// active and serverNow are what countAdmin just read.
func (c *Client) engage(ctx context.Context, token string, n Count, active map[string]struct{}, serverNow time.Time) (Count, error) {
	p := c.cfg.IdlePolicy
	ids := make([]string, 0, len(active))
	for id := range active {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	// Only those past their arrival grace need their writes checked, and of
	// them not those whose remembered write still counts: they are engaged
	// until it is a timeout old whatever they do meanwhile.
	since := c.writeSince(serverNow)
	c.forgetWritesExcept(active)
	var ask []string
	for _, id := range ids {
		if !p.arrivedWithin(id, serverNow) && c.wroteAt[id] < since {
			ask = append(ask, id)
		}
	}
	writers := map[string]bool{}
	if len(ask) > 0 {
		var err error
		writers, err = c.writers(ctx, token, ask, n.TotalUsers, serverNow)
		if err != nil {
			// Unknown stays unknown: the policy does not advance either, so
			// the next good fetch compares with the last good one.
			return Count{}, err
		}
	}
	engaged := p.Observe(serverNow, ids, func(id string) bool { return writers[id] || c.wroteAt[id] >= since })
	n.IdlePolicy, n.EngagedUsers = true, len(engaged)
	return n, nil
}

// writeSince is the oldest write that still counts at serverNow: written at
// T counts while now-T < timeout, like an arrival (both ends in whole
// seconds, Open WebUI's unit).
func (c *Client) writeSince(serverNow time.Time) int64 {
	return serverNow.Add(-c.cfg.IdlePolicy.timeout).Unix() + 1
}

// forgetWritesExcept drops what is remembered of users who are not active:
// coming back is an arrival, which counts anyway.
func (c *Client) forgetWritesExcept(active map[string]struct{}) {
	for id := range c.wroteAt {
		if _, ok := active[id]; !ok {
			delete(c.wroteAt, id)
		}
	}
	for id := range c.futureSeen {
		if _, ok := active[id]; !ok {
			delete(c.futureSeen, id)
		}
	}
}

// writers returns which of ids wrote a chat message within the idle timeout
// before serverNow. The write source is chosen from the version read just
// now, never a remembered one: an upgrade across 0.12.0 changes it.
func (c *Client) writers(ctx context.Context, token string, ids []string, totalUsers int, serverNow time.Time) (map[string]bool, error) {
	if err := c.refreshVersion(ctx); err != nil {
		return nil, err
	}
	since := c.writeSince(serverNow)
	// Writes stamped later than this are in the future: the browser's
	// clock (a chat import's updated_at, a message's timestamp).
	until := serverNow.Add(c.clockTolerance()).Unix()
	if versionAtLeast(c.version, analyticsSince) && !versionAtLeast(c.version, analyticsBefore) && !c.noAnalytics(serverNow) {
		w, err := c.analyticsWriters(ctx, token, since, until, totalUsers)
		var h *htmlError
		if !errors.As(err, &h) {
			return w, err
		}
		// ENABLE_ADMIN_ANALYTICS=false: the router is not mounted and the
		// SPA answers. Remember it for a while; the chat list works too.
		c.analyticsOffAt = serverNow
	}
	lists, err := c.chatLists(ctx, token, ids)
	if err != nil {
		return nil, err
	}
	w := map[string]bool{}
	for i, id := range ids {
		c.skipRows("/api/v1/chats/list/user/{id}", lists[i].Skipped)
		var real, future int64
		for _, t := range lists[i].UpdatedAt {
			if t > until {
				future = max(future, t)
			} else {
				real = max(real, t)
			}
		}
		// A write in the future counts as one write now, once: a chat
		// imported with updated_at ten years ahead must not keep its
		// owner engaged for ten years.
		if future > c.futureSeen[id] {
			c.futureSeen[id] = future
			real = serverNow.Unix()
		}
		c.wroteAt[id] = max(c.wroteAt[id], real)
		if real >= since {
			w[id] = true
		}
	}
	return w, nil
}

// chatLists reads the chat list of every id, at most chatListConcurrency at
// a time; the first error cancels the rest.
func (c *Client) chatLists(parent context.Context, token string, ids []string) ([]ChatList, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	lists := make([]ChatList, len(ids))
	errs := make([]error, len(ids))
	sem := make(chan struct{}, chatListConcurrency)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		if ctx.Err() != nil {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			lists[i], errs[i] = c.chatList(ctx, token, id)
			if errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	// An error of a request, not the cancellation it caused in the others.
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return nil, err
		}
	}
	if err := parent.Err(); err != nil {
		return nil, fmt.Errorf("reading chat lists: %w", err)
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return lists, nil
}

// refreshVersion reads GET /api/version (no credential, cheap). A changed
// version means a restarted Open WebUI: the own account is learned again
// at the next fetch.
func (c *Client) refreshVersion(ctx context.Context) error {
	body, err := c.get(ctx, "/api/version", nil, "")
	if err != nil {
		return err
	}
	version, err := ParseVersion(body)
	if err != nil {
		return fmt.Errorf("GET /api/version: %w (is --openwebui.url Open WebUI's base URL?)", err)
	}
	if version != c.version {
		level.Info(c.cfg.Logger).Log("msg", "Open WebUI's version changed", "from", c.scrub.text(c.version), "to", c.scrub.text(version))
		c.version, c.learnedAt = version, time.Time{}
	}
	return nil
}

// skipRows counts rows of one user that were skipped as unreadable, and
// logs each reason once: one user's bad row must not fail everybody's count.
func (c *Client) skipRows(route string, skipped map[string]int) {
	for reason, n := range skipped {
		if c.skipped[reason] == 0 {
			level.Warn(c.cfg.Logger).Log("msg", "skipping rows of Open WebUI's answer that cannot be read (counted in openwebui_skipped_rows_total; logged once per reason)", "route", route, "reason", reason)
		}
		c.skipped[reason] += uint64(n)
	}
}

// noAnalytics reports whether the analytics router was found missing
// recently; checked again after relearnEvery, in case it was turned on.
func (c *Client) noAnalytics(serverNow time.Time) bool {
	return !c.analyticsOffAt.IsZero() && serverNow.Sub(c.analyticsOffAt) < relearnEvery
}

// analyticsWriters reads GET /api/v1/analytics/users: per user, the
// assistant rows of chat_message created since `since` (epoch seconds, the
// unit of chat_message.created_at). No end_date, so that a row stamped a
// little ahead of the Date header still counts. limit is the user total, so
// that no writer is cut off the list (it is sorted by count and cut at limit).
func (c *Client) analyticsWriters(ctx context.Context, token string, since, until int64, totalUsers int) (map[string]bool, error) {
	const route = "/api/v1/analytics/users"
	q := url.Values{"start_date": {strconv.FormatInt(since, 10)}, "end_date": {strconv.FormatInt(until, 10)}, "limit": {strconv.Itoa(max(totalUsers, 1))}}
	body, _, err := c.getWithHeader(ctx, route, q, token)
	if err != nil {
		var api *APIError
		if errors.As(err, &api) && (api.StatusCode == http.StatusUnauthorized || api.StatusCode == http.StatusForbidden) {
			return nil, fmt.Errorf("%w (--activity.idle-timeout reads who wrote from Open WebUI's admin analytics)", err)
		}
		return nil, err
	}
	entries, skipped, err := ParseAnalyticsUsers(body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", route, err)
	}
	c.skipRows(route, skipped)
	w := make(map[string]bool, len(entries))
	for _, e := range entries {
		if e.Count > 0 {
			w[e.UserID] = true
		}
	}
	return w, nil
}

// chatList reads the newest page of the user's chats, GET
// /api/v1/chats/list/user/{id} by updated_at desc (epoch seconds, the
// server's clock, or the browser's for an imported chat). Sending a message
// updates the chat before the model is called.
func (c *Client) chatList(ctx context.Context, token, userID string) (ChatList, error) {
	const route = "/api/v1/chats/list/user/{id}"
	q := url.Values{"page": {"1"}, "order_by": {"updated_at"}, "direction": {"desc"}}
	body, _, err := c.do(ctx, route, userID, q, token)
	if err != nil {
		var api *APIError
		if errors.As(err, &api) && api.StatusCode == http.StatusUnauthorized {
			return ChatList{}, fmt.Errorf("%w: --activity.idle-timeout needs ENABLE_ADMIN_CHAT_ACCESS=true in Open WebUI (or, on 0.10 and 0.11, ENABLE_ADMIN_ANALYTICS=true) to see who wrote", err)
		}
		return ChatList{}, err
	}
	list, err := ParseChatList(body)
	if err != nil {
		return ChatList{}, fmt.Errorf("GET %s: %w", route, err)
	}
	return list, nil
}
