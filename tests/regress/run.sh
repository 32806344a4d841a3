#!/usr/bin/env bash
# PostgreSQL 15's own regression suite (pg_regress, parallel_schedule) against one fresh
# shard: tests/regress/run.sh direct|session|transaction
#   direct       psql talks to PostgreSQL itself (the reference)
#   session      through pgshard, one shard, session pooling
#   transaction  through pgshard, one shard, transaction pooling
# The suite comes from Debian's source package of the installed postgresql-15 (apt-get
# source, cached under $PGSHARD_REGRESS_CACHE), regress.so is built with PGXS.
# A mode passes when exactly its known failures fail (tests/regress/expected_<mode>.txt,
# one test name per line with the reason); a newly failing test or a known failure that now
# passes both fail the run, so the list and README stay true.
#   PGSHARD_BINARY: the pgshard to test (CTest passes it)
#   PGSHARD_REGRESS_TESTS="test_setup inet": run these tests one after another instead of
#     the schedule (while debugging one test; the verdict then only prints counts)
set -euo pipefail
MODE=${1:?usage: run.sh direct|session|transaction}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${PGSHARD_BINARY:-$ROOT/build/release/pgshard}
PGBIN=/usr/lib/postgresql/15/bin
CACHE=${PGSHARD_REGRESS_CACHE:-/var/cache/pgshard-regress}

# --- the suite, once per installed server version --------------------------------------
version=$(dpkg-query -W -f='${Version}' postgresql-15)
upstream=${version%%-*}
SRC=$CACHE/$version
if [ ! -f "$SRC/regress.so" ]; then
  mkdir -p "$CACHE/download"
  if [ ! -f /etc/apt/sources.list.d/pgshard-deb-src.sources ] && ! grep -rqs '^Types: deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    sed -e 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
      >/etc/apt/sources.list.d/pgshard-deb-src.sources
    apt-get update -qq
  fi
  # The source of the installed version; when the archive no longer has it (a security
  # update whose source left the mirror), the nearest 15.x source it does have.
  fetched=""
  for v in "$version" $(apt-cache showsrc postgresql-15 | sed -n 's/^Version: //p' | sort -rV); do
    if (cd "$CACHE/download" && apt-get source --download-only -qq "postgresql-15=$v" >/dev/null 2>&1); then
      fetched=$v; break
    fi
  done
  [ -n "$fetched" ] || { echo "no postgresql-15 source package can be fetched"; exit 1; }
  [ "$fetched" = "$version" ] || echo "note: server is $version, regression suite from $fetched"
  upstream=${fetched%%-*}
  rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp"
  tar -xjf "$CACHE/download/postgresql-15_$upstream.orig.tar.bz2" -C "$SRC.tmp" --strip-components=4 \
    "postgresql-$upstream/src/test/regress"
  printf 'MODULES = regress\nPG_CONFIG = %s/pg_config\nPGXS := $(shell $(PG_CONFIG) --pgxs)\ninclude $(PGXS)\n' \
    "$PGBIN" >"$SRC.tmp/Makefile.pgxs"
  make -s -C "$SRC.tmp" -f Makefile.pgxs regress.so with_llvm=no >/dev/null
  # The triggers test loads contrib's spi modules from the same directory.
  ln -sf "$($PGBIN/pg_config --pkglibdir)/autoinc.so" "$($PGBIN/pg_config --pkglibdir)/refint.so" "$SRC.tmp/"
  rm -rf "$SRC" && mv "$SRC.tmp" "$SRC"
fi

