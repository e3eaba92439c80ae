#!/usr/bin/env bash
# The idle-tab policy and the wake gate end to end: simulated days through the
# real exporter binary (teams of 5 and 20, idle timeouts 5, 15 and 30 min),
# with Ollama's start-up (30 s, 2 min) and the gate modelled. Fails if a
# message reached the served count late, /active_users failed, or a target
# of issue 17 is not met: with the gate 0 failed messages, 20 people at 5 min
# fewer hours than at 15 min today, p99 hold <= start-up + 2 s; and of issue
# 18: with two pools, the big one (wake=request, the recommended idle=5m and
# cooldown 30 s) runs at most a quarter of the small one's hours, 0 failed
# (BENCHMARKS.md sections 6.2 and 6.3). About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "--- simulated day with the wake gate (bench/simday -wake -check)"
go run ./bench/simday -wake -check
for target in FuzzParseAnalyticsUsers FuzzParseChatList; do
	echo "--- fuzz $target"
	go test -run='^$' -fuzz="^$target\$" -fuzztime=50000x ./openwebui/
done
