package binary

// Tests of the built binary: what only the whole process shows (flags and
// env, --web.config.file, signals, everything it prints).

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

var (
	buildOnce sync.Once
	buildDir  string
	binary    string
	buildErr  error
)

// TestMain removes the binary that exporterBinary built.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// exporterBinary builds the exporter once per test run: every test of the
// binary (this package's files, the gate's too) starts that one build.
func exporterBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "openwebui_exporter-test")
		if buildErr != nil {
			return
		}
		binary, buildErr = harness.GoBuild(buildDir, ".", "openwebui_exporter")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// process is a running exporter with its combined output.
type process struct {
	cmd    *exec.Cmd
	output *harness.SyncBuffer
	addr   string
	exited chan error
}

func startExporter(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	addr := harness.FreeAddr()
	cmd := exec.Command(exporterBinary(t), append([]string{"--web.listen-address=" + addr}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	out := &harness.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, output: out, addr: addr, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	// Wait until it listens (bounded).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("the exporter did not listen on %s:\n%s", addr, out)
		}
	}
}

func fetch(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// reply is an upstream fault: one fixed answer.
func reply(status int, contentType, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// leakedPiece returns the first piece of 8 characters in a row of token
// that appears in out, or "".
func leakedPiece(token, out string) string {
	for i := 0; i+8 <= len(token); i++ {
		if strings.Contains(out, token[i:i+8]) {
			return token[i : i+8]
		}
	}
	return ""
}

// fakeUpstream is a fake Open WebUI with one active human; it returns the
// exporter account's id and API key.
func fakeUpstream(t *testing.T, wrap func(http.Handler) http.Handler) (fake *fakeopenwebui.Server, url, selfID, token string) {
	t.Helper()
	fake = fakeopenwebui.New(fakeopenwebui.Config{})
	selfID = fake.AddUser("exporter", "user")
	token = fake.IssueAPIKey(selfID)
	fake.Touch(fake.AddUser("alice", "user"))
	var h http.Handler = fake
	if wrap != nil {
		h = wrap(fake)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return fake, srv.URL, selfID, token
}

func TestBadConfigurationStopsStartup(t *testing.T) {
	bin := exporterBinary(t)
	cases := []struct {
		env  []string
		args []string
		want string
	}{
		{nil, nil, "--openwebui.url (env API_URL): is required"},
		{[]string{"API_URL=http://127.0.0.1:1"}, nil, "no Open WebUI token: set env TOKEN or --openwebui.token-file"},
		{[]string{"API_URL=http://127.0.0.1:1", "TOKEN=sk-x", "CACHE_TIMEOUT=soon"}, nil, "--cache.ttl (env CACHE_TIMEOUT): want seconds (60) or a duration"},
		{[]string{"API_URL=http://127.0.0.1:1", "TOKEN=sk-x", "PORT=eighty"}, nil, "env PORT (the default port of --web.listen-address) must be a port number"},
		{[]string{"API_URL=127.0.0.1:1", "TOKEN=sk-x"}, nil, "--openwebui.url (env API_URL): want an http:// or https:// URL"},
		{[]string{"API_URL=http://127.0.0.1:1", "TOKEN=sk-x"}, []string{"--cache.max-stale=10m"}, "--cache.max-stale must be between 0 and 3m"},
		{[]string{"API_URL=http://127.0.0.1:1", "TOKEN=sk-x"}, []string{"--openwebui.timeout=0s"}, "--openwebui.timeout must be positive"},
		{[]string{"API_URL=http://127.0.0.1:1", "TOKEN=sk-x"}, []string{"--openwebui.count-mode=guess"}, "enum value must be one of usage,admin"},
		// Open WebUI's write throttle (issue 22): any value it accepts, but
		// usage mode cannot count under it and names the fix.
		{[]string{"API_URL=http://127.0.0.1:1", "TOKEN=sk-x"}, []string{"--openwebui.status-update-interval=300"}, "cannot count right under Open WebUI's activity-write throttle: /api/usage only counts who was written within 180s, and a person active a moment ago may have been written up to 5m0s before; use --openwebui.count-mode=admin"},
		{[]string{"API_URL=http://127.0.0.1:1", "TOKEN=sk-x"}, []string{"--openwebui.count-mode=admin", "--openwebui.status-update-interval=2h"}, "--openwebui.status-update-interval: must be between 0 and 1h0m0s"},
		{[]string{"API_URL=http://127.0.0.1:1", "TOKEN=sk-x"}, []string{"--openwebui.count-mode=admin", "--openwebui.status-update-interval=soon"}, "--openwebui.status-update-interval: want seconds (300) or a duration (5m)"},
		{[]string{"API_URL=http://127.0.0.1:1", "TOKEN=sk-x"}, []string{"--web.telemetry-path=/healthz"}, "--web.telemetry-path: must not be one of the exporter's other paths"},
		{[]string{"API_URL=http://127.0.0.1:1", "TOKEN=sk-x"}, []string{"--web.telemetry-path=metrics"}, "--web.telemetry-path: must start with /"},
		// http.ServeMux panics on these.
		{[]string{"API_URL=http://127.0.0.1:1", "TOKEN=sk-x"}, []string{"--web.telemetry-path=/a b"}, "--web.telemetry-path: must be a plain URL path"},
		{[]string{"API_URL=http://127.0.0.1:1", "TOKEN=sk-x"}, []string{"--web.telemetry-path=/{"}, "--web.telemetry-path: must be a plain URL path"},
		// A password with an unencoded '/': no piece of it in the error.
		{[]string{"API_URL=http://admin:Zq7/Wx9@127.0.0.1:1", "TOKEN=sk-x"}, nil, "--openwebui.url (env API_URL): want an http:// or https:// URL; it does not parse (percent-encode"},
		{[]string{"API_URL=http://127.0.0.1:1", "TOKEN=\uFEFFsk-x\u200b"}, nil, "env TOKEN: the token contains a non-printable or non-ASCII character (U+200B)"},
	}
	for _, tc := range cases {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = tc.env
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("env %v args %v: exit %v, output %q; want a failure saying %q", tc.env, tc.args, err, out, tc.want)
		}
		if strings.Contains(string(out), "panic") || strings.Contains(string(out), "Zq7") {
			t.Errorf("env %v args %v: a panic or a piece of a password in the output %q", tc.env, tc.args, out)
		}
	}
}

// TestWebConfigTLSAndBasicAuth protects /metrics and /active_users with the
// exporter-toolkit's web config: TLS plus a bcrypt basic-auth user.
func TestWebConfigTLSAndBasicAuth(t *testing.T) {
	_, upstreamURL, _, token := fakeUpstream(t, nil)
	dir := t.TempDir()
	ca, err := harness.NewCA("openwebui_exporter test")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue("127.0.0.1", true)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(dir, "web.yml")
	for name, content := range map[string][]byte{
		"cert.pem": certPEM,
		"key.pem":  keyPEM,
		"web.yml": []byte(`tls_server_config:
  cert_file: cert.pem
  key_file: key.pem
basic_auth_users:
  keda: $2a$10$ZFhgP1XbPshpy/mF.rqlkeoQ65tHk/fT.J9f085or25nacvyePv0q
`),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := startExporter(t, []string{"API_URL=" + upstreamURL, "TOKEN=" + token}, "--web.config.file="+webConfig)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	for _, path := range []string{"/active_users", "/metrics"} {
		url := "https://" + p.addr + path
		if code, _ := fetch(t, client, url); code != http.StatusUnauthorized {
			t.Errorf("%s without credentials: %d, want 401", path, code)
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.SetBasicAuth("keda", "wrong")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s with a wrong password: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s with a wrong password: %d, want 401", path, resp.StatusCode)
		}
		req.SetBasicAuth("keda", "s3cret-for-tests")
		resp, err = client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || (path == "/active_users" && string(body) != `{"active_users":1}`) {
			t.Errorf("%s with credentials: %d %s, want 200", path, resp.StatusCode, body)
		}
	}
	if resp, err := http.Get("http://" + p.addr + "/active_users"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP was served despite TLS")
		}
	}
}

// TestSIGTERMFinishesInFlightRequests: on SIGTERM the exporter stops
// accepting, lets the request in flight finish, and exits within 5 s.
func TestSIGTERMFinishesInFlightRequests(t *testing.T) {
	arrived := make(chan struct{}, 1)
	_, upstreamURL, _, token := fakeUpstream(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/usage" {
				arrived <- struct{}{}
				time.Sleep(time.Second)
			}
			next.ServeHTTP(w, r)
		})
	})
	p := startExporter(t, []string{"API_URL=" + upstreamURL, "TOKEN=" + token})
	type answer struct {
		code int
		body string
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := http.Get("http://" + p.addr + "/active_users")
		if err != nil {
			done <- answer{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- answer{code: resp.StatusCode, body: string(b)}
	}()
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the request never reached Open WebUI")
	}
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if a.err != nil || a.code != 200 || a.body != `{"active_users":1}` {
		t.Errorf("in-flight request: %d %q %v, want 200 {\"active_users\":1}", a.code, a.body, a.err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("exit: %v, want status 0\n%s", err, p.output)
		}
		p.exited <- err // for the cleanup
		if took := time.Since(sent); took > 5*time.Second {
			t.Errorf("exited %s after SIGTERM, want within 5s", took)
		}
	case <-time.After(6 * time.Second):
		t.Fatalf("still running 6s after SIGTERM:\n%s", p.output)
	}
	if _, err := net.Dial("tcp", p.addr); err == nil {
		t.Error("still accepting connections after SIGTERM")
	}
}

