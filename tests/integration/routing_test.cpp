// Parser routing against real shards: rows land where the hash says, reads find them,
// statements without a key cover every shard or are refused.
#include <endian.h>
#include <sys/socket.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <set>
#include <thread>

#include "harness.hpp"
#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/router/hashing.hpp"

using namespace harness;
namespace wire = pgshard::protocol;

namespace {
int shard_of(long long k) {
  return pgshard::router::hash_to_index(
      *pgshard::router::partition_hash(pgshard::config::KeyType::kInt8, std::to_string(k)), 3);
}

void create_schema() {
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "drop table if exists orders; drop table if exists users");
    query(d.get(), "create table users (id bigint primary key, name text)");
    query(d.get(),
          "create table orders (id bigint, user_id bigint, amount numeric, primary key (user_id, "
          "id))");
  }
}
// The shards (read directly) holding a row of `table` whose id is `id`.
std::vector<int> shards_holding(const std::string& table, const std::string& id) {
  auto& cluster = Cluster::get();
  std::vector<int> found;
  for (int s = 0; s < cluster.size(); ++s) {
    auto d = connect(cluster.direct(s));
    if (scalar(d.get(), "select count(*) from " + table + " where id = " + id) != "0")
      found.push_back(s);
  }
  return found;
}
// `clients` clients, alternating between `a` and `b`, each insert `inserts` users named
// 'load' leaving the id to the database; the ids then read on the shards directly.
struct Loaded {
  int failures = 0;         // inserts that did not succeed
  long long total = 0;      // rows found
  std::set<long long> ids;  // distinct ids among them
  bool misplaced = false;   // a row on another shard than its id's
};
Loaded load_without_ids(const Proxy& a, const Proxy& b, int clients, int inserts) {
  Loaded out;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < clients; ++t)
    threads.emplace_back([&, t] {
      auto conn = connect(t % 2 ? b.conninfo() : a.conninfo());
      for (int i = 0; i < inserts; ++i) {
        PGresult* res = PQexec(conn.get(), "insert into users (name) values ('load')");
        if (PQresultStatus(res) != PGRES_COMMAND_OK) ++failures;
        PQclear(res);
      }
    });
  for (auto& th : threads) th.join();
  out.failures = failures;
  auto& cluster = Cluster::get();
  for (int s = 0; s < cluster.size(); ++s) {
    auto d = connect(cluster.direct(s));
    for (const auto& row : query(d.get(), "select id from users where name = 'load'")) {
      const long long id = std::stoll(row[0]);
      ++out.total;
      out.ids.insert(id);
      if (shard_of(id) != s) out.misplaced = true;
    }
  }
  return out;
}
}  // namespace

TEST_CASE("rows inserted through pgshard land only on the shard the hash names", "[routing]") {
  create_schema();
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  for (int id = 1; id <= 60; ++id) {
    query(c.get(), "insert into users (id, name) values (" + std::to_string(id) + ", 'user" +
                       std::to_string(id) + "')");
    const std::string v = std::to_string(id);
    const char* p[] = {v.c_str(), v.c_str()};
    PGresult* r =
        PQexecParams(c.get(), "insert into orders (id, user_id, amount) values ($1, $2, 10)", 2,
                     nullptr, p, nullptr, nullptr, 0);
    REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
  }
  auto& cluster = Cluster::get();
  int total = 0;
  for (int s = 0; s < cluster.size(); ++s) {
    auto d = connect(cluster.direct(s));
    for (const auto& row : query(d.get(), "select id from users")) {
      INFO("user " << row[0] << " found on s" << s);
      CHECK(shard_of(std::stoll(row[0])) == s);
      ++total;
    }
    for (const auto& row : query(d.get(), "select user_id from orders"))
      CHECK(shard_of(std::stoll(row[0])) == s);
  }
  CHECK(total == 60);

  // Reads by key, simple and extended, find each row.
  for (int id = 1; id <= 60; id += 7) {
    CHECK(scalar(c.get(), "select name from users where id = " + std::to_string(id)) ==
          "user" + std::to_string(id));
    const std::string v = std::to_string(id);
    const char* p[] = {v.c_str()};
    PGresult* r = PQexecParams(
        c.get(),
        "select u.name, o.amount from users u join orders o on o.user_id = u.id where u.id = $1", 1,
        nullptr, p, nullptr, nullptr, 0);
    REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
    REQUIRE(PQntuples(r) == 1);
    CHECK(std::string(PQgetvalue(r, 0, 0)) == "user" + v);
    PQclear(r);
  }

  // Without a key: every shard, rows concatenated and the tag summed.
  CHECK(query(c.get(), "select id from users where name like 'user%'").size() == 60);
  PGresult* r = PQexec(c.get(), "update orders set amount = amount + 1 where amount = 10");
  REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
  CHECK(std::string(PQcmdTuples(r)) == "60");
  PQclear(r);

  // Merged across shards as one PostgreSQL would answer.
  CHECK(scalar(c.get(), "select count(*) from users") == "60");
  auto first = query(c.get(), "select id from users order by id limit 3");
  REQUIRE(first.size() == 3);
  CHECK(first[0][0] == "1");
  CHECK(first[2][0] == "3");
  // What cannot be merged is refused, never answered wrongly.
  std::string msg;
  // A join that would need rows from two shards is refused, not half-answered.
  CHECK(error_code(c.get(), "select * from users u join orders o on o.id = u.id", &msg) == "0A000");
  CHECK_THAT(msg, Catch::Contains("joining sharded tables"));
  // A writing WITH read by an aggregate is refused as what it is (a write), not as a lock.
  CHECK(error_code(c.get(),
                   "with w as (update users set name = name where id = 1 returning id) "
                   "select count(*) from users",
                   &msg) == "0A000");
  CHECK_THAT(msg, Catch::Contains("writes"));
  CHECK(error_code(c.get(), "select * from users order by id limit 1 for update", &msg) == "0A000");
  CHECK_THAT(msg, Catch::Contains("locks rows"));
  // An INSERT inside WITH would have inserted its row on every shard (attacker, CRITICAL).
  CHECK(error_code(c.get(),
                   "with x as (insert into users (id, name) values (77778, 'w') returning *) "
                   "select * from x",
                   &msg) == "0A000");
  CHECK_THAT(msg, Catch::Contains("inside WITH"));
  for (int s = 0; s < 3; ++s) {
    auto d = connect(Cluster::get().direct(s));
    CHECK(scalar(d.get(), "select count(*) from users where id = 77778") == "0");
  }
  // A keyed UPDATE inside WITH runs on its key's shard only (it ran on every shard).
  query(c.get(), "insert into users (id, name) values (77779, 'a')");
  auto updated = query(c.get(),
                       "with u as (update users set name = 'b' where id = 77779 returning id) "
                       "select id from u");
  CHECK(updated.size() == 1);
  CHECK(query(c.get(),
              "explain (route) with u as (update users set name = 'b' where id = 77779 "
              "returning id) select id from u")
            .size() == 1);
  // FOR UPDATE OF the keyed table or its alias: one shard, as without OF (it was refused).
  CHECK(query(c.get(), "select name from users where id = 77779 for update of users").size() == 1);
  CHECK(query(c.get(), "select u.name from users u where u.id = 77779 for share of u nowait")
            .size() == 1);
  query(c.get(), "delete from users where id = 77779");
  // Without a column list the key's place comes from the catalog.
  query(c.get(), "insert into users values (1000, 'x')");
  {
    auto d = connect(Cluster::get().direct(shard_of(1000)));
    CHECK(scalar(d.get(), "select name from users where id = 1000") == "x");
  }
  query(c.get(), "delete from users where id = 1000");

  // A multi-row INSERT is split per shard; RETURNING rows and the tag add up.
  PGresult* ins = PQexec(c.get(),
                         "insert into users (id, name) values (101, 'a'), (102, 'b'), (103, 'c'), "
                         "(104, 'd'), (105, 'e') returning id");
  REQUIRE(PQresultStatus(ins) == PGRES_TUPLES_OK);
  CHECK(PQntuples(ins) == 5);
  CHECK(std::string(PQcmdStatus(ins)) == "INSERT 0 5");
  PQclear(ins);
  for (int id = 101; id <= 105; ++id) {
    auto d = connect(Cluster::get().direct(shard_of(id)));
    CHECK(scalar(d.get(), "select count(*) from users where id = " + std::to_string(id)) == "1");
  }
  // One shard failing (duplicate key) undoes the rows on every shard.
  CHECK(
      error_code(
          c.get(),
          "insert into users (id, name) values (201, 'x'), (202, 'y'), (203, 'z'), (101, 'dup')") ==
      "23505");
  CHECK(query(c.get(), "select id from users where id in (201, 202, 203)").empty());
  CHECK(error_code(c.get(), "update users set id = id + 1 where id = 5") == "0A000");
  CHECK(scalar(c.get(), "select count(*) from users where id = 5") == "1");
}

