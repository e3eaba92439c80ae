#!/usr/bin/env bash
# Hardening checks beyond `go test` (issue 12): fuzz the token scrubber, the
# one place all server-derived text passes on its way out, from its seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "--- fuzz FuzzScrub"
go test -run='^$' -fuzz='^FuzzScrub$' -fuzztime=10s ./openwebui/
