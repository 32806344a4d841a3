// Hash buckets (`buckets:`, `bucket_shards:`): placement, config errors, co-location,
// EXPLAIN (ROUTE), and the reshard planner's diff of two maps.
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>

#include "config/config.hpp"
#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/admin/reshard_cli.hpp"
#include "proxy/admin/reshard_plan.hpp"
#include "proxy/router/hashing.hpp"
#include "proxy/router/placement.hpp"
#include "proxy/router/router.hpp"
#include "route_parts.hpp"

using namespace pgshard;

namespace {

std::string shards_yaml(int n) {
  std::string y = "users: [{name: app, password: x}]\nshards:\n";
  for (int i = 0; i < n; ++i)
    y += "  - { name: s" + std::to_string(i) +
         ", primary: \"postgres://h:" + std::to_string(i + 1) + "/app\" }\n";
  return y;
}

std::shared_ptr<const config::Config> load(const std::string& yaml) {
  return config::load_string(yaml, "t.yaml");
}

std::string error_of(const std::string& yaml) {
  try {
    load(yaml);
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}

// A map of `n` shards with table orders (bigint hash) and `extra` keys on it.
std::shared_ptr<const config::Config> orders(int n, const std::string& extra) {
  return load(shards_yaml(n) + "sharded_tables:\n  - { table: orders, column: id, type: bigint" +
              extra + " }\n");
}

}  // namespace

TEST_CASE("a key's bucket is PostgreSQL's hash partition remainder", "[buckets]") {
  // Remainders PostgreSQL 15 gives: satisfies_hash_partition(<hash-partitioned table>,
  // 1024, r, key) is true for exactly this r.
  auto cfg = load(shards_yaml(3) + R"(sharded_tables:
  - { table: a, column: id, type: bigint, buckets: 1024 }
  - { table: b, column: name, type: text, buckets: 1024 }
  - { table: c, column: u, type: uuid, buckets: 1000 }
)");
  const auto& a = cfg->sharded_tables[0];
  CHECK(*router::bucket_of(a, "0") == 432);
  CHECK(*router::bucket_of(a, "1") == 952);
  CHECK(*router::bucket_of(a, "42") == 610);
  CHECK(*router::bucket_of(a, "-7") == 218);
  CHECK(*router::bucket_of(a, "1000000007") == 106);
  const auto& b = cfg->sharded_tables[1];
  CHECK(*router::bucket_of(b, "abc") == 677);
  CHECK(*router::bucket_of(b, "tenant-17") == 275);
  CHECK(*router::bucket_of(b, "") == 166);
  CHECK(*router::bucket_of(cfg->sharded_tables[2], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11") == 56);
  CHECK_FALSE(router::bucket_of(a, "x"));
}

TEST_CASE("buckets without an assignment are spread evenly in contiguous blocks", "[buckets]") {
  auto cfg = orders(3, ", buckets: 1024");
  const auto& t = cfg->sharded_tables[0];
  REQUIRE(t.bucket_shard.size() == 1024);
  CHECK(config::bucket_ranges(t.bucket_shard, 0) == "0-340");
  CHECK(config::bucket_ranges(t.bucket_shard, 1) == "341-681");
  CHECK(config::bucket_ranges(t.bucket_shard, 2) == "682-1023");
  // Key 42 is in bucket 610: shard s1; key 0 in bucket 432: s1; key 1 in 952: s2.
  CHECK(*router::place_key(t, "42", 3).shard == 1);
  CHECK(*router::place_key(t, "0", 3).shard == 1);
  CHECK(*router::place_key(t, "1", 3).shard == 2);
  int count[3] = {0, 0, 0};
  for (int k = 0; k < 30000; ++k) ++count[*router::place_key(t, std::to_string(k), 3).shard];
  for (int c : count) CHECK(std::abs(c - 10000) < 1000);
}

TEST_CASE("an explicit bucket assignment places keys on its shards", "[buckets]") {
  auto cfg = orders(2, R"(, buckets: 1024,
      bucket_shards: [{ shard: s1, buckets: "0-600,952" }, { shard: s0, buckets: "601-951,953-1023" }])");
  const auto& t = cfg->sharded_tables[0];
  CHECK(*router::place_key(t, "42", 2).shard == 0);  // bucket 610
  CHECK(*router::place_key(t, "0", 2).shard == 1);   // bucket 432
  CHECK(*router::place_key(t, "1", 2).shard == 1);   // bucket 952
  router::SessionHints h;
  CHECK(testing::forward_shard(router::route_query("select * from orders where id = 1", h, *cfg)) ==
        1);
  CHECK(*router::shard_for_key("42", *cfg) == 0);
}

TEST_CASE("without buckets a hash table places as before: the hash modulo the shard count",
          "[buckets]") {
  auto cfg = orders(3, "");
  for (int k = -50; k < 50; ++k) {
    auto key = std::to_string(k);
    CHECK(*router::place_key(cfg->sharded_tables[0], key, 3).shard ==
          router::hash_to_index(*router::partition_hash(config::KeyType::kInt8, key), 3));
  }
}

TEST_CASE("bucket config errors name the problem", "[buckets][config]") {
  auto bad = [](int shards, const std::string& extra) {
    return error_of(shards_yaml(shards) +
                    "sharded_tables:\n  - { table: orders, column: id, type: bigint" + extra +
                    " }\n");
  };
  CHECK_THAT(bad(3, ", buckets: 2"), Catch::Contains("buckets: 2 is fewer than the 3 shards"));
  CHECK_THAT(
      bad(2,
          R"(, buckets: 8, bucket_shards: [{ shard: s0, buckets: "0-3" }, { shard: s1, buckets: "4-5" }])"),
      Catch::Contains("buckets 6-7 of 8 not assigned to any shard"));
  CHECK_THAT(
      bad(2,
          R"(, buckets: 8, bucket_shards: [{ shard: s0, buckets: "0-4" }, { shard: s1, buckets: "4-7" }])"),
      Catch::Contains("bucket 4 is assigned twice (to s0 and s1)"));
  CHECK_THAT(
      bad(2,
          R"(, buckets: 8, bucket_shards: [{ shard: s0, buckets: "0-3" }, { shard: s9, buckets: "4-7" }])"),
      Catch::Contains("bucket_shards names unknown shard 's9'"));
  CHECK_THAT(
      bad(2,
          R"(, buckets: 8, bucket_shards: [{ shard: s0, buckets: "0-3" }, { shard: s1, buckets: "4-8" }])"),
      Catch::Contains("bucket 8 is out of range (buckets are 0-7)"));
  CHECK_THAT(
      bad(2,
          R"(, buckets: 8, bucket_shards: [{ shard: s0, buckets: "0-3" }, { shard: s1, buckets: "7-4" }])"),
      Catch::Contains("bad bucket list item '7-4'"));
  CHECK_THAT(bad(2, R"(, bucket_shards: [{ shard: s0, buckets: "0" }])"),
             Catch::Contains("bucket_shards needs buckets: N"));
  CHECK_THAT(bad(2, ", function: ring, buckets: 8"),
             Catch::Contains("buckets apply to function: hash only"));
  CHECK(bad(2, ", buckets: 2").empty());
}

TEST_CASE("a reload may not change buckets: rows would move", "[buckets][config]") {
  auto a = orders(3, ", buckets: 1024");
  auto b = orders(3, ", buckets: 2048");
  auto refusals = config::reload_refusals(*a, *b);
  REQUIRE(refusals.size() == 1);
  CHECK_THAT(refusals[0], Catch::Contains("buckets"));
  CHECK(config::reload_refusals(*a, *orders(3, ", buckets: 1024")).empty());
}

TEST_CASE("tables join shard by shard only when their buckets place keys alike", "[buckets]") {
  const std::string same = R"(, buckets: 12 }
  - { table: items, column: order_id, type: bigint, buckets: 12)";
  const std::string other = R"(, buckets: 12 }
  - { table: items, column: order_id, type: bigint, buckets: 12,
      bucket_shards: [{ shard: s1, buckets: "0-3" }, { shard: s2, buckets: "4-7" }, { shard: s0, buckets: "8-11" }])";
  const std::string ring = R"( }
  - { table: items, column: order_id, type: bigint, function: ring)";
  const char* sql = "select * from orders o join items i on i.order_id = o.id where o.id = 42";
  router::SessionHints h;
  auto colocated = orders(3, same);
  CHECK(testing::forward_shard(router::route_query(sql, h, *colocated)) >= 0);
  for (const auto& extra : {other, ring}) {
    auto cfg = orders(3, extra);
    auto r = router::route_query(sql, h, *cfg);
    INFO(extra);
    CHECK(testing::forward_shard(r) == -1);
    CHECK_THAT(r.reason, Catch::Contains("not joined on their shard keys"));
    CHECK_THAT(testing::fan_out_of(r).merge_blocker,
               Catch::Contains("whose keys are placed differently (items and orders"));
  }
}

TEST_CASE("EXPLAIN (ROUTE) names the key's bucket", "[buckets]") {
  auto cfg = orders(3, ", buckets: 1024");
  router::SessionHints h;
  auto r = router::route_query("explain (route) select * from orders where id = 42", h, *cfg);
  std::string text;
  for (const auto m : protocol::frames(std::get<router::Answer>(r.action).text))
    if (m.frame.type == protocol::msg::kDataRow) {
      auto row = protocol::DataRow::parse(m.frame.body);
      REQUIRE(row);
      text += std::string(*row->values[0]) + "|" + std::string(*row->values[1]);
    }
  CHECK(text == "s1|shard key in WHERE id=42 (bigint hash, bucket 610 of 1024)");
}

TEST_CASE("rebalancing buckets for a fourth shard moves a quarter, all to it", "[buckets]") {
  const auto three = config::even_buckets(1024, 3);
  const auto four = config::rebalance_buckets(three, 4);
  int moved = 0, held[4] = {0, 0, 0, 0};
  for (std::size_t b = 0; b < four.size(); ++b) {
    ++held[four[b]];
    if (four[b] == three[b]) continue;
    ++moved;
    CHECK(four[b] == 3);
  }
  CHECK(moved == 256);
  for (int h : held) CHECK(h == 256);
}

// Key by key: the plan's moves are exactly the keys whose shard differs between the maps.
TEST_CASE("the plan of a bucketed 3 -> 4 shard map moves a quarter of the buckets to s3",
          "[buckets][reshard]") {
  auto from = orders(3, ", buckets: 1024");
  const auto next = config::rebalance_buckets(from->sharded_tables[0].bucket_shard, 4);
  std::string assignment;
  for (int s = 0; s < 4; ++s)
    assignment += std::string(s ? ", " : "") + "{ shard: s" + std::to_string(s) + ", buckets: \"" +
                  config::bucket_ranges(next, s) + "\" }";
  auto to = orders(4, ", buckets: 1024, bucket_shards: [" + assignment + "]");
  const auto plan = admin::plan_reshard(*from, *to);
  REQUIRE(plan.size() == 1);
  REQUIRE(plan[0].refusal.empty());
  CHECK(plan[0].modulus == 1024);
  int moving = 0;
  for (const auto& m : plan[0].moves) {
    CHECK(m.to == "s3");
    moving += static_cast<int>(m.remainders.size());
  }
  CHECK(moving == 256);
  const auto& a = from->sharded_tables[0];
  const auto& b = to->sharded_tables[0];
  for (int k = 0; k < 5000; ++k) {
    const auto key = std::to_string(k);
    const int x = *router::place_key(a, key, 3).shard, y = *router::place_key(b, key, 4).shard;
    const int r = *router::bucket_of(a, key);
    std::string planned;
    for (const auto& m : plan[0].moves)
      if (std::binary_search(m.remainders.begin(), m.remainders.end(), r)) planned = m.to;
    CHECK(planned == (x == y ? "" : "s" + std::to_string(y)));
  }
  std::ostringstream out;
  admin::print_plan(plan, out, false);
  CHECK_THAT(out.str(), Catch::Contains("256 of 1024 buckets move (25.0% of the hash space)"));
}

TEST_CASE("the plan from a map without buckets uses the remainders both maps share",
          "[buckets][reshard]") {
  auto from = orders(3, "");
  auto to = orders(4, "");
  const auto plan = admin::plan_reshard(*from, *to);
  REQUIRE(plan.size() == 1);
  CHECK(plan[0].modulus == 12);
  int moving = 0;
  for (const auto& m : plan[0].moves) moving += static_cast<int>(m.remainders.size());
  CHECK(moving == 9);  // r mod 3 == r mod 4 only for r = 0, 1, 2 of 0..11
  for (int k = 0; k < 2000; ++k) {
    const auto h = *router::partition_hash(config::KeyType::kInt8, std::to_string(k));
    const int r = router::hash_to_index(h, 12);
    bool planned = false;
    for (const auto& m : plan[0].moves)
      planned |= std::binary_search(m.remainders.begin(), m.remainders.end(), r);
    CHECK(planned == (router::hash_to_index(h, 3) != router::hash_to_index(h, 4)));
  }
}

TEST_CASE("the plan of a ring 3 -> 4 moves about a quarter, only to the new shard",
          "[buckets][reshard]") {
  auto ring = [](int n) {
    return load(shards_yaml(n) +
                "sharded_tables:\n  - { table: e, column: t, type: bigint, function: ring }\n");
  };
  auto from = ring(3), to = ring(4);
  const auto plan = admin::plan_reshard(*from, *to);
  REQUIRE(plan.size() == 1);
  double share = 0;
  for (const auto& m : plan[0].moves) {
    CHECK(m.to == "s3");
    share += m.share;
  }
  CHECK(share > 0.2);
  CHECK(share < 0.3);
  // A key moves exactly when its hash lies in a moving arc.
  for (int k = 0; k < 5000; ++k) {
    const auto key = std::to_string(k);
    const auto h = *router::partition_hash(config::KeyType::kInt8, key);
    bool in_arc = false;
    for (const auto& m : plan[0].moves)
      for (const auto& [lo, hi] : m.arcs)
        in_arc |= lo < hi ? (h > lo && h <= hi) : (h > lo || h <= hi);
    const bool moves = *router::place_key(from->sharded_tables[0], key, 3).shard !=
                       *router::place_key(to->sharded_tables[0], key, 4).shard;
    CHECK(in_arc == moves);
  }
}

TEST_CASE("the plan of range and list maps names the moving ranges and keys",
          "[buckets][reshard]") {
  const auto base = shards_yaml(3) + "sharded_tables:\n";
  auto from = load(
      base +
      R"(  - { table: logs, column: day, type: integer, function: range, ranges: [{ shard: s0, from: 0, to: 100 }, { shard: s1, from: 100, to: 200 }], default: s2 }
  - { table: acc, column: region, type: text, function: list, lists: [{ shard: s0, values: [eu, uk] }, { shard: s1, values: [us] }] }
)");
  auto to = load(
      base +
      R"(  - { table: logs, column: day, type: integer, function: range, ranges: [{ shard: s0, from: 0, to: 50 }, { shard: s2, from: 50, to: 100 }, { shard: s1, from: 100, to: 200 }], default: s2 }
  - { table: acc, column: region, type: text, function: list, lists: [{ shard: s0, values: [eu] }, { shard: s2, values: [uk] }, { shard: s1, values: [us] }] }
)");
  const auto plan = admin::plan_reshard(*from, *to);
  REQUIRE(plan.size() == 2);
  REQUIRE(plan[0].moves.size() == 1);
  CHECK(plan[0].moves[0].from == "s0");
  CHECK(plan[0].moves[0].to == "s2");
  REQUIRE(plan[0].moves[0].ranges.size() == 1);
  CHECK(*plan[0].moves[0].ranges[0].first == 50);
  CHECK(*plan[0].moves[0].ranges[0].second == 100);
  REQUIRE(plan[1].moves.size() == 1);
  CHECK(plan[1].moves[0].keys == std::vector<std::string>{"uk"});
  // A range whose keys would have no shard is refused.
  auto orphan = load(
      base +
      R"(  - { table: logs, column: day, type: integer, function: range, ranges: [{ shard: s0, from: 0, to: 100 }, { shard: s1, from: 100, to: 200 }] }
  - { table: acc, column: region, type: text, function: list, lists: [{ shard: s0, values: [eu, uk] }, { shard: s1, values: [us] }] }
)");
  const auto refused = admin::plan_reshard(*from, *orphan);
  CHECK_THAT(refused[0].refusal, Catch::Contains("would have no shard in the new map"));
}

namespace {

// `pgshard reshard propose --add s3=...` on a map of 3 shards with `tables` (sharded_tables
// entries): the old map and the new one made of the printed entries.
std::pair<std::shared_ptr<const config::Config>, std::shared_ptr<const config::Config>> propose(
    const std::string& tables) {
  char dir[] = "/tmp/pgshard-propose-XXXXXX";
  REQUIRE(mkdtemp(dir));
  const std::string path = std::string(dir) + "/old.yaml";
  const std::string head = shards_yaml(3);
  std::ofstream(path) << head << "sharded_tables:\n" << tables;
  std::string a0 = "propose", a1 = "--from", a2 = path, a3 = "--add", a4 = "s3=postgres://h:4/app";
  char* argv[] = {a0.data(), a1.data(), a2.data(), a3.data(), a4.data()};
  std::ostringstream out, err;
  const int rc = admin::reshard_main(5, argv, out, err);
  std::remove(path.c_str());
  rmdir(dir);
  INFO(err.str());
  REQUIRE(rc == 0);
  // The printed shard entry and table entries make the new map.
  std::istringstream lines(out.str());
  std::string shard_entry, printed;
  for (std::string l; std::getline(lines, l);) {
    if (l.starts_with("  - { name: s3"))
      shard_entry = l + "\n";
    else if (!l.starts_with("#") && !l.empty())
      printed += l + "\n";
  }
  REQUIRE_FALSE(shard_entry.empty());
  return {load(head + "sharded_tables:\n" + tables),
          load(head + shard_entry + "sharded_tables:\n" + printed)};
}

}  // namespace

TEST_CASE("reshard propose prints a map for one more shard that moves only to it",
          "[buckets][reshard]") {
  const auto [from, to] = propose(
      "  - { table: orders, column: id, type: bigint, buckets: 1024 }\n"
      "  - { table: legacy, column: id, type: bigint }\n");
  const auto plan = admin::plan_reshard(*from, *to);
  REQUIRE(plan.size() == 2);
  for (const auto& p : plan) {
    INFO(p.name);
    REQUIRE(p.refusal.empty());
    int moving = 0;
    for (const auto& m : p.moves) {
      CHECK(m.to == "s3");
      moving += static_cast<int>(m.remainders.size());
    }
    // A quarter of the buckets (legacy: 1026, the multiple of 3 shards from 1024).
    CHECK(moving == 256);
    CHECK(p.modulus == (p.name == "orders" ? 1024 : 1026));
  }
}

TEST_CASE("reshard propose raises a bucket count too small for one more shard",
          "[buckets][reshard]") {
  // 3 buckets over 3 shards: the new shard got none ("buckets: \"\""), which check refuses.
  const auto [from, to] = propose("  - { table: few, column: id, type: bigint, buckets: 3 }\n");
  const auto& t = to->sharded_tables[0];
  REQUIRE(t.buckets > 4);
  CHECK(t.buckets % 3 == 0);  // a multiple of the old count: a bucket splits, never straddles
  const auto held = std::count(t.bucket_shard.begin(), t.bucket_shard.end(), 3);
  CHECK(held >= t.buckets / 4);
  // Keys that stay keep their shard; the rest move to the new shard only.
  const auto plan = admin::plan_reshard(*from, *to);
  REQUIRE(plan.size() == 1);
  REQUIRE(plan[0].refusal.empty());
  for (const auto& m : plan[0].moves) CHECK(m.to == "s3");
  for (int k = 0; k < 2000; ++k) {
    const auto key = std::to_string(k);
    const int before = *router::place_key(from->sharded_tables[0], key, 3).shard;
    const int after = *router::place_key(t, key, 4).shard;
    if (after != 3) CHECK(after == before);
  }
}

namespace {

// Tables bi (1024 buckets, first in the map) and bx (16 buckets) over 3 shards, and a key
// the two place on different shards.
struct TwoMaps {
  std::shared_ptr<const config::Config> cfg = load(shards_yaml(3) + R"(sharded_tables:
  - { table: bi, column: id, type: bigint, buckets: 1024 }
  - { table: bx, column: id, type: bigint, buckets: 16 }
)");
  std::string key;
  int on_bx = -1;
  TwoMaps() {
    for (int k = 0; k < 1000 && key.empty(); ++k) {
      const auto s = std::to_string(k);
      const auto bi = *router::place_key(cfg->sharded_tables[0], s, 3).shard;
      const auto bx = *router::place_key(cfg->sharded_tables[1], s, 3).shard;
      if (bi != bx) key = s, on_bx = bx;
    }
  }
};

}  // namespace

TEST_CASE("a sharding_key hint places its key with the bucket map of the table it names",
          "[buckets]") {
  TwoMaps m;
  REQUIRE(!m.key.empty());
  router::SessionHints none;
  const auto comment = "/* pgshard: sharding_key=" + m.key + " */ select * from bx where id = 1";
  CHECK(testing::forward_shard(router::route_query(comment, none, *m.cfg)) == m.on_bx);
  router::SessionHints local;
  local.local.sharding_key = m.key;
  CHECK(testing::forward_shard(router::route_query("select * from bx", local, *m.cfg)) == m.on_bx);
  router::SessionHints session;
  session.session.sharding_key = m.key;
  CHECK(testing::forward_shard(router::route_query("update bx set v = 1", session, *m.cfg)) ==
        m.on_bx);
  // Naming no sharded table, the key takes the first sharded table's placement.
  const int on_bi = *router::place_key(m.cfg->sharded_tables[0], m.key, 3).shard;
  CHECK(testing::forward_shard(router::route_query("select 1", session, *m.cfg)) == on_bi);
  CHECK(*router::shard_for_key(m.key, *m.cfg, 1) == m.on_bx);
}

TEST_CASE("a sharding_key hint on tables with different bucket maps is refused, naming them",
          "[buckets]") {
  TwoMaps m;
  router::SessionHints local;
  local.local.sharding_key = "42";
  const auto r = router::route_query("select * from bi join bx using (id)", local, *m.cfg);
  REQUIRE(testing::refused(r));
  CHECK(testing::error_of(r).code == "0A000");
  CHECK(testing::error_of(r).message.find("bi and bx") != std::string::npos);
  // A shard hint still places such a statement.
  router::SessionHints shard;
  shard.local.shard = "s2";
  CHECK(testing::forward_shard(
            router::route_query("select * from bi join bx using (id)", shard, *m.cfg)) == 2);
}