TEST_CASE("a transaction follows its first keyed statement's shard", "[routing]") {
  create_schema();
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  // BEGIN is held until a statement picks the shard.
  query(c.get(), "BEGIN");
  CHECK(PQtransactionStatus(c.get()) == PQTRANS_INTRANS);
  query(c.get(), "insert into users (id, name) values (7, 'seven')");
  query(c.get(), "insert into orders (id, user_id, amount) values (1, 7, 3)");
  query(c.get(), "COMMIT");
  CHECK(PQtransactionStatus(c.get()) == PQTRANS_IDLE);
  auto d = connect(Cluster::get().direct(shard_of(7)));
  CHECK(scalar(d.get(), "select count(*) from orders where user_id = 7") == "1");

  // A rolled-back transaction leaves nothing behind.
  query(c.get(), "BEGIN");
  query(c.get(), "insert into users (id, name) values (8, 'eight')");
  query(c.get(), "ROLLBACK");
  CHECK(scalar(c.get(), "select count(*) from users where id = 8") == "0");

  // An empty transaction never reaches a server.
  query(c.get(), "BEGIN");
  query(c.get(), "COMMIT");

  // A second shard joins the transaction with the same isolation level (two-phase commit).
  long long other = 8;
  while (shard_of(other) == shard_of(7)) ++other;
  query(c.get(), "BEGIN ISOLATION LEVEL REPEATABLE READ");
  CHECK(scalar(c.get(), "select name from users where id = 7") == "seven");
  CHECK(scalar(c.get(), "show transaction_isolation") == "repeatable read");
  CHECK(query(c.get(), "select * from users where id = " + std::to_string(other)).empty());
  CHECK(scalar(c.get(), "/* pgshard: shard=" +
                            std::string(shard_of(other) == 0   ? "s0"
                                        : shard_of(other) == 1 ? "s1"
                                                               : "s2") +
                            " */ show transaction_isolation") == "repeatable read");
  CHECK(PQtransactionStatus(c.get()) == PQTRANS_INTRANS);
  query(c.get(), "COMMIT");

  // SET LOCAL pgshard.sharding_key places a transaction explicitly.
  query(c.get(), "BEGIN");
  query(c.get(), "SET LOCAL pgshard.sharding_key = '" + std::to_string(other) + "'");
  CHECK(scalar(c.get(), "select current_setting('port')") ==
        std::to_string(Cluster::get().port(shard_of(other))));
  query(c.get(), "COMMIT");
}

TEST_CASE("pgshard's hash equals PARTITION BY HASH for 10,000 keys of each type", "[routing]") {
  using pgshard::config::KeyType;
  auto d = connect(Cluster::get().direct(0));
  struct TypeCase {
    const char* sql_type;
    KeyType type;
    const char* generator;  // 10,000 values of the type
  };
  const TypeCase cases[] = {
      {"smallint", KeyType::kInt2, "select (g - 5000)::smallint from generate_series(1, 10000) g"},
      {"integer", KeyType::kInt4,
       "select (g * 7919 - 40000000)::int from generate_series(1, 10000) g"},
      {"bigint", KeyType::kInt8,
       "select (g::bigint * 922337203685477 - 4611686018427387904) from generate_series(1, 10000) "
       "g"},
      {"text", KeyType::kText,
       "select md5(g::text) || repeat('é', g % 5) from generate_series(1, 10000) g"},
      {"varchar", KeyType::kVarchar,
       "select ('tenant-' || g)::varchar from generate_series(1, 10000) g"},
      {"uuid", KeyType::kUuid, "select md5(g::text)::uuid from generate_series(1, 10000) g"},
  };
  for (const auto& c : cases) {
    INFO("type " << c.sql_type);
    query(d.get(), "drop table if exists hp");
    query(d.get(), std::string("create table hp (k ") + c.sql_type + ") partition by hash (k)");
    for (int i = 0; i < 3; ++i)
      query(d.get(), "create table hp_" + std::to_string(i) +
                         " partition of hp for values with (modulus 3, remainder " +
                         std::to_string(i) + ")");
    query(d.get(), std::string("insert into hp ") + c.generator);
    auto rows = query(d.get(), "select k::text, right(tableoid::regclass::text, 1) from hp");
    REQUIRE(rows.size() == 10000);
    int mismatches = 0;
    for (const auto& row : rows) {
      auto h = pgshard::router::partition_hash(c.type, row[0]);
      if (!h || pgshard::router::hash_to_index(*h, 3) != row[1][0] - '0') ++mismatches;
    }
    CHECK(mismatches == 0);
  }
  query(d.get(), "drop table hp");
}

TEST_CASE("EXPLAIN (ROUTE) answers from pgshard, simple and extended", "[routing]") {
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  auto rows = query(c.get(), "explain (route) select * from users where id = 42");
  REQUIRE(rows.size() == 1);
  CHECK(rows[0][0] == "s" + std::to_string(shard_of(42)));
  CHECK_THAT(rows[0][1], Catch::Contains("id=42"));
  rows = query(c.get(), "explain (route) select * from users order by id");
  REQUIRE(rows.size() == 4);
  CHECK_THAT(rows[3][1], Catch::Contains("ORDER BY"));
  rows = query(c.get(), "explain (route) update users set id = 5 where id = 6");
  REQUIRE(!rows.empty());
  const char* p[] = {"42"};
  PGresult* r = PQexecParams(c.get(), "explain (route) select * from orders where user_id = $1", 1,
                             nullptr, p, nullptr, nullptr, 0);
  REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
  REQUIRE(PQntuples(r) == 1);
  CHECK(std::string(PQgetvalue(r, 0, 0)) == "s" + std::to_string(shard_of(42)));
  CHECK(std::string(PQfname(r, 1)) == "route");
  PQclear(r);
  // Prepared, described, then executed.
  r = PQprepare(c.get(), "", "explain (route) select * from users where id = $1", 1, nullptr);
  REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  r = PQdescribePrepared(c.get(), "");
  REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
  CHECK(PQnfields(r) == 2);
  PQclear(r);
  CHECK(scalar(c.get(), "select 'still in step'") == "still in step");
}

TEST_CASE("COPY FROM STDIN splits rows by key; COPY TO gathers every shard", "[routing]") {
  create_schema();
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  auto copy_in = [&](const std::string& sql, const std::string& data, std::string* tag) {
    PGresult* r = PQexec(c.get(), sql.c_str());
    REQUIRE(PQresultStatus(r) == PGRES_COPY_IN);
    PQclear(r);
    // Feed in odd-sized pieces so rows straddle CopyData messages.
    for (std::size_t off = 0; off < data.size(); off += 777) {
      auto piece = data.substr(off, 777);
      REQUIRE(PQputCopyData(c.get(), piece.data(), static_cast<int>(piece.size())) == 1);
    }
    REQUIRE(PQputCopyEnd(c.get(), nullptr) == 1);
    r = PQgetResult(c.get());
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    *tag = ok ? PQcmdStatus(r) : PQresultErrorMessage(r);
    PQclear(r);
    while ((r = PQgetResult(c.get()))) PQclear(r);
    return ok;
  };
  std::string text, csv, tag;
  for (int id = 1; id <= 3000; ++id)
    text += std::to_string(id) + "\tname\\t" + std::to_string(id) + "\n";
  REQUIRE(copy_in("copy users from stdin", text, &tag));
  CHECK(tag == "COPY 3000");
  csv = "user_id,id,amount\n";
  for (int id = 1; id <= 3000; ++id)
    csv += std::to_string(id) + ",1,\"1" + (id % 2 ? "0" : "1") + "\"\n";
  REQUIRE(copy_in("copy orders (user_id, id, amount) from stdin with (format csv, header true)",
                  csv, &tag));
  CHECK(tag == "COPY 3000");
  auto& cluster = Cluster::get();
  int users = 0;
  for (int s = 0; s < cluster.size(); ++s) {
    auto d = connect(cluster.direct(s));
    for (const auto& row : query(d.get(), "select id from users")) {
      CHECK(shard_of(std::stoll(row[0])) == s);
      ++users;
    }
    for (const auto& row : query(d.get(), "select user_id from orders"))
      CHECK(shard_of(std::stoll(row[0])) == s);
  }
  CHECK(users == 3000);
  CHECK(scalar(c.get(), "select name from users where id = 77") == "name\t77");

  // A bad row anywhere rolls the whole COPY back on every shard.
  std::string bad = "5001\tok\n5002\tok\nnot-a-number\tx\n5003\tok\n";
  CHECK_FALSE(copy_in("copy users (id, name) from stdin", bad, &tag));
  CHECK_THAT(tag, Catch::Contains("invalid input syntax"));
  CHECK(query(c.get(), "select id from users where id > 5000").empty());

  // COPY TO from every shard arrives as one stream.
  PGresult* r = PQexec(c.get(), "copy users to stdout");
  REQUIRE(PQresultStatus(r) == PGRES_COPY_OUT);
  PQclear(r);
  int rows = 0;
  char* buf = nullptr;
  while (PQgetCopyData(c.get(), &buf, 0) > 0) {
    ++rows;
    PQfreemem(buf);
  }
  r = PQgetResult(c.get());
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  CHECK(std::string(PQcmdStatus(r)) == "COPY 3000");
  PQclear(r);
  while ((r = PQgetResult(c.get()))) PQclear(r);
  CHECK(rows == 3000);
}

