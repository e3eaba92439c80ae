package ollama

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The suite's inputs, from the environment (.ci/ollama.sh sets them):
//   - OLLAMA_BINARY: `ollama` built by .ci/ollama.sh. Without it the suite
//     skips, and fails when CI=true: CI must not pass by not testing.
//   - OLLAMA_EXPORTER_BINARY, OLLAMA_FAKE_BINARY: the exporter and
//     cmd/fakeopenwebui; built from OLLAMA_REPO_ROOT (default ../..) if unset.
const ollamaVersion = "0.17.4"

// fakeToken is the fake Open WebUI's default API key of the 'exporter' account.
const fakeToken = "sk-0123456789abcdef0123456789abcdef"

// hello is the tiny model of most tests: it answers " hello world".
var hello = TinyModel{Answer: []string{"▁hello", "▁world"}}

func inCI() bool { return os.Getenv("CI") == "true" }

// ollamaBinary returns $OLLAMA_BINARY; it skips the test without it, or fails
// it in CI.
func ollamaBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("OLLAMA_BINARY")
	if bin == "" {
		if inCI() {
			t.Fatal("OLLAMA_BINARY is not set (CI=true): run .ci/ollama.sh, which builds Ollama and sets it")
		}
		t.Skip("OLLAMA_BINARY is not set: run .ci/ollama.sh (builds Ollama " + ollamaVersion + " once, then runs this suite)")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("OLLAMA_BINARY: %v", err)
	}
	return bin
}

var (
	buildOnce    sync.Once
	buildDir     string
	exporterBin  string
	fakeBin      string
	gateFlags    bool
	buildFailure error
)

// exporterBinaries returns the exporter and the fake Open WebUI (built once
// per run), and whether the exporter has the gate's flags.
func exporterBinaries(t *testing.T) (exporter, fake string, hasGate bool) {
	t.Helper()
	buildOnce.Do(func() {
		root, err := filepath.Abs(envOr("OLLAMA_REPO_ROOT", "../.."))
		if err != nil {
			buildFailure = err
			return
		}
		if buildDir, err = os.MkdirTemp("", "ollama-suite-bin-"); err != nil {
			buildFailure = err
			return
		}
		if exporterBin, err = buildOrEnv("OLLAMA_EXPORTER_BINARY", root, ".", "openwebui_exporter"); err != nil {
			buildFailure = err
			return
		}
		if fakeBin, err = buildOrEnv("OLLAMA_FAKE_BINARY", root, "./cmd/fakeopenwebui", "fakeopenwebui"); err != nil {
			buildFailure = err
			return
		}
		help, _ := exec.Command(exporterBin, "--help").CombinedOutput() // kingpin: --help exits 0
		gateFlags = bytes.Contains(help, []byte("--gate.listen-address"))
	})
	if buildFailure != nil {
		t.Fatal(buildFailure)
	}
	return exporterBin, fakeBin, gateFlags
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// buildOrEnv returns $envName if set, else builds pkg of the module at root.
func buildOrEnv(envName, root, pkg, name string) (string, error) {
	if p := os.Getenv(envName); p != "" {
		return filepath.Abs(p)
	}
	out := filepath.Join(buildDir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s (in %s): %w\n%s", pkg, root, err, b)
	}
	return out, nil
}

// cleanEnv is the test's environment without OLLAMA_* variables (a
// developer's own settings must not change what the suite's Ollama does),
// plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OLLAMA_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// ollamaServer is a real `ollama serve` on loopback with its own models
// directory; it can be stopped and started again on the same address with
// the same models.
type ollamaServer struct {
	t    *testing.T
	bin  string
	addr string
	dir  string
	name string
	env  []string // more environment, e.g. OLLAMA_NEW_ENGINE=1
	p    *proc
}

func (o *ollamaServer) url() string { return "http://" + o.addr }

// startOllama starts a new Ollama with an empty models directory and waits
// until it serves HTTP.
func startOllama(t *testing.T, name string, env ...string) *ollamaServer {
	t.Helper()
	o := &ollamaServer{t: t, bin: ollamaBinary(t), addr: heldAddr(t), dir: t.TempDir(), name: name, env: env}
	o.start()
	return o
}

// start starts `ollama serve` and waits for an HTTP answer from /api/version:
// Ollama opens its port before it serves (GPU discovery first).
func (o *ollamaServer) start() {
	t := o.t
	t.Helper()
	env := append([]string{
		"OLLAMA_HOST=" + o.addr,
		"OLLAMA_MODELS=" + filepath.Join(o.dir, "models"),
		"HOME=" + filepath.Join(o.dir, "home"),
	}, o.env...)
	o.p = start(t, o.name, o.bin, cleanEnv(env...), "serve")
	begin := time.Now()
	eventually(t, 60*time.Second, o.name+" serves HTTP on "+o.addr, func() (bool, string) {
		if o.p.exited() {
			t.Fatalf("%s exited before serving:\n%s", o.name, o.p.tail(4000))
		}
		r, err := do(http.MethodGet, o.url()+"/api/version", "")
		if err != nil {
			return false, err.Error()
		}
		return r.status == http.StatusOK, r.String()
	})
	t.Logf("%s answers %s after start", o.name, time.Since(begin).Round(time.Millisecond))
}

func (o *ollamaServer) stop() { o.p.stop() }

// createModel uploads m as a blob and creates the model name from it, through
// base (Ollama itself or a gate in front of it).
func createModel(t *testing.T, base, name string, m TinyModel) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".gguf")
	digest, err := m.Write(path)
	if err != nil {
		t.Fatal(err)
	}
	gguf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := do(http.MethodPost, base+"/api/blobs/"+digest, string(gguf))
	if err != nil || r.status != http.StatusCreated {
		t.Fatalf("POST %s/api/blobs/%s: %v %s", base, digest, err, r)
	}
	body := fmt.Sprintf(`{"model":%q,"files":{"tiny.gguf":%q},"stream":false}`, name, digest)
	r, err = do(http.MethodPost, base+"/api/create", body)
	if err != nil || r.status != http.StatusOK || r.body != `{"status":"success"}` {
		t.Fatalf("POST %s/api/create %s: %v %s", base, body, err, r)
	}
	t.Logf("created model %s (%d bytes, %s) through %s", name, len(gguf), digest, base)
}

