// Package examples_test checks that every file under examples/ agrees with
// the exporter: ports, paths, flags, env vars, metric names and the JSON key
// KEDA reads. The facts come from the real binary (see exporter_test.go).
package examples_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"
	"golang.org/x/crypto/bcrypt"
)

// obj is a decoded YAML or JSON document, with string map keys throughout.
type obj = map[string]any

type doc struct {
	file string // relative to examples/
	obj  obj
}

func (d doc) kind() string { return str(d.obj, "kind") }
func (d doc) name() string { return str(d.obj, "metadata", "name") }
func (d doc) String() string {
	return fmt.Sprintf("%s (%s %s)", d.file, d.kind(), d.name())
}

// loadYAML decodes every document of every YAML file under examples/.
func loadYAML(t *testing.T) []doc {
	t.Helper()
	var docs []doc
	files := 0
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (path.Ext(p) != ".yaml" && path.Ext(p) != ".yml") {
			return err
		}
		files++
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.SetStrict(true) // duplicate keys are errors
		n := 0
		for {
			var v any
			if err := dec.Decode(&v); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if v == nil {
				continue
			}
			o, ok := normalize(v).(obj)
			if !ok {
				return fmt.Errorf("%s: document %d is not a mapping", p, n)
			}
			docs = append(docs, doc{filepath.ToSlash(p), o})
			n++
		}
		if n == 0 {
			return fmt.Errorf("%s: no YAML document", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 15 {
		t.Fatalf("found only %d YAML files under examples/", files)
	}
	return docs
}

// normalize turns yaml.v2's map[any]any into map[string]any, recursively.
func normalize(v any) any {
	switch v := v.(type) {
	case map[any]any:
		m := make(obj, len(v))
		for k, val := range v {
			m[fmt.Sprint(k)] = normalize(val)
		}
		return m
	case []any:
		for i := range v {
			v[i] = normalize(v[i])
		}
	}
	return v
}

// at walks obj along keys (map keys, or list indexes as ints).
func at(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(obj)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, keys ...any) string {
	s, _ := at(v, keys...).(string)
	return s
}

func list(v any, keys ...any) []any {
	l, _ := at(v, keys...).([]any)
	return l
}

func mapping(v any, keys ...any) obj {
	m, _ := at(v, keys...).(obj)
	return m
}

// scalar renders a YAML scalar (string, int, bool) as a string.
func scalar(v any, keys ...any) string {
	switch s := at(v, keys...).(type) {
	case nil:
		return ""
	case string:
		return s
	default:
		return fmt.Sprint(s)
	}
}

// find returns the documents of the given kind (and name, if not empty)
// whose file lies under dir.
func find(docs []doc, dir, kind, name string) []doc {
	var out []doc
	for _, d := range docs {
		if strings.HasPrefix(d.file, dir+"/") && d.kind() == kind && (name == "" || d.name() == name) {
			out = append(out, d)
		}
	}
	return out
}

func findOne(t *testing.T, docs []doc, dir, kind, name string) doc {
	t.Helper()
	found := find(docs, dir, kind, name)
	if len(found) != 1 {
		t.Fatalf("want exactly one %s %q under examples/%s, found %d", kind, name, dir, len(found))
	}
	return found[0]
}

// secretValue returns a key of a Secret under dir (stringData, or base64 data).
func secretValue(t *testing.T, docs []doc, dir, name, key string) string {
	t.Helper()
	s := findOne(t, docs, dir, "Secret", name)
	if v, ok := at(s.obj, "stringData", key).(string); ok {
		return v
	}
	t.Fatalf("%s: no stringData key %q", s, key)
	return ""
}

func TestEveryKubernetesObjectIsNamed(t *testing.T) {
	for _, d := range loadYAML(t) {
		if str(d.obj, "apiVersion") == "" { // Prometheus and Grafana files
			continue
		}
		if d.kind() == "" {
			t.Errorf("%s: no kind", d.file)
		}
		if d.name() == "" && d.kind() != "Kustomization" && d.kind() != "Component" {
			t.Errorf("%s: no metadata.name", d)
		}
	}
}

// TestKustomizations checks that every file a kustomization names exists and
// that every manifest beside it is listed, or is the documented alternative.
func TestKustomizations(t *testing.T) {
	docs := loadYAML(t)
	seen := 0
	for _, d := range docs {
		if d.kind() != "Kustomization" && d.kind() != "Component" {
			continue
		}
		seen++
		dir := path.Dir(d.file)
		listed := map[string]bool{}
		for _, r := range list(d.obj, "resources") {
			listed[path.Join(dir, r.(string))] = true
		}
		for _, c := range list(d.obj, "components") {
			listed[path.Join(dir, c.(string))] = true
		}
		for p := range listed {
			if _, err := os.Stat(p); err != nil {
				t.Errorf("%s lists %s: %v", d.file, p, err)
			}
		}
		for _, other := range docs {
			if path.Dir(other.file) == dir && other.file != d.file && str(other.obj, "apiVersion") != "" &&
				!listed[other.file] {
				t.Errorf("%s is not listed in %s", other.file, d.file)
			}
		}
	}
	if seen < 2 {
		t.Errorf("want the kustomizations and the components, found %d", seen)
	}
}

// checkFlags checks that every --flag in args is a flag of the exporter.
func checkFlags(t *testing.T, where string, args []any) map[string]string {
	t.Helper()
	values := map[string]string{}
	for _, a := range args {
		arg, _ := a.(string)
		if !strings.HasPrefix(arg, "--") {
			if strings.HasPrefix(arg, "-") {
				t.Errorf("%s: argument %q: use --long flags", where, arg)
			}
			continue
		}
		name, value, _ := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
		// Until the wake gate's flags (gateflags.go) are merged, a build
		// without them checks every flag but the gate's.
		gateUnknown := strings.HasPrefix(name, "gate.") && !facts.flags["gate.listen-address"]
		if !facts.flags[name] && !gateUnknown {
			t.Errorf("%s: %q is not a flag of the exporter (see --help-long)", where, arg)
		}
		values[name] = value
	}
	return values
}

func checkEnv(t *testing.T, where string, env []any) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, e := range env {
		name := str(e, "name")
		if !facts.envs[name] {
			t.Errorf("%s: env %s is not read by the exporter (it reads %s)", where, name, strings.Join(sortedKeys(facts.envs), ", "))
		}
		out[name] = e
	}
	return out
}

func portOf(t *testing.T, where, hostport string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Errorf("%s: %q: %v", where, hostport, err)
	}
	return port
}

