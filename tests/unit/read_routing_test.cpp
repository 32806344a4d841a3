// Reads on replicas without a network: which statements may leave the primary, where a read
// goes by read_from / load_balance / read_consistency and the hosts' health, and the
// read-your-writes token (a write waits for a primary check sent after it, then for a replica
// that replayed that far).
#include "proxy/session/read_routing.hpp"

#include <catch2/catch.hpp>

#include "config/config.hpp"
#include "proxy/router/router.hpp"

using namespace pgshard;
using runtime::CheckResult;
using runtime::HostHealth;
using session::ReadRouting;

namespace {

std::shared_ptr<const config::Config> map_with(const std::string& extra) {
  return config::load_string(R"(users: [{ name: app, password: secret }]
shards:
  - { name: s0, primary: postgres://p0/app, replicas: [postgres://r1/app, postgres://r2/app] }
  - { name: s1, primary: postgres://p1/app }
sharded_tables: [{ table: accounts, column: id }]
)" + extra,
                             "t.yaml");
}

bool read_only(const std::string& sql, const config::Config& cfg) {
  return router::route_query(sql, {}, cfg).read_only;
}

CheckResult at(bool replica, uint64_t lsn, Clock::time_point started) {
  CheckResult r{replica, lsn, 0, 7};
  r.started = started;
  return r;
}

// Every host of the map up: s0's primary at `lsn`, its replicas at `r1` and `r2`.
void all_up(HostHealth& h, const config::Config& cfg, uint64_t lsn, uint64_t r1, uint64_t r2,
            Clock::time_point started) {
  h.record(0, at(false, lsn, started), started, cfg.replication);
  h.record(1, at(true, r1, started), started, cfg.replication);
  h.record(2, at(true, r2, started), started, cfg.replication);
  h.record(3, at(false, 1, started), started, cfg.replication);
}

}  // namespace

TEST_CASE("replica reads: only statements that cannot write or lock may leave the primary",
          "[replicas]") {
  auto cfg = map_with("read_safe_functions: [app.price_of]\n");
  for (const char* sql :
       {"SELECT 1", "SELECT * FROM accounts WHERE id = 1", "SELECT count(*) FROM accounts",
        "SELECT now(), inet_server_port()", "SELECT 1; SELECT 2",
        "WITH a AS (SELECT * FROM accounts) SELECT * FROM a", "VALUES (1)",
        "SELECT app.price_of(id) FROM accounts WHERE id = 2",
        "/* pgshard: shard=s0 */ SELECT count(*) FROM accounts"}) {
    INFO(sql);
    CHECK(read_only(sql, *cfg));
  }
  for (const char* sql :
       {"INSERT INTO accounts VALUES (1)",
        "UPDATE accounts SET v = 1 WHERE id = 1",
        "SELECT * FROM accounts WHERE id = 1 FOR UPDATE",
        "SELECT * FROM accounts WHERE id = 1 FOR SHARE",
        "SELECT * FROM (SELECT * FROM accounts FOR UPDATE) s",
        "WITH d AS (DELETE FROM accounts WHERE id = 1 RETURNING *) SELECT * FROM d",
        "SELECT nextval('s')",
        "SELECT setval('s', 5)",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_try_advisory_xact_lock(1)",
        "SELECT set_config('a.b', 'c', false)",
        "SELECT random()",
        "SELECT txid_current()",
        "SELECT pg_current_xact_id()",
        "SELECT other_function()",
        "SELECT * INTO copy_of FROM accounts",
        "SELECT 1; INSERT INTO accounts VALUES (2)",
        "EXPLAIN ANALYZE SELECT 1",
        "SET work_mem = '1MB'",
        "BEGIN",
        "CREATE TABLE x (a int)",
        "/* pgshard: shard=s0 */ SELECT nextval('s')",
        "LISTEN x",
        "COPY accounts TO STDOUT"}) {
    INFO(sql);
    CHECK_FALSE(read_only(sql, *cfg));
  }
}

TEST_CASE("replica reads: read_from and load_balance pick among the readable replicas",
          "[replicas]") {
  const auto now = Clock::now();
  ReadRouting::Ask ask{0, false, now, nullptr};
  SECTION("primary (the default) keeps every read on the primary") {
    auto cfg = map_with("");
    HostHealth h;
    h.configure(*cfg);
    all_up(h, *cfg, 10, 10, 10, now);
    ReadRouting r(0);
    CHECK(r.target(*cfg, cfg->users[0], h, ask) == 0);
  }
  SECTION("replicas, round robin: both replicas in turn; a shard without replicas stays") {
    auto cfg = map_with("read_from: replicas\nread_consistency: eventual\n");
    HostHealth h;
    h.configure(*cfg);
    all_up(h, *cfg, 10, 10, 10, now);
    ReadRouting r(0);
    const int r1 = cfg->replica_target(0, 0), r2 = cfg->replica_target(0, 1);
    CHECK(r1 == 2);
    CHECK(r2 == 3);
    CHECK(cfg->host_of(r2).shard == 0);
    CHECK(cfg->host_of(r2).replica == 1);
    CHECK(r.target(*cfg, cfg->users[0], h, ask) == r1);
    CHECK(r.target(*cfg, cfg->users[0], h, ask) == r2);
    CHECK(r.target(*cfg, cfg->users[0], h, ask) == r1);
    ReadRouting::Ask s1{1, false, now, nullptr};
    CHECK(r.target(*cfg, cfg->users[0], h, s1) == 1);
    // A replica that fails its check is left out; with none up the primary serves, counted.
    h.record_failure(1, "refused", now, cfg->replication);
    CHECK(r.target(*cfg, cfg->users[0], h, ask) == r2);
    CHECK(r.target(*cfg, cfg->users[0], h, ask) == r2);
    h.record_failure(2, "refused", now, cfg->replication);
    CHECK(r.target(*cfg, cfg->users[0], h, ask) == 0);
    const auto hosts = h.snapshot();
    CHECK(hosts[0].fallbacks == 1);
    CHECK(hosts[2].reads == 3);  // r2: its own turn and the two r1 could not take
  }
  SECTION("least_active: the replica with fewer servers lent out") {
    auto cfg =
        map_with("read_from: replicas\nread_consistency: eventual\nload_balance: least_active\n");
    HostHealth h;
    h.configure(*cfg);
    all_up(h, *cfg, 10, 10, 10, now);
    ReadRouting r(0);
    ReadRouting::Ask busy = ask;
    busy.busy = [&](int target) { return target == cfg->replica_target(0, 0) ? 5 : 1; };
    for (int i = 0; i < 3; ++i)
      CHECK(r.target(*cfg, cfg->users[0], h, busy) == cfg->replica_target(0, 1));
  }
  SECTION("a replica past the lag limit serves nothing; strong reads the primary") {
    auto cfg = map_with(
        "read_from: replicas\nread_consistency: eventual\n"
        "max_replica_lag: { bytes: 100 }\n");
    HostHealth h;
    h.configure(*cfg);
    all_up(h, *cfg, 1000, 500, 990, now);
    ReadRouting r(0);
    for (int i = 0; i < 3; ++i)
      CHECK(r.target(*cfg, cfg->users[0], h, ask) == cfg->replica_target(0, 1));
    auto strong = map_with("read_from: replicas\nread_consistency: strong\n");
    CHECK(r.target(*strong, strong->users[0], h, ask) == 0);
  }
}

TEST_CASE("replica reads: a session's reads never go back before its own writes", "[replicas]") {
  auto cfg = map_with("read_from: replicas\n");  // read_consistency: session (the default)
  HostHealth h;
  h.configure(*cfg);
  const auto t0 = Clock::now();
  all_up(h, *cfg, 1000, 1000, 1000, t0);
  ReadRouting r(0);
  const auto& user = cfg->users[0];
  const int r1 = cfg->replica_target(0, 0), r2 = cfg->replica_target(0, 1);
  CHECK(r.target(*cfg, user, h, {0, false, t0, nullptr}) == r1);  // nothing written yet
  const int s0 = 0;
  r.wrote(std::span<const int>(&s0, 1), cfg->shards.size(), 1);
  // The write's replies are still coming: the primary answers in order.
  CHECK(r.target(*cfg, user, h, {0, true, t0, nullptr}) == 0);
  // Finished by t1; no check of the primary was sent after it yet: the primary answers, and
  // a check runs at once (not after the interval).
  const auto t1 = t0 + std::chrono::milliseconds(10);
  CHECK(r.target(*cfg, user, h, {0, false, t1, nullptr}) == 0);
  CHECK(h.snapshot()[0].wanted);
  CHECK(r.tokens_pending());
  // A check sent after t1 saw the primary at 1500; the replicas are at 1000: still wait.
  const auto t2 = t1 + std::chrono::milliseconds(5);
  h.record(0, at(false, 1500, t2), t2, cfg->replication);
  CHECK_FALSE(r.target(*cfg, user, h, {0, false, t2, nullptr}));
  CHECK_FALSE(r.tokens_pending());
  CHECK(r.token_text(*cfg) == "s0:0/5DC");
  // The waiting gave up: the primary answers, counted.
  CHECK(r.give_up(h, 0) == 0);
  CHECK(h.snapshot()[0].waited == 1);
  // One replica replays past the token: it serves; the other is left out until it does.
  h.record(2, at(true, 1500, t2), t2, cfg->replication);
  CHECK(r.target(*cfg, user, h, {0, false, t2, nullptr}) == r2);
  CHECK(r.target(*cfg, user, h, {0, false, t2, nullptr}) == r2);
  // eventual ignores the session's writes.
  auto eventual = map_with("read_from: replicas\nread_consistency: eventual\n");
  ReadRouting e(0);
  e.wrote(std::span<const int>(&s0, 1), cfg->shards.size(), 1);
  CHECK(e.target(*eventual, eventual->users[0], h, {0, false, t2, nullptr}) == r1);
}

TEST_CASE("replica reads: a write its shard's pool refused leaves no token", "[replicas]") {
  // Before: a write refused for two primaries (08006) still gave the session a token, the
  // position of one of the two.
  auto cfg = map_with("read_from: replicas\n");
  HostHealth h;
  h.configure(*cfg);
  const auto t0 = Clock::now();
  all_up(h, *cfg, 1000, 1000, 1000, t0);
  ReadRouting r(0);
  const int s0 = 0;
  r.wrote(std::span<const int>(&s0, 1), cfg->shards.size(), 7);
  CHECK(r.tokens_pending());
  r.refused(0, 7);
  CHECK_FALSE(r.tokens_pending());
  const auto t1 = t0 + std::chrono::milliseconds(10);
  h.record(0, at(false, 1500, t1), t1, cfg->replication);
  CHECK(r.resolve(h, false, t1));
  CHECK(r.token_text(*cfg).empty());
  // A write of an earlier request, still unresolved, is kept.
  r.wrote(std::span<const int>(&s0, 1), cfg->shards.size(), 8);
  CHECK_FALSE(r.resolve(h, false, t1));  // (finished: no check since)
  r.wrote(std::span<const int>(&s0, 1), cfg->shards.size(), 9);
  r.refused(0, 9);
  r.refused(0, 8);  // (a later request's refusal takes back only its own)
  const auto t2 = t1 + std::chrono::milliseconds(10);
  h.record(0, at(false, 1600, t2), t2, cfg->replication);
  CHECK(r.resolve(h, false, t2));
  CHECK(r.token_text(*cfg) == "s0:0/640");
}

TEST_CASE("replica reads: a token travels to another session as text", "[replicas]") {
  auto cfg = map_with("read_from: replicas\n");
  ReadRouting r(0);
  CHECK(r.token_text(*cfg).empty());
  CHECK(r.take_token(*cfg, "s0:0/5DC,s1:1/A"));
  CHECK(r.token_text(*cfg) == "s0:0/5DC,s1:1/A");
  CHECK(r.take_token(*cfg, "s0:0/10"));  // older: the newer position stays
  CHECK(r.token_text(*cfg) == "s0:0/5DC,s1:1/A");
  // (A shard named twice is refused too: before, the later position silently won.)
  for (const char* bad : {"s9:0/1", "s0", "s0:5DC", "s0:0/zz", "s0:0/1,", ":0/1", "s0:0/1,s0:0/2"})
    CHECK_FALSE(r.take_token(*cfg, bad));
  CHECK(router::parse_lsn("16/B374D848") == ((uint64_t{0x16} << 32) | 0xB374D848));
  CHECK(router::lsn_text((uint64_t{0x16} << 32) | 0xB374D848) == "16/B374D848");
  // SET pgshard.read_token is checked like any pgshard setting.
  auto bad = router::route_query("SET pgshard.read_token = 'nonsense'", {}, *cfg);
  CHECK(std::holds_alternative<router::Refuse>(bad.action));
  auto good = router::route_query("SET pgshard.read_token = 's0:0/5DC'", {}, *cfg);
  CHECK(good.hints.session.read_token == "s0:0/5DC");
  auto show = router::route_query("SHOW pgshard.read_token", good.hints, *cfg);
  CHECK(show.shows_read_token);
}

TEST_CASE("replica reads: a read token naming an unknown shard says which", "[replicas]") {
  // Before: the generic "expected shard:LSN pairs" message, as if the format were wrong.
  auto cfg = map_with("read_from: replicas\n");
  for (const char* token : {"s9:0/1", "s0:0/5DC,s9:0/1"}) {
    INFO(token);
    auto r = router::route_query(std::string("SET pgshard.read_token = '") + token + "'", {}, *cfg);
    const auto* refused = std::get_if<router::Refuse>(&r.action);
    REQUIRE(refused);
    CHECK(refused->error.code == "22023");
    CHECK(refused->error.message == "unknown shard \"s9\" in pgshard.read_token");
  }
  // A malformed part keeps the format message, even beside a shard name it does not know.
  for (const char* token : {"s9:zz", "s0", ":0/1", "s0:0/1,s9"}) {
    INFO(token);
    auto r = router::route_query(std::string("SET pgshard.read_token = '") + token + "'", {}, *cfg);
    const auto* refused = std::get_if<router::Refuse>(&r.action);
    REQUIRE(refused);
    CHECK(refused->error.code == "22023");
    CHECK(refused->error.message.find("expected shard:LSN pairs") != std::string::npos);
  }
}

TEST_CASE("read-only transactions: BEGIN's modes and the statements that take locks",
          "[replicas]") {
  auto cfg = map_with("");
  auto modes = [&](const std::string& sql) { return router::route_query(sql, {}, *cfg); };
  CHECK(modes("BEGIN").begin_modes.empty());
  CHECK(modes("BEGIN READ ONLY").begin_modes == "READ ONLY");
  CHECK(modes("START TRANSACTION READ WRITE").begin_modes == "READ WRITE");
  CHECK(modes("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").begin_modes ==
        "ISOLATION LEVEL REPEATABLE READ READ ONLY");
  CHECK(modes("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY").transaction_modes ==
        "ISOLATION LEVEL SERIALIZABLE READ ONLY");
  CHECK(modes("SET TRANSACTION READ ONLY").begin_modes.empty());  // (not BEGIN's)
  for (const char* sql :
       {"SELECT pg_advisory_xact_lock(1)", "SELECT pg_try_advisory_xact_lock_shared(1, 2)",
        "SELECT pg_advisory_unlock_all()", "LOCK TABLE accounts IN ACCESS SHARE MODE",
        "/* pgshard: shard=s0 */ SELECT pg_advisory_xact_lock(1)"}) {
    INFO(sql);
    CHECK(modes(sql).locks);
  }
  for (const char* sql : {"SELECT 1", "SELECT * FROM accounts WHERE id = 1 FOR UPDATE", "BEGIN"}) {
    INFO(sql);
    CHECK_FALSE(modes(sql).locks);
  }
  // SET TRANSACTION with modes is transaction control (held while BEGIN is pgshard's);
  // SET TRANSACTION SNAPSHOT is not.
  CHECK(modes("SET TRANSACTION READ ONLY").txn == router::TxnControl::kSetTransaction);
  CHECK(modes("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'").txn == router::TxnControl::kNone);
  CHECK(modes("SET TRANSACTION READ ONLY; SELECT 1").txn == router::TxnControl::kNone);
}

TEST_CASE("read-only transactions: what may lock or write where a plain read's test cannot see",
          "[replicas]") {
  // Before: only lock-taking statements kept a READ ONLY transaction's part on the primary;
  // txid_current, user functions, DO, CALL, NOTIFY ran on the replica.
  auto cfg = map_with("read_safe_functions: [app.price_of]\n");
  auto route = [&](const std::string& sql) { return router::route_query(sql, {}, *cfg); };
  for (const char* sql :
       {"SELECT pg_advisory_xact_lock(1)", "SELECT txid_current()", "SELECT nextval('s')",
        "SELECT set_config('a.b', 'c', true)", "SELECT pg_notify('c', 'x')",
        "SELECT other_function()", "SELECT app.other(id) FROM accounts WHERE id = 1",
        "/* pgshard: shard=s1 */ SELECT other_function()", "DO $$BEGIN NULL; END$$",
        "/* pgshard: shard=s1 */ DO $$BEGIN NULL; END$$", "/* pgshard: shard=s1 */ CALL app.proc()",
        "NOTIFY c", "LISTEN c", "UNLISTEN c", "LOCK TABLE accounts",
        "EXPLAIN ANALYZE SELECT other_function()", "DECLARE c CURSOR FOR SELECT nextval('s')"}) {
    INFO(sql);
    CHECK(route(sql).side_effects);
  }
  for (const char* sql :
       {"SELECT 1", "SELECT now(), inet_server_port()", "SELECT app.price_of(id) FROM accounts",
        "SELECT random(), clock_timestamp(), pg_is_in_recovery()", "SELECT pg_sleep(0)",
        "SET LOCAL work_mem = '8MB'", "SAVEPOINT a", "SHOW work_mem",
        "DECLARE c CURSOR FOR SELECT * FROM accounts", "FETCH 10 FROM c",
        "INSERT INTO accounts VALUES (1)", "SELECT * FROM accounts WHERE id = 1 FOR UPDATE"}) {
    INFO(sql);
    CHECK_FALSE(route(sql).side_effects);
  }
}
