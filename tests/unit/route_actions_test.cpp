// What a route's action says outside the session: EXPLAIN (ROUTE)'s rows and the route
// counters (SHOW STATS, /metrics), one per action.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/router/hashing.hpp"
#include "proxy/router/router.hpp"
#include "proxy/runtime/stats.hpp"
#include "shard_map.hpp"

using namespace pgshard;
using namespace pgshard::router;

namespace {

std::shared_ptr<const config::Config> map() {
  return testing::three_shards(R"(sharded_tables:
  - { table: users, column: id, type: bigint }
reference_tables: [countries]
unsharded: reject
)");
}

int shard_of(const char* key) {
  return hash_to_index(*partition_hash(config::KeyType::kInt8, key), 3);
}

// EXPLAIN (ROUTE)'s rows, as "shard|route" lines.
std::vector<std::string> explained(const Route& r) {
  std::vector<std::string> rows;
  for (const auto m : protocol::frames(std::get<Answer>(r.action).text))
    if (m.frame.type == protocol::msg::kDataRow) {
      auto row = protocol::DataRow::parse(m.frame.body);
      REQUIRE(row);
      REQUIRE(row->values.size() == 2);
      rows.push_back(std::string(*row->values[0]) + "|" + std::string(*row->values[1]));
    }
  return rows;
}

}  // namespace

TEST_CASE("EXPLAIN (ROUTE) names each shard, its reason, and how their answers combine",
          "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  auto explain = [&](const std::string& sql) {
    return explained(route_query("explain (route) " + sql, h, *cfg));
  };
  auto rows = explain("select * from users where id = 42");
  REQUIRE(rows.size() == 1);
  CHECK(rows[0] ==
        "s" + std::to_string(shard_of("42")) + "|shard key in WHERE id=42 (bigint hash)");
  rows = explain("select * from users");
  REQUIRE(rows.size() == 4);
  CHECK(rows[0] == "s0|no shard key in WHERE");
  CHECK(rows[2] == "s2|no shard key in WHERE");
  CHECK(rows[3] == "|merge: concatenate rows, sum the command tags");
  CHECK(explain("update users set name = 'x'")[3] ==
        "|merge: run on every shard, sum the command tags");
  CHECK(explain("select * from users for update")[3] ==
        "|merge: run on every shard, sum the command tags");
  CHECK(explain("select * from users order by id")[3] == "|merge: k-way merge on ORDER BY");
  CHECK(explain("select sum(id) over () from users")[3] ==
        "|merge: refused: window functions across shards is not supported");
  rows = explain("select * from nowhere_known");
  REQUIRE(rows.size() == 1);
  CHECK_THAT(rows[0], Catch::StartsWith("|refused: statement uses tables that are not in "
                                        "pgshard's shard map") &&
                          Catch::EndsWith("(SQLSTATE 0A000)"));
}

TEST_CASE("route counters count each action once, refusals by SQLSTATE", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  runtime::RouteCounters counters;
  for (const char* sql :
       {"select * from users where id = 42", "select * from users order by id",
        "create index on users (name)", "copy users from stdin", "show pgshard.shard",
        "select * from nowhere_known", "update users set id = 1 where id = 2"})
    counters.count(route_query(sql, h, *cfg));
  Route split;
  split.action = SplitPipeline{protocol::error("0A000", "statements in one pipelined batch")};
  counters.count(split);
  Route lookup;
  lookup.action = Lookup{};
  counters.count(lookup);
  CHECK(counters.single == 1);
  CHECK(counters.multi == 3);
  CHECK(counters.merges[1] == 1);  // sort
  CHECK(counters.merges[5] == 2);  // write (the DDL and the COPY)
  CHECK(counters.local == 1);
  const int refusals = shard_of("1") != shard_of("2") ? 3 : 2;
  CHECK(counters.refused == static_cast<uint64_t>(refusals));
  CHECK(counters.refusals["0A000"] == static_cast<uint64_t>(refusals));
}
