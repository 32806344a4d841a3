// Cost of routing one statement: cached analysis (re-routing with new Bind values) versus
// parsing with libpg_query every time. Google Benchmark; run build/*/tests/router_bench.
#include <benchmark/benchmark.h>

#include "../unit/shard_map.hpp"
#include "config/config.hpp"
#include "proxy/router/router.hpp"

using namespace pgshard;

namespace {
std::shared_ptr<const config::Config> map() {
  return testing::three_shards(R"(sharded_tables:
  - { table: users, column: id, type: bigint }
  - { table: orders, column: user_id, type: bigint }
)");
}

const char* kSql =
    "SELECT o.id, o.amount, u.name FROM orders o JOIN users u ON u.id = o.user_id "
    "WHERE o.user_id = $1 AND o.status = 'new' ORDER BY o.id";

void route_with(benchmark::State& state, std::size_t cache_size) {
  auto cfg = map();
  router::AnalysisCache cache(cache_size, cfg.get());
  router::SessionHints hints;
  router::Context ctx;
  ctx.cache = &cache;
  ctx.reasons = false;  // as on the data path (reasons are built for EXPLAIN and debug logs)
  protocol::Bind bind;
  std::string value;
  bind.params.resize(1);
  ctx.bind = &bind;
  int64_t key = 0;
  for (auto _ : state) {
    value = std::to_string(++key);
    bind.params[0] = std::string_view(value);
    auto r = router::route_extended(kSql, hints, *cfg, ctx);
    benchmark::DoNotOptimize(r.action.index());
  }
}

void BM_RouteCached(benchmark::State& state) {
  route_with(state, 1000);
}
void BM_RouteUncached(benchmark::State& state) {
  route_with(state, 0);
}

void BM_RouteSimpleLiteralCached(benchmark::State& state) {
  auto cfg = map();
  router::AnalysisCache cache(1000, cfg.get());
  router::SessionHints hints;
  router::Context ctx;
  ctx.cache = &cache;
  ctx.reasons = false;  // as on the data path (reasons are built for EXPLAIN and debug logs)
  for (auto _ : state) {
    auto r = router::route_query("select * from users where id = 42", hints, *cfg, ctx);
    benchmark::DoNotOptimize(r.action.index());
  }
}
}  // namespace

BENCHMARK(BM_RouteCached);
BENCHMARK(BM_RouteUncached);
BENCHMARK(BM_RouteSimpleLiteralCached);
BENCHMARK_MAIN();
