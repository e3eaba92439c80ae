#!/bin/sh
# Prints the release notes of one version: its section of CHANGELOG.md,
# without the heading. The release workflow publishes them on the tag's
# GitHub release; .ci/release.sh checks that VERSION has a section.
#
#   .ci/release-notes.sh 0.1.0
set -eu
cd "$(dirname "$0")/.."
version=${1:?usage: .ci/release-notes.sh VERSION (without the leading v)}
notes=$(awk -v heading="## [$version]" '
	/^## \[/ { if (found) exit; if (index($0, heading) == 1) { found = 1; next } }
	/^\[[^]]*\]: / { if (found) exit }   # link definitions at the end
	found { print }
' CHANGELOG.md)
if [ -z "$(printf '%s' "$notes" | tr -d '[:space:]')" ]; then
	echo "CHANGELOG.md has no section \"## [$version] - YYYY-MM-DD\" with content: add one before tagging v$version" >&2
	exit 1
fi
# Without the blank lines around the section.
printf '%s\n' "$notes" | sed -e '/./,$!d' | sed -e ':a' -e '/^\n*$/{$d;N;ba' -e '}'
