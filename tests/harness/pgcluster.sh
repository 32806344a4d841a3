#!/usr/bin/env bash
# Starts and stops throwaway PostgreSQL 15 servers for tests and the quickstart.
#   pgcluster.sh start DIR PORT...   one server per port in DIR/<port>, user app/secret, db app
#   pgcluster.sh stop DIR            stops every server under DIR
#   pgcluster.sh kill DIR PORT       stops one server at once (-m immediate)
#   pgcluster.sh restart DIR PORT    starts one stopped server again
#   pgcluster.sh replica DIR PRIMARY_PORT PORT [DELAY_MS]
#                                    a streaming replica of DIR/<PRIMARY_PORT> (pg_basebackup -R)
#                                    in DIR/<PORT>, replaying DELAY_MS behind (default 0)
#   pgcluster.sh promote DIR PORT    promotes a replica to primary (pg_ctl promote)
#   pgcluster.sh copy DIR PRIMARY_PORT PORT
#                                    a base backup of DIR/<PRIMARY_PORT> started as a primary
#                                    of its own (no standby.signal): same system identifier
#                                    and timeline, a split brain for failover tests
#   pgcluster.sh orphan DIR PRIMARY_PORT PORT
#                                    a base backup of DIR/<PRIMARY_PORT> started in recovery
#                                    with no primary to stream from (a replica left behind)
# Servers run as the postgres user (initdb refuses root), SCRAM auth on loopback,
# max_prepared_transactions > 0, C.UTF-8 locale so text sorts alike on every shard.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
APP_USER=${PGSHARD_APP_USER:-app}
APP_PASSWORD=${PGSHARD_APP_PASSWORD:-secret}
APP_DB=${PGSHARD_APP_DB:-app}

as_pg() {
  if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi
}

start_one() {
  local dir=$1 port=$2 data=$1/$2
  if [ ! -f "$data/PG_VERSION" ]; then
    if [ ! -f "$dir/template/PG_VERSION" ]; then
      as_pg "$PGBIN/initdb" -D "$dir/template" -U postgres --locale=C.UTF-8 -E UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log"; exit 1; }
    fi
    as_pg cp -a "$dir/template" "$data"
    cat >>"$data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 400
max_prepared_transactions = 50
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 64MB
log_min_messages = warning
log_connections = off
CONF
  fi
  # Already running (a rerun): leave it be.
  if ! as_pg "$PGBIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$PGBIN/pg_ctl" -D "$data" -l "$dir/$port.log" -w -t 60 start >/dev/null
  fi
  as_pg "$PGBIN/psql" -qAt -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 <<SQL >/dev/null
SELECT format('CREATE ROLE %I LOGIN SUPERUSER PASSWORD %L', '$APP_USER', '$APP_PASSWORD')
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$APP_USER') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', '$APP_DB', '$APP_USER')
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$APP_DB') \gexec
SQL
}

# A streaming replica of a running server of DIR: a base backup over the replication protocol
# (the local socket, trusted for replication by initdb), with the standby settings -R writes.
start_replica() {
  local dir=$1 primary=$2 port=$3 delay=${4:-0} data=$1/$3 standby=${5--R} orphan=${6:-}
  if [ ! -f "$data/PG_VERSION" ]; then
    as_pg "$PGBIN/pg_basebackup" -h "$dir" -p "$primary" -U postgres -D "$data" $standby \
      -X stream -c fast >"$dir/basebackup-$port.log" 2>&1 || { cat "$dir/basebackup-$port.log"; exit 1; }
    cat >>"$data/postgresql.conf" <<CONF
port = $port
hot_standby = on
hot_standby_feedback = on
recovery_min_apply_delay = '${delay}ms'
CONF
    [ -z "$orphan" ] || as_pg touch "$data/standby.signal"
  fi
  if ! as_pg "$PGBIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$PGBIN/pg_ctl" -D "$data" -l "$dir/$port.log" -w -t 60 start >/dev/null
  fi
}

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|kill|restart|replica|promote|copy|orphan DIR [PORT...]" >&2; exit 2; }
case "$cmd" in
  start)
    shift 2
    # One server per port: a port given twice would make two "shards" one server.
    dup=$(printf '%s\n' "$@" | sort | uniq -d | head -1)
    [ -z "$dup" ] || { echo "port $dup given twice" >&2; exit 2; }
    mkdir -p "$dir"; chmod 755 "$dir"; chown postgres "$dir" 2>/dev/null || true
    for port in "$@"; do start_one "$dir" "$port"; done ;;
  stop)
    for data in "$dir"/*/; do
      [ -f "$data/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    done ;;
  kill)
    as_pg "$PGBIN/pg_ctl" -D "$dir/$3" -m immediate -w stop >/dev/null ;;
  restart)
    as_pg "$PGBIN/pg_ctl" -D "$dir/$3" -l "$dir/$3.log" -w -t 60 start >/dev/null ;;
  replica)
    [ $# -ge 4 ] || { echo "usage: $0 replica DIR PRIMARY_PORT PORT [DELAY_MS]" >&2; exit 2; }
    start_replica "$dir" "$3" "$4" "${5:-0}" ;;
  promote)
    as_pg "$PGBIN/pg_ctl" -D "$dir/$3" -w -t 60 promote >/dev/null ;;
  copy)
    [ $# -ge 4 ] || { echo "usage: $0 copy DIR PRIMARY_PORT PORT" >&2; exit 2; }
    start_replica "$dir" "$3" "$4" 0 "" ;;
  orphan)
    [ $# -ge 4 ] || { echo "usage: $0 orphan DIR PRIMARY_PORT PORT" >&2; exit 2; }
    start_replica "$dir" "$3" "$4" 0 "" orphan ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
