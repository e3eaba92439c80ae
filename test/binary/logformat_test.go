package binary

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logfmt/logfmt"

	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
	"github.com/openwebui-exporter/openwebui_exporter/internal/wiring"
)

// TestEveryLogLineHasTheSameKeys runs the binary in both log formats through
// lines of all four writers: the exporter itself (start-up, an upstream
// failure, shutdown), the exporter-toolkit ("Listening on", "TLS is enabled"),
// net/http's error log (a TLS handshake error) and gRPC's logger (a
// connection that is not HTTP/2). Every line must start
// with the same keys, in logfmt in the same order.
func TestEveryLogLineHasTheSameKeys(t *testing.T) {
	for _, format := range []string{"logfmt", "json"} {
		t.Run(format, func(t *testing.T) {
			var failing atomic.Bool
			_, upstreamURL, _, token := fakeUpstream(t, func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if failing.Load() {
						http.Error(w, "Internal Server Error", http.StatusInternalServerError)
						return
					}
					next.ServeHTTP(w, r)
				})
			})
			webConfig, roots := tlsWebConfig(t)
			kedaAddr := harness.HeldAddr()
			p := startExporter(t, []string{"API_URL=" + upstreamURL, "TOKEN=" + token},
				"--log.format="+format, "--log.level=debug", "--web.config.file="+webConfig,
				"--cache.ttl=0", "--cache.max-stale=0", "--keda.listen-address="+kedaAddr)

			client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 5 * time.Second}
			fetch(t, client, "https://"+p.addr+"/active_users")
			failing.Store(true)
			if code, _ := fetch(t, client, "https://"+p.addr+"/active_users"); code != http.StatusServiceUnavailable {
				t.Errorf("/active_users while Open WebUI fails: %d, want 503", code)
			}
			notTLS(t, p.addr)   // net/http logs a TLS handshake error
			notTLS(t, kedaAddr) // gRPC logs a failed transport (at debug level)
			time.Sleep(200 * time.Millisecond)
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-p.exited:
				p.exited <- err // for the cleanup, which waits too
			case <-time.After(10 * time.Second):
				t.Fatal("no exit within 10s of SIGTERM")
			}

			out := p.output.String()
			for _, want := range []string{"starting openwebui_exporter", "Listening on", "TLS handshake error", "HTTP 500", "failed to create ServerTransport", "shutting down"} {
				if !strings.Contains(out, want) {
					t.Errorf("no log line with %q; the test would not cover its writer:\n%s", want, out)
				}
			}
			lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
			for _, line := range lines {
				keys, values, err := parseLogLine(format, line)
				if err != nil {
					t.Errorf("unparseable %s line %q: %v", format, line, err)
					continue
				}
				checkLogLine(t, format, line, keys, values)
			}
		})
	}
}

var callerPattern = regexp.MustCompile(`^[\w.-]+\.go:\d+$`)

func checkLogLine(t *testing.T, format, line string, keys []string, values map[string]string) {
	t.Helper()
	if format == "logfmt" {
		if len(keys) < len(wiring.LogKeys) || strings.Join(keys[:len(wiring.LogKeys)], " ") != strings.Join(wiring.LogKeys, " ") {
			t.Errorf("line %q starts with keys %v, want %v", line, keys, wiring.LogKeys)
		}
	}
	for _, k := range wiring.LogKeys {
		if _, ok := values[k]; !ok {
			t.Errorf("line %q has no key %q", line, k)
		}
	}
	for _, k := range []string{"time", "source", "t"} {
		if _, ok := values[k]; ok {
			t.Errorf("line %q has the foreign key %q", line, k)
		}
	}
	if ts, err := time.Parse(time.RFC3339Nano, values["ts"]); err != nil || !strings.HasSuffix(values["ts"], "Z") || time.Since(ts) > time.Minute {
		t.Errorf("line %q: ts %q is not a recent UTC RFC 3339 time (%v)", line, values["ts"], err)
	}
	if !callerPattern.MatchString(values["caller"]) {
		t.Errorf("line %q: caller %q is not file.go:line", line, values["caller"])
	}
	switch values["level"] {
	case "debug", "info", "warn", "error":
	default:
		t.Errorf("line %q: level %q", line, values["level"])
	}
}

// parseLogLine returns the keys of one line in order, and its values.
func parseLogLine(format, line string) ([]string, map[string]string, error) {
	values := map[string]string{}
	var keys []string
	if format == "json" {
		var m map[string]any
		d := json.NewDecoder(strings.NewReader(line))
		if err := d.Decode(&m); err != nil {
			return nil, nil, err
		}
		for k, v := range m {
			keys = append(keys, k)
			if s, ok := v.(string); ok {
				values[k] = s
			} else {
				b, _ := json.Marshal(v)
				values[k] = string(b)
			}
		}
		return keys, values, nil
	}
	d := logfmt.NewDecoder(strings.NewReader(line))
	for d.ScanRecord() {
		for d.ScanKeyval() {
			keys = append(keys, string(d.Key()))
			values[string(d.Key())] = string(d.Value())
		}
	}
	return keys, values, d.Err()
}

// tlsWebConfig writes an exporter-toolkit web config serving TLS.
func tlsWebConfig(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	ca, err := harness.NewCA("log format test")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue("127.0.0.1", true)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"cert.pem": certPEM, "key.pem": keyPEM,
		"web.yml": []byte("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	return filepath.Join(dir, "web.yml"), roots
}

// notTLS sends bytes that are neither TLS nor HTTP to a TLS port.
func notTLS(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(bytes.Repeat([]byte{'X'}, 64)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// The server answers garbage with an error page or closes the
	// connection: either way, what matters is the log line it writes.
	_, _ = c.Read(make([]byte, 64))
}
