"""Alembic (Debian's python3-alembic, SQLAlchemy + psycopg2) runs a two-revision migration
through pgshard, in its default transaction, and back: the schema is the same on every
shard, the bookkeeping table alembic_version has one row as on one PostgreSQL, and the rows
the migration inserts get keys from the identity column and land on their keys' shards.
   PGSHARD_HOST/PGSHARD_PORT: pgshard; PGSHARD_SHARDS: the shards' ports, comma-separated"""
import os
import sys

import psycopg2
from alembic import command
from alembic.config import Config

HERE = os.path.dirname(os.path.abspath(__file__))
url = "postgresql+psycopg2://app:secret@%s:%s/app" % (os.environ["PGSHARD_HOST"],
                                                        os.environ["PGSHARD_PORT"])
shards = [int(p) for p in os.environ["PGSHARD_SHARDS"].split(",")]


def on_shard(port, sql):
    with psycopg2.connect(host="127.0.0.1", port=port, user="app", password="secret",
                          dbname="app") as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def through_pgshard(sql):
    with psycopg2.connect(host=os.environ["PGSHARD_HOST"], port=os.environ["PGSHARD_PORT"],
                          user="app", password="secret", dbname="app") as conn:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()


cfg = Config()
cfg.set_main_option("script_location", os.path.join(HERE, "alembic"))
cfg.set_main_option("sqlalchemy.url", url)

command.upgrade(cfg, "head")
assert through_pgshard("select version_num from alembic_version") == [("a2",)]
columns = "select column_name from information_schema.columns where table_name = 'tickets' order by 1"
for port in shards:
    assert on_shard(port, columns) == [("id",), ("status",), ("title",)], port
    assert on_shard(port, "select count(*) from pg_indexes where indexname = 'tickets_status'") == [(1,)]
# One bookkeeping row in all (the first shard holds tables outside the map's data).
assert sum(on_shard(p, "select count(*) from alembic_version")[0][0] for p in shards) == 1
rows = through_pgshard("select id, title, status from tickets order by title")
assert [r[1:] for r in rows] == [("first", "open"), ("second", "open"), ("third", "done")], rows
assert len({r[0] for r in rows}) == 3
# Each row on exactly one shard (which one is the integration tests' business).
held = [key for port in shards for (key,) in on_shard(port, "select id from tickets")]
assert sorted(held) == sorted(r[0] for r in rows), held

command.downgrade(cfg, "a1")
assert through_pgshard("select version_num from alembic_version") == [("a1",)]
for port in shards:
    assert on_shard(port, columns) == [("id",), ("title",)], port
command.downgrade(cfg, "base")
for port in shards:
    assert on_shard(port, "select count(*) from pg_class where relname = 'tickets'") == [(0,)]
print("alembic: upgrade, downgrade through pgshard: all checks passed")
