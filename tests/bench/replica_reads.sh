#!/usr/bin/env bash
# Reads on replicas, in one run: read-only keyed pgbench (-S, extended protocol: every read
# routed by the parser to its shard) through pgshard over three shards with two streaming
# replicas each, with `read_from: replicas` against the same map with `read_from: primary`:
# TPS, the proxy's CPU per transaction, and how the reads spread (SHOW HOSTS: reads per
# host). Then the cost of read-your-writes: a transaction of a keyed UPDATE and the read of
# the same row right after it, its latency p50/p99 with read_consistency session (the read
# waits for a check of the primary and a replica that has replayed the write, at most
# read_your_writes.wait, then reads the primary), eventual (it may read the old value) and
# read_from primary.
#   DURATION (s, 10)  CLIENTS (16)  SCALE (3)  WORKERS (2)  WAIT (read_your_writes.wait, 20ms)
# Run pgshard's build as PGSHARD_BUILD=/path/to/build (its pgshard is measured).
source "$(dirname "$0")/common.sh" replicareads
DURATION=${DURATION:-10}; CLIENTS=${CLIENTS:-16}; SCALE=${SCALE:-3}; WORKERS=${WORKERS:-2}
WAIT=${WAIT:-20ms}
export PGPASSWORD=secret
HZ=$(getconf CLK_TCK)
PRIMARIES=(); for _ in 1 2 3; do PRIMARIES+=("$(free_port)"); done
PROXY=$(free_port)
"$ROOT/tests/harness/pgcluster.sh" start "$DIR/pg" "${PRIMARIES[@]}" >/dev/null
for p in "${PRIMARIES[@]}"; do pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$p" -U app app >/dev/null 2>&1; done
declare -A REPLICAS
for i in 0 1 2; do
  for _ in 1 2; do
    r=$(free_port)
    "$ROOT/tests/harness/pgcluster.sh" replica "$DIR/pg" "${PRIMARIES[$i]}" "$r" >/dev/null
    REPLICAS[$i]="${REPLICAS[$i]:-} $r"
  done
done

write_map() {  # file read_from consistency
  {
    echo "listen: { host: 127.0.0.1, port: $PROXY, workers: $WORKERS, max_client_conn: 500 }"
    echo "users: [{ name: app, password: secret, pool_mode: transaction, auth: trust },"
    echo "        { name: admin, password: adminpw }]"
    echo "admin: { users: [admin] }"
    echo "shards:"
    for i in 0 1 2; do
      local urls="" r
      for r in ${REPLICAS[$i]}; do urls="$urls${urls:+, }\"postgres://app:secret@127.0.0.1:$r/app\""; done
      echo "  - { name: s$i, primary: \"postgres://app:secret@127.0.0.1:${PRIMARIES[$i]}/app\", pool_size: 16, replicas: [$urls] }"
    done
    echo "sharded_tables: [{ table: pgbench_accounts, column: aid, type: integer, function: hash },"
    echo "                 { table: pgbench_branches, column: bid, type: integer, function: hash }]"
    echo "reference_tables: [pgbench_tellers]"
    echo "unsharded: { shard: s0 }"
    echo "read_from: $2"
    echo "read_consistency: $3"
    echo "read_your_writes: { wait: $WAIT }"
    echo "health: { interval: 1s, timeout: 1s }"
    echo "log_level: warn"
    echo "node_id: 1"
    echo "two_phase_log: $DIR/2pc-$2-$3"
  } >"$1"
}

hosts() {  # "host:port reads" per host, on one line
  PGPASSWORD=adminpw psql -X -qAt -h 127.0.0.1 -p "$PROXY" -U admin pgshard -c 'SHOW HOSTS' 2>/dev/null |
    awk -F'|' '{printf "%s:%s=%s%s ", $1, $3, $13, ($14 + $15 > 0 ? "(fallback " $14 ", waited " $15 ")" : "")}'
}

run() {  # name read_from consistency pgbench-args...
  local name=$1 from=$2 consistency=$3; shift 3
  write_map "$DIR/$name.yaml" "$from" "$consistency"
  start_pgshard "$DIR/$name.yaml" "$PROXY"
  local pid; pid=$(cat "$DIR/pgshard.pid")
  # Until every replica is up (checked every second).
  for _ in $(seq 50); do
    [ "$(PGPASSWORD=adminpw psql -X -qAt -h 127.0.0.1 -p "$PROXY" -U admin pgshard -c 'SHOW REPLICAS' 2>/dev/null |
         awk -F'|' '$6 == "up"' | wc -l)" = 6 ] && break
    sleep 0.2
  done
  pgbench -n -c "$CLIENTS" -j 2 -M extended -h 127.0.0.1 -p "$PROXY" -U app -T 2 "$@" app >/dev/null 2>&1 || true
  local before after out
  before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(cd "$DIR" && pgbench -n -c "$CLIENTS" -j 2 -M extended -h 127.0.0.1 -p "$PROXY" -U app -T "$DURATION" -l --log-prefix="$name" "$@" app 2>&1)
  after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  local tx tps lat
  tx=$(echo "$out" | awk '/number of transactions actually processed/ {print $6}')
  tps=$(echo "$out" | awk '/^tps/ {printf "%.0f", $3}')
  # Transaction latency (µs) percentiles from pgbench's per-transaction log.
  lat=$(cat "$DIR/$name".* | awk '{print $3}' | sort -n | awk '{v[NR] = $1} END {
    printf "p50 %.2f ms  p99 %.2f ms", v[int(NR * 0.50)] / 1000, v[int(NR * 0.99)] / 1000 }')
  printf "%-22s tps %7s  cpu/tx %6.1f us  %s\n" "$name" "$tps" \
    "$(awk -v a="$after" -v b="$before" -v t="$tx" -v hz="$HZ" 'BEGIN {print (a - b) / hz * 1e6 / t}')" "$lat"
  printf "%-22s reads per host: %s\n" "" "$(hosts)"
  kill "$pid"; wait "$pid" 2>/dev/null || true; rm -f "$DIR/pgshard.pid" "$DIR/$name".*
}

cat >"$DIR/write_read.sql" <<'SQL'
\set aid random(1, 100000 * :scale)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
SQL

echo "read-only keyed reads (pgbench -S), $CLIENTS clients, ${DURATION}s each, 3 shards x 2 replicas"
run "reads-primary" primary session -S
run "reads-replicas" replicas session -S
echo "write, then read the same row ($CLIENTS clients): transaction latency"
run "ryw-primary" primary session -f "$DIR/write_read.sql"
run "ryw-session" replicas session -f "$DIR/write_read.sql"
run "ryw-eventual" replicas eventual -f "$DIR/write_read.sql"
