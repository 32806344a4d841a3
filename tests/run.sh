#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test tier with CTest:
# - the Release build: integration, real drivers, PostgreSQL's regression suite through
#   pgshard, containers, deploy, libFuzzer targets;
# - the ASan+UBSan build: unit, and integration (which holds the session fuzzer) run against
#   its pgshard, the tiers where the sanitizers find something; the client suites,
#   pg_regress and the deploy tiers exercise the same code paths as the integration tier,
#   at several times its cost under the sanitizers. The unit tests run there only (linking them against the Release build's
#   link-time optimized code compiles pgshard again).
# While the Release tests run (mostly waiting on PostgreSQL and on the network), the
# sanitizer build and the libFuzzer targets are compiled beside them at the lowest CPU
# priority, so the tests keep the CPU when they want it.
# Each integration test binary starts its own PostgreSQL shards on free ports and stops them.
# PGSHARD_SKIP_SANITIZE=1 runs the Release pass only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/deploy/install-deps.sh" --tests

run_ctest() {  # build-directory [ctest arguments]
  local dir=$1
  shift
  # A test that fails is run once more and reported as failed only if it fails again, so
  # one rare failure does not hide the rest of a run; CTest's output still shows it.
  (cd "$dir" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure --timeout 900 --repeat until-pass:2 "$@")
}

status=0
# The container tier's base images come from a debootstrap of Debian (minutes of download
# and unpacking, little CPU): made now, beside the builds; the tier waits for it.
if [ "${PGSHARD_SKIP_CONTAINER:-0}" != 1 ]; then
  mkdir -p "$ROOT/build"
  nice -n 10 "$ROOT/tests/deploy/container_test.sh" --base-only >"$ROOT/build/container-base.log" 2>&1 &
fi
background=
if [ "${PGSHARD_SKIP_SANITIZE:-0}" != 1 ]; then
  mkdir -p "$ROOT/build"
  log="$ROOT/build/background-builds.log"
  echo "==== Sanitize build and libFuzzer targets, in the background (log: $log) ===="
  # The sanitizer build makes pgshard and the unit tests; the integration tier runs the
  # Release build's test driver against its pgshard (PGSHARD_TEST_BINARY): sanitizing the
  # driver finds nothing in pgshard and took a third of the build. It starts now, beside the
  # Release build, and is what the run waits for last; the libFuzzer targets follow (their
  # tier comes last in the Release pass, and waits for them).
  (
    PGSHARD_CMAKE_ARGS=-DPGSHARD_TESTS=ON nice -n 19 "$ROOT/deploy/build.sh" Sanitize pgshard
    nice -n 19 "$ROOT/deploy/build.sh" Sanitize unit_tests
    PGSHARD_FUZZ_BUILD_ONLY=1 nice -n 19 "$ROOT/tests/fuzz/run.sh" >&2 || true  # the tier reports
  ) >"$log" 2>&1 &
  background=$!
fi

echo "==== Release build ===="
release=$(PGSHARD_CMAKE_ARGS="-DPGSHARD_UNIT_TESTS=OFF" "$ROOT/deploy/build.sh" Release)

echo "==== Release tests ===="
run_ctest "$release" || status=1

if [ -n "$background" ]; then
  echo "==== Sanitize build ===="
  if ! wait "$background"; then
    tail -60 "$log"
    echo "the sanitizer build failed"
    exit 1
  fi
  sanitize="$ROOT/build/sanitize"
  echo "==== Sanitize tests: unit ===="
  run_ctest "$sanitize" -R '^unit:' || status=1
  echo "==== Sanitize tests: integration, against the sanitizer build's pgshard ===="
  PGSHARD_TEST_BINARY="$sanitize/pgshard" run_ctest "$release" -R '^integration:' || status=1
fi
exit $status
