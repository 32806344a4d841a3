// Session settings in transaction pooling: what a client SETs follows it to whatever server
// it gets next, and never reaches another client.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "protocol/messages.hpp"

using namespace harness;

namespace {
// Runs each statement straight on every shard (roles, functions the tests call).
void on_every_shard(std::initializer_list<std::string> statements) {
  for (int i = 0; i < Cluster::get().size(); ++i) {
    auto d = connect(Cluster::get().direct(i));
    for (const auto& sql : statements) query(d.get(), sql);
  }
}
const std::string kOtherRole =
    "do $$ begin if not exists (select 1 from pg_roles where rolname = 'pgshard_other') "
    "then create role pgshard_other; end if; end $$";
}  // namespace

TEST_CASE("a client's settings follow it and never leak to other clients", "[session]") {
  ProxyOptions o;
  o.pool_size = 1;  // every client shares one server per shard
  Proxy proxy(o);
  auto direct = connect(Cluster::get().direct(0));
  const std::string default_tz = scalar(direct.get(), "show timezone");
  auto a = connect(proxy.conninfo());
  query(a.get(), "set search_path = myschema, public");
  query(a.get(), "set statement_timeout = '3s'");
  query(a.get(), "set lock_timeout to 1500");
  query(a.get(), "set timezone = 'Asia/Tokyo'");
  query(a.get(), "set extra_float_digits = 0");
  for (int i = 0; i < 50; ++i) {
    auto other = connect(proxy.conninfo());
    INFO("client " << i);
    CHECK(scalar(other.get(), "show search_path") == "\"$user\", public");
    CHECK(scalar(other.get(), "show statement_timeout") == "0");
    CHECK(scalar(other.get(), "show lock_timeout") == "0");
    CHECK(scalar(other.get(), "show timezone") == default_tz);
    CHECK(scalar(other.get(), "show extra_float_digits") == "1");
  }
  CHECK(scalar(a.get(), "show search_path") == "myschema, public");
  CHECK(scalar(a.get(), "show statement_timeout") == "3s");
  CHECK(scalar(a.get(), "show lock_timeout") == "1500ms");
  CHECK(scalar(a.get(), "show timezone") == "Asia/Tokyo");
  CHECK(scalar(a.get(), "show extra_float_digits") == "0");
  CHECK(std::string(PQparameterStatus(a.get(), "TimeZone")) == "Asia/Tokyo");

  // A rolled-back SET is undone, a failed one never happened.
  query(a.get(), "begin");
  query(a.get(), "set search_path = elsewhere");
  query(a.get(), "rollback");
  CHECK(error_code(a.get(), "set statement_timeout = 'bogus'") == "22023");
  auto other = connect(proxy.conninfo());
  CHECK(scalar(other.get(), "show statement_timeout") == "0");
  CHECK(scalar(a.get(), "show search_path") == "myschema, public");
  CHECK(scalar(a.get(), "show statement_timeout") == "3s");
  // A committed one stays.
  query(a.get(), "begin");
  query(a.get(), "set search_path = committed, public");
  query(a.get(), "commit");
  CHECK(scalar(other.get(), "show search_path") == "\"$user\", public");
  CHECK(scalar(a.get(), "show search_path") == "committed, public");

  // set_config(..., false), quoted list elements, RESET and RESET ALL.
  query(a.get(), "select set_config('search_path', 'x1, public', false)");
  CHECK(scalar(other.get(), "show search_path") == "\"$user\", public");
  CHECK(scalar(a.get(), "show search_path") == "x1, public");
  query(a.get(), "set search_path = 'a b', public");
  CHECK(scalar(other.get(), "show search_path") == "\"$user\", public");
  CHECK(scalar(a.get(), "show search_path") == "\"a b\", public");
  query(a.get(), "reset search_path");
  CHECK(scalar(a.get(), "show search_path") == "\"$user\", public");
  query(a.get(), "reset all");
  CHECK(scalar(other.get(), "show statement_timeout") == "0");
  CHECK(scalar(a.get(), "show statement_timeout") == "0");
  CHECK(scalar(a.get(), "show lock_timeout") == "0");
}

