#!/usr/bin/env bash
# The real-Ollama suite (test/ollama): the wake gate in front of a real
# `ollama serve` that answers from a tiny model the tests write themselves.
#
# Ollama is built from the Go module proxy (github.com/ollama/ollama, cgo) and
# cached by version under
#   ${XDG_CACHE_HOME:-$HOME/.cache}/openwebui-exporter-ci/ollama-<version>/bin/ollama
# A binary that exists there is reused. The module zip leaves llama.cpp's
# vendor/ directory out, so three headers come from elsewhere (see
# ../shared/docs/ollama-gate.md): nlohmann/json from Debian's
# nlohmann-json3-dev, stb/stb_image.h from Debian's libstb-dev, and
# miniaudio/miniaudio.h from the Go module github.com/gen2brain/malgo.
#
# Usage: .ci/ollama.sh          # build/reuse Ollama, then run the suite
#        .ci/ollama.sh build    # only build/reuse Ollama (prints its path)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

OLLAMA_VERSION=${OLLAMA_VERSION:-0.17.4}
MALGO_VERSION=${MALGO_VERSION:-0.11.24}
dir=${XDG_CACHE_HOME:-$HOME/.cache}/openwebui-exporter-ci/ollama-$OLLAMA_VERSION
bin=$dir/bin/ollama

log() { echo "ollama: $*" >&2; }

build_ollama() {
	if [ -x "$bin" ]; then log "reusing $bin"; return; fi
	local start missing=()
	start=$(date +%s)
	dpkg -s nlohmann-json3-dev >/dev/null 2>&1 || missing+=(nlohmann-json3-dev)
	dpkg -s libstb-dev >/dev/null 2>&1 || missing+=(libstb-dev)
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing ${missing[*]} (Debian)"
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	command -v g++ >/dev/null || {
		log "installing g++ (Debian)"
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null
	}
	mkdir -p "$dir/bin" "$dir/include/miniaudio"
	# Debian has no miniaudio: malgo carries the single header at its root.
	local malgo
	malgo=$(go mod download -json "github.com/gen2brain/malgo@v$MALGO_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
	[ -f "$malgo/miniaudio.h" ] || { log "no miniaudio.h in $malgo"; exit 1; }
	cp "$malgo/miniaudio.h" "$dir/include/miniaudio/miniaudio.h"
	# Debian's headers live in /usr/include (nlohmann/, stb/), already on the
	# compiler's path. Without -X, /api/version says 0.0.0.
	GOBIN=$dir/bin.tmp CGO_ENABLED=1 CGO_CPPFLAGS="-I$dir/include" \
		go install -ldflags "-X github.com/ollama/ollama/version.Version=$OLLAMA_VERSION" \
		"github.com/ollama/ollama@v$OLLAMA_VERSION"
	mv "$dir/bin.tmp/ollama" "$bin"
	rmdir "$dir/bin.tmp"
	log "built $bin in $(($(date +%s) - start)) s"
}

echo "--- ollama: github.com/ollama/ollama@v$OLLAMA_VERSION (built once per version)"
start=$(date +%s)
build_ollama
# With no server running, --version warns and ends with "client version is X".
echo "ollama $("$bin" --version 2>&1 | sed -n 's/.*version is //p') ready after $(($(date +%s) - start)) s: $bin"
if [ "${1:-}" = build ]; then echo "$bin"; exit 0; fi

echo "--- ollama: go test ./test/ollama/ (the gate in front of real Ollama)"
cd test/ollama
gofmt_out=$(gofmt -l .)
[ -z "$gofmt_out" ] || { echo "not gofmt-formatted: $gofmt_out"; exit 1; }
go vet ./...
tests=$(date +%s)
# CI=true: a missing Ollama or an exporter without the gate fails, never skips.
set +e
CI=true OLLAMA_BINARY=$bin OLLAMA_REPO_ROOT=${OLLAMA_REPO_ROOT:-$root} go test -count=1 -v -timeout 15m ./... 2>&1 |
	grep -v '^=== \(RUN\|PAUSE\|CONT\)'
status=${PIPESTATUS[0]}
set -e
echo "ollama suite: tests took $(($(date +%s) - tests)) s, $(($(date +%s) - start)) s in total with the build"
exit "$status"
