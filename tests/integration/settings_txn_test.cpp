// SET, SET LOCAL and RESET inside transactions that use several shards: every shard the
// transaction touches runs with them, and they hold after COMMIT and vanish after ROLLBACK
// (or ROLLBACK TO a savepoint before them) as on one PostgreSQL, which each case is
// compared with.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace harness;

namespace {

// What each statement of `script` answers on `c`: its first value ("" when it returns no
// row), or "ERROR <SQLSTATE>".
std::vector<std::string> answers(PGconn* c, const std::vector<std::string>& script) {
  std::vector<std::string> out;
  for (const auto& sql : script) {
    PGresult* r = PQexec(c, sql.c_str());
    const auto status = PQresultStatus(r);
    if (status == PGRES_FATAL_ERROR) {
      const char* code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      out.push_back(std::string("ERROR ") + (code ? code : "?"));
    } else if (status == PGRES_TUPLES_OK && PQntuples(r) > 0) {
      out.push_back(PQgetvalue(r, 0, 0));
    } else {
      out.push_back("");
    }
    PQclear(r);
  }
  return out;
}

// The statement reading the settings on shard `shard` (a hint: on one PostgreSQL, a comment).
std::string read_on(int shard) {
  return "/* pgshard: shard=s" + std::to_string(shard) +
         " */ select current_setting('work_mem') || ' ' || "
         "current_setting('statement_timeout') || ' ' || current_setting('TimeZone')";
}

// Reads the settings on every shard, then on the first again (the transaction comes back).
std::vector<std::string> read_everywhere() {
  return {read_on(0), read_on(1), read_on(2), read_on(0)};
}

// Runs `script` through pgshard and on one PostgreSQL: the answers must be the same.
void same_as_postgres(Proxy& proxy, const std::vector<std::string>& script) {
  auto direct = connect(Cluster::get().direct(0));
  auto c = connect(proxy.conninfo());
  const auto expected = answers(direct.get(), script);
  const auto got = answers(c.get(), script);
  REQUIRE(expected.size() == got.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("statement " << i << ": " << script[i]);
    CHECK(got[i] == expected[i]);
  }
}

// A script's statements followed by the settings read on every shard.
std::vector<std::string> then_read(std::vector<std::string> script) {
  for (auto& sql : read_everywhere()) script.push_back(sql);
  return script;
}

std::vector<std::string> concat(std::initializer_list<std::vector<std::string>> parts) {
  std::vector<std::string> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace

TEST_CASE("a SET before the transaction's first shard reaches every shard it touches",
          "[session]") {
  Proxy proxy(one_worker(2));
  same_as_postgres(proxy,
                   concat({{"set work_mem = '2001kB'", "begin", "set local work_mem = '77MB'",
                            "set statement_timeout = '3s'", "set local timezone = 'Asia/Tokyo'"},
                           then_read({"commit"}),
                           read_everywhere(),
                           {"reset statement_timeout"}}));
  // A setting the server does not report: PostgreSQL cancels the statement.
  same_as_postgres(
      proxy, {"begin", "set local statement_timeout = '50ms'",
              "/* pgshard: shard=s1 */ select pg_sleep(2)", "rollback", "show statement_timeout"});
  same_as_postgres(proxy, {"begin", "set statement_timeout = '50ms'",
                           "/* pgshard: shard=s2 */ select pg_sleep(2)", "rollback",
                           "/* pgshard: shard=s2 */ select pg_sleep(0.2)"});
}

TEST_CASE("a SET in a transaction already on several shards reaches the others too", "[session]") {
  Proxy proxy(one_worker(2));
  same_as_postgres(proxy, concat({{"begin", read_on(0), read_on(1), "set local work_mem = '5MB'",
                                   "set statement_timeout = '4s'"},
                                  then_read({"reset work_mem"}),
                                  then_read({"rollback"})}));
}

TEST_CASE("a SET rolled back with its transaction is gone from every shard", "[session]") {
  // Before, shards that joined after the SET kept it: the client read its rolled-back value
  // there, and its next statements ran with it.
  Proxy proxy(one_worker(2));
  same_as_postgres(proxy,
                   concat({{"set work_mem = '2001kB'", "begin", "set work_mem = '77MB'"},
                           then_read({"rollback"}),
                           read_everywhere(),
                           {"begin", read_on(1), "set work_mem = '78MB'"},
                           then_read({"rollback"}),
                           read_everywhere(),
                           {"begin", "set work_mem = '79MB'"},
                           then_read({"commit"}),
                           read_everywhere(),
                           {"begin", "set work_mem = '80MB'", read_on(2), "select 1/0", "commit"},
                           read_everywhere()}));
}

TEST_CASE("ROLLBACK TO a savepoint undoes the SETs after it, as PostgreSQL does", "[session]") {
  Proxy proxy(one_worker(2));
  same_as_postgres(
      proxy, concat({{"set work_mem = '2001kB'", "begin", "savepoint a", "set work_mem = '79MB'",
                      "show work_mem", "rollback to a", "show work_mem", "commit"},
                     read_everywhere(),
                     {"begin", "set work_mem = '80MB'", "savepoint a", "select 1/0",
                      "rollback to a", "commit"},
                     read_everywhere(),
                     {"begin", "savepoint a", "set work_mem = '81MB'", "release a", "commit"},
                     read_everywhere(),
                     {"begin", "savepoint a", "set work_mem = '82MB'", "savepoint b",
                      "set work_mem = '83MB'", "release b", "rollback to a", "commit"},
                     read_everywhere(),
                     {"begin", "select 1/0", "set work_mem = '84MB'", "rollback"},
                     read_everywhere()}));
}

TEST_CASE("a transaction's SETs never reach another client's statements", "[session]") {
  Proxy proxy(one_worker(1));  // every client shares one server per shard
  auto a = connect(proxy.conninfo());
  auto other = connect(proxy.conninfo());
  const std::vector<std::string> defaults(4, "4MB 0 " + scalar(other.get(), "show timezone"));
  for (const char* end : {"commit", "rollback"}) {
    INFO(end);
    query(a.get(), "begin");
    query(a.get(), "set work_mem = '77MB'");
    query(a.get(), "set local statement_timeout = '9s'");
    for (const auto& sql : read_everywhere()) query(a.get(), sql);
    query(a.get(), end);
    CHECK(answers(other.get(), read_everywhere()) == defaults);
    const std::string mine = std::string(end) == "commit" ? "77MB" : "4MB";
    for (const auto& got : answers(a.get(), read_everywhere())) CHECK(got.starts_with(mine + " 0"));
    query(a.get(), "reset work_mem");
  }
}

namespace {

// A table with one row on each shard (a count over it reads every shard's setting), and
// the options of a pgshard that shards it.
ProxyOptions with_probe_table() {
  for (int i = 0; i < Cluster::get().size(); ++i) {
    auto d = connect(Cluster::get().direct(i));
    query(d.get(), "drop table if exists settings_probe");
    query(d.get(), "create table settings_probe (id bigint)");
    query(d.get(), "insert into settings_probe values (" + std::to_string(i) + ")");
  }
  ProxyOptions o = one_worker(2);
  o.sharded_tables = "  - { table: settings_probe, column: id, type: bigint }\n";
  return o;
}

}  // namespace

TEST_CASE("a statement on every shard runs with its transaction's SETs on each", "[session]") {
  Proxy proxy(with_probe_table());
  auto c = connect(proxy.conninfo());
  auto shards_with = [&](const std::string& value) {
    return scalar(c.get(),
                  "select count(*) from settings_probe where "
                  "current_setting('work_mem') = '" +
                      value + "'");
  };
  query(c.get(), "set work_mem = '2001kB'");
  for (const std::string& first : std::vector<std::string>{"", read_on(0), read_on(1)}) {
    for (const std::string set : {"set", "set local"}) {
      INFO(first << " then " << set);
      query(c.get(), "begin");
      if (!first.empty()) query(c.get(), first);
      query(c.get(), set + " work_mem = '77MB'");
      CHECK(shards_with("77MB") == "3");
      CHECK(shards_with("77MB") == "3");  // the servers it used again
      query(c.get(), "rollback");
      CHECK(shards_with("2001kB") == "3");
    }
  }
}

TEST_CASE("after a statement on every shard, the servers lent next get the client's settings",
          "[session]") {
  // The servers of a statement on several shards were once left recorded as the
  // transaction's: a server lent later was taken to have the client's settings already.
  Proxy proxy(with_probe_table());
  auto c = connect(proxy.conninfo());
  auto other = connect(proxy.conninfo());
  query(c.get(), "set work_mem = '3MB'");
  query(c.get(), "set datestyle = 'SQL, DMY'");
  query(c.get(), "select count(*) from settings_probe");
  for (int i = 0; i < 3; ++i) {
    const std::string on = "/* pgshard: shard=s" + std::to_string(i) + " */ ";
    CHECK(scalar(c.get(), on + "select current_setting('work_mem')") == "3MB");
    CHECK(scalar(c.get(), on + "select '2024-01-02'::date") == "02/01/2024");
    CHECK(scalar(other.get(), on + "select current_setting('work_mem')") == "4MB");
    CHECK(scalar(other.get(), on + "select '2024-01-02'::date") == "2024-01-02");
  }
}

TEST_CASE("SET default_transaction_read_only follows its client, not the server it ran on",
          "[session]") {
  // Before: it is a setting the server reports (ParameterStatus) but pgshard did not keep, so
  // it stayed on the server for its next client and was lost on the client's next server.
  Proxy proxy(one_worker(1));  // one server per shard: the clients take turns on it
  auto a = connect(proxy.conninfo());
  auto b = connect(proxy.conninfo());
  const std::string show = "SHOW default_transaction_read_only";
  query(a.get(), "SET default_transaction_read_only = on");
  CHECK(scalar(b.get(), show) == "off");
  CHECK(scalar(a.get(), show) == "on");
  query(a.get(), "RESET default_transaction_read_only");
  CHECK(scalar(a.get(), show) == "off");
  CHECK(scalar(b.get(), show) == "off");
}
