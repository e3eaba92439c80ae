# Build, test and release targets. promu comes from tools.mod; promtool and
# prometheus from your system (Debian: apt-get install prometheus).
#
#   make demo      the fake Open WebUI and the exporter in one process (Ctrl-C stops both)
#   make build     promu build (version information) into .build/$GOOS-$GOARCH
#   make test      go vet + go test -race (the README's test command)
#   make lint      gofmt + go vet (e2e included) + golangci-lint + promtool checks of the examples
#   make e2e       the end-to-end test against a real Prometheus, on promu's build
#   make tarball   promu tarball into .tarballs
#   make docker    the image, built from source by the Dockerfile (needs Docker)

GO           ?= go
GOOS         ?= $(shell $(GO) env GOOS)
GOARCH       ?= $(shell $(GO) env GOARCH)
BUILD_PREFIX ?= .build/$(GOOS)-$(GOARCH)
PROMU        := .bin/promu
# promu names tarballs after the git remote "origin" (owner/name), which in a
# fork or a CI checkout may be anything: this URL, given through git's
# environment, wins over it.
REPO_URL     ?= https://github.com/openwebui-exporter/openwebui_exporter.git
# The one image name (examples, Compose, chart, workflows).
DOCKER_IMAGE ?= ghcr.io/openwebui-exporter/openwebui_exporter:dev

.PHONY: all demo build test lint e2e tarball docker clean

all: lint test build

# A promu binary for the host: "go tool promu" with GOOS/GOARCH set would
# build promu itself for the target.
$(PROMU): tools.mod tools.sum
	$(GO) build -modfile=tools.mod -o $@ github.com/prometheus/promu

# -v names each package as it compiles: the first build takes a minute or
# two, and shows its progress instead of silence.
demo:
	@echo "building ./cmd/demo (the first build compiles for a minute or two; package names show progress)..."
	$(GO) build -v -o .bin/demo ./cmd/demo
	@exec .bin/demo

build: $(PROMU)
	GOOS=$(GOOS) GOARCH=$(GOARCH) $(PROMU) build --prefix $(BUILD_PREFIX)

# Needs gcc (the race detector uses cgo).
test:
	$(GO) vet ./... && $(GO) test -race ./...

lint:
	@unformatted=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); \
	if [ -n "$$unformatted" ]; then echo "not gofmt-formatted:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/e2e/
	$(GO) tool -modfile=tools/golangci-lint.mod golangci-lint run ./...
	$(GO) test -tags e2e -count=1 -run TestPromtool ./test/e2e/

e2e: build
	E2E_EXPORTER_BINARY=$(BUILD_PREFIX)/openwebui_exporter $(GO) test -tags e2e -count=1 -v ./test/e2e/

tarball: build
	GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=remote.origin.url GIT_CONFIG_VALUE_0=$(REPO_URL) \
		GOOS=$(GOOS) GOARCH=$(GOARCH) $(PROMU) tarball --prefix .tarballs $(BUILD_PREFIX)
	@ls -l .tarballs

# The Dockerfile builds from source; git fills in what the build context
# (no .git) cannot tell. Several platforms at once:
#   docker buildx build --platform linux/amd64,linux/arm64 .
docker:
	docker build \
		--build-arg REVISION=$$(git rev-parse HEAD) \
		--build-arg BRANCH=$$(git rev-parse --abbrev-ref HEAD) \
		--build-arg BUILD_USER=$$(id -un)@$$(hostname) \
		-t $(DOCKER_IMAGE) .

clean:
	rm -rf .build .tarballs .bin
