#!/usr/bin/env bash
# The Open WebUI filter of examples/openwebui/ (wake_gate_status.py): its
# unittest tests against a stub gate on 127.0.0.1. Debian's python3 and
# python3-pydantic (the filter's Valves); /usr/bin/python3 so that Debian's
# pydantic is the one found.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "--- Open WebUI filter: python3 -m unittest (examples/openwebui/)"
if ! /usr/bin/python3 -c 'import pydantic' 2>/dev/null; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-pydantic >/dev/null
fi
/usr/bin/python3 -c 'import sys, pydantic; print("python", sys.version.split()[0], "pydantic", pydantic.VERSION)'
PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -m unittest discover -s examples/openwebui -p 'test_*.py' 2>&1