// mountedSecret checks that file lies in a volume mounted from a Secret and
// returns the Secret's name.
func mountedSecret(t *testing.T, pod, container obj, file string) string {
	t.Helper()
	for _, m := range list(container, "volumeMounts") {
		mountPath := str(m, "mountPath")
		if path.Dir(file) != path.Clean(mountPath) {
			continue
		}
		if str(m, "subPath") != "" {
			t.Errorf("%s is mounted with subPath: the kubelet never updates it, so a rotated Secret does not reach the exporter", file)
		}
		for _, v := range list(pod, "volumes") {
			if str(v, "name") != str(m, "name") {
				continue
			}
			secret := str(v, "secret", "secretName")
			if secret == "" {
				t.Fatalf("volume %s for %s is not a Secret", str(v, "name"), file)
			}
			return secret
		}
		t.Fatalf("volumeMount %s has no volume", str(m, "name"))
	}
	t.Fatalf("no volumeMount holds %s", file)
	return ""
}

// mountedFile checks that file lies in a volume mounted from a Secret of the
// examples that has the key, and returns the key's value.
func mountedFile(t *testing.T, docs []doc, dir string, pod, container obj, file string) string {
	t.Helper()
	return secretValue(t, docs, dir, mountedSecret(t, pod, container, file), path.Base(file))
}

type deploymentFacts struct {
	flags    map[string]string
	port     string // the container port, e.g. "8080"
	portName string
	labels   obj
}

