#!/usr/bin/env bash
# Soak test: the built exporter against the fake Open WebUI on loopback, under
# load, with Open WebUI flapping through the fault matrix. Bounded in time.
#   bench/soak.sh [--duration 60s] [--workers 32]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/openwebui_exporter" .
go build -o "$bin/fakeopenwebui" ./cmd/fakeopenwebui
go run ./bench/soak --exporter "$bin/openwebui_exporter" --fake "$bin/fakeopenwebui" "$@"
