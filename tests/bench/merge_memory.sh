#!/usr/bin/env bash
# ORDER BY over several shards: streams `SELECT * FROM big ORDER BY id` (ROWS rows, default
# 5,000,000, spread over 4 shards) through pgshard and from one PostgreSQL holding the same
# rows, and prints pgshard's peak RSS and both row rates. Then a GROUP BY with few groups,
# whose merge state must stay small whatever the row count.
#   ROWS (default 5000000)  WORKERS (pgshard, default 2)
source "$(dirname "$0")/common.sh" merge
ROWS=${ROWS:-5000000}; WORKERS=${WORKERS:-2}
P=(); for i in 0 1 2 3 4; do P+=("$(free_port)"); done
PROXY=$(free_port)
export PGPASSWORD=secret
gcc -O2 -o "$DIR/stream_rows" "$ROOT/tests/bench/stream_rows.c" -I"$(pg_config --includedir)" -lpq
"$ROOT/tests/harness/pgcluster.sh" start "$DIR/pg" "${P[@]}" >/dev/null
psql_to() { psql -qAt -h 127.0.0.1 -p "$1" -U app app -c "$2"; }
schema="create table big (id bigint primary key, user_id bigint not null, v text not null, amount numeric(12,2))"
# Shards 0-3 hold the rows split by id % 4 (ORDER BY id crosses every shard); P[4] holds all.
for i in 0 1 2 3; do
  psql_to "${P[$i]}" "$schema"
  psql_to "${P[$i]}" "insert into big select g, g % 1000, md5(g::text), (g % 100000) / 100.0 from generate_series(1, $ROWS) g where g % 4 = $i; analyze big"
done
psql_to "${P[4]}" "$schema"
psql_to "${P[4]}" "insert into big select g, g % 1000, md5(g::text), (g % 100000) / 100.0 from generate_series(1, $ROWS) g; analyze big"

cat >"$DIR/pgshard.yaml" <<YAML
listen: { host: 127.0.0.1, port: $PROXY, workers: $WORKERS }
users: [{ name: app, password: secret, pool_mode: transaction }]
shards:
$(for i in 0 1 2 3; do echo "  - { name: s$i, primary: \"postgres://app:secret@127.0.0.1:${P[$i]}/app\", pool_size: 4 }"; done)
sharded_tables: [{ table: big, column: user_id, type: bigint }]
unsharded: { shard: s0 }
log_level: warn
two_phase_log: $DIR/2pc
YAML
start_pgshard "$DIR/pgshard.yaml" "$PROXY"
rss() { awk '/VmHWM/ {print $2}' "/proc/$(cat "$DIR/pgshard.pid")/status"; }
base=$(rss)
sql="select * from big order by id"
read -r drows dsec drate < <("$DIR/stream_rows" "host=127.0.0.1 port=${P[4]} user=app dbname=app" "$sql")
read -r prows psec prate < <("$DIR/stream_rows" "host=127.0.0.1 port=$PROXY user=app dbname=app" "$sql")
peak=$(rss)
gsql="select user_id, count(*), sum(amount), avg(amount) from big group by user_id order by user_id"
read -r gdrows gdsec gdrate < <("$DIR/stream_rows" "host=127.0.0.1 port=${P[4]} user=app dbname=app" "$gsql")
read -r gprows gpsec gprate < <("$DIR/stream_rows" "host=127.0.0.1 port=$PROXY user=app dbname=app" "$gsql")
gpeak=$(rss)
printf '%-44s %12s %10s %12s\n' "query" "rows" "seconds" "rows/s"
printf '%-44s %12s %10s %12s\n' "ORDER BY id, one PostgreSQL" "$drows" "$dsec" "$drate"
printf '%-44s %12s %10s %12s\n' "ORDER BY id, pgshard over 4 shards" "$prows" "$psec" "$prate"
printf '%-44s %12s %10s %12s\n' "GROUP BY user_id (1000 groups), one PostgreSQL" "$gdrows" "$gdsec" "$gdrate"
printf '%-44s %12s %10s %12s\n' "GROUP BY user_id, pgshard over 4 shards" "$gprows" "$gpsec" "$gprate"
echo "pgshard peak RSS: ${base} KiB at start, ${peak} KiB after the ORDER BY, ${gpeak} KiB after the GROUP BY"
echo "throughput pgshard/direct: $(awk -v a="$prate" -v b="$drate" 'BEGIN {printf "%.2f", a / b}')"
[ "$prows" = "$drows" ] || { echo "row counts differ: $prows vs $drows"; exit 1; }
[ "$peak" -lt 65536 ] || { echo "peak RSS $peak KiB is over 64 MiB"; exit 1; }
