//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"

	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

// moduleRoot is where go test runs the package from, relative.
const moduleRoot = "../.."

// requireTool finds a program on PATH and fails (never skips) without it:
// CI must not pass by not testing.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found on PATH: install it (Debian: apt-get install -y prometheus; .ci/run does)", name)
	}
	return p
}

// goBuild builds a package of this module into dir and returns the binary.
func goBuild(t *testing.T, dir, pkg, name string) string {
	t.Helper()
	bin, err := harness.GoBuild(dir, pkg, name)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// proc is a process started by the test; it is stopped in cleanup at the
// latest, and its output is shown if the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *harness.SyncBuffer
	done chan struct{}
}

func start(t *testing.T, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), out: &harness.SyncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// Killed with the test binary, should that die without cleanup.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Logf("started %s (pid %d): %s %s", name, p.cmd.Process.Pid, filepath.Base(bin), strings.Join(args, " "))
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			out := p.out.String()
			if len(out) > 6000 {
				out = "...\n" + out[len(out)-6000:]
			}
			t.Logf("output of %s:\n%s", name, out)
		}
	})
	return p
}

// stop sends SIGTERM, then SIGKILL after 5 s, and waits for the exit.
func (p *proc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Logf("%s ignored SIGTERM for 5s; killing it", p.name)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// eventually polls check until it reports true, for at most timeout.
func eventually(t *testing.T, timeout time.Duration, what string, check func() (bool, string)) {
	t.Helper()
	begin := time.Now()
	for {
		ok, state := check()
		if ok {
			t.Logf("ok: %s (%s; after %s)", what, state, time.Since(begin).Round(10*time.Millisecond))
			return
		}
		if time.Since(begin) > timeout {
			t.Fatalf("timed out after %s waiting for: %s; last seen: %s", timeout, what, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type response struct {
	status int
	body   []byte
}

// request does one HTTP request with a short deadline.
func request(method, rawURL, user, password string) (response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		return response{}, err
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return response{resp.StatusCode, body}, err
}

// waitHTTP200 waits until GET url answers 200.
func waitHTTP200(t *testing.T, what, rawURL string) {
	t.Helper()
	eventually(t, 30*time.Second, what, func() (bool, string) {
		r, err := request(http.MethodGet, rawURL, "", "")
		if err != nil {
			return false, err.Error()
		}
		return r.status == http.StatusOK, fmt.Sprintf("HTTP %d %s", r.status, strings.TrimSpace(string(r.body)))
	})
}

// prom is a running Prometheus server's HTTP API.
type prom struct{ base string }

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s promSample) value() (float64, error) {
	str, ok := s.Value[1].(string)
	if !ok {
		return 0, fmt.Errorf("value %v is not a string", s.Value[1])
	}
	return strconv.ParseFloat(str, 64)
}

// query runs an instant query and returns the vector's samples.
func (p prom) query(q string) ([]promSample, error) {
	r, err := request(http.MethodGet, p.base+"/api/v1/query?"+url.Values{"query": {q}}.Encode(), "", "")
	if err != nil {
		return nil, err
	}
	var res struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string       `json:"resultType"`
			Result     []promSample `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(r.body, &res); err != nil {
		return nil, fmt.Errorf("HTTP %d: %w: %s", r.status, err, r.body)
	}
	if res.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", q, res.Error)
	}
	if res.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %s, want vector", q, res.Data.ResultType)
	}
	return res.Data.Result, nil
}

func (p prom) describe(q string) string {
	s, err := p.query(q)
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, x := range s {
		parts = append(parts, fmt.Sprintf("%v => %v", x.Metric, x.Value[1]))
	}
	return fmt.Sprintf("%s: %d samples [%s]", q, len(s), strings.Join(parts, "; "))
}

var errEmpty = errors.New("target may be lost, the result is empty")

// kedaPrometheus reads a query the way KEDA's prometheus scaler does with
// ignoreNullValues "false" (pkg/scalers/prometheus_scaler.go): an empty
// result, several samples, or a non-finite value is an error.
func (p prom) kedaPrometheus(q string) (float64, error) {
	s, err := p.query(q)
	switch {
	case err != nil:
		return 0, err
	case len(s) == 0:
		return 0, errEmpty
	case len(s) > 1:
		return 0, fmt.Errorf("query %s returned multiple elements", q)
	}
	v, err := s[0].value()
	if err == nil && (math.IsInf(v, 0) || math.IsNaN(v)) {
		err = fmt.Errorf("query returns %f", v)
	}
	return v, err
}

type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (p prom) alerts() ([]promAlert, error) {
	r, err := request(http.MethodGet, p.base+"/api/v1/alerts", "", "")
	if err != nil {
		return nil, err
	}
	var res struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	err = json.Unmarshal(r.body, &res)
	return res.Data.Alerts, err
}

// kedaMetricsAPI reads an exporter URL the way KEDA's metrics-api scaler
// does (format json): any status but 200 is an error, and the value at
// valueLocation must be a number.
func kedaMetricsAPI(rawURL, valueLocation, user, password string) (float64, error) {
	r, err := request(http.MethodGet, rawURL, user, password)
	if err != nil {
		return 0, err
	}
	if r.status != http.StatusOK {
		return 0, fmt.Errorf("api returned %d: %s", r.status, strings.TrimSpace(string(r.body)))
	}
	var body map[string]any
	if err := json.Unmarshal(r.body, &body); err != nil {
		return 0, err
	}
	v, ok := body[valueLocation].(float64)
	if !ok {
		return 0, fmt.Errorf("valueLocation %s must point to a numeric value in %s", valueLocation, r.body)
	}
	return v, nil
}

// yamlDocs decodes every document of a YAML file under the module root.
func yamlDocs(t *testing.T, file string) []map[any]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(moduleRoot, file))
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[any]any
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var d map[any]any
		if err := dec.Decode(&d); errors.Is(err, io.EOF) {
			return docs
		} else if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		docs = append(docs, d)
	}
}

// field walks a decoded YAML value along map keys and list indexes.
func field(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, _ := v.(map[any]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func fieldString(v any, keys ...any) string {
	s, _ := field(v, keys...).(string)
	return s
}

// secretString returns stringData[key] of the named Secret in file.
func secretString(t *testing.T, file, name, key string) string {
	t.Helper()
	for _, d := range yamlDocs(t, file) {
		if fieldString(d, "kind") == "Secret" && fieldString(d, "metadata", "name") == name {
			if v := fieldString(d, "stringData", key); v != "" {
				return v
			}
		}
	}
	t.Fatalf("%s: no Secret %s with stringData.%s", file, name, key)
	return ""
}

const (
	prometheusRuleFile = "examples/kubernetes/base/prometheusrule.yaml"
	// The gate's alerts: a plain rule group file the chart's PrometheusRule
	// includes as it stands (with gate.enabled).
	gateRulesFile = "charts/openwebui-exporter/alerts/gate.rules.yaml"
)

// ruleCount is how many rules writeRules writes: the PrometheusRule's and the
// gate's.
func ruleCount(t *testing.T) int {
	t.Helper()
	groups, _ := field(yamlDocs(t, prometheusRuleFile)[0], "spec", "groups").([]any)
	gateGroups, _ := field(yamlDocs(t, gateRulesFile)[0], "groups").([]any)
	n := 0
	for _, g := range append(groups, gateGroups...) {
		rules, _ := field(g, "rules").([]any)
		n += len(rules)
	}
	return n
}

// writeRules writes the PrometheusRule's groups and the gate's into one
// rules file for Prometheus and promtool. Without annotations when bare is
// set: promtool's rule unit tests compare annotations verbatim.
func writeRules(t *testing.T, dir string, bare bool) string {
	t.Helper()
	docs := yamlDocs(t, prometheusRuleFile)
	if len(docs) != 1 || fieldString(docs[0], "kind") != "PrometheusRule" {
		t.Fatalf("%s: want one PrometheusRule", prometheusRuleFile)
	}
	groups, _ := field(docs[0], "spec", "groups").([]any)
	if len(groups) == 0 {
		t.Fatalf("%s: no spec.groups", prometheusRuleFile)
	}
	gate := yamlDocs(t, gateRulesFile)
	gateGroups, _ := field(gate[0], "groups").([]any)
	if len(gate) != 1 || len(gateGroups) == 0 {
		t.Fatalf("%s: want one document with groups", gateRulesFile)
	}
	groups = append(groups, gateGroups...)
	if bare {
		for _, g := range groups {
			rules, _ := field(g, "rules").([]any)
			for _, r := range rules {
				delete(r.(map[any]any), "annotations")
			}
		}
	}
	out, err := yaml.Marshal(map[string]any{"groups": groups})
	if err != nil {
		t.Fatal(err)
	}
	name := "rules.yml"
	if bare {
		name = "rules-bare.yml"
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// promtool runs promtool and returns its combined output and exit code.
func promtool(t *testing.T, stdin []byte, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(requireTool(t, "promtool"), args...)
	cmd.Dir = moduleRoot
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatalf("promtool %s: %v", strings.Join(args, " "), err)
	return "", -1
}
