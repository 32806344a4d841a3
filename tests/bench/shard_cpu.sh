#!/usr/bin/env bash
# pgshard's CPU per keyed transaction against the size of the shard map: pgbench -S
# (pgbench_accounts sharded by aid, hash; every read routed by the parser to one shard)
# through pgshard with a one-shard map and three-shard maps, and through PgBouncer on one
# shard, and per run: TPS, the proxy's user+system CPU per transaction (µs, /proc/PID/stat),
# its system calls and context switches per transaction (perf stat, software events), and
# per syscall kind. With CALLGRIND_TX > 0 each proxy also runs under callgrind for a fixed
# number of transactions: instructions per transaction, repeatable on a busy machine where
# TPS and CPU time are not (the logins and pool warm-up are subtracted: the difference of
# a run of CALLGRIND_TX and one of CALLGRIND_BASE transactions per client).
# Each shard holds only the rows its hash owns (a 3-shard map's shards are pruned with
# satisfies_hash_partition after the 1-shard runs, whose one shard holds every row).
#   MAPS ("1:32 3:11 3:32": shards:pool_size per shard; 1:32 and 3:11 have about the same
#        server connections in total)
#   PGBOUNCER (1: PgBouncer on the first shard, pool 32, transaction pooling)
#   DURATION (s, 10)  WARMUP (s, 3)  CLIENTS (32)  MODE (extended)  SCALE (5)  WORKERS (2)
#   CALLGRIND_TX (per client, 0 = off; e.g. 400)  CALLGRIND_BASE (per client, 50)
#   ONE_SERVER (1: every shard of a map is the same PostgreSQL, holding every row: the
#        database's work, its processes and caches are the same for every map, and the
#        difference is what the map costs pgshard)
#   KEEP (1: keep DIR with the callgrind files and logs; it is printed)
#   AUTH (trust: clients log in to the proxies without SCRAM, whose PBKDF2 would otherwise be
#        counted in each run's CPU; scram-sha-256 to measure as deployed. The proxies log in
#        to the shards with SCRAM either way, during the warm-up)
# Run pgshard's build as PGSHARD_BUILD=/path/to/build (its pgshard is measured).
source "$(dirname "$0")/common.sh" shardcpu
MAPS=${MAPS:-"1:32 3:11 3:32"}; PGBOUNCER=${PGBOUNCER:-1}
DURATION=${DURATION:-10}; WARMUP=${WARMUP:-3}; CLIENTS=${CLIENTS:-32}; MODE=${MODE:-extended}
SCALE=${SCALE:-5}; WORKERS=${WORKERS:-2}
CALLGRIND_TX=${CALLGRIND_TX:-0}; CALLGRIND_BASE=${CALLGRIND_BASE:-50}; KEEP=${KEEP:-0}
AUTH=${AUTH:-trust}; ONE_SERVER=${ONE_SERVER:-0}
shard_cpu_cleanup() {
  [ -f "$DIR/pgb/pgbouncer.pid" ] && kill "$(cat "$DIR/pgb/pgbouncer.pid")" 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then
    [ -f "$DIR/pgshard.pid" ] && kill "$(cat "$DIR/pgshard.pid")" 2>/dev/null || true
    "$ROOT/tests/harness/pgcluster.sh" stop "$DIR/pg" || true
    echo "kept $DIR"
  else
    bench_cleanup
  fi
}
trap shard_cpu_cleanup EXIT
export PGPASSWORD=secret
HZ=$(getconf CLK_TCK)
MAXN=1; for m in $MAPS; do n=${m%%:*}; [ "$n" -gt "$MAXN" ] && MAXN=$n; done
[ "$ONE_SERVER" = 1 ] && MAXN=1
PORTS=(); for _ in $(seq "$MAXN"); do PORTS+=("$(free_port)"); done
PROXY=$(free_port); PGB=$(free_port); HTTP=$(free_port)
"$ROOT/tests/harness/pgcluster.sh" start "$DIR/pg" "${PORTS[@]}" >/dev/null
for p in "${PORTS[@]}"; do pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$p" -U app app >/dev/null 2>&1; done
PRUNED=0
prune() {  # n: keep on shard i only the rows PostgreSQL's hash partitioning puts in i of n
  local n=$1 i
  for i in $(seq 0 $((n - 1))); do
    psql -X -q -h 127.0.0.1 -p "${PORTS[$i]}" -U app app >/dev/null <<SQL
CREATE TABLE IF NOT EXISTS pgshard_bench_ph (aid integer) PARTITION BY HASH (aid);
DELETE FROM pgbench_accounts WHERE NOT satisfies_hash_partition('pgshard_bench_ph'::regclass, $n, $i, aid);
VACUUM ANALYZE pgbench_accounts;
SQL
  done
  PRUNED=$n
}

