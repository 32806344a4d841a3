// The reshard's SQL row filters (what each publication selects) and its state file. That
// the hash expression equals PostgreSQL's placement is checked against a real server in
// tests/integration/reshard_move_test.cpp ([reshard-move]).
#include "proxy/admin/reshard_filter.hpp"

#include <catch2/catch.hpp>

#include "config/config.hpp"
#include "proxy/admin/reshard_plan.hpp"
#include "proxy/admin/reshard_state.hpp"

using namespace pgshard;
using Catch::Matchers::Contains;

namespace {

std::shared_ptr<const config::Config> map(int shards, const std::string& tables) {
  std::string y = "users: [{name: app, password: x}]\nshards:\n";
  for (int i = 0; i < shards; ++i)
    y += "  - { name: s" + std::to_string(i) +
         ", primary: \"postgres://h:" + std::to_string(i + 1) + "/app\" }\n";
  return config::load_string(y + "sharded_tables:\n" + tables, "t.yaml");
}

const admin::Move& only_move(const admin::TablePlan& p) {
  REQUIRE(p.moves.size() == 1);
  return p.moves[0];
}

}  // namespace

TEST_CASE("reshard filter: the row hash is hash_combine64(0, the type's extended hash)",
          "[reshard]") {
  CHECK(admin::row_hash_sql(config::KeyType::kInt8, "\"id\"") ==
        "mod(hashint8extended(\"id\", 8816678312871386365)::numeric + 23752253665144318179, "
        "18446744073709551616)");
  CHECK_THAT(admin::row_hash_sql(config::KeyType::kInt2, "k"), Contains("hashint2extended(k, "));
  CHECK_THAT(admin::row_hash_sql(config::KeyType::kInt4, "k"), Contains("hashint4extended(k, "));
  CHECK_THAT(admin::row_hash_sql(config::KeyType::kText, "k"), Contains("hashtextextended(k, "));
  CHECK_THAT(admin::row_hash_sql(config::KeyType::kVarchar, "k"), Contains("hashtextextended(k, "));
  CHECK_THAT(admin::row_hash_sql(config::KeyType::kUuid, "k"), Contains("uuid_hash_extended(k, "));
  CHECK(admin::hash_remainder_sql(config::KeyType::kInt8, "k", 1024) ==
        "mod(" + admin::row_hash_sql(config::KeyType::kInt8, "k") + ", 1024)::int4");
}

TEST_CASE("reshard filter: a hash move selects exactly its buckets", "[reshard]") {
  const std::string t = "  - { table: orders, column: Id, type: bigint, buckets: 8";
  auto a = map(2, t + " }\n");  // s0: 0-3, s1: 4-7
  auto b = map(3, t + ", bucket_shards: [{shard: s0, buckets: \"0-2\"}, {shard: s1, buckets: "
                      "\"4-6\"}, {shard: s2, buckets: \"3,7\"}] }\n");
  const auto plan = admin::plan_reshard(*a, *b);
  REQUIRE(plan.size() == 1);
  REQUIRE(plan[0].moves.size() == 2);
  CHECK(admin::move_filter_sql(plan[0], plan[0].moves[0]) ==
        admin::hash_remainder_sql(config::KeyType::kInt8, "\"Id\"", 8) +
            " = any ('{\"3\"}'::int4[])");
  CHECK(admin::move_filter_sql(plan[0], plan[0].moves[1]) ==
        admin::hash_remainder_sql(config::KeyType::kInt8, "\"Id\"", 8) +
            " = any ('{\"7\"}'::int4[])");
  // verify groups by the same buckets.
  CHECK(admin::verify_group_sql(plan[0]) ==
        admin::hash_remainder_sql(config::KeyType::kInt8, "\"Id\"", 8));
}