TEST_CASE("startup options come back on RESET", "[session]") {
  ProxyOptions o;
  o.pool_size = 1;
  Proxy proxy(o);
  auto a = connect(proxy.conninfo("options='-c search_path=startup_schema,public'"));
  CHECK(scalar(a.get(), "show search_path") == "startup_schema,public");  // as PostgreSQL keeps it
  query(a.get(), "set search_path = s2");
  auto other = connect(proxy.conninfo());
  CHECK(scalar(other.get(), "show search_path") == "\"$user\", public");
  CHECK(scalar(a.get(), "show search_path") == "s2");
  query(a.get(), "reset search_path");
  CHECK(scalar(a.get(), "show search_path") == "startup_schema,public");  // as PostgreSQL keeps it
}

TEST_CASE("a SET after an earlier error still follows the client", "[session]") {
  ProxyOptions o = one_worker(1);  // the other client takes the same server in between
  Proxy proxy(o);
  auto a = connect(proxy.conninfo());
  auto other = connect(proxy.conninfo());
  CHECK(error_code(a.get(), "select 1/0") == "22012");
  query(a.get(), "set enable_seqscan to off");
  CHECK(scalar(other.get(), "show enable_seqscan") == "on");
  CHECK(scalar(a.get(), "show enable_seqscan") == "off");
  // A failed statement inside the SET's own transaction still drops it.
  query(a.get(), "begin");
  query(a.get(), "set enable_seqscan to on");
  CHECK(error_code(a.get(), "select 1/0") == "22012");
  query(a.get(), "rollback");
  CHECK(scalar(other.get(), "show enable_seqscan") == "on");
  CHECK(scalar(a.get(), "show enable_seqscan") == "off");
}

TEST_CASE("standard_conforming_strings follows its client and no other", "[session]") {
  ProxyOptions o = one_worker(1);
  Proxy proxy(o);
  auto a = connect(proxy.conninfo());
  auto other = connect(proxy.conninfo());
  query(a.get(), "set standard_conforming_strings = off");
  CHECK(scalar(other.get(), "show standard_conforming_strings") == "on");
  CHECK(std::string(PQparameterStatus(other.get(), "standard_conforming_strings")) == "on");
  CHECK(scalar(other.get(), "select length('a\\b')") == "3");
  CHECK(scalar(a.get(), "show standard_conforming_strings") == "off");
  query(a.get(), "reset standard_conforming_strings");
  CHECK(scalar(a.get(), "show standard_conforming_strings") == "on");
}

TEST_CASE("RESET of a reported setting returns to the client's startup value", "[session]") {
  // PostgreSQL resets to the value the session started with (PGDATESTYLE, PGTZ...), not to
  // the server's default.
  ProxyOptions o = one_worker(1);
  Proxy proxy(o);
  auto a = connect(proxy.conninfo("options='-c DateStyle=Postgres,MDY -c TimeZone=PST8PDT'"));
  auto other = connect(proxy.conninfo());
  CHECK(scalar(a.get(), "show datestyle") == "Postgres, MDY");
  query(a.get(), "set datestyle = iso, dmy");
  query(a.get(), "set timezone = 'Asia/Tokyo'");
  CHECK(scalar(other.get(), "show datestyle") == "ISO, MDY");
  query(a.get(), "reset datestyle");
  CHECK(scalar(a.get(), "show datestyle") == "Postgres, MDY");
  CHECK(std::string(PQparameterStatus(a.get(), "DateStyle")) == "Postgres, MDY");
  CHECK(scalar(other.get(), "show datestyle") == "ISO, MDY");
  CHECK(scalar(a.get(), "show datestyle") == "Postgres, MDY");
  query(a.get(), "set datestyle = sql");
  query(a.get(), "reset all");
  CHECK(scalar(a.get(), "show datestyle") == "Postgres, MDY");
  CHECK(scalar(a.get(), "show timezone") == "PST8PDT");
  CHECK(scalar(other.get(), "show timezone") != "PST8PDT");
  CHECK(scalar(a.get(), "show timezone") == "PST8PDT");
  // As a startup parameter (how libpq sends PGDATESTYLE) it is the same.
  auto b = connect(proxy.conninfo("options='-c DateStyle=SQL,DMY'"));
  query(b.get(), "set datestyle = iso");
  CHECK(scalar(other.get(), "show datestyle") == "ISO, MDY");
  query(b.get(), "reset datestyle");
  CHECK(scalar(b.get(), "show datestyle") == "SQL, DMY");
}

