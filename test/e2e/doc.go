// Package e2e holds the end-to-end tests: the exporter binary against the
// fake Open WebUI process and a real Prometheus server, and promtool's
// checks of the examples. They need prometheus and promtool on PATH
// (Debian: apt-get install prometheus) and fail without them:
//
//	go test -tags e2e -count=1 -v ./test/e2e/
//
// E2E_EXPORTER_BINARY=path tests that binary (e.g. promu's build, whose
// version information is then checked too) instead of a fresh go build.
package e2e
