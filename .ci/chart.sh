#!/usr/bin/env bash
# Chart and kustomize examples: helm lint + helm template over every values
# file in charts/openwebui-exporter/ci, kustomize build of every variant in
# examples/kustomize-variants.txt, and strict decoding of all of it into the
# upstream Go types (test/manifests, a module of its own).
# helm and kustomize are pinned in tools/helm.mod and tools/kustomize.mod and
# cached outside the repository, keyed by those files.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/openwebui-exporter-ci"
build_tool() { # name modfile package
	local key dir
	key=$(cat "$2" "${2%.mod}.sum" | sha256sum | cut -c1-16)
	dir="$cache/$1-$key"
	if [ ! -x "$dir/$1" ]; then
		mkdir -p "$dir"
		go build -modfile="$2" -o "$dir/$1.tmp" "$3"
		mv "$dir/$1.tmp" "$dir/$1"
	fi
	echo "$dir/$1"
}

echo "--- helm and kustomize (tools/helm.mod, tools/kustomize.mod)"
HELM=$(build_tool helm tools/helm.mod helm.sh/helm/v3/cmd/helm)
KUSTOMIZE=$(build_tool kustomize tools/kustomize.mod sigs.k8s.io/kustomize/kustomize/v5)
"$HELM" version --short
"$KUSTOMIZE" version

echo "--- exporter for --help-long"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/openwebui_exporter" .

echo "--- values files:" $(cd charts/openwebui-exporter/ci && ls *-values.yaml)
echo "--- kustomize variants:" $(grep -v "^#" examples/kustomize-variants.txt)
echo "--- chart and kustomize variants: render, decode strictly, cross-check (test/manifests)"
(cd test/manifests && go vet ./... &&
	HELM="$HELM" KUSTOMIZE="$KUSTOMIZE" EXPORTER="$bin/openwebui_exporter" go test -count=1 -v ./... 2>&1 |
	grep -v -E '^=== (RUN|PAUSE|CONT)')
