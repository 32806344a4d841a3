// Multi-shard execution against real shards: DDL reporting where it applied, per-shard
// timeouts, and partial results when a shard cannot answer.
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "harness.hpp"

using namespace harness;

namespace {

void make_users() {
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "drop table if exists ms_users; drop table if exists ms_ddl");
    query(d.get(), "create table ms_users (id bigint primary key, name text)");
    query(d.get(), "insert into ms_users select g, 'n' || g from generate_series(" +
                       std::to_string(i * 10 + 1) + ", " + std::to_string(i * 10 + 10) + ") g");
  }
}

ProxyOptions options(const std::string& extra = "") {
  ProxyOptions o;
  o.sharded_tables = "  - { table: ms_users, column: id, type: bigint }\n";
  o.extra_top = extra;
  return o;
}

}  // namespace

TEST_CASE("DDL runs on every shard in order and says where it applied", "[multishard]") {
  make_users();
  auto& cluster = Cluster::get();
  Proxy proxy(options());
  auto c = connect(proxy.conninfo());
  query(c.get(), "alter table ms_users add column note text");
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    CHECK(scalar(d.get(),
                 "select count(*) from information_schema.columns where table_name = "
                 "'ms_users' and column_name = 'note'") == "1");
  }
  // Shard s1 already has the index: s0 applies it, s1 fails, s2 is never asked.
  {
    auto d = connect(cluster.direct(1));
    query(d.get(), "create index ms_users_name on ms_users (name)");
  }
  PGresult* r = PQexec(c.get(), "create index ms_users_name on ms_users (name)");
  REQUIRE(PQresultStatus(r) == PGRES_FATAL_ERROR);
  CHECK(std::string(PQresultErrorField(r, PG_DIAG_SQLSTATE)) == "42P07");
  std::string detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
  CHECK(detail == "applied on shard(s): s0; not applied on: s1, s2");
  PQclear(r);
  {
    auto d = connect(cluster.direct(2));
    CHECK(scalar(d.get(), "select count(*) from pg_indexes where indexname = 'ms_users_name'") ==
          "0");
  }
  // No transaction wraps DDL, so CONCURRENTLY works.
  query(c.get(), "create index concurrently ms_users_name_c on ms_users (name)");
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    CHECK(scalar(d.get(), "select count(*) from pg_indexes where indexname = 'ms_users_name_c'") ==
          "1");
  }
}

TEST_CASE("multi-shard reads in a transaction that has not touched a shard yet", "[multishard]") {
  make_users();
  Proxy proxy(options());
  auto c = connect(proxy.conninfo());
  query(c.get(), "begin");
  CHECK(scalar(c.get(), "select count(*) from ms_users") == "30");
  CHECK(PQtransactionStatus(c.get()) == PQTRANS_INTRANS);
  CHECK(scalar(c.get(), "/* pgshard: shard=s2 */ select name from ms_users where id = 25") ==
        "n25");
  // Now the transaction lives on one shard: the read runs inside it, on every shard.
  CHECK(scalar(c.get(), "select count(*) from ms_users") == "30");
  query(c.get(), "rollback");
  query(c.get(), "begin isolation level repeatable read");
  CHECK(scalar(c.get(), "select count(*) from ms_users") == "30");
  CHECK(scalar(c.get(), "show transaction_isolation") == "repeatable read");
  query(c.get(), "rollback");
  CHECK(scalar(c.get(), "select count(*) from ms_users") == "30");
}

