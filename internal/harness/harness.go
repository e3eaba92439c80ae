// Package harness builds and starts the exporter and the fake Open WebUI as
// processes on loopback, for tests, benchmarks and the soak program, and
// measures them.
package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/heldport"
)

// Token is the fake's demo API key, owned by its "exporter" account.
const Token = "sk-0123456789abcdef0123456789abcdef"

// Start runs bin with env added to the environment; its stderr is passed on.
func Start(bin string, env []string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	return cmd, nil
}

// StartFake runs the fake Open WebUI on addr and waits until it listens.
func StartFake(bin, addr string, args ...string) (*exec.Cmd, error) {
	cmd, err := Start(bin, nil, append([]string{"--listen", addr, "--token", Token}, args...)...)
	if err != nil {
		return nil, err
	}
	return cmd, WaitListening(addr)
}

// StartExporter runs the exporter against the fake at fakeAddr, listening on
// addr, and waits until it listens.
func StartExporter(bin, addr, fakeAddr string, args ...string) (*exec.Cmd, error) {
	cmd, err := Start(bin, []string{"API_URL=http://" + fakeAddr, "TOKEN=" + Token},
		append([]string{"--web.listen-address=" + addr, "--log.level=warn"}, args...)...)
	if err != nil {
		return nil, err
	}
	return cmd, WaitListening(addr)
}

// Stop kills the process and reaps it; nil is fine.
func Stop(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Kill()
	cmd.Wait()
}

// HeldAddr returns a loopback address held for the rest of this process
// (see internal/heldport): a server, here or in a child, binds it whenever it
// starts, and no other listener can be given it before, between or after.
func HeldAddr() string {
	p, err := heldport.Hold("127.0.0.1", 0)
	if err != nil {
		panic(err)
	}
	return p.Addr()
}

// WaitListening waits, 10 s at most, until addr accepts connections.
func WaitListening(addr string) error {
	return WaitFor(10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// WaitFor polls ok every 5 ms until it holds or d has passed.
func WaitFor(d time.Duration, ok func() bool) error {
	for deadline := time.Now().Add(d); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", d)
		}
	}
	return nil
}

// Get returns the status and body of a GET, or status 0 on a transport error.
func Get(client *http.Client, url string) (int, string) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Post sends an empty POST (the fake's control endpoints).
func Post(url string) error {
	resp, err := http.Post(url, "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s", url, resp.Status)
	}
	return nil
}

// RSSKiB is the resident set size of a process, from /proc.
func RSSKiB(pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	return -1
}

// Percentile returns the p-th percentile (0-100, nearest rank) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

// Ms formats a duration in milliseconds.
func Ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

// ModulePath is this module's import path, for GoBuild.
const ModulePath = "github.com/openwebui-exporter/openwebui_exporter"

// GoBuild builds the package pkg of this module (an import path relative to
// ModulePath, "." for the exporter) into dir/name and returns the binary.
func GoBuild(dir, pkg, name string) (string, error) {
	out := filepath.Join(dir, name)
	path := ModulePath
	if pkg != "." {
		path += "/" + strings.TrimPrefix(pkg, "./")
	}
	if b, err := exec.Command("go", "build", "-o", out, path).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", path, err, b)
	}
	return out, nil
}

// CleanEnv is this process's environment without the exporter's own
// variables (so a developer's TOKEN cannot leak into a test), plus extra.
func CleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		switch name, _, _ := strings.Cut(kv, "="); name {
		case "API_URL", "TOKEN", "CACHE_TIMEOUT", "PORT":
		default:
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// SyncBuffer collects the output of concurrent writers (a process's stdout
// and stderr, a logger).
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
