#!/usr/bin/env bash
# Go benchmarks of the decode, cache, collect and handler paths, with
# allocations. COUNT runs each; pipe into benchstat to compare two revisions.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench . -benchmem -count "${COUNT:-5}" ./openwebui/ ./snapshot/ ./collector/ ./keda/
