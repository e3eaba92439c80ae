package manifests

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

const (
	chartDir = "charts/openwebui-exporter" // relative to the repository root
	release  = "openwebui-exporter"
	// Open WebUI's namespace: the ScaledObject must sit next to Ollama.
	namespace = "open-webui"
	// Helm built by "go build" (no release ldflags) assumes Kubernetes 1.20
	// for .Capabilities and lint's deprecated-API check: name a current one.
	// (So the chart sets no kubeVersion: "go tool helm template" would
	// refuse it without this flag.)
	kubeVersion = "1.34.0"
)

// chartCases are the chart's test renderings: every values file under
// charts/openwebui-exporter/ci (another suite dry-runs these files against a
// real API server) and the --set lines the chart's README promises.
var chartCases = []struct {
	name   string
	values string   // file under ci/, or ""
	set    []string // --set arguments
	want   expect
}{
	{name: "defaults", values: "defaults-values.yaml", want: expect{
		minReplicas: 1, external: set("openwebui-exporter-token")}},
	// The acceptance lines, verbatim: the token Secret is then
	// <fullname>-token, created by the user.
	{name: "set keda.enabled", set: []string{"keda.enabled=true"}, want: expect{
		trigger: "metrics-api", minReplicas: 1, external: set("openwebui-exporter-token")}},
	{name: "set keda.trigger=push", set: []string{"keda.enabled=true", "keda.trigger=push"}, want: expect{
		trigger: "external-push", grpcTLS: true, minReplicas: 2, external: set("openwebui-exporter-token"),
		extraKinds: []string{"PodDisruptionBudget", "Certificate", "Issuer", "TriggerAuthentication"}}},
	{name: "keda metrics-api", values: "keda-metrics-api-values.yaml", want: expect{
		trigger: "metrics-api", minReplicas: 1, external: set("openwebui-exporter-token"),
		extraKinds: []string{"ServiceMonitor", "PrometheusRule", "ConfigMap"}}},
	{name: "keda push", values: "keda-push-values.yaml", want: expect{
		trigger: "external-push", grpcTLS: true, minReplicas: 2, external: set("openwebui-exporter-token"),
		extraKinds: []string{"PodDisruptionBudget", "Certificate", "TriggerAuthentication", "ServiceMonitor"}}},
	{name: "keda push, existing TLS Secrets, cron", values: "keda-push-existing-tls-values.yaml", want: expect{
		trigger: "external-push", grpcTLS: true, minReplicas: 2,
		external:   set("openwebui-exporter-token", "openwebui-exporter-server-tls", "openwebui-exporter-keda-client-tls"),
		extraKinds: []string{"PodDisruptionBudget", "TriggerAuthentication"}}},
	{name: "keda prometheus", values: "keda-prometheus-values.yaml", want: expect{
		trigger: "prometheus", minReplicas: 2, external: set("openwebui-exporter-token"), extraKinds: []string{"ServiceMonitor"}}},
	{name: "basic auth", values: "basic-auth-values.yaml", want: expect{
		trigger: "metrics-api", basicAuth: true, minReplicas: 1, external: set("openwebui-exporter-token"),
		extraKinds: []string{"TriggerAuthentication", "ServiceMonitor"}}},
	{name: "basic auth, prometheus trigger", values: "basic-auth-prometheus-values.yaml", want: expect{
		trigger: "prometheus", basicAuth: true, minReplicas: 1,
		external: set("openwebui-exporter-token", "TriggerAuthentication/prometheus-credentials"), extraKinds: []string{"ServiceMonitor"}}},
	{name: "basic auth, HTTPS, push over TLS", values: "basic-auth-push-tls-values.yaml", want: expect{
		trigger: "external-push", basicAuth: true, webTLS: true, grpcTLS: true, minReplicas: 2, external: set("openwebui-exporter-token"),
		extraKinds: []string{"PodDisruptionBudget", "Certificate", "TriggerAuthentication", "ServiceMonitor"}}},
	{name: "HTTPS, metrics-api", values: "web-tls-metrics-api-values.yaml", want: expect{
		trigger: "metrics-api", webTLS: true, minReplicas: 1, external: set("openwebui-exporter-token"),
		extraKinds: []string{"Certificate", "TriggerAuthentication", "ServiceMonitor"}}},
	{name: "HTTPS without KEDA: no client certificate", set: []string{"web.tls.enabled=true"}, want: expect{
		webTLS: true, minReplicas: 1, external: set("openwebui-exporter-token"), extraKinds: []string{"Certificate"}}},
	{name: "idle tabs", values: "idle-tabs-values.yaml", want: expect{
		trigger: "metrics-api", minReplicas: 1, external: set("openwebui-exporter-token")}},
	{name: "existing Secret", values: "existing-secret-values.yaml", want: expect{
		trigger: "metrics-api", minReplicas: 1, external: set("open-webui-api-keys")}},
	{name: "token value", values: "token-value-values.yaml", want: expect{
		trigger: "metrics-api", minReplicas: 3, external: set("corporate-ca"),
		extraKinds: []string{"Secret", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "ConfigMap"}}},

	// Issue 19, item 9: an extraArg the chart sets too replaces the chart's
	// (the exporter refuses a repeated flag: a crash loop).
	{name: "extraArgs override a chart flag", set: []string{"keda.enabled=true", "extraArgs={--log.level=debug,--cache.ttl=10s}"}, want: expect{
		trigger: "metrics-api", minReplicas: 1, external: set("openwebui-exporter-token"),
		flags: map[string]string{"log.level": "debug", "cache.ttl": "10s"}}},
	// Item 11: one replica with the push trigger: a PDB with minAvailable 1
	// would block every node drain, so there is none.
	{name: "push with replicaCount=1: no PDB", set: []string{"keda.enabled=true", "keda.trigger=push", "replicaCount=1"}, want: expect{
		trigger: "external-push", grpcTLS: true, minReplicas: 1, external: set("openwebui-exporter-token"),
		extraKinds: []string{"Certificate", "TriggerAuthentication"}}},
	// Item 12: a 63-character fullnameOverride with TLS, the push trigger and
	// gate backends: every derived name is shortened to 63, the CA's
	// commonName to 64 at most, and they stay distinct.
	{name: "63-character fullnameOverride, TLS", set: []string{"fullnameOverride=" + longName, "openwebui.existingSecret=s",
		"keda.enabled=true", "keda.trigger=push", "web.tls.enabled=true"}, want: expect{
		trigger: "external-push", webTLS: true, grpcTLS: true, minReplicas: 2, external: set("s"),
		extraKinds: []string{"PodDisruptionBudget", "Certificate", "Issuer", "TriggerAuthentication"}}},
	{name: "63-character fullnameOverride, gate backends", set: []string{"fullnameOverride=" + longName, "openwebui.existingSecret=s",
		"keda.enabled=true", "keda.trigger=push", "web.tls.enabled=true", "web.basicAuth.enabled=true", "web.basicAuth.prometheus.password=p",
		"serviceMonitor.enabled=true", "grafanaDashboard.enabled=true", "prometheusRule.enabled=true", "gate.enabled=true",
		"gate.backends[0].name=small", "gate.backends[0].url=http://ollama-small.open-webui.svc:11434", "gate.backends[0].scaleTargetRef.name=ollama-small",
		"gate.backends[1].name=" + strings.Repeat("b", 32), "gate.backends[1].url=http://ollama-big.open-webui.svc:11434", "gate.backends[1].scaleTargetRef.name=ollama-big",
		"gate.backends[1].wake=request"}, want: expect{
		trigger: "external-push", basicAuth: true, webTLS: true, grpcTLS: true, minReplicas: 2, external: set("s"),
		gate: true, backends: []string{"small", strings.Repeat("b", 32)},
		extraKinds: []string{"PodDisruptionBudget", "Certificate", "Issuer", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule", "ConfigMap"}}},

	// The wake gate (issues 17 and 18).
	{name: "gate", values: "gate-values.yaml", want: expect{
		trigger: "metrics-api", minReplicas: 2, external: set("openwebui-exporter-token"), gate: true,
		extraKinds: []string{"PodDisruptionBudget"}}},
	{name: "gate, two pools, push", values: "gate-two-pools-values.yaml", want: expect{
		trigger: "external-push", grpcTLS: true, minReplicas: 2, external: set("openwebui-exporter-token"),
		gate: true, backends: []string{"small", "big"},
		extraKinds: []string{"PodDisruptionBudget", "Certificate", "TriggerAuthentication", "ServiceMonitor"}}},
	{name: "gate, a pool of replicas", values: "gate-pool-values.yaml", want: expect{
		trigger: "metrics-api", minReplicas: 2, external: set("openwebui-exporter-token"), gate: true, backends: []string{"chat", "lab"},
		extraKinds: []string{"PodDisruptionBudget"}, targetValues: map[string]string{"chat": "2", "lab": "1"},
		scaleDown: map[string]int32{"chat": 120, "lab": 600}}},
	{name: "docs/replicas.md recipe, a pool", values: "../../../examples/gate-pool/exporter.yaml", want: expect{
		trigger: "metrics-api", minReplicas: 2, external: set("openwebui-exporter-token"), gate: true, backends: []string{"chat"},
		extraKinds: []string{"PodDisruptionBudget"}, targetValues: map[string]string{"chat": "2"}}},
	{name: "docs/gate-deploy.md recipe, two pools", values: recipeValues, want: expect{
		trigger: "external-push", grpcTLS: true, minReplicas: 2, external: set("openwebui-exporter-token"),
		gate: true, backends: []string{"small", "big"},
		extraKinds: []string{"PodDisruptionBudget", "Certificate", "TriggerAuthentication"}}},
	{name: "set gate.enabled", set: []string{"gate.enabled=true"}, want: expect{
		minReplicas: 2, external: set("openwebui-exporter-token"), gate: true, extraKinds: []string{"PodDisruptionBudget"},
		flags: map[string]string{"gate.backend": "http://open-webui-ollama.open-webui.svc:11434"}}},
	{name: "gate, two pools, metrics-api", set: append([]string{"keda.enabled=true", "gate.enabled=true"}, twoPools...), want: expect{
		trigger: "metrics-api", minReplicas: 2, external: set("openwebui-exporter-token"),
		gate: true, backends: []string{"small", "big"}, extraKinds: []string{"PodDisruptionBudget"}}},
	{name: "gate, two pools, prometheus", set: append([]string{"keda.enabled=true", "keda.trigger=prometheus", "serviceMonitor.enabled=true", "gate.enabled=true"}, twoPools...), want: expect{
		trigger: "prometheus", minReplicas: 2, external: set("openwebui-exporter-token"),
		gate: true, backends: []string{"small", "big"}, extraKinds: []string{"PodDisruptionBudget", "ServiceMonitor"}}},
	{name: "gate, one replica asked for", set: []string{"gate.enabled=true", "replicaCount=3", "gate.backend=http://ollama.ai.svc:11434"}, want: expect{
		minReplicas: 3, external: set("openwebui-exporter-token"), gate: true, extraKinds: []string{"PodDisruptionBudget"},
		flags: map[string]string{"gate.backend": "http://ollama.ai.svc:11434"}}},
}

// recipeValues is the chart's values file of docs/gate-deploy.md's recipe,
// relative to the chart's ci/ (helmArgs' base).
const recipeValues = "../../../examples/gate-two-pools/exporter.yaml"

// longName is the longest fullnameOverride the schema takes (a DNS-1035 label).
var longName = "o" + strings.Repeat("w", 61) + "e"

// twoPools: the README's two Ollama releases, as --set lines.
var twoPools = []string{
	"gate.backends[0].name=small", "gate.backends[0].url=http://ollama-small.open-webui.svc:11434", "gate.backends[0].scaleTargetRef.name=ollama-small",
	"gate.backends[1].name=big", "gate.backends[1].url=http://ollama-big.open-webui.svc:11434", "gate.backends[1].scaleTargetRef.name=ollama-big",
	"gate.backends[1].wake=request", "gate.backends[1].idle=30m",
}

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

func helmArgs(values string, setArgs []string) []string {
	var args []string
	if values != "" {
		args = append(args, "-f", filepath.Join(chartDir, "ci", values))
	}
	for _, s := range setArgs {
		args = append(args, "--set", s)
	}
	return args
}

// TestChartCasesCoverCIValues: every values file under ci/ is a case here,
// so none is rendered without its checks.
func TestChartCasesCoverCIValues(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot, chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) < 7 {
		t.Fatalf("want at least 7 values files in %s/ci, found %d (%v)", chartDir, len(files), err)
	}
	for _, f := range files {
		found := false
		for _, c := range chartCases {
			found = found || c.values == filepath.Base(f)
		}
		if !found {
			t.Errorf("%s has no case in chartCases", filepath.Base(f))
		}
	}
}

func TestChart(t *testing.T) {
	for _, c := range chartCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			args := helmArgs(c.values, c.set)
			if _, err := run(bins.helm, append([]string{"lint", "--strict", chartDir, "--namespace", namespace, "--kube-version", kubeVersion}, args...)...); err != nil {
				t.Fatal(err)
			}
			out, err := run(bins.helm, append([]string{"template", release, chartDir, "--namespace", namespace, "--kube-version", kubeVersion}, args...)...)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := DecodeStrict(out)
			if err != nil {
				t.Fatalf("decoding the rendering strictly: %v\n%s", err, out)
			}
			want := c.want
			want.namespace = namespace
			checkSetup(t, setup{objs}, want)
			if t.Failed() {
				t.Logf("rendering:\n%s", out)
			}
		})
	}
}

