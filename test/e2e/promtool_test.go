//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPromtool checks the examples' Prometheus configurations and the
// PrometheusRule's rules with promtool, and unit-tests the alerts.
func TestPromtool(t *testing.T) {
	requireTool(t, "promtool")
	for _, cfg := range []string{"examples/prometheus.yml", "examples/compose/prometheus.yml"} {
		out, code := promtool(t, nil, "check", "config", cfg)
		if code != 0 {
			t.Errorf("promtool check config %s: exit %d\n%s", cfg, code, out)
		} else {
			t.Logf("promtool check config %s:\n%s", cfg, strings.TrimSpace(out))
		}
	}

	dir := t.TempDir()
	rules := writeRules(t, dir, false)
	out, code := promtool(t, nil, "check", "rules", rules)
	if code != 0 {
		t.Fatalf("promtool check rules (the spec of %s): exit %d\n%s", prometheusRuleFile, code, out)
	}
	t.Logf("promtool check rules (the spec of %s):\n%s", prometheusRuleFile, strings.TrimSpace(out))

	// What the alerts must do, on made-up series (one sample a minute).
	bare := writeRules(t, dir, true)
	tests := filepath.Join(dir, "rules_test.yml")
	if err := os.WriteFile(tests, []byte(strings.ReplaceAll(ruleTests, "RULES", bare)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = promtool(t, nil, "test", "rules", tests)
	if code != 0 {
		t.Fatalf("promtool test rules: exit %d\n%s", code, out)
	}
	t.Logf("promtool test rules:\n%s", strings.TrimSpace(out))
}

const ruleTests = `
rule_files:
  - RULES
evaluation_interval: 1m
tests:
  # down: the exporter cannot be scraped from minute 2.
  # unreachable: the exporter answers, but openwebui_up is 0 from minute 2.
  # stale: the last good count is from minute 3 (t=180s), then no success.
  # ok: everything fine.
  - interval: 1m
    input_series:
      - series: 'up{job="openwebui-exporter", instance="down"}'
        values: '1 1 0x10'
      - series: 'up{job="openwebui-exporter", instance="unreachable"}'
        values: '1x12'
      - series: 'up{job="openwebui-exporter", instance="stale"}'
        values: '1x12'
      - series: 'up{job="openwebui-exporter", instance="ok"}'
        values: '1x12'
      - series: 'openwebui_up{job="openwebui-exporter", instance="unreachable"}'
        values: '1 1 0x10'
      - series: 'openwebui_up{job="openwebui-exporter", instance="stale"}'
        values: '1x3 0x9'
      - series: 'openwebui_up{job="openwebui-exporter", instance="ok"}'
        values: '1x12'
      - series: 'openwebui_last_success_timestamp_seconds{job="openwebui-exporter", instance="stale"}'
        values: '0+60x3 180x8'
      - series: 'openwebui_last_success_timestamp_seconds{job="openwebui-exporter", instance="ok"}'
        values: '0+60x12'
    alert_rule_test:
      # Down or unreachable for 4 minutes: pending, not firing.
      - eval_time: 6m
        alertname: OpenWebUIExporterDown
        exp_alerts: []
      - eval_time: 6m
        alertname: OpenWebUIUnreachable
        exp_alerts: []
      # For 6 minutes: firing.
      - eval_time: 8m
        alertname: OpenWebUIExporterDown
        exp_alerts:
          - exp_labels: {severity: warning, job: openwebui-exporter, instance: down}
      - eval_time: 8m
        alertname: OpenWebUIUnreachable
        exp_alerts:
          - exp_labels: {severity: warning, job: openwebui-exporter, instance: unreachable}
      # The count of "stale" is 240 s old at 7m (fine), 360 s at 9m (stale).
      - eval_time: 7m
        alertname: OpenWebUIActiveUsersStale
        exp_alerts: []
      - eval_time: 9m
        alertname: OpenWebUIActiveUsersStale
        exp_alerts:
          - exp_labels: {severity: warning, job: openwebui-exporter, instance: stale}
  # No target at all (Deployment scaled to 0, no endpoints): absent() fires.
  - interval: 1m
    input_series:
      - series: 'up{job="something-else", instance="x"}'
        values: '1x12'
    alert_rule_test:
      - eval_time: 4m
        alertname: OpenWebUIExporterDown
        exp_alerts: []
      - eval_time: 6m
        alertname: OpenWebUIExporterDown
        exp_alerts:
          - exp_labels: {severity: warning, job: openwebui-exporter}
`
