#!/usr/bin/env bash
# The quickstart on free ports: first run, a rerun with everything up (a no-op that prints
# the connection string again: same pgshard process, data kept), stop, and a run that
# starts the stopped cluster again. A keyed write and read through pgshard each time.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$ROOT/tests/harness/free_port.sh"
export QUICKSTART_DIR=$(mktemp -d /tmp/pgshard-qs-XXXXXX)
export S0_PORT=$(free_port) S1_PORT=$(free_port) S2_PORT=$(free_port) PGSHARD_PORT=$(free_port) ADMIN_HTTP_PORT=$(free_port)
QS="$ROOT/deploy/quickstart.sh"
cleanup() {
  local rc=$?
  [ $rc -ne 0 ] && { echo "---- pgshard log ----"; tail -30 "$QUICKSTART_DIR/pgshard.log" 2>/dev/null || true; }
  "$QS" stop >/dev/null 2>&1 || true
  rm -rf "$QUICKSTART_DIR"
  exit $rc
}
trap cleanup EXIT
URL="postgres://app:secret@127.0.0.1:$PGSHARD_PORT/app"
fail() { echo "FAIL: $*"; exit 1; }

out=$("$QS" 2>&1) || { echo "$out"; fail "first run"; }
echo "$out" | grep -q "psql \"$URL\"" || { echo "$out"; fail "no connection string"; }
[ "$(echo "$out" | wc -l)" -lt 25 ] || { echo "$out"; fail "first run printed $(echo "$out" | wc -l) lines"; }
psql -X -qAt "$URL" -c "insert into users (id, name) values (42, 'q')" >/dev/null
pid=$(cat "$QUICKSTART_DIR/pgshard.pid")

out=$("$QS" 2>&1) || { echo "$out"; fail "rerun with the cluster up"; }
echo "$out" | grep -q "already running" || { echo "$out"; fail "rerun restarted pgshard"; }
echo "$out" | grep -q "psql \"$URL\"" || fail "rerun: no connection string"
[ "$(cat "$QUICKSTART_DIR/pgshard.pid")" = "$pid" ] || fail "pgshard pid changed"
[ "$(psql -X -qAt "$URL" -c 'select name from users where id = 42')" = q ] || fail "row lost"
curl -sf "http://127.0.0.1:$ADMIN_HTTP_PORT/health" >/dev/null || fail "admin http"
PGPASSWORD=admin psql -X -qAt -h 127.0.0.1 -p "$PGSHARD_PORT" -U admin pgshard -c 'SHOW SHARDS' |
  grep -q '^s0|' || fail "admin console"

"$QS" stop >/dev/null
out=$("$QS" 2>&1) || { echo "$out"; fail "run after stop"; }
echo "$out" | grep -q "started (pid" || { echo "$out"; fail "pgshard not started after stop"; }
[ "$(psql -X -qAt "$URL" -c 'select name from users where id = 42')" = q ] || fail "row lost after stop"
echo "quickstart: first run, rerun (no-op), stop and start again: passed"
