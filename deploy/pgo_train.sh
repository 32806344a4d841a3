#!/usr/bin/env bash
# Training run for profile-guided optimization (deploy/build.sh): runs what users run most
# through an instrumented pgshard (built with PGSHARD_PGO_GENERATE), whose profile is written
# when it exits. Two throwaway PostgreSQL shards on free ports, a table sharded by key filled
# by COPY through pgshard, then pgbench: keyed reads in the simple, extended and prepared
# protocols at 1 and 8 clients, keyed transactions that write, and reads over both shards
# merged in order. About 40 seconds.
#   pgo_train.sh PGSHARD_BINARY
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$1
DIR=$(mktemp -d /tmp/pgshard-pgo-XXXXXX); chmod 755 "$DIR"
OWN_PORTS_FILE=$([ -z "${PGSHARD_PORTS_TAKEN:-}" ] && echo 1 || echo 0)
source "$ROOT/tests/harness/free_port.sh"
S0=$(free_port); S1=$(free_port); PORT=$(free_port)
export PGPASSWORD=secret
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  "$ROOT/tests/harness/pgcluster.sh" stop "$DIR/pg" || true
  rm -rf "$DIR"
  [ "$OWN_PORTS_FILE" = 0 ] || rm -f "$PGSHARD_PORTS_TAKEN"
}
trap cleanup EXIT
fail() {
  echo "pgo_train: $*" >&2
  [ -f "$DIR/pgshard.log" ] && tail -20 "$DIR/pgshard.log" >&2
  exit 1
}

"$ROOT/tests/harness/pgcluster.sh" start "$DIR/pg" "$S0" "$S1"
cat >"$DIR/pgshard.yaml" <<YAML
listen: { host: 127.0.0.1, port: $PORT, workers: 2 }
users: [{ name: app, password: secret, pool_mode: transaction }]
shards:
  - { name: s0, primary: "postgres://app:secret@127.0.0.1:$S0/app", pool_size: 8 }
  - { name: s1, primary: "postgres://app:secret@127.0.0.1:$S1/app", pool_size: 8 }
sharded_tables: [{ table: pgbench_accounts, column: aid, type: integer, function: hash }]
unsharded: { shard: s0 }
log_level: warn
two_phase_log: $DIR/2pc
YAML
"$BIN" --config "$DIR/pgshard.yaml" >"$DIR/pgshard.log" 2>&1 &
PID=$!
psql_ps() { psql -X -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U app app "$@"; }
for _ in $(seq 100); do psql_ps -c 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
psql_ps -c 'select 1' >/dev/null || fail "pgshard did not start"

ROWS=20000
psql_ps -c "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int,
  filler char(84))" >/dev/null
psql_ps -c "\\copy pgbench_accounts (aid, bid, abalance) FROM PROGRAM 'seq -f %g,1,0 $ROWS' WITH (FORMAT csv)" >/dev/null
[ "$(psql_ps -c 'SELECT count(*) FROM pgbench_accounts')" = "$ROWS" ] ||
  fail "the training table did not fill"

cat >"$DIR/read.sql" <<SQL
\\set aid random(1, $ROWS)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
SQL
cat >"$DIR/write.sql" <<SQL
\\set aid random(1, $ROWS)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
END;
SQL
cat >"$DIR/multi.sql" <<SQL
\\set aid random(1, $ROWS - 100)
SELECT aid, abalance FROM pgbench_accounts WHERE aid BETWEEN :aid AND :aid + 20 ORDER BY aid;
SELECT count(*), sum(abalance) FROM pgbench_accounts WHERE aid BETWEEN :aid AND :aid + 100;
SQL
bench() {  # seconds clients mode script
  local out
  out=$(pgbench -n -T "$1" -c "$2" -j "$(( $2 > 1 ? 2 : 1 ))" -M "$3" -f "$DIR/$4" \
          -h 127.0.0.1 -p "$PORT" -U app app 2>&1) || fail "pgbench $4 -M $3 -c $2: $out"
  echo "$out" | awk -v w="$4 -M $3 -c $2" '/^tps/ {printf "pgo_train: %-28s %8.0f tps\n", w, $3}' >&2
}
for mode in simple extended prepared; do
  bench 4 1 "$mode" read.sql
  bench 3 8 "$mode" read.sql
done
bench 3 4 extended write.sql
bench 3 4 simple write.sql
bench 3 4 extended multi.sql

# The profile is written as pgshard exits.
kill -INT "$PID"
wait "$PID" || fail "pgshard did not exit cleanly"
PID=
