#!/usr/bin/env bash
# 3. Upstream load: with --cache.ttl=1s, how many /api/usage requests reach
# Open WebUI per TTL window while wrk hammers /active_users at concurrency
# 1, 10, 50 and 200 for 30 s each. Target: exactly 1 per window.
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-30}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
build
start_fake --humans 3
usage_requests() { curl -s "http://$FAKE_ADDR/_fake/stats" | sed -n 's/.*"\/api\/usage":\([0-9]*\).*/\1/p'; }
echo "--cache.ttl=1s, ${DURATION}s per concurrency"
for c in 1 10 50 200; do
	start_exporter --cache.ttl=1s
	wait_http "http://$EXPORTER_ADDR/active_users" '{"active_users":3}'
	before=$(usage_requests)
	out=$(wrk -t"$(( c < 2 ? 1 : 2 ))" -c"$c" -d"${DURATION}s" "http://$EXPORTER_ADDR/active_users")
	after=$(usage_requests)
	stop_exporter
	rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
	awk -v c="$c" -v n="$((after - before))" -v d="$DURATION" -v rps="$rps" \
		'BEGIN { printf "concurrency %3d: %8.0f req/s to the exporter, %3d /api/usage requests in %ds = %.2f per 1s TTL window\n", c, rps, n, d, n / d }'
done