// checkExporterDeployment checks the exporter's Deployment: flags, port,
// token file, probes, resources and security context.
func checkExporterDeployment(t *testing.T, docs []doc, dir string, d doc, strict bool) deploymentFacts {
	t.Helper()
	pod := mapping(d.obj, "spec", "template", "spec")
	containers := list(pod, "containers")
	if len(containers) != 1 {
		t.Fatalf("%s: want one container, found %d", d, len(containers))
	}
	c := containers[0].(obj)
	f := deploymentFacts{labels: mapping(d.obj, "spec", "template", "metadata", "labels")}
	f.flags = checkFlags(t, d.String(), list(c, "args"))
	env := checkEnv(t, d.String(), list(c, "env"))

	wantPort := portOf(t, "the exporter's default", facts.defaultListen)
	if addr, ok := f.flags["web.listen-address"]; ok {
		wantPort = portOf(t, d.String(), addr)
	} else if e, ok := env["PORT"]; ok {
		wantPort = str(e, "value")
	}
	for _, p := range list(c, "ports") {
		if scalar(p, "containerPort") == wantPort {
			f.port, f.portName = wantPort, str(p, "name")
		}
	}
	if f.port != "8080" || f.portName != "http" {
		t.Errorf("%s: the exporter listens on %s; want containerPort 8080 named http, found %v", d, wantPort, list(c, "ports"))
	}
	if p, ok := f.flags["web.telemetry-path"]; ok && p != "/metrics" {
		t.Errorf("%s: --web.telemetry-path=%s; the examples scrape /metrics", d, p)
	}
	if !strict {
		return f
	}

	tokenFile := f.flags["openwebui.token-file"]
	if tokenFile == "" {
		t.Errorf("%s: want --openwebui.token-file (the token from a mounted Secret)", d)
	} else if secret := mountedSecret(t, pod, c, tokenFile); len(find(docs, dir, "Secret", secret)) != 0 {
		// Applying the examples would overwrite the user's token.
		t.Errorf("%s: the token Secret %s is part of the examples; the user creates it", d, secret)
	}
	if _, ok := env["TOKEN"]; ok {
		t.Errorf("%s: both env TOKEN and --openwebui.token-file: the exporter refuses to start", d)
	}
	if u := f.flags["openwebui.url"]; u == "" {
		t.Errorf("%s: want --openwebui.url", d)
	} else if pu, err := url.Parse(u); err != nil || pu.Host == "" {
		t.Errorf("%s: --openwebui.url=%s is not a URL", d, u)
	}

	for _, want := range []string{"requests", "limits"} {
		for _, res := range []string{"cpu", "memory"} {
			if scalar(c, "resources", want, res) == "" {
				t.Errorf("%s: no resources.%s.%s", d, want, res)
			}
		}
	}
	if at(pod, "securityContext", "runAsNonRoot") != true {
		t.Errorf("%s: want securityContext.runAsNonRoot: true", d)
	}
	if uid, _ := strconv.Atoi(scalar(pod, "securityContext", "runAsUser")); uid == 0 {
		t.Errorf("%s: want a numeric non-root securityContext.runAsUser (the image's is 65532), so that runAsNonRoot can verify any image", d)
	}
	if at(c, "securityContext", "readOnlyRootFilesystem") != true {
		t.Errorf("%s: want readOnlyRootFilesystem: true", d)
	}
	if at(c, "securityContext", "allowPrivilegeEscalation") != false {
		t.Errorf("%s: want allowPrivilegeEscalation: false", d)
	}
	drop := list(c, "securityContext", "capabilities", "drop")
	if len(drop) != 1 || drop[0] != "ALL" {
		t.Errorf("%s: want capabilities.drop: [ALL], found %v", d, drop)
	}
	return f
}

// checkProbe checks an httpGet probe's path and port.
func checkProbe(t *testing.T, d doc, f deploymentFacts, probe, wantPath string) {
	t.Helper()
	c := at(d.obj, "spec", "template", "spec", "containers", 0)
	p := mapping(c, probe)
	if p == nil {
		t.Errorf("%s: no %s", d, probe)
		return
	}
	if tcp := mapping(p, "tcpSocket"); tcp != nil {
		if port := scalar(tcp, "port"); port != f.port && port != f.portName {
			t.Errorf("%s: %s.tcpSocket.port %s, want %s or %s", d, probe, port, f.port, f.portName)
		}
		return
	}
	if got := str(p, "httpGet", "path"); got != wantPath {
		t.Errorf("%s: %s path %q, want %q", d, probe, got, wantPath)
	}
	if port := scalar(p, "httpGet", "port"); port != f.port && port != f.portName {
		t.Errorf("%s: %s port %s, want %s or %s", d, probe, port, f.port, f.portName)
	}
}

// checkService checks that the Service selects the pods and exposes the
// exporter's port, and returns its port names and numbers.
func checkService(t *testing.T, d doc, f deploymentFacts) map[string]string {
	t.Helper()
	for k, v := range mapping(d.obj, "spec", "selector") {
		if f.labels[k] != v {
			t.Errorf("%s: selector %s=%v does not match the pod labels %v", d, k, v, f.labels)
		}
	}
	ports := map[string]string{}
	ok := false
	for _, p := range list(d.obj, "spec", "ports") {
		ports[str(p, "name")] = scalar(p, "port")
		target := scalar(p, "targetPort")
		if scalar(p, "port") == "8080" && (target == f.port || target == f.portName) {
			ok = true
		}
	}
	if !ok {
		t.Errorf("%s: want port 8080 to the exporter's container port %s (%s)", d, f.portName, f.port)
	}
	return ports
}