SYSCALLS="sendto recvmsg recvfrom read write epoll_wait epoll_ctl futex poll connect"
EVENTS="raw_syscalls:sys_enter,context-switches$(for s in $SYSCALLS; do printf ',syscalls:sys_enter_%s' "$s"; done)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# "waits logins" summed over pgshard's pools so far (0 0 for PgBouncer: no /metrics).
pool_counts() {
  curl -s "http://127.0.0.1:$HTTP/metrics" 2>/dev/null | awk '
    /^pgshard_pool_waits_total/ {w += $NF} /^pgshard_server_logins_total/ {l += $NF}
    END {print w + 0, l + 0}'
}
wait_port() {  # port tries
  for _ in $(seq "$2"); do
    psql -X -qAt -h 127.0.0.1 -p "$1" -U app app -c 'select 1' >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}
pgb() {  # port args...: pgbench -S through the proxy on port
  local port=$1; shift
  pgbench -n -S -c "$CLIENTS" -j 2 -M "$MODE" -h 127.0.0.1 -p "$port" -U app "$@" app 2>&1
}

# Prints "tps cpu_us/tx syscalls/tx switches/tx per-kind..." for a DURATION run through the
# proxy with pid $2 on port $1 (after WARMUP seconds of the same load).
measure() {
  local port=$1 pid=$2 out before after tx counts="$DIR/perf.out"
  pgb "$port" -T "$WARMUP" >/dev/null || true
  perf stat -x, -e "$EVENTS" -p "$pid" -o "$counts" 2>/dev/null &
  local perf_pid=$!
  sleep 0.2
  local m0 m1
  [ "$port" = "$PROXY" ] && m0=$(pool_counts) || m0="0 0"
  before=$(cpu_ticks "$pid")
  out=$(pgb "$port" -T "$DURATION") || { echo "pgbench failed: $out" >&2; kill -INT $perf_pid; return 1; }
  after=$(cpu_ticks "$pid")
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  [ "$port" = "$PROXY" ] && m1=$(pool_counts) || m1="0 0"
  tx=$(echo "$out" | awk '/number of transactions actually processed/ {print $6}')
  awk -F, -v t="$tx" -v a="$after" -v b="$before" -v hz="$HZ" -v m0="$m0" -v m1="$m1" \
      -v tps="$(echo "$out" | awk '/^tps/ {print $3}')" -v kinds="$SYSCALLS" '
    { v[$3] = $1 }
    END {
      split(m0, p, " "); split(m1, q, " ")
      printf "%.0f %.2f %.2f %.2f %.3f %d", tps, (a - b) / hz * 1e6 / t, v["raw_syscalls:sys_enter"] / t,
        v["context-switches"] / t, (q[1] - p[1]) / t, q[2] - p[2]
      n = split(kinds, k, " ")
      for (i = 1; i <= n; i++) printf " %.2f", v["syscalls:sys_enter_" k[i]] / t
      printf "\n" }' "$counts"
}

