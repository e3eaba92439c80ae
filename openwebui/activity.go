package openwebui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"
)

// MinIdleTimeout is the smallest --activity.idle-timeout: a second is the
// resolution of Open WebUI's timestamps (and keeps tests on a short clock).
const MinIdleTimeout = time.Second

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
	missed     bool                 // a fetch failed since the previous observation
	observedAt time.Time            // serverNow of the previous observation
	arrived    map[string]time.Time // active at the previous fetch -> when first seen active
}

// miss records a failed fetch (nil-safe: the policy may be off).
func (p *IdlePolicy) miss() {
	if p != nil {
		p.missed = true
	}
}

// NewIdlePolicy returns a policy with the given timeout (>= MinIdleTimeout).
func NewIdlePolicy(timeout time.Duration) (*IdlePolicy, error) {
	if timeout < MinIdleTimeout {
		return nil, fmt.Errorf("the idle timeout must be at least %s (or 0 for off), got %s", MinIdleTimeout, timeout)
	}
	return &IdlePolicy{timeout: timeout, arrived: map[string]time.Time{}}, nil
}

// Timeout is the configured idle timeout.
func (p *IdlePolicy) Timeout() time.Duration { return p.timeout }

// Observe records the users active at serverNow (the exporter's own account
// already excluded) and returns those who are engaged: arrived within the
// timeout, or wrote within it (wrote reports that, from Open WebUI's data).
// Everybody active at the first observation counts as just arrived, so a
// restart of the exporter never drops Ollama under somebody's feet; so does
// everybody after fetches failed for longer than Open WebUI's activity
// window: meanwhile anybody may have left and come back unseen.
func (p *IdlePolicy) Observe(serverNow time.Time, active []string, wrote func(id string) bool) []string {
	fresh := !p.started || (p.missed && serverNow.Sub(p.observedAt) > ActivityWindow)
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
	p.arrived, p.started, p.missed, p.observedAt = next, true, false, serverNow
	sort.Strings(engaged)
	return engaged
}

// arrivedWithin reports whether id arrived within the timeout as of the latest
// Observe; used to skip asking Open WebUI about writes of those who count anyway.
func (p *IdlePolicy) arrivedWithin(id string, serverNow time.Time) bool {
	since, ok := p.arrived[id]
	fresh := !p.started || (p.missed && serverNow.Sub(p.observedAt) > ActivityWindow)
	return !ok || fresh || serverNow.Sub(since) < p.timeout
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
	// Only those past their arrival grace need their writes checked.
	var ask []string
	for _, id := range ids {
		if !p.arrivedWithin(id, serverNow) {
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
	engaged := p.Observe(serverNow, ids, func(id string) bool { return writers[id] })
	n.IdlePolicy, n.EngagedUsers = true, len(engaged)
	return n, nil
}

// writers returns which of ids wrote a chat message within the idle timeout
// before serverNow.
func (c *Client) writers(ctx context.Context, token string, ids []string, totalUsers int, serverNow time.Time) (map[string]bool, error) {
	// Oldest write that still counts: written at T counts while now-T <
	// timeout, like an arrival (both ends in whole seconds, Open WebUI's unit).
	since := serverNow.Add(-c.cfg.IdlePolicy.timeout).Unix() + 1
	if versionAtLeast(c.version, analyticsSince) && !versionAtLeast(c.version, analyticsBefore) && !c.noAnalytics(serverNow) {
		w, err := c.analyticsWriters(ctx, token, since, totalUsers)
		var h *htmlError
		if !errors.As(err, &h) {
			return w, err
		}
		// ENABLE_ADMIN_ANALYTICS=false: the router is not mounted and the
		// SPA answers. Remember it for a while; the chat list works too.
		c.analyticsOffAt = serverNow
	}
	w := map[string]bool{}
	for _, id := range ids {
		last, err := c.lastChatUpdate(ctx, token, id)
		if err != nil {
			return nil, err
		}
		if last >= since {
			w[id] = true
		}
	}
	return w, nil
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
func (c *Client) analyticsWriters(ctx context.Context, token string, since int64, totalUsers int) (map[string]bool, error) {
	const route = "/api/v1/analytics/users"
	q := url.Values{"start_date": {strconv.FormatInt(since, 10)}, "limit": {strconv.Itoa(max(totalUsers, 1))}}
	body, _, err := c.getWithHeader(ctx, route, q, token)
	if err != nil {
		var api *APIError
		if errors.As(err, &api) && (api.StatusCode == http.StatusUnauthorized || api.StatusCode == http.StatusForbidden) {
			return nil, fmt.Errorf("%w (--activity.idle-timeout reads who wrote from Open WebUI's admin analytics)", err)
		}
		return nil, err
	}
	entries, err := ParseAnalyticsUsers(body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", route, err)
	}
	w := make(map[string]bool, len(entries))
	for _, e := range entries {
		if e.Count > 0 {
			w[e.UserID] = true
		}
	}
	return w, nil
}

// lastChatUpdate returns the newest updated_at (epoch seconds, server clock)
// of the user's chats, 0 if none: GET /api/v1/chats/list/user/{id},
// newest first. Sending a message updates the chat before the model is called.
func (c *Client) lastChatUpdate(ctx context.Context, token, userID string) (int64, error) {
	const route = "/api/v1/chats/list/user/{id}"
	q := url.Values{"page": {"1"}, "order_by": {"updated_at"}, "direction": {"desc"}}
	body, _, err := c.do(ctx, route, userID, q, token)
	if err != nil {
		var api *APIError
		if errors.As(err, &api) && api.StatusCode == http.StatusUnauthorized {
			return 0, fmt.Errorf("%w: --activity.idle-timeout needs ENABLE_ADMIN_CHAT_ACCESS=true in Open WebUI (or, on 0.10 and 0.11, ENABLE_ADMIN_ANALYTICS=true) to see who wrote", err)
		}
		return 0, err
	}
	last, err := ParseChatListNewest(body)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", route, err)
	}
	return last, nil
}
