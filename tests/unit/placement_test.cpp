// Sharding functions: ring (consistent hashing), range and list, and their config errors.
#include "proxy/router/placement.hpp"

#include <catch2/catch.hpp>

#include "config/config.hpp"
#include "proxy/router/router.hpp"
#include "route_parts.hpp"

using namespace pgshard;

namespace {
std::string shards_yaml(int n, const char* extra = "") {
  std::string y = "users: [{name: app, password: x}]\nshards:\n";
  for (int i = 0; i < n; ++i)
    y += "  - { name: s" + std::to_string(i) +
         ", primary: \"postgres://h:" + std::to_string(i + 1) + "/app\"" + extra + " }\n";
  return y;
}

std::shared_ptr<const config::Config> ring_map(int n) {
  return config::load_string(shards_yaml(n) + R"(sharded_tables:
  - { table: events, column: tenant_id, type: bigint, function: ring }
)",
                             "t.yaml");
}

std::string error_of(const std::string& yaml) {
  try {
    config::load_string(yaml, "t.yaml");
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("ring spreads 100k keys within 10% of even over 3 shards", "[placement]") {
  auto cfg = ring_map(3);
  const auto& t = cfg->sharded_tables[0];
  CHECK(t.ring.size() == 3 * 160);
  int count[3] = {0, 0, 0};
  for (int k = 0; k < 100000; ++k) ++count[*router::place_key(t, std::to_string(k), 3).shard];
  for (int c : count) {
    INFO("shard count " << c);
    CHECK(c > 100000 / 3 * 0.9);
    CHECK(c < 100000 / 3 * 1.1);
  }
}

TEST_CASE("adding a fourth shard to the ring moves 20-30% of keys, only to it", "[placement]") {
  auto three = ring_map(3);
  auto four = ring_map(4);
  int moved = 0, between_old = 0;
  for (int k = 0; k < 100000; ++k) {
    auto key = std::to_string(k);
    int a = *router::place_key(three->sharded_tables[0], key, 3).shard;
    int b = *router::place_key(four->sharded_tables[0], key, 4).shard;
    if (a != b) {
      ++moved;
      if (b != 3) ++between_old;
    }
  }
  INFO("moved " << moved);
  CHECK(moved > 20000);
  CHECK(moved < 30000);
  CHECK(between_old == 0);
}

TEST_CASE("ring weights scale a shard's share", "[placement]") {
  auto cfg = config::load_string(R"(users: [{name: app, password: x}]
shards:
  - { name: s0, primary: "postgres://h:1/app", weight: 2 }
  - { name: s1, primary: "postgres://h:2/app" }
sharded_tables:
  - { table: events, column: tenant_id, type: bigint, function: ring }
)",
                                 "t.yaml");
  int count[2] = {0, 0};
  for (int k = 0; k < 30000; ++k)
    ++count[*router::place_key(cfg->sharded_tables[0], std::to_string(k), 2).shard];
  CHECK(count[0] > count[1] * 1.6);
  CHECK(count[0] < count[1] * 2.4);
}

TEST_CASE("range placement with bounds and a default", "[placement]") {
  auto cfg = config::load_string(shards_yaml(3) + R"(sharded_tables:
  - table: logs
    column: day
    type: integer
    function: range
    ranges:
      - { shard: s1, from: 100, to: 200 }
      - { shard: s0, from: 0, to: 100 }
    default: s2
)",
                                 "t.yaml");
  const auto& t = cfg->sharded_tables[0];
  CHECK(*router::place_key(t, "0", 3).shard == 0);
  CHECK(*router::place_key(t, "99", 3).shard == 0);
  CHECK(*router::place_key(t, "100", 3).shard == 1);
  CHECK(*router::place_key(t, "199", 3).shard == 1);
  CHECK(*router::place_key(t, "200", 3).shard == 2);
  CHECK(*router::place_key(t, "-5", 3).shard == 2);
  CHECK_FALSE(router::place_key(t, "x", 3).shard);
  router::SessionHints h;
  CHECK(testing::forward_shard(
            router::route_query("select * from logs where day = 150", h, *cfg)) == 1);
}

TEST_CASE("range without default refuses writes outside every range", "[placement]") {
  auto cfg = config::load_string(shards_yaml(2) + R"(sharded_tables:
  - { table: logs, column: day, type: bigint, function: range, ranges: [{ shard: s0, from: 0, to: 10 }, { shard: s1, from: 10, to: 20 }] }
)",
                                 "t.yaml");
  auto p = router::place_key(cfg->sharded_tables[0], "25", 2);
  CHECK_FALSE(p.shard);
  CHECK_THAT(p.error, Catch::Contains("no shard holds key 25"));
  router::SessionHints h;
  auto r = router::route_query("insert into logs (day) values (25)", h, *cfg);
  CHECK(testing::refused(r));
  CHECK(testing::error_of(r).code == "23514");
  // A read of a key no shard holds simply finds nothing.
  CHECK(router::runs_on_shards(router::route_query("select * from logs where day = 25", h, *cfg)));
}

