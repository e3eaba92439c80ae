#!/usr/bin/env bash
# Builds (or reuses) the pinned control-plane binaries for the cluster suite:
# etcd, kube-apiserver, kubectl, kube-controller-manager (its HPA controller),
# keda-operator and keda-adapter (KEDA's metrics API server), all from the Go
# module proxy.
#
# Each component gets a small generated wrapper module (requires + the replace
# directives the upstream module needs) in a cache directory outside the
# repository, keyed by version:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/openwebui-exporter-ci/cluster/<component>-<version>/
# A binary that already exists there is reused. Prints where the binaries are
# (as shell assignments, on stdout's last lines) and how long each build took.
#
# Usage: test/cluster/build-binaries.sh            # build/reuse all
#        CLUSTER_BIN_ENV=path test/cluster/build-binaries.sh  # also write the assignments to a file
set -euo pipefail

ETCD_VERSION=${ETCD_VERSION:-3.6.16}
KUBE_VERSION=${KUBE_VERSION:-1.36.3}
KEDA_VERSION=${KEDA_VERSION:-2.21.0}
CACHE=${CLUSTER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/openwebui-exporter-ci/cluster}
mkdir -p "$CACHE"

log() { echo "build-binaries: $*" >&2; }

# timed NAME CMD...: runs CMD and prints how long it took.
timed() {
	local name=$1; shift
	local start end
	start=$(date +%s)
	"$@"
	end=$(date +%s)
	log "$name built in $((end - start)) s"
}

# gomod_of MODULE@VERSION: path of the upstream go.mod in the module cache.
gomod_of() {
	go mod download -json "$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p'
}

build_etcd() {
	local dir=$CACHE/etcd-$ETCD_VERSION
	if [ -x "$dir/bin/etcd" ]; then log "etcd $ETCD_VERSION: reusing $dir/bin/etcd"; return; fi
	mkdir -p "$dir/bin"
	# go install refuses etcd/server because of its replace directives, so a
	# wrapper requires it and pins its sibling modules to the same version.
	cat >"$dir/go.mod" <<MOD
module etcdwrapper

go 1.26

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 v$ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 v$ETCD_VERSION
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 v$ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 v$ETCD_VERSION
)
MOD
	cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
	(cd "$dir" && GOFLAGS=-mod=mod go build -trimpath -o bin/etcd.tmp go.etcd.io/etcd/server/v3 && mv bin/etcd.tmp bin/etcd)
}

build_kube() {
	local dir=$CACHE/kubernetes-$KUBE_VERSION
	if [ -x "$dir/bin/kube-apiserver" ] && [ -x "$dir/bin/kubectl" ] && [ -x "$dir/bin/kube-controller-manager" ]; then
		log "kubernetes $KUBE_VERSION: reusing $dir/bin/{kube-apiserver,kubectl,kube-controller-manager}"; return
	fi
	mkdir -p "$dir/bin"
	local upstream minor
	upstream=$(gomod_of k8s.io/kubernetes@v"$KUBE_VERSION")
	minor=${KUBE_VERSION#*.}; minor=${minor%%.*}
	# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces
	# them with ./staging/...: pin every one to the published v0.<minor>.<patch>.
	{
		echo "module kubewrapper"
		echo
		echo "go 1.26"
		echo
		echo "require k8s.io/kubernetes v$KUBE_VERSION"
		echo
		echo "replace ("
		sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/src/.*#\1#p' "$upstream" | sort -u |
			while read -r m; do echo "	$m => $m v0.${KUBE_VERSION#*.}"; done
		echo ")"
	} >"$dir/go.mod"
	cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
	local ld="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld="$ld -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	done
	for cmd in kube-apiserver kubectl kube-controller-manager; do
		[ -x "$dir/bin/$cmd" ] && continue
		(cd "$dir" && GOFLAGS=-mod=mod timed "$cmd" go build -trimpath -ldflags "$ld" -o "bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" &&
			mv "bin/$cmd.tmp" "bin/$cmd")
	done
}

build_keda() {
	local dir=$CACHE/keda-$KEDA_VERSION
	if [ -x "$dir/bin/keda-operator" ] && [ -x "$dir/bin/keda-adapter" ]; then
		log "keda $KEDA_VERSION: reusing $dir/bin/{keda-operator,keda-adapter}"; return
	fi
	mkdir -p "$dir/bin"
	local upstream
	upstream=$(gomod_of github.com/kedacore/keda/v2@v"$KEDA_VERSION")
	# Replace and exclude directives only apply in the main module, so the
	# wrapper copies KEDA's own (both single-line and block forms).
	{
		echo "module kedawrapper"
		echo
		echo "go 1.26"
		echo
		echo "require github.com/kedacore/keda/v2 v$KEDA_VERSION"
		echo
		awk '
			/^(replace|exclude) \(/ { inblock=1; print; next }
			inblock { print; if ($0 ~ /^\)/) { inblock=0; print "" } ; next }
			/^(replace|exclude) / { print }
		' "$upstream" | grep -v '=> \.\{1,2\}/'
	} >"$dir/go.mod"
	cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
GO
	# The operator scales 0 <-> 1; the adapter (KEDA's metrics API server)
	# serves the HPA that scales 1 <-> N.
	local cmd
	for cmd in operator adapter; do
		[ -x "$dir/bin/keda-$cmd" ] && continue
		(cd "$dir" && GOFLAGS=-mod=mod timed "keda-$cmd" go build -trimpath -ldflags "-s -w -X github.com/kedacore/keda/v2/version.Version=$KEDA_VERSION" \
			-o "bin/keda-$cmd.tmp" "github.com/kedacore/keda/v2/cmd/$cmd" && mv "bin/keda-$cmd.tmp" "bin/keda-$cmd")
	done
}

components=${*:-etcd kube keda}
for c in $components; do
	case $c in
	etcd) timed "etcd $ETCD_VERSION (total)" build_etcd ;;
	kube) timed "kube-apiserver+kubectl $KUBE_VERSION (total)" build_kube ;;
	keda) timed "keda-operator $KEDA_VERSION (total)" build_keda ;;
	*) log "unknown component $c (want etcd, kube, keda)"; exit 2 ;;
	esac
done

env_lines=$(cat <<ENV
CLUSTER_ETCD=$CACHE/etcd-$ETCD_VERSION/bin/etcd
CLUSTER_KUBE_APISERVER=$CACHE/kubernetes-$KUBE_VERSION/bin/kube-apiserver
CLUSTER_KUBECTL=$CACHE/kubernetes-$KUBE_VERSION/bin/kubectl
CLUSTER_KUBE_CONTROLLER_MANAGER=$CACHE/kubernetes-$KUBE_VERSION/bin/kube-controller-manager
CLUSTER_KEDA_OPERATOR=$CACHE/keda-$KEDA_VERSION/bin/keda-operator
CLUSTER_KEDA_ADAPTER=$CACHE/keda-$KEDA_VERSION/bin/keda-adapter
CLUSTER_KEDA_VERSION=$KEDA_VERSION
ENV
)
echo "$env_lines"
if [ -n "${CLUSTER_BIN_ENV:-}" ]; then echo "$env_lines" >"$CLUSTER_BIN_ENV"; fi
