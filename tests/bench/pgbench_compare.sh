#!/usr/bin/env bash
# Runs pgbench -S against one PostgreSQL directly, through PgBouncer and through pgshard, in
# one run, and prints TPS, mean latency and the ratios pgshard/PgBouncer and pgshard/direct.
# pgbench_accounts is sharded by aid in pgshard's map, so every statement is routed by the
# parser as users' keyed statements are (the map has one shard, so PgBouncer is comparable).
#   DURATION (s, default 10)  SCALE (default 10)  POOL (default 32)  WORKERS (pgshard, 2)
#   MODES ("simple extended prepared")  CLIENTS ("1 32")
#   ROUTER_PARSE (true; false routes by hints only, as before the parser router)
# -M prepared runs pgshard in transaction pooling (named statements are re-prepared on
# whatever server a client gets) against PgBouncer in session pooling, where named
# statements work without help; "prepared-session" runs both in session pooling.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${DURATION:-10}; SCALE=${SCALE:-10}; POOL=${POOL:-32}; WORKERS=${WORKERS:-2}
MODES=${MODES:-"simple extended prepared"}; CLIENTS=${CLIENTS:-"1 32"}
ROUTER_PARSE=${ROUTER_PARSE:-true}
BUILD=${PGSHARD_BUILD:-$("$ROOT/deploy/build.sh" Release)}
DIR=$(mktemp -d /tmp/pgshard-bench-XXXXXX); chmod 755 "$DIR"
source "$ROOT/tests/harness/free_port.sh"
SHARD=$(free_port); PGB_T=$(free_port); PGB_S=$(free_port); PS_T=$(free_port); PS_S=$(free_port)
export PGPASSWORD=secret

cleanup() {
  [ -f "$DIR/pgshard-t.pid" ] && kill "$(cat "$DIR/pgshard-t.pid")" 2>/dev/null || true
  [ -f "$DIR/pgshard-s.pid" ] && kill "$(cat "$DIR/pgshard-s.pid")" 2>/dev/null || true
  for m in t s; do
    [ -f "$DIR/pgb-$m/pgbouncer.pid" ] && kill "$(cat "$DIR/pgb-$m/pgbouncer.pid")" 2>/dev/null || true
  done
  "$ROOT/tests/harness/pgcluster.sh" stop "$DIR/shards" || true
  rm -rf "$DIR"
}
trap cleanup EXIT

"$ROOT/tests/harness/pgcluster.sh" start "$DIR/shards" "$SHARD"
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$SHARD" -U app app >/dev/null 2>&1

