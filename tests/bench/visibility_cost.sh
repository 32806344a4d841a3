#!/usr/bin/env bash
# What atomic visibility costs: cross-shard transfers (two-phase commit) and scatter reads
# (sum over every shard) run together through pgshard over three shards, with the visibility
# gate on (atomic_visibility: true, the default) and off, in alternating runs. Prints the
# p50 and p99 latency of each kind of transaction in each setting and the difference, and
# checks that the gate's runs saw no total that never existed (the runs without it usually
# do: that is what the gate is for).
#   DURATION (s per run, default 15)  ROUNDS (default 2)  WRITERS (6)  READERS (4)
source "$(dirname "$0")/common.sh" visibility
DURATION=${DURATION:-15}; ROUNDS=${ROUNDS:-2}; WRITERS=${WRITERS:-6}; READERS=${READERS:-4}
ACCOUNTS=1000; BALANCE=100
P=("$(free_port)" "$(free_port)" "$(free_port)"); PROXY=$(free_port)
export PGPASSWORD=secret
"$ROOT/tests/harness/pgcluster.sh" start "$DIR/pg" "${P[@]}" >/dev/null
for p in "${P[@]}"; do
  psql -X -q -h 127.0.0.1 -p "$p" -U app app -c \
    "create table accounts (id bigint primary key, balance bigint not null)"
done
config() {  # atomic_visibility
  cat >"$DIR/pgshard-$1.yaml" <<YAML
listen: { host: 127.0.0.1, port: $PROXY, workers: 2 }
users: [{ name: app, password: secret, pool_mode: transaction }]
shards:
  - { name: s0, primary: "postgres://app:secret@127.0.0.1:${P[0]}/app", pool_size: 16 }
  - { name: s1, primary: "postgres://app:secret@127.0.0.1:${P[1]}/app", pool_size: 16 }
  - { name: s2, primary: "postgres://app:secret@127.0.0.1:${P[2]}/app", pool_size: 16 }
sharded_tables: [{ table: accounts, column: id, type: bigint }]
unsharded: reject
log_level: warn
atomic_visibility: $1
two_phase_log: $DIR/2pc-$1
YAML
}
config true; config false
start_pgshard "$DIR/pgshard-true.yaml" "$PROXY"
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
declare -A W50 W99 R50 R99 WRONG N
for round in $(seq "$ROUNDS"); do
  for mode in true false; do
    start_pgshard "$DIR/pgshard-$mode.yaml" "$PROXY"
    rm -rf "$DIR/log"; mkdir -p "$DIR/log/w" "$DIR/log/r"
    (cd "$DIR/log/w" && pgbench -n -f "$DIR/transfer.sql" -T "$DURATION" -c "$WRITERS" -j 1 -l \
       -h 127.0.0.1 -p "$PROXY" -U app app >"$DIR/w.out" 2>&1) &
    wpid=$!
    (cd "$DIR/log/r" && pgbench -n -f "$DIR/scatter.sql" -T "$DURATION" -c "$READERS" -j 1 -l \
       -h 127.0.0.1 -p "$PROXY" -U app app >"$DIR/r.out" 2>&1) || { cat "$DIR/r.out"; exit 1; }
    wait "$wpid" || { cat "$DIR/w.out"; exit 1; }
    read -r w50 w99 < <(percentiles "$DIR"/log/w/pgbench_log.*)
    read -r r50 r99 < <(percentiles "$DIR"/log/r/pgbench_log.*)
    reads=$(cat "$DIR"/log/r/pgbench_log.* | wc -l)
    wrong=0; [ -f "$DIR/wrong" ] && wrong=$(wc -l <"$DIR/wrong"); rm -f "$DIR/wrong"
    W50[$mode]+="$w50 "; W99[$mode]+="$w99 "; R50[$mode]+="$r50 "; R99[$mode]+="$r99 "
    WRONG[$mode]=$(( ${WRONG[$mode]:-0} + wrong )); N[$mode]=$(( ${N[$mode]:-0} + reads ))
    kill "$(cat "$DIR/pgshard.pid")"; wait "$(cat "$DIR/pgshard.pid")" 2>/dev/null || true
    rm -f "$DIR/pgshard.pid"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
printf '%-22s %14s %14s %14s %14s %8s %8s\n' atomic_visibility "commit p50 ms" "commit p99 ms" \
  "read p50 ms" "read p99 ms" reads "wrong"
for mode in true false; do
  printf '%-22s %14s %14s %14s %14s %8s %8s\n' "$mode" "$(echo "${W50[$mode]}" | median)" \
    "$(echo "${W99[$mode]}" | median)" "$(echo "${R50[$mode]}" | median)" \
    "$(echo "${R99[$mode]}" | median)" "${N[$mode]}" "${WRONG[$mode]}"
done
echo "(wrong: reads that returned a total that never existed)"
[ "${WRONG[true]}" = 0 ] || { echo "FAIL: wrong totals with the gate on"; exit 1; }
