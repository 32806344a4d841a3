#!/usr/bin/env bash
# What atomic visibility costs: cross-shard transfers (two-phase commit) and scatter reads
# (sum over every shard) run together through pgshard over three shards, in alternating
# runs of these settings:
#   off         atomic_visibility: false, one instance
#   instance    atomic_visibility: true (the default), one instance
#   cluster     atomic_visibility: cluster, one instance (the gate also locks on s0's server)
#   cluster-x2  atomic_visibility: cluster, two instances, each with half the writers and
#               half the readers
#   instance-x2 atomic_visibility: true, two instances (each gate sees only its own commits)
# Prints the p50 and p99 latency of each kind of transaction per setting, the reads and the
# reads that returned a total that never existed; fails if a setting that promises atomic
# visibility (instance, cluster, cluster-x2) had one.
#   DURATION (s per run, default 15)  ROUNDS (default 2)  WRITERS (6)  READERS (4)
#   SETTINGS (default "off instance cluster cluster-x2 instance-x2")
source "$(dirname "$0")/common.sh" visibility
DURATION=${DURATION:-15}; ROUNDS=${ROUNDS:-2}; WRITERS=${WRITERS:-6}; READERS=${READERS:-4}
SETTINGS=${SETTINGS:-off instance cluster cluster-x2 instance-x2}
ACCOUNTS=1000; BALANCE=100
P=("$(free_port)" "$(free_port)" "$(free_port)"); PROXY=$(free_port); PROXY2=$(free_port)
trap '[ -f "$DIR/pgshard2.pid" ] && kill "$(cat "$DIR/pgshard2.pid")" 2>/dev/null; bench_cleanup' EXIT
export PGPASSWORD=secret
"$ROOT/tests/harness/pgcluster.sh" start "$DIR/pg" "${P[@]}" >/dev/null
for p in "${P[@]}"; do
  psql -X -q -h 127.0.0.1 -p "$p" -U app app -c \
    "create table accounts (id bigint primary key, balance bigint not null)"
done
config() {  # name atomic_visibility port
  cat >"$DIR/pgshard-$1.yaml" <<YAML
listen: { host: 127.0.0.1, port: $3, workers: 2 }
users: [{ name: app, password: secret, pool_mode: transaction }]
shards:
  - { name: s0, primary: "postgres://app:secret@127.0.0.1:${P[0]}/app", pool_size: 16 }
  - { name: s1, primary: "postgres://app:secret@127.0.0.1:${P[1]}/app", pool_size: 16 }
  - { name: s2, primary: "postgres://app:secret@127.0.0.1:${P[2]}/app", pool_size: 16 }
sharded_tables: [{ table: accounts, column: id, type: bigint }]
unsharded: reject
log_level: warn
atomic_visibility: $2
two_phase_log: $DIR/2pc-$1
YAML
}
config off false "$PROXY"; config instance true "$PROXY"; config cluster cluster "$PROXY"
config instance2 true "$PROXY2"; config cluster2 cluster "$PROXY2"
start_pgshard "$DIR/pgshard-instance.yaml" "$PROXY"
psql -X -q -h 127.0.0.1 -p "$PROXY" -U app app -c \
  "insert into accounts select g, $BALANCE from generate_series(1, $ACCOUNTS) g"
