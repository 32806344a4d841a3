// Hint routing and PostgreSQL's hash-partitioning maths.
#include "proxy/router/router.hpp"

#include <catch2/catch.hpp>

#include "config/config.hpp"
#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/router/hashing.hpp"
#include "route_parts.hpp"
#include "shard_map.hpp"

using namespace pgshard;
using namespace pgshard::router;

namespace {
std::shared_ptr<const config::Config> map() {
  return testing::three_shards("sharded_tables:\n  - { table: users, column: id, type: bigint }\n");
}
}  // namespace

TEST_CASE("extended hash functions equal PostgreSQL's", "[router][hash]") {
  // Values from PostgreSQL 15: SELECT hashint8extended(42, 8816678312871386365) ...
  CHECK(static_cast<int64_t>(hashint8extended(42, kHashPartitionSeed)) == 7363975540656877951LL);
  CHECK(static_cast<int64_t>(hashint8extended(-7, kHashPartitionSeed)) == -7298374200968567817LL);
  CHECK(static_cast<int64_t>(hashint4extended(42, kHashPartitionSeed)) == 7363975540656877951LL);
  CHECK(static_cast<int64_t>(hashtextextended("hello", kHashPartitionSeed)) ==
        -2635279551741001039LL);
  CHECK(static_cast<int64_t>(hashtextextended("a longer text value over 12 bytes",
                                              kHashPartitionSeed)) == -956353119204901260LL);
  unsigned char u[16];
  REQUIRE(parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", u));
  CHECK(static_cast<int64_t>(uuid_hash_extended(u, kHashPartitionSeed)) == 424513190990560493LL);
}

TEST_CASE("partition index equals PARTITION BY HASH with modulus 3", "[router][hash]") {
  // From a real server: keys -7, 2 and 42 land in remainder 0, 1 in 2, 3 in 1.
  auto idx = [](const char* k) {
    return hash_to_index(*partition_hash(config::KeyType::kInt8, k), 3);
  };
  CHECK(idx("-7") == 0);
  CHECK(idx("1") == 2);
  CHECK(idx("2") == 0);
  CHECK(idx("3") == 1);
  CHECK(idx("42") == 0);
  CHECK(idx(" 42 ") == 0);
  CHECK_FALSE(partition_hash(config::KeyType::kInt8, "4x"));
  CHECK_FALSE(partition_hash(config::KeyType::kInt2, "40000"));
  CHECK_FALSE(partition_hash(config::KeyType::kUuid, "not-a-uuid"));
}

TEST_CASE("integer keys read as PostgreSQL's int2/int4/int8 input does", "[router][hash]") {
  // Plain digits (the fast path) and every other spelling give the same answers.
  CHECK(parse_int("0", INT64_MIN, INT64_MAX) == 0);
  CHECK(parse_int("000042", INT64_MIN, INT64_MAX) == 42);
  CHECK(parse_int("999999999999999999", INT64_MIN, INT64_MAX) == 999999999999999999LL);
  CHECK(parse_int("9223372036854775807", INT64_MIN, INT64_MAX) == INT64_MAX);
  CHECK(parse_int("-9223372036854775808", INT64_MIN, INT64_MAX) == INT64_MIN);
  CHECK_FALSE(parse_int("9223372036854775808", INT64_MIN, INT64_MAX));
  CHECK_FALSE(parse_int("99999999999999999999", INT64_MIN, INT64_MAX));
  CHECK(parse_int("2147483647", INT32_MIN, INT32_MAX) == INT32_MAX);
  CHECK_FALSE(parse_int("2147483648", INT32_MIN, INT32_MAX));
  CHECK(parse_int("32767", INT16_MIN, INT16_MAX) == 32767);
  CHECK_FALSE(parse_int("32768", INT16_MIN, INT16_MAX));
  CHECK(parse_int(" +7\n", INT64_MIN, INT64_MAX) == 7);
  CHECK(parse_int("-7", INT64_MIN, INT64_MAX) == -7);
  CHECK_FALSE(parse_int("", INT64_MIN, INT64_MAX));
  CHECK_FALSE(parse_int("   ", INT64_MIN, INT64_MAX));
  CHECK_FALSE(parse_int("12a", INT64_MIN, INT64_MAX));
  CHECK_FALSE(parse_int("1 2", INT64_MIN, INT64_MAX));
  CHECK_FALSE(parse_int("+", INT64_MIN, INT64_MAX));
}

TEST_CASE("uuid input accepts PostgreSQL's spellings", "[router][hash]") {
  unsigned char a[16], b[16], c[16];
  REQUIRE(parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", a));
  REQUIRE(parse_uuid("{a0eebc999c0b4ef8bb6d6bb9bd380a11}", b));
  REQUIRE(parse_uuid("A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A11", c));
  CHECK(std::equal(a, a + 16, b));
  CHECK(std::equal(a, a + 16, c));
  CHECK_FALSE(parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", a));
  CHECK_FALSE(parse_uuid("-a0eebc999c0b4ef8bb6d6bb9bd380a11", a));
}

TEST_CASE("pgshard settings are answered by pgshard and change routing", "[router]") {
  auto cfg = map();
  SessionHints h;
  auto r = route_query("SET pgshard.shard = 's2'", h, *cfg);
  REQUIRE(std::holds_alternative<Answer>(r.action));
  CHECK(r.hints.session.shard == "s2");
  auto tag = protocol::decode_frame(std::get<Answer>(r.action).text);
  CHECK(protocol::CommandComplete::parse(tag.frame.body)->tag == "SET");
  h = r.hints;
  CHECK(testing::forward_shard(route_query("select 1", h, *cfg)) == 2);

  r = route_query("show pgshard.shard", h, *cfg);
  REQUIRE(std::holds_alternative<Answer>(r.action));
  CHECK(std::get<Answer>(r.action).text.find("s2") != std::string::npos);

  r = route_query("RESET pgshard.shard", h, *cfg);
  CHECK(std::holds_alternative<Answer>(r.action));
  CHECK_FALSE(r.hints.session.shard);
}

TEST_CASE("sharding_key hashes like the table's partitioning", "[router]") {
  auto cfg = map();
  SessionHints h;
  h.session.sharding_key = "3";
  CHECK(testing::forward_shard(route_query("select 1", h, *cfg)) == 1);
  h.session.sharding_key = "1";
  CHECK(testing::forward_shard(route_query("select 1", h, *cfg)) == 2);
}

TEST_CASE("hint precedence: comment, SET LOCAL, SET, default", "[router]") {
  auto cfg = map();
  SessionHints h;
  CHECK(testing::forward_shard(route_query("select 1", h, *cfg)) == 0);
  CHECK(route_query("select 1", h, *cfg).reason == "no table");
  CHECK(testing::forward_shard(route_query("SELECT 1 /* PGSHARD: SHARD=s1 */", h, *cfg)) == 1);
  h.session.shard = "s1";
  CHECK(testing::forward_shard(route_query("select 1", h, *cfg)) == 1);
  h.local.shard = "s2";
  CHECK(testing::forward_shard(route_query("select 1", h, *cfg)) == 2);
  CHECK(testing::forward_shard(route_query("/* pgshard: shard=s0 */ select 1", h, *cfg)) == 0);
  CHECK(testing::forward_shard(route_query("select 1 -- pgshard: sharding_key=1", h, *cfg)) == 2);
  // A string literal that looks like a hint is not a hint.
  CHECK(testing::forward_shard(route_query("select '/* pgshard: shard=s0 */'", h, *cfg)) == 2);
  // Explicit shard beats a key at the same level.
  SessionHints k;
  k.session.shard = "s1";
  k.session.sharding_key = "1";
  CHECK(testing::forward_shard(route_query("select 1", k, *cfg)) == 1);
}

TEST_CASE("SET LOCAL is local, SET replaces it, RESET ALL clears everything", "[router]") {
  auto cfg = map();
  SessionHints h;
  h = route_query("SET LOCAL pgshard.shard = s1", h, *cfg).hints;
  CHECK(h.local.shard == "s1");
  CHECK_FALSE(h.session.shard);
  h = route_query("SET pgshard.shard TO 's2'", h, *cfg).hints;
  CHECK_FALSE(h.local.shard);
  CHECK(h.session.shard == "s2");
  auto r = route_query("RESET ALL", h, *cfg);
  CHECK(runs_on_shards(r));  // also reaches the server
  CHECK(r.hints.empty());
}

TEST_CASE("pgshard words are found at every offset and in every case", "[router]") {
  // The scan for "pgshard", "reset" and "discard" skips sixteen (or eight) bytes at a time:
  // each word, wherever it starts and however it is spelled, must still be found.
  auto cfg = map();
  for (std::size_t pad = 0; pad < 40; ++pad) {
    INFO("pad " << pad);
    const std::string lead(pad, ' ');
    const std::string tail(pad % 5, ' ');
    SessionHints h;
    CHECK(testing::forward_shard(
              route_query(lead + "select 1 /* PgShArD: shard=s1 */" + tail, h, *cfg)) == 1);
    h = route_query(lead + "SET PGSHARD.shard = s2" + tail, h, *cfg).hints;
    CHECK(h.session.shard == "s2");
    CHECK(route_query(lead + "ReSeT ALL" + tail, h, *cfg).hints.empty());
    h = route_query(lead + "set pgshard.shard = s2" + tail, h, *cfg).hints;
    CHECK(route_query(lead + "Discard ALL" + tail, h, *cfg).hints.empty());
  }
}

TEST_CASE("bad pgshard settings and hints are errors with SQLSTATE", "[router]") {
  auto cfg = map();
  SessionHints h;
  auto r = route_query("SET pgshard.shard = 'nope'", h, *cfg);
  CHECK(testing::refused(r));
  CHECK(testing::error_of(r).code == "22023");
  r = route_query("SET pgshard.sharding_key = 'abc'", h, *cfg);
  CHECK(testing::refused(r));
  CHECK(testing::error_of(r).code == "22023");
  r = route_query("SET pgshard.bogus = 1", h, *cfg);
  CHECK(testing::error_of(r).code == "42704");
  r = route_query("/* pgshard: shardd=s1 */ select 1", h, *cfg);
  CHECK(testing::refused(r));
  r = route_query("/* pgshard: shard=s9 */ select 1", h, *cfg);
  CHECK(testing::refused(r));
  CHECK(testing::error_of(r).message == "unknown shard \"s9\"");
}

TEST_CASE("statements mixing pgshard settings with SQL are forwarded with the setting applied",
          "[router]") {
  auto cfg = map();
  SessionHints h;
  auto r = route_query("SET pgshard.shard = 's1'; select 1", h, *cfg);
  CHECK(runs_on_shards(r));
  CHECK(testing::forward_shard(r) == 1);
  r = route_extended("SET pgshard.sharding_key = '3'", h, *cfg);
  CHECK(runs_on_shards(r));
  CHECK(r.hints.session.sharding_key == "3");
  CHECK(runs_on_shards(route_query("selec 1", h, *cfg)));  // syntax errors reach PostgreSQL
}

TEST_CASE("reads of pg_prepared_statements are pointed at the client's own view", "[router]") {
  using router::with_own_prepared_statements;
  const std::string own = "SELECT 'x'::text AS name";
  CHECK(with_own_prepared_statements("select name from pg_prepared_statements", own) ==
        "WITH pg_prepared_statements AS (SELECT 'x'::text AS name) select name from "
        "pg_prepared_statements");
  CHECK(with_own_prepared_statements("select * from pg_catalog . \"pg_prepared_statements\" p",
                                     own) ==
        "WITH pg_prepared_statements AS (SELECT 'x'::text AS name) select * from "
        "pg_prepared_statements p");
  CHECK(with_own_prepared_statements("WITH w AS (select 1) select * from pg_prepared_statements, w",
                                     own) ==
        "WITH pg_prepared_statements AS (SELECT 'x'::text AS name), w AS (select 1) select * "
        "from pg_prepared_statements, w");
  CHECK(with_own_prepared_statements(
            "with recursive r(n) as (select 1 union all select n + 1 from r where n < 2) "
            "select name, n from pg_prepared_statements, r",
            own) ==
        "with recursive pg_prepared_statements AS (SELECT 'x'::text AS name), r(n) as (select 1 "
        "union all select n + 1 from r where n < 2) select name, n from pg_prepared_statements, r");
  // Not one SELECT: left as sent.
  CHECK_FALSE(with_own_prepared_statements("explain select * from pg_prepared_statements", own));
  CHECK_FALSE(with_own_prepared_statements("select 1; select * from pg_prepared_statements", own));
  // The analysis notices the view, bare or qualified, and nothing else.
  config::Config cfg;
  CHECK(router::analyze_statement("select * from pg_prepared_statements", cfg)
            .prepared_statements_view);
  CHECK(router::analyze_statement("select 1 from pg_catalog.pg_prepared_statements", cfg)
            .prepared_statements_view);
  CHECK_FALSE(
      router::analyze_statement("select * from pg_prepared_xacts", cfg).prepared_statements_view);
}

TEST_CASE("calls to functions outside pg_catalog are noticed", "[router]") {
  config::Config cfg;
  auto calls = [&](const char* sql) {
    return !router::analyze_statement(sql, cfg).user_functions.empty();
  };
  CHECK_FALSE(calls("select now(), lower('x'), pg_catalog.upper('y'), count(*) from t"));
  CHECK_FALSE(calls("select 1"));
  CHECK(calls("select my_function(1)"));
  CHECK(calls("select public.lower('x')"));
  CHECK(calls("select * from t where id = any(get_ids())"));
  CHECK(calls("call my_procedure()"));
  CHECK(router::analyze_statement("select app.f(1), g()", cfg).user_functions ==
        std::vector<std::string>{"app.f", "g"});
  CHECK_FALSE(calls("copy t from stdin where my_filter(x)"));  // nothing may follow COPY IN
}
