#!/usr/bin/env bash
# Quickstart: installs packages, builds, starts three local PostgreSQL 15 shards and pgshard
# on 127.0.0.1:6432, and prints how to connect.   ./deploy/quickstart.sh [stop]
# Ports: S0_PORT, S1_PORT, S2_PORT (5433-5435), PGSHARD_PORT (6432). State: QUICKSTART_DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${QUICKSTART_DIR:-/tmp/pgshard-quickstart}
S0_PORT=${S0_PORT:-5433}; S1_PORT=${S1_PORT:-5434}; S2_PORT=${S2_PORT:-5435}
PGSHARD_PORT=${PGSHARD_PORT:-6432}
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
BUILD=$("$ROOT/deploy/build.sh" Release)
mkdir -p "$STATE"; chmod 755 "$STATE"

"$CLUSTER" start "$STATE/shards" "$S0_PORT" "$S1_PORT" "$S2_PORT"
for port in "$S0_PORT" "$S1_PORT" "$S2_PORT"; do
  PGPASSWORD=secret psql -X -q -h 127.0.0.1 -p "$port" -U app -d app -v ON_ERROR_STOP=1 \
    -f "$ROOT/deploy/quickstart-schema.sql"
done

sed -e "s/127.0.0.1:5433/127.0.0.1:$S0_PORT/; s/127.0.0.1:5434/127.0.0.1:$S1_PORT/" \
    -e "s/127.0.0.1:5435/127.0.0.1:$S2_PORT/; s/port: 6432/port: $PGSHARD_PORT/" \
    "$ROOT/deploy/quickstart.yaml" >"$STATE/pgshard.yaml"
echo "two_phase_log: $STATE/2pc" >>"$STATE/pgshard.yaml"
"$BUILD/pgshard" check "$STATE/pgshard.yaml" >/dev/null

stop_proxy
nohup "$BUILD/pgshard" --config "$STATE/pgshard.yaml" >"$STATE/pgshard.log" 2>&1 &
echo $! >"$STATE/pgshard.pid"

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
Config: $STATE/pgshard.yaml   Log: $STATE/pgshard.log
Stop:   ./deploy/quickstart.sh stop
MSG