# --- one shard, and pgshard in front of it ---------------------------------------------
DIR=$(mktemp -d /tmp/pgshard-regress-XXXXXX); chmod 755 "$DIR"
source "$ROOT/tests/harness/free_port.sh"
SHARD=$(free_port); PROXY=$(free_port)
cleanup() {
  local rc=$?
  [ -f "$DIR/pgshard.pid" ] && kill "$(cat "$DIR/pgshard.pid")" 2>/dev/null || true
  if [ $rc -ne 0 ]; then
    # Logs first, the verdict (with the diff of each new failure) last: a CI report that
    # keeps only the end of the output still names the failing test and shows its diff.
    echo "---- pgshard log (tail) ----"; tail -30 "$DIR/pgshard.log" 2>/dev/null || true
    echo "---- shard log (tail) ----"; tail -30 "$DIR/pg/$SHARD.log" 2>/dev/null || true
    [ -f "$DIR/out/verdict.txt" ] && { echo "---- verdict ----"; cat "$DIR/out/verdict.txt"; }
  fi
  "$ROOT/tests/harness/pgcluster.sh" stop "$DIR/pg" >/dev/null 2>&1 || true
  [ "${PGSHARD_KEEP_REGRESS:-0}" = 1 ] && echo "kept $DIR" || rm -rf "$DIR"
  exit $rc
}
trap cleanup EXIT
"$ROOT/tests/harness/pgcluster.sh" start "$DIR/pg" "$SHARD" >/dev/null
# What pg_regress would have set on a database it creates itself (--use-existing skips it).
runuser -u postgres -- "$PGBIN/psql" -X -q -h "$DIR/pg" -p "$SHARD" -U postgres -d postgres -v ON_ERROR_STOP=1 <<SQL
ALTER ROLE postgres PASSWORD 'secret';
CREATE DATABASE regression TEMPLATE template0;
ALTER DATABASE regression SET lc_messages TO 'C';
ALTER DATABASE regression SET lc_monetary TO 'C';
ALTER DATABASE regression SET lc_numeric TO 'C';
ALTER DATABASE regression SET lc_time TO 'C';
ALTER DATABASE regression SET bytea_output TO 'hex';
ALTER DATABASE regression SET timezone_abbreviations TO 'Default';
SQL

PORT=$SHARD
if [ "$MODE" != direct ]; then
  cat >"$DIR/pgshard.yaml" <<YAML
listen: { host: 127.0.0.1, port: $PROXY, workers: 2 }
tls: { mode: disable }
users: [{ name: postgres, password: secret, pool_mode: $MODE }]
shards:
  - { name: s0, primary: "postgres://postgres:secret@127.0.0.1:$SHARD/regression", pool_size: 40 }
unsharded: all
log_level: warn
two_phase_log: $DIR/2pc
YAML
  "$BIN" --config "$DIR/pgshard.yaml" >"$DIR/pgshard.log" 2>&1 &
  echo $! >"$DIR/pgshard.pid"
  for _ in $(seq 100); do
    PGPASSWORD=secret psql -X -qAt -h 127.0.0.1 -p "$PROXY" -U postgres regression -c 'select 1' >/dev/null 2>&1 && break
    sleep 0.1
  done
  PORT=$PROXY
fi

# The bootstrap superuser runs the suite, as `make installcheck` does (a non-bootstrap
# superuser fails the sequence test directly).
# pg_regress runs as postgres: the server reads its data files and writes into results/.
mkdir -p "$DIR/out" && chown postgres "$DIR/out"
start=$(date +%s)
set +e
runuser -u postgres -- env PGPASSWORD=secret "$PGBIN/../lib/pgxs/src/test/regress/pg_regress" \
  --use-existing --host=127.0.0.1 --port="$PORT" --user=postgres --dbname=regression \
  --bindir="$PGBIN" --inputdir="$SRC" --outputdir="$DIR/out" --dlpath="$SRC" \
  ${PGSHARD_REGRESS_TESTS:+--max-concurrent-tests=1} \
  ${PGSHARD_REGRESS_TESTS:-"--schedule=$SRC/parallel_schedule"} --max-connections=20 >"$DIR/out/summary.txt" 2>&1
set -e
elapsed=$(( $(date +%s) - start ))
[ -n "${PGSHARD_REGRESS_TESTS:-}" ] && { grep -E '\.\.\. ' "$DIR/out/summary.txt"; exit 0; }
set +e
/usr/bin/python3 "$HERE/verdict.py" "$MODE" "$DIR/out/summary.txt" "$HERE/expected_$MODE.txt" "$elapsed" \
  "$DIR/out/regression.diffs" >"$DIR/out/verdict.txt" 2>&1
verdict=$?
set -e
cat "$DIR/out/verdict.txt"
exit $verdict