TEST_CASE("reshard filter: ranges, list keys (quoted) and a changed list default", "[reshard]") {
  auto a = map(
      2,
      R"(  - { table: logs, column: day, type: integer, function: range, ranges: [{ shard: s0, from: 0, to: 100 }, { shard: s1, from: 100, to: 200 }] }
)");
  auto b = map(
      3,
      R"(  - { table: logs, column: day, type: integer, function: range, ranges: [{ shard: s0, from: 0, to: 50 }, { shard: s2, from: 50, to: 100 }, { shard: s1, from: 100, to: 200 }] }
)");
  auto plan = admin::plan_reshard(*a, *b);
  CHECK(admin::move_filter_sql(plan[0], only_move(plan[0])) == "(\"day\" >= 50 and \"day\" < 100)");

  auto c = map(
      2,
      R"(  - { table: acc, column: region, type: text, function: list, lists: [{ shard: s0, values: [eu, "o'\"k"] }, { shard: s1, values: [us] }], default: s1 }
)");
  auto d = map(
      3,
      R"(  - { table: acc, column: region, type: text, function: list, lists: [{ shard: s0, values: [eu] }, { shard: s2, values: ["o'\"k"] }, { shard: s1, values: [us] }], default: s1 }
)");
  plan = admin::plan_reshard(*c, *d);
  // The key's ' doubled for the SQL literal, its " escaped inside the array literal.
  CHECK(admin::move_filter_sql(plan[0], only_move(plan[0])) ==
        "\"region\" = any ('{\"o''\\\"k\"}'::text[])");

  auto e = map(
      3,
      R"(  - { table: acc, column: region, type: text, function: list, lists: [{ shard: s0, values: [eu, "o'\"k"] }, { shard: s1, values: [us] }], default: s2 }
)");
  plan = admin::plan_reshard(*c, *e);
  const auto f = admin::move_filter_sql(plan[0], only_move(plan[0]));
  CHECK_THAT(f, Contains("\"region\" is not null and not coalesce(\"region\" = any ("));
  CHECK_THAT(f, Contains("\"eu\""));
  CHECK_THAT(f, Contains("\"us\""));
}

TEST_CASE("reshard filter: ring arcs, one wrapping past 2^64", "[reshard]") {
  admin::TablePlan p;
  config::ShardedTable t;
  t.column = "k";
  t.function = config::ShardFunction::kRing;
  p.from = p.to = &t;
  admin::Move m;
  m.arcs = {{10, 20}, {18446744073709551000ULL, 5}};
  const auto h = admin::row_hash_sql(config::KeyType::kInt8, "\"k\"");
  CHECK(admin::move_filter_sql(p, m) == "(" + h + " > 10 and " + h + " <= 20) or (" + h +
                                            " > 18446744073709551000 or " + h + " <= 5)");
}

TEST_CASE("reshard state: written and read back; a damaged file is refused", "[reshard]") {
  admin::ReshardState s;
  s.phase = admin::ReshardPhase::kCopying;
  s.id = "0a1b2c";
  s.from_map = "/maps/old map.yaml";
  s.to_map = "/maps/new.yaml";
  s.moves = {{"s0", "s3", "pgshard_rs_0a1b2c_s0_s3"}, {"s1", "s3", "pgshard_rs_0a1b2c_s1_s3"}};
  s.created = {{"s3", "public.orders"}};
  std::string error;
  const auto back = admin::parse_state(admin::format_state(s), &error);
  REQUIRE(back);
  CHECK(back->phase == admin::ReshardPhase::kCopying);
  CHECK(back->from_map == s.from_map);
  CHECK(back->moves.size() == 2);
  CHECK(back->moves[1].name == "pgshard_rs_0a1b2c_s1_s3");
  CHECK(back->created == s.created);
  CHECK_FALSE(
      admin::parse_state("pgshard-reshard-state 1\nphase copying\nid x\nmove s0\n", &error));
  CHECK_THAT(error, Contains("damaged"));
  CHECK_FALSE(admin::parse_state("something else\n", &error));
  // Object names: PostgreSQL's identifier characters, under its 63-byte limit.
  const auto name = admin::move_object_name("0a1b2c", "Shard-East.1", std::string(100, 'x'));
  CHECK(name.size() <= 63);
  CHECK(name.rfind("pgshard_rs_0a1b2c_shard_east_1_xxx", 0) == 0);
}
