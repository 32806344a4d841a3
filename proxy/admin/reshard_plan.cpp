// `pgshard reshard plan`: what a change of shard map moves, table by table. Hash tables move
// whole hash remainders (buckets), ring tables arcs of the hash space, range tables key
// ranges, list tables keys; each from the shard the old map names to the one the new map
// names (shards are matched by name).
#include "proxy/admin/reshard_plan.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <numeric>
#include <set>

namespace pgshard::admin {

namespace {

using config::ShardedTable;
using config::ShardFunction;

// Above this many hash remainders (the lcm of two bucket counts) the planner refuses.
constexpr int64_t kMaxRemainders = int64_t{1} << 20;
constexpr double kHashSpace = 18446744073709551616.0;  // 2^64

std::string shard_name(const config::Config& cfg, int i) {
  return i < 0 ? std::string() : cfg.shards[static_cast<std::size_t>(i)].name;
}

using Moves = std::map<std::pair<std::string, std::string>, Move>;

Move& move_of(Moves& moves, const std::string& from, const std::string& to) {
  Move& m = moves[{from, to}];
  m.from = from;
  m.to = to;
  return m;
}

void take(TablePlan& p, Moves& moves) {
  for (auto& [key, m] : moves) p.moves.push_back(std::move(m));
}

// A hash table's shard per unit: bucket_shard with buckets, else the shard count (unit i on
// shard i), as names.
std::vector<std::string> hash_owners(const ShardedTable& t, const config::Config& cfg) {
  std::vector<std::string> out;
  if (t.buckets > 0)
    for (int s : t.bucket_shard) out.push_back(shard_name(cfg, s));
  else
    for (const auto& s : cfg.shards) out.push_back(s.name);
  return out;
}

void plan_hash(TablePlan& p, const config::Config& a, const config::Config& b) {
  const auto old_owner = hash_owners(*p.from, a);
  const auto new_owner = hash_owners(*p.to, b);
  p.old_units = static_cast<int>(old_owner.size());
  p.new_units = static_cast<int>(new_owner.size());
  const int64_t l = std::lcm(static_cast<int64_t>(p.old_units), p.new_units);
  if (l > kMaxRemainders) {
    p.refusal = "bucket counts " + std::to_string(p.old_units) + " and " +
                std::to_string(p.new_units) +
                " have too few factors in common (choose a new bucket count that is a multiple "
                "of the old one)";
    return;
  }
  p.modulus = static_cast<int>(l);
  Moves moves;
  for (int r = 0; r < p.modulus; ++r) {
    const auto& from = old_owner[static_cast<std::size_t>(r % p.old_units)];
    const auto& to = new_owner[static_cast<std::size_t>(r % p.new_units)];
    if (from == to) continue;
    Move& m = move_of(moves, from, to);
    m.remainders.push_back(r);
    m.share += 1.0 / p.modulus;
  }
  take(p, moves);
}

// The shard of the ring's first point at or after `point`, wrapping around.
int ring_owner(const std::vector<std::pair<uint64_t, int>>& ring, uint64_t point) {
  auto it = std::lower_bound(ring.begin(), ring.end(), std::make_pair(point, INT32_MIN));
  return (it == ring.end() ? ring.front() : *it).second;
}

void plan_ring(TablePlan& p, const config::Config& a, const config::Config& b) {
  const auto &x = p.from->ring, &y = p.to->ring;
  if (x.empty() || y.empty()) return;
  std::vector<uint64_t> points;
  for (const auto& [point, s] : x) points.push_back(point);
  for (const auto& [point, s] : y) points.push_back(point);
  std::sort(points.begin(), points.end());
  points.erase(std::unique(points.begin(), points.end()), points.end());
  // Between two neighbouring points of either ring each ring has one owner: the arc
  // (previous point, point] is placed whole.
  Moves moves;
  for (std::size_t i = 0; i < points.size(); ++i) {
    const uint64_t hi = points[i];
    const uint64_t lo = points[i == 0 ? points.size() - 1 : i - 1];
    const auto from = shard_name(a, ring_owner(x, hi));
    const auto to = shard_name(b, ring_owner(y, hi));
    if (from == to) continue;
    Move& m = move_of(moves, from, to);
    if (!m.arcs.empty() && m.arcs.back().second == lo)
      m.arcs.back().second = hi;
    else
      m.arcs.emplace_back(lo, hi);
    m.share += static_cast<double>(hi - lo) / kHashSpace;  // (wraps for the first arc)
  }
  take(p, moves);
}

// The shard holding keys from `lo` (nullopt: below every bound) of a range table.
int range_owner(const ShardedTable& t, std::optional<int64_t> lo) {
  if (lo)
    for (const auto& r : t.ranges)
      if (r.from <= *lo && *lo < r.to) return r.shard;
  return t.default_shard;
}

void no_shard(TablePlan& p, const std::string& what, const std::string& from) {
  if (p.refusal.empty())
    p.refusal = what + " on " + from +
                " would have no shard in the new map (add a range or list entry or a default)";
}

void plan_range(TablePlan& p, const config::Config& a, const config::Config& b) {
  std::set<int64_t> bounds;
  for (const auto* t : {p.from, p.to})
    for (const auto& r : t->ranges) bounds.insert({r.from, r.to});
  std::vector<std::optional<int64_t>> starts{std::nullopt};
  for (auto v : bounds) starts.emplace_back(v);
  Moves moves;
  for (std::size_t i = 0; i < starts.size(); ++i) {
    const auto lo = starts[i];
    const auto hi = i + 1 < starts.size() ? starts[i + 1] : std::nullopt;
    const auto from = shard_name(a, range_owner(*p.from, lo));
    const auto to = shard_name(b, range_owner(*p.to, lo));
    if (from == to || from.empty()) continue;  // no shard held such keys: no rows
    if (to.empty()) {
      no_shard(p, "keys from " + (lo ? std::to_string(*lo) : std::string("-inf")), from);
      continue;
    }
    Move& m = move_of(moves, from, to);
    if (!m.ranges.empty() && m.ranges.back().second == lo)
      m.ranges.back().second = hi;
    else
      m.ranges.emplace_back(lo, hi);
  }
  take(p, moves);
}

int list_owner(const ShardedTable& t, const std::string& key) {
  auto it = std::lower_bound(t.lists.begin(), t.lists.end(), std::make_pair(key, INT32_MIN));
  return it != t.lists.end() && it->first == key ? it->second : t.default_shard;
}

void plan_list(TablePlan& p, const config::Config& a, const config::Config& b) {
  std::set<std::string> keys;
  for (const auto* t : {p.from, p.to})
    for (const auto& [k, s] : t->lists) keys.insert(k);
  Moves moves;
  for (const auto& k : keys) {
    const auto from = shard_name(a, list_owner(*p.from, k));
    const auto to = shard_name(b, list_owner(*p.to, k));
    if (from == to || from.empty()) continue;
    if (to.empty())
      no_shard(p, "key '" + k + "'", from);
    else
      move_of(moves, from, to).keys.push_back(k);
  }
  const auto from = shard_name(a, p.from->default_shard);
  const auto to = shard_name(b, p.to->default_shard);
  if (!from.empty() && from != to) {
    if (to.empty()) {
      no_shard(p, "keys listed in neither map", from);
    } else {
      Move& m = move_of(moves, from, to);
      m.unlisted = true;
      m.listed.assign(keys.begin(), keys.end());
    }
  }
  take(p, moves);
}

// What may not change under a plan: the key, its type and the function.
std::string unplannable(const ShardedTable& x, const ShardedTable& y) {
  if (x.column != y.column) return "key column " + x.column + " -> " + y.column;
  if (x.type != y.type)
    return std::string("key type ") + config::to_string(x.type) + " -> " +
           config::to_string(y.type);
  if (x.function != y.function)
    return std::string("function ") + config::to_string(x.function) + " -> " +
           config::to_string(y.function) + " (only a change of placement within one function)";
  return "";
}

TablePlan plan_table(const ShardedTable& x, const ShardedTable& y, const config::Config& a,
                     const config::Config& b) {
  TablePlan p;
  p.name = x.qualified_name();
  p.from = &x;
  p.to = &y;
  if (auto why = unplannable(x, y); !why.empty()) {
    p.refusal = "cannot plan a change of " + why;
    return p;
  }
  switch (x.function) {
    case ShardFunction::kHash:
      plan_hash(p, a, b);
      break;
    case ShardFunction::kDirectory:
      if (x.directory_url.value_or(config::PgUrl{}).text() !=
              y.directory_url.value_or(config::PgUrl{}).text() ||
          x.directory_table != y.directory_table) {
        p.refusal = "cannot plan a change of the directory's database or table";
        return p;
      }
      p.note =
          "directory entries place their keys whatever the map says; the moves below are of "
          "keys the directory does not list (their hash), and count listed keys too";
      plan_hash(p, a, b);
      break;
    case ShardFunction::kRing:
      plan_ring(p, a, b);
      break;
    case ShardFunction::kRange:
      plan_range(p, a, b);
      break;
    case ShardFunction::kList:
      plan_list(p, a, b);
      break;
  }
  if (!p.refusal.empty()) p.moves.clear();
  return p;
}

}  // namespace

std::vector<TablePlan> plan_reshard(const config::Config& a, const config::Config& b) {
  std::vector<TablePlan> out;
  for (const auto& x : a.sharded_tables) {
    const ShardedTable* y = nullptr;
    for (const auto& t : b.sharded_tables)
      if (t.qualified_name() == x.qualified_name()) y = &t;
    if (y) {
      out.push_back(plan_table(x, *y, a, b));
      continue;
    }
    TablePlan p;
    p.name = x.qualified_name();
    p.from = &x;
    p.refusal = "not in the new map (its rows would be read as unsharded)";
    out.push_back(std::move(p));
  }
  for (const auto& y : b.sharded_tables) {
    bool known = false;
    for (const auto& x : a.sharded_tables) known |= x.qualified_name() == y.qualified_name();
    if (known) continue;
    TablePlan p;
    p.name = y.qualified_name();
    p.to = &y;
    p.refusal = "not in the old map (its rows live where unsharded tables' do)";
    out.push_back(std::move(p));
  }
  return out;
}

std::string number_ranges(const std::vector<int>& sorted) {
  std::string out;
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    std::size_t e = i;
    while (e + 1 < sorted.size() && sorted[e + 1] == sorted[e] + 1) ++e;
    out += (out.empty() ? "" : ",") + std::to_string(sorted[i]);
    if (e > i) out += "-" + std::to_string(sorted[e]);
    i = e;
  }
  return out;
}

}  // namespace pgshard::admin