TEST_CASE("a server that had temporary objects is not handed on", "[session]") {
  // DISCARD ALL drops temporary objects but not the session's temporary schema; a client
  // given such a server could PREPARE a transaction that a fresh session refuses.
  for (const std::string mode : {"session", "transaction"}) {
    INFO(mode);
    ProxyOptions o = one_worker(1);
    o.pool_mode = mode;
    Proxy proxy(o);
    {
      auto a = connect(proxy.conninfo());
      query(a.get(), "create temp table scratch (a int)");
    }
    auto b = connect(proxy.conninfo());
    query(b.get(), "set search_path to 'pg_temp'");
    query(b.get(), "begin");
    CHECK(scalar(b.get(), "select current_schema() ~ 'pg_temp'") == "t");
    const auto code = error_code(b.get(), "prepare transaction 'test_temp'");
    CHECK(code == "0A000");
    if (code.empty()) query(b.get(), "rollback prepared 'test_temp'");
  }
}

TEST_CASE("objects in pg_temp pin the client like temporary tables", "[session]") {
  // create table pg_temp.t is a temporary table without the TEMP keyword; functions and
  // other objects in pg_temp live in the server session too.
  ProxyOptions o = one_worker(3);  // a's server, the holder's, and one for the other client
  Proxy proxy(o);
  auto a = connect(proxy.conninfo());
  auto holder = connect(proxy.conninfo());
  auto other = connect(proxy.conninfo());
  query(a.get(), "create table pg_temp.scratch (v int)");
  query(a.get(), "create function pg_temp.twice(int) returns int language sql as 'select $1 * 2'");
  for (int i = 0; i < 6; ++i) {
    INFO("round " << i);
    if (i % 2 == 0) {
      query(holder.get(), "begin");
      query(holder.get(), "select 1");
    }
    query(a.get(), "insert into pg_temp.scratch values (" + std::to_string(i) + ")");
    CHECK(scalar(a.get(), "select pg_temp.twice(21)") == "42");
    CHECK(error_code(other.get(), "select count(*) from pg_temp.scratch") == "42P01");
    if (i % 2 == 0) query(holder.get(), "commit");
  }
  CHECK(scalar(a.get(), "select count(*) from pg_temp.scratch") == "6");
}

TEST_CASE("session state pins a client to its server in transaction pooling", "[session]") {
  ProxyOptions o;
  o.pool_size = 2;
  Proxy proxy(o);
  auto a = connect(proxy.conninfo());
  auto b = connect(proxy.conninfo());
  // LISTEN: notifications keep reaching the listener between its statements.
  query(a.get(), "listen pgshard_channel");
  for (int i = 0; i < 3; ++i) {
    query(b.get(), "notify pgshard_channel, 'hello " + std::to_string(i) + "'");
    query(a.get(), "select 1");
    PGnotify* n = PQnotifies(a.get());
    REQUIRE(n != nullptr);
    CHECK(std::string(n->relname) == "pgshard_channel");
    CHECK(std::string(n->extra) == "hello " + std::to_string(i));
    PQfreemem(n);
  }
  // Temp tables and SQL PREPARE stay usable.
  query(a.get(), "create temp table pin_tmp (x int)");
  query(a.get(), "insert into pin_tmp values (1), (2)");
  query(a.get(), "prepare pin_plan as select $1::int + 1");
  for (int i = 0; i < 5; ++i) query(b.get(), "select 1");
  CHECK(scalar(a.get(), "select count(*) from pin_tmp") == "2");
  CHECK(scalar(a.get(), "execute pin_plan(41)") == "42");
  query(a.get(), "deallocate pin_plan");
  // A session advisory lock is held by the client's own server until it disconnects.
  CHECK(scalar(a.get(), "select pg_advisory_lock(4242)::text") == "");
  CHECK(scalar(b.get(), "select pg_try_advisory_lock(4242)") == "f");
  a.reset();
  // The server was reset before anyone else got it: lock released, temp table gone.
  bool got = false;
  for (int i = 0; i < 250 && !got; ++i) {
    got = scalar(b.get(), "select pg_try_advisory_lock(4242)") == "t";
    if (!got) usleep(20000);
  }
  CHECK(got);
  query(b.get(), "select pg_advisory_unlock_all()");
  auto c = connect(proxy.conninfo());
  CHECK(error_code(c.get(), "select count(*) from pin_tmp") == "42P01");
}

