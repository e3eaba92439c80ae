package examples_test

import (
	"fmt"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestScalingExamples checks the manifests of docs/scaling.md: the push
// component's two exporters, spread over nodes, with a PodDisruptionBudget
// (applied to the base Deployment as kustomize does), and the warm-hours
// variant (cron next to external-push, patched onto the push ScaledObject).
// test/manifests checks the real kustomize build of both.
func TestScalingExamples(t *testing.T) {
	docs := loadYAML(t)
	const push = "kubernetes/components/keda-push"
	base := findOne(t, docs, "kubernetes/base", "Deployment", "openwebui-exporter")
	exporter := doc{file: push + "/kustomization.yaml",
		obj: applyJSONPatch(t, base.obj, componentPatch(t, docs, push, "Deployment", "openwebui-exporter"))}
	podLabels := mapping(exporter.obj, "spec", "template", "metadata", "labels")

	pdb := findOne(t, docs, push, "PodDisruptionBudget", "openwebui-exporter")
	if got := str(pdb.obj, "apiVersion"); got != "policy/v1" {
		t.Errorf("%s: apiVersion %q, want policy/v1", pdb, got)
	}
	minAvailable, _ := strconv.Atoi(scalar(pdb.obj, "spec", "minAvailable"))
	if minAvailable < 1 {
		t.Errorf("%s: minAvailable %d, want at least 1 exporter through a drain", pdb, minAvailable)
	}
	if sel := mapping(pdb.obj, "spec", "selector", "matchLabels"); len(sel) == 0 || !labelsMatch(sel, podLabels) {
		t.Errorf("%s: selector %v does not select the exporter's pods %v", pdb, sel, podLabels)
	}
	if replicas, _ := strconv.Atoi(scalar(exporter.obj, "spec", "replicas")); replicas <= minAvailable {
		t.Errorf("%s: %d replicas with minAvailable %d: a drain would block, or leave KEDA without an exporter", exporter.file, replicas, minAvailable)
	}
	spread := list(exporter.obj, "spec", "template", "spec", "topologySpreadConstraints")
	if len(spread) != 1 || !labelsMatch(mapping(spread[0], "labelSelector", "matchLabels"), podLabels) ||
		str(spread[0], "topologyKey") != "kubernetes.io/hostname" {
		t.Errorf("%s: want one topologySpreadConstraint over the exporter's pods %v by kubernetes.io/hostname, got %v", exporter.file, podLabels, spread)
	}

	grpcPort := kedaListenPort(t)
	const warm = "scaling/warm-hours"
	pushSO := findOne(t, docs, push, "ScaledObject", "open-webui-ollama")
	so := doc{file: warm + "/kustomization.yaml",
		obj: applyJSONPatch(t, pushSO.obj, componentPatch(t, docs, warm, "ScaledObject", "open-webui-ollama"))}
	if got, _ := strconv.Atoi(scalar(so.obj, "spec", "cooldownPeriod")); got <= 300 {
		t.Errorf("%s: cooldownPeriod %d, want longer than KEDA's default 300 s (the coffee break)", so.file, got)
	}
	checkScaledObjectTriggers(t, so, grpcPort)
}

// componentPatch returns the inline RFC 6902 patch that the kustomization
// (or component) in dir applies to kind/name.
func componentPatch(t *testing.T, docs []doc, dir, kind, name string) string {
	t.Helper()
	for _, d := range docs {
		if d.file != dir+"/kustomization.yaml" {
			continue
		}
		for _, p := range list(d.obj, "patches") {
			if str(p, "target", "kind") == kind && str(p, "target", "name") == name {
				return str(p, "patch")
			}
		}
	}
	t.Fatalf("examples/%s/kustomization.yaml: no patch for %s %s", dir, kind, name)
	return ""
}

// checkScaledObjectTriggers checks a ScaledObject that may carry cron and
// external-push triggers next to those checkScaledObject knows.
func checkScaledObjectTriggers(t *testing.T, so doc, grpcPort string) {
	t.Helper()
	spec := mapping(so.obj, "spec")
	maxReplicas, _ := strconv.Atoi(scalar(spec, "maxReplicaCount"))
	var others []any
	kinds := map[string]bool{}
	for i, tr := range list(spec, "triggers") {
		md := mapping(tr, "metadata")
		where := fmt.Sprintf("%s trigger %d (%s)", so, i, str(tr, "type"))
		kinds[str(tr, "type")] = true
		switch str(tr, "type") {
		case "cron":
			if _, err := time.LoadLocation(str(md, "timezone")); err != nil || str(md, "timezone") == "" {
				t.Errorf("%s: timezone %q: %v", where, str(md, "timezone"), err)
			}
			for _, k := range []string{"start", "end"} {
				if !cronSchedule.MatchString(str(md, k)) {
					t.Errorf("%s: %s %q is not a five-field cron schedule", where, k, str(md, k))
				}
			}
			if n, err := strconv.Atoi(str(md, "desiredReplicas")); err != nil || n < 1 || n > maxReplicas {
				t.Errorf("%s: desiredReplicas %q, want 1 to maxReplicaCount %d (a string)", where, str(md, "desiredReplicas"), maxReplicas)
			}
		case "external-push":
			addr := str(md, "scalerAddress")
			if host, port, _ := strings.Cut(addr, ":"); port != grpcPort || !strings.HasPrefix(host, "openwebui-exporter.") {
				t.Errorf("%s: scalerAddress %q, want the exporter's Service on its --keda.listen-address port %s", where, addr, grpcPort)
			}
			if str(md, "targetValue") != "1" || str(md, "activationValue") != "0" {
				t.Errorf("%s: want targetValue \"1\" and activationValue \"0\"", where)
			}
			if str(md, "enableTLS") != "true" || str(tr, "authenticationRef", "name") == "" {
				t.Errorf("%s: want enableTLS \"true\" and an authenticationRef (the exporter requires client certificates)", where)
			}
			for k := range md {
				switch k {
				case "scalerAddress", "enableTLS", "targetValue", "activationValue":
				default:
					t.Errorf("%s: metadata key %q: the exporter rejects keys it does not know", where, k)
				}
			}
		default:
			others = append(others, tr)
		}
	}
	if !kinds["cron"] || !kinds["external-push"] {
		t.Errorf("%s: want a cron and an external-push trigger, got %v", so, kinds)
	}
	// The fallback and any metrics-api or prometheus trigger, as everywhere.
	if len(others) == 0 {
		checkFallback(t, so)
		return
	}
	rest := deepCopy(so.obj).(obj)
	rest["spec"].(obj)["triggers"] = others
	checkScaledObject(t, doc{file: so.file, obj: rest}, "openwebui-exporter", "open-webui")
}

var cronSchedule = regexp.MustCompile(`^\S+ \S+ \S+ \S+ \S+$`)

func checkFallback(t *testing.T, so doc) {
	t.Helper()
	spec := mapping(so.obj, "spec")
	if th, _ := strconv.Atoi(scalar(spec, "fallback", "failureThreshold")); th < 1 {
		t.Errorf("%s: want a fallback with failureThreshold >= 1: without it KEDA freezes scaling while the count is unknown", so)
	}
	if r, _ := strconv.Atoi(scalar(spec, "fallback", "replicas")); r < 1 {
		t.Errorf("%s: want fallback.replicas >= 1: keep Ollama up while the count is unknown", so)
	}
}

// kedaListenPort is the port of --keda.listen-address in the push
// component's exporter patch.
func kedaListenPort(t *testing.T) string {
	t.Helper()
	const file = "kubernetes/components/keda-push/kustomization.yaml"
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`--keda\.listen-address=:(\d+)`).FindSubmatch(raw)
	if m == nil {
		t.Fatalf("%s has no --keda.listen-address=:PORT", file)
	}
	return string(m[1])
}

