package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/keda"
	pb "github.com/openwebui-exporter/openwebui_exporter/keda/externalscaler"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
)

// echoFault answers one request with the token the exporter sent (tok)
// somewhere in its answer.
type echoFault func(w http.ResponseWriter, r *http.Request, tok string)

// echoUpstream is a raw Open WebUI whose answers are healthy (an admin
// account "self", one other active user) except on the path of fault. It
// knows the token, so it echoes it also where no credential is sent
// (/api/version).
func echoUpstream(t *testing.T, token, faultPath string, fault echoFault) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if tok == "" {
			tok = token
		}
		if r.URL.Path == faultPath {
			fault(w, r, tok)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		now := time.Now().Unix()
		switch r.URL.Path {
		case "/api/version":
			io.WriteString(w, `{"version":"0.11.0"}`)
		case "/api/v1/auths/":
			io.WriteString(w, `{"id":"self","role":"admin"}`)
		case "/api/usage":
			io.WriteString(w, `{"model_ids":[],"user_count":2}`)
		case "/api/v1/users/":
			fmt.Fprintf(w, `{"users":[{"id":"self","last_active_at":%d},{"id":"alice","last_active_at":%d}],"total":2}`, now, now-5)
		case "/api/v1/users/self/active":
			io.WriteString(w, `{"active":true}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"detail":"Not Found"}`)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func jsonReplyWith(status int, body string) echoFault {
	return func(w http.ResponseWriter, _ *http.Request, tok string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, strings.ReplaceAll(body, "TOKEN", tok))
	}
}

// TestTokenCanary: distinctive tokens (an API key, and a JWT-shaped token
// with '<', '&' and '>', which JSON escapes) go through every place where
// Open WebUI's answer can reach the exporter's output, with the server
// echoing the token there. Everything the exporter says, /active_users,
// /metrics, /readyz, the landing page, the KEDA gRPC errors and every log
// line at debug level, is searched for any 8 characters of the token in a
// row. Rows marked scrubbed must show "<redacted>", proving that the echo
// did reach the output.
func TestTokenCanary(t *testing.T) {
	tokens := map[string]string{
		"API key": "sk-c4n4ryc0ffee5eed0b5e5d15t1nc7a",
		"JWT":     "eyJjYW5hcnki.c4n4ry<t0k&en>p4yl0ad.s1gn4tur3-c4n4ry",
	}
	cases := []struct {
		name     string
		mode     openwebui.Mode
		path     string
		fault    echoFault
		wantCode int  // of /active_users
		scrubbed bool // the echo reaches the output, redacted
	}{
		{"detail string", openwebui.ModeUsage, "/api/usage", jsonReplyWith(401, `{"detail":"bad token TOKEN"}`), 503, true},
		{"detail list (FastAPI validation)", openwebui.ModeUsage, "/api/usage",
			jsonReplyWith(422, `{"detail":[{"loc":["header","authorization"],"msg":"invalid","input":"TOKEN"}]}`), 503, true},
		{"detail, token cut short", openwebui.ModeUsage, "/api/usage", func(w http.ResponseWriter, r *http.Request, tok string) {
			jsonReplyWith(500, `{"detail":"token TOKEN…"}`)(w, r, tok[:len(tok)-5])
		}, 503, true},
		{"Location", openwebui.ModeUsage, "/api/usage", func(w http.ResponseWriter, _ *http.Request, tok string) {
			w.Header().Set("Location", "/elsewhere/"+tok+"?t="+tok)
			w.WriteHeader(http.StatusFound)
		}, 503, true},
		{"user_count quoted by the decoder", openwebui.ModeUsage, "/api/usage", jsonReplyWith(200, `{"user_count":"TOKEN"}`), 503, true},
		{"user_count, invalid JSON", openwebui.ModeUsage, "/api/usage", jsonReplyWith(200, `{"user_count":TOKEN}`), 503, false},
		{"total quoted by the decoder", openwebui.ModeAdmin, "/api/v1/users/", jsonReplyWith(200, `{"users":[],"total":"TOKEN"}`), 503, true},
		{"last_active_at quoted by the decoder", openwebui.ModeAdmin, "/api/v1/users/",
			jsonReplyWith(200, `{"users":[{"id":"self","last_active_at":"TOKEN"}],"total":1}`), 503, true},
		{"Content-Type", openwebui.ModeUsage, "/api/usage", func(w http.ResponseWriter, _ *http.Request, tok string) {
			w.Header().Set("Content-Type", "text/html; x="+tok)
			io.WriteString(w, "<html>"+tok+"</html>")
		}, 503, true},
		{"HTML error page", openwebui.ModeUsage, "/api/usage", func(w http.ResponseWriter, _ *http.Request, tok string) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "<html>"+tok+"</html>")
		}, 503, false},
		{"role, admin mode", openwebui.ModeAdmin, "/api/v1/auths/", jsonReplyWith(200, `{"id":"self","role":"TOKEN"}`), 503, true},
		{"role, logged on connecting", openwebui.ModeUsage, "/api/v1/auths/", jsonReplyWith(200, `{"id":"self","role":"TOKEN"}`), 200, true},
		{"account id", openwebui.ModeUsage, "/api/v1/auths/", jsonReplyWith(200, `{"id":"TOKEN","role":"user"}`), 0, false},
		// 0: a version with the JWT canary's <&> is refused as not a version (503), the key's is served (200); neither leaks.
		{"version: label and log line", openwebui.ModeUsage, "/api/version", jsonReplyWith(200, `{"version":"TOKEN"}`), 0, true},
		{"version too old", openwebui.ModeUsage, "/api/version", jsonReplyWith(200, `{"version":"0.5.0-TOKEN"}`), 503, true},
		{"version quoted by the HTML hint", openwebui.ModeUsage, "/api/version", func(w http.ResponseWriter, r *http.Request, tok string) {
			jsonReplyWith(200, `{"version":"0.6.10+TOKEN"}`)(w, r, tok)
		}, 503, true},
		{"malformed status line", openwebui.ModeUsage, "/api/usage", func(w http.ResponseWriter, _ *http.Request, tok string) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				panic(err)
			}
			io.WriteString(conn, "HTTP/1.1 "+tok+" OK\r\n\r\n")
			conn.Close()
		}, 503, true},
		{"Date header", openwebui.ModeAdmin, "/api/v1/users/", func(w http.ResponseWriter, _ *http.Request, tok string) {
			w.Header().Set("Date", tok)
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"users":[{"id":"self","last_active_at":%d}],"total":1}`, time.Now().Unix())
		}, 200, false},
	}
	for tokenName, token := range tokens {
		for _, tc := range cases {
			t.Run(tokenName+"/"+tc.name, func(t *testing.T) {
				e := newExporter(t, exporterOptions{upstream: echoUpstream(t, token, tc.path, tc.fault), token: token, mode: tc.mode})
				scaler := keda.NewScaler(demand.New(e.cache, nil), time.Second, nil)
				var outputs []string
				for range 2 {
					code, body := e.get("/active_users")
					if tc.wantCode != 0 && code != tc.wantCode {
						t.Errorf("/active_users: %d %s, want %d", code, body, tc.wantCode)
					}
					outputs = append(outputs, body)
					for _, path := range []string{"/metrics", "/readyz", "/", "/healthz"} {
						_, body := e.get(path)
						outputs = append(outputs, body)
					}
					ref := &pb.ScaledObjectRef{Name: "ollama", Namespace: "ai"}
					if _, err := scaler.GetMetrics(context.Background(), &pb.GetMetricsRequest{ScaledObjectRef: ref, MetricName: keda.MetricName}); err != nil {
						outputs = append(outputs, err.Error())
					}
					if _, err := scaler.IsActive(context.Background(), ref); err != nil {
						outputs = append(outputs, err.Error())
					}
				}
				logs := e.logs.String()
				all := strings.Join(append(outputs, logs), "\n")
				if piece := leakedPiece(token, all); piece != "" {
					t.Fatalf("%q of the token appears in the output:\n%s", piece, withoutRuntimeMetrics(all))
				}
				if !strings.Contains(logs, "level=debug") {
					t.Errorf("no debug output to search:\n%s", logs)
				}
				if tc.scrubbed && !strings.Contains(all, "<redacted>") {
					t.Errorf("the echoed token did not reach the output, so the row tests nothing:\n%s", withoutRuntimeMetrics(all))
				}
			})
		}
	}
}

// withoutRuntimeMetrics drops the Go and process metrics from a failure
// report: they are searched, but never hold server-derived text.
func withoutRuntimeMetrics(s string) string {
	var keep []string
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, "go_") && !strings.HasPrefix(line, "process_") && !strings.HasPrefix(line, "# ") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}
