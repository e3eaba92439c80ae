#!/usr/bin/env bash
# Memory of one held body, by framing: the exporter's RSS (peak and while
# holding) with a 200 MiB body held for a sleeping backend, sent with a
# Content-Length and chunked. A chunked body used to take 2.5 times its size
# (issue 23: 530 MiB against 216 MiB). Usage: bench/held-memory.sh [MiB]
source "$(dirname "$0")/lib.sh"
MIB=${1:-200}
GATE_ADDR=${GATE_ADDR:-127.0.0.1:19381}
build
start_fake
head -c $((MIB << 20)) /dev/zero >"$BIN/body"
# The backend is a port nothing listens on: asleep (connection refused).
for framing in content-length chunked; do
	start_exporter --gate.listen-address="$GATE_ADDR" --gate.backend=http://127.0.0.1:9 --gate.hold-timeout=2m --gate.max-held-bytes=$((MIB + 16))MiB
	wait_http "http://$GATE_ADDR/_gate/status"
	before=$(rss_mib "$EXPORTER_PID")
	te=()
	if [[ $framing == chunked ]]; then te=(-H 'Transfer-Encoding: chunked'); fi
	curl -s -m 120 -o /dev/null "${te[@]}" -H 'Content-Type: application/json' --data-binary @"$BIN/body" "http://$GATE_ADDR/api/chat" &
	CURL=$!
	# Held once the body is in memory (the gate counts a request as held from
	# its first byte, and its bytes at once with a Content-Length): the RSS
	# has grown by the body, then a second for the last reads.
	for _ in $(seq 1200); do
		awk -v want=$((MIB * 1024)) -v b="$before" '/^VmRSS:/ { exit !($2 - b * 1024 >= want) }' "/proc/$EXPORTER_PID/status" && break
		sleep 0.1
	done
	sleep 1
	awk -v f="$framing" -v m="$MIB" -v b="$before" '/^VmHWM:/ { h = $2 } /^VmRSS:/ { r = $2 }
		END { printf "%d MiB held, %-14s RSS: %.0f MiB before, peak %.0f MiB, holding %.0f MiB\n", m, f, b, h / 1024, r / 1024 }' "/proc/$EXPORTER_PID/status"
	kill "$CURL" 2>/dev/null || true
	wait "$CURL" 2>/dev/null || true
	stop_exporter
done
