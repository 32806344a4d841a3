#!/usr/bin/env bash
# Memory of idle clients: opens CLIENTS (default 10000) idle connections through pgshard
# (transaction pooling: they hold no server), and prints pgshard's RSS before, with them
# connected, and after they have left, with the cost per idle client.
#   CLIENTS (default 10000)  WORKERS (pgshard, default 2)  QUERY (a statement each client
#   runs once before it idles, as pooled applications' connections have; default none)
source "$(dirname "$0")/common.sh" idle
CLIENTS=${CLIENTS:-10000}; WORKERS=${WORKERS:-2}
QUERY=${QUERY:-}  # a statement each client runs once before it idles (default: none)
SHARD=$(free_port); PROXY=$(free_port)
ulimit -n "$(ulimit -Hn)"  # each process needs one descriptor per client
"$ROOT/tests/harness/pgcluster.sh" start "$DIR/pg" "$SHARD" >/dev/null
cat >"$DIR/pgshard.yaml" <<YAML
listen: { host: 127.0.0.1, port: $PROXY, workers: $WORKERS, max_client_conn: $((CLIENTS + 100)), max_startups: 1000 }
users: [{ name: app, password: secret, auth: trust, pool_mode: transaction }]
shards: [{ name: s0, primary: "postgres://app:secret@127.0.0.1:$SHARD/app", pool_size: 4 }]
unsharded: { shard: s0 }
log_level: warn
two_phase_log: $DIR/2pc
YAML
start_pgshard "$DIR/pgshard.yaml" "$PROXY"
PID=$(cat "$DIR/pgshard.pid")
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
before=$(rss_kb)
coproc IDLE { python3 "$ROOT/tests/bench/idle_clients.py" 127.0.0.1 "$PROXY" "$CLIENTS" app app "$QUERY"; }
read -r line <&"${IDLE[0]}"
[ "${line%% *}" = ready ] || { echo "idle clients failed: $line"; cat "$DIR/pgshard.log"; exit 1; }
sleep 1
with=$(rss_kb)
echo >&"${IDLE[1]}"
read -r _ <&"${IDLE[0]}"
sleep 12  # workers give freed memory back on their 10 s housekeeping tick
after=$(rss_kb)
awk -v n="$CLIENTS" -v b="$before" -v w="$with" -v a="$after" 'BEGIN {
  printf "idle clients %d: RSS before %.1f MiB, with them %.1f MiB (%.1f KB each), after they left %.1f MiB\n",
    n, b / 1024, w / 1024, (w - b) / n, a / 1024 }'
