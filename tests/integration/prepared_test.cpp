// Protocol-level prepared statements in transaction pooling: clients' names never collide on
// a shared server, and a statement is prepared again, transparently, on whatever server the
// client gets next.
#include <catch2/catch.hpp>

#include "harness.hpp"
#include "protocol/messages.hpp"

using namespace harness;
namespace proto = pgshard::protocol;

namespace {

std::string exec_prepared(PGconn* c, const char* name, const std::string& arg) {
  const char* v[] = {arg.c_str()};
  PGresult* r = PQexecPrepared(c, name, 1, v, nullptr, nullptr, 0);
  std::string out = PQresultStatus(r) == PGRES_TUPLES_OK
                        ? PQgetvalue(r, 0, 0)
                        : std::string("ERROR: ") + PQresultErrorMessage(r);
  PQclear(r);
  return out;
}

void prepare(PGconn* c, const char* name, const char* sql) {
  PGresult* r = PQprepare(c, name, sql, 0, nullptr);
  INFO(PQresultErrorMessage(r));
  REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
}

}  // namespace

TEST_CASE("clients' statement names never collide on a shared server", "[prepared]") {
  ProxyOptions o;
  o.pool_size = 1;  // one server per shard: every client shares it
  Proxy proxy(o);
  auto a = connect(proxy.conninfo());
  auto b = connect(proxy.conninfo());
  prepare(a.get(), "s1", "select $1::int + 1");
  prepare(b.get(), "s1", "select 'b' || $1");
  for (int i = 0; i < 5; ++i) {
    CHECK(exec_prepared(a.get(), "s1", std::to_string(i)) == std::to_string(i + 1));
    CHECK(exec_prepared(b.get(), "s1", "x") == "bx");
  }
  // The same text prepared by two clients under different names is one server statement.
  prepare(b.get(), "same", "select $1::int + 1");
  CHECK(exec_prepared(b.get(), "same", "9") == "10");
  // A name the client never prepared is reported by PostgreSQL with the client's name.
  CHECK_THAT(exec_prepared(a.get(), "nope", "1"), Catch::Contains("\"nope\" does not exist"));
  // A failed Parse leaves nothing behind; the name can be prepared properly afterwards.
  PGresult* r = PQprepare(a.get(), "bad", "select from from", 0, nullptr);
  CHECK(PQresultStatus(r) == PGRES_FATAL_ERROR);
  PQclear(r);
  prepare(a.get(), "bad", "select $1::int * 3");
  CHECK(exec_prepared(a.get(), "bad", "3") == "9");
}

TEST_CASE("a statement follows its client to another server", "[prepared]") {
  ProxyOptions o;
  o.pool_size = 2;
  Proxy proxy(o);
  auto a = connect(proxy.conninfo());
  auto holder = connect(proxy.conninfo());
  prepare(a.get(), "q", "select $1::int * 2");
  // Another client holds one of the two servers in a transaction half of the time, so the
  // statement's client lands on both servers.
  for (int i = 0; i < 20; ++i) {
    if (i % 2 == 0) {
      query(holder.get(), "begin");
      query(holder.get(), "select 1");
    }
    CHECK(exec_prepared(a.get(), "q", std::to_string(i)) == std::to_string(i * 2));
    if (i % 2 == 0) query(holder.get(), "commit");
  }
}

TEST_CASE("Close of a client's statement keeps other clients' copies working", "[prepared]") {
  ProxyOptions o;
  o.pool_size = 1;
  Proxy proxy(o);
  auto other = connect(proxy.conninfo());
  prepare(other.get(), "shared", "select $1::text || '!'");
  RawClient c(proxy.port());
  REQUIRE(c.login());
  std::string batch;
  proto::Parse{"shared", "select $1::text || '!'", {}}.write(batch);
  proto::write_empty(batch, proto::msg::kSync);
  REQUIRE(c.send(batch));
  CHECK(c.until_ready() == "1 Z");
  batch.clear();
  proto::Close{'S', "shared"}.write(batch);
  proto::write_empty(batch, proto::msg::kSync);
  REQUIRE(c.send(batch));
  CHECK(c.until_ready() == "3 Z");
  CHECK(exec_prepared(other.get(), "shared", "hi") == "hi!");
  // The closed name is gone for this client, as on PostgreSQL.
  batch.clear();
  proto::Bind bind;
  bind.statement = "shared";
  bind.write(batch);
  proto::write_empty(batch, proto::msg::kSync);
  REQUIRE(c.send(batch));
  std::vector<std::pair<char, std::string>> all;
  CHECK(c.until_ready(&all) == "E Z");
}

