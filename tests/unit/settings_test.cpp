// The client's session settings (session::Settings) without a network: what a client sets,
// what each server is recorded as having, the prelude that brings a server to the client's
// settings, and what the client is told at login.
#include "proxy/session/settings.hpp"

#include <catch2/catch.hpp>

#include "protocol/messages.hpp"

using namespace pgshard;
using session::Params;
using session::Settings;
using Change = router::SettingChange;

namespace {

constexpr char kIdle = 'I';
constexpr char kInBlock = 'T';
constexpr char kFailed = 'E';

struct Fixture {
  asio::io_context io;
  pool::ServerConn a{io.get_executor(), pool::BackendTarget{}};
  pool::ServerConn b{io.get_executor(), pool::BackendTarget{}};
  Settings s;
  Fixture() {
    // The servers' reported settings, and a client that asked for an application name.
    const Params server{{"TimeZone", "UTC"}, {"application_name", ""}, {"server_version", "15"}};
    a.params = b.params = {{"TimeZone", "UTC"}, {"application_name", ""}};
    s.start(server, {{"application_name", "app"}});
  }
  // A statement with `changes` run on `conn` and answered with `status`.
  void run(pool::ServerConn& conn, std::vector<Change> changes, char status = kIdle) {
    s.prelude(conn);
    s.statement(changes, 0, true);
    s.ready(status, conn);
  }
};

std::string set_sql(const std::string& name, const std::string& value) {
  return "SELECT pg_catalog.set_config(" + protocol::quote_literal(name) + ", " +
         protocol::quote_literal(value) + ", false);";
}

}  // namespace

TEST_CASE("a SET on one server is brought to the next server with other settings", "[settings]") {
  Fixture f;
  CHECK(f.s.prelude(f.a) == set_sql("application_name", "app"));
  CHECK(f.s.prelude(f.a).empty());  // synced now
  f.run(f.a, {{"work_mem", "64MB"}});
  CHECK(f.s.value("work_mem") == "64MB");
  CHECK(f.a.params["work_mem"] == "64MB");
  CHECK(f.s.prelude(f.a).empty());  // it ran there
  // Server b has another client's setting and lacks this one's.
  f.b.params["search_path"] = "other";
  CHECK(f.s.prelude(f.b) == set_sql("application_name", "app") + set_sql("work_mem", "64MB") +
                                "RESET \"search_path\";");
  CHECK(f.b.params ==
        Params{{"TimeZone", "UTC"}, {"application_name", "app"}, {"work_mem", "64MB"}});
}

TEST_CASE("a SET only prepared (Parse up to Sync, nothing run) changes nothing", "[settings]") {
  // psycopg 3 with prepare_threshold=0 prepares SET on one server and runs it on another in
  // transaction pooling: the server it was only prepared on must not be recorded as having
  // it (before, the client's SHOW there ran without its setting).
  Fixture f;
  f.s.prelude(f.a);
  f.s.statement({{"work_mem", "64MB"}}, 0, false);
  f.s.ready(kIdle, f.a);
  CHECK(f.s.value("work_mem").empty());
  CHECK_FALSE(f.a.params.contains("work_mem"));
  f.run(f.b, {{"work_mem", "64MB"}});  // runs on b
  CHECK(f.s.prelude(f.a) == set_sql("work_mem", "64MB"));
}

TEST_CASE("RESET ALL and DISCARD ALL go back to the startup settings", "[settings]") {
  Fixture f;
  f.run(f.a, {{"work_mem", "64MB"}, {"search_path", "app"}});
  f.run(f.a, {{"application_name", "changed"}});  // reported: ParameterStatus says it
  f.s.reported(f.a, "application_name", "changed");
  CHECK(f.s.value("application_name") == "changed");
  // RESET ALL (and DISCARD ALL, which the router reads as the same change).
  f.s.statement({{"", std::nullopt, true}}, 0, true);
  const std::string restore = f.s.take_finishing_sql(true);
  // The server resets application_name to its default: pgshard puts the startup value back.
  CHECK(restore.find("set_config(name, 'app', false)") != std::string::npos);
  f.s.ready(kIdle, f.a);
  f.s.reported(f.a, "application_name", "app");
  CHECK_FALSE(f.a.params.contains("work_mem"));
  CHECK(f.s.client() == Params{{"TimeZone", "UTC"}, {"application_name", "app"}});
  // A server another client left with its settings is reset to the startup ones.
  f.b.params["work_mem"] = "1GB";
  CHECK(f.s.prelude(f.b) == set_sql("application_name", "app") + "RESET \"work_mem\";");
  // The server's own DISCARD ALL at the end of a session: only what it reports is known.
  f.a.params["search_path"] = "x";
  Settings::server_discarded(f.a);
  CHECK(f.a.params == Params{{"TimeZone", "UTC"}, {"application_name", "app"}});
  CHECK(f.s.prelude(f.a).empty());  // (compared again: nothing differs)
}

