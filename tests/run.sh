#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test tier (unit, integration, real
# drivers, PostgreSQL's regression suite through pgshard, fuzz) with CTest,
# first on the Release build, then the integration tier again on the ASan+UBSan build.
# Each integration test binary starts its own PostgreSQL shards on free ports and stops them.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/deploy/install-deps.sh" --tests

status=0
for type in Release Sanitize; do
  [ "$type" = Sanitize ] && [ "${PGSHARD_SKIP_SANITIZE:-0}" = 1 ] && continue
  echo "==== $type build ===="
  dir=$("$ROOT/deploy/build.sh" "$type")
  echo "==== $type tests ===="
  (cd "$dir" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure --timeout 900) || status=1
done
exit $status