TEST_CASE("pgbench -M prepared runs in transaction pooling", "[prepared]") {
  ProxyOptions o;
  o.pool_size = 3;
  Proxy proxy(o);
  run("PGPASSWORD=secret pgbench -i -s 1 -q -h 127.0.0.1 -p " +
      std::to_string(Cluster::get().port(0)) + " -U app app");
  std::string out;
  int rc = run("PGPASSWORD=secret pgbench -n -S -c 12 -j 2 -t 200 -M prepared -h 127.0.0.1 -p " +
                   std::to_string(proxy.port()) + " -U app app",
               &out);
  INFO(out);
  CHECK(rc == 0);
  CHECK_THAT(out, Catch::Contains("number of transactions actually processed: 2400/2400"));
  CHECK_THAT(out, Catch::Contains("number of failed transactions: 0"));
}

TEST_CASE("the unnamed statement is described where the client's Parse left it", "[prepared]") {
  // psql's \gdesc: Parse "" + Sync, then Describe "" + Sync. In between another client may
  // take the server, or the client may get another one.
  ProxyOptions o = one_worker(2);
  Proxy proxy(o);
  auto a = connect(proxy.conninfo());
  auto b = connect(proxy.conninfo());
  auto holder = connect(proxy.conninfo());
  for (int i = 0; i < 10; ++i) {
    INFO("round " << i);
    prepare(a.get(), "", "select $1::int as mine, 'x'::text as two");
    if (i % 2 == 0) {
      query(holder.get(), "begin");
      query(holder.get(), "select 1");  // a's next request gets the other server
    }
    prepare(b.get(), "", "select 1 as theirs");  // b's unnamed statement on a shared server
    PGresult* r = PQdescribePrepared(a.get(), "");
    INFO(PQresultErrorMessage(r));
    REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
    CHECK(PQnfields(r) == 2);
    CHECK(std::string(PQfname(r, 0)) == "mine");
    CHECK(PQnparams(r) == 1);
    PQclear(r);
    if (i % 2 == 0) query(holder.get(), "commit");
  }
}

TEST_CASE("a statement whose result type changed is re-prepared as on PostgreSQL", "[prepared]") {
  // PostgreSQL: the first Execute after the change fails with "cached plan must not change
  // result type" (0A000); once the client prepares again, it works.
  ProxyOptions o = one_worker(1);
  Proxy proxy(o);
  auto a = connect(proxy.conninfo());
  auto b = connect(proxy.conninfo());
  query(a.get(), "drop table if exists retyped");
  query(a.get(), "create table retyped (k int primary key, v int)");
  query(a.get(), "insert into retyped values (1, 10)");
  const char* sql = "select v from retyped where k = $1::int";
  prepare(a.get(), "rq", sql);
  prepare(b.get(), "rq_b", sql);  // the same text: one statement on the server
  CHECK(exec_prepared(a.get(), "rq", "1") == "10");
  query(a.get(), "alter table retyped alter column v type text");
  const auto first = exec_prepared(a.get(), "rq", "1");
  CHECK_THAT(first, Catch::Contains("cached plan must not change result type"));
  PGresult* r = PQexec(a.get(), "deallocate rq");
  PQclear(r);
  prepare(a.get(), "rq", sql);
  CHECK(exec_prepared(a.get(), "rq", "1") == "10");
  // The other client gets PostgreSQL's answer too, then works once it prepares again.
  const auto other = exec_prepared(b.get(), "rq_b", "1");
  if (other != "10") {
    CHECK_THAT(other, Catch::Contains("cached plan must not change result type"));
    prepare(b.get(), "rq_b2", sql);
    CHECK(exec_prepared(b.get(), "rq_b2", "1") == "10");
  }
  // Prepared again under another name (as drivers with statement caches do).
  query(a.get(), "alter table retyped alter column v type bigint using v::bigint");
  CHECK_THAT(exec_prepared(a.get(), "rq", "1"),
             Catch::Contains("cached plan must not change result type"));
  prepare(a.get(), "rq_next", sql);
  CHECK(exec_prepared(a.get(), "rq_next", "1") == "10");
  query(a.get(), "drop table retyped");
}

TEST_CASE("SQL DEALLOCATE of a protocol-level statement works as on PostgreSQL", "[prepared]") {
  ProxyOptions o = one_worker(2);
  Proxy proxy(o);
  auto a = connect(proxy.conninfo());
  auto holder = connect(proxy.conninfo());
  for (int i = 0; i < 4; ++i) {
    INFO("round " << i);
    prepare(a.get(), "S1", "select $1::int + 1");
    CHECK(exec_prepared(a.get(), "S1", "1") == "2");
    if (i % 2 == 1) {
      query(holder.get(), "begin");
      query(holder.get(), "select 1");  // DEALLOCATE runs on the server that lacks it
    }
    PGresult* r = PQexec(a.get(), i < 2 ? "DEALLOCATE \"S1\"" : "deallocate prepare \"S1\";");
    INFO(PQresultErrorMessage(r));
    CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
    CHECK(std::string(PQcmdStatus(r)) == "DEALLOCATE");
    PQclear(r);
    if (i % 2 == 1) query(holder.get(), "commit");
    CHECK_THAT(exec_prepared(a.get(), "S1", "1"), Catch::Contains("\"S1\" does not exist"));
  }
  // Unquoted names fold to lower case, as PostgreSQL resolves them.
  prepare(a.get(), "s2", "select $1::int * 2");
  query(a.get(), "DEALLOCATE S2");
  CHECK_THAT(exec_prepared(a.get(), "s2", "4"), Catch::Contains("does not exist"));
  // A name the client never prepared: PostgreSQL's error.
  CHECK(error_code(a.get(), "deallocate nothing_here") == "26000");
  // Another client's copy of the same text keeps working.
  auto b = connect(proxy.conninfo());
  prepare(a.get(), "x", "select $1::int - 1");
  prepare(b.get(), "y", "select $1::int - 1");
  query(a.get(), "deallocate x");
  CHECK(exec_prepared(b.get(), "y", "10") == "9");
}