start_pgbouncer() {  # mode port
  local d="$DIR/pgb-$1"
  mkdir -p "$d"; chown postgres "$d"
  echo '"app" "secret"' >"$d/userlist.txt"
  cat >"$d/pgbouncer.ini" <<INI
[databases]
app = host=127.0.0.1 port=$SHARD dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $d/userlist.txt
pool_mode = $([ "$1" = t ] && echo transaction || echo session)
default_pool_size = $POOL
max_client_conn = 500
logfile = $d/pgbouncer.log
pidfile = $d/pgbouncer.pid
INI
  chmod 644 "$d"/*
  runuser -u postgres -- pgbouncer -d "$d/pgbouncer.ini"
}

start_pgshard() {  # mode port
  cat >"$DIR/pgshard-$1.yaml" <<YAML
listen: { host: 127.0.0.1, port: $2, workers: $WORKERS, max_client_conn: 500 }
users: [{ name: app, password: secret, pool_mode: $([ "$1" = t ] && echo transaction || echo session) }]
shards: [{ name: s0, primary: "postgres://app:secret@127.0.0.1:$SHARD/app", pool_size: $POOL }]
sharded_tables: [{ table: pgbench_accounts, column: aid, type: integer, function: hash }]
unsharded: { shard: s0 }
router: { parse: $ROUTER_PARSE }
log_level: warn
two_phase_log: $DIR/2pc-$1
YAML
  # Its own session and so its own scheduler autogroup, as PgBouncer (-d) and PostgreSQL
  # have: sharing pgbench's autogroup, the kernel split one group's CPU between pgbench and
  # pgshard and preempted pgshard on most sends (1 context switch per transaction against
  # PgBouncer's 0.25, measured).
  setsid "$BUILD/pgshard" --config "$DIR/pgshard-$1.yaml" >"$DIR/pgshard-$1.log" 2>&1 &
  echo $! >"$DIR/pgshard-$1.pid"
}

start_pgbouncer t "$PGB_T"; start_pgbouncer s "$PGB_S"
start_pgshard t "$PS_T"; start_pgshard s "$PS_S"
for port in "$PGB_T" "$PGB_S" "$PS_T" "$PS_S"; do
  for _ in $(seq 100); do psql -X -qAt -h 127.0.0.1 -p "$port" -U app app -c 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
done

# CPU time (user+system, clock ticks) a process has used so far.
cpu_ticks() { [ -n "${1:-}" ] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }
HZ=$(getconf CLK_TCK)

# Prints "tps latency_ms cpu_us_per_tx syscalls_per_tx switches_per_tx" for one pgbench run;
# CPU, system calls and context switches are the proxy's (pid $4) over the run divided by
# the transactions pgbench reports (0 when no proxy; the counts need perf, else 0).
bench() {  # port mode clients [proxy-pid]
  local jobs=$(( $3 > 1 ? 2 : 1 )) out before after tx perf_pid="" counts="$DIR/perf.$1"
  rm -f "$counts"
  if [ -n "${4:-}" ] && command -v perf >/dev/null; then
    perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$4" -o "$counts" 2>/dev/null &
    perf_pid=$!
  fi
  before=$(cpu_ticks "${4:-}")
  out=$(pgbench -n -S -T "$DURATION" -c "$3" -j "$jobs" -M "$2" -h 127.0.0.1 -p "$1" -U app app 2>&1) \
    || { echo "pgbench failed on port $1: $out" >&2; echo "0 0 0 0 0"; return; }
  after=$(cpu_ticks "${4:-}")
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid" 2>/dev/null; wait "$perf_pid" 2>/dev/null || true; fi
  local sys=0 cs=0
  if [ -f "$counts" ]; then
    sys=$(awk -F, '/raw_syscalls:sys_enter/ {print $1}' "$counts"); sys=${sys:-0}
    cs=$(awk -F, '/context-switches/ {print $1}' "$counts"); cs=${cs:-0}
  fi
  tx=$(echo "$out" | awk '/number of transactions actually processed/ {print $6}')
  echo "$(echo "$out" | awk '/^tps/ {print $3}') $(echo "$out" | awk '/latency average/ {print $4}') \
$(awk -v a="$after" -v b="$before" -v t="$tx" -v hz="$HZ" -v s="$sys" -v c="$cs" \
  'BEGIN {if (t > 0) print (a - b) / hz * 1e6 / t, s / t, c / t; else print 0, 0, 0}')"
}

# Whether the binary measured is profile-guided (deploy/build.sh's Release build is).
profile=$(sed -n 's/^PGSHARD_PGO_USE:PATH=//p' "$BUILD/CMakeCache.txt" 2>/dev/null || true)
echo "pgshard: $BUILD/pgshard, profile-guided: ${profile:-no}"
printf '\n%-9s %7s | %10s %10s %10s | %8s %8s | %9s %9s %9s | %13s | %9s %9s | %8s %8s | %7s %7s\n' \
  mode clients direct pgbouncer pgshard "ps/pgb" "ps/dir" "lat_dir" "lat_pgb" "lat_ps" \
  "ps_added_us" "cpu_pgb" "cpu_ps" "sys_pgb" "sys_ps" "cs_pgb" "cs_ps"
for mode in $MODES; do
  for c in $CLIENTS; do
    pgb=$PGB_T; ps=$PS_T; pm=$mode
    [ "$mode" = prepared ] && pgb=$PGB_S
    [ "$mode" = prepared-session ] && { pgb=$PGB_S; ps=$PS_S; pm=prepared; }
    pgb_pid=$(cat "$DIR/pgb-$([ "$pgb" = "$PGB_S" ] && echo s || echo t)/pgbouncer.pid" 2>/dev/null || true)
    ps_pid=$(cat "$DIR/pgshard-$([ "$ps" = "$PS_S" ] && echo s || echo t).pid")
    read -r d_tps d_lat _ < <(bench "$SHARD" "$pm" "$c")
    read -r b_tps b_lat b_cpu b_sys b_cs < <(bench "$pgb" "$pm" "$c" "$pgb_pid")
    read -r s_tps s_lat s_cpu s_sys s_cs < <(bench "$ps" "$pm" "$c" "$ps_pid")
    awk -v m="$mode" -v c="$c" -v d="$d_tps" -v b="$b_tps" -v s="$s_tps" \
        -v dl="$d_lat" -v bl="$b_lat" -v sl="$s_lat" -v bc="$b_cpu" -v sc="$s_cpu" \
        -v bs="$b_sys" -v ss="$s_sys" -v bw="$b_cs" -v sw="$s_cs" 'BEGIN {
      printf "%-9s %7s | %10.0f %10.0f %10.0f | %8.2f %8.2f | %9.3f %9.3f %9.3f | %13.1f | %9.1f %9.1f | %8.2f %8.2f | %7.2f %7.2f\n",
        m, c, d, b, s, (b > 0 ? s / b : 0), (d > 0 ? s / d : 0), dl, bl, sl, (sl - dl) * 1000, bc, sc,
        bs, ss, bw, sw }'
  done
done
echo "(tps: transactions/s; lat_*: mean latency in ms; ps_added_us: pgshard mean latency minus direct, µs;"
echo " cpu_*: the proxy's user+system CPU per transaction, µs; sys_*: its system calls per"
echo " transaction; cs_*: its context switches per transaction)"
