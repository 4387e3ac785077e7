#!/usr/bin/env bash
# bench.sh measures the figures of issues 3 and 4 (`make bench`): cold cat vs
# crane export, warm random reads, read-all vs gunzip, peak RSS while indexing;
# refetch after eviction, concurrent readers, diff -r of two platforms, index
# pass throughput, eStargz, the cache bound (see bench/main.go).
# It installs what it needs beyond `make deps` (GNU time, debootstrap, crane),
# makes a Debian arm64 rootfs in its cache once, builds regfs and bench/, and
# runs bench/ (see bench/main.go for what is measured and how).
#
# Environment:
#   REGFS_BENCH_CACHE   cache of tools and the rootfs (default ~/.cache/regfs-bench)
#   REGFS_BENCH_ROOTFS  use this rootfs directory instead of making one
#   REGFS_BENCH_MIRROR  Debian mirror for debootstrap (default: the one apt uses)
#   REGFS_BENCH_ARGS    extra flags for bench/ (e.g. "-figures refetch,diff -keep")
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
GO=${GO:-go}
CRANE_VERSION=v0.22.1
cache=${REGFS_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/regfs-bench}
tools=$cache/tools
mkdir -p "$tools"

sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
need=()
[ -x /usr/bin/time ] || need+=(time)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v fusermount3 >/dev/null || need+=(fuse3)
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x "$tools/crane" ] || ! "$tools/crane" version 2>/dev/null | grep -q "${CRANE_VERSION#v}"; then
  echo "bench: installing crane $CRANE_VERSION into $tools" >&2
  GOBIN="$tools" "$GO" install "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
fi

# The Debian mirror apt is configured with (deb822 or one-line sources).
apt_mirror() {
  local m
  m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1)
  [ -n "$m" ] || m=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v security | head -n1)
  echo "${m:-http://deb.debian.org/debian}"
}

rootfs=${REGFS_BENCH_ROOTFS:-}
if [ -z "$rootfs" ]; then
  rootfs=$cache/rootfs-arm64
  if [ ! -f "$rootfs.done" ]; then
    mirror=${REGFS_BENCH_MIRROR:-$(apt_mirror)}
    echo "bench: debootstrap --foreign --variant=minbase --arch arm64 bookworm from $mirror (once, into $rootfs)" >&2
    $sudo rm -rf "$rootfs"
    # --foreign only downloads and unpacks: no arm64 emulation needed.
    $sudo debootstrap --foreign --variant=minbase --arch arm64 bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
      { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
    touch "$rootfs.done"
  fi
fi

"$GO" build -ldflags "-X main.version=bench" -o bin/regfs ./cmd/regfs
"$GO" build -o bin/regfs-bench ./bench
# shellcheck disable=SC2086 # REGFS_BENCH_ARGS is a list of flags
exec $sudo bin/regfs-bench -regfs bin/regfs -crane "$tools/crane" -rootfs "$rootfs" ${REGFS_BENCH_ARGS:-}
