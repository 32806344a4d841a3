#!/usr/bin/env bash
# Static checks of the deployment files: Kubernetes manifests against the client's object
# models, the pgshard maps they carry, docker/compose.yaml and docker/Dockerfile
# (check_manifests.py), and the systemd unit with systemd-analyze verify (any complaint
# fails).   check_deploy.sh PGSHARD_BINARY
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/build/release/pgshard}
/usr/bin/python3 "$ROOT/tests/deploy/check_manifests.py" "$BIN" "$ROOT"
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
# The unit names the installed binary; verify it against the one just built.
sed "s|/usr/local/bin/pgshard|$BIN|g" "$ROOT/deploy/pgshard.service" >"$dir/pgshard.service"
out=$(systemd-analyze verify "$dir/pgshard.service" 2>&1) || { echo "$out"; exit 1; }
[ -z "$out" ] || { echo "systemd-analyze verify complained:"; echo "$out"; exit 1; }
echo "deploy/pgshard.service: systemd-analyze verify clean"