TEST_CASE("a SET in a transaction that fails or rolls back does not hold", "[settings]") {
  Fixture f;
  // BEGIN; SET work_mem; an error; ROLLBACK.
  f.run(f.a, {{"work_mem", "64MB"}}, kInBlock);
  f.s.failed();
  f.s.ready(kFailed, f.a);
  f.s.rolled_back();
  f.s.ready(kIdle, f.a);
  CHECK(f.s.value("work_mem").empty());
  CHECK_FALSE(f.a.params.contains("work_mem"));
  // BEGIN; SET; ROLLBACK without an error.
  f.run(f.a, {{"work_mem", "64MB"}}, kInBlock);
  f.s.rolled_back();
  f.s.ready(kIdle, f.a);
  CHECK(f.s.value("work_mem").empty());
  // An error with no SET pending must not fail a later SET.
  f.s.failed();
  f.run(f.a, {{"work_mem", "8MB"}});
  CHECK(f.s.value("work_mem") == "8MB");
  // A SET in a transaction that commits holds.
  f.run(f.a, {{"work_mem", "16MB"}}, kInBlock);
  f.s.ready(kIdle, f.a);
  CHECK(f.s.value("work_mem") == "16MB");
}

TEST_CASE("a SET pipelined behind a failing request holds once that request is answered",
          "[settings]") {
  Fixture f;
  f.s.statement({}, 0, true);                      // the request ahead, which fails
  f.s.statement({{"work_mem", "64MB"}}, 1, true);  // pipelined behind it
  f.s.failed();
  f.s.ready(kIdle, f.a);  // the first request's ReadyForQuery
  CHECK(f.s.value("work_mem").empty());
  f.s.ready(kIdle, f.a);  // the SET's
  CHECK(f.s.value("work_mem") == "64MB");
}

TEST_CASE("each setting is reported once at login, with the client's value", "[settings]") {
  asio::io_context io;
  pool::ServerConn conn{io.get_executor(), pool::BackendTarget{}};
  Settings s;
  Params wanted;
  REQUIRE_FALSE(Settings::from_startup({{"user", "app"},
                                        {"DateStyle", "German"},
                                        {"client_encoding", "utf-8"},
                                        {"options", "-c work_mem=8MB"}},
                                       wanted)
                    .has_value());
  CHECK(wanted ==
        Params{{"DateStyle", "German"}, {"client_encoding", "UTF8"}, {"work_mem", "8MB"}});
  const Params server{{"DateStyle", "ISO, MDY"},
                      {"client_encoding", "SQL_ASCII"},
                      {"server_version", "15.4"},
                      {"TimeZone", "UTC"}};
  s.start(server, wanted);
  const Params told = s.welcome(server, "app");
  // A map: each name once. The client's own values win over the server's.
  CHECK(told == Params{{"DateStyle", "German"},
                       {"TimeZone", "UTC"},
                       {"client_encoding", "UTF8"},
                       {"server_version", "15.4"},
                       {"session_authorization", "app"}});
  // work_mem is not reported (no ParameterStatus) but follows the client to its servers.
  CHECK(s.prelude(conn).find(set_sql("work_mem", "8MB")) != std::string::npos);
  // A ParameterStatus the server sends is the client's setting from then on; the server is
  // known to have it (no prelude sets it again).
  s.reported(conn, "TimeZone", "Europe/Paris");
  CHECK(s.value("TimeZone") == "Europe/Paris");
  CHECK(s.prelude(conn).empty());
  Params bad;
  CHECK(Settings::from_startup({{"options", "-d 5"}}, bad).has_value());
}

