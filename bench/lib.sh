# Shared helpers for the benchmark scripts: build the binaries, start the fake
# Open WebUI and the exporter on loopback, stop them on exit.
# shellcheck shell=bash
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FAKE_ADDR=${FAKE_ADDR:-127.0.0.1:19300}
EXPORTER_ADDR=${EXPORTER_ADDR:-127.0.0.1:19380}
TOKEN=sk-0123456789abcdef0123456789abcdef
BIN=$(mktemp -d)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$BIN"
}
trap cleanup EXIT

build() {
	go build -o "$BIN/openwebui_exporter" .
	go build -o "$BIN/fakeopenwebui" ./cmd/fakeopenwebui
}

# wait_http URL [want-body]: polls until URL answers 200 (and the body matches), 10 s at most.
wait_http() {
	for _ in $(seq 200); do
		if body=$(curl -sf "$1" 2>/dev/null) && [[ -z "${2:-}" || "$body" == "$2" ]]; then return 0; fi
		sleep 0.05
	done
	echo "timed out waiting for $1" >&2
	return 1
}

# start_fake [fake flags...]
start_fake() {
	"$BIN/fakeopenwebui" --listen "$FAKE_ADDR" --token "$TOKEN" "$@" 2>/dev/null &
	PIDS+=($!)
	FAKE_PID=$!
	wait_http "http://$FAKE_ADDR/health"
}

# start_exporter [exporter flags...]
start_exporter() {
	API_URL="http://$FAKE_ADDR" TOKEN="$TOKEN" "$BIN/openwebui_exporter" --web.listen-address="$EXPORTER_ADDR" --log.level=warn "$@" &
	PIDS+=($!)
	EXPORTER_PID=$!
}

stop_exporter() {
	kill "$EXPORTER_PID" 2>/dev/null || true
	wait "$EXPORTER_PID" 2>/dev/null || true
}

# to_ms VALUE: converts wrk's 450.00us / 2.10ms / 1.20s to milliseconds.
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0
		if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /s$/) n *= 1000
		printf "%.3f", n }'
}

# median NUMBERS...
median() {
	printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

rss_mib() {
	awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}
