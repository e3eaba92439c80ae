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
	// DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL (0 when unset there).
	StatusUpdateInterval time.Duration
	HTTPClient           *http.Client     // nil: a client without redirects
	Now                  func() time.Time // nil: time.Now
	UserAgent            string
	Logger               log.Logger // nil: no logging
}

// Count is one answer to "how many people use Open WebUI right now".
type Count struct {
	ActiveUsers int    // active users other than the token's own account
	TotalUsers  int    // registered users; -1 unless counted in admin mode
	Version     string // Open WebUI version, "" if unknown
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
	return &Client{cfg: cfg, http: &copied}
}

// Count fetches the number of active users other than the exporter's own account.
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
	var n Count
	if c.cfg.Mode == ModeAdmin {
		n, err = c.countAdmin(ctx, token)
	} else {
		n, err = c.countUsage(ctx, token)
	}
	if err != nil {
		if forgetsIdentity(err) {
			c.self = nil
		}
		return Count{}, err
	}
	return n, nil
}

// relearnEvery bounds how long the version and own account are trusted, so
// an upgraded Open WebUI or a changed role is noticed without an error.
const relearnEvery = 10 * time.Minute

// forgetsIdentity reports whether an error may mean that the token, its
// account or the Open WebUI behind the URL changed, so that the version and
// own account must be learned again. Outages (no answer, 5xx) do not: keeping
// what is known keeps the error, and its one log line, the same throughout.
func forgetsIdentity(err error) bool {
	var api *APIError
	var html *htmlError
	return (errors.As(err, &api) && (api.StatusCode == http.StatusUnauthorized || api.StatusCode == http.StatusForbidden)) || errors.As(err, &html)
}

// countUsage reads /api/usage and removes the exporter's own account from it.
//
// 0.6.15-0.6.40 list socket users by id: drop our id. 0.6.41+ only give a
// number, which counts every account whose last request was within 180 s, so
// it counts the exporter too, or not, depending on the credential:
//   - an API key is stamped before the handler runs: always counted;
//   - a JWT is stamped after the response (0.9.0+: racy): counted only if an
//     earlier request of ours landed within the window.
//
// To make "counted" certain for JWTs as well, the client re-stamps itself
// (GET /api/v1/auths/) when its last request is getting old and confirms the
// stamp (GET /api/v1/users/{id}/active) before reading the count; then it
// subtracts one.
func (c *Client) countUsage(ctx context.Context, token string) (Count, error) {
	isKey := strings.HasPrefix(token, "sk-")
	stale := c.cfg.Now().Sub(c.lastStamp) >= c.primeAfter()
	if c.self == nil || (!isKey && stale) {
		if err := c.learnSelf(ctx, token); err != nil {
			return Count{}, err
		}
		if !isKey && stampsByTime(c.version) {
			if err := c.confirmActive(ctx, token); err != nil {
				// Our stamp is in doubt: check again next time, never
				// subtract on trust.
				c.lastStamp = time.Time{}
				return Count{}, err
			}
		}
	}
	body, err := c.get(ctx, "/api/usage", nil, token)
	if err != nil {
		return Count{}, c.explainHTML(err)
	}
	usage, err := ParseUsage(body)
	if err != nil {
		return Count{}, fmt.Errorf("GET /api/usage: %w", err)
	}
	n := Count{TotalUsers: -1, Version: c.version}
	if usage.HasUserCount {
		// We are counted (see above), so one of them is us; a count of 0
		// can only mean that nobody at all is active.
		n.ActiveUsers = max(usage.UserCount-1, 0)
		return n, nil
	}
	others := make(map[string]struct{}, len(usage.UserIDs))
	for _, id := range usage.UserIDs {
		if id != c.self.ID {
			others[id] = struct{}{}
		}
	}
	n.ActiveUsers = len(others)
	return n, nil
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
	var (
		since    int64 // oldest last_active_at that still counts
		seen     = map[string]struct{}{}
		active   = map[string]struct{}{}
		total    int
		maxPage  = 1
		prevLast = int64(math.MaxInt64)
	)
	countActive := func(u UserActivity) {
		if u.LastActiveAt >= since && u.ID != c.self.ID {
			active[u.ID] = struct{}{}
		}
	}
	for page := 1; page <= maxPage; page++ {
		p, header, err := fetchPage(page)
		if err != nil {
			return Count{}, err
		}
		if page == 1 {
			// Open WebUI compares last_active_at with its own clock: use the
			// server's Date header, so skew between the hosts cannot matter.
			now := c.cfg.Now()
			if d, err := http.ParseTime(header.Get("Date")); err == nil {
				now = d
			} else {
				level.Debug(c.cfg.Logger).Log("msg", "no Date header from Open WebUI, using the local clock for the activity window")
			}
			since = now.Unix() - int64(ActivityWindow/time.Second)
			total = p.Total
			// Bounded paging: never more pages than the total allows (+1 for
			// users added meanwhile), whatever the server answers.
			maxPage = total/30 + 2
		}
		done := len(p.Users) == 0
		for _, u := range p.Users {
			if u.LastActiveAt > prevLast {
				// Early stopping below is only right on a sorted list.
				return Count{}, fmt.Errorf("GET /api/v1/users/: not ordered by last_active_at (this Open WebUI ignores order_by); use --openwebui.count-mode=usage")
			}
			prevLast = u.LastActiveAt
			if _, dup := seen[u.ID]; dup {
				continue // pushed down a page by a user who became active meanwhile
			}
			seen[u.ID] = struct{}{}
			if u.LastActiveAt < since {
				done = true // sorted by activity: nobody further down counts
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
				for _, u := range p.Users {
					countActive(u)
				}
			}
			return Count{ActiveUsers: len(active), TotalUsers: total, Version: c.version}, nil
		}
	}
	return Count{}, fmt.Errorf("GET /api/v1/users/: still active users after %d pages of %d users in total; the list is not ordered by last_active_at", maxPage, total)
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
		level.Info(c.cfg.Logger).Log("msg", "connected to Open WebUI", "version", version, "role", self.Role, "mode", c.cfg.Mode)
		c.announced = seen
	}
	c.self, c.version, c.learnedAt = &self, version, c.cfg.Now()
	return nil
}

