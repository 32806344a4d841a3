// SQL-level PREPARE / EXECUTE / DEALLOCATE and procedural code (DO blocks, CALL) on sharded
// tables: each EXECUTE runs where its statement with the arguments put in belongs, with the
// answers one PostgreSQL holding every row gives; what pgshard cannot place is refused with
// 0A000 and a hint, never run on one shard silently.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "harness.hpp"
#include "proxy/router/hashing.hpp"

using namespace harness;

namespace {

int shard_of(long long k) {
  return pgshard::router::hash_to_index(
      *pgshard::router::partition_hash(pgshard::config::KeyType::kInt8, std::to_string(k)), 3);
}

constexpr const char* kTable =
    "create table sqlprep_accounts (id bigint primary key, balance int not null)";

ProxyOptions accounts_map() {
  ProxyOptions o;
  o.sharded_tables = "  - { table: sqlprep_accounts, column: id, type: bigint }\n";
  o.extra_top = "reference_tables: [sqlprep_codes]\n";
  return o;
}

// The table, empty, on every shard and in database `sqlprep_single` of shard 0 (one
// PostgreSQL holding every row); a connection to the latter.
Conn fresh_tables() {
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "drop table if exists sqlprep_accounts");
    query(d.get(), kTable);
  }
  {
    auto admin = connect(cluster.direct(0));
    PQclear(PQexec(admin.get(), "create database sqlprep_single"));
  }
  auto single = connect(cluster.direct(0) + " dbname=sqlprep_single");
  query(single.get(), "drop table if exists sqlprep_accounts");
  query(single.get(), kTable);
  return single;
}

// What a statement answers, to compare: "ERROR <SQLSTATE>", or the command tag and rows.
std::string outcome(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  std::string out;
  const auto st = PQresultStatus(r);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    const char* code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    out = std::string("ERROR ") + (code ? code : "?");
  } else {
    out = PQcmdStatus(r);
    for (int row = 0; row < PQntuples(r); ++row) {
      out += " |";
      for (int i = 0; i < PQnfields(r); ++i)
        out += std::string(" ") + (PQgetisnull(r, row, i) ? "NULL" : PQgetvalue(r, row, i));
    }
  }
  PQclear(r);
  return out;
}

// Every row of the table read on the shards directly: "id:balance@shard", and whether each
// row is on its key's shard.
std::vector<std::string> rows_on_shards(bool& misplaced) {
  auto& cluster = Cluster::get();
  std::vector<std::string> rows;
  misplaced = false;
  for (int s = 0; s < cluster.size(); ++s) {
    auto d = connect(cluster.direct(s));
    for (const auto& r : query(d.get(), "select id, balance from sqlprep_accounts order by id")) {
      rows.push_back(r[0] + ":" + r[1] + "@" + std::to_string(s));
      if (shard_of(std::stoll(r[0])) != s) misplaced = true;
    }
  }
  return rows;
}

}  // namespace

