#!/bin/bash
# Starts one shard of docker/compose.yaml. First start: initdb (C.UTF-8, UTF8, so text sorts
# alike on every shard; SCRAM over TCP), the database, and the schema files, on a server that
# listens on no TCP port, so the shard's port opens only when it is ready.
set -euo pipefail
BIN=/usr/lib/postgresql/15/bin
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  "$BIN/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --locale=C.UTF-8 -E UTF8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  "$BIN/pg_ctl" -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=/tmp" start >/dev/null
  psql=("$BIN/psql" -X -q -h /tmp -U "$POSTGRES_USER" -v ON_ERROR_STOP=1)
  [ "$POSTGRES_DB" = postgres ] || "${psql[@]}" -d postgres -c "CREATE DATABASE \"$POSTGRES_DB\""
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$f" ] && "${psql[@]}" -d "$POSTGRES_DB" -f "$f"
  done
  "$BIN/pg_ctl" -D "$PGDATA" -w stop >/dev/null
  echo "shard initialized: database $POSTGRES_DB, user $POSTGRES_USER"
fi
exec "$BIN/postgres" -D "$PGDATA" -p "$PGPORT" -c listen_addresses='*' \
  -c unix_socket_directories=/tmp -c max_prepared_transactions=50 -c max_connections=200 "$@"