TEST_CASE("directory: a lookup table moves a hot key to its own shard", "[routing]") {
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "drop table if exists tenants");
    query(d.get(), "create table tenants (id bigint primary key, name text)");
  }
  auto dir = connect(cluster.direct(0));
  query(dir.get(), "drop table if exists pgshard_directory");
  query(dir.get(), "create table pgshard_directory (key text primary key, shard text not null)");
  const int hot_home = (shard_of(42) + 1) % 3;
  query(dir.get(),
        "insert into pgshard_directory values ('42', 's" + std::to_string(hot_home) + "')");
  ProxyOptions o;
  o.sharded_tables =
      "  - { table: tenants, column: id, type: bigint, function: directory, directory: { url: \"" +
      std::string("postgres://app:secret@127.0.0.1:") + std::to_string(cluster.port(0)) +
      "/app\", ttl: 300ms } }\n";
  Proxy proxy(o);
  auto c = connect(proxy.conninfo());
  query(c.get(), "insert into tenants (id, name) values (42, 'hot')");
  query(c.get(), "insert into tenants (id, name) values (7, 'normal')");
  {
    auto d = connect(cluster.direct(hot_home));
    CHECK(scalar(d.get(), "select name from tenants where id = 42") == "hot");
    auto e = connect(cluster.direct(shard_of(7)));
    CHECK(scalar(e.get(), "select name from tenants where id = 7") == "normal");
  }
  CHECK(scalar(c.get(), "select name from tenants where id = 42") == "hot");
  const char* p[] = {"42"};
  PGresult* r = PQexecParams(c.get(), "select name from tenants where id = $1", 1, nullptr, p,
                             nullptr, nullptr, 0);
  REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
  REQUIRE(PQntuples(r) == 1);
  PQclear(r);
  // Moving the key in the directory takes effect once the cached entry expires.
  const int next_home = (hot_home + 1) % 3;
  query(dir.get(), "update pgshard_directory set shard = 's" + std::to_string(next_home) +
                       "' where key = '42'");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto rows = query(c.get(), "explain (route) select * from tenants where id = 42");
  REQUIRE(rows.size() == 1);
  CHECK(rows[0][0] == "s" + std::to_string(next_home));
  // A directory naming a shard that does not exist is a clear error.
  query(dir.get(), "insert into pgshard_directory values ('9', 'nowhere')");
  std::string msg;
  CHECK(error_code(c.get(), "select * from tenants where id = 9", &msg) == "08001");
  CHECK_THAT(msg, Catch::Contains("unknown shard"));
  query(dir.get(), "drop table pgshard_directory");
}

TEST_CASE("schema changes reach every shard whatever unsharded says", "[routing]") {
  // Before: CREATE TABLE of a table outside the map was refused under `unsharded: reject`,
  // and CREATE TYPE / CREATE SCHEMA / DROP TABLE of such a table went to one shard only,
  // leaving the shards' schemas different.
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(),
          "drop table if exists items; drop type if exists mood; drop schema if exists app_meta "
          "cascade; drop function if exists add_one(int)");
  }
  for (const std::string policy : {"reject", "{ shard: s0 }"}) {
    INFO("unsharded: " << policy);
    ProxyOptions o;
    o.unsharded = policy;
    Proxy proxy(o);
    auto c = connect(proxy.conninfo());
    query(c.get(), "create type mood as enum ('ok', 'sad')");
    query(c.get(), "create schema app_meta");
    query(c.get(), "create table items (id serial primary key, name text, m mood)");
    query(c.get(), "create index items_name on items (name)");
    query(c.get(), "alter table items add column price numeric");
    query(c.get(), "create function add_one(int) returns int language sql as 'select $1 + 1'");
    // Extended protocol too (ORMs' migrators send their DDL that way).
    PGresult* r = PQexecParams(c.get(), "comment on table items is 'things'", 0, nullptr, nullptr,
                               nullptr, nullptr, 0);
    CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
    for (int i = 0; i < cluster.size(); ++i) {
      INFO("shard s" << i);
      auto d = connect(cluster.direct(i));
      CHECK(scalar(d.get(), "select count(*) from pg_type where typname = 'mood'") == "1");
      CHECK(scalar(d.get(), "select count(*) from pg_namespace where nspname = 'app_meta'") == "1");
      CHECK(scalar(d.get(),
                   "select count(*) from information_schema.columns where table_name = "
                   "'items' and column_name in ('id', 'name', 'm', 'price')") == "4");
      CHECK(scalar(d.get(), "select count(*) from pg_indexes where indexname = 'items_name'") ==
            "1");
      CHECK(scalar(d.get(), "select add_one(41)") == "42");
      CHECK(scalar(d.get(), "select obj_description('items'::regclass)") == "things");
    }
    // Data statements still follow `unsharded`.
    if (policy == "reject") {
      CHECK(error_code(c.get(), "insert into items (name) values ('x')") == "0A000");
    } else {
      query(c.get(), "insert into items (name) values ('x')");
      CHECK(scalar(c.get(), "select count(*) from items") == "1");
    }
    // A temporary table stays in the client's session (one server), never broadcast.
    // Changes of it by its plain name (index, DROP) go to that server too.
    if (policy != "reject") {
      auto holding = [&] {
        int n = 0;
        for (int i = 0; i < cluster.size(); ++i) {
          auto d = connect(cluster.direct(i));
          n += scalar(d.get(), "select count(*) from pg_class where relname = 'scratch'") == "1";
        }
        return n;
      };
      query(c.get(), "create temp table scratch (v int)");
      query(c.get(), "insert into scratch values (1)");
      query(c.get(), "create index scratch_v on scratch (v)");
      CHECK(scalar(c.get(), "select count(*) from scratch") == "1");
      CHECK(holding() == 1);
      query(c.get(), "drop table scratch");
      CHECK(holding() == 0);
    }
    query(c.get(),
          "drop table items; drop type mood; drop schema app_meta; drop function add_one(int)");
    for (int i = 0; i < cluster.size(); ++i) {
      INFO("shard s" << i);
      auto d = connect(cluster.direct(i));
      CHECK(scalar(d.get(), "select count(*) from pg_class where relname = 'items'") == "0");
      CHECK(scalar(d.get(), "select count(*) from pg_type where typname = 'mood'") == "0");
      CHECK(scalar(d.get(), "select count(*) from pg_namespace where nspname = 'app_meta'") == "0");
    }
  }
}

TEST_CASE("INSERT without a column list routes by the key's place in the table", "[routing]") {
  // Before: refused ("needs a column list").
  create_schema();
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  auto on_shard = [&](const std::string& table, const std::string& where) {
    std::vector<int> found;
    for (int s = 0; s < Cluster::get().size(); ++s) {
      auto d = connect(Cluster::get().direct(s));
      if (scalar(d.get(), "select count(*) from " + table + " where " + where) != "0")
        found.push_back(s);
    }
    return found;
  };
  // orders (id, user_id, amount): the key is the second column.
  query(c.get(), "insert into orders values (1, 42, 9.5)");
  CHECK(on_shard("orders", "user_id = 42") == std::vector<int>{shard_of(42)});
  auto back = query(c.get(), "insert into orders values (2, 43, 1) returning user_id, amount");
  REQUIRE(back.size() == 1);
  CHECK(back[0][0] == "43");
  CHECK(on_shard("orders", "user_id = 43") == std::vector<int>{shard_of(43)});
  // Extended protocol, several rows over several shards (split per shard).
  const char* p[] = {"44"};
  PGresult* r = PQexecParams(c.get(), "insert into orders values (3, $1, 2)", 1, nullptr, p,
                             nullptr, nullptr, 0);
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  CHECK(on_shard("orders", "user_id = 44") == std::vector<int>{shard_of(44)});
  r = PQexec(c.get(), "insert into orders values (10, 1, 1), (11, 2, 1), (12, 3, 1), (13, 4, 1)");
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  CHECK(std::string(PQcmdStatus(r)) == "INSERT 0 4");
  PQclear(r);
  for (int k = 1; k <= 4; ++k)
    CHECK(on_shard("orders", "user_id = " + std::to_string(k)) == std::vector<int>{shard_of(k)});
  // A row that stops before the key: refused with the reason, nothing written.
  std::string msg;
  CHECK(error_code(c.get(), "insert into orders values (5)", &msg) == "0A000");
  CHECK_THAT(msg, Catch::Contains("must set its shard key \"user_id\""));
  // The column order changes through pgshard: the key's new place is read again.
  query(c.get(), "alter table orders drop column id");
  query(c.get(), "insert into orders values (45, 3)");
  CHECK(on_shard("orders", "user_id = 45") == std::vector<int>{shard_of(45)});
  CHECK(scalar(c.get(), "select count(*) from orders") == "8");
}

