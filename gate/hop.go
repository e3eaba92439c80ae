package gate

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// A hop is a proxy between the gate and its backend: an Envoy sidecar (Istio)
// or gateway, a Linkerd proxy, an ingress controller. It accepts every dial,
// so a sleeping backend never refuses the gate's connection; the hop answers
// instead, with a status line of its own. Those answers say that the request
// never reached the backend, and the gate treats them as it treats a refused
// dial: the backend is asleep, the request is held and delivered once the
// backend is up.
//
// Only answers whose shape says "not sent to any backend" count. A busy
// backend's own 5xx (Ollama's 503 "server busy", vLLM's JSON errors) is
// JSON and never matches; a hop's answer that may follow a request that did
// reach the backend (Envoy's "connection termination" or "remote reset",
// Linkerd's response timeout, a bare 502 of nginx or Go's ReverseProxy) is
// passed on as the backend's answer, never sent again.

// maxHopBody bounds what the gate reads of a 5xx to classify it: the hops'
// own answers are one short line or an empty body.
const maxHopBody = 4 << 10

// hopStatuses are the statuses a hop answers with when it has no backend.
func hopStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}

// Envoy's local replies (source/common/router/router.cc): the body is the
// text, Content-Type text/plain.
const (
	envoyNoHealthyUpstream = "no healthy upstream"
	envoyUpstreamReset     = "upstream connect error or disconnect/reset before headers."
)

// envoyConnectFailures are Envoy's reset reasons
// (Http::Utility::resetReasonToString) that mean the connection to the
// backend never opened, so nothing of the request was sent. "connection
// failure" is the text of Envoy releases before 1.27.
var envoyConnectFailures = []string{
	"local connection failure",
	"remote connection failure",
	"connection failure",
	"connection timeout",
}

// proxyStatusNoUpstream are the RFC 9209 Proxy-Status error types that mean
// the proxy reached no backend.
var proxyStatusNoUpstream = []string{
	"destination_not_found",
	"destination_unavailable",
	"destination_ip_unroutable",
	"connection_refused",
	"connection_timeout",
	"dns_error",
	"dns_timeout",
}

// classifyHop tells whether an answer is a hop's "no backend" answer, and
// names it for the backend's reason. body is the answer's first bytes (at
// most maxHopBody).
func classifyHop(code int, h http.Header, body []byte) (reason string, ok bool) {
	if !hopStatus(code) {
		return "", false
	}
	// Linkerd's proxy (linkerd/app/core/src/errors/respond.rs) answers its
	// own errors with an empty body and the error in l5d-proxy-error; a
	// service without ready endpoints ends in "... service in fail-fast".
	if msg := h.Get("L5d-Proxy-Error"); msg != "" {
		if strings.Contains(strings.ToLower(msg), "fail-fast") {
			return hopReason(code, "l5d-proxy-error: "+msg), true
		}
		return "", false
	}
	if ps := h.Get("Proxy-Status"); ps != "" {
		for _, e := range proxyStatusNoUpstream {
			if strings.Contains(ps, "error="+e) {
				return hopReason(code, "Proxy-Status "+e), true
			}
		}
	}
	text := strings.TrimSpace(string(body))
	switch {
	case code == http.StatusServiceUnavailable && text == envoyNoHealthyUpstream:
		return hopReason(code, envoyNoHealthyUpstream), true
	case strings.HasPrefix(text, envoyUpstreamReset):
		_, rr, found := strings.Cut(text, "reset reason: ")
		if !found {
			return "", false
		}
		rr, _, _ = strings.Cut(rr, ",")
		for _, f := range envoyConnectFailures {
			if rr == f {
				return hopReason(code, "upstream connect error ("+rr+")"), true
			}
		}
	case code == http.StatusServiceUnavailable && strings.Contains(text, "<title>503 Service Temporarily Unavailable</title>") &&
		strings.HasPrefix(strings.ToLower(h.Get("Server")), "nginx"):
		// ingress-nginx answers this when the Service has no endpoints.
		return hopReason(code, "nginx 503 Service Temporarily Unavailable"), true
	}
	return "", false
}

func hopReason(code int, what string) string {
	return "a proxy in front answered HTTP " + strconv.Itoa(code) + ": " + what
}

// hopAnswer classifies res as classifyHop does, reading at most maxHopBody of
// its body; when it is not a hop's answer, res.Body still gives the whole body.
func hopAnswer(res *http.Response) (reason string, ok bool) {
	if !hopStatus(res.StatusCode) || res.ContentLength > maxHopBody {
		return "", false
	}
	prefix, err := io.ReadAll(io.LimitReader(res.Body, maxHopBody+1))
	res.Body = &rejoinedBody{Reader: io.MultiReader(bytes.NewReader(prefix), res.Body), Closer: res.Body}
	if err != nil || len(prefix) > maxHopBody {
		return "", false
	}
	return classifyHop(res.StatusCode, res.Header, prefix)
}

// rejoinedBody is a body whose first bytes were read ahead.
type rejoinedBody struct {
	io.Reader
	io.Closer
}

// proxyEnv names the proxy variables set in the environment, which
// NewTransport does not use.
func proxyEnv() string {
	var set []string
	for _, k := range []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"} {
		if os.Getenv(k) != "" {
			set = append(set, k)
		}
	}
	return strings.Join(set, ",")
}
