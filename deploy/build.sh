#!/usr/bin/env bash
# Configures and builds pgshard into build/<type> (Release by default); prints the binary path.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TYPE=${1:-Release}
DIR="$ROOT/build/$(echo "$TYPE" | tr '[:upper:]' '[:lower:]')"
# Warnings fail the Release/Debug builds; the sanitizer build only reports them (GCC's
# -Wmaybe-uninitialized is unreliable under -fsanitize).
WERROR=ON
[ "$TYPE" = Sanitize ] && WERROR=OFF
cmake -S "$ROOT" -B "$DIR" -DCMAKE_BUILD_TYPE="$TYPE" -DPGSHARD_WERROR=$WERROR >/dev/null
cmake --build "$DIR" -j"$(nproc)" >&2
echo "$DIR"