TEST_CASE("INSERT leaving a serial key to the database gets keys unique across shards",
          "[routing]") {
  // Before: refused ("must set its shard key").
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "drop table if exists orders; drop table if exists users");
    query(d.get(), "create table users (id bigserial primary key, name text)");
    query(d.get(), "create table orders (id bigint, user_id bigint, amount numeric)");
  }
  auto where_is = [](const std::string& id) { return shards_holding("users", id); };
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  const std::string first = scalar(c.get(), "insert into users (name) values ('a') returning id");
  CHECK(where_is(first) == std::vector<int>{shard_of(std::stoll(first))});
  // Several rows: RETURNING in VALUES order, each row on its key's shard.
  auto rows =
      query(c.get(), "insert into users (name) values ('b'), ('c'), ('d') returning id, name");
  REQUIRE(rows.size() == 3);
  CHECK(rows[0][1] == "b");
  CHECK(rows[2][1] == "d");
  for (const auto& r : rows) CHECK(where_is(r[0]) == std::vector<int>{shard_of(std::stoll(r[0]))});
  // DEFAULT in the key's place, with and without a column list.
  const std::string e =
      scalar(c.get(), "insert into users (id, name) values (default, 'e') returning id");
  const std::string f = scalar(c.get(), "insert into users values (default, 'f') returning id");
  CHECK(where_is(e) == std::vector<int>{shard_of(std::stoll(e))});
  CHECK(where_is(f) == std::vector<int>{shard_of(std::stoll(f))});
  // Extended protocol, the unnamed statement (drivers' default).
  const char* p[] = {"g"};
  PGresult* r = PQexecParams(c.get(), "insert into users (name) values ($1) returning id", 1,
                             nullptr, p, nullptr, nullptr, 0);
  REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
  const std::string g = PQgetvalue(r, 0, 0);
  PQclear(r);
  CHECK(where_is(g) == std::vector<int>{shard_of(std::stoll(g))});
  CHECK(scalar(c.get(), "select name from users where id = " + g) == "g");
  // A named prepared statement (psycopg 3 and JDBC switch to one after five runs): each run
  // gets its own key; before, refused with 0A000.
  r = PQprepare(c.get(), "ins", "insert into users (name) values ($1) returning id", 1, nullptr);
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  std::set<std::string> named;
  for (int i = 0; i < 3; ++i) {
    r = PQexecPrepared(c.get(), "ins", 1, p, nullptr, nullptr, 0);
    REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
    named.insert(PQgetvalue(r, 0, 0));
    PQclear(r);
  }
  CHECK(named.size() == 3);
  for (const auto& id : named) CHECK(where_is(id) == std::vector<int>{shard_of(std::stoll(id))});
  // Several rows of a named statement, split across shards; and its text is unchanged.
  r = PQprepare(c.get(), "ins3", "insert into users (name) values ($1), ($1), ($1)", 1, nullptr);
  PQclear(r);
  r = PQexecPrepared(c.get(), "ins3", 1, p, nullptr, nullptr, 0);
  CHECK(std::string(PQcmdStatus(r)) == "INSERT 0 3");
  PQclear(r);
  CHECK(scalar(c.get(), "select statement from pg_prepared_statements where name = 'ins3'") ==
        "insert into users (name) values ($1), ($1), ($1)");
  CHECK(scalar(c.get(), "select count(*) from users where name = 'g'") == "7");
  {
    // On the wire: one ParseComplete per client Parse, none for pgshard's own; the client's
    // unnamed statement, bound again without a Parse, still gets a new key each time.
    RawClient raw(proxy.port());
    REQUIRE(raw.login());
    std::string out;
    wire::Parse{"n1", "insert into users (name) values ($1) returning id", {}}.write(out);
    wire::Bind{"", "n1", {}, {std::string("raw")}, {}}.write(out);
    wire::Execute{"", 0}.write(out);
    wire::write_empty(out, wire::msg::kSync);
    raw.send(out);
    std::vector<std::pair<char, std::string>> all;
    CHECK(raw.until_ready(&all) == "1 2 D C Z");
    for (int i = 0; i < 2; ++i) {
      out.clear();
      wire::Bind{"", "n1", {}, {std::string("raw")}, {}}.write(out);
      wire::Describe{'P', ""}.write(out);
      wire::Execute{"", 0}.write(out);
      wire::write_empty(out, wire::msg::kSync);
      raw.send(out);
      CHECK(raw.until_ready() == "2 T D C Z");
    }
    out.clear();
    wire::Parse{"", "insert into users (name) values ($1)", {}}.write(out);
    wire::Bind{"", "", {}, {std::string("raw")}, {}}.write(out);
    wire::Execute{"", 0}.write(out);
    wire::write_empty(out, wire::msg::kSync);
    wire::Bind{"", "", {}, {std::string("raw")}, {}}.write(out);
    wire::Execute{"", 0}.write(out);
    wire::write_empty(out, wire::msg::kSync);
    raw.send(out);
    CHECK(raw.until_ready() == "1 2 C Z");
    CHECK(raw.until_ready() == "2 C Z");
    CHECK(scalar(c.get(), "select count(distinct id) from users where name = 'raw'") == "5");
    {
      // Session pooling too (no statement renaming there): pgshard's Parse stays hidden.
      ProxyOptions session_pooled;
      session_pooled.pool_mode = "session";
      Proxy sp(session_pooled);
      RawClient own(sp.port());
      REQUIRE(own.login());
      std::string msgs;
      wire::Parse{"n2", "insert into users (name) values ($1) returning id", {}}.write(msgs);
      wire::Bind{"", "n2", {}, {std::string("sess")}, {}}.write(msgs);
      wire::Execute{"", 0}.write(msgs);
      wire::write_empty(msgs, wire::msg::kSync);
      own.send(msgs);
      CHECK(own.until_ready() == "1 2 D C Z");
      msgs.clear();
      wire::Bind{"", "n2", {}, {std::string("sess")}, {}}.write(msgs);
      wire::Execute{"", 0}.write(msgs);
      wire::write_empty(msgs, wire::msg::kSync);
      own.send(msgs);
      CHECK(own.until_ready() == "2 D C Z");
      CHECK(scalar(c.get(), "select count(distinct id) from users where name = 'sess'") == "2");
    }
    // INSERT ... SELECT leaving the key to the sequence: two rewrites (the rows, then their
    // keys) and still one ParseComplete, the client's.
    out.clear();
    wire::Parse{"",
                "insert into users (name) select 'sel' || g from generate_series(1, 4) g "
                "returning id",
                {}}
        .write(out);
    wire::Bind{"", "", {}, {}, {}}.write(out);
    wire::Describe{'P', ""}.write(out);
    wire::Execute{"", 0}.write(out);
    wire::write_empty(out, wire::msg::kSync);
    raw.send(out);
    std::vector<std::pair<char, std::string>> sel;
    CHECK(raw.until_ready(&sel) == "1 2 T D D D D C Z");
    CHECK(scalar(c.get(), "select count(distinct id) from users where name like 'sel%'") == "4");
    for (const auto& row : query(c.get(), "select id from users where name like 'sel%'"))
      CHECK(where_is(row[0]) == std::vector<int>{shard_of(std::stoll(row[0]))});
  }
  // A key without a sequence default cannot be generated: refused, not guessed.
  std::string msg;
  CHECK(error_code(c.get(), "insert into orders (id, amount) values (1, 2)", &msg) == "0A000");
  CHECK_THAT(msg, Catch::Contains("no sequence, identity or pgshard.unique_id() default"));
  CHECK(scalar(c.get(), "select count(*) from users") == "24");
  // nextval through pgshard draws from the same sequence the keys came from.
  const long long next =
      std::stoll(scalar(c.get(), "select nextval(pg_get_serial_sequence('users', 'id'))"));
  CHECK(next > std::stoll(g));

  // 8 clients x 5,000 inserts without ids through two pgshard instances: no duplicate id,
  // every row on the shard its id maps to.
  Proxy second;
  const int kClients = 8, kInserts = 5000;
  const Loaded load = load_without_ids(proxy, second, kClients, kInserts);
  CHECK(load.failures == 0);
  CHECK_FALSE(load.misplaced);
  const long long total = load.total;
  const auto& ids = load.ids;
  CHECK(total == kClients * kInserts);
  CHECK(ids.size() == static_cast<std::size_t>(total));
}

