// Hash buckets of a sharded table: `buckets: N` and its `bucket_shards` assignment (parsed
// and checked here), the even default assignment, and when two tables place keys alike.
#include <algorithm>
#include <charconv>
#include <string>

#include "config/checker.hpp"
#include "config/config.hpp"

namespace pgshard::config {

namespace {

constexpr int kMaxBuckets = 65536;

std::optional<int> parse_number(std::string_view t) {
  while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
  while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
  int v = 0;
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (t.empty() || ec != std::errc() || p != t.data() + t.size() || v < 0) return std::nullopt;
  return v;
}

// Buckets listed for one shard: each is taken by exactly one shard.
void assign(detail::Checker& c, const YAML::Node& at, ShardedTable& t, int shard,
            const std::vector<int>& buckets, const Config& cfg) {
  for (int b : buckets) {
    int& owner = t.bucket_shard[static_cast<std::size_t>(b)];
    if (owner == -1) {
      owner = shard;
      continue;
    }
    c.fail(at, "table " + t.table + ": bucket " + std::to_string(b) + " is assigned twice (to " +
                   cfg.shards[static_cast<std::size_t>(owner)].name + " and " +
                   cfg.shards[static_cast<std::size_t>(shard)].name + ")");
  }
}

void load_assignment(detail::Checker& c, const YAML::Node& list, ShardedTable& t,
                     const Config& cfg) {
  if (!list.IsSequence() || list.size() == 0) {
    c.fail(list, "bucket_shards must be a non-empty list of { shard, buckets: \"0-255,300\" }");
    return;
  }
  t.bucket_shard.assign(static_cast<std::size_t>(t.buckets), -1);
  for (const auto& item : list) {
    if (!c.mapping(item, "bucket_shards entry", {"shard", "buckets"})) continue;
    if (!item["shard"] || !item["buckets"]) {
      c.fail(item, "a bucket_shards entry needs shard and buckets");
      continue;
    }
    const auto name = c.string(item["shard"], "shard").value_or("");
    const int shard = cfg.shard_index(name);
    if (shard < 0) {
      c.fail(item["shard"],
             "table " + t.table + ": bucket_shards names unknown shard '" + name + "'");
      continue;
    }
    std::vector<int> buckets;
    const auto text = c.string(item["buckets"], "buckets").value_or("");
    if (auto err = parse_bucket_list(text, t.buckets, buckets))
      c.fail(item["buckets"], "table " + t.table + ": " + *err);
    else
      assign(c, item, t, shard, buckets, cfg);
  }
  std::vector<int> missing;
  for (int b = 0; b < t.buckets; ++b)
    if (t.bucket_shard[static_cast<std::size_t>(b)] == -1) missing.push_back(b);
  if (!missing.empty()) {
    std::vector<int> marks(static_cast<std::size_t>(t.buckets), 0);
    for (int b : missing) marks[static_cast<std::size_t>(b)] = 1;
    c.fail(list, "table " + t.table + ": bucket" + (missing.size() > 1 ? "s " : " ") +
                     bucket_ranges(marks, 1) + " of " + std::to_string(t.buckets) +
                     " not assigned to any shard");
  }
}

}  // namespace

namespace detail {

void load_buckets(Checker& c, const YAML::Node& n, ShardedTable& t, const Config& cfg) {
  if (!n["buckets"]) {
    if (n["bucket_shards"]) c.fail(n["bucket_shards"], "bucket_shards needs buckets: N");
    return;
  }
  if (t.function != ShardFunction::kHash) {
    c.fail(n["buckets"], "table " + t.table + ": buckets apply to function: hash only");
    return;
  }
  const auto n_buckets = c.integer<int>(n["buckets"], "buckets", 1, kMaxBuckets);
  if (!n_buckets) return;
  const int shards = static_cast<int>(cfg.shards.size());
  if (*n_buckets < shards) {
    c.fail(n["buckets"], "table " + t.table + ": buckets: " + std::to_string(*n_buckets) +
                             " is fewer than the " + std::to_string(shards) +
                             " shards (every shard needs a bucket)");
    return;
  }
  t.buckets = *n_buckets;
  if (n["bucket_shards"])
    load_assignment(c, n["bucket_shards"], t, cfg);
  else if (shards > 0)
    t.bucket_shard = even_buckets(t.buckets, shards);
}

}  // namespace detail

std::optional<std::string> parse_bucket_list(std::string_view text, int buckets,
                                             std::vector<int>& out) {
  std::string_view rest = text;
  if (rest.find_first_not_of(' ') == std::string_view::npos)
    return "an empty bucket list (write \"0-255\" or \"7,9\")";
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const auto item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    const auto dash = item.find('-');
    const auto lo = parse_number(item.substr(0, dash));
    const auto hi = dash == std::string_view::npos ? lo : parse_number(item.substr(dash + 1));
    if (!lo || !hi || *lo > *hi)
      return "bad bucket list item '" + std::string(item) + "' (write \"0-255\" or \"7,9\")";
    if (*hi >= buckets)
      return "bucket " + std::to_string(*hi) + " is out of range (buckets are 0-" +
             std::to_string(buckets - 1) + ")";
    for (int b = *lo; b <= *hi; ++b) out.push_back(b);
  }
  return std::nullopt;
}