// TestTokenNeverPrinted runs the binary at debug level through every fault,
// a token rotation and every endpoint, and searches all it printed and
// answered for the tokens.
func TestTokenNeverPrinted(t *testing.T) {
	faults := map[string]http.HandlerFunc{
		"healthy": nil,
		"echo": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"detail":"`+r.Header.Get("Authorization")+`"}`)
		},
		"redirect": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:1/?token="+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), http.StatusFound)
		},
		"html":    reply(200, "text/html", "<html>"),
		"500":     reply(500, "application/json", `{"detail":"Internal Server Error"}`),
		"garbage": reply(200, "application/json", `{"user_count":`),
	}
	var current sync.Map
	current.Store("fault", "healthy")
	fake, upstreamURL, selfID, oldToken := fakeUpstream(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			name, _ := current.Load("fault")
			if f := faults[name.(string)]; f != nil && strings.HasPrefix(r.URL.Path, "/api/") {
				f(w, r)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	newToken := fake.IssueAPIKey(selfID) // a new key of the same account
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(oldToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startExporter(t, []string{"API_URL=" + upstreamURL}, "--openwebui.token-file="+tokenFile,
		"--log.level=debug", "--cache.ttl=0", "--cache.max-stale=0")

	client := &http.Client{Timeout: 5 * time.Second}
	var answers bytes.Buffer
	ask := func() {
		for _, path := range []string{"/active_users", "/metrics", "/", "/healthz", "/readyz"} {
			_, body := fetch(t, client, "http://"+p.addr+path)
			answers.WriteString(body)
		}
	}
	for name := range faults {
		current.Store("fault", name)
		ask()
	}
	// Rotate the Secret in place: the next fetch uses the new token.
	current.Store("fault", "healthy")
	if err := os.WriteFile(tokenFile, []byte(newToken), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body := fetch(t, client, "http://"+p.addr+"/active_users"); code != 200 || body != `{"active_users":1}` {
		t.Errorf("after rotating the token file: %d %s, want 200 {\"active_users\":1}", code, body)
	}
	ask()
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.exited
	p.exited <- nil

	all := p.output.String() + answers.String()
	if !strings.Contains(p.output.String(), "level=debug") {
		t.Fatalf("no debug output to search:\n%s", p.output)
	}
	for _, token := range []string{oldToken, newToken} {
		if piece := leakedPiece(token, all); piece != "" {
			t.Errorf("%q of token %s… appears in the output or the answers", piece, token[:6])
		}
	}
}

// TestTokenFileLifecycleAndSIGHUP runs the binary through what happens to a
// mounted Secret: it is missing at start-up (mounted a moment late), then
// written by a Windows editor (BOM, CRLF), then broken by an invisible
// character, then fixed; SIGHUP re-reads it and the web config, logs what it
// found, and the exporter keeps serving throughout.
func TestTokenFileLifecycleAndSIGHUP(t *testing.T) {
	_, upstreamURL, _, token := fakeUpstream(t, nil)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	webConfig := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(webConfig, []byte("http_server_config:\n  http2: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startExporter(t, []string{"API_URL=" + upstreamURL}, "--openwebui.token-file="+tokenFile,
		"--web.config.file="+webConfig, "--cache.ttl=0", "--cache.max-stale=0")
	client := &http.Client{Timeout: 5 * time.Second}
	base := "http://" + p.addr
	expect := func(step, path string, wantCode int, wantBody string) {
		t.Helper()
		code, body := fetch(t, client, base+path)
		if code != wantCode || !strings.Contains(body, wantBody) {
			t.Errorf("%s: %s answered %d %q, want %d containing %q\n%s", step, path, code, body, wantCode, wantBody, p.output)
		}
	}
	hup := func(step, wantLog string) {
		t.Helper()
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(p.output.String(), wantLog); time.Sleep(20 * time.Millisecond) {
			select {
			case err := <-p.exited:
				p.exited <- err
				t.Fatalf("%s: the exporter exited on SIGHUP (%v):\n%s", step, err, p.output)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no log line containing %q after SIGHUP:\n%s", step, wantLog, p.output)
			}
		}
	}

	expect("file missing at start-up", "/readyz", http.StatusServiceUnavailable, "cannot read the Open WebUI token: --openwebui.token-file: open "+tokenFile+": no such file or directory")
	expect("file missing at start-up", "/active_users", http.StatusServiceUnavailable, "reading the Open WebUI token")
	expect("file missing at start-up", "/healthz", http.StatusOK, "ok")
	if !strings.Contains(p.output.String(), "cannot read the Open WebUI token yet; starting anyway, /readyz answers 503 until it is readable") {
		t.Errorf("no start-up warning about the missing file:\n%s", p.output)
	}

	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(name, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(tokenFile, "\uFEFF"+token+"\r\n")
	expect("written with a BOM and CRLF", "/readyz", http.StatusOK, "ok")
	expect("written with a BOM and CRLF", "/active_users", http.StatusOK, `{"active_users":1}`)

	write(tokenFile, token+"\u200b\n")
	expect("a zero-width space", "/readyz", http.StatusServiceUnavailable, "the token contains a non-printable or non-ASCII character (U+200B)")
	hup("SIGHUP with a broken token file", `token_file="not readable"`)

	write(tokenFile, token)
	write(webConfig, "tls_server_config: [\n")
	hup("SIGHUP with a broken web config", `web_config=invalid`)
	write(webConfig, "http_server_config:\n  http2: false\n")
	hup("SIGHUP with both fixed", `token_file=ok web_config="ok (TLS on/off, HTTP/2 and rate_limit need a restart)"`)
	expect("after SIGHUP", "/active_users", http.StatusOK, `{"active_users":1}`)
	expect("after SIGHUP", "/readyz", http.StatusOK, "ok")
	if strings.Contains(p.output.String(), token[3:11]) {
		t.Errorf("the token appears in the output:\n%s", p.output)
	}
}