// TestChartRefuses: values that would install something broken are errors
// at install time, with a message that says what to change.
func TestChartRefuses(t *testing.T) {
	for _, c := range []struct {
		name    string
		set     []string
		wantErr string
	}{
		{"token and existingSecret", []string{"openwebui.existingSecret=s", "openwebui.token=sk-abcdefabcdefabcdefabcdef"}, "not both"},
		{"placeholder token", []string{"openwebui.token=sk-0123456789abcdef0123456789abcdef"}, "placeholder"},
		{"idle timeout in usage mode", []string{"activity.idleTimeout=15m"}, "needs openwebui.countMode=admin"},
		{"not a token", []string{"openwebui.token=hunter2"}, "want an Open WebUI API key"},
		{"misspelt key", []string{"openwebui.existingSecret=s", "keda.trigerr=push"}, "trigerr"},
		{"unknown trigger", []string{"openwebui.existingSecret=s", "keda.trigger=pull"}, "keda.trigger"},
		{"unknown count mode", []string{"openwebui.existingSecret=s", "openwebui.countMode=guess"}, "countMode"},
		{"basic auth without a password for Prometheus", []string{"web.basicAuth.enabled=true"}, "web.basicAuth.prometheus.password"},
		{"basic auth without a password for KEDA's metrics-api trigger", []string{"keda.enabled=true", "web.basicAuth.enabled=true", "web.basicAuth.prometheus.password=p"}, "web.basicAuth.keda.password"},
		{"one user for both", []string{"keda.enabled=true", "web.basicAuth.enabled=true", "web.basicAuth.prometheus.password=p", "web.basicAuth.keda.password=k", "web.basicAuth.keda.username=prometheus"}, "different usernames"},
		{"push TLS without cert-manager or Secrets", []string{"openwebui.existingSecret=s", "keda.enabled=true", "keda.trigger=push", "tls.certManager.enabled=false"}, "tls.existingSecret"},
		{"push TLS from Secrets, without KEDA's client certificate", []string{"keda.enabled=true", "keda.trigger=push", "tls.certManager.enabled=false", "tls.existingSecret=server-tls"}, "tls.kedaClientExistingSecret"},
		{"bad idle timeout", []string{"openwebui.existingSecret=s", "activity.idleTimeout=soon"}, "idleTimeout"},
		{"extra arg without dashes", []string{"openwebui.existingSecret=s", "extraArgs[0]=cache.ttl=1s"}, "extraArgs"},

		// Issue 19, item 9: what extraArgs may not override, or repeat.
		{"extraArgs move the web port", []string{"extraArgs[0]=--web.listen-address=:9000"}, "set web.port instead"},
		{"extraArgs replace the token file", []string{"extraArgs[0]=--openwebui.token-file=/tmp/t"}, "set openwebui.existingSecret"},
		{"extraArgs add a gate backend", []string{"gate.enabled=true", "extraArgs[0]=--gate.backend=http://x:11434"}, "set gate.backend or gate.backends instead"},
		{"extraArgs repeat a flag", []string{"extraArgs={--log.level=debug,--log.level=warn}"}, "--log.level is given twice"},
		// Item 10: bcrypt reads 72 bytes at most (openssl rand -base64 64 is 88).
		{"basic auth password over 72 bytes", []string{"web.basicAuth.enabled=true", "web.basicAuth.prometheus.password=" + strings.Repeat("p", 73)}, "bcrypt (the web config's hash) takes at most 72"},
		{"basic auth password of 72 bytes in 36 characters", []string{"keda.enabled=true", "web.basicAuth.enabled=true", "web.basicAuth.prometheus.password=p", "web.basicAuth.keda.password=" + strings.Repeat("é", 37)}, "web.basicAuth.keda.password: 74 bytes"},
		// Item 11: a PDB asked for that can never be satisfied.
		{"PDB with one replica", []string{"podDisruptionBudget.enabled=true"}, "blocks every node drain"},
		// Item 12: names the API server refuses.
		{"dotted fullnameOverride", []string{"fullnameOverride=owui.exporter"}, "fullnameOverride"},
		{"64-character fullnameOverride", []string{"fullnameOverride=" + longName + "x"}, "fullnameOverride"},
		{"upper-case nameOverride", []string{"nameOverride=Exporter"}, "nameOverride"},
		{"fullnameOverride starting with a digit", []string{"fullnameOverride=1exporter"}, "fullnameOverride"},

		// The gate's values.
		{"gate backend and backends", append([]string{"gate.enabled=true", "gate.backend=http://o:11434"}, twoPools...), "not both"},
		{"gate backends without the gate", twoPools, "need gate.enabled=true"},
		{"gate backend name twice", []string{"gate.enabled=true", "gate.backends[0].name=a", "gate.backends[0].url=http://a:1", "gate.backends[1].name=a", "gate.backends[1].url=http://b:1"}, `name "a" is used twice`},
		{"gate backend name _gate", []string{"gate.enabled=true", "gate.backends[0].name=_gate", "gate.backends[0].url=http://a:1"}, "name"},
		{"gate backend name upper case", []string{"gate.enabled=true", "gate.backends[0].name=Big", "gate.backends[0].url=http://a:1"}, "name"},
		{"gate backend name of 33", []string{"gate.enabled=true", "gate.backends[0].name=" + strings.Repeat("b", 33), "gate.backends[0].url=http://a:1"}, "name"},
		{"gate backend without a URL", []string{"gate.enabled=true", "gate.backends[0].name=a"}, "url"},
		{"gate backend URL with a query", []string{"gate.enabled=true", "gate.backends[0].name=a", "gate.backends[0].url=http://a:1/?x=1"}, "url"},
		{"gate backend wake unknown", []string{"gate.enabled=true", "gate.backends[0].name=a", "gate.backends[0].url=http://a:1", "gate.backends[0].wake=soon"}, "wake"},
		{"gate idle with wake arrival", []string{"gate.enabled=true", "gate.backends[0].name=a", "gate.backends[0].url=http://a:1", "gate.backends[0].idle=5m"}, "idle applies only to wake: request"},
		{"gate backend without a scale target", []string{"keda.enabled=true", "gate.enabled=true", "gate.backends[0].name=a", "gate.backends[0].url=http://a:1"}, "scaleTargetRef.name is required"},
		{"gate backends scaling one workload", []string{"keda.enabled=true", "gate.enabled=true",
			"gate.backends[0].name=a", "gate.backends[0].url=http://a:1", "gate.backends[0].scaleTargetRef.name=ollama",
			"gate.backends[1].name=b", "gate.backends[1].url=http://b:1", "gate.backends[1].scaleTargetRef.name=ollama"}, "one ScaledObject per workload"},
		{"gate port is the web port", []string{"gate.enabled=true", "gate.port=8080"}, "gate.port must differ"},
		{"gate max held bytes without a unit we know", []string{"gate.enabled=true", "gate.maxHeldBytes=lots"}, "maxHeldBytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := run(bins.helm, append([]string{"template", release, chartDir, "--namespace", namespace, "--kube-version", kubeVersion}, helmArgs("", c.set)...)...)
			if err == nil {
				t.Fatalf("rendered, want an error mentioning %q", c.wantErr)
			}
			if !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("error does not mention %q:\n%v", c.wantErr, err)
			}
		})
	}
}