TEST_CASE("a role or authorization one client takes never reaches another", "[session]") {
  ProxyOptions o;
  o.workers = 1;
  o.pool_size = 2;  // the server a client leaves is the next one handed out (LIFO)
  Proxy proxy(o);
  on_every_shard({kOtherRole,
                  "create or replace function pgshard_take_role() returns int language plpgsql "
                  "as $$ begin perform set_config('role', 'pgshard_other', false); return 1; "
                  "end $$"});
  for (const char* how : {"set role pgshard_other", "set session authorization pgshard_other",
                          "select set_config('role', 'pgshard_other', false)",
                          "select 1 from (select set_config('role', 'pgshard_other', false)) s",
                          "do $$ begin perform set_config('role', 'pgshard_other', false); end $$",
                          "select pgshard_take_role()"}) {
    INFO(how);
    {
      auto a = connect(proxy.conninfo());
      query(a.get(), how);
      CHECK(scalar(a.get(), "select current_user") == "pgshard_other");
      auto b = connect(proxy.conninfo());
      CHECK(scalar(b.get(), "select current_user") == "app");
      CHECK(scalar(b.get(), "select session_user") == "app");
      // The client that took the role keeps it while others come and go.
      CHECK(scalar(a.get(), "select current_user") == "pgshard_other");
    }
    for (int i = 0; i < 4; ++i) {
      auto c = connect(proxy.conninfo());
      CHECK(scalar(c.get(), "select current_user") == "app");
      CHECK(scalar(c.get(), "select session_user") == "app");
    }
  }
}

TEST_CASE("settings a user-defined function changes follow its client and no other", "[session]") {
  // set_config(…, false) inside a function: pgshard cannot see it in the statement, so it
  // reads the server's session settings when such a request ends.
  ProxyOptions o = one_worker(1);
  Proxy proxy(o);
  on_every_shard(
      {"create or replace function pgshard_tune(t text) returns int language plpgsql "
       "as $$ begin perform set_config('statement_timeout', t, false); "
       "perform set_config('search_path', 'pg_temp_none, public', false); return 1; "
       "end $$"});
  auto a = connect(proxy.conninfo());
  auto b = connect(proxy.conninfo());
  const std::string b_path = scalar(b.get(), "show search_path");
  for (const bool in_block : {false, true}) {
    INFO("in a transaction block: " << in_block);
    if (in_block) query(a.get(), "begin");
    query(a.get(), std::string("select pgshard_tune('") + (in_block ? "7s" : "4321ms") + "')");
    if (in_block) query(a.get(), "commit");
    for (int i = 0; i < 3; ++i) {
      // B gets A's server in between and must not see A's settings; A keeps them.
      CHECK(scalar(b.get(), "show statement_timeout") == "0");
      CHECK(scalar(b.get(), "show search_path") == b_path);
      CHECK(scalar(a.get(), "show statement_timeout") == (in_block ? "7s" : "4321ms"));
      CHECK(scalar(a.get(), "show search_path") == "pg_temp_none, public");
    }
  }
  // A function that fails inside a transaction block: the block fails as on PostgreSQL,
  // ROLLBACK ends it, the settings stay as they were.
  query(a.get(), "begin");
  CHECK(error_code(a.get(), "select pgshard_tune('not a duration')") == "22023");
  CHECK(error_code(a.get(), "select 1") == "25P02");
  query(a.get(), "rollback");
  CHECK(scalar(a.get(), "show statement_timeout") == "7s");
  CHECK(scalar(b.get(), "show statement_timeout") == "0");
  // A function that leaves settings alone is trusted after a few checks (only the role is
  // read after it then); a role it takes later is still caught, and never reaches B.
  on_every_shard({kOtherRole, "grant pgshard_other to app",
                  "create or replace function pgshard_maybe_role(b bool) returns int language "
                  "plpgsql as $$ begin if b then perform set_config('role', 'pgshard_other', "
                  "false); end if; return 1; end $$"});
  auto c = connect(proxy.conninfo());
  for (int i = 0; i < 5; ++i) query(c.get(), "select pgshard_maybe_role(false)");
  query(c.get(), "select pgshard_maybe_role(true)");
  CHECK(scalar(c.get(), "select current_user") == "pgshard_other");
  c.reset();  // pinned to the one server until it leaves; the server is reset then
  CHECK(scalar(b.get(), "select current_user") == "app");
  // A function that changed nothing leaves the client as it was.
  query(b.get(),
        "select pgshard_tune(current_setting('statement_timeout')) from (select 1) s "
        "where false");
  CHECK(scalar(b.get(), "show statement_timeout") == "0");
}

