# Set-up shared by the benchmark scripts (sourced): ROOT, BUILD (a Release build unless
# PGSHARD_BUILD names one), a scratch DIR the postgres user can read, free_port, and on exit
# stopping the pgshard whose pid is in $DIR/pgshard.pid and the shards under $DIR/pg.
#   source "$(dirname "$0")/common.sh" NAME
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${PGSHARD_BUILD:-$("$ROOT/deploy/build.sh" Release)}
DIR=$(mktemp -d "/tmp/pgshard-$1-XXXXXX"); chmod 755 "$DIR"
source "$ROOT/tests/harness/free_port.sh"
bench_cleanup() {
  [ -f "$DIR/pgshard.pid" ] && kill "$(cat "$DIR/pgshard.pid")" 2>/dev/null || true
  "$ROOT/tests/harness/pgcluster.sh" stop "$DIR/pg" || true
  rm -rf "$DIR"
}
trap bench_cleanup EXIT
# Starts pgshard with config $1 (log beside it, pid in $DIR/pgshard.pid) and waits until it
# answers on port $2.
# setsid: its own session, so its own scheduler autogroup, as a daemon (PgBouncer -d,
# PostgreSQL) or a systemd service has; sharing pgbench's autogroup, the kernel splits one
# group's CPU between pgbench and the proxy and preempts the proxy on most sends.
start_pgshard() {
  setsid "$BUILD/pgshard" --config "$1" >"${1%.yaml}.log" 2>&1 &
  echo $! >"$DIR/pgshard.pid"
  for _ in $(seq 100); do
    PGPASSWORD=secret psql -X -qAt -h 127.0.0.1 -p "$2" -U app app -c 'select 1' >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "pgshard did not start:"; cat "${1%.yaml}.log"; exit 1
}
