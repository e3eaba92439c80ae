// Package fakeopenwebui is an in-memory stand-in for the parts of Open WebUI
// the exporter talks to (see docs/openwebui-api.md). It models the
// version-dependent response shapes, the auth error matrix, the caller's own
// last_active_at stamp, the activity-write throttle of one or several Open
// WebUI processes sharing a database, and the SPA HTML fallback. It is used by tests and by
// cmd/fakeopenwebui.
package fakeopenwebui

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Error texts of real Open WebUI.
const (
	msgNotAuthenticated = "Not authenticated"
	msgUnauthorized     = "401 Unauthorized"
	msgInvalidToken     = "Invalid token"
	msgSessionExpired   = "Your session has expired or the token is invalid. Please sign in again."
	msgAPIKeyDisabled   = "Use of API key is not enabled in the environment."
	msgAPIKeyEndpoint   = "API key not allowed to access this endpoint."
	msgAccessProhibited = "You do not have permission to access this resource. Please contact your administrator for assistance."
	msgUsageGate        = "Access denied. Only administrators can view usage statistics."
	msgNotFound         = "We could not find what you're looking for :/"
)

// ActiveWindow is Open WebUI's hard-coded "active" window (0.6.41+).
const ActiveWindow = 180 * time.Second

// spaHTML is what the SPA fallback serves for unknown paths.
const spaHTML = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Open WebUI</title></head><body><div id="app">Open WebUI</div></body></html>`

// Config selects the modelled Open WebUI version and environment.
type Config struct {
	Version string // e.g. "0.11.0", "0.6.30", "0.6.10"; default "0.11.0"
	// DisableAPIKeys is ENABLE_API_KEYS=false (0.6.37+) / ENABLE_API_KEY=false (<=0.6.36).
	DisableAPIKeys bool
	// PublicActiveUsersCountDisabled is ENABLE_PUBLIC_ACTIVE_USERS_COUNT=false (0.6.42+ only).
	PublicActiveUsersCountDisabled bool
	// APIKeyAllowedEndpoints, when non-nil, turns on API key endpoint
	// restrictions (prefix match on the path, like API_KEYS_ALLOWED_ENDPOINTS).
	APIKeyAllowedEndpoints []string
	// JWTStampBeforeHandler models the 0.9.0+ race where the fire-and-forget
	// stamp lands before the handler counts. Default false = after.
	JWTStampBeforeHandler bool
	// StatusUpdateInterval is DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL
	// (0 = every request writes). Like utils/misc.py throttle around
	// Users.update_last_active_by_id it is per process and per user, and
	// acts on the leading edge: the first call writes, and every call within
	// the interval of that process's last write for the user is dropped,
	// not deferred. Requests and tab heartbeats alike.
	StatusUpdateInterval time.Duration
	// Processes is the number of Open WebUI processes (replicas or uvicorn
	// workers) sharing the one database; 0 means 1. ServeHTTP hands the
	// requests round robin to them, as a Service does; Process(i) serves
	// through process i only. A tab's socket (its heartbeats) stays on the
	// process it opened on.
	Processes int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// TabHeartbeats makes every open tab send its socket heartbeat every
	// 30 s of the clock, as Open WebUI's frontend does (src/routes/+layout.svelte):
	// last_active_at follows the clock for as long as the tab is open.
	// Off, only Touch and Heartbeat stamp a tab's user.
	TabHeartbeats bool
	// DefaultModels is DEFAULT_MODELS (comma-separated; "" unset): see config.go.
	DefaultModels string
	// DisableAdminAnalytics is ENABLE_ADMIN_ANALYTICS=false: the analytics
	// router is not mounted, so its paths get the SPA.
	DisableAdminAnalytics bool
	// DisableAdminChatAccess is ENABLE_ADMIN_CHAT_ACCESS=false: the admin chat
	// list of another user answers 401.
	DisableAdminChatAccess bool
}

type user struct {
	id, name, email, role string
	created, lastActive   int64 // epoch seconds, like the DB columns
}

// Server is the fake. It implements http.Handler; all methods are goroutine-safe.
type Server struct {
	cfg Config
	ver [3]int

	mu         sync.Mutex
	seq        int
	users      []*user // insertion order
	byID       map[string]*user
	keys       map[string]string // API key -> user id
	jwts       map[string]string // JWT -> user id
	revoked    map[string]bool
	service    map[string]bool      // users holding a credential (not humans)
	tabs       map[string]bool      // users with an open browser tab (USER_POOL on <=0.6.40)
	tabSince   map[string]time.Time // when the open tab's heartbeats started (TabHeartbeats)
	chats      []*chat              // the chat table
	messages   []chatMessage        // the chat_message table (0.8.0+)
	ollamaDown bool
	procs      []process            // the throttle state of each Open WebUI process
	nextProc   int                  // round robin over procs
	tabProc    map[string]int       // the process an open tab's socket is on
	tabBeat    map[string]time.Time // the last heartbeat of an open tab applied (TabHeartbeats)
	requests   map[string]int
	override   http.HandlerFunc
	fault      string
	faultDelay time.Duration
}

// New returns a fake with no users.
func New(cfg Config) *Server {
	if cfg.Version == "" {
		cfg.Version = "0.11.0"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	procs := make([]process, max(cfg.Processes, 1))
	for i := range procs {
		procs[i] = process{lastWrite: map[string]time.Time{}}
	}
	return &Server{
		cfg: cfg, ver: parseVersion(cfg.Version),
		byID: map[string]*user{}, keys: map[string]string{}, jwts: map[string]string{},
		revoked: map[string]bool{}, service: map[string]bool{}, tabs: map[string]bool{}, tabSince: map[string]time.Time{},
		procs: procs, tabProc: map[string]int{}, tabBeat: map[string]time.Time{}, requests: map[string]int{},
	}
}

// process is one Open WebUI process: its throttle's memory of the last
// write per user (utils/misc.py throttle keeps it in the decorator, so it
// is neither shared between processes nor kept across a restart).
type process struct {
	lastWrite map[string]time.Time
}

// pickProcess returns the next process, round robin (s.mu held).
func (s *Server) pickProcess() int {
	i := s.nextProc % len(s.procs)
	s.nextProc++
	return i
}

// Process returns a handler that serves every request through Open WebUI
// process i (0 <= i < Processes) of the shared database, as a client
// pinned to one replica sees it.
func (s *Server) Process(i int) http.Handler {
	if i < 0 || i >= len(s.procs) {
		panic(fmt.Sprintf("fakeopenwebui: process %d of %d", i, len(s.procs)))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serve(w, r, i) })
}

// write is Users.update_last_active_by_id(userID) called at `at` in process
// proc, behind the throttle (see Config.StatusUpdateInterval). It reports
// whether the write happened. Called with s.mu held.
func (s *Server) write(userID string, proc int, at time.Time) bool {
	u := s.byID[userID]
	if u == nil || !s.at("0.6.41") {
		return false
	}
	last := s.procs[proc].lastWrite
	if prev, ok := last[userID]; ok && at.Sub(prev) < s.cfg.StatusUpdateInterval {
		return false
	}
	last[userID] = at
	u.lastActive = max(u.lastActive, at.Unix())
	return true
}

func parseVersion(v string) [3]int {
	var out [3]int
	for i, p := range strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3) {
		n, _ := strconv.Atoi(strings.TrimLeftFunc(p, func(r rune) bool { return r < '0' || r > '9' }))
		out[i] = n
	}
	return out
}

// versionAtLeast compares "major.minor.patch" numerically.
func versionAtLeast(v, oldest string) bool {
	a, b := parseVersion(v), parseVersion(oldest)
	for i := range a {
		if a[i] != b[i] {
			return a[i] > b[i]
		}
	}
	return true
}

func (s *Server) at(oldest string) bool { return versionAtLeast(s.cfg.Version, oldest) }

// AddUser creates a user (role "admin", "user" or "pending") who was last
// active a day ago, and returns its id.
func (s *Server) AddUser(name, role string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addUser(name, role).id
}

func (s *Server) addUser(name, role string) *user {
	s.seq++
	created := s.cfg.Now().Unix() - 86400 + int64(s.seq)
	u := &user{
		id:   fmt.Sprintf("%08x-f4ce-4000-8000-%012x", s.seq, s.seq),
		name: name, email: name + "@example.com", role: role,
		created: created, lastActive: created,
	}
	s.users = append(s.users, u)
	s.byID[u.id] = u
	return u
}

func (s *Server) userByName(name string) *user {
	for _, u := range s.users {
		if u.name == name {
			return u
		}
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// IssueAPIKey returns a new "sk-" + 32 hex key for the user.
func (s *Server) IssueAPIKey(userID string) string {
	key := "sk-" + randomHex(16)
	s.RegisterToken(userID, key)
	return key
}

// IssueJWT returns a new JWT-looking token for the user.
func (s *Server) IssueJWT(userID string) string {
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"id":"` + userID + `"}`))
	tok := "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + payload + "." + randomHex(16)
	s.RegisterToken(userID, tok)
	return tok
}

