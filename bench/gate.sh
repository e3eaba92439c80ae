#!/usr/bin/env bash
# The wake gate beside the same stand-in Ollama reached directly and through
# nginx, in one run (issue 17, item 9; BENCHMARKS.md, "The wake gate"):
# added latency of a small chat at 16 connections (wrk), added time to first
# chunk and between chunks of streams, and 1,000 held requests (memory, and
# how soon after the backend's first HTTP answer they reach it).
#   bench/gate.sh                         # the defaults: 5 runs, 1000 held
#   bench/gate.sh --runs=3 --held-runs=1  # quicker; any gatebench flag (see go run ./bench/gatebench -h)
# Needs wrk and nginx (Debian: apt-get install wrk nginx); nginx runs as
# nobody with its own config on loopback, buffering off.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk nginx; do
	command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || { echo "$tool is missing: apt-get install wrk nginx" >&2; exit 1; }
done
BIN=$(mktemp -d)
trap 'rm -rf "$BIN"' EXIT
go build -o "$BIN/openwebui_exporter" .
go build -o "$BIN/fakeopenwebui" ./cmd/fakeopenwebui
go build -o "$BIN/fakeollama" ./cmd/fakeollama
go build -o "$BIN/goproxy" ./bench/goproxy
go build -o "$BIN/gatebench" ./bench/gatebench
"$BIN/gatebench" --bin="$BIN" --nginx="$(command -v nginx || echo /usr/sbin/nginx)" "$@"
