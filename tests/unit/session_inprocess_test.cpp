// session::Session in process: a client over a socketpair, fake shards on loopback, no
// pgshard binary and no PostgreSQL (session_harness.hpp).
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "protocol/startup.hpp"
#include "session_harness.hpp"

using namespace pgshard::testing;
namespace proto = pgshard::protocol;

namespace {

bool mentions(const Received& r, std::string_view what) {
  return std::any_of(r.statements.begin(), r.statements.end(),
                     [&](const std::string& s) { return s.find(what) != std::string::npos; });
}

int count_mentions(const Received& r, std::string_view what) {
  return static_cast<int>(std::count_if(r.statements.begin(), r.statements.end(), [&](auto& s) {
    return s.find(what) != std::string::npos;
  }));
}

// "SELECT name FROM users ...": each shard answers with its own name, so the client's row
// says which shard answered.
std::optional<Reply> shard_names(int shard, std::string_view sql,
                                 const std::vector<std::optional<std::string>>&) {
  if (sql.find("FROM users") == std::string_view::npos) return std::nullopt;
  return Reply{{{"name"}}, {{"s" + std::to_string(shard)}}, {}, {}, false, false};
}

std::string extended(std::string_view sql, std::string_view param) {
  std::string out;
  proto::Parse{"", sql, {}}.write(out);
  proto::Bind b;
  b.params.push_back(param);
  b.write(out);
  proto::Execute{"", 0}.write(out);
  return out;
}

}  // namespace

TEST_CASE("a client logs in and gets the shards' parameters", "[session_inprocess]") {
  Harness h;
  std::vector<Message> login;
  Client c = h.login(&login);
  INFO(types(login));
  REQUIRE(login.front().type == proto::msg::kAuthentication);
  auto auth = proto::Authentication::parse(login.front().body);
  REQUIRE(auth);
  CHECK(auth->code == proto::auth::kOk);
  std::map<std::string, std::string> params;
  int keys = 0;
  for (const auto& m : login) {
    if (m.type == proto::msg::kParameterStatus) {
      auto p = proto::ParameterStatus::parse(m.body);
      REQUIRE(p);
      params[std::string(p->name)] = std::string(p->value);
    }
    keys += m.type == proto::msg::kBackendKeyData;
  }
  CHECK(params["server_version"] == "16.4");
  CHECK(params["client_encoding"] == "UTF8");
  CHECK(params["integer_datetimes"] == "on");
  CHECK(params["standard_conforming_strings"] == "on");
  CHECK(params["TimeZone"] == "UTC");
  CHECK(keys == 1);
  CHECK(login.back().body == std::string(1, proto::txn_status::kIdle));
  // A statement that names no table goes to one shard and comes back.
  auto r = c.query("SELECT 1");
  CHECK(types(r).find('E') == std::string::npos);
  CHECK(r.back().body == "I");
}

TEST_CASE("a keyed SELECT reaches the shard its key hashes to", "[session_inprocess]") {
  Harness h(shard_names);
  Client c = h.login();
  std::set<int> used;
  for (int64_t key = 1; key <= 8; ++key) {
    h.clear_received();
    const std::string sql = "SELECT name FROM users WHERE id = " + std::to_string(key);
    auto r = c.query(sql);
    const int shard = h.shard_of(key);
    used.insert(shard);
    INFO("key " << key << "\n" << h.dump());
    CHECK(data_rows(r) == std::vector<std::vector<std::string>>{{"s" + std::to_string(shard)}});
    CHECK(count_mentions(h.received(shard), "FROM users") == 1);
    CHECK_FALSE(mentions(h.received(1 - shard), "FROM users"));
  }
  CHECK(used.size() == 2);  // the keys spread: routing is not "always the first shard"
}

TEST_CASE("an error mid-batch skips to Sync and leaves the session usable", "[session_inprocess]") {
  Harness h([](int shard, std::string_view sql,
               const std::vector<std::optional<std::string>>& p) -> std::optional<Reply> {
    if (sql.find("boom") != std::string_view::npos) return Reply{{}, {}, {}, "22012", false, false};
    if (sql.find("FROM users") != std::string_view::npos)
      return Reply{
          {{"name"}},
          {{"s" + std::to_string(shard) + ":" + (p.empty() || !p[0] ? std::string("-") : *p[0])}},
          {},
          {},
          false,
          false};
    return std::nullopt;
  });
  Client c = h.login();
  h.clear_received();
  std::string batch = extended("SELECT name FROM users WHERE id = $1", "7") +
                      extended("SELECT boom FROM users WHERE id = $1", "7") +
                      extended("SELECT third FROM users WHERE id = $1", "7");
  proto::write_empty(batch, proto::msg::kSync);
  c.send(batch);
  auto r = c.read_until_ready();
  const int shard = h.shard_of(7);
  INFO(h.dump());
  CHECK(types(r) == "12DC12EZ");
  CHECK(data_rows(r) ==
        std::vector<std::vector<std::string>>{{"s" + std::to_string(shard) + ":7"}});
  CHECK(error_code(r) == "22012");
  CHECK(r.back().body == "I");
  // Nothing after the error ran, on any shard.
  CHECK_FALSE(mentions(h.received(0), "third"));
  CHECK_FALSE(mentions(h.received(1), "third"));
  // The next request is served normally.
  auto next = c.query("SELECT name FROM users WHERE id = 7");
  CHECK(data_rows(next) ==
        std::vector<std::vector<std::string>>{{"s" + std::to_string(shard) + ":-"}});
  CHECK(next.back().body == "I");
}

