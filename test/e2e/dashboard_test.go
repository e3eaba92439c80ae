//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

const dashboardFile = "examples/grafana/openwebui-exporter.json"

// grafanaVars are the values the dashboard's variables get in the test, as
// Grafana would put them in a query: "All" of job and backend, the Ollama
// Deployments of the recorded kube-state-metrics, and ranges an operator
// would look at.
var grafanaVars = map[string]string{
	"job":             ".+",
	"backend":         ".+",
	"ollama":          ".*ollama.*",
	"__rate_interval": "1m",
	"__interval":      "15s",
	"__range":         "1h",
	"__range_s":       "3600",
}

// variableValues are the values some of the dashboard's variables must
// offer: $backend, both backends of the test's gate (a single backend and a
// pool).
var variableValues = map[string][]string{
	"backend": {"ollama", "pool"},
}

var grafanaVarRE = regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`)

// grafanaQuery replaces the dashboard's variables in expr, as Grafana does.
func grafanaQuery(t *testing.T, where, expr string) string {
	t.Helper()
	return grafanaVarRE.ReplaceAllStringFunc(expr, func(v string) string {
		m := grafanaVarRE.FindStringSubmatch(v)
		name := m[1] + m[2]
		value, ok := grafanaVars[name]
		if !ok {
			t.Errorf("%s: variable $%s has no value in the test's grafanaVars", where, name)
		}
		return value
	})
}

// checkDashboard runs every query of the dashboard, its variables' included,
// against the test's Prometheus: each must be valid PromQL and return
// series (no typo in a metric or label name).
func checkDashboard(t *testing.T, p prom) {
	raw, err := os.ReadFile(filepath.Join(moduleRoot, dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"` // a query variable's label_values(...)
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	labelValues := regexp.MustCompile(`^label_values\((.*),\s*(\w+)\)$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: definition %q, want label_values(selector, label)", v.Name, v.Definition)
			continue
		}
		q := grafanaQuery(t, "variable "+v.Name, m[1])
		s, err := p.query(q)
		if err != nil || len(s) == 0 {
			t.Errorf("variable %s: %s finds no series: %v", v.Name, q, err)
			continue
		}
		var values []string
		for _, x := range s {
			if !slices.Contains(values, x.Metric[m[2]]) {
				values = append(values, x.Metric[m[2]])
			}
		}
		slices.Sort(values)
		if want, ok := variableValues[v.Name]; ok && !slices.Equal(values, want) {
			t.Errorf("variable %s: %s offers %q, want %q", v.Name, v.Definition, values, want)
			continue
		}
		t.Logf("ok: variable %s: %s (%d series) offers %q", v.Name, q, len(s), values)
	}
	queries := 0
	for _, panel := range dash.Panels {
		if panel.Type == "row" {
			continue
		}
		if len(panel.Targets) == 0 {
			t.Errorf("panel %q has no query", panel.Title)
		}
		for _, target := range panel.Targets {
			queries++
			where := fmt.Sprintf("panel %q query %s", panel.Title, target.RefID)
			q := grafanaQuery(t, where, target.Expr)
			s, err := p.query(q)
			switch {
			case err != nil:
				t.Errorf("%s: %v", where, err)
			case len(s) == 0:
				t.Errorf("%s returns no series (a typo in a metric or label name?): %s", where, q)
			default:
				t.Logf("ok: %s: %d series", where, len(s))
			}
		}
	}
	if queries < 20 {
		t.Errorf("only %d panel queries found in %s: the test checks too little", queries, dashboardFile)
	}
}

// serveKubeStateMetrics serves a recorded kube-state-metrics exposition
// (testdata/kube-state-metrics.prom, Deployments of Open WebUI's chart) on
// loopback, for the dashboard's panels that read kube-state-metrics. The
// listener is bound here and handed to the server: no port race.
func serveKubeStateMetrics(t *testing.T) string {
	t.Helper()
	body, err := os.ReadFile("testdata/kube-state-metrics.prom")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write(body)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// post sends a JSON body and returns the answer, with a deadline long
// enough for a hold.
func post(rawURL, body string, timeout time.Duration) (response, error) {
	client := &http.Client{Timeout: timeout}
	resp, err := client.Post(rawURL, "application/json", strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{resp.StatusCode, b}, err
}
