#!/usr/bin/env bash
# 2. Slow upstream: callers' latency while Open WebUI takes 4 s and the cache
# has expired, with and without a good count within the stale bound.
source "$(dirname "$0")/lib.sh"
build
go run ./bench/slowupstream --exporter "$BIN/openwebui_exporter" --fake "$BIN/fakeopenwebui" "$@"
