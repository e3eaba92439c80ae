// Package manifests checks the Kubernetes manifests this repository ships (the
// Helm chart's renderings and every kustomize variant) against the upstream Go
// types of the objects: Kubernetes' own, KEDA's, the Prometheus Operator's and
// cert-manager's. It is a module of its own so that these dependencies stay
// out of the exporter's go.mod.
package manifests

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"
)

// Decoded is one document of a rendering, decoded into its upstream type.
type Decoded struct {
	APIVersion, Kind string
	Obj              metav1.Object // *appsv1.Deployment, *kedav1alpha1.ScaledObject, ...
}

func (d Decoded) String() string {
	return fmt.Sprintf("%s %s/%s", d.Kind, d.Obj.GetNamespace(), d.Obj.GetName())
}

// types lists every apiVersion and kind the manifests may contain. A kind
// missing here is an error: nothing goes out unchecked.
var types = map[[2]string]func() metav1.Object{
	{"v1", "ConfigMap"}:                            func() metav1.Object { return &corev1.ConfigMap{} },
	{"v1", "Secret"}:                               func() metav1.Object { return &corev1.Secret{} },
	{"v1", "Service"}:                              func() metav1.Object { return &corev1.Service{} },
	{"v1", "ServiceAccount"}:                       func() metav1.Object { return &corev1.ServiceAccount{} },
	{"apps/v1", "Deployment"}:                      func() metav1.Object { return &appsv1.Deployment{} },
	{"policy/v1", "PodDisruptionBudget"}:           func() metav1.Object { return &policyv1.PodDisruptionBudget{} },
	{"keda.sh/v1alpha1", "ScaledObject"}:           func() metav1.Object { return &kedav1alpha1.ScaledObject{} },
	{"keda.sh/v1alpha1", "TriggerAuthentication"}:  func() metav1.Object { return &kedav1alpha1.TriggerAuthentication{} },
	{"monitoring.coreos.com/v1", "ServiceMonitor"}: func() metav1.Object { return &monitoringv1.ServiceMonitor{} },
	{"monitoring.coreos.com/v1", "PrometheusRule"}: func() metav1.Object { return &monitoringv1.PrometheusRule{} },
	{"cert-manager.io/v1", "Certificate"}:          func() metav1.Object { return &cmv1.Certificate{} },
	{"cert-manager.io/v1", "Issuer"}:               func() metav1.Object { return &cmv1.Issuer{} },
}

// DecodeStrict splits a multi-document YAML stream and decodes every
// document into its upstream type. Unknown fields, duplicate keys, wrong
// value types and unknown kinds are errors; so is a stream without objects.
func DecodeStrict(stream []byte) ([]Decoded, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var out []Decoded
	for i := 0; ; i++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		js, err := sigsyaml.YAMLToJSONStrict(raw)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if string(bytes.TrimSpace(js)) == "null" {
			continue // an empty document, e.g. a template that rendered nothing
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(js, &head); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		newObj, ok := types[[2]string{head.APIVersion, head.Kind}]
		if !ok {
			return nil, fmt.Errorf("document %d (%s %s): apiVersion/kind %s/%s is not one this test knows", i, head.Kind, head.Metadata.Name, head.APIVersion, head.Kind)
		}
		obj := newObj()
		strictErrs, err := sigsjson.UnmarshalStrict(js, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", head.Kind, head.Metadata.Name, err)
		}
		if len(strictErrs) > 0 {
			return nil, fmt.Errorf("%s %s: %w", head.Kind, head.Metadata.Name, errors.Join(strictErrs...))
		}
		if obj.GetName() == "" {
			return nil, fmt.Errorf("document %d: %s without metadata.name", i, head.Kind)
		}
		out = append(out, Decoded{head.APIVersion, head.Kind, obj})
	}
	if len(out) == 0 {
		return nil, errors.New("no objects")
	}
	return out, nil
}
