#!/usr/bin/env bash
# readme-examples.sh runs, against real regfs mounts of the built-in sample
# registry (`regfs mount --demo`), every example command README.md shows, and
# checks what each prints, so that the README stays true. Docker Hub examples
# run in the same shapes against the demo images (internal/fixture/demo.go):
#
#   demo/hello:1.0              OCI index: amd64, arm64/v8, arm/v7 + attestations
#   library/alpine-demo:3.20    Docker manifest list, same platforms
#   demo/tool:1.0               single-platform linux/amd64 image
#   arm64v8/hello:1.0           a per-architecture repository, which this
#                               script pushes (the arm64 manifest of
#                               demo/hello:1.0) into the demo registry
#
# Output shows the mount as /mnt/reg. Exit status: 0 when every check passed,
# 1 when one failed, 2 when a tool is missing. Needs root (or a user allowed
# to mount FUSE), fuse3, file, diff, curl and jq.
#
# Environment:
#   REGFS_SYFT=PATH      syft binary to scan a rootfs with (default: syft on
#                        the PATH, else ~/.cache/regfs-tools/syft; REGFS_SYFT=
#                        none skips the scan)
#   REGFS_TEST_USER=NAME run the non-root example as NAME (root only; .ci/run
#                        sets it)
#   REGFS_EXAMPLES_KEEP=1 keep the work directory (logs) after the run
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
start=$SECONDS

for tool in file diff curl jq; do
  command -v "$tool" >/dev/null || { echo "readme-examples: $tool is missing (scripts/install-deps.sh installs it)" >&2; exit 2; }
done

make -s build
bin=$PWD/bin/regfs

work=$(mktemp -d "${TMPDIR:-/tmp}/regfs-readme.XXXXXX")
mounts=() # mount points to clear on exit
pids=()   # daemons started here

# mounted DIR: whether DIR is a mount point (mountpoint(1) cannot tell for
# another user's FUSE mount, which root may not stat).
mounted() { awk -v d="$1" '$2 == d { found = 1 } END { exit !found }' /proc/self/mounts; }

