package manifests

import (
	"bufio"
	"bytes"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// variantsFile lists every kustomize variant (another suite applies them to
// a real API server too).
const variantsFile = "examples/kustomize-variants.txt"

// kustomizeCases: what each variant must set up. The token Secret is the
// user's in all of them: no example may ship one (applying it would
// overwrite the real token).
var kustomizeCases = map[string]expect{
	"examples/kubernetes/base": {minReplicas: 1, extraKinds: []string{"ServiceMonitor", "PrometheusRule"}},
	"examples/kubernetes": {trigger: "metrics-api", minReplicas: 1,
		extraKinds: []string{"ServiceMonitor", "PrometheusRule"}},
	"examples/kubernetes/variants/prometheus": {trigger: "prometheus", minReplicas: 1,
		extraKinds: []string{"ServiceMonitor", "PrometheusRule"}},
	"examples/kubernetes/variants/push": {trigger: "external-push", grpcTLS: true, minReplicas: 2,
		extraKinds: []string{"Certificate", "Issuer", "TriggerAuthentication", "PodDisruptionBudget"}},
	"examples/kubernetes/variants/basic-auth": {trigger: "metrics-api", basicAuth: true, minReplicas: 1,
		extraKinds: []string{"TriggerAuthentication", "ServiceMonitor"}},
	"examples/kubernetes/variants/basic-auth-prometheus": {trigger: "prometheus", basicAuth: true, minReplicas: 1,
		extraKinds: []string{"ServiceMonitor"}},
	"examples/kubernetes/variants/basic-auth-push": {trigger: "external-push", basicAuth: true, grpcTLS: true, minReplicas: 2,
		extraKinds: []string{"Certificate", "TriggerAuthentication", "PodDisruptionBudget", "ServiceMonitor"}},
	// The wake gate (issues 17 and 18).
	"examples/kubernetes/variants/gate": {trigger: "metrics-api", minReplicas: 2, gate: true,
		extraKinds: []string{"ServiceMonitor", "PodDisruptionBudget"}},
	"examples/kubernetes/variants/gate-two-pools": {trigger: "metrics-api", minReplicas: 2, gate: true,
		backends: []string{"small", "big"}, extraKinds: []string{"ServiceMonitor", "PodDisruptionBudget"}},
	// A pool of replicas (issue 25).
	"examples/kubernetes/variants/gate-pool": {trigger: "metrics-api", minReplicas: 2, gate: true,
		backends: []string{"chat"}, extraKinds: []string{"ServiceMonitor", "PodDisruptionBudget"}, targetValues: map[string]string{"chat": "2"}},
	// docs/scaling.md: the push variant with KEDA's cron trigger for warm hours.
	"examples/scaling/warm-hours": {trigger: "external-push", grpcTLS: true, minReplicas: 2,
		extraKinds: []string{"Certificate", "Issuer", "TriggerAuthentication", "PodDisruptionBudget"}},
}

func readVariants(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, variantsFile))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out
}

