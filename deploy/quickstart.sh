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

"$ROOT/deploy/install-deps.sh"
mkdir -p "$STATE"; chmod 755 "$STATE"
echo "building pgshard (log: $STATE/build.log)..."
BUILD=$("$ROOT/deploy/build.sh" Release 2>"$STATE/build.log") ||
  { tail -30 "$STATE/build.log"; echo "build failed: see $STATE/build.log"; exit 1; }

echo "starting shards on $S0_PORT, $S1_PORT, $S2_PORT..."
"$CLUSTER" start "$STATE/shards" "$S0_PORT" "$S1_PORT" "$S2_PORT"
for port in "$S0_PORT" "$S1_PORT" "$S2_PORT"; do
  PGPASSWORD=secret psql -X -q -h 127.0.0.1 -p "$port" -U app -d app -v ON_ERROR_STOP=1 \
    -f "$ROOT/deploy/quickstart-schema.sql"
done

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
  echo "pgshard already running (pid $(cat "$STATE/pgshard.pid")), unchanged"
  rm -f "$STATE/pgshard.yaml.new"
else
  stop_proxy
  mv "$STATE/pgshard.yaml.new" "$STATE/pgshard.yaml"
  nohup "$BUILD/pgshard" --config "$STATE/pgshard.yaml" >"$STATE/pgshard.log" 2>&1 &
  echo $! >"$STATE/pgshard.pid"
  echo "$stamp" >"$STATE/pgshard.stamp"
  echo "started pgshard (pid $(cat "$STATE/pgshard.pid"))"
fi

URL="postgres://app:secret@127.0.0.1:$PGSHARD_PORT/app"
for _ in $(seq 100); do
  psql -X -qAt "$URL" -c 'select 1' >/dev/null 2>&1 && break
  sleep 0.1
done
psql -X -qAt "$URL" -c 'select 1' >/dev/null || { cat "$STATE/pgshard.log"; exit 1; }

cat <<MSG
pgshard is running on 127.0.0.1:$PGSHARD_PORT in front of shards s0, s1, s2
(127.0.0.1:$S0_PORT, $S1_PORT, $S2_PORT). Connect with:

  psql "$URL"

Tables users (by id) and orders (by user_id) exist on every shard.
Admin console: psql "postgres://admin:admin@127.0.0.1:$PGSHARD_PORT/pgshard" -c 'SHOW SHARDS'
Dashboard:     http://127.0.0.1:$ADMIN_HTTP_PORT/dashboard   (metrics: /metrics)
Config: $STATE/pgshard.yaml   Log: $STATE/pgshard.log
Stop:   ./deploy/quickstart.sh stop
MSG