func labelsMatch(selector, labels obj) bool {
	for k, v := range selector {
		if !reflect.DeepEqual(labels[k], v) {
			return false
		}
	}
	return true
}

// twoPoolsDir holds the ScaledObjects of two Ollama pools behind the wake gate.
const twoPoolsDir = "kubernetes/variants/gate-two-pools/"

// poolDir holds the ScaledObject of a pool of replicas (gate-pool/): the
// otwld/ollama release "ollama", scaled with targetValue = parallel.
const poolDir = "kubernetes/variants/gate-pool/"

// TestWakeUpExamples checks examples/wake-up, the manifests of
// docs/wake-up.md: the Ollama Deployment KEDA scales, and Open WebUI's
// settings for a sleeping Ollama.
func TestWakeUpExamples(t *testing.T) {
	docs := loadYAML(t)
	const dir = "wake-up"
	ollama := findOne(t, docs, dir, "Deployment", "open-webui-ollama")
	scaledObjects := 0
	for _, so := range docs {
		if so.kind() != "ScaledObject" {
			continue
		}
		scaledObjects++
		if strings.HasPrefix(so.file, twoPoolsDir) {
			// Two Ollama releases of the otwld/ollama chart: ollama-NAME is
			// the pool behind the gate's backend NAME.
			u, err := url.Parse(str(so.obj, "spec", "triggers", 0, "metadata", "url"))
			if target := str(so.obj, "spec", "scaleTargetRef", "name"); err != nil || target != "ollama-"+u.Query().Get("backend") {
				t.Errorf("%s scales %q, but its trigger asks for the gate backend of %v", so, target, u)
			}
			continue
		}
		if strings.HasPrefix(so.file, poolDir) {
			if target, tv := str(so.obj, "spec", "scaleTargetRef", "name"), str(so.obj, "spec", "triggers", 0, "metadata", "targetValue"); target != "ollama" || tv != "2" {
				t.Errorf("%s scales %q with targetValue %q, want the release ollama of gate-pool/ollama-values.yaml and its OLLAMA_NUM_PARALLEL 2", so, target, tv)
			}
			continue
		}
		if target := str(so.obj, "spec", "scaleTargetRef", "name"); target != ollama.name() {
			t.Errorf("%s scales %q, but the Ollama Deployment is %q", so, target, ollama.name())
		}
	}
	if scaledObjects < 4 {
		t.Errorf("found %d ScaledObjects under examples/, want every one checked against the Ollama Deployment", scaledObjects)
	}
	containers := list(ollama.obj, "spec", "template", "spec", "containers")
	if len(containers) != 1 {
		t.Fatalf("%s: want one container, got %d", ollama, len(containers))
	}
	c := containers[0]
	if p := str(c, "imagePullPolicy"); p != "IfNotPresent" {
		t.Errorf("%s: imagePullPolicy %q, want IfNotPresent: a node that ran Ollama once starts it without pulling", ollama, p)
	}
	env := map[string]string{}
	for _, e := range list(c, "env") {
		env[str(e, "name")] = str(e, "value")
	}
	if v := env["OLLAMA_KEEP_ALIVE"]; v != "-1" {
		t.Errorf("%s: OLLAMA_KEEP_ALIVE %q, want \"-1\": keep the model loaded while the pod runs", ollama, v)
	}
	port := ""
	for _, p := range list(c, "ports") {
		if str(p, "name") == "http" {
			port = scalar(p, "containerPort")
		}
	}
	if port != "11434" {
		t.Errorf("%s: port http is %q, want Ollama's 11434", ollama, port)
	}
	probe := mapping(c, "startupProbe")
	cmd := list(probe, "exec", "command")
	if len(cmd) != 4 || cmd[0] != "ollama" || cmd[1] != "run" || cmd[2] == "" || cmd[3] != "" {
		t.Errorf("%s: startupProbe command %v, want [ollama run MODEL \"\"] (loads the model, generates nothing)", ollama, cmd)
	}
	period, _ := strconv.Atoi(scalar(probe, "periodSeconds"))
	timeout, _ := strconv.Atoi(scalar(probe, "timeoutSeconds"))
	failures, _ := strconv.Atoi(scalar(probe, "failureThreshold"))
	if timeout < 60 || period*failures < 600 {
		t.Errorf("%s: startupProbe allows %ds per try and %ds in all; a model load (and a first pull) needs more", ollama, timeout, period*failures)
	}
	if got := scalar(c, "readinessProbe", "httpGet", "port"); got != "http" {
		t.Errorf("%s: readinessProbe port %q, want http", ollama, got)
	}
	if scalar(c, "resources", "limits", "nvidia.com/gpu") == "" {
		t.Errorf("%s: no GPU limit", ollama)
	}
	pvc := findOne(t, docs, dir, "PersistentVolumeClaim", "ollama-models")
	mounted := false
	for _, v := range list(ollama.obj, "spec", "template", "spec", "volumes") {
		if str(v, "persistentVolumeClaim", "claimName") == pvc.name() {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("%s does not mount %s", ollama, pvc)
	}

	var patch *doc
	for _, d := range docs {
		if d.file == dir+"/open-webui-env-patch.yaml" {
			patch = &d
		}
	}
	if patch == nil {
		t.Fatal("no wake-up/open-webui-env-patch.yaml")
	}
	owui := map[string]string{}
	for _, c := range list(patch.obj, "spec", "template", "spec", "containers") {
		for _, e := range list(c, "env") {
			owui[str(e, "name")] = str(e, "value")
		}
	}
	if owui["ENABLE_BASE_MODELS_CACHE"] != "true" {
		t.Errorf("%s: ENABLE_BASE_MODELS_CACHE %q, want \"true\"", patch.file, owui["ENABLE_BASE_MODELS_CACHE"])
	}
	// Open WebUI parses it with int(); anything else silently means 10 s.
	if n, err := strconv.Atoi(owui["AIOHTTP_CLIENT_TIMEOUT_MODEL_LIST"]); err != nil || n < 1 || n >= 10 {
		t.Errorf("%s: AIOHTTP_CLIENT_TIMEOUT_MODEL_LIST %q, want whole seconds below the default 10", patch.file, owui["AIOHTTP_CLIENT_TIMEOUT_MODEL_LIST"])
	}
	if len(owui) != 2 {
		t.Errorf("%s: want exactly the two settings docs/wake-up.md explains, got %v", patch.file, owui)
	}
}
