package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The three KEDA triggers the chart offers.
const (
	triggerPush       = "external-push"
	triggerMetricsAPI = "metrics-api"
	triggerPrometheus = "prometheus"
)

var allTriggers = []string{triggerPush, triggerMetricsAPI, triggerPrometheus}

// chartTriggerName is the chart's keda.trigger value for a KEDA trigger type.
var chartTriggerName = map[string]string{triggerPush: "push", triggerMetricsAPI: "metrics-api", triggerPrometheus: "prometheus"}

// shipped is what we ship for one trigger: the ScaledObject, the exporter's
// arguments and replica count, and the ServiceMonitor's scrape interval.
type shipped struct {
	source         string // where it came from, for the log
	scaledObject   map[string]any
	exporterArgs   []string // behaviour flags only; addresses and files are the suite's
	exporterCount  int
	scrapeInterval time.Duration
}

// shippedFor renders the chart with keda.enabled=true and keda.trigger=t,
// and valuesFiles after the chart's own test values (e.g. gate.backends).
func shippedFor(t *testing.T, trigger string, valuesFiles ...string) shipped {
	t.Helper()
	requireChart(t)
	args := []string{"template", "openwebui-exporter", chartDir(), "--namespace", "chart-render", "--kube-version", cp.kubeVersion}
	// The chart's own test values for this trigger (they name the token
	// Secret the chart insists on), then the trigger itself.
	if f := filepath.Join(chartDir(), "ci", "keda-"+chartTriggerName[trigger]+"-values.yaml"); fileExists(f) {
		args = append(args, "--values", f)
	}
	for _, f := range valuesFiles {
		args = append(args, "--values", f)
	}
	args = append(args, "--set", "keda.enabled=true", "--set", "keda.trigger="+chartTriggerName[trigger])
	out, err := helm(args...)
	if err != nil {
		t.Fatalf("helm %s: %v", strings.Join(args, " "), err)
	}
	s := fromManifests(t, decodeDocs(t, out))
	s.source = "helm template " + strings.Join(args[1:], " ")
	return s
}

func fromManifests(t *testing.T, docs []map[string]any) shipped {
	t.Helper()
	s := shipped{scrapeInterval: time.Minute, exporterCount: 1} // Prometheus' default interval
	for _, d := range docs {
		switch d["kind"] {
		case "ScaledObject":
			if s.scaledObject != nil {
				t.Fatal("more than one ScaledObject rendered")
			}
			s.scaledObject = d
		case "Deployment":
			s.exporterArgs = behaviourArgs(containerArgs(d))
			if spec, _ := d["spec"].(map[string]any); spec != nil {
				if r, ok := spec["replicas"].(int); ok {
					s.exporterCount = r
				}
			}
		case "ServiceMonitor":
			eps, _ := dig(d, "spec", "endpoints").([]any)
			if len(eps) > 0 {
				if iv, ok := eps[0].(map[string]any)["interval"].(string); ok {
					d, err := time.ParseDuration(iv)
					if err != nil {
						t.Fatalf("ServiceMonitor interval %q: %v", iv, err)
					}
					s.scrapeInterval = d
				}
			}
		}
	}
	if s.scaledObject == nil {
		t.Fatal("no ScaledObject rendered")
	}
	return s
}

func dig(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func containerArgs(deployment map[string]any) []string {
	containers, _ := dig(deployment, "spec", "template", "spec", "containers").([]any)
	if len(containers) == 0 {
		return nil
	}
	raw, _ := containers[0].(map[string]any)["args"].([]any)
	var args []string
	for _, a := range raw {
		args = append(args, fmt.Sprint(a))
	}
	return args
}

// behaviourArgs keeps the flags that change how the exporter counts and
// caches, and drops those naming in-cluster addresses and mounted files:
// the suite supplies its own loopback ones.
func behaviourArgs(args []string) []string {
	var out []string
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case name == "openwebui.url", name == "openwebui.token-file", name == "web.listen-address",
			name == "web.config.file", name == "keda.listen-address",
			// The gate's addresses and its state file (a mounted volume).
			name == "gate.listen-address", name == "gate.backend", name == "gate.peers", name == "gate.state-file",
			strings.HasPrefix(name, "keda.tls."), strings.HasPrefix(name, "openwebui.tls."):
			continue
		}
		out = append(out, a)
	}
	return out
}

