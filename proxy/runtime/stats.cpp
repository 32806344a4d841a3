#include "proxy/runtime/stats.hpp"

#include <algorithm>

#include "proxy/router/router.hpp"

namespace pgshard::runtime {

namespace {
std::size_t merge_kind(const router::Route& route) {
  if (route.write || route.ddl) return 5;
  const auto* f = std::get_if<router::FanOut>(&route.action);
  const auto* m = f ? f->merge.get() : nullptr;
  if (!m) return 0;
  if (m->aggregate) return 2;
  if (m->distinct || m->distinct_on) return 3;
  if (!m->order.empty()) return 1;
  if (m->limit.present() || m->offset.present()) return 4;
  return 0;
}
}  // namespace

void RouteCounters::count(const router::Route& route) {
  switch (router::action(route)) {
    case router::Action::kForward:
      ++single;
      break;
    case router::Action::kFanOut:
    case router::Action::kDdl:
    case router::Action::kCopyIn:
      ++multi;
      ++merges[merge_kind(route)];
      break;
    case router::Action::kAnswer:
      ++local;
      break;
    case router::Action::kRefuse:
    case router::Action::kSplitPipeline: {
      ++refused;
      const auto& code = router::refusal(route)->code;
      ++refusals[code.empty() ? std::string("XX000") : code];
      break;
    }
    case router::Action::kLookup:
    case router::Action::kGenerateKeys:
    case router::Action::kInsertSelect:
    case router::Action::kUniqueIds:
      break;  // routed again once resolved: counted then
  }
}

void RouteCounters::add(const RouteCounters& o) {
  single += o.single;
  multi += o.multi;
  local += o.local;
  refused += o.refused;
  for (std::size_t i = 0; i < merges.size(); ++i) merges[i] += o.merges[i];
  for (const auto& [k, v] : o.refusals) refusals[k] += v;
}

namespace {
// Adds `from` into `into`: the same pool on another worker (`same_pool`: every worker's
// row carries the pool's whole-process limit) or another user's pool.
void merge_row(PoolRow& into, const PoolRow& from, bool same_pool) {
  into.stats.total += from.stats.total;
  into.stats.idle += from.stats.idle;
  into.stats.waiting += from.stats.waiting;
  into.stats.connecting += from.stats.connecting;
  into.stats.max_size = same_pool ? std::max(into.stats.max_size, from.stats.max_size)
                                  : into.stats.max_size + from.stats.max_size;
  into.stats.max_wait_us = std::max(into.stats.max_wait_us, from.stats.max_wait_us);
  into.counters.add(from.counters);
  into.clients += from.clients;
  if (from.health.last_ok > into.health.last_ok) into.health.last_ok = from.health.last_ok;
  if (from.health.last_failure > into.health.last_failure) {
    into.health.last_failure = from.health.last_failure;
    into.health.last_error = from.health.last_error;
  }
}

std::vector<PoolRow> combine(const std::vector<PoolRow>& rows, bool by_user) {
  std::vector<PoolRow> out;
  for (const auto& p : rows) {
    auto it = std::find_if(out.begin(), out.end(), [&](const PoolRow& r) {
      return r.shard == p.shard && (!by_user || r.user == p.user);
    });
    if (it == out.end()) {
      out.push_back(p);
      if (!by_user) out.back().user.clear();
    } else {
      merge_row(*it, p, by_user);
    }
  }
  std::sort(out.begin(), out.end(), [](const PoolRow& a, const PoolRow& b) {
    // Shards first in map order, then directories; users by name.
    // (64-bit: the visibility coordinator's pool has shard INT_MIN.)
    const int64_t ka = a.shard < 0 ? int64_t{1000000} - a.shard : a.shard;
    const int64_t kb = b.shard < 0 ? int64_t{1000000} - b.shard : b.shard;
    return ka != kb ? ka < kb : a.user < b.user;
  });
  return out;
}
}  // namespace

std::vector<PoolRow> Snapshot::pools() const {
  std::vector<PoolRow> rows;
  for (const auto& w : workers) rows.insert(rows.end(), w.pools.begin(), w.pools.end());
  return combine(rows, true);
}

std::vector<PoolRow> Snapshot::shards() const {
  auto rows = combine(pools(), false);  // (each pool's workers first: see merge_row)
  std::erase_if(rows, [](const PoolRow& r) { return r.shard < 0; });
  return rows;
}

RouteCounters Snapshot::routes() const {
  RouteCounters r;
  for (const auto& w : workers) r.add(w.routes);
  return r;
}

}  // namespace pgshard::runtime
