package examples_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

// exporter is what the examples must agree with, taken from the real binary:
// its flags and env vars (from --help-long) and what it serves (run against
// the fake Open WebUI in admin mode, so every metric shows).
type exporter struct {
	flags         map[string]bool // long flag names, "no-x" included for bool flags
	flagHelp      map[string]flagHelp
	envs          map[string]bool // env vars the exporter reads
	defaultListen string          // --web.listen-address default, e.g. ":8080"
	metrics       map[string]bool // metric family names on /metrics
	activeUsers   map[string]any  // the JSON body of /active_users
}

var facts *exporter

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "examples-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	facts, err = learnExporter(dir)
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, "learning what the exporter offers:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// flagHelp is what --help-long says of one flag.
type flagHelp struct {
	def    string // the default, "" if none (a bool's is "false")
	env    string // the env var kingpin reads for it, "" if none
	isBool bool
}

var (
	// A flag's line is indented by 2 ("  -h, --help") or 6; its wrapped help text deeper.
	helpFlagRE = regexp.MustCompile(`(?m)^  (?:-\w, |    )--(\[no-\])?([a-z0-9][a-z0-9.\-]*)(=\S*)?`)
	helpEnvRE  = regexp.MustCompile(`\(\$([A-Z_][A-Z0-9_]*)\)`)
	typeLineRE = regexp.MustCompile(`(?m)^# TYPE (\S+) (\S+)`)
)

func learnExporter(dir string) (*exporter, error) {
	bin, err := harness.GoBuild(dir, ".", "openwebui_exporter")
	if err != nil {
		return nil, err
	}
	help, err := exec.Command(bin, "--help-long").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("--help-long: %w\n%s", err, help)
	}
	e := &exporter{flags: map[string]bool{}, flagHelp: map[string]flagHelp{}, envs: map[string]bool{}, metrics: map[string]bool{}}
	locs := helpFlagRE.FindAllStringSubmatchIndex(string(help), -1)
	for i, loc := range locs {
		m := helpFlagRE.FindStringSubmatch(string(help)[loc[0]:loc[1]])
		e.flags[m[2]] = true
		if m[1] != "" {
			e.flags["no-"+m[2]] = true
		}
		if m[2] == "web.listen-address" {
			e.defaultListen = strings.TrimPrefix(m[3], "=")
		}
		// The flag's text runs until the next flag.
		end := len(help)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		h := flagHelp{def: helpDefault(strings.TrimPrefix(m[3], "=")), isBool: m[1] != ""}
		if h.isBool {
			h.def = "false"
		}
		if env := helpEnvRE.FindStringSubmatch(string(help)[loc[1]:end]); env != nil {
			h.env = env[1]
		}
		e.flagHelp[m[2]] = h
	}
	for _, m := range helpEnvRE.FindAllStringSubmatch(string(help), -1) {
		e.envs[m[1]] = true
	}
	// Read outside kingpin (main.go, README): the token and the old scaler's PORT.
	e.envs["TOKEN"], e.envs["PORT"] = true, true
	if len(e.flags) < 10 || e.defaultListen == "" {
		return nil, fmt.Errorf("could not parse --help-long output:\n%s", help)
	}

	fake := fakeopenwebui.New(fakeopenwebui.Config{})
	key := fake.IssueAPIKey(fake.AddUser("exporter", "admin"))
	fake.SetActiveHumans(3)
	upstream := httptest.NewServer(fake)
	defer upstream.Close()

	// The gate too, so that its metrics show: in front of a port nothing
	// listens on (port 1 of loopback refuses), so its backend sleeps.
	addr, gateAddr := harness.FreeAddr(), harness.FreeAddr()
	cmd := exec.Command(bin, "--openwebui.url="+upstream.URL, "--openwebui.count-mode=admin",
		"--web.listen-address="+addr, "--cache.ttl=0", "--log.level=warn",
		"--gate.listen-address="+gateAddr, "--gate.backend=http://127.0.0.1:1")
	cmd.Env = harness.CleanEnv("TOKEN=" + key)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	base := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		var body []byte
		if body, lastErr = get(base + "/active_users"); lastErr == nil {
			if lastErr = json.Unmarshal(body, &e.activeUsers); lastErr == nil {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if lastErr != nil {
		return nil, fmt.Errorf("exporter never answered /active_users: %w\nexporter log:\n%s", lastErr, logs.String())
	}
	metrics, err := get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	for _, m := range typeLineRE.FindAllStringSubmatch(string(metrics), -1) {
		e.metrics[m[1]] = true
		if m[2] == "histogram" { // the series a query reads
			e.metrics[m[1]+"_bucket"], e.metrics[m[1]+"_sum"], e.metrics[m[1]+"_count"] = true, true, true
		}
	}
	return e, nil
}

// helpDefault reads what --help-long shows after "--flag=": a default
// (quoted when it is a string: "" is none), or a placeholder such as
// OPENWEBUI.URL, FILE or [NAME=]URL[,...], which means there is none.
func helpDefault(shown string) string {
	if unquoted, err := strconv.Unquote(shown); err == nil {
		return unquoted
	}
	if strings.Contains(shown, "[") || strings.ToUpper(shown) == shown && strings.ToLower(shown) != shown {
		return "" // a placeholder
	}
	return shown
}

func get(url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body, nil
}

// TestExporterFacts guards the harness: if it learnt nothing, every other
// check would pass vacuously.
func TestExporterFacts(t *testing.T) {
	for _, f := range []string{"openwebui.url", "openwebui.token-file", "web.listen-address", "web.config.file", "cache.ttl"} {
		if !facts.flags[f] {
			t.Errorf("flag --%s not found in --help-long", f)
		}
	}
	for _, m := range []string{"openwebui_up", "openwebui_active_users", "openwebui_users", "openwebui_scrape_duration_seconds",
		"openwebui_last_success_timestamp_seconds", "openwebui_version_info", "openwebui_exporter_build_info",
		"openwebui_gate_backend_state", "openwebui_gate_held_requests", "openwebui_backend_demand"} {
		if !facts.metrics[m] {
			t.Errorf("metric %s not served by the exporter (served: %v)", m, sortedKeys(facts.metrics))
		}
	}
	if facts.activeUsers["active_users"] != 3.0 {
		t.Errorf("/active_users = %v, want active_users 3", facts.activeUsers)
	}
	if facts.defaultListen != ":8080" {
		t.Errorf("--web.listen-address default %q, want :8080 (the port of every example)", facts.defaultListen)
	}
}
