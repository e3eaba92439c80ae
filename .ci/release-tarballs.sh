#!/usr/bin/env bash
# The release tarballs: promu builds the exporter for each platform (with the
# version information of .promu.yml), packs it with LICENSE and README.md,
# and sha256sums.txt lists the SHA-256 of every tarball. The release workflow
# uploads them; .ci/release.sh runs this too, so a tag cannot be the first run.
#
#   .ci/release-tarballs.sh [OUTDIR]          (default .tarballs)
#   PLATFORMS="linux/amd64" .ci/release-tarballs.sh
#
# SOURCE_DATE_EPOCH, when set, is the build date promu stamps.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.tarballs}
platforms=${PLATFORMS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64}

# A promu binary for the host: "go tool promu" with GOOS/GOARCH set would
# build promu itself for the target.
promu=.bin/promu
go build -modfile=tools.mod -o "$promu" github.com/prometheus/promu

# promu names tarballs after the git remote "origin", which in a fork or a
# CI checkout may be anything (a local path gives "main-0.1.0..."): name the
# project's URL through git's environment, which wins over the repository's
# own configuration (no remote is added or changed).
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=remote.origin.url \
	GIT_CONFIG_VALUE_0=https://github.com/openwebui-exporter/openwebui_exporter.git

rm -rf "$out"
mkdir -p "$out"
for platform in $platforms; do
	os=${platform%/*} arch=${platform#*/}
	# CGO off: one static binary per platform, whatever the host has.
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch "$promu" build --prefix ".build/$os-$arch"
	GOOS=$os GOARCH=$arch "$promu" tarball --prefix "$out" ".build/$os-$arch"
done
(cd "$out" && sha256sum -- *.tar.gz >sha256sums.txt && cat sha256sums.txt)