// loopback describes where the suite's processes listen.
type loopback struct {
	scalerAddress string // external-push: host:port of the gRPC server (or the proxy in front)
	metricsURL    string // metrics-api: base URL of the exporter's HTTP server
	prometheusURL string // prometheus: Prometheus' base URL
}

// tuning overrides the ScaledObject's timing for a scenario (zero: keep).
type tuning struct {
	pollingInterval, cooldownPeriod int
	fallback                        *bool // nil keeps the shipped fallback; false removes it; true sets {3, 1}
	// scaleDownWindow > 0 sets the HPA's scale-down stabilization window
	// (advanced.horizontalPodAutoscalerConfig; the HPA's default is 300 s).
	scaleDownWindow int
}

// scaledObjectFor rewrites the shipped ScaledObject for namespace ns: its
// addresses point at loopback, TLS and authentication are dropped (the
// suite's exporter listens in plaintext), and timing is tuned.
func scaledObjectFor(t *testing.T, s shipped, ns, target string, lb loopback, tu tuning) (map[string]any, string) {
	t.Helper()
	var so map[string]any
	b, _ := json.Marshal(s.scaledObject)
	_ = json.Unmarshal(b, &so) // a deep copy
	md := so["metadata"].(map[string]any)
	md["namespace"] = ns
	delete(md, "labels")
	delete(md, "annotations")
	spec := so["spec"].(map[string]any)
	ref, _ := spec["scaleTargetRef"].(map[string]any)
	if ref == nil {
		ref = map[string]any{}
	}
	ref["name"] = target
	spec["scaleTargetRef"] = ref
	if tu.pollingInterval > 0 {
		spec["pollingInterval"] = tu.pollingInterval
	}
	if tu.cooldownPeriod > 0 {
		spec["cooldownPeriod"] = tu.cooldownPeriod
	}
	if tu.scaleDownWindow > 0 {
		spec["advanced"] = map[string]any{"horizontalPodAutoscalerConfig": map[string]any{"behavior": map[string]any{
			"scaleDown": map[string]any{"stabilizationWindowSeconds": tu.scaleDownWindow}}}}
	}
	if tu.fallback != nil {
		if *tu.fallback {
			spec["fallback"] = map[string]any{"failureThreshold": 3, "replicas": 1}
		} else {
			delete(spec, "fallback")
		}
	}
	triggers, _ := spec["triggers"].([]any)
	if len(triggers) != 1 {
		t.Fatalf("ScaledObject has %d triggers, want 1", len(triggers))
	}
	tr := triggers[0].(map[string]any)
	delete(tr, "authenticationRef")
	meta := tr["metadata"].(map[string]any)
	switch tr["type"] {
	case triggerPush, "external":
		meta["scalerAddress"] = lb.scalerAddress
		delete(meta, "enableTLS")
		delete(meta, "unsafeSsl")
	case triggerMetricsAPI:
		u, _ := meta["url"].(string)
		path := "/active_users"
		if i := strings.Index(strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://"), "/"); i >= 0 {
			path = strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://")[i:]
		}
		meta["url"] = lb.metricsURL + path
		delete(meta, "authMode")
		delete(meta, "unsafeSsl")
	case triggerPrometheus:
		meta["serverAddress"] = lb.prometheusURL
		delete(meta, "authModes")
		delete(meta, "namespace")
	default:
		t.Fatalf("unexpected trigger type %v", tr["type"])
	}
	return so, md["name"].(string)
}

// yamlOf is for logs.
func yamlOf(v any) string {
	b, _ := yaml.Marshal(v)
	return string(b)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