TEST_CASE("pgshard.unique_id(): ids unique across instances, as a key default and in statements",
          "[routing]") {
  // Before: "function pgshard.unique_id() does not exist".
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "drop table if exists orders; drop table if exists users");
    query(d.get(), "drop schema if exists pgshard cascade");
    query(d.get(), "create table orders (id bigint, user_id bigint, amount numeric)");
  }
  auto where_is = [](const std::string& id) { return shards_holding("users", id); };
  auto node_of = [](const std::string& id, bool js) {
    return static_cast<int>((std::stoll(id) >> (js ? 6 : 12)) & (js ? 63 : 1023));
  };
  ProxyOptions one, two;
  one.extra_top = "node_id: 1\n";
  two.extra_top = "node_id: 2\n";
  Proxy proxy(one), second(two);
  auto c = connect(proxy.conninfo());
  // A schema change naming it as the key's default: declared on every shard first.
  query(c.get(),
        "create table users (id bigint primary key default pgshard.unique_id(), name text)");
  for (int s = 0; s < cluster.size(); ++s) {
    auto d = connect(cluster.direct(s));
    CHECK(scalar(d.get(), "select to_regprocedure('pgshard.unique_id_53()') is not null") == "t");
    // Run on a shard directly it refuses (an id from there could repeat one of pgshard's).
    CHECK(error_code(d.get(), "select pgshard.unique_id()") == "0A000");
  }
  // SELECT through pgshard: bigint, growing, this instance's node in it; the 53-bit variant
  // below 2^53.
  PGresult* r = PQexec(c.get(),
                       "select pgshard.unique_id(), pgshard.unique_id(), "
                       "pgshard.unique_id_53() as js");
  REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
  CHECK(PQftype(r, 0) == 20);
  CHECK(std::string(PQfname(r, 2)) == "js");
  const std::string a = PQgetvalue(r, 0, 0), b = PQgetvalue(r, 0, 1), js = PQgetvalue(r, 0, 2);
  PQclear(r);
  CHECK(std::stoll(a) < std::stoll(b));
  CHECK(node_of(a, false) == 1);
  CHECK(std::stoll(js) < (1LL << 53));
  CHECK(node_of(js, true) == 1);
  // An INSERT leaving the key to that default: pgshard's id, the row on its shard.
  const std::string k1 = scalar(c.get(), "insert into users (name) values ('a') returning id");
  CHECK(node_of(k1, false) == 1);
  CHECK(where_is(k1) == std::vector<int>{shard_of(std::stoll(k1))});
  // Called in VALUES: simple Query, and a named prepared statement run three times.
  const std::string k2 = scalar(
      c.get(), "insert into users (id, name) values (pgshard.unique_id(), 'b') returning id");
  CHECK(where_is(k2) == std::vector<int>{shard_of(std::stoll(k2))});
  r = PQprepare(c.get(), "uid",
                "insert into users (id, name) values (pgshard.unique_id(), $1) returning id", 1,
                nullptr);
  INFO(PQresultErrorMessage(r));
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  std::set<std::string> named;
  const char* p[] = {"c"};
  for (int i = 0; i < 3; ++i) {
    r = PQexecPrepared(c.get(), "uid", 1, p, nullptr, nullptr, 0);
    REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
    named.insert(PQgetvalue(r, 0, 0));
    PQclear(r);
  }
  CHECK(named.size() == 3);
  for (const auto& id : named) CHECK(where_is(id) == std::vector<int>{shard_of(std::stoll(id))});
  // One call for many rows would repeat one id: refused, nothing written.
  CHECK(error_code(c.get(), "update users set name = pgshard.unique_id()::text") == "0A000");
  CHECK(scalar(c.get(), "select count(*) from users where name ~ '^[0-9]+$'") == "0");
  // A hint places the statement; the id is still pgshard's.
  const std::string k3 = scalar(c.get(), "/* pgshard: shard=s1 */ select pgshard.unique_id()");
  CHECK(node_of(k3, false) == 1);
  {
    // The 53-bit layout has 6 node bits: node_id 100 cannot make those ids.
    ProxyOptions big;
    big.extra_top = "node_id: 100\n";
    Proxy third(big);
    auto t = connect(third.conninfo());
    std::string msg;
    CHECK(error_code(t.get(), "select pgshard.unique_id_53()", &msg) == "0A000");
    CHECK_THAT(msg, Catch::Contains("needs a node below 64"));
    CHECK(node_of(scalar(t.get(), "select pgshard.unique_id()"), false) == 100);
  }
  {
    // Without node_id each instance leases a node from the first shard (an advisory lock of
    // a connection of its own): two instances, two nodes. When the lease's session ends, the
    // instance stops making ids with it, takes a node again, and goes on.
    Proxy a, b;
    auto ca = connect(a.conninfo()), cb = connect(b.conninfo());
    const int na = node_of(scalar(ca.get(), "select pgshard.unique_id()"), false);
    const int nb = node_of(scalar(cb.get(), "select pgshard.unique_id()"), false);
    CHECK(na != nb);
    auto d0 = connect(cluster.direct(0));
    CHECK(scalar(d0.get(),
                 "select count(pg_terminate_backend(pid)) from pg_locks where locktype = "
                 "'advisory' and classid = 1885827944 and objid = " +
                     std::to_string(na)) == "1");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const int again = node_of(scalar(ca.get(), "select pgshard.unique_id()"), false);
    CHECK(again != nb);
    CHECK(scalar(d0.get(),
                 "select count(*) from pg_locks where locktype = 'advisory' and classid = "
                 "1885827944 and objid in (" +
                     std::to_string(again) + ", " + std::to_string(nb) + ")") == "2");
  }
  // 8 clients x 1,000 inserts without ids through two instances: no duplicate id, every row
  // on the shard its id maps to.
  const int kClients = 8, kInserts = 1000;
  const Loaded load = load_without_ids(proxy, second, kClients, kInserts);
  CHECK(load.failures == 0);
  CHECK_FALSE(load.misplaced);
  const long long total = load.total;
  const auto& ids = load.ids;
  std::set<int> nodes;
  for (long long id : ids) nodes.insert(node_of(std::to_string(id), false));
  CHECK(total == kClients * kInserts);
  CHECK(ids.size() == static_cast<std::size_t>(total));
  CHECK(nodes == std::set<int>{1, 2});
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "drop table users; drop schema pgshard cascade");
  }
}

TEST_CASE("INSERT ... SELECT runs the SELECT and puts each row on its key's shard", "[routing]") {
  // Before: refused ("INSERT ... SELECT into a sharded table is not supported").
  create_schema();
  auto& cluster = Cluster::get();
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  auto placed_right = [&](const std::string& table, const std::string& key) {
    bool ok = true;
    for (int s = 0; s < cluster.size(); ++s) {
      auto d = connect(cluster.direct(s));
      for (const auto& row : query(d.get(), "select " + key + " from " + table))
        if (shard_of(std::stoll(row[0])) != s) ok = false;
    }
    return ok;
  };
  // Rows from no table at all, spread over every shard by key.
  PGresult* r = PQexec(
      c.get(), "insert into users (id, name) select g, 'n' || g from generate_series(1, 30) g");
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  CHECK(std::string(PQcmdStatus(r)) == "INSERT 0 30");
  PQclear(r);
  CHECK(placed_right("users", "id"));
  CHECK(scalar(c.get(), "select name from users where id = 17") == "n17");
  // Rows read from every shard, into another table by another key, with RETURNING.
  auto rows = query(c.get(),
                    "insert into orders (id, user_id, amount) select id * 10, id, 1.5 from users "
                    "where id <= 10 returning user_id, amount");
  CHECK(rows.size() == 10);
  CHECK(placed_right("orders", "user_id"));
  CHECK(scalar(c.get(), "select sum(amount) from orders") == "15.0");
  // No column list: the table's column order.
  query(c.get(), "insert into users select id + 1000, upper(name) from users where id <= 3");
  CHECK(scalar(c.get(), "select name from users where id = 1002") == "N2");
  CHECK(placed_right("users", "id"));
  // No rows: INSERT 0 0, and RETURNING still describes its columns.
  r = PQexec(c.get(),
             "insert into users (id, name) select id, name from users where id < 0 "
             "returning id, name");
  CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
  CHECK(PQntuples(r) == 0);
  CHECK(PQnfields(r) == 2);
  CHECK(std::string(PQcmdStatus(r)) == "INSERT 0 0");
  PQclear(r);
  // ON CONFLICT: rows already there are skipped, as on one PostgreSQL.
  r = PQexec(c.get(),
             "insert into users (id, name) select g, 'again' from generate_series(25, 35) g "
             "on conflict (id) do nothing");
  CHECK(std::string(PQcmdStatus(r)) == "INSERT 0 5");
  PQclear(r);
  // Parameters in the SELECT (extended protocol).
  const char* params[] = {"copy", "5"};
  r = PQexecParams(c.get(),
                   "insert into users (id, name) select id + 2000, $1 from users where id = $2", 2,
                   nullptr, params, nullptr, nullptr, 0);
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  CHECK(std::string(PQcmdStatus(r)) == "INSERT 0 1");
  PQclear(r);
  CHECK(scalar(c.get(), "select name from users where id = 2005") == "copy");
  // In a transaction: the SELECT sees the transaction's own rows; ROLLBACK takes all back.
  query(c.get(), "begin");
  query(c.get(), "insert into users (id, name) values (3001, 'tx')");
  query(c.get(), "insert into users (id, name) select id + 1, name from users where id = 3001");
  CHECK(scalar(c.get(), "select count(*) from users where name = 'tx'") == "2");
  query(c.get(), "rollback");
  CHECK(scalar(c.get(), "select count(*) from users where name = 'tx'") == "0");
  // One row breaks a unique key on its shard: the rows bound for the other shards are not
  // kept either (one statement, atomic across shards).
  CHECK(error_code(c.get(),
                   "insert into users (id, name) select g, 'dup' from "
                   "generate_series(26, 45) g") == "23505");
  CHECK(scalar(c.get(), "select count(*) from users where name = 'dup'") == "0");
  // The SELECT's own error, with its SQLSTATE; nothing inserted.
  CHECK(error_code(c.get(), "insert into users (id, name) select 1 / 0, 'x'") == "22012");
  // A SELECT whose answer is merged across shards (aggregate; ORDER BY with LIMIT): the
  // merged answer is what goes in.
  CHECK(scalar(c.get(),
               "insert into users (id, name) select count(*), 'c' from users "
               "returning id") == "39");
  rows = query(c.get(),
               "insert into orders (id, user_id, amount) select id, id, 9 from users "
               "where id < 5000 order by id desc limit 3 returning user_id");
  REQUIRE(rows.size() == 3);
  std::set<std::string> top;
  for (const auto& row : rows) top.insert(row[0]);
  CHECK(top == std::set<std::string>{"2005", "1003", "1002"});
  CHECK(placed_right("orders", "user_id"));
  CHECK(scalar(c.get(), "select count(*) from users") == "40");
}

