# The exporter's image, built from source:
#
#   docker build -t ghcr.io/openwebui-exporter/openwebui_exporter:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 .
#
# The build stage runs on the build machine's own platform and cross-compiles
# for the target (pure Go, CGO off), so a multi-platform build needs no
# emulation: the runtime stage only copies files. The binary carries the same
# version information as promu's release tarballs (see .promu.yml); pass
# REVISION, BRANCH, BUILD_USER and BUILD_DATE to fill in what a source tree
# without .git cannot tell (make docker does).
#
# Base images. The FROM lines name them literally, so that Dependabot can
# update them (it does not follow ARGs in FROM: dependabot-core issue 2057).
# GO_IMAGE and RUNTIME_IMAGE choose the stage to build from: by default these
# two, or any other image, e.g. a local one in an offline build (.ci/release.sh):
#   --build-arg GO_IMAGE=localhost/go-builder --build-arg RUNTIME_IMAGE=localhost/runtime
# Unused stages are never pulled.
ARG GO_IMAGE=golang
ARG RUNTIME_IMAGE=distroless

FROM --platform=$BUILDPLATFORM docker.io/library/golang:1.26.8-bookworm AS golang
FROM gcr.io/distroless/static-debian12:nonroot AS distroless

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
WORKDIR /src
# GOPROXY, GOFLAGS: e.g. a file:// module proxy for a build without network.
ARG GOPROXY=""
ARG GOFLAGS=""
ENV CGO_ENABLED=0 GOTOOLCHAIN=local
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
# Empty VERSION: read the VERSION file. Empty BUILD_DATE: now, or
# SOURCE_DATE_EPOCH when given (reproducible builds).
ARG VERSION=""
ARG REVISION=unknown
ARG BRANCH=unknown
ARG BUILD_USER=docker
ARG BUILD_DATE=""
ARG SOURCE_DATE_EPOCH=""
RUN set -eu; \
	version="${VERSION:-$(cat VERSION)}"; \
	if [ -z "$BUILD_DATE" ] && [ -n "${SOURCE_DATE_EPOCH:-}" ]; then \
		BUILD_DATE="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d-%H:%M:%S)"; \
	fi; \
	build_date="${BUILD_DATE:-$(date -u +%Y%m%d-%H:%M:%S)}"; \
	pkg=github.com/prometheus/common/version; \
	GOOS="$TARGETOS" GOARCH="$TARGETARCH" go build -trimpath -tags netgo \
		-ldflags "-s -w -X $pkg.Version=$version -X $pkg.Revision=$REVISION -X $pkg.Branch=$BRANCH -X $pkg.BuildUser=$BUILD_USER -X $pkg.BuildDate=$build_date" \
		-o /out/openwebui_exporter .

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="openwebui_exporter" \
	org.opencontainers.image.description="Active Open WebUI users for Prometheus and KEDA" \
	org.opencontainers.image.source="https://github.com/openwebui-exporter/openwebui_exporter" \
	org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/openwebui_exporter /bin/openwebui_exporter
# distroless' "nonroot" (65532), numeric so that runAsNonRoot can verify it,
# and set here so that any runtime base runs the exporter unprivileged.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/bin/openwebui_exporter"]
