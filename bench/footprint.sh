#!/usr/bin/env bash
# 5. Footprint: time from start to the first correct answer, idle RSS, RSS
# under load, and binary sizes.
source "$(dirname "$0")/lib.sh"
build
go run ./bench/startup --exporter "$BIN/openwebui_exporter" --fake "$BIN/fakeopenwebui" "$@"

start_fake --humans 3
start_exporter --cache.ttl=1h
wait_http "http://$EXPORTER_ADDR/active_users" '{"active_users":3}'
if command -v wrk >/dev/null; then
	wrk -t2 -c64 -d10s "http://$EXPORTER_ADDR/active_users" >/dev/null &
	WRK=$!
	sleep 8
	echo "RSS under load (wrk -c64 on /active_users, 8 s in): $(rss_mib "$EXPORTER_PID") MiB"
	wait "$WRK"
else
	echo "RSS under load: skipped (apt-get install wrk)"
fi

go build -o "$BIN/stripped" -ldflags="-s -w" .
size() { stat -c %s "$1" | awk '{ printf "%.1f MiB", $1 / 1048576 }'; }
echo "binary size: go build $(size "$BIN/openwebui_exporter"), -ldflags='-s -w' $(size "$BIN/stripped")"