// RegisterToken makes token a credential of the user: an API key if it starts
// with "sk-", else a JWT. Credential holders are not "humans" for /_fake/humans.
func (s *Server) RegisterToken(userID, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.HasPrefix(token, "sk-") {
		s.keys[token] = userID
	} else {
		s.jwts[token] = userID
	}
	s.service[userID] = true
}

// DeleteUser removes the user and its API keys; its JWTs then get 401.
func (s *Server) DeleteUser(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, userID)
	s.closeTab(userID)
	for i, u := range s.users {
		if u.id == userID {
			s.users = append(s.users[:i], s.users[i+1:]...)
			break
		}
	}
	for k, id := range s.keys {
		if id == userID {
			delete(s.keys, k)
		}
	}
}

// RevokeJWT puts the token on the revocation list (401 "Invalid token").
func (s *Server) RevokeJWT(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked[token] = true
}

// Touch models a human opening a tab: on 0.6.41+ last_active_at = now; on
// <=0.6.40 the user joins USER_POOL. The tab stays open until Leave.
func (s *Server) Touch(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.touch(userID)
}

func (s *Server) touch(userID string) {
	u := s.byID[userID]
	if u == nil {
		return
	}
	s.beat()
	now := s.cfg.Now()
	if !s.tabs[userID] {
		s.tabSince[userID], s.tabBeat[userID] = now, now
		s.tabProc[userID] = s.pickProcess()
	}
	s.tabs[userID] = true
	s.write(userID, s.tabProc[userID], now)
}

