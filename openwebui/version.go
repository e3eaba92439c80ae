package openwebui

import (
	"strconv"
	"strings"
)

// versionAtLeast reports whether Open WebUI version v is oldest or newer. A
// version that does not parse (a fork, a dev build) counts as newest.
func versionAtLeast(v, oldest string) bool {
	a, ok := parseVersion(v)
	if !ok {
		return true
	}
	b, _ := parseVersion(oldest)
	for i := range a {
		if a[i] != b[i] {
			return a[i] > b[i]
		}
	}
	return true
}

// stampsByTime reports whether version v counts users by last_active_at
// (0.6.41+), which stamps the exporter's own account on every request.
func stampsByTime(v string) bool { return versionAtLeast(v, "0.6.41") }

func parseVersion(v string) ([3]int, bool) {
	var out [3]int
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-+ "); i >= 0 {
		v = v[:i]
	}
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return out, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return out, false
		}
		out[i] = n
	}
	return out, true
}
