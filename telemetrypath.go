package main

import (
	"fmt"
	"strings"
)

// checkTelemetryPath accepts a --web.telemetry-path that http.ServeMux takes
// as a plain path: ServeMux panics on a pattern with a space ("/a b" is read
// as a method and a path) or a brace (a wildcard), and would answer a path
// with "//", "/./" or "/../" with a redirect only.
func checkTelemetryPath(p string) error {
	switch p {
	case "/", "/active_users", "/healthz", "/readyz":
		return fmt.Errorf("must not be one of the exporter's other paths (/, /active_users, /healthz, /readyz), got %q", p)
	}
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("must start with /, got %q", p)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/-._~!$&'()*+,;=:@", c) >= 0
		if !ok {
			return fmt.Errorf("must be a plain URL path of letters, digits and -._~!$&'()*+,;=:@ separated by /, got %q (character %q at %d)", p, c, i)
		}
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("must not contain . or .. segments, got %q", p)
		}
	}
	if strings.Contains(p, "//") {
		return fmt.Errorf("must not contain //, got %q", p)
	}
	return nil
}