// Leave closes the user's tab: on <=0.6.40 it leaves USER_POOL; on 0.6.41+
// last_active_at becomes now-10min.
func (s *Server) Leave(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leave(userID)
}

// Leaving 10 minutes in the past at once is not something Open WebUI does;
// the throttle forgets the user too, as it would have after 10 minutes of
// quiet with an interval under that.
func (s *Server) leave(userID string) {
	s.closeTab(userID)
	for _, p := range s.procs {
		delete(p.lastWrite, userID)
	}
	if u := s.byID[userID]; u != nil && s.at("0.6.41") {
		u.lastActive = s.cfg.Now().Add(-10 * time.Minute).Unix()
	}
}

func (s *Server) closeTab(userID string) {
	delete(s.tabs, userID)
	delete(s.tabSince, userID)
	delete(s.tabProc, userID)
	delete(s.tabBeat, userID)
}

// Heartbeat models the 30 s socket heartbeat of every open tab (see Touch).
func (s *Server) Heartbeat() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.tabs {
		s.touch(id)
	}
}

// HeartbeatEvery calls Heartbeat every interval until ctx ends, as the open
// tabs of a running Open WebUI do (every 30 s), for the fake as a process.
func (s *Server) HeartbeatEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Heartbeat()
		}
	}
}

// SetActiveHumans makes exactly k humans ("human-1".."human-k", created as
// needed) active with an open tab and closes the tab of every other human.
// Users holding a credential are not humans and are left alone.
func (s *Server) SetActiveHumans(k int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := map[string]bool{}
	for i := 1; i <= k; i++ {
		u := s.userByName(fmt.Sprintf("human-%d", i))
		if u == nil {
			u = s.addUser(fmt.Sprintf("human-%d", i), "user")
		}
		keep[u.id] = true
		s.touch(u.id)
	}
	cutoff := s.cfg.Now().Unix() - int64(ActiveWindow/time.Second)
	for _, u := range s.users {
		if !keep[u.id] && !s.service[u.id] && (s.tabs[u.id] || u.lastActive >= cutoff) {
			s.leave(u.id)
		}
	}
}

// SetLastActive sets the user's last_active_at (truncated to seconds).
func (s *Server) SetLastActive(userID string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.byID[userID]; u != nil {
		u.lastActive = t.Unix()
	}
}

