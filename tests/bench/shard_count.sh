#!/usr/bin/env bash
# Single-shard throughput against the size of the shard map: pgbench -S (keyed reads routed by
# the parser, pgbench_accounts sharded by aid) through pgshard with maps of 1, 2, 4 and 8
# shards (every shard holds all of pgbench's rows, so each read finds its row wherever the
# hash sends it), and the TPS of each map relative to the 2-shard map.
# ONE_SERVER=1 points every shard of the map at the same PostgreSQL: the database's work is
# then the same for every map, and the ratio shows what the size of the map costs pgshard
# (pools, server connections), not what more PostgreSQL servers cost this machine.
# Each map gets WARMUP seconds of the same load first (its pools open their connections).
#   DURATION (s, default 8)  CLIENTS (default 32)  MODE (default extended)  COUNTS ("1 2 4 8")
#   WARMUP (s, default 3)
#   ONE_SERVER (default 0)
source "$(dirname "$0")/common.sh" shards
DURATION=${DURATION:-8}; CLIENTS=${CLIENTS:-32}; MODE=${MODE:-extended}; WARMUP=${WARMUP:-3}
COUNTS=${COUNTS:-"1 2 4 8"}; WORKERS=${WORKERS:-2}; ONE_SERVER=${ONE_SERVER:-0}
MAX=0; for n in $COUNTS; do [ "$n" -gt "$MAX" ] && MAX=$n; done
SERVERS=$MAX; [ "$ONE_SERVER" = 1 ] && SERVERS=1
PORTS=(); for _ in $(seq "$SERVERS"); do PORTS+=("$(free_port)"); done
PROXY=$(free_port)
export PGPASSWORD=secret
"$ROOT/tests/harness/pgcluster.sh" start "$DIR/pg" "${PORTS[@]}" >/dev/null
for p in "${PORTS[@]}"; do pgbench -i -q -s 1 -h 127.0.0.1 -p "$p" -U app app >/dev/null 2>&1; done
declare -A TPS
for n in $COUNTS; do
  {
    echo "listen: { host: 127.0.0.1, port: $PROXY, workers: $WORKERS, max_client_conn: 500 }"
    echo "users: [{ name: app, password: secret, pool_mode: transaction }]"
    echo "shards:"
    for i in $(seq 0 $((n - 1))); do
      port=${PORTS[$((i % SERVERS))]}
      echo "  - { name: s$i, primary: \"postgres://app:secret@127.0.0.1:$port/app\", pool_size: 32 }"
    done
    echo "sharded_tables: [{ table: pgbench_accounts, column: aid, type: integer, function: hash }]"
    echo "unsharded: { shard: s0 }"
    echo "log_level: warn"
    echo "two_phase_log: $DIR/2pc-$n"
  } >"$DIR/pgshard-$n.yaml"
  start_pgshard "$DIR/pgshard-$n.yaml" "$PROXY"
  # Warm-up first: the pools open their server connections (SCRAM and a backend each, many
  # more for a larger map) before the measured run, which then shows the steady state.
  pgbench -n -S -T "$WARMUP" -c "$CLIENTS" -j 2 -M "$MODE" -h 127.0.0.1 -p "$PROXY" -U app app \
    >/dev/null 2>&1 || true
  out=$(pgbench -n -S -T "$DURATION" -c "$CLIENTS" -j 2 -M "$MODE" -h 127.0.0.1 -p "$PROXY" -U app app 2>&1) \
    || { echo "pgbench failed with $n shards: $out"; cat "$DIR/pgshard-$n.log"; exit 1; }
  TPS[$n]=$(echo "$out" | awk '/^tps/ {print $3}')
  kill "$(cat "$DIR/pgshard.pid")"; wait "$(cat "$DIR/pgshard.pid")" 2>/dev/null || true
  rm -f "$DIR/pgshard.pid"
done
printf '%-8s %10s %12s\n' shards tps "vs 2 shards"
for n in $COUNTS; do
  awk -v n="$n" -v t="${TPS[$n]}" -v b="${TPS[2]:-${TPS[$n]}}" 'BEGIN {printf "%-8s %10.0f %12.2f\n", n, t, t / b}'
done
