#!/usr/bin/env bash
# Quickstart: installs packages, builds, starts three local PostgreSQL 15 shards and pgshard
# on 127.0.0.1:6432, and prints how to connect.   ./deploy/quickstart.sh [stop]
# Rerunning it is safe: running shards are left alone, pgshard restarts only when its
# binary or configuration changed, and the connection details are printed again.
# Ports: S0_PORT, S1_PORT, S2_PORT (5433-5435), PGSHARD_PORT (6432), ADMIN_HTTP_PORT (9930).
# State: QUICKSTART_DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${QUICKSTART_DIR:-/tmp/pgshard-quickstart}
S0_PORT=${S0_PORT:-5433}; S1_PORT=${S1_PORT:-5434}; S2_PORT=${S2_PORT:-5435}
PGSHARD_PORT=${PGSHARD_PORT:-6432}; ADMIN_HTTP_PORT=${ADMIN_HTTP_PORT:-9930}
CLUSTER="$ROOT/tests/harness/pgcluster.sh"

stop_proxy() {
  if [ -f "$STATE/pgshard.pid" ] && kill -0 "$(cat "$STATE/pgshard.pid")" 2>/dev/null; then
    kill "$(cat "$STATE/pgshard.pid")"
    for _ in $(seq 50); do kill -0 "$(cat "$STATE/pgshard.pid")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$STATE/pgshard.pid"
}

if [ "${1:-}" = stop ]; then
  stop_proxy
  [ -d "$STATE/shards" ] && "$CLUSTER" stop "$STATE/shards"
  echo "pgshard quickstart stopped (data kept in $STATE; remove it to start fresh)"
  exit 0
fi

mkdir -p "$STATE"; chmod 755 "$STATE"
LOG="$STATE/setup.log"
: >"$LOG"
T0=$(date +%s)
# One progress line per step; a step's own output goes to the log, shown when it fails.
step() {  # step N TITLE command...
  local n=$1 title=$2 t=$(date +%s); shift 2
  printf '[%s/4] %-44s' "$n" "$title..."
  if "$@" >>"$LOG" 2>&1; then
    echo " done ($(( $(date +%s) - t )) s)"
  else
    echo " FAILED"; tail -40 "$LOG"; echo "quickstart: step $n failed; full log: $LOG"; exit 1
  fi
}
build() { "$ROOT/deploy/build.sh" Release pgshard >"$STATE/build.dir"; }
step 1 "packages (compiler, libraries, PostgreSQL 15)" "$ROOT/deploy/install-deps.sh"
step 2 "building pgshard (Release, LTO)" build
BUILD=$(tail -1 "$STATE/build.dir")

start_shards() {
  "$CLUSTER" start "$STATE/shards" "$S0_PORT" "$S1_PORT" "$S2_PORT"
  for port in "$S0_PORT" "$S1_PORT" "$S2_PORT"; do
    PGPASSWORD=secret psql -X -q -h 127.0.0.1 -p "$port" -U app -d app -v ON_ERROR_STOP=1 \
      -f "$ROOT/deploy/quickstart-schema.sql"
  done
}
step 3 "shards s0, s1, s2 on $S0_PORT, $S1_PORT, $S2_PORT" start_shards

sed -e "s/127.0.0.1:5433/127.0.0.1:$S0_PORT/; s/127.0.0.1:5434/127.0.0.1:$S1_PORT/" \
    -e "s/127.0.0.1:5435/127.0.0.1:$S2_PORT/; s/port: 6432/port: $PGSHARD_PORT/" \
    -e "s/127.0.0.1:9930/127.0.0.1:$ADMIN_HTTP_PORT/" \
    "$ROOT/deploy/quickstart.yaml" >"$STATE/pgshard.yaml.new"
echo "two_phase_log: $STATE/2pc" >>"$STATE/pgshard.yaml.new"
"$BUILD/pgshard" check "$STATE/pgshard.yaml.new" >/dev/null

# pgshard restarts only when its binary or its configuration changed, or it is not running.
stamp="$(stat -c %Y "$BUILD/pgshard") $(md5sum <"$STATE/pgshard.yaml.new")"
if [ -f "$STATE/pgshard.pid" ] && kill -0 "$(cat "$STATE/pgshard.pid")" 2>/dev/null &&
   [ "$(cat "$STATE/pgshard.stamp" 2>/dev/null)" = "$stamp" ]; then
  printf '[4/4] %-44s already running (pid %s), unchanged\n' "pgshard on 127.0.0.1:$PGSHARD_PORT..." "$(cat "$STATE/pgshard.pid")"
  rm -f "$STATE/pgshard.yaml.new"
else
  stop_proxy
  mv "$STATE/pgshard.yaml.new" "$STATE/pgshard.yaml"
  # In a session of its own (as systemd and containers start it): not in the caller's
  # process group and scheduler group, so what the user runs next does not share them.
  rm -f "$STATE/pgshard.pid"
  setsid bash -c 'echo $$ >"$1/pgshard.pid"; exec "$2" --config "$1/pgshard.yaml"' \
    pgshard "$STATE" "$BUILD/pgshard" </dev/null >"$STATE/pgshard.log" 2>&1 &
  for _ in $(seq 50); do [ -s "$STATE/pgshard.pid" ] && break; sleep 0.1; done
  echo "$stamp" >"$STATE/pgshard.stamp"
  printf '[4/4] %-44s started (pid %s)\n' "pgshard on 127.0.0.1:$PGSHARD_PORT..." "$(cat "$STATE/pgshard.pid")"
fi

URL="postgres://app:secret@127.0.0.1:$PGSHARD_PORT/app"
for _ in $(seq 100); do
  psql -X -qAt "$URL" -c 'select 1' >/dev/null 2>&1 && break
  sleep 0.1
done
psql -X -qAt "$URL" -c 'select 1' >/dev/null || { cat "$STATE/pgshard.log"; exit 1; }

cat <<MSG

Ready in $(( $(date +%s) - T0 )) s.
pgshard is running on 127.0.0.1:$PGSHARD_PORT in front of shards s0, s1, s2
(127.0.0.1:$S0_PORT, $S1_PORT, $S2_PORT). Connect with:

  psql "$URL"

Tables users (by id) and orders (by user_id) exist on every shard.
Admin console: psql "postgres://admin:admin@127.0.0.1:$PGSHARD_PORT/pgshard" -c 'SHOW SHARDS'
Dashboard:     http://127.0.0.1:$ADMIN_HTTP_PORT/dashboard   (metrics: /metrics)
Map:    $ROOT/deploy/quickstart.yaml (edit it and rerun to change $STATE/pgshard.yaml)
Log:    $STATE/pgshard.log
Stop:   ./deploy/quickstart.sh stop
MSG
