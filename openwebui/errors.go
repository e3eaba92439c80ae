package openwebui

import (
	"fmt"
	"strings"
)

// MinVersion is the oldest Open WebUI with an HTTP usage endpoint.
const MinVersion = "0.6.15"

// APIError is a non-200 answer from Open WebUI. Its message says what to fix:
// an operator reads it in a log line or in the 503 body KEDA records.
type APIError struct {
	Path       string // request path, never with credentials
	StatusCode int
	Detail     string // Open WebUI's {"detail": ...}, or "" for non-JSON bodies
	Hint       string // what to change, when the answer is a known one
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s: HTTP %d", e.Path, e.StatusCode)
	if e.Detail != "" {
		fmt.Fprintf(&b, " %q", e.Detail)
	}
	if e.Hint != "" {
		b.WriteString(": ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// Texts of Open WebUI's auth failures (utils/auth.py), unchanged from 0.6.15 to 0.11.0.
const (
	detailNotAuthenticated = "Not authenticated"
	detailBadJWT           = "401 Unauthorized"
	detailRevoked          = "Invalid token"
	detailExpired          = "Your session has expired or the token is invalid. Please sign in again."
	detailKeysDisabled     = "Use of API key is not enabled in the environment."
	detailKeyRestricted    = "API key not allowed to access this endpoint."
	detailNoPermission     = "You do not have permission to access this resource. Please contact your administrator for assistance."
	detailUsageGate        = "Access denied. Only administrators can view usage statistics."
)

// jwtIsAFallback ends every hint about a rejected JWT: Open WebUI newer than
// 0.11.0 also checks a session_stamp and, optionally, MFA on session JWTs,
// while API keys skip both checks.
const jwtIsAFallback = "; a JWT is only a fallback: use an API key (sk-...), the supported credential"

// hintFor maps an Open WebUI error answer to the change that fixes it.
// jwt says whether the rejected credential was a session JWT.
func hintFor(path string, status int, detail string, jwt bool) string {
	switch {
	case status == 401 && jwt && detail == detailRevoked:
		return "the JWT was rejected as no longer valid: it was revoked (signed out, or an OIDC back-channel logout), or, on Open WebUI newer than 0.11.0, its session_stamp no longer matches (the password was changed, or the account signed out elsewhere) or MFA was enabled and the JWT is not MFA-verified" + jwtIsAFallback
	case status == 401 && jwt && detail == detailBadJWT:
		return "the JWT is not accepted: it is malformed, signed with another WEBUI_SECRET_KEY, or expired (JWT_EXPIRES_IN, 4 weeks by default)" + jwtIsAFallback
	case status == 401 && jwt && detail == detailExpired:
		return "the JWT's account no longer exists (deleted)" + jwtIsAFallback
	case status == 401 && detail == detailNotAuthenticated:
		return "no credential reached Open WebUI; set TOKEN or --openwebui.token-file (a proxy in between may strip the Authorization header)"
	case status == 401 && detail == detailBadJWT:
		return "the token is not accepted: the JWT is malformed or expired (JWTs expire after JWT_EXPIRES_IN, 4 weeks by default); use an API key (sk-...) instead"
	case status == 401 && detail == detailRevoked:
		return "the JWT was revoked (signed out); use an API key (sk-...) instead"
	case status == 401 && detail == detailExpired:
		return "unknown API key, or its account was deleted; create a new key under Settings > Account > API keys"
	case status == 403 && detail == detailKeysDisabled:
		return "API keys are disabled or not permitted for this account: set ENABLE_API_KEYS=true (ENABLE_API_KEY before 0.6.37) or enable them in Admin Settings > General, and give a non-admin account the features.api_keys permission; with endpoint restrictions before 0.6.37, allow /api/usage,/api/v1/auths,/api/v1/users"
	case status == 403 && (detail == detailKeyRestricted || detail == detailNoPermission):
		return "API key endpoint restrictions forbid this path: set API_KEYS_ALLOWED_ENDPOINTS to include /api/usage,/api/v1/auths,/api/v1/users (usage mode asks /api/v1/users/{id}/active about its own account from 0.6.41, admin mode reads the user list)"
	case status == 403 && detail == detailUsageGate:
		return "ENABLE_PUBLIC_ACTIVE_USERS_COUNT=false hides the count from non-admins: use an admin account's token, or set ENABLE_PUBLIC_ACTIVE_USERS_COUNT=true"
	case status == 401 && detail == detailNoPermission && strings.HasPrefix(path, "/api/v1/users"):
		return "this needs an admin account's token (--openwebui.count-mode=admin), or a pending account must be activated"
	case status == 401 && detail == detailNoPermission:
		return "the token's account is pending: an admin must activate it (Admin Panel > Users) before it can read usage"
	case (status == 401 || status == 403) && jwt:
		return "the token is not accepted; check TOKEN or --openwebui.token-file" + jwtIsAFallback
	case status == 401 || status == 403:
		return "the token is not accepted; check TOKEN or --openwebui.token-file"
	case status == 404 || status == 405:
		return "is --openwebui.url Open WebUI's base URL (without /api)?"
	case status >= 500:
		return "Open WebUI (or a proxy in front of it) failed; see its logs"
	}
	return ""
}
