#!/usr/bin/env bash
# 1. Serving cost: /active_users and /metrics with a warm cache, under wrk on
# loopback. Prints requests/s, p50 and p99 of each run, then the medians.
#   RUNS=5 DURATION=10s CONNS=16 THREADS=1 bench/serving.sh
# One wrk thread leaves the other core to the exporter; THREADS=2 CONNS=64
# oversubscribes the 2 cores and measures queueing more than the exporter.
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-5} DURATION=${DURATION:-10s} CONNS=${CONNS:-16} THREADS=${THREADS:-1}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
build
start_fake --humans 3
start_exporter --cache.ttl=1h
wait_http "http://$EXPORTER_ADDR/active_users" '{"active_users":3}'
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $RUNS runs each, cache warm (--cache.ttl=1h), $(nproc) cores shared by wrk and the exporter"
for path in /active_users /metrics; do
	rps=() p50=() p99=()
	for run in $(seq "$RUNS"); do
		out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "http://$EXPORTER_ADDR$path")
		if grep -q "Non-2xx" <<<"$out"; then echo "$path: non-2xx answers:"; echo "$out"; exit 1; fi
		r=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
		a=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
		b=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
		rps+=("$r") p50+=("$a") p99+=("$b")
		printf '  %-14s run %d: %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms\n' "$path" "$run" "$r" "$a" "$b"
	done
	printf '%-14s median: %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms  (RSS under load just after: %s MiB)\n' \
		"$path" "$(median "${rps[@]}")" "$(median "${p50[@]}")" "$(median "${p99[@]}")" "$(rss_mib "$EXPORTER_PID")"
done
