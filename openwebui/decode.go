package openwebui

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// The decoders below are strict on purpose: a field of the wrong type, a
// negative count or a missing key is an error, because a silently wrong
// number is worse than no number (0 tells KEDA to turn the GPUs off).

// Usage is a decoded GET /api/usage body.
type Usage struct {
	// HasUserCount is true for the 0.6.41+ shape {"user_count":N}.
	HasUserCount bool
	// UserCount is the number of users whose last_active_at is within the
	// activity window, the caller included once it has been stamped.
	UserCount int
	// UserIDs is the 0.6.15-0.6.40 shape: ids with an open socket.
	UserIDs []string
}

// ParseUsage decodes a GET /api/usage body. It prefers user_count (0.6.41+)
// and falls back to user_ids (0.6.15-0.6.40); a body with neither is an error.
func ParseUsage(body []byte) (Usage, error) {
	fields, err := decodeObject(body)
	if err != nil {
		return Usage{}, err
	}
	if raw, ok := fields["user_count"]; ok {
		n, err := decodeCount(raw)
		if err != nil {
			return Usage{}, fmt.Errorf("user_count: %w", err)
		}
		return Usage{HasUserCount: true, UserCount: n}, nil
	}
	if raw, ok := fields["user_ids"]; ok {
		ids, err := decodeIDs(raw)
		if err != nil {
			return Usage{}, fmt.Errorf("user_ids: %w", err)
		}
		return Usage{UserIDs: ids}, nil
	}
	return Usage{}, errors.New("neither user_count (Open WebUI 0.6.41+) nor user_ids (0.6.15-0.6.40) in the response")
}