// gateServer is the exporter with its gate on, in front of the given
// backends, and the fake Open WebUI it counts people from.
type gateServer struct {
	addr string
	p    *proc
}

func (g *gateServer) url() string { return "http://" + g.addr }

// startGate starts the fake Open WebUI and the exporter with
// --gate.backend=backend for each backend, and waits for /_gate/status.
// It skips the test when the exporter has no gate yet (fails in CI).
func startGate(t *testing.T, backends ...string) *gateServer {
	t.Helper()
	return startGateWith(t, nil, backends...)
}

// startGateWith is startGate with more exporter flags.
func startGateWith(t *testing.T, flags []string, backends ...string) *gateServer {
	t.Helper()
	exporter, fake, hasGate := exporterBinaries(t)
	if !hasGate {
		msg := "the exporter (" + exporter + ") has no --gate.listen-address flag yet"
		if inCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	fakeAddr := heldAddr(t)
	fp := start(t, "fakeopenwebui", fake, cleanEnv(), "--listen", fakeAddr, "--humans", "1", "--token", fakeToken)
	eventually(t, 20*time.Second, "the fake Open WebUI is up", func() (bool, string) {
		if fp.exited() {
			t.Fatalf("the fake Open WebUI exited:\n%s", fp.tail(3000))
		}
		r, err := do(http.MethodGet, "http://"+fakeAddr+"/health", "")
		if err != nil {
			return false, err.Error()
		}
		return r.status == http.StatusOK, r.String()
	})

	g := &gateServer{addr: heldAddr(t)}
	args := []string{"--openwebui.url=http://" + fakeAddr, "--web.listen-address=" + heldAddr(t),
		"--gate.listen-address=" + g.addr, "--log.level=debug"}
	for _, b := range backends {
		args = append(args, "--gate.backend="+b)
	}
	args = append(args, flags...)
	g.p = start(t, "exporter", exporter, cleanEnv("TOKEN="+fakeToken), args...)
	eventually(t, 20*time.Second, "the gate answers /_gate/status", func() (bool, string) {
		if g.p.exited() {
			t.Fatalf("the exporter exited:\n%s", g.p.tail(3000))
		}
		r, err := do(http.MethodGet, g.url()+"/_gate/status", "")
		if err != nil {
			return false, err.Error()
		}
		return r.status == http.StatusOK, r.String()
	})
	return g
}

// gateStatus is GET /_gate/status (gate-spec.md).
type gateStatus struct {
	Backends []struct {
		Name   string   `json:"name"`
		Prefix string   `json:"prefix"`
		State  string   `json:"state"`
		Held   int      `json:"held"`
		Models []string `json:"models"`
		Reason string   `json:"reason"`
	} `json:"backends"`
}

func (g *gateServer) status(t *testing.T) gateStatus {
	t.Helper()
	r, err := do(http.MethodGet, g.url()+"/_gate/status", "")
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("GET /_gate/status: %v %s", err, r)
	}
	var s gateStatus
	if err := json.Unmarshal([]byte(r.body), &s); err != nil {
		t.Fatalf("GET /_gate/status: %v in %s", err, r.body)
	}
	return s
}

// response is a whole HTTP answer.
type response struct {
	status int
	header http.Header
	body   string
}

func (r response) String() string {
	body := r.body
	if len(body) > 2000 {
		body = body[:2000] + "..."
	}
	return fmt.Sprintf("HTTP %d %s", r.status, body)
}

// do sends one request (a JSON body if body is not empty) and reads the whole
// answer; streamed answers included, bounded by a minute.
func do(method, url, body string) (response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return response{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: reading the answer: %w", method, url, err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}, nil
}

// get is do(GET) that fails the test on a transport error.
func get(t *testing.T, url string) response {
	t.Helper()
	r, err := do(http.MethodGet, url, "")
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return r
}

func post(t *testing.T, url, body string) response {
	t.Helper()
	r, err := do(http.MethodPost, url, body)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return r
}
