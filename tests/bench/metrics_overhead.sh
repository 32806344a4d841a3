#!/usr/bin/env bash
# What counting costs: pgbench -S (keyed reads routed by the parser) through two pgshard
# processes over one shard, one with admin.stats on and /metrics scraped every second, one
# with stats off and no HTTP endpoint; runs alternate (ROUNDS of each) so drift hits both.
# Prints TPS and the proxy's CPU per transaction for each, and the ratios on/off.
#   DURATION (s, 10)  ROUNDS (3)  CLIENTS (32)  MODE (extended)  SCALE (10)
source "$(dirname "$0")/common.sh" metrics
DURATION=${DURATION:-10}; ROUNDS=${ROUNDS:-3}; CLIENTS=${CLIENTS:-32}; MODE=${MODE:-extended}
SCALE=${SCALE:-10}
SHARD=$(free_port); ON=$(free_port); OFF=$(free_port); HTTP=$(free_port)
export PGPASSWORD=secret
"$ROOT/tests/harness/pgcluster.sh" start "$DIR/pg" "$SHARD" >/dev/null
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$SHARD" -U app app >/dev/null 2>&1
config() {  # port stats extra
  cat <<YAML
listen: { host: 127.0.0.1, port: $1, workers: 2, max_client_conn: 500 }
users: [{ name: app, password: secret, pool_mode: transaction }]
shards: [{ name: s0, primary: "postgres://app:secret@127.0.0.1:$SHARD/app", pool_size: 32 }]
sharded_tables: [{ table: pgbench_accounts, column: aid, type: integer, function: hash }]
unsharded: { shard: s0 }
log_level: warn
two_phase_log: $DIR/2pc-$1
admin: { stats: $2 $3 }
YAML
}
config "$ON" true ", http: \"127.0.0.1:$HTTP\"" >"$DIR/on.yaml"
config "$OFF" false "" >"$DIR/off.yaml"
start_pgshard "$DIR/on.yaml" "$ON"; ON_PID=$(cat "$DIR/pgshard.pid")
start_pgshard "$DIR/off.yaml" "$OFF"; OFF_PID=$(cat "$DIR/pgshard.pid")
echo "$ON_PID $OFF_PID" >"$DIR/pids"
trap 'kill $(cat "$DIR/pids") 2>/dev/null; bench_cleanup' EXIT
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() {  # port pid -> "tps cpu_us_per_tx"
  local before after out tx
  before=$(cpu_ticks "$2")
  out=$(pgbench -n -S -T "$DURATION" -c "$CLIENTS" -j 2 -M "$MODE" -h 127.0.0.1 -p "$1" -U app app 2>&1)
  after=$(cpu_ticks "$2")
  tx=$(echo "$out" | awk '/number of transactions actually processed/ {print $6}')
  echo "$(echo "$out" | awk '/^tps/ {print $3}') $(awk -v a="$after" -v b="$before" -v t="$tx" -v hz="$HZ" 'BEGIN {print (a - b) / hz * 1e6 / t}')"
}
scrape() { while :; do curl -s "http://127.0.0.1:$HTTP/metrics" >/dev/null; sleep 1; done; }
printf '%-6s %-4s %10s %12s\n' round run tps cpu_us_tx
on_tps=0; on_cpu=0; off_tps=0; off_cpu=0
one() {  # on|off round
  local t c
  if [ "$1" = on ]; then
    scrape & SCRAPER=$!
    read -r t c < <(run "$ON" "$ON_PID"); kill "$SCRAPER"; wait "$SCRAPER" 2>/dev/null || true
    on_tps=$(awk -v a="$on_tps" -v b="$t" 'BEGIN {print a + b}'); on_cpu=$(awk -v a="$on_cpu" -v b="$c" 'BEGIN {print a + b}')
  else
    read -r t c < <(run "$OFF" "$OFF_PID")
    off_tps=$(awk -v a="$off_tps" -v b="$t" 'BEGIN {print a + b}'); off_cpu=$(awk -v a="$off_cpu" -v b="$c" 'BEGIN {print a + b}')
  fi
  printf '%-6s %-4s %10.0f %12.1f\n' "$2" "$1" "$t" "$c"
}
# The order alternates between rounds: neither setting always runs on a warmer machine.
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then one on "$r"; one off "$r"; else one off "$r"; one on "$r"; fi
done
awk -v a="$on_tps" -v b="$off_tps" -v c="$on_cpu" -v d="$off_cpu" -v n="$ROUNDS" 'BEGIN {
  printf "mean: on %.0f tps %.1f us/tx, off %.0f tps %.1f us/tx; tps on/off %.3f, cpu on/off %.3f\n",
    a / n, c / n, b / n, d / n, a / b, c / d }'
curl -s "http://127.0.0.1:$HTTP/metrics" | grep -E '^pgshard_queries_total|^pgshard_query_duration_seconds_count'