// LastActive returns the user's last_active_at (zero for unknown users).
func (s *Server) LastActive(userID string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beat()
	if u := s.byID[userID]; u != nil {
		return time.Unix(u.lastActive, 0)
	}
	return time.Time{}
}

// Requests counts requests to this exact path (no query), /_fake/ excluded.
func (s *Server) Requests(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[path]
}

// SetOverride makes h answer every request (except /_fake/); nil restores normal behaviour.
func (s *Server) SetOverride(h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.override = h
}

// reply is a computed response.
type reply struct {
	status int
	body   any // JSON value, or nil for the SPA HTML
}

func jsonReply(status int, v any) reply     { return reply{status, v} }
func detail(status int, msg string) reply   { return reply{status, map[string]string{"detail": msg}} }
func spa() reply                            { return reply{http.StatusOK, nil} }
func (r reply) write(w http.ResponseWriter) { writeReply(w, r) }

func writeReply(w http.ResponseWriter, r reply) {
	if r.body == nil {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(r.status)
		_, _ = w.Write([]byte(spaHTML))
		return
	}
	b, err := json.Marshal(r.body)
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(r.status)
	_, _ = w.Write(b)
}

// ServeHTTP answers like Open WebUI, through its processes in turn.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.serve(w, r, -1)
}

// serve answers through process proc, or the next one when proc is -1.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, proc int) {
	path := r.URL.Path
	if strings.HasPrefix(path, "/_fake/") {
		s.control(w, r)
		return
	}
	s.mu.Lock()
	if proc < 0 {
		proc = s.pickProcess()
	}
	s.requests[path]++
	s.beat()
	override, fault, delay := s.override, s.fault, s.faultDelay
	s.mu.Unlock()
	// Uvicorn sends a Date header; the exporter's admin mode takes "now" from it.
	w.Header().Set("Date", s.cfg.Now().UTC().Format(http.TimeFormat))
	if override != nil {
		override(w, r)
		return
	}
	if fault == "slow" {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	isAPI := strings.HasPrefix(path, "/api/")
	switch {
	case r.Method != http.MethodGet:
		detail(http.StatusMethodNotAllowed, "Method Not Allowed").write(w)
	case fault == "html":
		spa().write(w)
	case fault == "500" && isAPI:
		detail(http.StatusInternalServerError, "Internal Server Error").write(w)
	case path == "/health":
		jsonReply(http.StatusOK, map[string]bool{"status": true}).write(w)
	case path == "/api/version":
		if s.at("0.6.37") {
			jsonReply(http.StatusOK, map[string]string{"version": s.cfg.Version, "deployment_id": ""}).write(w)
		} else {
			jsonReply(http.StatusOK, map[string]string{"version": s.cfg.Version}).write(w)
		}
	case path == "/api/v1/users" || path == "/api/v1/auths":
		loc := path + "/"
		if r.URL.RawQuery != "" {
			loc += "?" + r.URL.RawQuery
		}
		w.Header().Set("Location", loc)
		w.WriteHeader(http.StatusTemporaryRedirect)
	default:
		h := s.route(path)
		if h == nil {
			spa().write(w)
			return
		}
		if fault == "401" {
			detail(http.StatusUnauthorized, msgUnauthorized).write(w)
			return
		}
		s.serveAuthed(w, r, h, fault == "403-gate", proc)
	}
}

// call is what an authenticated handler sees.
type call struct {
	r        *http.Request
	u        *user
	token    string
	now      time.Time
	gateHard bool
}

type handler func(c call) reply

// route returns the handler of an authenticated route, or nil for the SPA fallback.
func (s *Server) route(path string) handler {
	switch path {
	case "/api/v1/auths/":
		return s.handleAuths
	case "/api/v1/users/":
		return s.handleUserList
	case "/api/usage":
		if s.at("0.6.15") {
			return s.handleUsage
		}
		return nil
	case "/api/v1/configs/models":
		return s.handleModelsConfig
	case "/api/config":
		return s.handleAppConfig
	case "/api/v1/users/active":
		if s.at("0.6.15") && !s.at("0.6.41") {
			return s.handleActiveList
		}
	case "/api/v1/analytics/users":
		if s.at("0.8.0") && !s.cfg.DisableAdminAnalytics {
			return s.handleAnalyticsUsers
		}
		return nil
	}
	if id, ok := strings.CutPrefix(path, "/api/v1/chats/list/user/"); ok && id != "" && !strings.Contains(id, "/") {
		return func(c call) reply { return s.handleUserChatList(c, id) }
	}
	rest, ok := strings.CutPrefix(path, "/api/v1/users/")
	if !ok || rest == "" {
		return nil
	}
	id, suffix, _ := strings.Cut(rest, "/")
	switch {
	case suffix == "" && id != "":
		return func(c call) reply { return s.handleUserByID(c, id) }
	case suffix == "active" && id != "" && s.at("0.6.15"):
		return func(c call) reply { return s.handleUserActive(c, id) }
	}
	return nil
}