TEST_CASE("COPY FROM STDIN splits rows by key across the shards", "[session_inprocess]") {
  Harness h;
  Client c = h.login();
  h.clear_received();
  std::string out;
  proto::Query{"COPY users (id, name) FROM STDIN"}.write(out);
  c.send(out);
  auto start = c.read(2s);
  INFO(h.dump());
  REQUIRE(start);
  REQUIRE(start->type == proto::msg::kCopyInResponse);
  std::string expected[2];
  std::string first, second;
  for (int id = 1; id <= 12; ++id) {
    const std::string line = std::to_string(id) + "\tname" + std::to_string(id) + "\n";
    expected[h.shard_of(id)] += line;
    (id <= 5 ? first : second) += line;
  }
  out.clear();
  proto::CopyData{first}.write(out);
  proto::CopyData{second}.write(out);
  proto::write_empty(out, proto::msg::kCopyDone);
  c.send(out);
  auto r = c.read_until_ready();
  INFO(types(r) << "\n" << h.dump());
  REQUIRE(types(r) == "CZ");
  CHECK(proto::CommandComplete::parse(r[0].body)->tag == "COPY 12");
  CHECK(r.back().body == "I");
  REQUIRE_FALSE(expected[0].empty());
  REQUIRE_FALSE(expected[1].empty());
  CHECK(h.received(0).copy_data == expected[0]);
  CHECK(h.received(1).copy_data == expected[1]);
}

TEST_CASE("a SELECT without key merges the shards' rows in ORDER BY order", "[session_inprocess]") {
  std::map<int, std::vector<Row>> rows;  // by shard, each shard's rows sorted as it would
  Harness h([&rows](int shard, std::string_view sql,
                    const std::vector<std::optional<std::string>>&) -> std::optional<Reply> {
    if (sql.find("FROM users") == std::string_view::npos) return std::nullopt;
    return Reply{{{"id", 20}, {"name"}}, rows[shard], {}, {}, false, false};
  });
  for (int id = 1; id <= 10; ++id)
    rows[h.shard_of(id)].push_back({std::to_string(id), "n" + std::to_string(id)});
  REQUIRE(rows.size() == 2);
  Client c = h.login();
  h.clear_received();
  auto r = c.query("SELECT id, name FROM users ORDER BY id");
  INFO(types(r) << "\n" << h.dump());
  std::vector<std::vector<std::string>> want;
  for (int id = 1; id <= 10; ++id) want.push_back({std::to_string(id), "n" + std::to_string(id)});
  CHECK(data_rows(r) == want);
  CHECK(mentions(h.received(0), "FROM users"));
  CHECK(mentions(h.received(1), "FROM users"));
  REQUIRE(r.size() >= 2);
  auto tag = proto::CommandComplete::parse(r[r.size() - 2].body);
  REQUIRE(tag);
  CHECK(tag->tag == "SELECT 10");
  CHECK(r.back().body == "I");
}

TEST_CASE("a client leaving mid-request does not hold the worker or its server",
          "[session_inprocess]") {
  // One server per shard: if the left client's server were not given back (or replaced),
  // the next client would wait for it until pool_wait (1 s) and fail.
  Harness h([](int shard, std::string_view sql, const std::vector<std::optional<std::string>>& p) {
    if (sql.find("pg_sleep") != std::string_view::npos)
      return std::optional<Reply>(Reply{{}, {}, {}, {}, false, true});
    return shard_names(shard, sql, p);
  });
  const int shard = h.shard_of(1);
  {
    Client c = h.login();
    std::string out;
    proto::Query{"SELECT pg_sleep(60) FROM users WHERE id = 1"}.write(out);
    c.send(out);
    REQUIRE(Harness::wait_until([&] { return mentions(h.received(shard), "pg_sleep"); }));
  }
  INFO(h.dump());
  CHECK(Harness::wait_until([&] { return h.shared().clients.load() == 0; }, 1500ms));
  CHECK(h.worker().ask([] { return 1; }) == 1);
  Client next = h.login();
  auto r = next.query("SELECT name FROM users WHERE id = 1");
  CHECK(data_rows(r) == std::vector<std::vector<std::string>>{{"s" + std::to_string(shard)}});
  // The statement left running was stopped: cancelled, or its connection closed (and the
  // next client's served by a new one).
  const auto got = h.received(shard);
  INFO(h.dump());
  CHECK((got.cancels >= 1 || got.connections >= 2));
}

