// Package cluster is the cluster end-to-end suite: a real etcd and
// kube-apiserver, KEDA's real operator and metrics adapter, and
// kube-controller-manager's HPA controller on 127.0.0.1 (no kubelet: no pod
// ever runs, but KEDA and the HPA scale a stub Ollama Deployment's
// spec.replicas as they would on a cluster), with the exporter and the fake
// Open WebUI as processes. It is its own Go module so that Kubernetes and
// KEDA stay out of the exporter's go.mod; it drives kubectl and the API
// server's HTTP/JSON API instead of importing client-go.
//
// The wake gate's scenarios (gate_test.go) add a stand-in Ollama process
// (cmd/fakeollama) that plays the kubelet's part: it is started when KEDA
// sets its stub Deployment's spec.replicas to 1, answers no HTTP for a
// start-up delay, and is stopped when spec.replicas returns to 0
// (ollama_test.go).
//
// The pool scenario (pool_test.go) scales a pool of replicas 1 -> 3 -> 1 on
// its load: the HPA that KEDA creates reads the pool's value through KEDA's
// adapter (an APIService on loopback). The suite plays the kubelet for
// several replicas (pods_test.go): pod i is a stand-in Ollama with
// --parallel at 127.0.0.i+1; on scale-in it deletes the busiest pod first,
// runs its preStop drain through the gate (the request of
// examples/gate-pool's hook, from the pod's own address) and stops it once
// the drain answered; it writes status.replicas, which the HPA reads.
//
// Run it with .ci/cluster.sh, or, from this directory:
//
//	./build-binaries.sh      # etcd, kube-apiserver, kubectl, kube-controller-manager, keda-operator, keda-adapter; cached by version
//	go test -count=1 -v ./...
//
// (without the CLUSTER_* variables the suite runs build-binaries.sh itself).
// The wake-up measurement for BENCHMARKS.md is a separate, longer command:
//
//	go test -count=1 -v -timeout 90m -parallel 3 -run TestMeasureWake ./... -args -measure.arrivals=10
//
// Environment:
//   - CLUSTER_ETCD, CLUSTER_KUBE_APISERVER, CLUSTER_KUBECTL, CLUSTER_KUBE_CONTROLLER_MANAGER,
//     CLUSTER_KEDA_OPERATOR, CLUSTER_KEDA_ADAPTER, CLUSTER_KEDA_VERSION: the binaries
//     (build-binaries.sh prints them);
//   - CLUSTER_REPO_ROOT: the exporter's repository (default ../..);
//   - CLUSTER_EXPORTER_BINARY, CLUSTER_FAKE_BINARY, CLUSTER_FAKEOLLAMA_BINARY: prebuilt
//     binaries (default: go build of the exporter, cmd/fakeopenwebui, cmd/fakeollama);
//   - CLUSTER_CHART_DIR: the Helm chart (default charts/openwebui-exporter);
//   - CLUSTER_HELM, CLUSTER_KUSTOMIZE: the tool commands (default
//     go tool -modfile=tools/helm.mod helm, go tool -modfile=tools/kustomize.mod kustomize;
//     kubectl's built-in kustomize when tools/kustomize.mod is absent);
//   - CLUSTER_PROMETHEUS: the prometheus binary (default: prometheus on PATH);
//   - CLUSTER_KEEP_DIR=1: keep the control plane's state and logs (kept anyway on failure).
package cluster