// credential picks the credential like get_current_user.
func (s *Server) credential(r *http.Request) string {
	if scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "bearer") && tok != "" {
		return tok
	}
	if c, err := r.Cookie("token"); err == nil && c.Value != "" {
		return c.Value
	}
	if s.at("0.9.0") {
		return r.Header.Get("x-api-key")
	}
	return ""
}

// authenticate models get_current_user; called with s.mu held.
func (s *Server) authenticate(r *http.Request) (*user, string, *reply) {
	fail := func(status int, msg string) (*user, string, *reply) {
		rep := detail(status, msg)
		return nil, "", &rep
	}
	tok := s.credential(r)
	if tok == "" {
		return fail(http.StatusUnauthorized, msgNotAuthenticated)
	}
	if strings.HasPrefix(tok, "sk-") {
		if s.cfg.DisableAPIKeys {
			return fail(http.StatusForbidden, msgAPIKeyDisabled)
		}
		if s.cfg.APIKeyAllowedEndpoints != nil && !allowed(r.URL.Path, s.cfg.APIKeyAllowedEndpoints) {
			switch {
			case s.at("0.9.0"):
				return fail(http.StatusForbidden, msgAccessProhibited)
			case s.at("0.6.37"):
				return fail(http.StatusForbidden, msgAPIKeyEndpoint)
			default:
				return fail(http.StatusForbidden, msgAPIKeyDisabled)
			}
		}
		u := s.byID[s.keys[tok]]
		if u == nil {
			return fail(http.StatusUnauthorized, msgSessionExpired)
		}
		return u, tok, nil
	}
	id, ok := s.jwts[tok]
	switch {
	case s.revoked[tok]:
		return fail(http.StatusUnauthorized, msgInvalidToken)
	case !ok:
		return fail(http.StatusUnauthorized, msgUnauthorized)
	case s.byID[id] == nil:
		return fail(http.StatusUnauthorized, msgSessionExpired)
	}
	return s.byID[id], tok, nil
}

