// Package binary holds the tests of the built exporter binary: what only the
// whole process shows (flags and environment, --web.config.file, signals,
// log lines, the KEDA gRPC server, everything it prints). Its tests build
// the binary once per run (exporterBinary) and drive it over HTTP and gRPC
// on loopback; tests of package main's internals stay at the module root.
//
//	go test ./test/binary/
//
// `go test -short` skips them.
package binary