namespace {
// The first value of the first row of a simple query over a raw connection.
std::string raw_scalar(RawClient& c, const std::string& sql) {
  std::string out;
  pgshard::protocol::Query{sql}.write(out);
  c.send(out);
  std::vector<std::pair<char, std::string>> all;
  c.until_ready(&all);
  for (const auto& [type, body] : all)
    if (type == 'D')
      if (auto row = pgshard::protocol::DataRow::parse(body); row && !row->values.empty())
        return row->values[0] ? std::string(*row->values[0]) : "NULL";
  return "(no row)";
}
}  // namespace

TEST_CASE("every startup parameter follows the client; encodings are named as PostgreSQL does",
          "[session]") {
  ProxyOptions o;
  o.workers = 1;
  o.pool_size = 2;
  Proxy proxy(o);
  // Drivers (node-postgres, asyncpg server_settings) send settings as startup parameters.
  RawClient c(proxy.port());
  REQUIRE(c.login("app", "secret",
                  {{"statement_timeout", "1234"}, {"work_mem", "5MB"}, {"lock_timeout", "2s"}}));
  CHECK(raw_scalar(c, "show statement_timeout") == "1234ms");
  CHECK(raw_scalar(c, "show work_mem") == "5MB");
  CHECK(raw_scalar(c, "show lock_timeout") == "2s");
  auto other = connect(proxy.conninfo());
  CHECK(scalar(other.get(), "show statement_timeout") == "0");
  CHECK(scalar(other.get(), "show work_mem") == "4MB");
  CHECK(raw_scalar(c, "show statement_timeout") == "1234ms");
  // RESET goes back to the value the client connected with.
  CHECK(raw_scalar(c, "set statement_timeout = 99") == "(no row)");
  CHECK(raw_scalar(c, "show statement_timeout") == "99ms");
  raw_scalar(c, "reset statement_timeout");
  CHECK(raw_scalar(c, "show statement_timeout") == "1234ms");

  auto utf = connect(proxy.conninfo("client_encoding=utf-8"));
  CHECK(std::string(PQparameterStatus(utf.get(), "client_encoding")) == "UTF8");
  CHECK(scalar(utf.get(), "show client_encoding") == "UTF8");
  auto latin = connect(proxy.conninfo("client_encoding=iso-8859-1"));
  CHECK(std::string(PQparameterStatus(latin.get(), "client_encoding")) == "LATIN1");
}

TEST_CASE("ParameterStatus describes the client's own login, not another user's", "[session]") {
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(),
          "do $$ begin if not exists (select 1 from pg_roles where rolname = 'pgshard_plain') "
          "then create role pgshard_plain login password 'plain'; end if; end $$");
  }
  ProxyOptions o;
  o.workers = 1;
  // Shard URLs without a user: each pgshard user logs in to the shards as itself.
  for (int i = 0; i < cluster.size(); ++i)
    o.shard_urls.push_back("postgres://127.0.0.1:" + std::to_string(cluster.port(i)) + "/app");
  o.users =
      "  - { name: app, password: secret }\n"
      "  - { name: pgshard_plain, password: plain }\n";
  Proxy proxy(o);
  auto super = connect(proxy.conninfo());
  CHECK(std::string(PQparameterStatus(super.get(), "is_superuser")) == "on");
  CHECK(scalar(super.get(), "select 1") == "1");
  auto plain = connect(proxy.conninfo("", "pgshard_plain", "plain"));
  CHECK(std::string(PQparameterStatus(plain.get(), "is_superuser")) == "off");
  CHECK(std::string(PQparameterStatus(plain.get(), "session_authorization")) == "pgshard_plain");
  CHECK(scalar(plain.get(), "select current_setting('is_superuser')") == "off");
}