TEST_CASE("SQL PREPARE/EXECUTE on a sharded table run on the key's shard, as one PostgreSQL",
          "[prepared][routing]") {
  // Before: PREPARE went to every shard (as DDL) or the first, and EXECUTE ran on the
  // client's shard or the first: `UPDATE 0` for a row on another shard, silently.
  auto single = fresh_tables();
  Proxy proxy(accounts_map());
  auto c = connect(proxy.conninfo());
  std::string values;
  for (int id = 1; id <= 12; ++id) values += (id > 1 ? ", (" : "(") + std::to_string(id) + ", 0)";
  const std::vector<std::string> script = {
      "insert into sqlprep_accounts (id, balance) values " + values,
      "prepare w as update sqlprep_accounts set balance = balance + 1 where id = $1",
      "execute w(1)", "execute w(2)", "execute w(3)", "execute w(4)", "execute w(5)",
      "execute w(6)", "execute w(7)", "execute w(8)", "execute w(9)", "execute w(10)",
      "execute w(11)", "execute w(12)", "execute w(3)",
      // The name is taken: PostgreSQL's 42P05.
      "prepare w as select 1",
      "prepare r(bigint) as select id, balance from sqlprep_accounts where id = $1", "execute r(3)",
      "execute r('7')", "execute r(- -8)",
      // Wrong number of arguments: 42601, as PostgreSQL says it.
      "execute r(1, 2)", "execute r",
      // Keyless: every shard, merged.
      "prepare a as select count(*), sum(balance) from sqlprep_accounts where balance > $1",
      "execute a(0)", "execute a(1)",
      "prepare i (bigint, int, bigint, int) as insert into sqlprep_accounts (id, balance) "
      "values ($1, $2), ($3, $4) returning id, balance",
      "execute i(100, 5, 101, 6)",
      "prepare d as delete from sqlprep_accounts where id = $1 returning balance", "execute d(101)",
      "execute d(101)",
      // In a transaction over two shards.
      "begin", "execute w(5)", "execute w(6)", "execute r(5)", "commit", "begin", "execute w(1)",
      "execute w(2)", "rollback", "deallocate w", "execute w(3)",
      "prepare w(bigint, int) as update sqlprep_accounts set balance = balance - $2 where id = $1",
      "execute w(3, 10)", "execute w(4, '20')",
      // A failed transaction: PREPARE and EXECUTE are ignored until its end.
      "begin", "select 1/0", "execute r(3)", "prepare z as select * from sqlprep_accounts",
      "rollback", "execute z", "deallocate all", "execute r(3)", "execute a(0)",
      "select id, balance from sqlprep_accounts order by id"};
  for (const auto& sql : script) {
    INFO(sql);
    CHECK(outcome(c.get(), sql) == outcome(single.get(), sql));
  }
  bool misplaced = true;
  const auto rows = rows_on_shards(misplaced);
  CHECK_FALSE(misplaced);
  CHECK(rows.size() == 13);
  // A statement pgshard keeps takes constants as arguments (a function would run once per
  // place of its parameter, and on every shard): 0A000 naming what to do.
  query(c.get(), "prepare r2 as select balance from sqlprep_accounts where id = $1");
  std::string why;
  CHECK(error_code(c.get(), "execute r2(floor(random() * 12)::int)", &why) == "0A000");
  CHECK_THAT(why, Catch::Contains("constants"));
  // EXPLAIN EXECUTE and a PREPARE among other statements: refused, not run elsewhere.
  CHECK(error_code(c.get(), "explain execute r2(3)") == "0A000");
  CHECK(error_code(c.get(),
                   "select 1; prepare r3 as select balance from sqlprep_accounts where id = $1") ==
        "0A000");
  // A reference table: an EXECUTEd write reaches every copy (before: one shard's only).
  for (int i = 0; i < Cluster::get().size(); ++i) {
    auto d = connect(Cluster::get().direct(i));
    query(d.get(), "drop table if exists sqlprep_codes");
    query(d.get(), "create table sqlprep_codes (code text primary key)");
  }
  query(c.get(), "prepare code as insert into sqlprep_codes values ($1)");
  query(c.get(), "execute code('FR')");
  query(c.get(), "execute code('DE')");
  for (int i = 0; i < Cluster::get().size(); ++i) {
    auto d = connect(Cluster::get().direct(i));
    CHECK(scalar(d.get(), "select string_agg(code, ',' order by code) from sqlprep_codes") ==
          "DE,FR");
  }
  // Statements on tables outside the map are still the server's (pinned, as before).
  query(c.get(), "prepare one as select 1 + $1::int");
  CHECK(scalar(c.get(), "execute one(41)") == "42");
  // DISCARD ALL forgets the session's statements too.
  query(c.get(), "discard all");
  CHECK(error_code(c.get(), "execute r2(3)") == "26000");
  {
    auto admin = connect(Cluster::get().direct(0));
    single.reset();
    PQclear(PQexec(admin.get(), "drop database sqlprep_single"));
  }
}

