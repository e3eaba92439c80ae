#!/bin/sh
# Regenerates the Go code of externalscaler.proto into DIR (default: here).
# Needs protoc (Debian: apt-get install -y protobuf-compiler); the Go plugins
# are the versions pinned in the repository's tools.mod.
set -eu
cd "$(dirname "$0")"
out=${1:-.}
protoc \
	--plugin=protoc-gen-go="$(go tool -modfile=../../tools.mod -n protoc-gen-go)" \
	--plugin=protoc-gen-go-grpc="$(go tool -modfile=../../tools.mod -n protoc-gen-go-grpc)" \
	--go_out="$out" --go_opt=paths=source_relative \
	--go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
	externalscaler.proto
