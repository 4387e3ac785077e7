#!/usr/bin/env bash
# fuzz.sh runs every fuzz target of the module (`make fuzz`, .ci/run), one at a
# time, and stops at the first failure. Targets are found by grepping the
# module's *_test.go files for `func FuzzX(`, so a new target is run without
# touching this script.
#
# Usage: scripts/fuzz.sh [TARGET...]   (TARGET: FuzzX or pkg/path.FuzzX; none: all)
#
# Environment:
#   REGFS_FUZZTIME      -fuzztime of each target (default 50000x: 50,000 executions;
#                       a duration such as 2m fuzzes longer locally)
#   REGFS_FUZZMINIMIZE  -fuzzminimizetime (default 5s)
#   REGFS_FUZZPARALLEL  -parallel, the number of fuzzing workers (default GOMAXPROCS)
#   GO                  the go command (default go)
#
# A crash leaves its input in <pkg>/testdata/fuzz/<FuzzX>/ (the script prints
# the path): it becomes a seed that plain `go test` replays. Commit it with the
# fix. Output: each target's log, then a table of executions and seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
GO=${GO:-go}
fuzztime=${REGFS_FUZZTIME:-50000x}
minimize=${REGFS_FUZZMINIMIZE:-5s}
parallel=()
[ -z "${REGFS_FUZZPARALLEL:-}" ] || parallel=(-parallel "$REGFS_FUZZPARALLEL")

# targets lists "pkgdir FuzzName" for every fuzz target, sorted.
targets() {
  git ls-files -co --exclude-standard -- '*_test.go' 2>/dev/null ||
    find . -name '*_test.go' -not -path '*/testdata/*' -printf '%P\n'
}
list=$(targets | while read -r f; do
  case "$f" in */testdata/*|vendor/*) continue ;; esac
  sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*\*testing\.F).*/\1/p' "$f" |
    while read -r fn; do echo "$(dirname "$f") $fn"; done
done | sort -u)
if [ -z "$list" ]; then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi

# Keep only the targets named on the command line, if any.
if [ $# -gt 0 ]; then
  want=$list list=""
  for arg in "$@"; do
    m=$(awk -v a="$arg" '$2 == a || $1 "." $2 == a || "./" $1 "." $2 == a' <<<"$want")
    [ -n "$m" ] || { echo "fuzz: no target $arg; targets are:" >&2; awk '{print "  " $1 "." $2}' <<<"$want" >&2; exit 2; }
    list+="$m"$'\n'
  done
  list=$(sed '/^$/d' <<<"$list")
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
summary=()
start_all=$(date +%s.%N)
while read -r dir fn; do
  echo "=== fuzz ./$dir $fn (-fuzztime=$fuzztime)"
  t0=$(date +%s.%N)
  # The default -timeout (10m) bounds each target.
  if ! "$GO" test -run '^$' -fuzz "^${fn}\$" -fuzztime="$fuzztime" -fuzzminimizetime "$minimize" \
      ${parallel[@]+"${parallel[@]}"} "./$dir" 2>&1 | tee "$log"; then
    echo "--- FAIL: ./$dir $fn" >&2
    found=$(sed -n 's/.*Failing input written to \(testdata\/fuzz\/[^ ]*\).*/\1/p' "$log" | tail -n1)
    if [ -n "$found" ]; then
      echo "fuzz: crashing input: $dir/$found" >&2
      echo "fuzz: replay it with: $GO test -run '^${fn}\$/$(basename "$found")\$' ./$dir" >&2
    fi
    exit 1
  fi
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  execs=$(sed -n 's/.*execs: \([0-9]*\).*/\1/p' "$log" | tail -n1)
  summary+=("$(printf '%-28s %-24s %10s %8s' "./$dir" "$fn" "${execs:-?}" "$secs")")
done <<<"$list"
total=$(awk -v a="$start_all" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')

echo
printf '%-28s %-24s %10s %8s\n' package target execs seconds
printf '%s\n' "${summary[@]}"
echo "fuzz: ${#summary[@]} targets, no crash, ${total}s in all (-fuzztime=$fuzztime)"