TEST_CASE("a pipeline over several shards answers as one PostgreSQL: one transaction",
          "[routing]") {
  // Before: 0A000 "statements in one pipelined batch route to different shards" (psycopg 3's
  // executemany, pgJDBC's executeBatch).
  create_schema();
  auto& cluster = Cluster::get();
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  // The same pipeline to pgshard and straight to one PostgreSQL: the same replies.
  auto pipeline = [](long long first, int count, long long duplicate) {
    std::string out;
    wire::Parse{"ins", "insert into users (id, name) values ($1, 'p')", {}}.write(out);
    for (int i = 0; i < count; ++i) {
      const long long id = i == 2 && duplicate ? duplicate : first + i;
      wire::Bind{"", "ins", {}, {std::to_string(id)}, {}}.write(out);
      wire::Execute{"", 0}.write(out);
    }
    wire::write_empty(out, wire::msg::kSync);
    return out;
  };
  auto shape = [](int port, const std::string& bytes) {
    RawClient raw(port);
    REQUIRE(raw.login());
    raw.send(bytes);
    std::vector<std::pair<char, std::string>> all;
    std::string types = raw.until_ready(&all);
    return types + ":" + all.back().second;  // and the ReadyForQuery status
  };
  const std::string want = shape(cluster.port(0), pipeline(100001, 6, 0));
  CHECK(want == "1 2 C 2 C 2 C 2 C 2 C 2 C Z:I");
  CHECK(shape(proxy.port(), pipeline(1, 6, 0)) == want);
  CHECK(scalar(c.get(), "select count(*) from users where id between 1 and 6") == "6");
  for (int id = 1; id <= 6; ++id) {
    auto d = connect(cluster.direct(shard_of(id)));
    CHECK(scalar(d.get(), "select count(*) from users where id = " + std::to_string(id)) == "1");
  }
  // An error in the third statement: the rest is skipped and nothing of it stays.
  const std::string failed = shape(cluster.port(0), pipeline(100101, 5, 100001));
  CHECK(failed == "1 2 C 2 C 2 E Z:I");
  CHECK(shape(proxy.port(), pipeline(101, 5, 1)) == failed);
  CHECK(scalar(c.get(), "select count(*) from users where id between 101 and 105") == "0");
  {
    // Inside the client's transaction the pipeline joins it (and a failure fails it).
    RawClient raw(proxy.port());
    REQUIRE(raw.login());
    std::string begin;
    wire::Query{"begin"}.write(begin);
    raw.send(begin);
    CHECK(raw.until_ready() == "C Z");
    raw.send(pipeline(201, 4, 0));
    std::vector<std::pair<char, std::string>> all;
    CHECK(raw.until_ready(&all) == "1 2 C 2 C 2 C 2 C Z");
    CHECK(all.back().second == "T");
    std::string rollback;
    wire::Query{"rollback"}.write(rollback);
    raw.send(rollback);
    CHECK(raw.until_ready() == "C Z");
  }
  CHECK(scalar(c.get(), "select count(*) from users where id between 201 and 204") == "0");
  // A pipeline sent in parts ending in Flush (psycopg 3 reads results as they come): a later
  // part on the first part's shard joins it; one bound for another shard fails the pipeline
  // (the first part's server is closed, so nothing of it stays), never lands on the wrong
  // shard (before: it was run on the first part's shard).
  // The first part of a pipeline sent in parts: an INSERT of `key` through statement `name`,
  // then Flush; its replies come at once.
  auto first_part = [&](RawClient& raw, const std::string& name, long long key) {
    std::string part;
    wire::Parse{name, "insert into users (id, name) values ($1, 'f')", {}}.write(part);
    wire::Bind{"", name, {}, {std::to_string(key)}, {}}.write(part);
    wire::Execute{"", 0}.write(part);
    wire::write_empty(part, wire::msg::kFlush);
    raw.send(part);
    std::string types;
    for (int i = 0; i < 3; ++i) {
      auto m = raw.next();
      REQUIRE(m);
      types += m->first;
    }
    CHECK(types == "12C");
  };
  auto parts = [&](long long first, long long second) {
    RawClient raw(proxy.port());
    REQUIRE(raw.login());
    first_part(raw, "ins", first);
    std::string part;
    wire::Bind{"", "ins", {}, {std::to_string(second)}, {}}.write(part);
    wire::Execute{"", 0}.write(part);
    wire::write_empty(part, wire::msg::kSync);
    raw.send(part);
    std::vector<std::pair<char, std::string>> all;
    std::string rest = raw.until_ready(&all);
    return rest + ":" + all.back().second;
  };
  long long a = 301, same = 302;
  while (shard_of(same) != shard_of(a)) ++same;
  CHECK(parts(a, same) == "2 C Z:I");
  CHECK(scalar(c.get(), "select count(*) from users where name = 'f'") == "2");
  a = 1301;
  long long other = 1302;
  while (shard_of(other) == shard_of(a)) ++other;
  CHECK(parts(a, other).starts_with("E Z"));
  {
    // The second part ends in Flush too, the Sync comes later, the client goes on (found
    // from outside: the first part's server went back to the pool with its implicit
    // transaction open, and the next statements there committed the first part).
    RawClient raw(proxy.port());
    REQUIRE(raw.login());
    long long first = 1351, second = 1352;
    while (shard_of(second) == shard_of(first)) ++second;
    first_part(raw, "", first);
    std::string part;
    wire::Bind{"", "", {}, {std::to_string(second)}, {}}.write(part);
    wire::Execute{"", 0}.write(part);
    wire::write_empty(part, wire::msg::kFlush);
    raw.send(part);
    auto e = raw.next();
    REQUIRE(e);
    CHECK(e->first == 'E');
    part.clear();
    wire::write_empty(part, wire::msg::kSync);
    raw.send(part);
    CHECK(raw.until_ready() == "Z");
    // The same client and others go on: every pooled server of the first shard runs them.
    for (int i = 0; i < 12; ++i) {
      std::string q;
      wire::Query{"select count(*) from users where id = " + std::to_string(first)}.write(q);
      raw.send(q);
      std::vector<std::pair<char, std::string>> all;
      CHECK(raw.until_ready(&all) == "T D C Z");
      CHECK(scalar(c.get(), "select count(*) from users where id = " + std::to_string(first)) ==
            "0");
    }
    auto d = connect(cluster.direct(shard_of(first)));
    CHECK(scalar(d.get(), "select count(*) from users where id = " + std::to_string(first)) == "0");
    CHECK(scalar(d.get(),
                 "select count(*) from pg_stat_activity where usename = 'app' and "
                 "backend_xid is not null") == "0");
  }
  {
    // The first part failed (its server skips to the Sync, answering nothing): the later part
    // for another shard still gets its answer at once, and the session stays usable (before:
    // the session waited forever holding its server).
    RawClient raw(proxy.port());
    REQUIRE(raw.login());
    std::string part;
    wire::Parse{"bad", "insert into users (id, name) values ($1, 1 / 0)", {}}.write(part);
    wire::Bind{"", "bad", {}, {std::string("1401")}, {}}.write(part);
    wire::Execute{"", 0}.write(part);
    wire::write_empty(part, wire::msg::kFlush);
    raw.send(part);
    std::string types;
    while (types.find('E') == std::string::npos && types.size() < 5) {
      auto m = raw.next();
      REQUIRE(m);
      types += m->first;
    }
    CHECK(types.ends_with("E"));
    long long far = 1402;
    while (shard_of(far) == shard_of(1401)) ++far;
    part.clear();
    wire::Bind{"", "bad", {}, {std::to_string(far)}, {}}.write(part);
    wire::Execute{"", 0}.write(part);
    wire::write_empty(part, wire::msg::kSync);
    const auto t0 = std::chrono::steady_clock::now();
    raw.send(part);
    CHECK(raw.until_ready().ends_with("Z"));
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3));
    std::string q;
    wire::Query{"select 1"}.write(q);
    raw.send(q);
    CHECK(raw.until_ready() == "T D C Z");
  }
  for (int s = 0; s < cluster.size(); ++s) {
    auto d = connect(cluster.direct(s));
    CHECK(scalar(d.get(), "select count(*) from users where id > 1000 and name = 'f'") == "0");
  }
  CHECK(scalar(c.get(), "select 1") == "1");
}

