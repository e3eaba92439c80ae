#!/usr/bin/env bash
# CI for the release path (called from .ci/run). What can run on this machine
# runs; what cannot (pushing, signing, Docker itself) is linted:
#   1. actionlint on .github/workflows (with shellcheck on their scripts)
#   2. golangci-lint (.golangci.yml) on the whole module
#   3. CHANGELOG.md has the release notes of VERSION (.ci/release-notes.sh)
#   4. the release tarballs with their SHA-256 sums (.ci/release-tarballs.sh)
#   5. the Dockerfile built with buildah for linux/amd64 and linux/arm64,
#      offline: the base images are made here (Go from this machine, Debian's
#      CA bundle), the modules come from the local module cache. Then the
#      image's entrypoint, user, port and files are checked; the amd64 image
#      runs with podman, the arm64 image's binary under qemu-user: --version,
#      /healthz, build_info on /metrics, user 65532.
#
# Heavy things are cached outside the repository, under
# ${XDG_CACHE_HOME:-$HOME/.cache}/openwebui-exporter-ci/ (container storage,
# keyed base images); Go's own caches hold the tools. RELEASE_SKIP_IMAGE=1
# skips step 5 (e.g. where containers cannot run at all).
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/openwebui-exporter-ci"
version=$(cat VERSION)
timings=()
step() { # step NAME: starts timing a step
	step_name=$1 step_start=$SECONDS
	echo "--- release: $step_name"
}
step_done() {
	timings+=("$(printf '%4ds  %s' $((SECONDS - step_start)) "$step_name")")
}