// checkScaledObject checks a ScaledObject's fallback and triggers; service is
// the exporter's Service name and namespace its namespace ("" if unknown).
func checkScaledObject(t *testing.T, d doc, service, namespace string) {
	t.Helper()
	spec := mapping(d.obj, "spec")
	checkFallback(t, d)
	triggers := list(spec, "triggers")
	if len(triggers) == 0 {
		t.Errorf("%s: no triggers", d)
	}
	for i, tr := range triggers {
		md := mapping(tr, "metadata")
		where := fmt.Sprintf("%s trigger %d (%s)", d, i, str(tr, "type"))
		switch str(tr, "type") {
		case "metrics-api":
			u, err := url.Parse(str(md, "url"))
			if err != nil {
				t.Errorf("%s: url: %v", where, err)
				continue
			}
			if u.Path != "/active_users" || u.Port() != "8080" {
				t.Errorf("%s: url %s, want port 8080 and path /active_users", where, u)
			}
			host := strings.Split(u.Hostname(), ".")
			if host[0] != service {
				t.Errorf("%s: url host %s, want the exporter's Service %s", where, u.Hostname(), service)
			}
			if namespace != "" && len(host) > 1 && host[1] != namespace {
				t.Errorf("%s: url host %s is in namespace %s, the kustomization deploys to %s", where, u.Hostname(), host[1], namespace)
			}
			if f := str(md, "format"); f != "json" {
				t.Errorf("%s: format %q, want json", where, f)
			}
			loc := str(md, "valueLocation")
			if _, isNumber := facts.activeUsers[loc].(float64); !isNumber {
				t.Errorf("%s: valueLocation %q is not a number in the exporter's /active_users body %v", where, loc, facts.activeUsers)
			}
			if v, err := strconv.ParseFloat(str(md, "targetValue"), 64); err != nil || v <= 0 {
				t.Errorf("%s: targetValue %q, want a positive number (a string)", where, str(md, "targetValue"))
			}
			if a := str(md, "activationTargetValue"); a != "0" {
				t.Errorf("%s: activationTargetValue %q, want \"0\": wake Ollama for the first user", where, a)
			}
		case "prometheus":
			names := checkExpr(t, where, str(md, "query"))
			if len(names) != 1 || names[0] != "openwebui_active_users" {
				t.Errorf("%s: query %q, want max(openwebui_active_users)", where, str(md, "query"))
			}
			if v := str(md, "ignoreNullValues"); v != "false" {
				t.Errorf("%s: ignoreNullValues %q, want \"false\": an empty result must not read as 0", where, v)
			}
			if str(md, "threshold") == "" || str(md, "activationThreshold") != "0" {
				t.Errorf("%s: want threshold and activationThreshold \"0\" (strings)", where)
			}
		case "external-push":
			host, port, err := net.SplitHostPort(str(md, "scalerAddress"))
			if err != nil || port == "" {
				t.Errorf("%s: scalerAddress %q: want host:port", where, str(md, "scalerAddress"))
			}
			parts := strings.Split(host, ".")
			if parts[0] != service {
				t.Errorf("%s: scalerAddress host %s, want the exporter's Service %s", where, host, service)
			}
			if namespace != "" && len(parts) > 1 && parts[1] != namespace {
				t.Errorf("%s: scalerAddress %s is in namespace %s, the kustomization deploys to %s", where, host, parts[1], namespace)
			}
			if str(md, "activationValue") != "0" || str(md, "targetValue") == "" {
				t.Errorf("%s: want targetValue and activationValue \"0\"", where)
			}
		default:
			t.Errorf("%s: unexpected trigger type", where)
		}
	}
}

func TestKubernetes(t *testing.T) {
	docs := loadYAML(t)
	const dir = "kubernetes"
	namespace := str(kustomization(t, docs, dir+"/base").obj, "namespace")
	if namespace == "" {
		t.Errorf("examples/%s/base: no namespace", dir)
	}
	dep := findOne(t, docs, dir, "Deployment", "openwebui-exporter")
	f := checkExporterDeployment(t, docs, dir, dep, true)
	checkProbe(t, dep, f, "livenessProbe", "/healthz")
	checkProbe(t, dep, f, "readinessProbe", "/readyz")
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		if mapping(dep.obj, "spec", "template", "spec", "containers", 0, probe, "httpGet") == nil {
			t.Errorf("%s: want an httpGet %s", dep, probe)
		}
	}

	svc := findOne(t, docs, dir, "Service", "openwebui-exporter")
	ports := checkService(t, svc, f)

	sm := findOne(t, docs, dir, "ServiceMonitor", "openwebui-exporter")
	for k, v := range mapping(sm.obj, "spec", "selector", "matchLabels") {
		if mapping(svc.obj, "metadata", "labels")[k] != v {
			t.Errorf("%s: selects %s=%v, which the Service does not carry", sm, k, v)
		}
	}
	endpoints := list(sm.obj, "spec", "endpoints")
	if len(endpoints) == 0 {
		t.Errorf("%s: no endpoints", sm)
	}
	for _, e := range endpoints {
		if _, ok := ports[str(e, "port")]; !ok {
			t.Errorf("%s: endpoint port %q is not a port name of the Service (%v)", sm, str(e, "port"), ports)
		}
		if p := str(e, "path"); p != "" && p != "/metrics" {
			t.Errorf("%s: path %q, want /metrics", sm, p)
		}
	}
	// The Prometheus Operator sets job to the Service's name unless jobLabel says otherwise.
	job := svc.name()
	if jl := str(sm.obj, "spec", "jobLabel"); jl != "" {
		job = str(svc.obj, "metadata", "labels", jl)
	}

	rule := findOne(t, docs, dir, "PrometheusRule", "openwebui-exporter")
	alerts := map[string]obj{}
	for _, g := range list(rule.obj, "spec", "groups") {
		for _, r := range list(g, "rules") {
			r := r.(obj)
			expr := str(r, "expr")
			checkExpr(t, fmt.Sprintf("%s alert %s", rule, str(r, "alert")), expr)
			compact := strings.Join(strings.Fields(expr), " ")
			switch {
			case strings.Contains(compact, `up{job="`+job+`"} == 0`) && strings.Contains(compact, `absent(up{job="`+job+`"})`):
				alerts["down"] = r
			case compact == "openwebui_up == 0":
				alerts["unreachable"] = r
			case compact == "time() - openwebui_last_success_timestamp_seconds > 300":
				alerts["stale"] = r
			}
		}
	}
	for _, want := range []string{"down", "unreachable", "stale"} {
		if alerts[want] == nil {
			t.Errorf("%s: no %s alert (exporter down on up{job=%q} == 0 or absent; openwebui_up == 0; time() - openwebui_last_success_timestamp_seconds > 300)", rule, want, job)
		}
	}
	if r := alerts["unreachable"]; r != nil && str(r, "for") != "5m" {
		t.Errorf("%s: the unreachable alert has for %q, want 5m", rule, str(r, "for"))
	}

	for _, so := range find(docs, dir, "ScaledObject", "") {
		checkScaledObject(t, so, svc.name(), namespace)
	}
	single := 0
	for _, so := range find(docs, dir, "ScaledObject", "") {
		if !strings.HasPrefix(so.file, twoPoolsDir) && !strings.HasPrefix(so.file, poolDir) {
			single++
		}
	}
	if single != 3 {
		t.Errorf("want the metrics-api, prometheus and push ScaledObjects in examples/%s (beside %s and %s), found %d", dir, twoPoolsDir, poolDir, single)
	}
}

