package examples_test

import (
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"
)

// PromQL metric names, found without a PromQL parser (a heavy dependency):
// strings, label matchers, ranges, grouping label lists and Grafana
// variables are removed, then every identifier that is not a keyword, a
// number or a function call is a metric name.
var (
	promStringRE   = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promMatchersRE = regexp.MustCompile(`\{[^{}]*\}`)
	promRangeRE    = regexp.MustCompile(`\[[^\[\]]*\]`)
	promGroupingRE = regexp.MustCompile(`(?i)\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	grafanaVarRE   = regexp.MustCompile(`\$\{[^}]*\}|\$\w+`)
	promTokenRE    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*|[0-9][A-Za-z0-9_.]*`)
	promKeywords   = map[string]bool{
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"offset": true, "bool": true, "and": true, "or": true, "unless": true, "inf": true, "nan": true,
	}
)

// metricNames returns the metric names a PromQL expression reads.
func metricNames(expr string) []string {
	s := promStringRE.ReplaceAllString(expr, `""`)
	s = grafanaVarRE.ReplaceAllString(s, "")
	s = promMatchersRE.ReplaceAllString(s, "")
	s = promRangeRE.ReplaceAllString(s, "")
	s = promGroupingRE.ReplaceAllString(s, "")
	var names []string
	for _, loc := range promTokenRE.FindAllStringIndex(s, -1) {
		tok := s[loc[0]:loc[1]]
		if tok[0] >= '0' && tok[0] <= '9' || promKeywords[strings.ToLower(tok)] {
			continue
		}
		if loc[0] > 0 && s[loc[0]-1] == '@' { // @ start() / @ end()
			continue
		}
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or an aggregation
		}
		if !slices.Contains(names, tok) {
			names = append(names, tok)
		}
	}
	sort.Strings(names)
	return names
}

// labelValuesRE is Grafana's label_values(metric_or_selector, label).
var labelValuesRE = regexp.MustCompile(`^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)

// wellKnown are metrics from elsewhere that the examples may use: Prometheus'
// own per-target up, and kube-state-metrics' Deployment replicas.
var wellKnown = map[string]bool{
	"up":                              true,
	"kube_deployment_status_replicas": true,
	"kube_deployment_spec_replicas":   true,
	"kube_deployment_status_replicas_available":   true,
	"kube_deployment_status_replicas_unavailable": true,
	"kube_deployment_status_replicas_updated":     true,
}

// servedOnlyForAPool are the replica metrics (docs/replicas.md): served
// only for a pool of replicas, which the learnt exporter (one unnamed
// backend) does not run; collector's TestGateReplicasCollector checks their
// exposition.
var servedOnlyForAPool = map[string]bool{
	"openwebui_gate_replica_up":                   true,
	"openwebui_gate_replica_draining":             true,
	"openwebui_gate_replica_inflight_requests":    true,
	"openwebui_gate_replica_requests_total":       true,
	"openwebui_gate_replica_refused_total":        true,
	"openwebui_gate_replica_answers_at_once_seen": true,
}

// servedAfterAWarmUp are the warming metrics (docs/warming.md): they have
// series only once the gate has tried to warm a model, which the learnt
// exporter (its backend refuses connections) never does; gate/warm_test.go
// and collector/warm_test.go check them.
var servedAfterAWarmUp = map[string]bool{
	"openwebui_gate_warmups_total":                  true,
	"openwebui_gate_warmup_duration_seconds":        true,
	"openwebui_gate_warmup_duration_seconds_bucket": true,
	"openwebui_gate_warm_models":                    true,
}

// servedInSomeSetups: a metric served only in a setup the learnt exporter
// does not run.
func servedInSomeSetups(name string) bool {
	return servedOnlyForAPool[name] || servedAfterAWarmUp[name]
}

// checkExpr reports metric names in expr that neither the exporter serves nor
// are well known, and an expression that reads no metric at all.
func checkExpr(t *testing.T, where, expr string) []string {
	t.Helper()
	names := metricNames(expr)
	if len(names) == 0 {
		t.Errorf("%s: %q reads no metric", where, expr)
	}
	for _, n := range names {
		if !facts.metrics[n] && !wellKnown[n] && !servedInSomeSetups(n) {
			var ours []string
			for _, m := range sortedKeys(facts.metrics) {
				if strings.HasPrefix(m, "openwebui_") {
					ours = append(ours, m)
				}
			}
			t.Errorf("%s: %q reads %s, which the exporter does not serve (it serves %s, go_*, process_*)", where, expr, n, strings.Join(ours, ", "))
		}
	}
	return names
}

func TestMetricNames(t *testing.T) {
	cases := map[string][]string{
		`max(openwebui_active_users)`: {"openwebui_active_users"},
		`up{job="openwebui-exporter"} == 0 or absent(up{job="openwebui-exporter"})`:                            {"up"},
		`time() - openwebui_last_success_timestamp_seconds > 300`:                                              {"openwebui_last_success_timestamp_seconds"},
		`sum by (job) (rate(foo_total{a="b}{"}[5m:1m] offset 1h)) / on(instance) group_left(version) bar_info`: {"bar_info", "foo_total"},
		`sum(kube_deployment_status_replicas{deployment=~"$ollama"})`:                                          {"kube_deployment_status_replicas"},
		`histogram_quantile(0.9, sum without(le) (x_bucket[$__rate_interval])) > bool 1e3 unless y @ start()`:  {"x_bucket", "y"},
		`openwebui_up{job=~"${job}"} and on() vector(1)`:                                                       {"openwebui_up"},
		`{__name__="openwebui_up"}`:   nil,
		`-Inf < NaN or 0x1F`:          nil,
		`a:recording:rule_rate5m * 2`: {"a:recording:rule_rate5m"},
	}
	for expr, want := range cases {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%q) = %q, want %q", expr, got, want)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestGateAlertsReadServedMetrics: every expression of the gate's alerts
// (the chart's alerts/gate.rules.yaml, which the kustomize gate component
// copies) reads metrics the exporter serves, or that land with another
// branch.
func TestGateAlertsReadServedMetrics(t *testing.T) {
	const file = "../charts/openwebui-exporter/alerts/gate.rules.yaml"
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			checkExpr(t, file+" alert "+r.Alert, r.Expr)
			n++
		}
	}
	if n < 5 {
		t.Errorf("%s: %d alerts, want the gate's 5 at least", file, n)
	}
}