TEST_CASE("a shard slower than timeouts.shard_statement fails the statement or is left out",
          "[multishard]") {
  make_users();
  auto& cluster = Cluster::get();
  Proxy proxy(options("timeouts: { shard_statement: 500ms }\n"));
  auto c = connect(proxy.conninfo());
  CHECK(scalar(c.get(), "select count(*) from ms_users") == "30");
  // Shard s1 is blocked by a lock held directly on it.
  auto blocker = connect(cluster.direct(1));
  query(blocker.get(), "begin");
  query(blocker.get(), "lock table ms_users in access exclusive mode");
  std::string msg;
  CHECK(error_code(c.get(), "select count(*) from ms_users", &msg) == "57014");
  CHECK_THAT(msg, Catch::Contains("shard s1"));
  // The session goes on; with partial results the other shards answer, with a WARNING.
  query(c.get(), "set pgshard.partial_results = on");
  std::string notices;
  PQsetNoticeProcessor(
      c.get(), [](void* arg, const char* m) { *static_cast<std::string*>(arg) += m; }, &notices);
  CHECK(scalar(c.get(), "select count(*) from ms_users") == "20");
  CHECK_THAT(notices, Catch::Contains("s1") && Catch::Contains("missing"));
  query(blocker.get(), "rollback");
  query(c.get(), "reset pgshard.partial_results");
  CHECK(scalar(c.get(), "select count(*) from ms_users") == "30");
  CHECK(query(c.get(), "select id from ms_users order by id desc limit 2") ==
        std::vector<std::vector<std::string>>{{"30"}, {"29"}});
}

TEST_CASE("a lost shard fails a multi-shard read, or is reported missing with partial results",
          "[multishard]") {
  make_users();
  auto& cluster = Cluster::get();
  Proxy proxy(options("partial_results: false\n"));
  auto c = connect(proxy.conninfo());
  CHECK(scalar(c.get(), "select max(id) from ms_users") == "30");
  cluster.kill(2);
  std::string msg;
  CHECK_FALSE(error_code(c.get(), "select max(id) from ms_users", &msg).empty());
  CHECK_THAT(msg, Catch::Contains("s2"));
  query(c.get(), "set pgshard.partial_results = on");
  std::string notices;
  PQsetNoticeProcessor(
      c.get(), [](void* arg, const char* m) { *static_cast<std::string*>(arg) += m; }, &notices);
  CHECK(scalar(c.get(), "select max(id) from ms_users") == "20");
  CHECK_THAT(notices, Catch::Contains("s2"));
  cluster.restart(2);
}