namespace {

// Keys of users on shard 0 and on shard 1 (the first of each, from 1 up).
std::pair<int64_t, int64_t> keys_on_both(const Harness& h) {
  int64_t on0 = 0, on1 = 0;
  for (int64_t key = 1; on0 == 0 || on1 == 0; ++key) (h.shard_of(key) == 0 ? on0 : on1) = key;
  return {on0, on1};
}

// A pipeline (psycopg 3's executemany): one Parse, a Bind and Execute per key, one Sync.
std::string insert_pipeline(const std::vector<int64_t>& keys) {
  std::string out;
  proto::Parse{"ins", "INSERT INTO users (id, name) VALUES ($1, 'p')", {}}.write(out);
  for (const int64_t key : keys) {
    const std::string text = std::to_string(key);  // (a Bind's values are views)
    proto::Bind b;
    b.statement = "ins";
    b.params.push_back(text);
    b.write(out);
    proto::Execute{"", 0}.write(out);
  }
  proto::write_empty(out, proto::msg::kSync);
  return out;
}

// An INSERT of key `*failing` fails with 23505, as a duplicate key would.
Script failing_insert(std::shared_ptr<std::atomic<int64_t>> failing) {
  return [failing](int, std::string_view sql,
                   const std::vector<std::optional<std::string>>& p) -> std::optional<Reply> {
    if (sql.starts_with("INSERT") && !p.empty() && p[0] == std::to_string(failing->load()))
      return Reply{{}, {}, {}, "23505", false, false};
    return std::nullopt;
  };
}

}  // namespace

TEST_CASE("a pipeline over several shards answers as one PostgreSQL would, one transaction",
          "[session_inprocess]") {
  // pgshard runs it in parts (each with a Sync of its own) inside its own BEGIN ... COMMIT:
  // the client sees the replies of its messages and one ReadyForQuery, nothing of
  // pgshard's BEGIN, Syncs or COMMIT.
  Harness h;
  const auto [on0, on1] = keys_on_both(h);
  Client c = h.login();
  h.clear_received();
  c.send(insert_pipeline({on0, on1, on0}));
  auto r = c.read_until_ready();
  INFO(types(r) << "\n" << h.dump());
  CHECK(types(r) == "12C2C2CZ");
  CHECK(r.back().body == "I");
  CHECK_FALSE(c.read(100ms));  // nothing more: no stray ReadyForQuery
  for (int shard : {0, 1}) {
    const auto got = h.received(shard);
    CHECK(count_mentions(got, "BEGIN") == 1);
    CHECK(count_mentions(got, "INSERT") == (shard == 0 ? 2 : 1));
    CHECK(count_mentions(got, "COMMIT") == 1);
  }
  // Inside the client's transaction the pipeline joins it; its ReadyForQuery says so.
  h.clear_received();
  CHECK(types(c.query("BEGIN")) == "CZ");
  c.send(insert_pipeline({on1, on0}));
  auto in_txn = c.read_until_ready();
  CHECK(types(in_txn) == "12C2CZ");
  CHECK(in_txn.back().body == "T");
  auto rollback = c.query("ROLLBACK");
  CHECK(types(rollback) == "CZ");
  CHECK(rollback.back().body == "I");
  CHECK_FALSE(mentions(h.received(0), "COMMIT"));
  CHECK_FALSE(mentions(h.received(1), "COMMIT"));
}

