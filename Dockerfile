# Built from promu's output, like the Prometheus exporters:
#   go tool -modfile=tools.mod promu build --prefix .build/linux-amd64
#   docker build -t openwebui_exporter .
ARG ARCH="amd64"
ARG OS="linux"
FROM quay.io/prometheus/busybox-${OS}-${ARCH}:latest
LABEL maintainer="openwebui_exporter developers"
LABEL org.opencontainers.image.source="https://github.com/openwebui-exporter/openwebui_exporter"

ARG ARCH="amd64"
ARG OS="linux"
COPY .build/${OS}-${ARCH}/openwebui_exporter /bin/openwebui_exporter

EXPOSE      8080
USER        nobody
ENTRYPOINT  [ "/bin/openwebui_exporter" ]
