#!/usr/bin/env bash
# Configures and builds pgshard into build/<type> (Release by default); prints the binary path.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TYPE=${1:-Release}
DIR="$ROOT/build/$(echo "$TYPE" | tr '[:upper:]' '[:lower:]')"
cmake -S "$ROOT" -B "$DIR" -DCMAKE_BUILD_TYPE="$TYPE" -DPGSHARD_WERROR=ON >/dev/null
cmake --build "$DIR" -j"$(nproc)" >&2
echo "$DIR"