TEST_CASE("a cancel for a finished statement never cancels the next one", "[session]") {
  for (const char* mode : {"session", "transaction"}) {
    INFO(mode);
    ProxyOptions o;
    o.pool_mode = mode;
    Proxy proxy(o);
    auto c = connect(proxy.conninfo());
    query(c.get(), "select 1 from pg_sleep(0.01)");
    int cancelled = 0;
    for (int i = 0; i < 20; ++i) {
      // The statement is over: a timeout in a driver fires late (asyncpg), and the client
      // goes straight on with its next statement.
      send_cancel(c.get());
      if (error_code(c.get(), "select 1 from pg_sleep(0.05)") == "57014") ++cancelled;
    }
    CHECK(cancelled == 0);
    // A cancel while a statement runs still cancels it.
    std::thread canceller([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      send_cancel(c.get());
    });
    CHECK(error_code(c.get(), "select pg_sleep(5)") == "57014");
    canceller.join();
    CHECK(scalar(c.get(), "select 2") == "2");
  }
}

TEST_CASE("pipelined simple queries: an error in one never drops the next one's SET", "[session]") {
  // Two Query messages in one write: the first fails, the second SETs. The SET holds (it
  // ran in its own implicit transaction), follows the client, and reaches nobody else.
  ProxyOptions o = one_worker(1);
  Proxy proxy(o);
  RawClient a(proxy.port());
  REQUIRE(a.login());
  auto other = connect(proxy.conninfo());
  for (const char* first : {"select 1/0", "select 1", "select 1; select 1/0"}) {
    INFO(first);
    std::string out;
    pgshard::protocol::Query{first}.write(out);
    pgshard::protocol::Query{"set work_mem = '9MB'"}.write(out);
    REQUIRE(a.send(out));
    a.until_ready();
    a.until_ready();
    CHECK(scalar(other.get(), "show work_mem") == "4MB");
    CHECK(raw_scalar(a, "show work_mem") == "9MB");
    CHECK(scalar(other.get(), "show work_mem") == "4MB");
    CHECK(raw_scalar(a, "show work_mem") == "9MB");
    REQUIRE(raw_scalar(a, "reset work_mem") == "(no row)");
  }
}

TEST_CASE("a SET under a pgshard.shard hint follows its client, not the server", "[session]") {
  // Hinted statements once skipped the parser, so their SETs were not tracked: the setting
  // stayed on the pooled server for the next client, and left its own client.
  Proxy proxy(one_worker(1));
  auto a = connect(proxy.conninfo());
  auto b = connect(proxy.conninfo());
  query(a.get(), "SET pgshard.shard = 's1'");
  query(b.get(), "SET pgshard.shard = 's1'");
  query(a.get(), "SET search_path = hinted, public");
  CHECK(scalar(b.get(), "SHOW search_path") == "\"$user\", public");
  CHECK(scalar(a.get(), "SHOW search_path") == "hinted, public");
  query(a.get(), "/* pgshard: shard=s0 */ SET statement_timeout = '7s'");
  CHECK(scalar(b.get(), "/* pgshard: shard=s0 */ SHOW statement_timeout") == "0");
  CHECK(scalar(a.get(), "SHOW statement_timeout") == "7s");
}

TEST_CASE("START TRANSACTION is answered START TRANSACTION, as PostgreSQL answers it",
          "[session]") {
  // Before, pgshard answered the START TRANSACTION it holds (until the first statement
  // picks the shard) with the tag BEGIN. Each form's tag is compared with one PostgreSQL's,
  // over the simple and the extended protocol, and for a pinned client (its server answers).
  auto tags = [](PGconn* c) {
    std::vector<std::string> out;
    for (const std::string begin : {"START TRANSACTION", "start transaction read only",
                                    "START TRANSACTION ISOLATION LEVEL REPEATABLE READ", "BEGIN"})
      for (const bool extended : {false, true}) {
        PGresult* r = extended
                          ? PQexecParams(c, begin.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0)
                          : PQexec(c, begin.c_str());
        out.push_back(begin + (extended ? " (extended): " : ": ") + PQcmdStatus(r) + " " +
                      std::to_string(PQtransactionStatus(c)));
        PQclear(r);
        query(c, "/* pgshard: shard=s1 */ select 1");  // (the transaction reaches a shard)
        query(c, "rollback");
      }
    return out;
  };
  auto direct = connect(Cluster::get().direct(1));
  const auto expected = tags(direct.get());
  CHECK(expected.front() == "START TRANSACTION: START TRANSACTION 2");
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  CHECK(tags(c.get()) == expected);
  query(c.get(), "select pg_advisory_lock(7)");  // pinned: its server answers
  CHECK(tags(c.get()) == expected);
  query(c.get(), "select pg_advisory_unlock(7)");
}
