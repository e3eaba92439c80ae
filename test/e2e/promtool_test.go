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
		t.Fatalf("promtool check rules (the spec of %s and %s): exit %d\n%s", prometheusRuleFile, gateRulesFile, code, out)
	}
	t.Logf("promtool check rules (the spec of %s and %s):\n%s", prometheusRuleFile, gateRulesFile, strings.TrimSpace(out))

	// What the alerts must do, on made-up series (one sample a minute).
	bare := writeRules(t, dir, true)
	tests := filepath.Join(dir, "rules_test.yml")
	if err := os.WriteFile(tests, []byte(strings.ReplaceAll(ruleTests+gateRuleTests, "RULES", bare)), 0o644); err != nil {
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

// gateRuleTests: the gate's alerts (gateRulesFile), each firing where it
// should and not where it should not. Backend "big" is the one in trouble
// in each case; the others are the near misses.
const gateRuleTests = `
  # Held without a break for 3 minutes: big from minute 1; small lets go at
  # minute 3 and holds again, so its 3 minutes never add up.
  - interval: 1m
    input_series:
      - series: 'openwebui_gate_held_requests{job="openwebui-exporter", instance="a", backend="big"}'
        values: '0 1 2 1 1 1 0'
      - series: 'openwebui_gate_held_requests{job="openwebui-exporter", instance="a", backend="small"}'
        values: '0 1 1 0 1 1 0'
    alert_rule_test:
      - eval_time: 3m
        alertname: OpenWebUIGateRequestHeldTooLong
        exp_alerts: []
      - eval_time: 4m
        alertname: OpenWebUIGateRequestHeldTooLong
        exp_alerts:
          - exp_labels: {severity: warning, job: openwebui-exporter, instance: a, backend: big}
      - eval_time: 6m
        alertname: OpenWebUIGateRequestHeldTooLong
        exp_alerts: []

  # Asleep for 10 minutes: big with demand 1 (KEDA does not scale it); small
  # asleep with demand 0 (as it should be); medium starting with demand 1
  # (KEDA scaled it, the pod is on its way).
  - interval: 1m
    input_series:
      - series: 'openwebui_gate_backend_state{job="openwebui-exporter", instance="a", backend="big", state="asleep"}'
        values: '1x15'
      - series: 'openwebui_backend_demand{job="openwebui-exporter", instance="a", backend="big"}'
        values: '1x15'
      - series: 'openwebui_gate_backend_state{job="openwebui-exporter", instance="a", backend="small", state="asleep"}'
        values: '1x15'
      - series: 'openwebui_backend_demand{job="openwebui-exporter", instance="a", backend="small"}'
        values: '0x15'
      - series: 'openwebui_gate_backend_state{job="openwebui-exporter", instance="a", backend="medium", state="asleep"}'
        values: '0x15'
      - series: 'openwebui_gate_backend_state{job="openwebui-exporter", instance="a", backend="medium", state="starting"}'
        values: '1x15'
      - series: 'openwebui_backend_demand{job="openwebui-exporter", instance="a", backend="medium"}'
        values: '1x15'
    alert_rule_test:
      - eval_time: 9m
        alertname: OpenWebUIGateAsleepWithDemand
        exp_alerts: []
      - eval_time: 10m
        alertname: OpenWebUIGateAsleepWithDemand
        exp_alerts:
          - exp_labels: {severity: warning, job: openwebui-exporter, instance: a, backend: big, state: asleep}

  # Hold timeouts: big had one at minute 6, summed over two gate replicas
  # (a saw none); small never. An hour later it is quiet again.
  - interval: 1m
    input_series:
      - series: 'openwebui_gate_requests_total{job="openwebui-exporter", instance="a", backend="big", outcome="hold_timeout"}'
        values: '0x100'
      - series: 'openwebui_gate_requests_total{job="openwebui-exporter", instance="b", backend="big", outcome="hold_timeout"}'
        values: '0x5 1x95'
      - series: 'openwebui_gate_requests_total{job="openwebui-exporter", instance="a", backend="small", outcome="hold_timeout"}'
        values: '0x100'
      - series: 'openwebui_gate_requests_total{job="openwebui-exporter", instance="a", backend="small", outcome="delivered"}'
        values: '0+1x100'
    alert_rule_test:
      - eval_time: 5m
        alertname: OpenWebUIGateHoldTimeouts
        exp_alerts: []
      - eval_time: 30m
        alertname: OpenWebUIGateHoldTimeouts
        exp_alerts:
          - exp_labels: {severity: warning, job: openwebui-exporter, backend: big}
      - eval_time: 90m
        alertname: OpenWebUIGateHoldTimeouts
        exp_alerts: []

  # Open WebUI asks for big's models for 15 minutes and the gate never
  # learns them; small learnt its lists at minute 4; other is asked
  # nothing (a fresh gate nobody uses is not stuck). The first ask is seen
  # at minute 1, so the alert fires at minute 11.
  - interval: 1m
    input_series:
      - series: 'openwebui_gate_requests_total{job="openwebui-exporter", instance="a", backend="big", outcome="learning"}'
        values: '0+1x15'
      - series: 'openwebui_gate_lists_known{job="openwebui-exporter", instance="a", backend="big"}'
        values: '0x15'
      - series: 'openwebui_gate_requests_total{job="openwebui-exporter", instance="a", backend="small", outcome="learning"}'
        values: '0+1x15'
      - series: 'openwebui_gate_lists_known{job="openwebui-exporter", instance="a", backend="small"}'
        values: '0x3 1x12'
      - series: 'openwebui_gate_requests_total{job="openwebui-exporter", instance="a", backend="other", outcome="learning"}'
        values: '0x15'
      - series: 'openwebui_gate_lists_known{job="openwebui-exporter", instance="a", backend="other"}'
        values: '0x15'
    alert_rule_test:
      - eval_time: 10m
        alertname: OpenWebUIGateLearningStuck
        exp_alerts: []
      - eval_time: 11m
        alertname: OpenWebUIGateLearningStuck
        exp_alerts:
          - exp_labels: {severity: warning, job: openwebui-exporter, instance: a, backend: big}

  # Replicas of big, which is up: 10.0.0.1 refuses; 10.0.0.2 refuses but
  # drains (preStop); 10.0.0.3 serves. Pool small is asleep: its replica
  # refusing is the pool sleeping, not a fault.
  - interval: 1m
    input_series:
      - series: 'openwebui_gate_backend_state{job="openwebui-exporter", instance="a", backend="big", state="up"}'
        values: '1x10'
      - series: 'openwebui_gate_replica_up{job="openwebui-exporter", instance="a", backend="big", replica="10.0.0.1:11434"}'
        values: '0x10'
      - series: 'openwebui_gate_replica_draining{job="openwebui-exporter", instance="a", backend="big", replica="10.0.0.1:11434"}'
        values: '0x10'
      - series: 'openwebui_gate_replica_up{job="openwebui-exporter", instance="a", backend="big", replica="10.0.0.2:11434"}'
        values: '0x10'
      - series: 'openwebui_gate_replica_draining{job="openwebui-exporter", instance="a", backend="big", replica="10.0.0.2:11434"}'
        values: '1x10'
      - series: 'openwebui_gate_replica_up{job="openwebui-exporter", instance="a", backend="big", replica="10.0.0.3:11434"}'
        values: '1x10'
      - series: 'openwebui_gate_backend_state{job="openwebui-exporter", instance="a", backend="small", state="up"}'
        values: '0x10'
      - series: 'openwebui_gate_replica_up{job="openwebui-exporter", instance="a", backend="small", replica="10.0.1.1:11434"}'
        values: '0x10'
    alert_rule_test:
      - eval_time: 4m
        alertname: OpenWebUIGateReplicaRefusing
        exp_alerts: []
      - eval_time: 5m
        alertname: OpenWebUIGateReplicaRefusing
        exp_alerts:
          - exp_labels: {severity: warning, job: openwebui-exporter, instance: a, backend: big, replica: "10.0.0.1:11434"}

  # Pool big's replica 10.0.0.2 is seen running 2 answers at once from
  # minute 3 (parallel=1); pool small's replicas never more than parallel=.
  - interval: 1m
    input_series:
      - series: 'openwebui_gate_replica_answers_at_once_seen{job="openwebui-exporter", instance="a", backend="big", replica="10.0.0.1:11434"}'
        values: '0x10'
      - series: 'openwebui_gate_replica_answers_at_once_seen{job="openwebui-exporter", instance="a", backend="big", replica="10.0.0.2:11434"}'
        values: '0x2 2x8'
      - series: 'openwebui_gate_replica_answers_at_once_seen{job="openwebui-exporter", instance="a", backend="small", replica="10.0.1.1:11434"}'
        values: '0x10'
    alert_rule_test:
      - eval_time: 2m
        alertname: OpenWebUIGatePoolParallelTooLow
        exp_alerts: []
      - eval_time: 3m
        alertname: OpenWebUIGatePoolParallelTooLow
        exp_alerts:
          - exp_labels: {severity: warning, job: openwebui-exporter, instance: a, backend: big}
      - eval_time: 9m
        alertname: OpenWebUIGatePoolParallelTooLow
        exp_alerts:
          - exp_labels: {severity: warning, job: openwebui-exporter, instance: a, backend: big}
`