func allowed(path string, prefixes []string) bool {
	for _, p := range prefixes {
		if p = strings.TrimSpace(p); p != "" && strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// stamp writes the caller's last_active_at (0.6.41+) from process proc,
// behind the write throttle. Called with s.mu held.
func (s *Server) stamp(userID string, proc int) {
	s.beat()
	s.write(userID, proc, s.cfg.Now())
}

func (s *Server) serveAuthed(w http.ResponseWriter, r *http.Request, h handler, gateHard bool, proc int) {
	s.mu.Lock()
	u, tok, fail := s.authenticate(r)
	if fail != nil {
		s.mu.Unlock()
		fail.write(w)
		return
	}
	isKey := strings.HasPrefix(tok, "sk-")
	stampFirst := isKey || (s.at("0.9.0") && s.cfg.JWTStampBeforeHandler)
	if stampFirst {
		s.stamp(u.id, proc)
	}
	rep := h(call{r: r, u: u, token: tok, now: s.cfg.Now(), gateHard: gateHard})
	if !stampFirst {
		// After the handler, like Open WebUI's background task; but before
		// the answer leaves, so that the stamp never lands at a later
		// instant of a test's fake clock, nor after the client's next
		// request: the tests see one order, the one Open WebUI mostly has.
		s.stamp(u.id, proc)
	}
	s.mu.Unlock()
	rep.write(w)
}

func verified(u *user) bool { return u.role == "user" || u.role == "admin" }

func forbidden() reply { return detail(http.StatusUnauthorized, msgAccessProhibited) }

// isActive reports whether the user counts as active right now (s.mu held).
func (s *Server) isActive(u *user, now time.Time) bool {
	if !s.at("0.6.41") {
		return s.tabs[u.id]
	}
	return u.lastActive >= now.Unix()-int64(ActiveWindow/time.Second)
}

func (s *Server) poolIDs() []string {
	ids := []string{}
	for _, u := range s.users {
		if s.tabs[u.id] {
			ids = append(ids, u.id)
		}
	}
	return ids
}

func (s *Server) handleAuths(c call) reply {
	return jsonReply(http.StatusOK, map[string]any{
		"id": c.u.id, "email": c.u.email, "name": c.u.name, "role": c.u.role,
		"profile_image_url": profileURL(c.u), "token": c.token, "token_type": "Bearer",
		"expires_at": nil,
		"permissions": map[string]any{
			"chat":     map[string]bool{"file_upload": true, "delete": true, "edit": true},
			"features": map[string]bool{"api_keys": c.u.role == "admin", "web_search": true},
		},
	})
}

func profileURL(u *user) string { return "/api/v1/users/" + u.id + "/profile/image" }

func (s *Server) handleUsage(c call) reply {
	if !verified(c.u) {
		return forbidden()
	}
	if c.gateHard || (s.at("0.6.42") && s.cfg.PublicActiveUsersCountDisabled && c.u.role != "admin") {
		return detail(http.StatusForbidden, msgUsageGate)
	}
	if !s.at("0.6.41") {
		return jsonReply(http.StatusOK, map[string]any{"model_ids": []string{}, "user_ids": s.poolIDs()})
	}
	n := 0
	for _, u := range s.users {
		if s.isActive(u, c.now) {
			n++
		}
	}
	return jsonReply(http.StatusOK, map[string]any{"model_ids": []string{}, "user_count": n})
}

func (s *Server) handleActiveList(c call) reply {
	if !verified(c.u) {
		return forbidden()
	}
	return jsonReply(http.StatusOK, map[string]any{"user_ids": s.poolIDs()})
}

func (s *Server) handleUserActive(c call, id string) reply {
	if !verified(c.u) {
		return forbidden()
	}
	u := s.byID[id]
	return jsonReply(http.StatusOK, map[string]bool{"active": u != nil && s.isActive(u, c.now)})
}

// handleUserByID is GET /api/v1/users/{id} (also what /api/v1/users/active hits from 0.6.41).
func (s *Server) handleUserByID(c call, id string) reply {
	if !verified(c.u) || (s.at("0.9.0") && c.u.role != "admin") {
		return forbidden()
	}
	u := s.byID[id]
	if u == nil {
		return detail(http.StatusBadRequest, msgNotFound)
	}
	return jsonReply(http.StatusOK, map[string]any{"name": u.name, "profile_image_url": profileURL(u), "active": s.isActive(u, c.now)})
}

type userJSON struct {
	ID              string   `json:"id"`
	Email           string   `json:"email"`
	Role            string   `json:"role"`
	Name            string   `json:"name"`
	ProfileImageURL string   `json:"profile_image_url"`
	LastActiveAt    int64    `json:"last_active_at"`
	UpdatedAt       int64    `json:"updated_at"`
	CreatedAt       int64    `json:"created_at"`
	GroupIDs        []string `json:"group_ids"`
}

// userJSONv11 adds the (null) profile fields of 0.11.0.
type userJSONv11 struct {
	userJSON
	Username    *string `json:"username"`
	Bio         *string `json:"bio"`
	Gender      *string `json:"gender"`
	DateOfBirth *string `json:"date_of_birth"`
}

func (s *Server) handleUserList(c call) reply {
	if c.u.role != "admin" {
		return forbidden()
	}
	q := c.r.URL.Query()
	var list []*user
	needle := strings.ToLower(q.Get("query"))
	for _, u := range s.users {
		if needle == "" || strings.Contains(strings.ToLower(u.name), needle) || strings.Contains(strings.ToLower(u.email), needle) {
			list = append(list, u)
		}
	}
	key := func(u *user) string { return fmt.Sprintf("%020d", u.created) }
	switch q.Get("order_by") {
	case "last_active_at":
		key = func(u *user) string { return fmt.Sprintf("%020d", u.lastActive) }
	case "name":
		key = func(u *user) string { return strings.ToLower(u.name) }
	case "email":
		key = func(u *user) string { return u.email }
	case "role":
		key = func(u *user) string { return u.role }
	}
	asc := q.Get("direction") == "asc"
	sort.SliceStable(list, func(i, j int) bool {
		if asc {
			return key(list[i]) < key(list[j])
		}
		return key(list[i]) > key(list[j])
	})
	total := len(list)
	if !s.at("0.6.6") { // bare list with skip/limit
		skip, _ := strconv.Atoi(q.Get("skip"))
		limit, err := strconv.Atoi(q.Get("limit"))
		if err != nil {
			limit = 50
		}
		list = window(list, skip, limit)
	} else {
		page, _ := strconv.Atoi(q.Get("page"))
		page = max(page, 1)
		list = window(list, (page-1)*30, 30)
	}
	out := make([]any, 0, len(list))
	for _, u := range list {
		j := userJSON{u.id, u.email, u.role, u.name, profileURL(u), u.lastActive, u.created, u.created, []string{}}
		if s.at("0.11.0") {
			out = append(out, userJSONv11{userJSON: j})
		} else {
			out = append(out, j)
		}
	}
	if !s.at("0.6.6") {
		return jsonReply(http.StatusOK, out)
	}
	return jsonReply(http.StatusOK, map[string]any{"users": out, "total": total})
}

func window(list []*user, skip, limit int) []*user {
	skip = min(max(skip, 0), len(list))
	end := min(skip+max(limit, 0), len(list))
	return list[skip:end]
}

// control serves the /_fake/ process-control endpoints (no auth).
func (s *Server) control(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ok := func(v any) { jsonReply(http.StatusOK, v).write(w) }
	bad := func(msg string) { detail(http.StatusBadRequest, msg).write(w) }
	if r.URL.Path == "/_fake/stats" {
		s.mu.Lock()
		reqs := make(map[string]int, len(s.requests))
		for k, v := range s.requests {
			reqs[k] = v
		}
		s.mu.Unlock()
		ok(map[string]any{"requests": reqs})
		return
	}
	if r.Method != http.MethodPost {
		detail(http.StatusMethodNotAllowed, "Method Not Allowed").write(w)
		return
	}
	name := q.Get("name")
	switch r.URL.Path {
	case "/_fake/users":
		role := q.Get("role")
		if role == "" {
			role = "user"
		}
		if name == "" || (role != "admin" && role != "user" && role != "pending") {
			bad("need name and role admin|user|pending")
			return
		}
		s.mu.Lock()
		u := s.userByName(name)
		if u == nil {
			u = s.addUser(name, role)
		}
		u.role = role
		s.mu.Unlock()
		resp := map[string]string{"id": u.id}
		switch q.Get("token") {
		case "apikey":
			resp["token"] = s.IssueAPIKey(u.id)
		case "jwt":
			resp["token"] = s.IssueJWT(u.id)
		}
		ok(resp)
	case "/_fake/active", "/_fake/inactive":
		if name == "" {
			bad("need name")
			return
		}
		s.mu.Lock()
		u := s.userByName(name)
		if u == nil && r.URL.Path == "/_fake/active" {
			u = s.addUser(name, "user")
		}
		if u != nil && r.URL.Path == "/_fake/active" {
			s.touch(u.id)
		} else if u != nil {
			s.leave(u.id)
		}
		s.mu.Unlock()
		if u == nil {
			bad("unknown user " + name)
			return
		}
		ok(map[string]string{"id": u.id})
	case "/_fake/send":
		if name == "" {
			bad("need name")
			return
		}
		ok(map[string]string{"id": s.Send(name)})
	case "/_fake/humans":
		k, err := strconv.Atoi(q.Get("active"))
		if err != nil || k < 0 {
			bad("need active=K (K >= 0)")
			return
		}
		s.SetActiveHumans(k)
		ok(map[string]int{"active": k})
	case "/_fake/fault":
		kind := q.Get("kind")
		delay := 4 * time.Second
		if d := q.Get("delay"); d != "" {
			var err error
			if delay, err = time.ParseDuration(d); err != nil {
				secs, err2 := strconv.ParseFloat(d, 64)
				if err2 != nil {
					bad("bad delay " + d)
					return
				}
				delay = time.Duration(secs * float64(time.Second))
			}
		}
		switch kind {
		case "none", "500", "html", "slow", "401", "403-gate":
		default:
			bad("kind must be none|500|html|slow|401|403-gate")
			return
		}
		s.mu.Lock()
		s.fault, s.faultDelay = kind, delay
		s.mu.Unlock()
		ok(map[string]string{"fault": kind})
	default:
		detail(http.StatusNotFound, "Not Found").write(w)
	}
}