TEST_CASE("DO blocks and CALL touching sharded rows are refused unless a hint picks the shard",
          "[prepared][routing]") {
  // Before: a DO block or CALL ran on the client's server or the first shard, changing only
  // the rows that shard holds, silently.
  fresh_tables();
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(),
          "create or replace procedure sqlprep_bump(k bigint) language sql as "
          "$$ update sqlprep_accounts set balance = balance + 1 where id = k $$");
  }
  Proxy proxy(accounts_map());
  auto c = connect(proxy.conninfo());
  long long key = 1;
  while (shard_of(key) == 0) ++key;  // a row the first shard does not hold
  const std::string k = std::to_string(key);
  query(c.get(), "insert into sqlprep_accounts values (" + k + ", 0)");
  const std::string block =
      "do $$ begin update sqlprep_accounts set balance = balance + 10 where id = " + k + "; end $$";
  std::string why;
  CHECK(error_code(c.get(), block, &why) == "0A000");
  CHECK_THAT(why, Catch::Contains("sqlprep_accounts"));
  PGresult* r = PQexec(c.get(), block.c_str());
  const char* hint = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT);
  CHECK_THAT(std::string(hint ? hint : ""), Catch::Contains("pgshard: sharding_key="));
  PQclear(r);
  // Dynamic SQL: pgshard cannot see what it touches.
  CHECK(error_code(c.get(),
                   "do $$ begin execute 'update sqlprep_accounts set balance = 0'; "
                   "end $$") == "0A000");
  CHECK(error_code(c.get(), "call sqlprep_bump(" + k + ")") == "0A000");
  CHECK(scalar(c.get(), "select balance from sqlprep_accounts where id = " + k) == "0");
  // A hint places them: the block and the procedure change the key's row on its shard.
  query(c.get(), "/* pgshard: sharding_key=" + k + " */ " + block);
  query(c.get(), "set pgshard.sharding_key = '" + k + "'");
  query(c.get(), "call sqlprep_bump(" + k + ")");
  query(c.get(), "reset pgshard.sharding_key");
  auto d = connect(cluster.direct(shard_of(key)));
  CHECK(scalar(d.get(), "select balance from sqlprep_accounts where id = " + k) == "11");
  // A block touching no table of the map runs as before.
  query(c.get(), "do $$ begin perform 1; end $$");
}

TEST_CASE("EXECUTE of a kept read answers wherever it runs, replicas configured",
          "[prepared][replicas]") {
  // Before: PREPARE and EXECUTE could run on different servers (a replica, another shard)
  // and the statement was missing there, or found rows of the wrong shard.
  fresh_tables();
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  ProxyOptions o = accounts_map();
  o.shard_extra = {"replicas: [\"postgres://app:secret@127.0.0.1:" + std::to_string(replica) +
                   "/app\"]"};
  o.extra_top = "health: { interval: 100ms, timeout: 1s, ban_time: 1s }\n";
  Proxy proxy(o);
  auto c = connect(proxy.conninfo());
  for (int id = 1; id <= 12; ++id)
    query(c.get(), "insert into sqlprep_accounts values (" + std::to_string(id) + ", " +
                       std::to_string(id * 10) + ")");
  query(c.get(), "prepare r as select balance from sqlprep_accounts where id = $1");
  query(c.get(), "prepare w as update sqlprep_accounts set balance = balance + 1 where id = $1");
  for (int round = 0; round < 3; ++round)
    for (int id = 1; id <= 12; ++id) {
      INFO("id " << id << ", round " << round);
      CHECK(scalar(c.get(), "execute r(" + std::to_string(id) + ")") ==
            std::to_string(id * 10 + round));
      query(c.get(), "execute w(" + std::to_string(id) + ")");
    }
  // In a transaction: the primary, seeing the transaction's own write.
  query(c.get(), "begin");
  query(c.get(), "execute w(3)");
  CHECK(scalar(c.get(), "execute r(3)") == "34");
  query(c.get(), "rollback");
  CHECK(scalar(c.get(), "execute r(3)") == "33");
}