# Instructions per transaction of the proxy started by "$@" under callgrind (its dumps in
# $DIR/cg/$name.N), on port $1: a warm-up that fills the pools, then runs of CALLGRIND_BASE,
# CALLGRIND_TX and CALLGRIND_BASE transactions per client, each dumped on its own; prints
# "Ir/tx spread%": (Ir(long) - mean Ir(short)) over the transactions between (each run's 32
# logins cancel out), and how far the two short runs differ (a check: large = noise, e.g.
# a login to a shard inside a measured run).
callgrind_ir() {  # name port [runuser user --] command...
  local name=$1 port=$2; shift 2
  local out="$DIR/cg/$name"
  mkdir -p "$DIR/cg"; chmod 777 "$DIR/cg"
  local pre=()
  [ "$1" = runuser ] && { pre=("$1" "$2" "$3" "$4"); shift 4; }
  setsid "${pre[@]}" valgrind --tool=callgrind --callgrind-out-file="$out" --vgdb-prefix="$out.vgdb" \
    --separate-threads=no "$@" >"$out.log" 2>&1 &
  local vpid=$!
  wait_port "$port" 300 || { echo "callgrind $name did not start" >&2; cat "$out.log" >&2; return 1; }
  # The valgrind process (runuser's child when run as another user, and then controlled as
  # that user: vgdb's files carry the user's name).
  local cg=$vpid
  [ ${#pre[@]} -gt 0 ] && cg=$(pgrep -P "$vpid")
  # The warm-up is as long as the long run, so the pools have opened what it needs (a login
  # to a shard, SCRAM's PBKDF2, costs as much as thousands of transactions).
  pgb "$port" -t "$CALLGRIND_TX" >/dev/null
  "${pre[@]}" callgrind_control --vgdb-prefix="$out.vgdb" -d warmup "$cg" >/dev/null
  pgb "$port" -t "$CALLGRIND_BASE" >/dev/null; "${pre[@]}" callgrind_control --vgdb-prefix="$out.vgdb" -d short1 "$cg" >/dev/null
  pgb "$port" -t "$CALLGRIND_TX" >/dev/null; "${pre[@]}" callgrind_control --vgdb-prefix="$out.vgdb" -d long "$cg" >/dev/null
  pgb "$port" -t "$CALLGRIND_BASE" >/dev/null; "${pre[@]}" callgrind_control --vgdb-prefix="$out.vgdb" -d short2 "$cg" >/dev/null
  kill "$cg" 2>/dev/null || true
  wait "$vpid" 2>/dev/null || true
  local s1 l s2
  s1=$(ir_of "$out.2"); l=$(ir_of "$out.3"); s2=$(ir_of "$out.4")
  awk -v l="$l" -v a="$s1" -v b="$s2" -v n=$(( CLIENTS * (CALLGRIND_TX - CALLGRIND_BASE) )) \
    'BEGIN {printf "%.0f %.1f%%\n", (l - (a + b) / 2) / n, (a > b ? a - b : b - a) / ((a + b) / 2) * 100}'
}
# A dump's instructions but libcrypto's: a shard login (SCRAM's PBKDF2, ~33M instructions)
# that falls in a measured run, when a pool opens one more connection, is not per
# transaction (nothing per transaction uses libcrypto without TLS).
ir_of() {
  callgrind_annotate --inclusive=no --threshold=100 "$1" 2>/dev/null | awk '
    /PROGRAM TOTALS/ {gsub(",", "", $1); t = $1}
    /^ *[0-9,]+ \(/ && /libcrypto/ {gsub(",", "", $1); c += $1}
    END {print t - c}'
}

write_map() {  # n pool file
  {
    echo "listen: { host: 127.0.0.1, port: $PROXY, workers: $WORKERS, max_client_conn: 500 }"
    echo "users: [{ name: app, password: secret, pool_mode: transaction, auth: $AUTH }]"
    echo "timeouts: { connect: 60s }"  # (logins to the shards under callgrind are slow)
    echo "admin: { http: \"127.0.0.1:$HTTP\" }"  # (/metrics: pool waits and logins)
    echo "shards:"
    for i in $(seq 0 $(($1 - 1))); do
      echo "  - { name: s$i, primary: \"postgres://app:secret@127.0.0.1:${PORTS[$((i % ${#PORTS[@]}))]}/app\", pool_size: $2 }"
    done
    echo "sharded_tables: [{ table: pgbench_accounts, column: aid, type: integer, function: hash }]"
    echo "unsharded: { shard: s0 }"
    echo "log_level: warn"
    # A node of its own: without one, pgshard leases one from the first shard over a libpq
    # connection of its own, which under callgrind times out and logs in again (SCRAM).
    echo "node_id: 1"
    echo "two_phase_log: $DIR/2pc-$1-$2"
  } >"$3"
}

start_pgbouncer() {
  local d="$DIR/pgb"
  mkdir -p "$d"; chown postgres "$d"
  echo '"app" "secret"' >"$d/userlist.txt"
  cat >"$d/pgbouncer.ini" <<INI
[databases]
app = host=127.0.0.1 port=${PORTS[0]} dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB
unix_socket_dir =
auth_type = $AUTH
auth_file = $d/userlist.txt
pool_mode = transaction
default_pool_size = 32
max_client_conn = 500
logfile = $d/pgbouncer.log
pidfile = $d/pgbouncer.pid
INI
  chmod 644 "$d"/*
}

declare -A ROW IR
order=()
if [ "$PGBOUNCER" = 1 ]; then
  start_pgbouncer
  runuser -u postgres -- pgbouncer -d "$DIR/pgb/pgbouncer.ini"
  wait_port "$PGB" 100
  ROW[pgbouncer]=$(measure "$PGB" "$(cat "$DIR/pgb/pgbouncer.pid")")
  kill "$(cat "$DIR/pgb/pgbouncer.pid")"; sleep 0.5
  if [ "$CALLGRIND_TX" -gt 0 ]; then
    IR[pgbouncer]=$(callgrind_ir pgbouncer "$PGB" runuser -u postgres -- /usr/sbin/pgbouncer "$DIR/pgb/pgbouncer.ini")
  fi
  order+=(pgbouncer)
fi
for m in $MAPS; do
  n=${m%%:*}; pool=${m##*:}; name="${n}x$pool"
  [ "$n" -gt 1 ] && [ "$PRUNED" != "$n" ] && [ "$ONE_SERVER" != 1 ] && prune "$n"
  write_map "$n" "$pool" "$DIR/pgshard-$name.yaml"
  start_pgshard "$DIR/pgshard-$name.yaml" "$PROXY"
  ROW[$name]=$(measure "$PROXY" "$(cat "$DIR/pgshard.pid")")
  kill "$(cat "$DIR/pgshard.pid")"; wait "$(cat "$DIR/pgshard.pid")" 2>/dev/null || true
  rm -f "$DIR/pgshard.pid"
  if [ "$CALLGRIND_TX" -gt 0 ]; then
    # Only the workers' threads: not the two-phase recovery thread, which logs in to every
    # shard with libpq (SCRAM) every 10 s, nor the admin/accept thread.
    IR[$name]=$(callgrind_ir "$name" "$PROXY" '--toggle-collect=*pgshard::server::Worker::start()::{lambda()#1}*' \
      "$BUILD/pgshard" --config "$DIR/pgshard-$name.yaml")
  fi
  order+=("$name")
done

printf '%-10s %7s %9s %7s %6s %8s %6s %9s %7s %7s %7s |' proxy tps cpu_us/tx sys/tx cs/tx waits/tx logins "Ir/tx" spread cpu/pgb Ir/pgb
for s in $SYSCALLS; do printf ' %6.6s' "$s"; done; echo
base_cpu=$(echo "${ROW[pgbouncer]:-0 0}" | awk '{print $2}')
base_ir=$(echo "${IR[pgbouncer]:-0}" | awk '{print $1}')
for name in "${order[@]}"; do
  echo "${ROW[$name]}" | awk -v n="$name" -v ir="${IR[$name]:-- -}" -v b="$base_cpu" -v bi="$base_ir" '{
    split(ir, r, " ")
    printf "%-10s %7s %9s %7s %6s %8s %6s %9s %7s %7s %7s |", n, $1, $2, $3, $4, $5, $6, r[1], r[2],
      (b > 0 ? sprintf("%.2f", $2 / b) : "-"), (bi > 0 && r[1] > 0 ? sprintf("%.2f", r[1] / bi) : "-")
    for (i = 7; i <= NF; i++) printf " %6s", $i
    printf "\n" }'
done
echo "(name: shards x pool_size per shard; cpu_us/tx: the proxy's user+system CPU per transaction;"
echo " sys/tx, cs/tx: its system calls and context switches per transaction, then by kind;"
echo " waits/tx: pool acquisitions that queued, per transaction; logins: server connections opened"
echo " during the measured run;"
echo " Ir/tx: instructions per transaction under callgrind, logins and warm-up subtracted)"