// decodeIDs decodes an array of user ids. Every element must be a non-empty
// string: json.Unmarshal into []string would turn null into "", which then
// counts as one more user.
func decodeIDs(raw json.RawMessage) ([]string, error) {
	if isNull(raw) {
		return nil, errors.New("is null, want an array of strings")
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return nil, errors.New("want an array of strings")
	}
	ids := make([]string, 0, len(elems))
	for i, e := range elems {
		var id string
		if isNull(e) || json.Unmarshal(e, &id) != nil {
			return nil, fmt.Errorf("[%d] is not a string, want user ids", i)
		}
		if id == "" {
			return nil, fmt.Errorf("[%d] is empty, want a user id", i)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// Session is the part of GET /api/v1/auths/ the exporter needs: who owns the token.
type Session struct {
	ID   string
	Role string
}

// ParseSession decodes a GET /api/v1/auths/ body.
func ParseSession(body []byte) (Session, error) {
	var s struct {
		ID   *string `json:"id"`
		Role *string `json:"role"`
	}
	if err := decodeInto(body, &s); err != nil {
		return Session{}, err
	}
	if s.ID == nil || *s.ID == "" {
		return Session{}, errors.New("no id in the session")
	}
	if s.Role == nil || *s.Role == "" {
		return Session{}, errors.New("no role in the session")
	}
	return Session{ID: *s.ID, Role: *s.Role}, nil
}

// ParseVersion decodes a GET /api/version body.
func ParseVersion(body []byte) (string, error) {
	var v struct {
		Version *string `json:"version"`
	}
	if err := decodeInto(body, &v); err != nil {
		return "", err
	}
	if v.Version == nil || *v.Version == "" {
		return "", errors.New("no version in the response")
	}
	if !plainVersion(*v.Version) {
		return "", fmt.Errorf("version %q is not a version: want at most %d letters, digits and . + - _, starting with a letter or digit (e.g. 0.11.0)", truncateRunes(*v.Version, 40), maxVersionLen)
	}
	return *v.Version, nil
}

// maxVersionLen bounds the version, which becomes a label value.
const maxVersionLen = 64

// plainVersion reports whether v looks like a version: 0.11.0, v0.6.5,
// 0.12.0-rc.1+fork, a dev build's main_2026. It becomes the version label
// of openwebui_version_info, so nothing that could not be one passes.
func plainVersion(v string) bool {
	if len(v) > maxVersionLen || !isAlnum(v[0]) {
		return false
	}
	for i := range len(v) {
		if c := v[i]; !isAlnum(c) && c != '.' && c != '+' && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// truncateRunes is truncate on a UTF-8 character boundary.
func truncateRunes(s string, n int) string { return cutRunes(s, n, "…") }

// UserActivity is one entry of the admin user list: only what counting needs.
type UserActivity struct {
	ID           string
	LastActiveAt int64 // epoch seconds; 0 when Open WebUI has none
	// Stamped is false when last_active_at is null or missing: such an entry
	// says nothing about activity, and breaks an ordering by it.
	Stamped bool
}

// UserPage is a decoded GET /api/v1/users/ body (0.6.6+ shape).
type UserPage struct {
	Users []UserActivity
	Total int
}

// ParseUserPage decodes one page of GET /api/v1/users/.
func ParseUserPage(body []byte) (UserPage, error) {
	var p struct {
		Users *[]map[string]json.RawMessage `json:"users"`
		Total json.RawMessage               `json:"total"`
	}
	if err := decodeInto(body, &p); err != nil {
		return UserPage{}, err
	}
	if p.Users == nil {
		return UserPage{}, errors.New("no users array in the response (Open WebUI before 0.6.6 is not supported in admin mode)")
	}
	total, err := decodeCount(p.Total)
	if err != nil {
		return UserPage{}, fmt.Errorf("total: %w", err)
	}
	page := UserPage{Total: total, Users: make([]UserActivity, 0, len(*p.Users))}
	for i, u := range *p.Users {
		var id string
		if err := json.Unmarshal(u["id"], &id); err != nil || id == "" {
			return UserPage{}, fmt.Errorf("users[%d].id: want a non-empty string", i)
		}
		entry := UserActivity{ID: id}
		if raw, ok := u["last_active_at"]; ok && !isNull(raw) {
			n, err := decodeInt(raw)
			if err != nil {
				return UserPage{}, fmt.Errorf("users[%d].last_active_at: %w", i, err)
			}
			if n < 0 || n > 1e11 {
				// Open WebUI stores int(time.time()): seconds. Milliseconds
				// would count the user as active for centuries.
				return UserPage{}, fmt.Errorf("users[%d].last_active_at: %d is not a time in epoch seconds, as Open WebUI stores it (milliseconds?)", i, n)
			}
			entry.LastActiveAt, entry.Stamped = n, true
		}
		page.Users = append(page.Users, entry)
	}
	return page, nil
}

// ParseDetail returns the "detail" text of an Open WebUI error body, or "".
func ParseDetail(body []byte) string {
	var e struct {
		Detail any `json:"detail"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	switch d := e.Detail.(type) {
	case string:
		return d
	case nil:
		return ""
	default:
		// FastAPI validation errors carry a list; keep it short and
		// readable, and without HTML escaping: json.Marshal would write a
		// token's '<', '>' or '&' as \u003c..., which the scrubber could
		// then no longer recognise.
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if enc.Encode(d) != nil {
			return ""
		}
		return strings.TrimSuffix(buf.String(), "\n")
	}
}

func decodeObject(body []byte) (map[string]json.RawMessage, error) {
	var fields map[string]json.RawMessage
	if err := decodeInto(body, &fields); err != nil {
		return nil, err
	}
	if fields == nil {
		return nil, errors.New("body is null, want a JSON object")
	}
	return fields, nil
}

// decodeInto decodes exactly one JSON value, rejecting trailing data.
func decodeInto(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	// dec.More would miss a stray '}' or ']': require the end of input.
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("invalid JSON: trailing data after the value")
	}
	return nil
}

func decodeCount(raw json.RawMessage) (int, error) {
	n, err := decodeInt(raw)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, fmt.Errorf("is %d, want a count (>= 0)", n)
	}
	if n > 1<<31-1 {
		return 0, fmt.Errorf("is %d, implausibly large", n)
	}
	return int(n), nil
}

func decodeInt(raw json.RawMessage) (int64, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" {
		return 0, errors.New("missing, want an integer")
	}
	if s == "null" || s[0] == '"' || s[0] == '[' || s[0] == '{' || s == "true" || s == "false" {
		return 0, fmt.Errorf("is %s, want an integer", truncateRunes(s, 40))
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		// Python may serialise an integral float as 2.0; accept that, nothing fractional.
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f < -(1<<53) || f > 1<<53 || f != float64(int64(f)) {
			return 0, fmt.Errorf("is %s, want an integer", truncateRunes(s, 40))
		}
		n = int64(f)
	}
	return n, nil
}

func isNull(raw json.RawMessage) bool {
	return strings.TrimSpace(string(raw)) == "null"
}

// truncate cuts s to n bytes on a character boundary.
func truncate(s string, n int) string { return truncateRunes(s, n) }
