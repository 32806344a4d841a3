#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a bounded time
# from its committed seed corpus (tests/fuzz/corpus/<target>). Exits non-zero on the first
# crash, leak or sanitizer report; the reproducer is left in the build directory.
#   tests/fuzz/run.sh [RUNS_PER_TARGET]   (default: PGSHARD_FUZZ_RUNS or 200000; the merger
#   and router targets, ~100x slower per input, get a twentieth of it)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# A fixed seed and a fixed number of runs from the committed corpus: the same inputs on every
# machine, so a red run is reproducible and a green one does not depend on speed.
RUNS=${1:-${PGSHARD_FUZZ_RUNS:-200000}}
BUILD="$ROOT/build/fuzz"
# One build at a time (./tests/run.sh builds the targets ahead, in the background).
mkdir -p "$BUILD"
(
  flock 9
  CC=clang CXX=clang++ cmake -S "$HERE" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" >/dev/null
) 9>"$BUILD/.build-lock"
[ "${PGSHARD_FUZZ_BUILD_ONLY:-0}" = 1 ] && exit 0
status=0
for target in codec startup scram router copy_split merger config; do
  corpus="$HERE/corpus/$target"
  work="$BUILD/corpus-$target"
  rm -rf "$work"
  mkdir -p "$work"
  runs=$RUNS
  case $target in router|merger|config) runs=$((RUNS / 20)) ;; esac
  echo "== fuzz_$target: $runs runs"
  if ! (cd "$BUILD" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "./fuzz_$target" -seed=1 -runs="$runs" -max_len=4096 -rss_limit_mb=2048 -timeout=30 \
        -print_final_stats=1 "$work" "$corpus" 2>"$BUILD/fuzz_$target.log"); then
    echo "fuzz_$target FAILED:"
    tail -60 "$BUILD/fuzz_$target.log"
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$BUILD/fuzz_$target.log" || true
  fi
done
exit $status