// TestKustomizeVariantsListed: every kustomization under examples/ is in
// the list, and every listed directory is one.
func TestKustomizeVariantsListed(t *testing.T) {
	listed := map[string]bool{}
	for _, v := range readVariants(t) {
		listed[v] = true
	}
	found := map[string]bool{}
	err := filepath.WalkDir(filepath.Join(repoRoot, "examples"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "kustomization.yaml" {
			return err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !strings.Contains(string(raw), "\nkind: Kustomization\n") {
			return nil // a Component: built through the variants
		}
		rel, err := filepath.Rel(repoRoot, filepath.Dir(p))
		found[filepath.ToSlash(rel)] = true
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for v := range found {
		if !listed[v] {
			t.Errorf("%s is a kustomization but not in %s", v, variantsFile)
		}
	}
	for v := range listed {
		if !found[v] {
			t.Errorf("%s lists %s, which has no kustomization.yaml", variantsFile, v)
		}
	}
	if len(found) < 7 {
		t.Errorf("found only %d kustomizations under examples/", len(found))
	}
}

func TestKustomizeVariants(t *testing.T) {
	for _, dir := range readVariants(t) {
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			out, err := run(bins.kustomize, "build", dir)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := DecodeStrict(out)
			if err != nil {
				t.Fatalf("decoding strictly: %v\n%s", err, out)
			}
			s := setup{objs}
			checkNoToken(t, s)
			if dir == "examples/drop-in" {
				checkDropIn(t, s)
				return
			}
			want, ok := kustomizeCases[dir]
			if !ok {
				t.Fatalf("no expectations for %s in kustomizeCases", dir)
			}
			want.namespace = namespace
			want.external = set("openwebui-exporter-token")
			checkSetup(t, s, want)
			if t.Failed() {
				t.Logf("kustomize build %s:\n%s", dir, out)
			}
		})
	}
}

// checkNoToken: no Secret of an example holds an Open WebUI credential.
func checkNoToken(t *testing.T, s setup) {
	t.Helper()
	for _, d := range s.all("Secret") {
		sec := d.Obj.(*corev1.Secret)
		values := map[string]string{}
		for k, v := range sec.StringData {
			values[k] = v
		}
		for k, v := range sec.Data {
			values[k] = string(v)
		}
		for k, v := range values {
			if k == "token" || strings.HasPrefix(strings.TrimSpace(v), "sk-") {
				t.Errorf("%s: key %s looks like an Open WebUI token: applying it would overwrite the user's", d, k)
			}
		}
	}
}

// checkDropIn: the old scaler's replacement, configured by env vars like the
// old scaler; its URLs must name the namespace it is deployed to.
func checkDropIn(t *testing.T, s setup) {
	t.Helper()
	for _, o := range s.objs {
		if o.Obj.GetNamespace() != namespace {
			t.Errorf("%s: namespace %q, want %q", o, o.Obj.GetNamespace(), namespace)
		}
	}
	deps, svcs, sos := s.all("Deployment"), s.all("Service"), s.all("ScaledObject")
	if len(deps) != 1 || len(svcs) != 1 || len(sos) != 1 {
		t.Fatalf("want one Deployment, Service and ScaledObject; found %d, %d, %d", len(deps), len(svcs), len(sos))
	}
	dep, svc := deps[0].Obj.(*appsv1.Deployment), svcs[0].Obj.(*corev1.Service)
	c := dep.Spec.Template.Spec.Containers[0]
	flags(t, deps[0].String(), c.Args)
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	for _, name := range []string{"API_URL", "TOKEN", "PORT"} {
		if _, ok := env[name]; !ok {
			t.Errorf("%s: no env %s (the old scaler's variables)", deps[0], name)
		}
	}
	if ref := env["TOKEN"].ValueFrom; ref == nil || ref.SecretKeyRef == nil {
		t.Errorf("%s: TOKEN must come from a Secret", deps[0])
	}
	if u, err := url.Parse(env["API_URL"].Value); err != nil || !strings.HasSuffix(u.Hostname(), "."+namespace+".svc") {
		t.Errorf("%s: API_URL %q, want a Service in %s (Open WebUI's official chart: open-webui, port 80)", deps[0], env["API_URL"].Value, namespace)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(dep.Spec.Template.Labels)) {
		t.Errorf("%s: does not select the Deployment's pods", svcs[0])
	}
	so := sos[0].Obj.(*kedav1alpha1.ScaledObject)
	u, err := url.Parse(so.Spec.Triggers[0].Metadata["url"])
	if err != nil {
		t.Fatal(err)
	}
	wantHost := svc.Name + "." + namespace + ".svc"
	port := ""
	for _, p := range svc.Spec.Ports {
		if p.Name == "http" {
			port = strconv.Itoa(int(p.Port))
		}
	}
	if u.Hostname() != wantHost || u.Port() != port || u.Path != "/active_users" {
		t.Errorf("%s: url %s, want %s:%s/active_users (the Service's http port)", sos[0], u, wantHost, port)
	}
	if env["PORT"].Value != "" && env["PORT"].Value != strconv.Itoa(int(c.Ports[0].ContainerPort)) {
		t.Errorf("%s: PORT %s is not the container port", deps[0], env["PORT"].Value)
	}
}
