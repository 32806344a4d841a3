#!/usr/bin/env bash
# What pgshard's own logins to its shards cost: (a) an idle pgshard's CPU (ms per second)
# over IDLE seconds with SHARDS shards (the two-phase commit recovery thread, the pools'
# idle handling), (b) the CPU pgshard spends while its pool for one shard opens BURST server
# connections at once (BURST clients each holding a server connection in pg_sleep), on a
# fresh pgshard, ROUNDS times. CPU is utime+stime from /proc/PID/stat.
#   SHARDS (default 3)  IDLE (s, default 60)  BURST (default 32)  ROUNDS (default 3)
source "$(dirname "$0")/common.sh" logins
SHARDS=${SHARDS:-3}; IDLE=${IDLE:-60}; BURST=${BURST:-32}; ROUNDS=${ROUNDS:-3}
PORTS=(); for _ in $(seq "$SHARDS"); do PORTS+=("$(free_port)"); done
PROXY=$(free_port)
export PGPASSWORD=secret
"$ROOT/tests/harness/pgcluster.sh" start "$DIR/pg" "${PORTS[@]}" >/dev/null
{
  echo "listen: { host: 127.0.0.1, port: $PROXY, workers: 2, max_client_conn: 500 }"
  echo "users: [{ name: app, password: secret, pool_mode: transaction }]"
  echo "shards:"
  for i in $(seq 0 $((SHARDS - 1))); do
    echo "  - { name: s$i, primary: \"postgres://app:secret@127.0.0.1:${PORTS[$i]}/app\", pool_size: $BURST }"
  done
  echo "unsharded: { shard: s0 }"
  echo "log_level: warn"
  echo "two_phase_log: $DIR/2pc"
} >"$DIR/pgshard.yaml"
cpu_ms() {  # utime+stime of pgshard in ms
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000 / hz}' "/proc/$(cat "$DIR/pgshard.pid")/stat"
}
stop_pgshard() {
  kill "$(cat "$DIR/pgshard.pid")"; wait "$(cat "$DIR/pgshard.pid")" 2>/dev/null || true
  rm -f "$DIR/pgshard.pid"
}
start_pgshard "$DIR/pgshard.yaml" "$PROXY"
sleep 2
a=$(cpu_ms); sleep "$IDLE"; b=$(cpu_ms)
awk -v a="$a" -v b="$b" -v t="$IDLE" -v n="$SHARDS" \
  'BEGIN {printf "idle, %d shards: %.0f ms CPU in %d s = %.2f ms/s\n", n, b - a, t, (b - a) / t}'
stop_pgshard
for r in $(seq "$ROUNDS"); do
  start_pgshard "$DIR/pgshard.yaml" "$PROXY"
  sleep 1
  a=$(cpu_ms)
  for _ in $(seq "$BURST"); do
    psql -X -qAt -h 127.0.0.1 -p "$PROXY" -U app app -c 'select pg_sleep(3)' >/dev/null &
  done
  wait $(jobs -p | grep -v "$(cat "$DIR/pgshard.pid")") 2>/dev/null || true
  b=$(cpu_ms)
  servers=$(psql -X -qAt -h 127.0.0.1 -p "${PORTS[0]}" -U app app \
    -c "select count(*) from pg_stat_activity where usename = 'app' and pid <> pg_backend_pid()")
  awk -v a="$a" -v b="$b" -v n="$BURST" -v s="$servers" -v r="$r" \
    'BEGIN {printf "burst %d: %d clients, %d server connections on s0: %.0f ms CPU\n", r, n, s, b - a}'
  stop_pgshard
done