// applyJSONPatch applies the add, replace and test operations of an RFC 6902
// patch (all the basic-auth components use) to a copy of o.
func applyJSONPatch(t *testing.T, o obj, patch string) obj {
	t.Helper()
	var raw any
	if err := yaml.Unmarshal([]byte(patch), &raw); err != nil {
		t.Fatalf("patch: %v", err)
	}
	o = deepCopy(o).(obj)
	for _, op := range normalize(raw).([]any) {
		kind, p := str(op, "op"), str(op, "path")
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		parent := any(o)
		for _, key := range parts[:len(parts)-1] {
			if i, err := strconv.Atoi(key); err == nil {
				parent = at(parent, i)
			} else {
				parent = at(parent, key)
			}
		}
		last, value := parts[len(parts)-1], at(op, "value")
		switch parent := parent.(type) {
		case obj:
			if kind == "test" {
				if fmt.Sprint(parent[last]) != fmt.Sprint(value) {
					t.Fatalf("patch test %s: found %v, want %v", p, parent[last], value)
				}
				continue
			}
			if _, exists := parent[last]; kind == "replace" && !exists {
				t.Fatalf("patch %s %s: nothing to replace", kind, p)
			} else if kind != "add" && kind != "replace" {
				t.Fatalf("patch: op %q not supported here", kind)
			}
			parent[last] = value
		case []any:
			if kind != "add" || last != "-" {
				t.Fatalf("patch %s %s: only appending to lists is supported here", kind, p)
			}
			// Appending changes the slice header: store it back into its parent.
			grand := any(o)
			for _, key := range parts[:len(parts)-2] {
				if i, err := strconv.Atoi(key); err == nil {
					grand = at(grand, i)
				} else {
					grand = at(grand, key)
				}
			}
			grand.(obj)[parts[len(parts)-2]] = append(parent, value)
		default:
			t.Fatalf("patch %s %s: no such parent", kind, p)
		}
	}
	return o
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case obj:
		m := make(obj, len(v))
		for k, val := range v {
			m[k] = deepCopy(val)
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, val := range v {
			l[i] = deepCopy(val)
		}
		return l
	}
	return v
}

// kustomization returns the Kustomization in exactly dir.
func kustomization(t *testing.T, docs []doc, dir string) doc {
	t.Helper()
	for _, d := range docs {
		if d.file == dir+"/kustomization.yaml" && d.kind() == "Kustomization" {
			return d
		}
	}
	t.Fatalf("no Kustomization in examples/%s", dir)
	return doc{}
}