cleanup() {
  local m p
  for m in "${mounts[@]}"; do
    if mounted "$m"; then
      "$bin" unmount "$m" >/dev/null 2>&1 || umount -l "$m" 2>/dev/null || true
    fi
  done
  for p in "${pids[@]}"; do
    # make demo's regfs is make's child: end it, then make.
    pkill -TERM -P "$p" 2>/dev/null || true
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for m in "${mounts[@]}"; do
    if mounted "$m"; then
      echo "readme-examples: $m is still mounted; not removing $work" >&2
      return
    fi
  done
  [ -z "${ureg:-}" ] || rmdir "$ureg" 2>/dev/null || true
  if [ "${REGFS_EXAMPLES_KEEP:-}" = 1 ]; then
    echo "work directory kept: $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

passed=0
failed=0
failures=()

# show prints a command as README.md writes it: the mount as /mnt/reg, the
# others as /mnt/reg-rebase and /mnt/reg-mirror, the demo registry's host as
# <demo-host>.
show() {
  local s="$*"
  [ -z "${M2:-}" ] || s=${s//$M2/\/mnt\/reg-rebase}
  [ -z "${M3:-}" ] || s=${s//$M3/\/mnt\/reg-mirror}
  s=${s//$M/\/mnt\/reg}
  [ -z "${host:-}" ] || s=${s//$host/<demo-host>}
  s=${s//$bin/bin\/regfs}
  s=${s//$work/\$WORK}
  printf '%s' "$s"
}

# showcmd COMMAND...: a command as a shell would take it, shown as above.
showcmd() {
  local a s=""
  if [ "$1" = bash ] && [ "$2" = -c ]; then
    s=$3
  else
    for a in "$@"; do
      if [ -z "$a" ] || [[ $a =~ [][[:space:]\'\"*?\$\;\|\&\<\>\(\)] ]]; then
        a="'${a//\'/\'\\\'\'}'"
      fi
      s+="$a "
    done
    s=${s% }
  fi
  show "$s"
}

# check DESC RC PATTERN... -- COMMAND...: runs COMMAND (stdout and stderr
# together), and passes when its exit status is RC (or any when RC is '*')
# and its output matches every PATTERN: 'text' contains the fixed string,
# '~re' matches the extended regexp, '!text' does not contain it, '=text'
# is the whole output ('=' alone: no output).
check() {
  local desc=$1 want=$2 pat out rc=0 bad=()
  shift 2
  local pats=()
  while [ "$1" != -- ]; do pats+=("$1"); shift; done
  shift
  out=$("$@" 2>&1) || rc=$?
  if [ "$want" != '*' ] && [ "$rc" != "$want" ]; then
    bad+=("exit status $rc, want $want")
  fi
  for pat in "${pats[@]}"; do
    case $pat in
      '~'*) grep -Eq -- "${pat#\~}" <<<"$out" || bad+=("no match for /${pat#\~}/") ;;
      '='*) [ "$out" = "${pat#=}" ] || bad+=("output is not '$(show "${pat#=}")'") ;;
      '!'*) ! grep -Fq -- "${pat#!}" <<<"$out" || bad+=("unexpected '$(show "${pat#!}")'") ;;
      *) grep -Fq -- "$pat" <<<"$out" || bad+=("missing '$(show "$pat")'") ;;
    esac
  done
  if [ ${#bad[@]} -eq 0 ]; then
    passed=$((passed + 1))
    printf 'ok    %-44s $ %s\n' "$desc" "$(showcmd "$@")"
  else
    failed=$((failed + 1))
    failures+=("$desc")
    printf 'FAIL  %-44s $ %s\n' "$desc" "$(showcmd "$@")"
    printf '        %s\n' "${bad[@]}"
    printf '%s\n' "$(show "$out")" | sed 's/^/        | /' | head -n 20
  fi
}

# same DESC A B: passes when the strings A and B are equal and not empty.
same() {
  if [ -n "$2" ] && [ "$2" = "$3" ]; then
    passed=$((passed + 1))
    printf 'ok    %-44s   %s\n' "$1" "$(show "$2")"
  else
    failed=$((failed + 1))
    failures+=("$1")
    printf 'FAIL  %-44s   %s != %s\n' "$1" "$(show "$2")" "$(show "$3")"
  fi
}

# exited DESC WANT PID: waits for the daemon PID and checks its exit status.
exited() {
  local rc=0
  wait "$3" || rc=$?
  same "$1" "exit status $rc" "exit status $2"
}

# waitmount DIR LOG PID: waits for the daemon PID to mount DIR (up to 60 s;
# make demo may build first on a loaded machine).
waitmount() {
  local i
  for i in $(seq 600); do
    if grep -q 'msg=mounted' "$2" 2>/dev/null && mounted "$1"; then return 0; fi
    kill -0 "$3" 2>/dev/null || break
    sleep 0.1
  done
  echo "readme-examples: no mount at $1:" >&2
  cat "$2" >&2
  exit 1
}

# demohost LOG: the demo registry's host:port, from the daemon's log.
demohost() { sed -n 's/.*msg="demo registry ready" host=\([0-9.:]*\).*/\1/p' "$1" | head -n1; }

# field FILE FILTER: a jq filter's raw result on a JSON file.
field() { jq -r "$2" "$1"; }

section() { printf '\n== %s (%d s)\n' "$1" $((SECONDS - start)); }

# --- Quick start: `make demo` mounts the sample registry --------------------
section "Quick start (make demo)"
M=$work/mnt
mkdir -p "$M" "$work/xdg"
# make demo's cache is the default one, which follows XDG_CACHE_HOME (as Go's
# build cache would: keep that where it is).
GOCACHE=$(go env GOCACHE) XDG_CACHE_HOME=$work/xdg make -s demo MNT="$M" >"$work/demo.log" 2>&1 &
pids+=($!)
demo_pid=$!
mounts+=("$M")
waitmount "$M" "$work/demo.log" "$demo_pid"
host=$(demohost "$work/demo.log")

# The per-architecture repository (Docker Hub's arm64v8/busybox shape) is
# pushed before the mount's first lookup: the catalog is kept for --tag-ttl.
accept='application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json'
curl -fsS -H "Accept: $accept" "http://$host/v2/demo/hello/manifests/1.0" >"$work/hello-index.json"
arm_digest=$(field "$work/hello-index.json" '.manifests[] | select(.platform.architecture=="arm64") | .digest')
curl -fsS -H "Accept: $accept" "http://$host/v2/demo/hello/manifests/$arm_digest" >"$work/arm64.json"
curl -fsS -X PUT -H "Content-Type: application/vnd.oci.image.manifest.v1+json" \
  --data-binary @"$work/arm64.json" "http://$host/v2/arm64v8/hello/manifests/1.0" >/dev/null

hello=$M/demo/hello/1.0
check "the mount's type is fuse.regfs" 0 "$M fuse.regfs" -- grep -F " $M " /proc/self/mounts
check "the default cache follows XDG_CACHE_HOME" 0 "cache=$work/xdg/regfs" -- cat "$work/demo.log"
check "a tag: its digest, document, OS" 0 "~^digest index.json linux$" -- bash -c "ls $hello/ | xargs"
check "an index's platforms (attestations hidden)" 0 "~^amd64 arm arm64$" -- bash -c "ls $hello/linux/ | xargs"
check "a platform's variant" 0 "~^v8$" -- ls "$hello/linux/arm64/"
check "a platform's files" 0 "~^config.json digest manifest.json rootfs$" -- bash -c "ls $hello/linux/arm64/v8/ | xargs"
check "a platform's digest" 0 "~^sha256:[0-9a-f]{64}$" "$arm_digest" -- cat "$hello/linux/arm64/v8/digest"
check "an arm64 rootfs's os-release" 0 'PRETTY_NAME="Demo Linux v3.20 (aarch64)"' -- cat "$hello/linux/arm64/v8/rootfs/etc/os-release"

# --- Browse platforms and digests ---------------------------------------------
section "Platforms and digests"
index_digest=$(cat "$hello/digest")
check "the tag's digest is its index's" 0 "$index_digest" -- bash -c "sha256sum $hello/index.json | sed 's/^/sha256:/'"
check "index.json lists the attestations" 0 '"unknown"' '"vnd.docker.reference.type": "attestation-manifest"' -- jq . "$hello/index.json"
for p in amd64 arm/v7; do
  want=$(jq -r --arg a "${p%%/*}" '.manifests[] | select(.platform.architecture==$a) | .digest' "$hello/index.json")
  check "linux/$p/digest is the index entry's" 0 "$want" -- cat "$hello/linux/$p/digest"
done
check "config.json names the architecture" 0 '"architecture":"arm64"' '"variant":"v8"' -- cat "$hello/linux/arm64/v8/config.json"
check "manifest.json lists the layers" 0 "~^3$" -- jq '.layers | length' "$hello/linux/arm64/v8/manifest.json"
check "a Docker manifest list" 0 "~^digest index.json linux$" -- bash -c "ls $M/library/alpine-demo/3.20/ | xargs"
check "a Docker list's platforms" 0 "~^amd64 arm arm64$" -- bash -c "ls $M/library/alpine-demo/3.20/linux/ | xargs"
check "a Docker list's media type" 0 "application/vnd.docker.distribution.manifest.list.v2+json" -- cat "$M/library/alpine-demo/latest/index.json"
check "a Docker list's arm64 digest" 0 "~^sha256:[0-9a-f]{64}$" -- cat "$M/library/alpine-demo/latest/linux/arm64/v8/digest"
check "a single-platform image" 0 "~^digest linux manifest.json$" -- bash -c "ls $M/demo/tool/1.0/ | xargs"
same "its one platform is the tag" "$(cat "$M/demo/tool/1.0/linux/amd64/digest")" "$(cat "$M/demo/tool/1.0/digest")"
check "a repository's tags" 0 "~^1.0 latest$" -- bash -c "ls $M/demo/hello/ | xargs"
check "any registry, by host" 0 "~^digest index.json linux$" -- bash -c "ls $M/$host/demo/hello/1.0/ | xargs"
same "the same tag, by host" "$(cat "$M/$host/demo/hello/1.0/digest")" "$index_digest"
for spelling in aarch64:arm64/v8 x86_64:amd64 armhf:arm/v7; do
  same "containerd's linux/${spelling%%:*} is linux/${spelling#*:}" \
    "$(cat "$hello/linux/${spelling%%:*}/digest")" "$(cat "$hello/linux/${spelling#*:}/digest")"
done
check "digest directories are not listed" 0 "!sha256:" -- ls "$M/demo/hello/"

# --- The three ways the multi-arch docs pull an image ----------------------------
section "Pull by tag, by digest, from a per-architecture repository"
# docker pull demo/hello:1.0 (on arm64)
by_tag=$hello/linux/arm64/v8
# docker pull demo/hello:1.0@sha256:<index>; docker pull demo/hello@sha256:<index>
by_ref=$M/demo/hello/1.0@$index_digest/linux/arm64/v8
by_digest=$M/demo/hello/$index_digest/linux/arm64/v8
# docker pull demo/hello@sha256:<arm64 manifest>: a manifest directory
by_manifest=$M/demo/hello/$arm_digest
# docker pull arm64v8/hello:1.0
per_arch=$M/arm64v8/hello/1.0
check "by tag@sha256:<index>" 0 "$arm_digest" -- cat "$by_ref/digest"
check "by sha256:<index>" 0 "$arm_digest" -- cat "$by_digest/digest"
check "a wrong tag before @ is ignored" 0 "$arm_digest" -- cat "$M/demo/hello/nosuchtag@$index_digest/linux/arm64/v8/digest"
check "by sha256:<platform manifest>" 0 "~^digest linux manifest.json$" -- bash -c "ls $by_manifest/ | xargs"
check "its platform is the config's" 0 "$arm_digest" -- cat "$by_manifest/linux/arm64/v8/digest"
check "a per-architecture repository" 0 "~^digest linux manifest.json$" -- bash -c "ls $per_arch/ | xargs"
check "its tag is the arm64 manifest" 0 "$arm_digest" -- cat "$per_arch/digest"
check "its platform is arm64/v8" 0 "$arm_digest" -- cat "$per_arch/linux/arm64/v8/digest"
for p in "$by_ref" "$by_digest" "$by_manifest/linux/arm64/v8" "$per_arch/linux/arm64/v8"; do
  check "the same rootfs: $(show "${p#"$M"/}" | cut -c1-28)" 0 = -- diff -r "$by_tag/rootfs" "$p/rootfs"
done

# --- What costs what -----------------------------------------------------------------
# Before anything reads the arm/v7 rootfs: its first access is measured.
section "What the first access costs (.regfs/stats)"
stats=$M/.regfs/stats
check "the stats file: counters as JSON" 0 '"registry"' '"requests"' '"body_bytes"' '"cache"' '"bytes_served"' -- cat "$stats"
check "the root does not list .regfs" 0 "!.regfs" -- ls -a "$M"
requests() { jq '.registry.requests | add' "$stats"; }
r0=$(requests) b0=$(jq .registry.body_bytes "$stats")
ls "$hello/linux/arm/v7/rootfs/" >/dev/null
r1=$(requests) b1=$(jq .registry.body_bytes "$stats")
echo "info  first ls of arm/v7's rootfs/: $((r1 - r0)) registry requests, $((b1 - b0)) bytes"
check "the first ls of a rootfs asks the registry" 0 "=yes" -- bash -c "[ $r1 -gt $r0 ] && [ $b1 -gt $b0 ] && echo yes"
cat "$hello/linux/arm/v7/rootfs/etc/os-release" >/dev/null
r2=$(requests)
ls "$hello/" "$hello/linux/arm/v7/" "$hello/linux/arm/v7/rootfs/" >/dev/null
cat "$hello/digest" "$hello/linux/arm/v7/rootfs/etc/os-release" >/dev/null
check "then, within --tag-ttl: no request" 0 "=$r2" -- requests
check "bytes served to readers" 0 "~^[1-9][0-9]*$" -- jq .bytes_served "$stats"
check "READ requests counted" 0 "~^[1-9][0-9]*$" -- jq .read_requests "$stats"

# --- An arm64 rootfs, read on this host ---------------------------------------------
section "Inspect an arm64 rootfs on $(uname -m) (file, cat)"
arm=$by_tag/rootfs
check "file: an aarch64 binary" 0 "ELF 64-bit LSB executable, ARM aarch64" -- file "$arm/bin/busybox"
check "file: another" 0 "ARM aarch64" -- file "$arm/usr/local/bin/hello"
check "file: the amd64 one" 0 "x86-64" -- file "$hello/linux/amd64/rootfs/bin/busybox"
check "file: the arm/v7 one" 0 "ELF 32-bit LSB executable, ARM" -- file "$hello/linux/arm/v7/rootfs/bin/busybox"
check "file: an absolute symlink, as stored" 0 "symbolic link to /bin/busybox" -- file "$arm/bin/sh"
check "cat: the upper layer's version" 0 "greeting=hello, world" -- cat "$arm/etc/hello.conf"
check "a whiteout hides a lower file" 1 "No such file" -- cat "$arm/etc/motd"
check "an opaque directory hides lower files" 0 "~^APKINDEX.tar.gz$" -- ls "$arm/var/cache/apk/"
same "a hardlink shares its inode" "$(stat -c %i "$arm/usr/local/bin/hi")" "$(stat -c %i "$arm/usr/local/bin/hello")"
check "a setuid binary keeps its mode" 0 "~^-rwsr-xr-x" -- ls -l "$arm/usr/bin/passwd"
check "the shadow file keeps its owner" 0 "~^-rw-r----- 1 0 42 " -- ls -ln "$arm/etc/shadow"

# --- diff -r between two platforms ---------------------------------------------------
section "diff -r between platforms"
amd=$hello/linux/amd64/rootfs
# Without --rebase-symlinks, GNU diff follows /bin/sh -> /bin/busybox to the
# HOST's /bin/busybox on both sides: the same host file (no difference shown)
# or, where the host has none, "No such file or directory" and exit status 2.
if [ -e /bin/busybox ]; then want=1 hostnote="!bin/sh"; else want=2 hostnote="rootfs/bin/sh: No such file or directory"; fi
check "diff -r amd64 arm64/v8" "$want" \
  "Binary files $amd/bin/busybox and $arm/bin/busybox differ" \
  'PRETTY_NAME="Demo Linux v3.20 (x86_64)"' 'PRETTY_NAME="Demo Linux v3.20 (aarch64)"' \
  "Binary files $amd/usr/local/bin/hello and $arm/usr/local/bin/hello differ" \
  "!Binary files $amd/bin/sh" "$hostnote" -- diff -r "$amd" "$arm"
check "diff -r --no-dereference: same targets" 1 "!bin/sh" "bin/busybox differ" -- diff -r --no-dereference "$amd" "$arm"
check "diff -r between index and list" 0 = -- diff -r --no-dereference "$arm" "$M/library/alpine-demo/3.20/linux/arm64/v8/rootfs"

# --- --rebase-symlinks ---------------------------------------------------------------
section "Absolute symlinks with --rebase-symlinks"
M2=$work/mnt-rebase
mkdir -p "$M2"
"$bin" mount --demo --rebase-symlinks --cache-dir "$work/cache-rebase" "$M2" >"$work/rebase.log" 2>&1 &
pids+=($!)
rebase_pid=$!
mounts+=("$M2")
waitmount "$M2" "$work/rebase.log" "$rebase_pid"
arm2=$M2/demo/hello/1.0/linux/arm64/v8/rootfs
amd2=$M2/demo/hello/1.0/linux/amd64/rootfs
check "readlink: under its own rootfs" 0 "~^$arm2/bin/busybox$" -- readlink "$arm2/bin/sh"
check "file -L: the image's aarch64 busybox" 0 "ARM aarch64" -- file -L "$arm2/bin/sh"
check "cat: the image's file, not the host's" 0 "busybox demo for aarch64" -- bash -c "cat $arm2/bin/sh | tr -c '[:print:]\n' ' '"
check "no absolute target outside the mount" 0 = -- find "$arm2" -type l -lname '/*' ! -lname "$M2/*"
check "diff -r amd64 arm64/v8: links compared" 1 \
  "Binary files $amd2/bin/sh and $arm2/bin/sh differ" \
  "Binary files $amd2/bin/busybox and $arm2/bin/busybox differ" \
  "!No such file" -- diff -r "$amd2" "$arm2"

# --- Mirrors -------------------------------------------------------------------------
section "Mirrors (a mirror that fails: the registry is the fallback)"
M3=$work/mnt-mirror
mkdir -p "$M3"
# 127.0.0.1:9 (discard) refuses connections; ghcr-cache.example is never asked.
"$bin" mount --demo --mirror 127.0.0.1:9 --mirror ghcr.io=ghcr-cache.example \
  --cache-dir "$work/cache-mirror" "$M3" >"$work/mirror.log" 2>&1 &
pids+=($!)
mirror_pid=$!
mounts+=("$M3")
waitmount "$M3" "$work/mirror.log" "$mirror_pid"
check "reads fall back to the registry" 0 'PRETTY_NAME="Demo Linux v3.20 (aarch64)"' -- cat "$M3/demo/hello/1.0/linux/arm64/v8/rootfs/etc/os-release"
check "the stats count the fallbacks" 0 "~^[1-9][0-9]*$" -- jq .registry.mirror_fallbacks "$M3/.regfs/stats"

# A daemon killed leaves a stale mount; regfs unmount clears it.
{ kill -KILL "$mirror_pid" && wait "$mirror_pid"; } 2>/dev/null || true
check "a stale mount after SIGKILL" 2 "Transport endpoint is not connected" -- ls "$M3"
check "regfs unmount clears it" 0 = -- "$bin" unmount "$M3"
check "and it is gone" 1 = -- grep -F " $M3 " /proc/self/mounts

# --- Scanners ------------------------------------------------------------------------
section "A scanner on a rootfs path (syft dir:)"
syft=${REGFS_SYFT:-}
if [ -z "$syft" ]; then
  syft=$(command -v syft || true)
  [ -n "$syft" ] || { [ ! -x "$HOME/.cache/regfs-tools/syft" ] || syft=$HOME/.cache/regfs-tools/syft; }
fi
if [ -z "$syft" ] || [ "$syft" = none ]; then
  echo "skip  syft: not installed (REGFS_SYFT=PATH, or syft on the PATH)"
else
  # syft resolves absolute links inside the scanned root itself: no
  # --rebase-symlinks needed. It needs no network for dir: scans.
  check "syft dir: an arm64 rootfs (apk packages)" 0 \
    'pkg:apk/demo/busybox@1.36.1-r29?arch=aarch64&distro=demo-3.20.0 /bin/busybox' \
    'pkg:apk/demo/hello@1.0-r0?arch=aarch64&distro=demo-3.20.0 /usr/local/bin/hello' \
    -- bash -c "set -o pipefail; SYFT_CHECK_FOR_APP_UPDATE=false '$syft' -q dir:$arm -o syft-json | jq -r '.artifacts[] | [.purl, (.metadata.files[].path | select(test(\"/bin/busybox|/bin/hello\")))] | join(\" \")'"
fi

# --- Without root ----------------------------------------------------------------------
section "Without root (fusermount3)"
if [ "$(id -u)" -ne 0 ] || [ -z "${REGFS_TEST_USER:-}" ]; then
  echo "skip  non-root mount: run as root with REGFS_TEST_USER=<unprivileged user>"
else
  u=$REGFS_TEST_USER
  uhome=$(getent passwd "$u" | cut -d: -f6)
  ureg=$(runuser -u "$u" -- mktemp -d "$uhome/reg.XXXXXX")
  runuser -u "$u" -- env HOME="$uhome" XDG_CACHE_HOME= "$bin" mount --demo "$ureg" >"$work/user.log" 2>&1 &
  pids+=($!)
  user_pid=$!
  mounts+=("$ureg")
  waitmount "$ureg" "$work/user.log" "$user_pid"
  check "a user's mount, through fusermount3" 0 "user_id=$(id -u "$u")" -- grep -F " $ureg " /proc/self/mounts
  check "its cache is the user's" 0 "cache=$uhome/.cache/regfs" -- cat "$work/user.log"
  check "the user's ls of a tag" 0 "~^digest index.json linux$" -- runuser -u "$u" -- bash -c "ls $ureg/demo/hello/1.0/ | xargs"
  same "the user's digest is root's" "$(runuser -u "$u" -- cat "$ureg/demo/hello/1.0/digest")" "$index_digest"
  check "the user unmounts" 0 = -- runuser -u "$u" -- "$bin" unmount "$ureg"
  exited "the user's daemon exits 0" 0 "$user_pid"
fi

# --- --help and exit codes ---------------------------------------------------------
section "--help and exit codes"
check "regfs --help: examples, exit codes" 0 "Examples:" "regfs mount --demo /mnt/reg" "Exit codes:" \
  "transport endpoint is not connected" -- "$bin" --help
check "regfs without a command exits 2" 2 "Usage:" -- "$bin"
check "regfs mount --help: every flag" 0 --registry --insecure --mirror --ca-file --manifest-rate \
  --manifest-burst --cache-dir --cache-size --tag-ttl --timeout --allow-other --rebase-symlinks \
  --log-level --demo -- "$bin" mount --help
check "every flag of mount has an example" '*' = -- bash -c "'$bin' mount --help | grep -E '^ {1,8}--' | grep -v 'e\.g\. '"
check "a usage error exits 2" 2 "mount takes exactly one MOUNTPOINT" -- "$bin" mount
check "an unknown command exits 2" 2 "unknown command" -- "$bin" mountt
check "a bad flag value exits 2" 2 "--cache-size" -- "$bin" mount --cache-size lots "$work"
check "a missing mount point exits 1" 1 "mkdir -p $work/none" -- "$bin" mount --demo "$work/none"

# --- Unmount -------------------------------------------------------------------------
section "Unmount"
check "regfs unmount (rebase mount)" 0 = -- "$bin" unmount "$M2"
exited "its daemon exits 0" 0 "$rebase_pid"
check "regfs unmount (make demo)" 0 = -- "$bin" unmount "$M"
exited "make demo exits 0" 0 "$demo_pid"
check "the figures are logged at the end" 0 "msg=unmounted" "requests=" "bytes_fetched=" "bytes_served=" -- cat "$work/demo.log"
check "nothing is left mounted" 1 = -- grep -F "$work" /proc/self/mounts

section "Summary"
echo "README examples: $passed checks passed, $failed failed, in $((SECONDS - start)) s"
if [ "$failed" -gt 0 ]; then
  printf '  failed: %s\n' "${failures[@]}"
  exit 1
fi