TEST_CASE("pg_prepared_statements shows a client its own statements, by its own names",
          "[prepared]") {
  // Transaction pooling shares servers and pgshard's statement names among clients; the
  // view must show what PostgreSQL would: the client's statements, none of another's.
  ProxyOptions o = one_worker(2);
  Proxy proxy(o);
  auto a = connect(proxy.conninfo());
  auto b = connect(proxy.conninfo());
  auto holder = connect(proxy.conninfo());
  prepare(a.get(), "a1", "select $1::int + 1");
  prepare(b.get(), "b1", "select $1::text || 'x'");
  prepare(a.get(), "a2", "select $1::int * 2");
  const std::string names =
      "select name, statement, from_sql from pg_prepared_statements order by 1";
  using Rows = std::vector<std::vector<std::string>>;
  const Rows a_sees{{"a1", "select $1::int + 1", "f"}, {"a2", "select $1::int * 2", "f"}};
  CHECK(query(a.get(), names) == a_sees);
  CHECK(query(b.get(), names) == Rows{{"b1", "select $1::text || 'x'", "f"}});
  // On a server where the client's statements were never prepared, in the extended
  // protocol, qualified, under a WITH of the client's own, with parameter types.
  query(holder.get(), "begin");
  query(holder.get(), "select 1");
  PGresult* r = PQexecParams(a.get(),
                             "with w as (select 1) select p.name, p.parameter_types::text "
                             "from pg_catalog.pg_prepared_statements p, w order by 1",
                             0, nullptr, nullptr, nullptr, nullptr, 0);
  REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
  CHECK(PQntuples(r) == 2);
  CHECK(std::string(PQgetvalue(r, 0, 0)) == "a1");
  CHECK(std::string(PQgetvalue(r, 0, 1)) == "{integer}");
  PQclear(r);
  query(holder.get(), "commit");
  CHECK(exec_prepared(a.get(), "a2", "21") == "42");
  // Deallocated statements go; SQL PREPARE (which keeps the client on its server) shows too.
  query(a.get(), "deallocate a1");
  query(a.get(), "prepare mine as select 42");
  CHECK(query(a.get(), names) ==
        Rows{{"a2", "select $1::int * 2", "f"}, {"mine", "prepare mine as select 42", "t"}});
  CHECK(query(b.get(), names) == Rows{{"b1", "select $1::text || 'x'", "f"}});
  // A name with a quote in it is the client's own too.
  prepare(b.get(), "it's", "select 2");
  CHECK(query(b.get(), "select name from pg_prepared_statements order by 1") ==
        Rows{{"b1"}, {"it's"}});
}

TEST_CASE("a DISCARD ALL that fails in a transaction drops no statement", "[prepared]") {
  // DISCARD ALL refuses to run in a transaction block. pgshard took it for done: it forgot
  // the client's statements (26000 at their next use) and the server's, then prepared a
  // name the server still had for whichever client came next (42P05).
  Proxy proxy(one_worker(1));
  auto a = connect(proxy.conninfo());
  PGresult* r = PQprepare(a.get(), "s1", "SELECT 40 + 2", 0, nullptr);
  REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  auto run_s1 = [](PGconn* c) {
    PGresult* res = PQexecPrepared(c, "s1", 0, nullptr, nullptr, nullptr, 0);
    std::string got = PQresultStatus(res) == PGRES_TUPLES_OK
                          ? std::string(PQgetvalue(res, 0, 0))
                          : std::string(PQresultErrorField(res, PG_DIAG_SQLSTATE) ?: "?");
    PQclear(res);
    return got;
  };
  CHECK(run_s1(a.get()) == "42");
  query(a.get(), "BEGIN");
  CHECK(error_code(a.get(), "DISCARD ALL") == "25001");
  query(a.get(), "ROLLBACK");
  CHECK(run_s1(a.get()) == "42");
  // Another client preparing the same text on the same server.
  auto b = connect(proxy.conninfo());
  r = PQprepare(b.get(), "s1", "SELECT 40 + 2", 0, nullptr);
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  CHECK(run_s1(b.get()) == "42");
  // A DISCARD ALL that runs drops the client's statements, as PostgreSQL's does.
  query(a.get(), "DISCARD ALL");
  CHECK(run_s1(a.get()) == "26000");
  CHECK(run_s1(b.get()) == "42");
}