TEST_CASE("a CancelRequest stops a multi-shard statement on every shard", "[multishard]") {
  make_users();
  Proxy proxy(options());
  auto c = connect(proxy.conninfo());
  auto start = std::chrono::steady_clock::now();
  REQUIRE(PQsendQuery(c.get(), "select count(pg_sleep(0.5)) from ms_users") == 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  REQUIRE(send_cancel(c.get()));
  std::string code;
  while (PGresult* r = PQgetResult(c.get())) {
    if (PQresultStatus(r) == PGRES_FATAL_ERROR) code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    PQclear(r);
  }
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(code == "57014");
  CHECK(seconds < 3.0);  // 10 rows of 0.5 s per shard would take 5 s
  CHECK(scalar(c.get(), "select count(*) from ms_users") == "30");
}

namespace {
// The id of row i of scattered_insert: ids spread over the shards out of order.
int scattered_id(int base, int i) {
  return base + (i * 37) % 101;
}
// A 30-row INSERT into ms_users whose rows go to every shard in mixed order; `rows` gets
// "id|name" of each row in VALUES order.
std::string scattered_insert(int base, std::vector<std::string>& rows) {
  std::string sql = "insert into ms_users (id, name) values ";
  for (int i = 0; i < 30; ++i) {
    const int id = scattered_id(base, i);
    sql += (i ? ", (" : "(") + std::to_string(id) + ", 'v" + std::to_string(i) + "')";
    rows.push_back(std::to_string(id) + "|v" + std::to_string(i));
  }
  return sql;
}
}  // namespace

TEST_CASE("a multi-row INSERT across shards returns its rows in VALUES order", "[multishard]") {
  // ORMs match RETURNING rows to their objects by position.
  make_users();
  Proxy proxy(options());
  auto c = connect(proxy.conninfo());
  std::vector<std::string> expected;
  const std::string sql = scattered_insert(1000, expected) + " returning id, name";
  for (int mode = 0; mode < 2; ++mode) {
    INFO("extended protocol: " << mode);
    query(c.get(), "delete from ms_users where id >= 1000");
    PGresult* r =
        mode == 0 ? PQexec(c.get(), sql.c_str())
                  : PQexecParams(c.get(), sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0);
    INFO(PQresultErrorMessage(r));
    REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
    std::vector<std::string> got;
    for (int i = 0; i < PQntuples(r); ++i)
      got.push_back(std::string(PQgetvalue(r, i, 0)) + "|" + PQgetvalue(r, i, 1));
    CHECK(std::string(PQcmdStatus(r)) == "INSERT 0 30");
    PQclear(r);
    CHECK(got == expected);
  }
}

TEST_CASE("a split INSERT ... ON CONFLICT DO NOTHING returns what it inserted in VALUES order",
          "[multishard]") {
  // Rows already there are skipped; the others come back in VALUES order, as from one
  // PostgreSQL, told apart by their key values.
  make_users();
  Proxy proxy(options());
  auto c = connect(proxy.conninfo());
  std::vector<std::string> rows, expected;
  const std::string sql =
      scattered_insert(2000, rows) + " on conflict (id) do nothing returning name, id";
  for (std::size_t i = 0; i < rows.size(); ++i)
    if (i % 3 != 0) expected.push_back(rows[i]);  // every third row is there already
  for (int mode = 0; mode < 2; ++mode) {
    INFO("extended protocol: " << mode);
    query(c.get(), "delete from ms_users where id >= 2000");
    for (int i = 0; i < 30; i += 3)
      query(c.get(), "insert into ms_users (id, name) values (" +
                         std::to_string(scattered_id(2000, i)) + ", 'old')");
    PGresult* r =
        mode == 0 ? PQexec(c.get(), sql.c_str())
                  : PQexecParams(c.get(), sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 1);
    INFO(PQresultErrorMessage(r));
    REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
    std::vector<std::string> got;
    for (int i = 0; i < PQntuples(r); ++i) {
      std::string id = PQgetvalue(r, i, 1);
      if (mode == 1) {  // binary int8
        REQUIRE(PQgetlength(r, i, 1) == 8);
        uint64_t v = 0;
        for (int b = 0; b < 8; ++b) v = v << 8 | static_cast<unsigned char>(PQgetvalue(r, i, 1)[b]);
        id = std::to_string(v);
      }
      got.push_back(id + "|" + std::string(PQgetvalue(r, i, 0), PQgetlength(r, i, 0)));
    }
    CHECK(std::string(PQcmdStatus(r)) == "INSERT 0 20");
    PQclear(r);
    CHECK(got == expected);
  }
}

TEST_CASE("a multi-shard prepared statement that fails leaves no name behind", "[multishard]") {
  // The shard where Execute failed skipped the rest of the batch to Sync, the Close of
  // pgshard's statement name included: the next Parse of that name must still work.
  make_users();
  ProxyOptions o = options();
  o.pool_size = 1;
  o.workers = 1;
  Proxy proxy(o);
  auto c = connect(proxy.conninfo());
  PGresult* r = PQprepare(c.get(), "s1", "select 10 / (id - $1::int) from ms_users", 0, nullptr);
  REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  auto exec = [&](const char* v) {
    const char* values[] = {v};
    PGresult* e = PQexecPrepared(c.get(), "s1", 1, values, nullptr, nullptr, 0);
    std::string out = PQresultStatus(e) == PGRES_TUPLES_OK
                          ? std::to_string(PQntuples(e))
                          : std::string(PQresultErrorField(e, PG_DIAG_SQLSTATE));
    PQclear(e);
    return out;
  };
  for (int i = 0; i < 3; ++i) {
    CHECK(exec("5") == "22012");
    CHECK(exec("1000") == "30");
  }
  auto other = connect(proxy.conninfo());
  r = PQprepare(other.get(), "s1", "select id from ms_users", 0, nullptr);
  PQclear(r);
  r = PQexecPrepared(other.get(), "s1", 0, nullptr, nullptr, nullptr, 0);
  INFO(PQresultErrorMessage(r));
  CHECK(PQntuples(r) == 30);
  PQclear(r);
}
