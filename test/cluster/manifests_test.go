package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"
)

// chartDir is the Helm chart under test (CLUSTER_CHART_DIR).
func chartDir() string {
	return envOr("CLUSTER_CHART_DIR", filepath.Join(repoRoot, "charts", "openwebui-exporter"))
}

// toolCommand returns the command line of a tool: $envName split on
// spaces, or "go tool -modfile=<modfile> <name>" run in the repository.
func toolCommand(envName, modfile, name string) ([]string, error) {
	if v := os.Getenv(envName); v != "" {
		return strings.Fields(v), nil
	}
	if _, err := os.Stat(filepath.Join(repoRoot, modfile)); err != nil {
		return nil, fmt.Errorf("%s is not set and %s does not exist in %s", envName, modfile, repoRoot)
	}
	return []string{"go", "tool", "-modfile=" + filepath.Join(repoRoot, modfile), name}, nil
}

func helm(args ...string) (string, error) {
	cmd, err := toolCommand("CLUSTER_HELM", "tools/helm.mod", "helm")
	if err != nil {
		return "", err
	}
	return run(nil, nil, cmd[0], append(cmd[1:], args...)...)
}

// kustomizeBuild renders a kustomization with the pinned kustomize, or with
// kubectl's built-in one when tools/kustomize.mod is not there yet.
func kustomizeBuild(dir string) (string, error) {
	cmd, err := toolCommand("CLUSTER_KUSTOMIZE", "tools/kustomize.mod", "kustomize")
	if err != nil {
		return cp.kubectl(nil, "kustomize", dir)
	}
	return run(nil, nil, cmd[0], append(cmd[1:], "build", dir)...)
}

// requireChart fails the test unless the chart is there: every manifest we
// ship is checked, and the scenarios take their ScaledObjects from it.
func requireChart(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(chartDir(), "Chart.yaml")); err != nil {
		t.Fatalf("no Helm chart at %s (CLUSTER_CHART_DIR): %v", chartDir(), err)
	}
}

// TestShippedManifestsAcceptedByAPIServer sends every manifest we ship to
// the real kube-apiserver with server-side dry-run and strict field
// validation: unknown or duplicate fields, wrong types and CRD schema
// violations (KEDA's, prometheus-operator's) are refused.
func TestShippedManifestsAcceptedByAPIServer(t *testing.T) {
	t.Run("helm chart", func(t *testing.T) {
		requireChart(t)
		valuesFiles, _ := filepath.Glob(filepath.Join(chartDir(), "ci", "*-values.yaml"))
		cases := map[string][]string{"default values": nil}
		for _, f := range valuesFiles {
			cases[filepath.Base(f)] = []string{"--values", f}
		}
		for _, name := range sortedKeys(cases) {
			t.Run(name, func(t *testing.T) {
				ns := newNamespace(t, "chart")
				out, err := helm(append([]string{"template", "openwebui-exporter", chartDir(), "--namespace", ns, "--kube-version", cp.kubeVersion}, cases[name]...)...)
				if err != nil {
					t.Fatalf("helm template: %v", err)
				}
				assertAccepted(t, out)
				if len(cases[name]) > 0 {
					assertScaledObjectPerBackend(t, cases[name][1], out)
				}
			})
		}
	})
	t.Run("kustomize", func(t *testing.T) {
		variants := kustomizeVariants(t)
		if len(variants) == 0 {
			t.Fatal("no kustomization.yaml under examples/")
		}
		for _, v := range variants {
			t.Run(v.name, func(t *testing.T) {
				out, err := kustomizeBuild(v.dir)
				if err != nil {
					t.Fatalf("kustomize build %s: %v", v.dir, err)
				}
				assertAccepted(t, out)
			})
		}
	})
}

// assertAccepted applies manifests with server-side dry-run and strict
// validation, and checks that every object was accepted. The namespaces
// the objects name are created first (a dry run needs them); objects that
// name none go to "default".
func assertAccepted(t *testing.T, manifests string) {
	t.Helper()
	kinds := objectKinds(t, manifests)
	if len(kinds) == 0 {
		t.Fatal("rendered no objects")
	}
	for _, doc := range decodeDocs(t, manifests) {
		if ns, _ := dig(doc, "metadata", "namespace").(string); ns != "" {
			ensureNamespace(t, ns)
		}
	}
	out, err := cp.kubectl([]byte(manifests), "apply", "--dry-run=server", "--validate=strict",
		"--server-side", "--field-manager=cluster-suite", "-f", "-")
	if err != nil {
		t.Fatalf("refused by kube-apiserver: %v", err)
	}
	accepted := strings.Count(out, "(server dry run)")
	if accepted != len(kinds) {
		t.Fatalf("%d objects rendered (%s), %d accepted:\n%s", len(kinds), strings.Join(kinds, ", "), accepted, out)
	}
	t.Logf("accepted (%d): %s", accepted, strings.Join(kinds, ", "))
}