TEST_CASE("settings a function changed are adopted after the check", "[settings]") {
  Fixture f;
  f.s.prelude(f.a);
  f.s.statement({}, 0, true);
  f.s.functions_called({"app.f"}, false);
  const std::string sql = f.s.take_finishing_sql(true);
  CHECK(sql.find("pg_settings") != std::string::npos);
  protocol::DataRow row;
  row.values.push_back(protocol::Value("work_mem"));
  row.values.push_back(protocol::Value("32MB"));
  std::string frame;
  row.write(frame);
  f.s.finishing_row(std::string_view(frame).substr(5));
  auto checked = f.s.ready(kIdle, f.a);
  REQUIRE(checked);
  CHECK(checked->outcome == runtime::SettingsCheck::kChanged);
  CHECK(checked->full);
  CHECK(checked->functions == std::vector<std::string>{"app.f"});
  CHECK(f.s.value("work_mem") == "32MB");
  CHECK(f.a.params["work_mem"] == "32MB");
  // No function called since: no check.
  CHECK(f.s.take_finishing_sql(true).empty());
}

namespace {

Change marker(const std::string& name, Change::Kind kind) {
  return {name, std::nullopt, false, kind};
}

}  // namespace

TEST_CASE("ROLLBACK TO a savepoint drops the SETs after it, RELEASE keeps them", "[settings]") {
  using Kind = Change::Kind;
  Fixture f;
  f.s.prelude(f.a);
  f.run(f.a, {{"work_mem", "1MB"}, marker("a", Kind::kSavepoint), {"work_mem", "2MB"}}, kInBlock);
  f.s.statement({marker("a", Kind::kRollbackTo)}, 0, true);
  f.s.rolled_back();  // (the tag of ROLLBACK TO is "ROLLBACK")
  f.s.ready(kInBlock, f.a);
  f.run(f.a, {marker("b", Kind::kSavepoint), {"search_path", "x"}, marker("b", Kind::kRelease)},
        kInBlock);
  // An error after a savepoint, undone by ROLLBACK TO it: the SETs before it hold.
  f.run(f.a, {marker("c", Kind::kSavepoint), {"work_mem", "3MB"}}, kInBlock);
  f.s.failed();
  f.s.ready(kFailed, f.a);
  f.run(f.a, {marker("c", Kind::kRollbackTo)}, kInBlock);
  f.run(f.a, {});  // COMMIT
  CHECK(f.s.value("work_mem") == "1MB");
  CHECK(f.s.value("search_path") == "x");
}

TEST_CASE("a transaction's SETs reach the servers that join it, and hold only if it commits",
          "[settings]") {
  using Kind = Change::Kind;
  for (const bool commit : {false, true}) {
    INFO("commit " << commit);
    Fixture f;
    f.s.prelude(f.a);
    f.s.prelude(f.b);
    f.s.statement({{"work_mem", "2MB"}, {"statement_timeout", "1ms", false, Kind::kLocal}}, 0,
                  true);
    CHECK(f.s.catch_up(f.a, true).empty());  // the request itself runs them there
    f.s.ready(kInBlock, f.a);
    f.s.statement({}, 0, true);
    CHECK(f.s.catch_up(f.b, true) ==
          set_sql("work_mem", "2MB") +
              "SELECT pg_catalog.set_config('statement_timeout', '1ms', true);");
    CHECK(f.s.catch_up(f.b, true).empty());  // once
    f.s.ready(kInBlock, f.b);
    f.s.transaction_ended(commit);  // pgshard's COMMIT or ROLLBACK on both
    CHECK(f.s.value("work_mem") == (commit ? "2MB" : ""));
    // Neither server is taken to have the setting: each is brought to the client's.
    for (auto* conn : {&f.a, &f.b})
      CHECK(f.s.prelude(*conn) == (commit ? set_sql("work_mem", "2MB") : "RESET \"work_mem\";"));
  }
}