// confirmActive waits until Open WebUI reports the exporter's own account as
// active, so that the next count surely includes it. A JWT stamp lands just
// after the response that caused it, so this takes one or two tries.
func (c *Client) confirmActive(ctx context.Context, token string) error {
	const tries = 10
	for i := 0; ; i++ {
		body, err := c.get(ctx, "/api/v1/users/{id}/active", nil, token)
		if err != nil {
			return err
		}
		var a struct {
			Active *bool `json:"active"`
		}
		if err := decodeInto(body, &a); err != nil {
			return fmt.Errorf("GET /api/v1/users/{id}/active: %w", err)
		}
		if a.Active == nil {
			return errors.New(`GET /api/v1/users/{id}/active: no "active" in the response`)
		}
		if *a.Active {
			return nil
		}
		if i == tries-1 {
			return fmt.Errorf("Open WebUI did not mark the exporter's own account active after %d tries, so it cannot be told apart from the people it counts; use an API key instead of a JWT", tries)
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// primeAfter is how old our last request may get before the own account has
// to be stamped again: with an update interval T, Open WebUI may skip a stamp
// that is less than T newer than the last one it wrote.
func (c *Client) primeAfter() time.Duration {
	return ActivityWindow - c.cfg.StatusUpdateInterval - primeMargin
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
	path := route
	if strings.Contains(route, "{id}") {
		path = strings.ReplaceAll(route, "{id}", url.PathEscape(c.self.ID))
	}
	u := *c.cfg.BaseURL
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawPath = ""
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", route, err)
	}
	req.Header.Set("Accept", "application/json")
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
	if resp.StatusCode != http.StatusOK {
		if loc := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode < 400 && loc != "" {
			return nil, nil, fmt.Errorf("GET %s: HTTP %d redirect to %s, not followed: set --openwebui.url to the address Open WebUI answers on", route, resp.StatusCode, redact(redactURL(loc), token))
		}
		detail := ParseDetail(body)
		return nil, nil, &APIError{Path: route, StatusCode: resp.StatusCode, Detail: truncate(redact(detail, token), 300), Hint: hintFor(route, resp.StatusCode, detail)}
	}
	if token != "" {
		c.lastStamp = sent
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

// redact removes the token from text that came from the server (an error
// detail, a Location header), in case the server echoes it back.
func redact(s, token string) string {
	if token == "" {
		return s
	}
	return strings.ReplaceAll(s, token, "<redacted>")
}