// TestKubernetesBasicAuth applies the patches of the basic-auth components
// to the base and the metrics-api ScaledObject, as variants/basic-auth does,
// and checks the result: the web config is mounted, and the credentials KEDA
// and Prometheus send match its bcrypt hashes. (test/manifests checks the
// real kustomize build of every variant.)
func TestKubernetesBasicAuth(t *testing.T) {
	docs := loadYAML(t)
	const dir = "kubernetes"
	variant := kustomization(t, docs, dir+"/variants/basic-auth")
	var deployed []doc // the resources the components patch
	var components []doc
	for _, r := range list(variant.obj, "resources") {
		base := path.Join(dir+"/variants/basic-auth", r.(string))
		for _, res := range list(kustomization(t, docs, base).obj, "resources") {
			for _, d := range docs {
				if d.file == path.Join(base, res.(string)) {
					deployed = append(deployed, d)
				}
			}
		}
	}
	for _, c := range list(variant.obj, "components") {
		cdir := path.Join(dir+"/variants/basic-auth", c.(string))
		comp := findOne(t, docs, cdir, "Component", "")
		components = append(components, comp)
		for _, res := range list(comp.obj, "resources") {
			for _, d := range docs {
				if d.file == path.Join(cdir, res.(string)) {
					deployed = append(deployed, d)
				}
			}
		}
	}
	patched := map[string]doc{}
	for _, comp := range components {
		for _, p := range list(comp.obj, "patches") {
			kind, name := str(p, "target", "kind"), str(p, "target", "name")
			base := findOne(t, deployed, dir, kind, name)
			if prev, ok := patched[kind]; ok {
				base = prev
			}
			patched[kind] = doc{comp.file + " patching " + base.file, applyJSONPatch(t, base.obj, str(p, "patch"))}
		}
	}
	dep, so, sm := patched["Deployment"], patched["ScaledObject"], patched["ServiceMonitor"]
	if dep.obj == nil || so.obj == nil || sm.obj == nil {
		t.Fatalf("want patches of the Deployment, the ScaledObject and the ServiceMonitor, found %v", sortedKeys(patched))
	}

	f := checkExporterDeployment(t, docs, dir, dep, true)
	webConfigFile := f.flags["web.config.file"]
	if webConfigFile == "" {
		t.Fatalf("%s: no --web.config.file", dep)
	}
	pod := mapping(dep.obj, "spec", "template", "spec")
	webConfig := mountedFile(t, docs, dir, pod, list(pod, "containers")[0].(obj), webConfigFile)
	var wc struct {
		Users map[string]string `yaml:"basic_auth_users"`
	}
	if err := yaml.UnmarshalStrict([]byte(webConfig), &wc); err != nil {
		t.Fatalf("web config %s: %v", webConfigFile, err)
	}
	login := func(where, user, password string) {
		hash, ok := wc.Users[user]
		if !ok {
			t.Errorf("%s: user %q is not in the web config's basic_auth_users", where, user)
			return
		}
		if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)); err != nil {
			t.Errorf("%s: the password of %q does not match its bcrypt hash in the web config: %v", where, user, err)
		}
	}
	// Basic auth covers /healthz and /readyz too: httpGet probes would get 401.
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		checkProbe(t, dep, f, probe, "")
		if mapping(dep.obj, "spec", "template", "spec", "containers", 0, probe, "httpGet") != nil {
			t.Errorf("%s: %s is an httpGet, which basic auth answers with 401", dep, probe)
		}
	}

	svc := findOne(t, docs, dir, "Service", "openwebui-exporter")
	checkScaledObject(t, so, svc.name(), "")
	tr := at(so.obj, "spec", "triggers", 0)
	if str(tr, "metadata", "authMode") != "basic" {
		t.Errorf("%s: want authMode: basic", so)
	}
	ta := findOne(t, docs, dir+"/components/basic-auth-metrics-api", "TriggerAuthentication", str(tr, "authenticationRef", "name"))
	params := map[string]string{}
	for _, ref := range list(ta.obj, "spec", "secretTargetRef") {
		params[str(ref, "parameter")] = secretValue(t, docs, dir, str(ref, "name"), str(ref, "key"))
	}
	login(ta.String(), params["username"], params["password"])

	ba := mapping(sm.obj, "spec", "endpoints", 0, "basicAuth")
	login(sm.String(),
		secretValue(t, docs, dir, str(ba, "username", "name"), str(ba, "username", "key")),
		secretValue(t, docs, dir, str(ba, "password", "name"), str(ba, "password", "key")))
}

// TestEveryExporterContainer checks the args and env of every exporter
// container anywhere under examples/, patches included.
func TestEveryExporterContainer(t *testing.T) {
	seen := 0
	var walk func(d doc, v any)
	walk = func(d doc, v any) {
		switch v := v.(type) {
		case obj:
			for k, val := range v {
				if k == "containers" {
					for _, c := range list(val) {
						if strings.Contains(str(c, "image"), "openwebui_exporter") || str(c, "name") == "exporter" {
							seen++
							checkFlags(t, d.String(), list(c, "args"))
							checkEnv(t, d.String(), list(c, "env"))
						}
					}
				}
				walk(d, val)
			}
		case []any:
			for _, val := range v {
				walk(d, val)
			}
		}
	}
	for _, d := range loadYAML(t) {
		walk(d, d.obj)
	}
	if seen < 2 {
		t.Errorf("found only %d exporter containers", seen)
	}
}