TEST_CASE("list placement", "[placement]") {
  auto cfg = config::load_string(shards_yaml(3) + R"(sharded_tables:
  - table: accounts
    column: region
    type: text
    function: list
    lists:
      - { shard: s0, values: [eu, uk] }
      - { shard: s1, values: [us, ca] }
  - table: tenants
    column: id
    type: bigint
    function: list
    lists: [{ shard: s2, values: ["7", "42"] }]
    default: s0
)",
                                 "t.yaml");
  const auto& a = cfg->sharded_tables[0];
  CHECK(*router::place_key(a, "uk", 3).shard == 0);
  CHECK(*router::place_key(a, "ca", 3).shard == 1);
  CHECK_FALSE(router::place_key(a, "jp", 3).shard);
  CHECK_FALSE(router::place_key(a, "jp", 3).error.empty());
  const auto& t = cfg->sharded_tables[1];
  CHECK(*router::place_key(t, "42", 3).shard == 2);
  CHECK(*router::place_key(t, " +42", 3).shard == 2);
  CHECK(*router::place_key(t, "43", 3).shard == 0);
}

TEST_CASE("range and list config errors: gaps, overlaps, duplicates, wrong keys", "[placement]") {
  auto base = shards_yaml(2) + "sharded_tables:\n";
  CHECK_THAT(error_of(base + "  - { table: t, column: c, function: range, ranges: [{ shard: s0, "
                             "from: 0, to: 10 }, { shard: s1, from: 5, to: 20 }] }\n"),
             Catch::Contains("ranges overlap at 5"));
  CHECK_THAT(error_of(base + "  - { table: t, column: c, function: range, ranges: [{ shard: s0, "
                             "from: 0, to: 10 }, { shard: s1, from: 11, to: 20 }] }\n"),
             Catch::Contains("gap between ranges [10, 11)"));
  CHECK_THAT(error_of(base + "  - { table: t, column: c, function: range, ranges: [{ shard: s9, "
                             "from: 0, to: 10 }] }\n"),
             Catch::Contains("unknown shard 's9'"));
  CHECK_THAT(error_of(base + "  - { table: t, column: c, function: range, ranges: [{ shard: s0, "
                             "from: 10, to: 10 }] }\n"),
             Catch::Contains("from must be below to"));
  CHECK_THAT(error_of(base + "  - { table: t, column: c, type: text, function: range, ranges: [{ "
                             "shard: s0, from: 0, to: 10 }] }\n"),
             Catch::Contains("integer key type"));
  CHECK_THAT(error_of(base + "  - { table: t, column: c, type: text, function: list, lists: [{ "
                             "shard: s0, values: [a] }, { shard: s1, values: [a] }] }\n"),
             Catch::Contains("listed twice"));
  CHECK_THAT(error_of(base + "  - { table: t, column: c, function: range }\n"),
             Catch::Contains("ranges go with function: range"));
  CHECK_THAT(error_of(base + "  - { table: t, column: c, function: hash, default: s0 }\n"),
             Catch::Contains("default applies to range and list"));
}

TEST_CASE("directory placement: cached entries, hash fallback, lookups asked for", "[placement]") {
  auto cfg = config::load_string(shards_yaml(3) + R"(sharded_tables:
  - { table: tenants, column: id, type: bigint, function: directory, directory: { url: "postgres://h:9/dir", ttl: 1min } }
)",
                                 "t.yaml");
  const auto& t = cfg->sharded_tables[0];
  CHECK(t.directory_url->port == 9);
  CHECK(t.directory_ttl == config::Millis(60000));
  router::DirectoryCache cache;
  CHECK(router::place_key(t, "42", 3, &cache, 0).needs_lookup);
  cache.put(0, "42", 2, std::chrono::minutes(1));
  cache.put(0, "7", -1, std::chrono::minutes(1));
  CHECK(*router::place_key(t, "42", 3, &cache, 0).shard == 2);
  CHECK(*router::place_key(t, " 42", 3, &cache, 0).shard == 2);
  // Not in the directory: the hash places it.
  auto hashed = config::load_string(
      shards_yaml(3) + "sharded_tables: [{ table: tenants, column: id }]\n", "h.yaml");
  CHECK(*router::place_key(t, "7", 3, &cache, 0).shard ==
        *router::place_key(hashed->sharded_tables[0], "7", 3).shard);
  // Expired entries are looked up again.
  cache.put(0, "42", 2, std::chrono::milliseconds(-1));
  CHECK(router::place_key(t, "42", 3, &cache, 0).needs_lookup);
  // The router asks the session for the lookup.
  router::SessionHints h;
  router::Context ctx;
  ctx.directory = &cache;
  auto r = router::route_query("select * from tenants where id = 42", h, *cfg, ctx);
  REQUIRE(testing::lookup_of(r).keys.size() == 1);
  CHECK(testing::lookup_of(r).keys[0].second == "42");
  CHECK_THAT(
      error_of(shards_yaml(2) + "sharded_tables: [{ table: t, column: c, function: directory }]\n"),
      Catch::Contains("directory goes with function: directory"));
}