apt_install() { # apt_install PACKAGE...: installs what is missing
	local missing=()
	for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
	[ ${#missing[@]} -eq 0 ] && return
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

step "actionlint (tools.mod) with shellcheck, and shellcheck of the release scripts"
apt_install shellcheck
go tool -modfile=tools.mod actionlint -version | sed -n 1p
go tool -modfile=tools.mod actionlint
shellcheck .ci/release.sh .ci/release-notes.sh .ci/release-tarballs.sh
step_done

step "golangci-lint (tools/golangci-lint.mod)"
go tool -modfile=tools/golangci-lint.mod golangci-lint version
go tool -modfile=tools/golangci-lint.mod golangci-lint config verify
go tool -modfile=tools/golangci-lint.mod golangci-lint run ./...
step_done

step "release notes of $version in CHANGELOG.md"
.ci/release-notes.sh "$version" | sed -n '1,5p'
step_done

step "release tarballs and sums"
tarballs=$(mktemp -d)
trap 'rm -rf "$tarballs"' EXIT
.ci/release-tarballs.sh "$tarballs"
(cd "$tarballs" && sha256sum --check --quiet sha256sums.txt)
for platform in linux-amd64 linux-arm64 darwin-amd64 darwin-arm64; do
	t="$tarballs/openwebui_exporter-$version.$platform.tar.gz"
	listing=$(tar -tzf "$t")
	for f in openwebui_exporter LICENSE README.md; do
		grep -qx "openwebui_exporter-$version.$platform/$f" <<<"$listing" ||
			{ echo "$t lacks $f:"; echo "$listing"; exit 1; }
	done
done
tar -xzOf "$tarballs/openwebui_exporter-$version.linux-amd64.tar.gz" \
	"openwebui_exporter-$version.linux-amd64/openwebui_exporter" >"$tarballs/exporter"
chmod +x "$tarballs/exporter"
"$tarballs/exporter" --version 2>&1 | grep -q "version $version " ||
	{ echo "the linux-amd64 tarball's binary does not say version $version"; exit 1; }
step_done

if [ "${RELEASE_SKIP_IMAGE:-}" = 1 ]; then
	echo "--- release: image skipped (RELEASE_SKIP_IMAGE=1)"
	printf '%s\n' "--- release timings" "${timings[@]}"
	exit 0
fi

step "podman and buildah (Debian)"
apt_install podman buildah runc busybox-static ca-certificates curl qemu-user
buildah --version
# Container storage lives in the cache; overlay where the kernel allows it,
# else vfs (slower, works everywhere).
storage_driver=${RELEASE_STORAGE_DRIVER:-}
if [ -z "$storage_driver" ]; then
	storage_driver=vfs
	probe=$(mktemp -d)
	mkdir -p "$probe"/{l,u,w,m}
	if mount -t overlay overlay -o "lowerdir=$probe/l,upperdir=$probe/u,workdir=$probe/w" "$probe/m" 2>/dev/null; then
		umount "$probe/m"
		storage_driver=overlay
	fi
	rm -rf "$probe"
fi
# The run root holds only locks and mounts; podman wants its path short, and
# it must belong to this storage root alone.
storage_root="$cache/containers/$storage_driver"
run_root="/tmp/owe-ci-run-$(printf '%s' "$storage_root" | sha256sum | cut -c1-12)"
storage=(--root "$storage_root" --runroot "$run_root" --storage-driver "$storage_driver")
bah() { buildah "${storage[@]}" "$@"; }
pod() { podman "${storage[@]}" --cgroup-manager cgroupfs --events-backend none "$@"; }
echo "storage: $storage_driver under $cache/containers"
step_done

# The base images, made locally instead of pulled (no registry here). Each is
# keyed by what it is made of, so a warm run reuses it.
step "local base images"
go_version=$(go env GOVERSION)
busybox_version=$(dpkg-query -W -f '${Version}' busybox-static)
builder_tag=$(printf '%s' "$go_version-busybox-$busybox_version" | tr -c 'A-Za-z0-9_.-' '_')
builder_image="localhost/openwebui-exporter-ci/go-builder:$builder_tag"
if ! bah inspect --type image "$builder_image" >/dev/null 2>&1; then
	# The Go toolchain of this machine and a static busybox for the RUN shell.
	ctr=$(bah from scratch)
	root=$(bah mount "$ctr")
	mkdir -p "$root"/{bin,tmp,root,go,usr/local}
	chmod 1777 "$root/tmp"
	cp -a "$(go env GOROOT)" "$root/usr/local/go"
	cp /bin/busybox "$root/bin/busybox"
	for applet in $("$root/bin/busybox" --list); do
		[ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
	done
	bah umount "$ctr" >/dev/null
	bah config --env PATH=/usr/local/go/bin:/go/bin:/bin --env GOPATH=/go \
		--env HOME=/root --env GOTOOLCHAIN=local --workingdir /go "$ctr"
	bah commit --quiet --rm "$ctr" "$builder_image" >/dev/null
fi
ca_sum=$(sha256sum /etc/ssl/certs/ca-certificates.crt | cut -c1-12)
# The runtime base: what distroless/static's nonroot variant has and the
# exporter needs, i.e. CA certificates (TLS to Open WebUI), passwd and group
# entries for user 65532, /tmp; no shell, no package manager. One image per
# architecture (the files are the same), in a manifest list: buildah 1.28
# finds a non-host image for --platform only through a list.
runtime_image="localhost/openwebui-exporter-ci/runtime:ca-$ca_sum"
if ! bah manifest inspect "$runtime_image" >/dev/null 2>&1; then
	bah manifest create "$runtime_image" >/dev/null
	for arch in amd64 arm64; do
		ctr=$(bah from --arch "$arch" scratch)
		root=$(bah mount "$ctr")
		mkdir -p "$root"/{etc/ssl/certs,tmp,home/nonroot}
		chmod 1777 "$root/tmp"
		chown 65532:65532 "$root/home/nonroot"
		cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
		printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
			'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
			'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$root/etc/passwd"
		printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$root/etc/group"
		bah umount "$ctr" >/dev/null
		bah config --os linux --arch "$arch" --user 65532:65532 --workingdir /home/nonroot "$ctr"
		bah commit --quiet --rm "$ctr" "$runtime_image-$arch" >/dev/null
		bah manifest add --arch "$arch" "$runtime_image" "containers-storage:$runtime_image-$arch" >/dev/null
	done
fi
bah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep openwebui-exporter-ci/
step_done

step "build the image from the Dockerfile (linux/amd64, linux/arm64, offline)"
# The module proxy is this machine's module cache, read-only, mounted into
# the build stage: the build needs no network. Go's build cache is mounted
# too (from the CI cache), so a warm build compiles only what changed; mounts
# never end up in a layer. buildah 1.28 does not set BUILDPLATFORM itself.
go mod download
modcache=$(go env GOMODCACHE)/cache/download
mkdir -p "$cache/go-build"
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
image=ghcr.io/openwebui-exporter/openwebui_exporter
bah manifest rm "$image:ci" >/dev/null 2>&1 || true
bah manifest create "$image:ci" >/dev/null
for arch in amd64 arm64; do
	bah bud --quiet --pull=never --isolation chroot --layers \
		--platform "linux/$arch" --build-arg BUILDPLATFORM="linux/$(go env GOHOSTARCH)" \
		--volume "$modcache:/goproxy:ro" --volume "$cache/go-build:/root/.cache/go-build" \
		--build-arg GOPROXY=file:///goproxy --build-arg GOFLAGS=-mod=readonly \
		--build-arg GO_IMAGE="$builder_image" --build-arg RUNTIME_IMAGE="$runtime_image" \
		--build-arg REVISION="$revision" --build-arg BRANCH="$branch" \
		--build-arg BUILD_USER=ci@release.sh \
		--tag "$image:ci-$arch" . >/dev/null
	bah manifest add "$image:ci" "containers-storage:$image:ci-$arch" >/dev/null
done
# The multi-arch index, as docker buildx would push it.
bah manifest inspect "$image:ci" | grep -E '"(architecture|os)"' | tr -d ' \n'; echo
step_done

step "inspect the images"
for arch in amd64 arm64; do
	config=$(pod image inspect --format '{{json .Config.Entrypoint}} {{.Config.User}} {{json .Config.ExposedPorts}} {{.Os}}/{{.Architecture}}' "$image:ci-$arch")
	echo "$arch: $config"
	want='["/bin/openwebui_exporter"] 65532:65532 {"8080/tcp":{}} linux/'$arch
	[ "$config" = "$want" ] || { echo "image $image:ci-$arch: want entrypoint, user, ports and platform $want"; exit 1; }
done
# The files: the binary (for the right architecture), CA bundle and passwd,
# and nothing else (no shell).
for arch in amd64 arm64; do
	ctr=$(bah from --pull-never --arch "$arch" "$image:ci-$arch")
	root=$(bah mount "$ctr")
	files=$(cd "$root" && find . -type f | sort)
	echo "$arch files:" "$(tr '\n' ' ' <<<"$files")"
	[ "$files" = "$(printf '%s\n' ./bin/openwebui_exporter ./etc/group ./etc/passwd ./etc/ssl/certs/ca-certificates.crt)" ] ||
		{ echo "unexpected files in $image:ci-$arch"; exit 1; }
	go version -m "$root/bin/openwebui_exporter" | grep -E '^\s+build\s+(GOARCH|CGO_ENABLED|-tags)=' | tr -s '\t ' ' '
	go version -m "$root/bin/openwebui_exporter" | grep -qE "^\s+build\s+GOARCH=$arch\$" ||
		{ echo "$image:ci-$arch holds a binary for another architecture"; exit 1; }
	cp "$root/bin/openwebui_exporter" "$tarballs/from-image-$arch"
	bah umount "$ctr" >/dev/null
	bah rm "$ctr" >/dev/null
done
step_done

step "run the images: amd64 with podman, arm64's binary with qemu-user"
port=18088
check_running_exporter() { # check_running_exporter DESCRIPTION
	local healthz=""
	for _ in $(seq 1 50); do
		healthz=$(curl -fsS "http://127.0.0.1:$port/healthz" 2>/dev/null) && break
		sleep 0.2
	done
	[ "$healthz" = ok ] || { echo "$1: /healthz did not answer ok within 10s (got '$healthz')"; return 1; }
	echo "$1: /healthz: $healthz"
	local info
	info=$(curl -fsS "http://127.0.0.1:$port/metrics" | grep '^openwebui_exporter_build_info') || true
	echo "$info"
	grep -q "revision=\"$revision\",.*version=\"$version\"" <<<"$info" ||
		{ echo "$1: build_info lacks revision $revision or version $version"; return 1; }
}

# run_checked WHAT COMMAND...: starts COMMAND with the exporter's arguments as
# user 65532, checks it with check_running_exporter and stops it.
run_checked() {
	local what=$1 pid status=0
	shift
	TOKEN=sk-0123456789abcdef0123456789abcdef setpriv --reuid=65532 --regid=65532 --clear-groups \
		"$@" "${exporter_args[@]}" &
	pid=$!
	check_running_exporter "$what" || status=$?
	kill "$pid"
	wait "$pid" || true
	[ "$status" = 0 ] || exit 1
}
# runc, not Debian's default crun, which refuses hybrid cgroup hierarchies
# (as on this machine: "crun: cgroups in hybrid mode not supported"). Limits
# no higher than this process has: raising them needs CAP_SYS_RESOURCE.
nofile=$(ulimit -Hn) nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] || [ "$nofile" -gt 4096 ] && nofile=4096
[ "$nproc" = unlimited ] || [ "$nproc" -gt 4096 ] && nproc=4096
run_opts=(--runtime runc --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc"
	--pull=never --network host)
# No Open WebUI is needed: /healthz does not depend on it, and the exporter
# starts with a URL that answers nothing.
exporter_args=(--web.listen-address="127.0.0.1:$port" --openwebui.url=http://127.0.0.1:9 --log.level=warn)
if out=$(pod run --rm "${run_opts[@]}" "$image:ci-amd64" --version 2>&1); then
	echo "$out" | sed -n 1p
	grep -q "version $version (branch: $branch, revision: $revision)" <<<"$out" ||
		{ echo "--version of the image: want version $version, branch $branch, revision $revision"; exit 1; }
	cid=$(pod run -d --rm "${run_opts[@]}" -e TOKEN=sk-0123456789abcdef0123456789abcdef \
		"$image:ci-amd64" "${exporter_args[@]}")
	status=0
	check_running_exporter "container (podman run)" || status=$?
	# The exporter's process as the kernel sees it: real, effective, saved
	# and filesystem uid (and gid) all 65532.
	pid=$(pod inspect --format '{{.State.Pid}}' "$cid")
	ids=$(awk '/^[UG]id:/ { printf "%s %s %s %s %s ", $1, $2, $3, $4, $5 }' "/proc/$pid/status")
	echo "container process: $ids"
	pod stop --time 5 "$cid" >/dev/null
	[ "$status" = 0 ] || exit 1
	[ "$ids" = "Uid: 65532 65532 65532 65532 Gid: 65532 65532 65532 65532 " ] ||
		{ echo "the container's process does not run as 65532:65532"; exit 1; }
else
	# Containers cannot run here: run the image's own binary on the host.
	echo "podman run failed, so the image's binary runs on the host instead:"
	echo "$out"
	run_checked "image binary on the host" "$tarballs/from-image-amd64"
fi
# No arm64 machine here: the arm64 image's binary runs on the host under
# qemu-user emulation, as user 65532.
qemu-aarch64 "$tarballs/from-image-arm64" --version 2>&1 | sed -n 1p |
	grep "version $version (branch: $branch, revision: $revision)" ||
	{ echo "the arm64 image's binary under qemu-aarch64: want version $version, branch $branch, revision $revision"; exit 1; }
run_checked "arm64 image binary under qemu-aarch64" qemu-aarch64 "$tarballs/from-image-arm64"
step_done

printf '%s\n' "--- release timings" "${timings[@]}"
