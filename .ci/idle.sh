#!/usr/bin/env bash
# The idle-tab policy end to end: a simulated day of 8 people through the
# real exporter binary, with the policy off and at 15 minutes. Fails if a
# chat message did not reach the served count at the next read, if
# /active_users failed, or if the policy saved no GPU time. About 20 s.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "--- simulated day (bench/simday -check)"
go run ./bench/simday -people 8 -seeds 1 -timeouts 0,15m -check
for target in FuzzParseAnalyticsUsers FuzzParseChatList; do
	echo "--- fuzz $target"
	go test -run='^$' -fuzz="^$target\$" -fuzztime=10s ./openwebui/
done