TEST_CASE("a client that leaves while a pipeline sent in parts is failed", "[routing]") {
  // The pipeline's first part failed on its shard, its next part goes to another shard: the
  // session waits (bounded) for the first server's replies before failing the pipeline. The
  // client left meanwhile, its relay freed that server, and the wait read it again
  // (heap-use-after-free under ASan, found by the session fuzzer).
  create_schema();
  Proxy proxy;
  long long far = 1502;
  while (shard_of(far) == shard_of(1501)) ++far;
  for (int round = 0; round < 30; ++round) {
    RawClient raw(proxy.port());
    REQUIRE(raw.login());
    std::string part;
    wire::Parse{"bad", "insert into users (id, name) values ($1, 1 / 0)", {}}.write(part);
    wire::Bind{"", "bad", {}, {std::string("1501")}, {}}.write(part);
    wire::Execute{"", 0}.write(part);
    wire::write_empty(part, wire::msg::kFlush);
    if (round % 2) {
      raw.send(part);
      part.clear();
      std::this_thread::sleep_for(std::chrono::milliseconds(round % 7));
    }
    wire::Bind{"", "bad", {}, {std::to_string(far)}, {}}.write(part);
    wire::Execute{"", 0}.write(part);
    wire::write_empty(part, wire::msg::kFlush);
    raw.send(part);
    // Gone at once, replies unread, with a reset: pgshard's next write to it fails.
    const linger reset{1, 0};
    setsockopt(raw.fd(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  }
  REQUIRE(proxy.running());
  auto c = connect(proxy.conninfo());
  CHECK(scalar(c.get(), "select count(*) from users where id in (1501, " + std::to_string(far) +
                            ")") == "0");
}

TEST_CASE("a split INSERT keeps parameters of rows another shard holds", "[routing]") {
  // Before: each shard's part lost the rows (and parameters) of the others, and PostgreSQL
  // answered "could not determine data type of parameter $1".
  create_schema();
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  const char* text[] = {"a", "b", "c", "d"};
  PGresult* r = PQexecParams(
      c.get(), "insert into users (id, name) values (1, $1), (2, $2), (3, $3), (4, $4)", 4, nullptr,
      text, nullptr, nullptr, 0);
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  CHECK(std::string(PQcmdStatus(r)) == "INSERT 0 4");
  PQclear(r);
  // Binary parameters of unspecified type too (an int8 holds NUL bytes).
  const uint64_t v = htobe64(7);
  const char* bin[] = {reinterpret_cast<const char*>(&v), reinterpret_cast<const char*>(&v)};
  const int lengths[] = {8, 8};
  const int formats[] = {1, 1};
  r = PQexecParams(c.get(),
                   "insert into orders (id, user_id, amount) values ($1, 1, 1), ($2, 2, 1)", 2,
                   nullptr, bin, lengths, formats, 0);
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  for (int id = 1; id <= 4; ++id) {
    auto d = connect(Cluster::get().direct(shard_of(id)));
    CHECK(scalar(d.get(), "select name from users where id = " + std::to_string(id)) ==
          std::string(1, static_cast<char>('a' + id - 1)));
  }
  CHECK(scalar(c.get(), "select count(*) from orders where id = 7") == "2");
}

TEST_CASE("schema changes inside a transaction commit or roll back on every shard", "[routing]") {
  // Before: refused across shards ("DDL inside this transaction ... not supported"), or, as
  // the transaction's first statement, run outside it (a ROLLBACK left the table behind).
  create_schema();
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "drop table if exists ddl_tx");
  }
  auto tables = [&](const std::string& name) {
    int n = 0;
    for (int i = 0; i < cluster.size(); ++i) {
      auto d = connect(cluster.direct(i));
      n += scalar(d.get(), "select count(*) from pg_class where relname = '" + name + "'") == "1";
    }
    return n;
  };
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  query(c.get(), "begin");
  query(c.get(), "create table ddl_tx (id int)");
  query(c.get(), "rollback");
  CHECK(tables("ddl_tx") == 0);
  // A migration's shape: DDL, its bookkeeping row (unsharded: s0), keyed writes, COMMIT.
  query(c.get(), "begin");
  query(c.get(), "create table ddl_tx (id int)");
  query(c.get(), "insert into ddl_tx values (1)");
  query(c.get(), "insert into users (id, name) values (77, 'm')");
  query(c.get(), "alter table users add column note text");
  query(c.get(), "commit");
  CHECK(tables("ddl_tx") == cluster.size());
  CHECK(scalar(c.get(), "select count(*) from ddl_tx") == "1");
  CHECK(scalar(c.get(), "select name from users where id = 77") == "m");
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    CHECK(scalar(d.get(),
                 "select count(*) from information_schema.columns where table_name = "
                 "'users' and column_name = 'note'") == "1");
  }
  // A keyed write first, then DDL that needs every shard.
  query(c.get(), "begin");
  query(c.get(), "insert into users (id, name) values (78, 'n')");
  query(c.get(), "alter table users drop column note");
  query(c.get(), "rollback");
  CHECK(scalar(c.get(), "select count(*) from users where id = 78") == "0");
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    CHECK(scalar(d.get(),
                 "select count(*) from information_schema.columns where table_name = "
                 "'users' and column_name = 'note'") == "1");
  }
  query(c.get(), "drop table ddl_tx");
}

TEST_CASE(
    "serial, identity and nextval columns that are not the shard key are unique across shards",
    "[routing][serial]") {
  // Before: each shard's own sequence filled them, so id 1, 2, 3 existed once per shard and
  // a read, UPDATE or DELETE by id touched another user's order.
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "drop table if exists orders; drop table if exists users");
    query(d.get(), "drop sequence if exists order_refs; create sequence order_refs");
    query(d.get(), "create table users (id bigint primary key, name text)");
    query(d.get(),
          "create table orders (id serial primary key, user_id bigint not null, amount numeric, "
          "gid bigint generated always as identity, ref bigint default nextval('order_refs'))");
  }
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  std::vector<std::string> ids;
  // Simple Query, one row per user (users hash to every shard).
  for (int u = 1; u <= 12; ++u)
    ids.push_back(scalar(c.get(), "insert into orders (user_id, amount) values (" +
                                      std::to_string(u) + ", 1) returning id"));
  // Several rows for several shards: RETURNING gives the generated values in VALUES order.
  auto rows = query(c.get(),
                    "insert into orders (user_id, amount) values (13, 1), (14, 1), (15, 1), "
                    "(16, 1) returning id, user_id, gid, ref");
  REQUIRE(rows.size() == 4);
  CHECK(rows[0][1] == "13");
  CHECK(rows[3][1] == "16");
  for (const auto& r : rows) {
    CHECK(!r[2].empty());
    CHECK(!r[3].empty());
    ids.push_back(r[0]);
  }
  // DEFAULT in the column's place; no column list (rows stopping before gid and ref).
  ids.push_back(scalar(c.get(),
                       "insert into orders (id, user_id, amount) values (default, 17, 1) "
                       "returning id"));
  ids.push_back(scalar(c.get(), "insert into orders values (default, 18, 1) returning id"));
  // Extended protocol: the unnamed statement, and a named prepared statement run again.
  for (int u = 19; u <= 21; ++u) {
    const std::string key = std::to_string(u);
    const char* p[] = {key.c_str()};
    PGresult* r =
        PQexecParams(c.get(), "insert into orders (user_id, amount) values ($1, 2) returning id", 1,
                     nullptr, p, nullptr, nullptr, 0);
    REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
    ids.push_back(PQgetvalue(r, 0, 0));
    PQclear(r);
  }
  PGresult* r =
      PQprepare(c.get(), "ord", "insert into orders (user_id, amount) values ($1, 3) returning id",
                1, nullptr);
  REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  for (int u = 22; u <= 27; ++u) {
    const std::string key = std::to_string(u);
    const char* p[] = {key.c_str()};
    r = PQexecPrepared(c.get(), "ord", 1, p, nullptr, nullptr, 0);
    REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
    ids.push_back(PQgetvalue(r, 0, 0));
    PQclear(r);
  }
  // Inside a transaction too.
  query(c.get(), "begin");
  ids.push_back(
      scalar(c.get(), "insert into orders (user_id, amount) values (28, 1) returning id"));
  query(c.get(), "commit");
  REQUIRE(ids.size() == 28);
  CHECK(std::set<std::string>(ids.begin(), ids.end()).size() == ids.size());
  // Every generated column, read on the shards directly: no value twice.
  for (const char* col : {"id", "gid", "ref"}) {
    std::set<std::string> seen;
    std::size_t total = 0;
    for (int s = 0; s < cluster.size(); ++s) {
      auto d = connect(cluster.direct(s));
      for (const auto& row : query(d.get(), std::string("select ") + col + " from orders")) {
        seen.insert(row[0]);
        ++total;
      }
    }
    INFO(col);
    CHECK(total == 28);
    CHECK(seen.size() == total);
  }
  // By id through pgshard: exactly one order each; an UPDATE by id changes one row.
  for (const auto& id : ids) {
    CHECK(scalar(c.get(), "select count(*) from orders where id = " + id) == "1");
  }
  auto upd = query(c.get(), "update orders set amount = 9 where id = " + ids[5] + " returning id");
  CHECK(upd.size() == 1);
  CHECK(scalar(c.get(), "select count(*) from orders where amount = 9") == "1");
  // The values came from the first shard's sequences (the sequences' home).
  auto home = connect(cluster.direct(0));
  CHECK(std::stoll(scalar(home.get(), "select last_value from orders_id_seq")) >= 28);
  CHECK(std::stoll(scalar(home.get(), "select last_value from order_refs")) >= 28);
}

