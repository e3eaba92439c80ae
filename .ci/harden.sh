#!/usr/bin/env bash
# Hardening checks beyond `go test` (issues 12 and 19): fuzz the token
# scrubber, the one place all server-derived text passes on its way out,
# and every label value taken from upstream (/metrics must always be 200),
# from their seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "--- fuzz FuzzScrub"
go test -run='^$' -fuzz='^FuzzScrub$' -fuzztime=50000x ./openwebui/
echo "--- fuzz FuzzLabels"
go test -run='^$' -fuzz='^FuzzLabels$' -fuzztime=50000x ./collector/
