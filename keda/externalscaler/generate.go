// Package externalscaler is the Go code of KEDA's external scaler gRPC
// service, generated from externalscaler.proto.
//
// To regenerate it after editing the .proto:
//
//	apt-get install -y protobuf-compiler   # protoc
//	go generate ./keda/externalscaler
//
// The protoc plugins are the versions pinned in the repository's tools.mod;
// .ci/run checks that the checked-in code matches.
package externalscaler

//go:generate sh generate.sh
