package gate

import (
	"errors"
	"net/http"
	"strings"
)

// errDotSegment refuses a path with a "." or ".." segment: joined to a
// backend URL with a path (big=http://host/ollama), "/big/../../admin" would
// reach the backend as "/ollama/../../admin", above the path it was given.
// No Ollama or OpenAI client sends dot segments, so they are refused rather
// than resolved.
var errDotSegment = errors.New(`has a "." or ".." segment`)

// checkSegments refuses dot segments in an escaped path, written literally or
// percent-encoded (%2e), which a backend may decode and resolve.
func checkSegments(escaped string) error {
	for seg := range strings.SplitSeq(escaped, "/") {
		s := strings.ToLower(strings.ReplaceAll(strings.ToLower(seg), "%2e", "."))
		if s == "." || s == ".." {
			return errDotSegment
		}
	}
	return nil
}

// collapseLeadingSlashes takes "//api/tags" as "/api/tags": Open WebUI keeps
// a trailing slash of its Ollama URL and appends "/api/...".
func collapseLeadingSlashes(escaped string) string {
	for strings.HasPrefix(escaped, "//") {
		escaped = escaped[1:]
	}
	return escaped
}

// isPreflight tells a CORS preflight: an OPTIONS that asks which method a
// cross-origin request may use. It never does work on the backend, so it is
// never demand.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
}