TEST_CASE("a pipeline over several shards that fails rolls back and skips to its Sync",
          "[session_inprocess]") {
  SECTION("the error on the second shard: pgshard's ROLLBACK of both shows nothing") {
    auto failing = std::make_shared<std::atomic<int64_t>>(0);
    Harness h(failing_insert(failing));
    const auto [on0, on1] = keys_on_both(h);
    failing->store(on1);
    Client c = h.login();
    h.clear_received();
    c.send(insert_pipeline({on0, on1, on0 + 1000000}));
    auto r = c.read_until_ready();
    INFO(types(r) << "\n" << h.dump());
    CHECK(types(r) == "12C2EZ");
    CHECK(error_code(r) == "23505");
    CHECK(r.back().body == "I");
    CHECK_FALSE(c.read(100ms));
    CHECK_FALSE(mentions(h.received(0), std::to_string(on0 + 1000000)));
    CHECK_FALSE(mentions(h.received(1), std::to_string(on0 + 1000000)));
    CHECK(mentions(h.received(0), "ROLLBACK"));
    CHECK_FALSE(mentions(h.received(0), "COMMIT"));
    // The session goes on as usual.
    CHECK(types(c.query("SELECT 1")) == "TCZ");
  }
  SECTION("the error on the first shard: its ROLLBACK, relayed from that shard, is hidden") {
    auto failing = std::make_shared<std::atomic<int64_t>>(0);
    Harness h(failing_insert(failing));
    const auto [on0, on1] = keys_on_both(h);
    failing->store(on0);
    Client c = h.login();
    h.clear_received();
    c.send(insert_pipeline({on0, on1}));
    auto r = c.read_until_ready();
    INFO(types(r) << "\n" << h.dump());
    CHECK(types(r) == "12EZ");
    CHECK(error_code(r) == "23505");
    CHECK(r.back().body == "I");
    CHECK_FALSE(c.read(100ms));
    CHECK(mentions(h.received(0), "ROLLBACK"));
    CHECK_FALSE(mentions(h.received(1), "INSERT"));
    CHECK(types(c.query("SELECT 1")) == "TCZ");
  }
}

TEST_CASE("INSERT ... SELECT across shards inserts the merged answer, shows none of the read",
          "[session_inprocess]") {
  // The SELECT runs on every shard and is merged as a client's read would be (a count
  // summed), its answer kept by pgshard (executor::capture_read) and put into the INSERT,
  // which goes to the shard its key names.
  Harness h([](int shard, std::string_view sql,
               const std::vector<std::optional<std::string>>&) -> std::optional<Reply> {
    if (sql.starts_with("SELECT") && sql.find("FROM users") != std::string_view::npos)
      return Reply{{{"count", 20}, {"name"}},
                   {{std::to_string(shard == 0 ? 3 : 4), std::string("c")}},
                   {},
                   {},
                   false,
                   false};
    return std::nullopt;
  });
  Client c = h.login();
  h.clear_received();
  auto r = c.query("INSERT INTO users (id, name) SELECT count(*), 'c' FROM users");
  INFO(types(r) << "\n" << h.dump());
  CHECK(types(r) == "CZ");
  CHECK(r.back().body == "I");
  const int target = h.shard_of(7);
  CHECK(mentions(h.received(0), "FROM users"));
  CHECK(mentions(h.received(1), "FROM users"));
  CHECK(count_mentions(h.received(target), "INSERT") == 1);
  CHECK(mentions(h.received(target), "7"));
  CHECK_FALSE(mentions(h.received(1 - target), "INSERT"));
}

TEST_CASE("startup refusals: each FATAL with PostgreSQL's SQLSTATE and text",
          "[session_inprocess]") {
  Harness h;
  auto fatal_of = [&](const std::string& bytes) {
    Client c = h.connect();
    c.send(bytes);
    auto m = c.read();
    REQUIRE(m);
    REQUIRE(m->type == proto::msg::kErrorResponse);
    auto e = proto::ErrorFields::parse(m->body);
    REQUIRE(e);
    CHECK(c.closed_within(2s));
    return std::string(e->code()) + " " + std::string(e->message());
  };
  auto startup = [](std::vector<std::pair<std::string, std::string>> params) {
    std::string out;
    proto::write_startup(out, params);
    return out;
  };
  CHECK(fatal_of(startup({{"database", "app"}})) ==
        "28000 no PostgreSQL user name specified in startup packet");
  CHECK(fatal_of(startup({{"user", "app"}, {"replication", "database"}})) ==
        "0A000 replication connections are not supported by pgshard");
  // Bytes after SSLRequest, before the handshake (CVE-2021-23214).
  std::string ssl;
  proto::write_ssl_request(ssl);
  CHECK(fatal_of(ssl + startup({{"user", "app"}})) ==
        "08P01 received unencrypted data after SSL request");
  // A parameter list without its final terminator.
  std::string unterminated = startup({{"user", "app"}});
  unterminated.pop_back();
  unterminated[3] = static_cast<char>(unterminated[3] - 1);
  CHECK(fatal_of(unterminated) == "08P01 invalid startup packet layout");
  // A CancelRequest for no session: the connection closes without an answer.
  Client cancel = h.connect();
  std::string out;
  proto::write_cancel_request(out, 12345, 678);
  cancel.send(out);
  CHECK(cancel.closed_within(2s));
  // A newer protocol minor: NegotiateProtocolVersion, then the login goes on.
  Client newer = h.connect();
  auto v32 = startup({{"user", "app"}, {"database", "app"}});
  v32[7] = 2;  // 3.2
  newer.send(v32);
  auto first = newer.read();
  REQUIRE(first);
  CHECK(first->type == 'v');
  auto rest = newer.read_until_ready();
  CHECK(error_code(rest).empty());
}
