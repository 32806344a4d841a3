#!/usr/bin/env bash
# Runs one real-driver suite against pgshard over three fresh PostgreSQL shards in
# transaction pooling: tests/clients/run.sh python|node|jdbc
#   PGSHARD_BINARY: the pgshard to test (CTest passes it)
set -euo pipefail
SUITE=$1
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${PGSHARD_BINARY:-$ROOT/build/release/pgshard}
DIR=$(mktemp -d /tmp/pgshard-clients-XXXXXX); chmod 755 "$DIR"
source "$ROOT/tests/harness/free_port.sh"
P0=$(free_port); P1=$(free_port); P2=$(free_port); PROXY=$(free_port); HTTP=$(free_port)
export PGPASSWORD=secret
cleanup() {
  local rc=$?
  [ -f "$DIR/pgshard.pid" ] && kill "$(cat "$DIR/pgshard.pid")" 2>/dev/null || true
  if [ $rc -ne 0 ]; then
    echo "---- pgshard log (tail) ----"; tail -40 "$DIR/pgshard.log" 2>/dev/null || true
    for p in $P0 $P1 $P2; do echo "---- shard $p log (tail) ----"; tail -15 "$DIR/pg/$p/log" 2>/dev/null || true; done
  fi
  "$ROOT/tests/harness/pgcluster.sh" stop "$DIR/pg" >/dev/null 2>&1 || true
  rm -rf "$DIR"
  exit $rc
}
trap cleanup EXIT
"$ROOT/tests/harness/pgcluster.sh" start "$DIR/pg" "$P0" "$P1" "$P2" >/dev/null
# The dashboard shows each shard's hosts: there s0 has a streaming replica.
S0_REPLICAS=""
if [ "$SUITE" = dashboard ]; then
  R0=$(free_port)
  "$ROOT/tests/harness/pgcluster.sh" replica "$DIR/pg" "$P0" "$R0" >/dev/null
  S0_REPLICAS=", replicas: [\"postgres://app:secret@127.0.0.1:$R0/app\"]"
fi
cat >"$DIR/pgshard.yaml" <<YAML
listen: { host: 127.0.0.1, port: $PROXY, workers: 2 }
tls: { mode: disable }
users: [{ name: app, password: secret, pool_mode: transaction }]
shards:
  - { name: s0, primary: "postgres://app:secret@127.0.0.1:$P0/app", pool_size: 4$S0_REPLICAS }
  - { name: s1, primary: "postgres://app:secret@127.0.0.1:$P1/app", pool_size: 4 }
  - { name: s2, primary: "postgres://app:secret@127.0.0.1:$P2/app", pool_size: 4 }
sharded_tables:
  - { table: users, column: id, type: bigint }
  - { table: orders, column: user_id, type: bigint }
  - { table: accounts, column: id, type: integer }
  - { table: purchases, column: account_id, type: integer }
  - { table: tickets, column: id, type: bigint }
  - { table: members, column: id, type: integer }
  - { table: member_orders, column: user_id, type: integer }
  - { table: customers, column: id, type: bigint }
  - { table: customer_orders, column: customer_id, type: bigint }
unsharded: $(case "$SUITE" in alembic|drizzle-kit) echo "{ shard: s0 }" ;; *) echo reject ;; esac)
log_level: info
two_phase_log: $DIR/2pc
admin: { http: "127.0.0.1:$HTTP" }
YAML
"$BIN" --config "$DIR/pgshard.yaml" >"$DIR/pgshard.log" 2>&1 &
echo $! >"$DIR/pgshard.pid"
for _ in $(seq 100); do psql -X -qAt -h 127.0.0.1 -p "$PROXY" -U app app -c 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
# The schema goes to every shard through pgshard (DDL fan-out).
psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PROXY" -U app app -f "$HERE/schema.sql" >/dev/null
export PGSHARD_HOST=127.0.0.1 PGSHARD_PORT=$PROXY PGSHARD_SHARDS=$P0,$P1,$P2
case "$SUITE" in
  python) /usr/bin/python3 "$HERE/python_drivers.py" ;;
  # Migrations keep their bookkeeping table outside the map: unsharded goes to s0 here.
  alembic) /usr/bin/python3 "$HERE/alembic_test.py" ;;
  drizzle-kit)
    [ -d "$HERE/node/node_modules/drizzle-kit" ] ||
      (cd "$HERE/node" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
    # Twice: the second run finds every migration applied and does nothing.
    for _ in 1 2; do
      (cd "$HERE/node" && DATABASE_URL="postgres://app:secret@127.0.0.1:$PROXY/app" \
        ./node_modules/.bin/drizzle-kit migrate --config drizzle.config.ts)
    done
    node "$HERE/node/migrate_check.mjs" ;;
  node)
    # npm packages are installed into the source tree's ignored node_modules, once.
    [ -d "$HERE/node/node_modules/drizzle-kit" ] ||
      (cd "$HERE/node" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
    node "$HERE/node/test.mjs" ;;
  jdbc) java -cp /usr/share/java/postgresql.jar "$HERE/jdbc/JdbcTest.java" ;;
  dashboard)
    [ -d "$HERE/node/node_modules/playwright-core" ] ||
      (cd "$HERE/node" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
    # 300 users through pgshard (hashed over the shards), then what each shard holds.
    values=$(seq 1 300 | sed "s/.*/(&, 'u&')/" | paste -sd,)
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PROXY" -U app app \
      -c "insert into users (id, name) values $values"
    expected="{"
    for i in 0 1 2; do
      port=$(eval echo "\$P$i")
      n=$(psql -X -qAt -h 127.0.0.1 -p "$port" -U app app -c "select count(*) from users")
      expected="$expected\"s$i\": $n"; [ $i -lt 2 ] && expected="$expected, "
    done
    expected="$expected}"
    hosts="[[\"s0\",\"127.0.0.1:$P0\",\"primary\"],[\"s0\",\"127.0.0.1:$R0\",\"replica\"],"
    hosts="$hosts[\"s1\",\"127.0.0.1:$P1\",\"primary\"],[\"s2\",\"127.0.0.1:$P2\",\"primary\"]]"
    PGSHARD_HTTP=127.0.0.1:$HTTP EXPECTED_ROWS=$expected EXPECTED_HOSTS=$hosts \
      KILL_SHARD="$ROOT/tests/harness/pgcluster.sh kill $DIR/pg $P2" \
      ARTIFACTS=${PGSHARD_ARTIFACTS:-$ROOT/build/artifacts} node "$HERE/node/dashboard.mjs" ;;
  *) echo "unknown suite $SUITE"; exit 2 ;;
esac
echo "suite $SUITE: passed"