std::vector<int> even_buckets(int buckets, int shards) {
  std::vector<int> out(static_cast<std::size_t>(buckets));
  for (int s = 0; s < shards; ++s) {
    const auto from = static_cast<int64_t>(s) * buckets / shards;
    const auto to = static_cast<int64_t>(s + 1) * buckets / shards;
    for (auto b = from; b < to; ++b) out[static_cast<std::size_t>(b)] = s;
  }
  return out;
}

std::string bucket_ranges(const std::vector<int>& bucket_shard, int shard) {
  std::string out;
  const int n = static_cast<int>(bucket_shard.size());
  for (int b = 0; b < n; ++b) {
    if (bucket_shard[static_cast<std::size_t>(b)] != shard) continue;
    int e = b;
    while (e + 1 < n && bucket_shard[static_cast<std::size_t>(e + 1)] == shard) ++e;
    out += (out.empty() ? "" : ",") + std::to_string(b);
    if (e > b) out += "-" + std::to_string(e);
    b = e;
  }
  return out;
}

std::vector<int> rebalance_buckets(const std::vector<int>& bucket_shard, int shards) {
  const int n = static_cast<int>(bucket_shard.size());
  std::vector<int> held(static_cast<std::size_t>(shards), 0);
  for (int s : bucket_shard) ++held[static_cast<std::size_t>(s)];
  // Each shard's share: n / shards, one more for the n % shards shards holding the most
  // (they then give one bucket fewer away).
  std::vector<int> order(static_cast<std::size_t>(shards));
  for (int s = 0; s < shards; ++s) order[static_cast<std::size_t>(s)] = s;
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) {
    return held[static_cast<std::size_t>(x)] > held[static_cast<std::size_t>(y)];
  });
  std::vector<int> quota(static_cast<std::size_t>(shards), n / shards);
  for (int i = 0; i < n % shards; ++i) ++quota[static_cast<std::size_t>(order[i])];
  // Shards above their share give away their last buckets; shards below take them in order.
  auto out = bucket_shard;
  std::vector<int> freed;
  for (int b = n - 1; b >= 0; --b) {
    auto& h = held[static_cast<std::size_t>(out[static_cast<std::size_t>(b)])];
    if (h > quota[static_cast<std::size_t>(out[static_cast<std::size_t>(b)])]) {
      --h;
      freed.push_back(b);
    }
  }
  std::sort(freed.begin(), freed.end());
  int s = 0;
  for (int b : freed) {
    while (held[static_cast<std::size_t>(s)] >= quota[static_cast<std::size_t>(s)]) ++s;
    out[static_cast<std::size_t>(b)] = s;
    ++held[static_cast<std::size_t>(s)];
  }
  return out;
}

bool same_placement(const ShardedTable& a, const ShardedTable& b) {
  const auto url = [](const std::optional<PgUrl>& u) { return u ? u->text() : std::string(); };
  return a.type == b.type && a.function == b.function && a.buckets == b.buckets &&
         a.bucket_shard == b.bucket_shard && a.ring == b.ring && a.ranges == b.ranges &&
         a.lists == b.lists && a.default_shard == b.default_shard &&
         url(a.directory_url) == url(b.directory_url) && a.directory_table == b.directory_table;
}

}  // namespace pgshard::config
