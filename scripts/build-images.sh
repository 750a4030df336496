#!/usr/bin/env bash
# Build every image the Docker Compose demo needs, offline, from files we have:
#
#   edgefleet/broker:dev  edgefleet/lo:dev  edgefleet/en-agent:dev      (static musl binaries)
#   edgefleet-demo/busybox:1.0  edgefleet-demo/web:1.0  edgefleet-demo/web:2.0
#   edgefleet-demo/cache:1.0    edgefleet-demo/sensor:1.0                (static busybox)
#
# All of them are FROM scratch (the demo images FROM the local busybox one): nothing is
# pulled. Idempotent: cargo and the Docker build cache make a second run cheap.
#
# Needs: cargo with the x86_64-unknown-linux-musl target and musl-gcc
#        (rustup target add x86_64-unknown-linux-musl; apt-get install musl-tools),
#        a static busybox (apt-get install busybox-static, or BUSYBOX=/path/to/busybox),
#        docker.
#
# Environment:
#   CARGO_TARGET_DIR   honoured (default ./target)
#   BUSYBOX            static busybox to copy into the demo images (default: found on PATH)
#   CARGO_FEATURE_ARGS feature flags for the one cargo invocation; the default builds lo
#                      with `vendored-tls`: libgit2 with https and ssh over an OpenSSL built
#                      from source (openssl-src; needs perl and make, about 2 min the
#                      first time), so the lo image can fetch real remotes.
#   SKIP_CARGO=1       reuse the binaries already built
#   TAG                tag of the edgefleet images (default dev)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

target=x86_64-unknown-linux-musl
tag=${TAG:-dev}
target_dir=${CARGO_TARGET_DIR:-$root/target}
bin_dir=$target_dir/$target/release
ctx=$target_dir/docker
feature_args=${CARGO_FEATURE_ARGS:---features edgefleet-lo/vendored-tls}

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'build-images: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || die "docker not found"
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running, may you use its socket?)"

# --- static binaries ------------------------------------------------------------------------
if [ "${SKIP_CARGO:-}" != 1 ]; then
  command -v cargo >/dev/null || die "cargo not found"
  if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
    die "the $target target is missing: rustup target add $target"
  fi
  command -v musl-gcc >/dev/null || command -v x86_64-linux-musl-gcc >/dev/null ||
    die "musl-gcc not found (C dependencies need it): apt-get install musl-tools"
  log "cargo build --release --target $target (broker, lo, en-agent)"
  # shellcheck disable=SC2086 # feature_args is a list of words on purpose
  cargo build --release --target "$target" \
    -p edgefleet-broker -p edgefleet-lo -p edgefleet-agent $feature_args
fi
for b in broker lo en-agent; do
  [ -x "$bin_dir/$b" ] || die "$bin_dir/$b missing (build failed, or SKIP_CARGO=1 without a build)"
done

# --- static busybox for the demo workloads ----------------------------------------------------
busybox=${BUSYBOX:-}
if [ -z "$busybox" ]; then
  for c in /bin/busybox /usr/bin/busybox "$(command -v busybox 2>/dev/null || true)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then busybox=$c; break; fi
  done
fi
[ -n "$busybox" ] || die "no busybox found: apt-get install busybox-static, or set BUSYBOX=/path/to/static/busybox"
# A dynamically linked busybox would not run in a scratch image.
if command -v file >/dev/null; then
  file -L "$busybox" | grep -q 'statically linked\|static-pie' ||
    die "$busybox is not statically linked: install busybox-static or set BUSYBOX"
elif ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is dynamically linked: install busybox-static or set BUSYBOX"
fi

# --- build context: target/docker/ ------------------------------------------------------------
log "preparing the build context $ctx"
rm -rf "$ctx"
mkdir -p "$ctx/bin" "$ctx/state" "$ctx/rootfs"
cp -a "$root/docker/rootfs/." "$ctx/rootfs/"
mkdir -p "$ctx/rootfs/tmp"
chmod 1777 "$ctx/rootfs/tmp"
chmod 755 "$ctx/state"
for b in broker lo en-agent; do cp "$bin_dir/$b" "$ctx/bin/$b"; done
cp "$busybox" "$ctx/bin/busybox"
# Same mtime on every run: an unchanged binary then gives an identical COPY layer.
touch -d '2000-01-01 00:00:00 UTC' "$ctx"/bin/* "$ctx/state" "$ctx/rootfs" "$ctx/rootfs/tmp"

build() { # <dockerfile> <context> <tag> [docker build args...]
  local file=$1 context=$2 image=$3
  shift 3
  log "docker build $image"
  local out
  # Output only on failure (the legacy builder also prints a deprecation notice each time).
  if ! out=$(docker build -f "$root/docker/$file" -t "$image" --label io.edgefleet.image=true \
      "$@" "$context" 2>&1); then
    printf '%s\n' "$out" >&2
    die "docker build $image failed"
  fi
}

build broker.Dockerfile "$ctx" "edgefleet/broker:$tag"
build lo.Dockerfile "$ctx" "edgefleet/lo:$tag"
build en-agent.Dockerfile "$ctx" "edgefleet/en-agent:$tag"

build demo-busybox.Dockerfile "$ctx" edgefleet-demo/busybox:1.0
ex=$root/examples/images
build demo-web.Dockerfile "$ex/web" edgefleet-demo/web:1.0 --build-arg VERSION=1.0 --build-arg COLOR='#1f6feb'
build demo-web.Dockerfile "$ex/web" edgefleet-demo/web:2.0 --build-arg VERSION=2.0 --build-arg COLOR='#2da44e' \
  --build-arg MESSAGE='rolled out by a Git commit'
build demo-cache.Dockerfile "$ex/cache" edgefleet-demo/cache:1.0
build demo-sensor.Dockerfile "$ex/sensor" edgefleet-demo/sensor:1.0

# Older builds of these tags, now untagged: only images this script labelled are touched.
docker image prune -f --filter label=io.edgefleet.image=true >/dev/null

log "images"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}} {{.ID}}' |
  grep -E '^edgefleet(-demo)?/' | sort | while read -r name size id; do
    printf '%-28s %10s  %s\n' "$name" "$size" "$id"
  done
