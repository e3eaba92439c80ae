package gate

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// The shapes below are the hops' real answers, read from their code:
// Envoy's router local replies (source/common/router/router.cc,
// Http::Utility::resetReasonToString), Linkerd's synthesized errors
// (linkerd/app/core/src/errors/respond.rs: empty body, the error in
// l5d-proxy-error; outbound ServerRescue maps fail-fast to 504), nginx's
// special 503 page, RFC 9209's Proxy-Status. The busy backends' own 5xx are
// Ollama's and vLLM's JSON errors.
func TestHopAnswersAreToldFromBackendErrors(t *testing.T) {
	envoy := http.Header{"Server": {"envoy"}, "Content-Type": {"text/plain"}}
	istio := http.Header{"Server": {"istio-envoy"}, "Content-Type": {"text/plain"}}
	json := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
	cases := []struct {
		what   string
		code   int
		header http.Header
		body   string
		hop    bool
	}{
		// Envoy / Istio: never sent.
		{"envoy no healthy upstream (UH)", 503, envoy, "no healthy upstream", true},
		{"envoy connect refused (UF)", 503, istio, "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused", true},
		{"envoy connect refused, retried", 503, istio, "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure, transport failure reason: delayed connect error: 111", true},
		{"envoy before 1.27", 503, envoy, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", true},
		{"envoy connect timeout", 503, envoy, "upstream connect error or disconnect/reset before headers. reset reason: connection timeout", true},
		// Envoy: the request may have reached the backend.
		{"envoy connection termination", 503, envoy, "upstream connect error or disconnect/reset before headers. reset reason: connection termination", false},
		{"envoy remote reset", 503, envoy, "upstream connect error or disconnect/reset before headers. reset reason: remote reset", false},
		{"envoy overflow (circuit breaker: busy, not asleep)", 503, envoy, "upstream connect error or disconnect/reset before headers. reset reason: overflow", false},
		{"envoy upstream request timeout", 504, envoy, "upstream request timeout", false},
		// Linkerd.
		{"linkerd fail-fast", 504, http.Header{"L5d-Proxy-Error": {"logical service ollama.ai.svc.cluster.local:11434: service in fail-fast"}, "Content-Length": {"0"}}, "", true},
		{"linkerd fail-fast (older)", 503, http.Header{"L5d-Proxy-Error": {"Service in fail-fast"}}, "", true},
		{"linkerd response timeout", 504, http.Header{"L5d-Proxy-Error": {"response timeout: 10s"}}, "", false},
		// nginx ingress without endpoints; its 502 may follow a sent request.
		{"nginx 503 no endpoints", 503, http.Header{"Server": {"nginx"}, "Content-Type": {"text/html"}}, "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n", true},
		{"nginx 502", 502, http.Header{"Server": {"nginx"}, "Content-Type": {"text/html"}}, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n</html>", false},
		// RFC 9209.
		{"Proxy-Status connection_refused", 502, http.Header{"Proxy-Status": {"squid; error=connection_refused"}}, "", true},
		{"Proxy-Status http_response_timeout", 504, http.Header{"Proxy-Status": {"envoy; error=http_response_timeout"}}, "", false},
		// The backends' own answers.
		{"ollama busy", 503, json, `{"error":"server busy, please try again.  maximum pending requests exceeded"}`, false},
		{"ollama 500", 500, json, `{"error":"llama runner process has terminated"}`, false},
		{"vllm 503", 503, json, `{"object":"error","message":"The model is not ready","type":"ServiceUnavailableError","code":503}`, false},
		{"a bare 502 of Go's ReverseProxy", 502, http.Header{}, "", false},
		{"a bare 503", 503, http.Header{}, "", false},
		{"no healthy upstream as a 200", 200, envoy, "no healthy upstream", false},
		{"a backend's 404", 404, envoy, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.what, func(t *testing.T) {
			reason, hop := classifyHop(tc.code, tc.header, []byte(tc.body))
			if hop != tc.hop {
				t.Fatalf("hop = %v (%q), want %v", hop, reason, tc.hop)
			}
			if hop && !strings.HasPrefix(reason, "a proxy in front answered HTTP ") {
				t.Errorf("reason %q does not say a proxy answered", reason)
			}
			// The same through hopAnswer, which reads the body and gives it back.
			res := &http.Response{StatusCode: tc.code, Header: tc.header, Body: io.NopCloser(strings.NewReader(tc.body)), ContentLength: -1}
			if _, hop2 := hopAnswer(res); hop2 != tc.hop {
				t.Errorf("hopAnswer = %v, want %v", hop2, tc.hop)
			}
			if rest, _ := io.ReadAll(res.Body); string(rest) != tc.body {
				t.Errorf("the body after hopAnswer is %q, want %q", rest, tc.body)
			}
		})
	}
}

// A long 5xx is the backend's: it is not read past maxHopBody, and passes on whole.
func TestHopAnswerKeepsALongBody(t *testing.T) {
	long := "no healthy upstream" + strings.Repeat(" ", maxHopBody)
	res := &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(long)), ContentLength: -1}
	if _, hop := hopAnswer(res); hop {
		t.Error("a body over maxHopBody was taken for a hop's answer")
	}
	if rest, _ := io.ReadAll(res.Body); string(rest) != long {
		t.Errorf("the body lost %d bytes", len(long)-len(rest))
	}
}

// HTTP_PROXY does not apply to backends: a forward proxy would accept every
// dial and answer for a sleeping backend.
func TestTheTransportUsesNoProxy(t *testing.T) {
	if NewTransport().Proxy != nil {
		t.Error("NewTransport keeps a proxy (ProxyFromEnvironment): HTTP_PROXY would hide a sleeping backend")
	}
}