// assertScaledObjectPerBackend checks, for a values file with the gate's
// named backends (gate.backends) and KEDA on, that the chart rendered one
// ScaledObject per backend, each trigger reading its own backend (push
// metadata backend, metrics-api ?backend=, prometheus backend="...").
func assertScaledObjectPerBackend(t *testing.T, valuesFile, manifests string) {
	t.Helper()
	b, err := os.ReadFile(valuesFile)
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Gate struct {
			Enabled  bool
			Backends []struct{ Name string }
		}
		KEDA struct{ Enabled bool } `yaml:"keda"`
	}
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatalf("%s: %v", valuesFile, err)
	}
	if !values.Gate.Enabled || len(values.Gate.Backends) == 0 || !values.KEDA.Enabled {
		return
	}
	var want, got []string
	for _, be := range values.Gate.Backends {
		want = append(want, be.Name)
	}
	for _, doc := range decodeDocs(t, manifests) {
		if doc["kind"] != "ScaledObject" {
			continue
		}
		triggers, _ := dig(doc, "spec", "triggers").([]any)
		name := ""
		for _, tr := range triggers {
			if n := triggerBackend(tr.(map[string]any)); n != "" {
				name = n
			}
		}
		if name == "" {
			t.Fatalf("ScaledObject %v reads no gate backend: %s", dig(doc, "metadata", "name"), yamlOf(triggers))
		}
		got = append(got, name)
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("gate.backends %v, but the ScaledObjects read backends %v: want one ScaledObject per backend", want, got)
	}
	t.Logf("one ScaledObject per gate backend: %v", got)
}

// triggerBackend is the gate backend a KEDA trigger reads ("" none).
func triggerBackend(trigger map[string]any) string {
	md, _ := trigger["metadata"].(map[string]any)
	switch trigger["type"] {
	case triggerPush, "external":
		b, _ := md["backend"].(string)
		return b
	case triggerMetricsAPI:
		raw, _ := md["url"].(string)
		if u, err := url.Parse(raw); err == nil {
			return u.Query().Get("backend")
		}
	case triggerPrometheus:
		q, _ := md["query"].(string)
		if _, rest, ok := strings.Cut(q, `backend="`); ok {
			name, _, _ := strings.Cut(rest, `"`)
			return name
		}
	}
	return ""
}

// objectKinds lists "Kind/name" of every object in a YAML stream.
func objectKinds(t *testing.T, manifests string) []string {
	t.Helper()
	var kinds []string
	for _, doc := range decodeDocs(t, manifests) {
		md, _ := doc["metadata"].(map[string]any)
		kinds = append(kinds, fmt.Sprintf("%v/%v", doc["kind"], md["name"]))
	}
	return kinds
}

// decodeDocs decodes a multi-document YAML stream, skipping empty documents.
func decodeDocs(t *testing.T, manifests string) []map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader([]byte(manifests)))
	var docs []map[string]any
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				return docs
			}
			t.Fatalf("decoding rendered YAML: %v", err)
		}
		if len(doc) > 0 {
			docs = append(docs, doc)
		}
	}
}

type variant struct{ name, dir string }

// kustomizeVariants finds every kustomization under examples/. Each
// Kustomization is built as it is. A Component cannot be built alone: one
// that no Kustomization uses is checked switched on in the kustomization of
// its parent directory, through a generated overlay.
func kustomizeVariants(t *testing.T) []variant {
	t.Helper()
	examples := filepath.Join(repoRoot, "examples")
	var out []variant
	var components []string
	used := map[string]bool{}
	err := filepath.WalkDir(examples, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "kustomization.yaml" {
			return err
		}
		dir := filepath.Dir(path)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var k struct {
			Kind       string
			Components []string
		}
		if err := yaml.Unmarshal(b, &k); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if k.Kind == "Component" {
			components = append(components, dir)
			return nil
		}
		for _, c := range k.Components {
			used[filepath.Clean(filepath.Join(dir, c))] = true
		}
		rel, _ := filepath.Rel(examples, dir)
		out = append(out, variant{"examples/" + rel, dir})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range components {
		if used[dir] {
			continue
		}
		rel, _ := filepath.Rel(examples, dir)
		base := filepath.Dir(dir)
		if _, err := os.Stat(filepath.Join(base, "kustomization.yaml")); err != nil {
			t.Fatalf("component examples/%s is used by no kustomization and has none beside it to be tried on", rel)
		}
		overlay := t.TempDir()
		baseRel, _ := filepath.Rel(overlay, base)
		compRel, _ := filepath.Rel(overlay, dir)
		y := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\ncomponents:\n  - %s\n", baseRel, compRel)
		if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
		out = append(out, variant{"examples/" + filepath.Dir(rel) + " with component " + filepath.Base(dir), overlay})
	}
	return out
}

var (
	nsMu  sync.Mutex
	nsSeq int
)

// newNamespace creates a fresh namespace (there is no namespace controller,
// so namespaces are never deleted: each test gets its own).
func newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	nsMu.Lock()
	nsSeq++
	ns := fmt.Sprintf("%s-%d-%s", prefix, nsSeq, randomHex(3))
	nsMu.Unlock()
	ensureNamespace(t, ns)
	return ns
}

func ensureNamespace(t *testing.T, ns string) {
	t.Helper()
	if _, err := cp.kubectl(nil, "get", "namespace", ns); err == nil {
		return
	}
	if _, err := cp.kubectl(nil, "create", "namespace", ns); err != nil {
		t.Fatal(err)
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