kill "$(cat "$DIR/pgshard.pid")"; wait "$(cat "$DIR/pgshard.pid")" 2>/dev/null || true
TOTAL=$((ACCOUNTS * BALANCE))
cat >"$DIR/transfer.sql" <<SQL
\\set a random(1, $ACCOUNTS)
\\set b random(1, $ACCOUNTS)
\\set lo least(:a, :b)
\\set hi greatest(:a, :b)
BEGIN;
UPDATE accounts SET balance = balance - 1 WHERE id = :lo;
UPDATE accounts SET balance = balance + 1 WHERE id = :hi;
COMMIT;
SQL
# A read that finds another total appends a line to $DIR/wrong (and goes on reading).
cat >"$DIR/scatter.sql" <<SQL
SELECT sum(balance) AS total FROM accounts \\gset
\\if :total != $TOTAL
\\shell echo :total >> $DIR/wrong
\\endif
SQL
percentiles() {  # log files -> "p50 p99" in ms
  cat "$@" | awk '{print $3}' | sort -n | awk '{v[NR] = $1} END {
    if (NR == 0) { print "- -"; exit }
    printf "%.2f %.2f\n", v[int(NR * 0.5) + 1] / 1000, v[int(NR * 0.99) + 1] / 1000 }'
}
# pgbench of script $1 with $2 clients on port $3, logging under $DIR/log/$4.
load() {
  mkdir -p "$DIR/log/$4"
  (cd "$DIR/log/$4" && pgbench -n -f "$1" -T "$DURATION" -c "$2" -j 1 -l \
     -h 127.0.0.1 -p "$3" -U app app >"$DIR/$4.out" 2>&1) || { cat "$DIR/$4.out"; return 1; }
}
declare -A W50 W99 R50 R99 WRONG N
for round in $(seq "$ROUNDS"); do
  for setting in $SETTINGS; do
    rm -rf "$DIR/log"
    base=${setting%-x2}
    start_pgshard "$DIR/pgshard-$base.yaml" "$PROXY"
    pids=()
    if [ "$setting" != "$base" ]; then
      mv "$DIR/pgshard.pid" "$DIR/pgshard2.pid"
      start_pgshard "$DIR/pgshard-${base}2.yaml" "$PROXY2"
      load "$DIR/transfer.sql" $((WRITERS / 2)) "$PROXY" w1 & pids+=($!)
      load "$DIR/transfer.sql" $((WRITERS - WRITERS / 2)) "$PROXY2" w2 & pids+=($!)
      load "$DIR/scatter.sql" $((READERS / 2)) "$PROXY" r1 & pids+=($!)
      load "$DIR/scatter.sql" $((READERS - READERS / 2)) "$PROXY2" r2 & pids+=($!)
    else
      load "$DIR/transfer.sql" "$WRITERS" "$PROXY" w1 & pids+=($!)
      load "$DIR/scatter.sql" "$READERS" "$PROXY" r1 & pids+=($!)
    fi
    for pid in "${pids[@]}"; do wait "$pid" || exit 1; done
    read -r w50 w99 < <(percentiles "$DIR"/log/w*/pgbench_log.*)
    read -r r50 r99 < <(percentiles "$DIR"/log/r*/pgbench_log.*)
    reads=$(cat "$DIR"/log/r*/pgbench_log.* | wc -l)
    wrong=0; [ -f "$DIR/wrong" ] && wrong=$(wc -l <"$DIR/wrong"); rm -f "$DIR/wrong"
    W50[$setting]+="$w50 "; W99[$setting]+="$w99 "; R50[$setting]+="$r50 "; R99[$setting]+="$r99 "
    WRONG[$setting]=$(( ${WRONG[$setting]:-0} + wrong )); N[$setting]=$(( ${N[$setting]:-0} + reads ))
    for f in "$DIR/pgshard.pid" "$DIR/pgshard2.pid"; do
      [ -f "$f" ] || continue
      kill "$(cat "$f")"; wait "$(cat "$f")" 2>/dev/null || true; rm -f "$f"
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
printf '%-12s %14s %14s %14s %14s %8s %8s\n' setting "commit p50 ms" "commit p99 ms" \
  "read p50 ms" "read p99 ms" reads "wrong"
status=0
for setting in $SETTINGS; do
  printf '%-12s %14s %14s %14s %14s %8s %8s\n' "$setting" "$(echo "${W50[$setting]}" | median)" \
    "$(echo "${W99[$setting]}" | median)" "$(echo "${R50[$setting]}" | median)" \
    "$(echo "${R99[$setting]}" | median)" "${N[$setting]}" "${WRONG[$setting]}"
  case $setting in off|instance-x2) ;; *) [ "${WRONG[$setting]}" = 0 ] || status=1 ;; esac
done
echo "(wrong: reads that returned a total that never existed)"
[ "$status" = 0 ] || { echo "FAIL: wrong totals where atomic visibility is promised"; exit 1; }