// TestDropIn checks the old scaler's manifests: env vars, not flags.
func TestDropIn(t *testing.T) {
	docs := loadYAML(t)
	const dir = "drop-in"
	dep := findOne(t, docs, dir, "Deployment", "openwebui-scaler")
	f := checkExporterDeployment(t, docs, dir, dep, false)
	svc := findOne(t, docs, dir, "Service", "openwebui-scaler")
	checkService(t, svc, f)
	for _, so := range find(docs, dir, "ScaledObject", "") {
		checkScaledObject(t, so, svc.name(), "")
	}
}

// TestStandaloneExamples checks examples/*.yaml and *.yml.
func TestStandaloneExamples(t *testing.T) {
	docs := loadYAML(t)
	for _, d := range docs {
		if strings.Contains(d.file, "/") {
			continue
		}
		if d.kind() == "ScaledObject" {
			checkScaledObject(t, d, "", "")
		}
	}
}

// checkScrapeConfig checks a Prometheus configuration's scrape of the exporter.
func checkScrapeConfig(t *testing.T, d doc, wantHost string) {
	t.Helper()
	jobs := list(d.obj, "scrape_configs")
	if len(jobs) == 0 {
		t.Errorf("%s: no scrape_configs", d.file)
	}
	for _, j := range jobs {
		if p := str(j, "metrics_path"); p != "" && p != "/metrics" {
			t.Errorf("%s: metrics_path %q, want /metrics", d.file, p)
		}
		for _, sc := range list(j, "static_configs") {
			for _, target := range list(sc, "targets") {
				host, port, err := net.SplitHostPort(target.(string))
				if err != nil || port != "8080" || (wantHost != "" && host != wantHost) {
					t.Errorf("%s: target %v, want %s:8080", d.file, target, wantHost)
				}
			}
		}
	}
}

func TestPrometheusConfigs(t *testing.T) {
	docs := loadYAML(t)
	seen := 0
	for _, d := range docs {
		switch d.file {
		case "prometheus.yml":
			checkScrapeConfig(t, d, "")
		case "compose/prometheus.yml":
			checkScrapeConfig(t, d, "exporter")
		default:
			continue
		}
		seen++
	}
	if seen != 2 {
		t.Errorf("want examples/prometheus.yml and examples/compose/prometheus.yml, found %d", seen)
	}
}

func TestCompose(t *testing.T) {
	docs := loadYAML(t)
	var compose doc
	for _, d := range docs {
		if d.file == "compose/compose.yaml" {
			compose = d
		}
	}
	if compose.obj == nil {
		t.Fatal("no examples/compose/compose.yaml")
	}
	services := mapping(compose.obj, "services")
	for _, want := range []string{"open-webui", "ollama", "exporter", "prometheus", "grafana"} {
		if services[want] == nil {
			t.Errorf("compose: no service %s", want)
		}
	}
	exp := mapping(services, "exporter")
	flags := checkFlags(t, "compose exporter", list(exp, "command"))
	for name := range mapping(exp, "environment") {
		if !facts.envs[name] {
			t.Errorf("compose exporter: env %s is not read by the exporter", name)
		}
	}
	if u, err := url.Parse(flags["openwebui.url"]); err != nil || u.Hostname() != "open-webui" || u.Port() != "8080" {
		t.Errorf("compose exporter: --openwebui.url=%s, want http://open-webui:8080", flags["openwebui.url"])
	}
	if addr, ok := flags["web.listen-address"]; ok && portOf(t, "compose exporter", addr) != "8080" {
		t.Errorf("compose exporter: --web.listen-address=%s, want port 8080", addr)
	}
	published := false
	for _, p := range list(exp, "ports") {
		if strings.HasSuffix(p.(string), ":8080") {
			published = true
		}
	}
	if !published {
		t.Errorf("compose exporter: want port 8080 published, found %v", list(exp, "ports"))
	}
	// The wake gate: Open WebUI talks to Ollama through the exporter.
	if addr := flags["gate.listen-address"]; portOf(t, "compose exporter", addr) != "11434" {
		t.Errorf("compose exporter: --gate.listen-address=%q, want port 11434", addr)
	}
	if b := flags["gate.backend"]; b != "http://ollama:11434" {
		t.Errorf("compose exporter: --gate.backend=%q, want http://ollama:11434 (the ollama service)", b)
	}
	if u := str(services, "open-webui", "environment", "OLLAMA_BASE_URL"); u != "http://exporter:11434" {
		t.Errorf("compose open-webui: OLLAMA_BASE_URL=%q, want http://exporter:11434 (the gate)", u)
	}
	// Bind mounts must name files of this repository.
	for name, s := range services {
		for _, v := range list(s, "volumes") {
			src, _, _ := strings.Cut(v.(string), ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join("compose", src)); err != nil {
					t.Errorf("compose %s: volume %s: %v", name, v, err)
				}
			}
		}
	}
	// Grafana's dashboard provider reads the directory the dashboard is mounted into.
	var dashboardDir string
	for _, v := range list(services, "grafana", "volumes") {
		parts := strings.Split(v.(string), ":")
		if strings.HasSuffix(parts[0], ".json") {
			dashboardDir = path.Dir(parts[1])
		}
	}
	providers := 0
	for _, d := range docs {
		for _, p := range list(d.obj, "providers") {
			if strings.HasPrefix(d.file, "compose/grafana/") {
				providers++
				if str(p, "options", "path") != dashboardDir {
					t.Errorf("%s: provider path %q, but the dashboard is mounted into %q", d.file, str(p, "options", "path"), dashboardDir)
				}
			}
		}
	}
	if providers != 1 || dashboardDir == "" {
		t.Errorf("compose: want the dashboard mounted into Grafana and one provider for it; found %d providers, dashboard dir %q", providers, dashboardDir)
	}
}