// TestChartDashboardIsTheExample: the chart carries a copy of the example
// dashboard (Helm reads no file outside the chart); it must not drift.
func TestChartDashboardIsTheExample(t *testing.T) {
	chartCopy, err := os.ReadFile(filepath.Join(repoRoot, chartDir, "dashboards", "openwebui-exporter.json"))
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(filepath.Join(repoRoot, "examples", "grafana", "openwebui-exporter.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(chartCopy) != string(example) {
		t.Errorf("%s/dashboards/openwebui-exporter.json differs from examples/grafana/openwebui-exporter.json: cp the example over it", chartDir)
	}
}

// TestChartAppVersionIsTheExporters: the default image tag is the chart's
// appVersion, which must be the exporter's VERSION.
func TestChartAppVersionIsTheExporters(t *testing.T) {
	version, err := os.ReadFile(filepath.Join(repoRoot, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	chart, err := os.ReadFile(filepath.Join(repoRoot, chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := `appVersion: "` + strings.TrimSpace(string(version)) + `"`
	if !strings.Contains(string(chart), "\n"+want+"\n") {
		t.Errorf("Chart.yaml: want %s (VERSION)", want)
	}
}

// TestChartNotesGiveOpenWebUIsURLs: NOTES.txt prints what Open WebUI needs,
// OLLAMA_BASE_URL(S) and the official chart's ollamaUrls: the gate's rendered
// Service and port, and one prefix per --gate.backend name, in flag order.
// helm template leaves NOTES.txt out, so a copy of the chart renders it into
// a ConfigMap.
func TestChartNotesGiveOpenWebUIsURLs(t *testing.T) {
	chart := filepath.Join(t.TempDir(), "openwebui-exporter")
	if err := os.CopyFS(chart, os.DirFS(filepath.Join(repoRoot, chartDir))); err != nil {
		t.Fatal(err)
	}
	notes, err := os.ReadFile(filepath.Join(chart, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(chart, "notes-under-test.txt"), notes, 0o644); err != nil {
		t.Fatal(err)
	}
	wrapper := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n  namespace: {{ .Release.Namespace }}\ndata:\n  notes: {{ tpl (.Files.Get \"notes-under-test.txt\") . | toJson }}\n"
	if err := os.WriteFile(filepath.Join(chart, "templates", "zz-notes.yaml"), []byte(wrapper), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		values string
		set    []string
		want   string // the variable's name
	}{
		{"one backend", "gate-values.yaml", nil, "OLLAMA_BASE_URL"},
		{"two pools", "gate-two-pools-values.yaml", nil, "OLLAMA_BASE_URLS"},
		{"the recipe", recipeValues, nil, "OLLAMA_BASE_URLS"},
		{"two pools, long names", "", append([]string{"fullnameOverride=" + longName, "gate.enabled=true"}, twoPools...), "OLLAMA_BASE_URLS"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"template", release, chart, "--namespace", namespace, "--kube-version", kubeVersion}
			if c.values != "" {
				args = append(args, "-f", filepath.Join(repoRoot, chartDir, "ci", c.values))
			}
			for _, s := range c.set {
				args = append(args, "--set", s)
			}
			out, err := run(bins.helm, args...)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := DecodeStrict(out)
			if err != nil {
				t.Fatal(err)
			}
			s := setup{objs}
			cm, _ := s.get("ConfigMap", "notes").(*corev1.ConfigMap)
			if cm == nil {
				t.Fatal("NOTES.txt did not render")
			}
			text := cm.Data["notes"]

			// The URLs the rendering implies.
			var base string
			for _, d := range s.all("Service") {
				svc := d.Obj.(*corev1.Service)
				if svc.Spec.ClusterIP != corev1.ClusterIPNone && gatePortOf(svc) != 0 {
					base = fmt.Sprintf("http://%s.%s.svc:%d", svc.Name, svc.Namespace, gatePortOf(svc))
				}
			}
			if base == "" {
				t.Fatal("no gate Service rendered")
			}
			var urls []string
			for _, d := range s.all("Deployment") {
				for _, a := range d.Obj.(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Args {
					if v, ok := strings.CutPrefix(a, "--gate.backend="); ok {
						b, _ := parseGateBackend(v)
						if b.name == "" {
							urls = append(urls, base)
						} else {
							urls = append(urls, base+"/"+b.name)
						}
					}
				}
			}
			wantLine := c.want + "=" + strings.Join(urls, ";")
			if !slices.Contains(lines(text), wantLine) {
				t.Errorf("NOTES.txt lacks the line %q:\n%s", wantLine, text)
			}
			var list []string
			for _, u := range urls {
				list = append(list, "- "+u)
			}
			if !strings.Contains(text, "ollamaUrls:\n    "+strings.Join(list, "\n    ")+"\n") {
				t.Errorf("NOTES.txt lacks the official chart's ollamaUrls with %v:\n%s", urls, text)
			}
			if c.values == recipeValues {
				// The recipe's Open WebUI values are what the notes print.
				raw, err := os.ReadFile(filepath.Join(repoRoot, "examples", "gate-two-pools", "open-webui.yaml"))
				if err != nil {
					t.Fatal(err)
				}
				var owui struct {
					OllamaUrls []string `json:"ollamaUrls"`
				}
				if err := sigsyaml.Unmarshal(raw, &owui); err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(owui.OllamaUrls, urls) {
					t.Errorf("examples/gate-two-pools/open-webui.yaml: ollamaUrls %v, want the gate's %v", owui.OllamaUrls, urls)
				}
			}
		})
	}
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		out = append(out, strings.TrimSpace(l))
	}
	return out
}
