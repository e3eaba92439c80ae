#!/usr/bin/env bash
# Runs every benchmark of BENCHMARKS.md in order (about 12 minutes on 2
# cores), printing each one's output under a heading. Run it on a quiet
# machine: the figures are medians, but a busy neighbour still moves them.
set -euo pipefail
cd "$(dirname "$0")/.."
run() { printf '\n=== %s\n' "$*"; "$@"; }
run bench/serving.sh
run bench/slow-upstream.sh
run bench/upstream-load.sh
run go run ./bench/wakelatency
run go run ./bench/wakepull
run bench/footprint.sh
run bench/gobench.sh
run go run ./bench/idlecost