TEST_CASE("cursors: a keyed cursor reads its key's shard; a multi-shard one is refused",
          "[routing][cursor]") {
  // Before: DECLARE ran as DDL on every shard and FETCH read one shard only (a keyed cursor
  // returned no rows, a count cursor one shard's count).
  create_schema();
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  for (int u = 1; u <= 9; ++u)
    for (int k = 1; k <= 5; ++k)
      query(c.get(), "insert into orders (id, user_id, amount) values (" + std::to_string(k) +
                         ", " + std::to_string(u) + ", " + std::to_string(u * 10 + k) + ")");
  for (int u = 1; u <= 9; ++u) {
    const std::string user = std::to_string(u);
    query(c.get(), "begin");
    query(c.get(), "declare c cursor for select id, amount from orders where user_id = " + user +
                       " order by id");
    auto two = query(c.get(), "fetch 2 from c");
    REQUIRE(two.size() == 2);
    CHECK(two[0][0] == "1");
    CHECK(two[1][1] == std::to_string(u * 10 + 2));
    query(c.get(), "move 1 in c");
    auto rest = query(c.get(), "fetch all from c");
    REQUIRE(rest.size() == 2);
    CHECK(rest[0][0] == "4");
    CHECK(rest[1][0] == "5");
    CHECK(query(c.get(), "fetch next from c").empty());
    query(c.get(), "close c");
    CHECK(error_code(c.get(), "fetch 1 from c") == "34000");  // closed: gone, as on PostgreSQL
    query(c.get(), "rollback");
  }
  // Two keyed cursors on different shards in one transaction: each FETCH goes to its own.
  long long a = 1, b = 2;
  while (shard_of(b) == shard_of(a)) ++b;
  query(c.get(), "begin");
  query(c.get(),
        "declare ca cursor for select user_id from orders where user_id = " + std::to_string(a));
  query(c.get(),
        "declare cb cursor for select user_id from orders where user_id = " + std::to_string(b));
  auto fa = query(c.get(), "fetch all ca");
  auto fb = query(c.get(), "fetch all cb");
  CHECK(fa.size() == 5);
  CHECK(fb.size() == 5);
  if (!fa.empty()) CHECK(fa[0][0] == std::to_string(a));
  if (!fb.empty()) CHECK(fb[0][0] == std::to_string(b));
  // The same name again, for the other shard: 42P03 as on PostgreSQL (before: accepted, two
  // cursors "ca", FETCH read the first).
  std::string dup;
  CHECK(error_code(
            c.get(),
            "declare ca cursor for select user_id from orders where user_id = " + std::to_string(b),
            &dup) == "42P03");
  CHECK_THAT(dup, Catch::Contains("cursor \"ca\" already exists"));
  query(c.get(), "rollback");
  // WITH HOLD outside a transaction block: it outlives its implicit transaction.
  query(c.get(), "declare h cursor with hold for select id from orders where user_id = 3");
  CHECK(query(c.get(), "fetch all h").size() == 5);
  query(c.get(), "close h");
  // WITH HOLD cursors on two shards, declared in autocommit and in one transaction block:
  // the pinned session holds a server of each. (Before: the block's COMMIT became a
  // two-phase commit, and PostgreSQL refuses to PREPARE a transaction that created a WITH
  // HOLD cursor, so it failed.)
  query(c.get(), "declare h1 cursor with hold for select id from orders where user_id = " +
                     std::to_string(a));
  query(c.get(), "declare h2 cursor with hold for select id from orders where user_id = " +
                     std::to_string(b));
  CHECK(query(c.get(), "fetch all h1").size() == 5);
  CHECK(query(c.get(), "fetch all h2").size() == 5);
  query(c.get(), "begin");
  query(c.get(), "declare h3 cursor with hold for select id from orders where user_id = " +
                     std::to_string(a));
  query(c.get(), "declare h4 cursor with hold for select id from orders where user_id = " +
                     std::to_string(b));
  query(c.get(), "commit");
  CHECK(query(c.get(), "fetch all h3").size() == 5);
  CHECK(query(c.get(), "fetch all h4").size() == 5);
  for (const char* h : {"h1", "h2", "h3", "h4"}) query(c.get(), std::string("close ") + h);
  // One shard written, a WITH HOLD cursor on the other: committed (the read-only part
  // first). Both written: PostgreSQL could not PREPARE it, so 0A000 and nothing written.
  const std::string amounts = scalar(c.get(), "select sum(amount) from orders");
  for (bool both : {false, true}) {
    query(c.get(), "begin");
    query(c.get(), "update orders set amount = amount + 1 where user_id = " + std::to_string(a));
    if (both)
      query(c.get(), "update orders set amount = amount + 1 where user_id = " + std::to_string(b));
    query(c.get(), "declare h5 cursor with hold for select id from orders where user_id = " +
                       std::to_string(b));
    std::string why;
    CHECK(error_code(c.get(), "commit", &why) == (both ? "0A000" : ""));
    if (both) CHECK_THAT(why, Catch::Contains("WITH HOLD"));
    CHECK(scalar(c.get(), "select 1") == "1");  // the session goes on
    if (!both) {
      CHECK(query(c.get(), "fetch all h5").size() == 5);
      query(c.get(), "close h5");
      query(c.get(), "update orders set amount = amount - 1 where user_id = " + std::to_string(a));
    }
  }
  // A COMMIT that fails on the part that only read (the WITH HOLD cursor's query runs to the
  // end at COMMIT): the whole transaction fails, as on PostgreSQL (before: COMMIT answered,
  // the other shard's write kept).
  query(c.get(), "begin");
  query(c.get(), "update orders set amount = amount + 1 where user_id = " + std::to_string(a));
  query(c.get(),
        "declare h6 cursor with hold for select 1 / (amount - amount) from orders "
        "where user_id = " +
            std::to_string(b));
  CHECK(error_code(c.get(), "commit") == "22012");
  CHECK(scalar(c.get(), "select sum(amount) from orders") == amounts);
  // A WITH HOLD cursor closed before COMMIT is no obstacle to two-phase commit (PostgreSQL
  // prepares such a transaction).
  for (const char* delta : {"+ 1", "- 1"}) {
    query(c.get(), "begin");
    for (long long k : {a, b})
      query(c.get(), "update orders set amount = amount " + std::string(delta) +
                         " where user_id = " + std::to_string(k));
    query(c.get(), "declare h7 cursor with hold for select id from orders where user_id = " +
                       std::to_string(b));
    query(c.get(), "close h7");
    CHECK(error_code(c.get(), "commit").empty());
  }
  CHECK(scalar(c.get(), "select sum(amount) from orders") == amounts);
  // A cursor over every shard: refused with 0A000, never one shard's rows; the transaction
  // is then aborted as after any error in a transaction block.
  query(c.get(), "begin");
  std::string msg;
  CHECK(error_code(c.get(), "declare m cursor for select count(*) from orders", &msg) == "0A000");
  CHECK_THAT(msg, Catch::Contains("several shards"));
  CHECK(error_code(c.get(), "select 1") == "25P02");
  query(c.get(), "rollback");
  CHECK(scalar(c.get(), "select count(*) from orders") == "45");
  // psycopg2's named cursor: DECLARE "name" CURSOR WITHOUT HOLD FOR ..., after other work.
  query(c.get(), "begin");
  CHECK(scalar(c.get(), "select count(*) from orders where user_id = 4") == "5");
  query(c.get(), "declare \"c_1\" cursor without hold for select id from orders where user_id = 4");
  CHECK(query(c.get(), "fetch forward 10 from \"c_1\"").size() == 5);
  query(c.get(), "close \"c_1\"");
  query(c.get(), "commit");
  // Extended protocol: DECLARE with a parameter as the key.
  query(c.get(), "begin");
  const char* p[] = {"6"};
  PGresult* r = PQexecParams(c.get(),
                             "declare x cursor for select amount from orders where user_id = $1 "
                             "order by id",
                             1, nullptr, p, nullptr, nullptr, 0);
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  auto six = query(c.get(), "fetch all x");
  REQUIRE(six.size() == 5);
  CHECK(six[0][0] == "61");
  query(c.get(), "commit");
}

TEST_CASE("an integer key written as a non-integral number is never placed on a guess",
          "[routing]") {
  // Attacker: `WHERE id = 3.2::bigint` (PostgreSQL rounds it to 3) went to s0 as "key not
  // known yet": 0 rows, UPDATE 0, while the row lives elsewhere. 4.2e1 is 42 exactly.
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "DROP TABLE IF EXISTS num_keys");
    query(d.get(), "CREATE TABLE num_keys (id bigint PRIMARY KEY, v int)");
  }
  ProxyOptions o;
  o.sharded_tables = "  - { table: num_keys, column: id, type: bigint }\n";
  Proxy proxy(o);
  auto c = connect(proxy.conninfo());
  for (int k = 1; k <= 12; ++k)
    query(c.get(), "INSERT INTO num_keys VALUES (" + std::to_string(k) + ", 0)");
  for (int k = 1; k <= 12; ++k) {
    INFO(k);
    const std::string cast = std::to_string(k) + ".2::bigint";
    CHECK(scalar(c.get(), "SELECT id FROM num_keys WHERE id = " + cast) == std::to_string(k));
    CHECK(scalar(c.get(), "SELECT count(*) FROM num_keys WHERE id = CAST(" + std::to_string(k) +
                              ".4 AS int8)") == "1");
    CHECK(scalar(c.get(), "SELECT count(*) FROM num_keys WHERE id = " + std::to_string(k) + ".2") ==
          "0");  // compared as numeric: no row
    CHECK(scalar(c.get(), "SELECT id FROM num_keys WHERE id = " + std::to_string(k) + "e0") ==
          std::to_string(k));
    CHECK(scalar(c.get(), "UPDATE num_keys SET v = 1 WHERE id = " + std::to_string(k) +
                              "0e-1 RETURNING id") == std::to_string(k));
  }
  // A write with such a key is refused rather than sent to a guessed shard.
  CHECK(error_code(c.get(), "UPDATE num_keys SET v = 2 WHERE id = 3.2::bigint") == "0A000");
  CHECK(error_code(c.get(), "INSERT INTO num_keys VALUES (20.4, 0)") == "0A000");
  CHECK(scalar(c.get(), "SELECT count(*) FROM num_keys") == "12");
}
