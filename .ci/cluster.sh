#!/usr/bin/env bash
# The cluster suite (test/cluster): a real etcd + kube-apiserver and KEDA's
# real operator on 127.0.0.1, the exporter and the fake Open WebUI as
# processes. Binaries are built from the Go module proxy and cached by
# version under ${XDG_CACHE_HOME:-$HOME/.cache}/openwebui-exporter-ci/cluster/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
start=$(date +%s)

echo "--- cluster: prometheus (Debian package)"
if ! command -v prometheus >/dev/null; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

echo "--- cluster: etcd, kube-apiserver, kubectl, kube-controller-manager, keda-operator, keda-adapter (built once per version)"
envfile=$(mktemp)
trap 'rm -f "$envfile"' EXIT
CLUSTER_BIN_ENV=$envfile test/cluster/build-binaries.sh >/dev/null
set -a
# shellcheck disable=SC1090
. "$envfile"
set +a
echo "binaries ready after $(($(date +%s) - start)) s"

echo "--- cluster: go test ./test/cluster/"
cd test/cluster
gofmt_out=$(gofmt -l .)
[ -z "$gofmt_out" ] || { echo "not gofmt-formatted: $gofmt_out"; exit 1; }
go vet ./...
CLUSTER_REPO_ROOT=$root go test -count=1 -v -parallel 3 -timeout 20m ./... 2>&1 |
	grep -v '^=== \(RUN\|PAUSE\|CONT\)' 
status=${PIPESTATUS[0]}
echo "cluster suite took $(($(date +%s) - start)) s in total"
exit "$status"
