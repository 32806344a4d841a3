#!/usr/bin/env bash
# Configures and builds pgshard into build/<type> (Release by default); prints the build
# directory.   deploy/build.sh [Release|Debug|Sanitize] [TARGET]
# TARGET (for example pgshard) builds only that target; a first configure of the tree for it
# leaves the tests out, so Catch2 need not be installed (the quickstart's build).
# Release builds use link-time optimization. With PGSHARD_PGO=1 (benchmarks, packaging) a
# Release build is also optimized by a profile: an instrumented pgshard is built into
# build/pgo/generate and run by deploy/pgo_train.sh against throwaway shards (about 3
# minutes), and the Release build uses what it recorded. The profile is kept under
# build/pgo/profile-<hash of the sources> and made again only when a source changes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TYPE=${1:-Release}
TARGET=${2:-}
DIR="$ROOT/build/$(echo "$TYPE" | tr '[:upper:]' '[:lower:]')"
# Warnings fail the Release/Debug builds; the sanitizer build only reports them (GCC's
# -Wmaybe-uninitialized is unreliable under -fsanitize).
WERROR=ON
[ "$TYPE" = Sanitize ] && WERROR=OFF

PGO=()
trained=0
if [ "$TYPE" = Release ] && [ "${PGSHARD_PGO:-0}" = 1 ]; then
  sum=$(cd "$ROOT" && find CMakeLists.txt protocol config proxy deploy/pgo_train.sh -type f \
          -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
  profile="$ROOT/build/pgo/profile-$sum"
  if [ ! -f "$profile/complete" ]; then
    echo "pgo: training an instrumented build for the profile $profile" >&2
    rm -rf "$ROOT"/build/pgo/profile-*
    gen="$ROOT/build/pgo/generate"
    cmake -S "$ROOT" -B "$gen" -DCMAKE_BUILD_TYPE=Release -DPGSHARD_TESTS=OFF \
      -DPGSHARD_WERROR=ON -DPGSHARD_PGO_GENERATE="$profile" >/dev/null
    cmake --build "$gen" -j"$(nproc)" --target pgshard >&2
    "$ROOT/deploy/pgo_train.sh" "$gen/pgshard" >&2 ||
      { echo "pgo: the training run failed (PGSHARD_PGO=0 builds without a profile)" >&2; exit 1; }
    # The request path must be in the profile, or the build would silently go without it.
    compgen -G "$profile/*session#session.cpp.gcda" >/dev/null ||
      { echo "pgo: the training wrote no profile of the session into $profile" >&2; exit 1; }
    touch "$profile/complete"
    trained=1
  fi
  PGO=(-DPGSHARD_PGO_USE="$profile")
else
  PGO=(-DPGSHARD_PGO_USE=)
fi

TESTS=(-DPGSHARD_TESTS=ON)
BUILD_TARGET=()
if [ -n "$TARGET" ]; then
  BUILD_TARGET=(--target "$TARGET")
  # A tree configured with the tests keeps them (the tests' run shares it).
  TESTS=()
  [ -f "$DIR/CMakeCache.txt" ] || TESTS=(-DPGSHARD_TESTS=OFF)
fi
# PGSHARD_CMAKE_ARGS: more -D options for the configure (./tests/run.sh's Release pass).
read -r -a EXTRA <<<"${PGSHARD_CMAKE_ARGS:-}"
cmake -S "$ROOT" -B "$DIR" -DCMAKE_BUILD_TYPE="$TYPE" -DPGSHARD_WERROR=$WERROR "${TESTS[@]}" "${PGO[@]}" \
  "${EXTRA[@]}" >/dev/null
cmake --build "$DIR" -j"$(nproc)" "${BUILD_TARGET[@]}" 2>&1 | tee "$DIR/build.log" >&2
# A build from a fresh profile compiles every source with it: a source without its profile
# means the profile was not found, and the binary would not be what was measured.
if [ "$trained" = 1 ] && grep -q 'Wmissing-profile' "$DIR/build.log"; then
  echo "pgo: sources were built without the profile $profile (see $DIR/build.log)" >&2
  exit 1
fi
echo "$DIR"