// grafanaDashboards reads every dashboard under examples/grafana, by file.
func grafanaDashboards(t *testing.T) map[string]obj {
	t.Helper()
	files, err := filepath.Glob("grafana/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards under examples/grafana: %v", err)
	}
	out := make(map[string]obj, len(files))
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var dash obj
		if err := json.Unmarshal(raw, &dash); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out[file] = dash
	}
	return out
}

// TestGrafanaDashboards checks every expression of every dashboard under
// examples/grafana against the metrics the exporter serves, and that the
// data source is the ${datasource} variable throughout.
func TestGrafanaDashboards(t *testing.T) {
	for file, dash := range grafanaDashboards(t) {
		hasVar := false
		for _, v := range list(dash, "templating", "list") {
			if str(v, "name") == "datasource" && str(v, "type") == "datasource" && str(v, "query") == "prometheus" {
				hasVar = true
			}
			if q := str(v, "query", "query"); str(v, "type") == "query" {
				m := labelValuesRE.FindStringSubmatch(q)
				if m == nil {
					t.Errorf("%s: variable %s: query %q, want label_values(metric, label)", file, str(v, "name"), q)
				} else {
					checkExpr(t, file+" variable "+str(v, "name"), m[1])
				}
				checkDatasource(t, file+" variable "+str(v, "name"), at(v, "datasource"))
			}
		}
		if !hasVar {
			t.Errorf("%s: want a templating variable named datasource of type datasource (prometheus)", file)
		}
		all := map[string]bool{}
		var walk func(where string, panels []any)
		walk = func(where string, panels []any) {
			for _, p := range panels {
				title := where + " panel " + strconv.Quote(str(p, "title"))
				if str(p, "type") != "row" {
					checkDatasource(t, title, at(p, "datasource"))
				}
				for _, target := range list(p, "targets") {
					checkDatasource(t, title, at(target, "datasource"))
					expr := str(target, "expr")
					for _, n := range checkExpr(t, title, expr) {
						all[n] = true
					}
					all[strings.Join(strings.Fields(expr), " ")] = true
				}
				walk(where, list(p, "panels")) // collapsed rows
			}
		}
		walk(file, list(dash, "panels"))
		for _, want := range []string{"openwebui_active_users", "openwebui_up", "openwebui_scrape_duration_seconds",
			"openwebui_last_success_timestamp_seconds", "kube_deployment_status_replicas",
			// The gate per backend (issue 26): state, held and in flight, the
			// wait, outcomes, what KEDA gets, warm-ups, replicas.
			"openwebui_gate_backend_state", "openwebui_gate_held_requests", "openwebui_gate_inflight_requests",
			"openwebui_gate_hold_duration_seconds_bucket", "openwebui_gate_requests_total", "openwebui_backend_demand",
			"openwebui_gate_warmups_total", "openwebui_gate_warmup_duration_seconds_bucket",
			"openwebui_gate_replica_up", "openwebui_gate_replica_inflight_requests", "openwebui_gate_replica_requests_total"} {
			if !all[want] {
				t.Errorf("%s: no panel shows %s", file, want)
			}
		}
		if !all[`time() - openwebui_last_success_timestamp_seconds{job=~"$job"}`] {
			t.Errorf("%s: want a staleness panel, time() - openwebui_last_success_timestamp_seconds", file)
		}
		if !all[`kube_deployment_status_replicas{deployment=~"$ollama"}`] {
			t.Errorf("%s: want Ollama's replicas, kube_deployment_status_replicas{deployment=~\"$ollama\"}", file)
		}
	}
}

func checkDatasource(t *testing.T, where string, ds any) {
	t.Helper()
	if uid := str(ds, "uid"); uid != "${datasource}" {
		t.Errorf("%s: datasource %v, want uid ${datasource}", where, ds)
	}
}
