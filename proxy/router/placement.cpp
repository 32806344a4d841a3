// Where a key lives: the table's sharding function (hash, ring, range, list) applied to the
// text form of one key value.
#include "proxy/router/placement.hpp"

#include <algorithm>
#include <atomic>

#include "proxy/router/hashing.hpp"

namespace pgshard::router {

namespace {
std::pair<int64_t, int64_t> bounds(config::KeyType t) {
  switch (t) {
    case config::KeyType::kInt2:
      return {INT16_MIN, INT16_MAX};
    case config::KeyType::kInt4:
      return {INT32_MIN, INT32_MAX};
    default:
      return {INT64_MIN, INT64_MAX};
  }
}
}  // namespace

std::optional<int> DirectoryCache::find(int table, const std::string& key) const {
  auto it = entries_.find({table, key});
  if (it == entries_.end() || it->second.expires < std::chrono::steady_clock::now())
    return std::nullopt;
  return it->second.shard;
}

void DirectoryCache::put(int table, std::string key, int shard, std::chrono::milliseconds ttl) {
  entries_[{table, std::move(key)}] = {shard, std::chrono::steady_clock::now() + ttl};
}

std::optional<int> ColumnCache::key_position(const std::string& table) const {
  auto it = entries_.find(table);
  if (it == entries_.end() || it->second.generation != generation()) return std::nullopt;
  return it->second.position;
}

const std::vector<GeneratedColumn>* ColumnCache::generated(const std::string& table) const {
  auto it = entries_.find(table);
  if (it == entries_.end() || it->second.generation != generation()) return nullptr;
  return &it->second.generated;
}

void ColumnCache::put(const std::string& table, int position,
                      std::vector<GeneratedColumn> generated) {
  entries_[table] = {position, generation(), std::move(generated)};
}

std::optional<int> bucket_of(const config::ShardedTable& t, std::string_view text) {
  if (t.function != config::ShardFunction::kHash || t.buckets <= 0) return std::nullopt;
  auto h = partition_hash(t.type, text);
  if (!h) return std::nullopt;
  return hash_to_index(*h, t.buckets);
}

Placement place_key(const config::ShardedTable& t, std::string_view text, int shards,
                    const DirectoryCache* directory, int table_index) {
  Placement p;
  switch (t.function) {
    case config::ShardFunction::kDirectory: {
      auto h = partition_hash(t.type, text);
      if (!h) return p;
      auto key = config::canonical_key(t.type, text);
      auto hit = directory ? directory->find(table_index, key) : std::nullopt;
      if (!hit) {
        p.needs_lookup = true;
        return p;
      }
      // Keys the directory does not list fall back to the hash.
      p.shard = *hit >= 0 ? *hit : hash_to_index(*h, shards);
      return p;
    }
    case config::ShardFunction::kHash: {
      auto h = partition_hash(t.type, text);
      if (!h) return p;
      p.shard = t.buckets > 0
                    ? t.bucket_shard[static_cast<std::size_t>(hash_to_index(*h, t.buckets))]
                    : hash_to_index(*h, shards);
      return p;
    }
    case config::ShardFunction::kRing: {
      auto h = partition_hash(t.type, text);
      if (!h || t.ring.empty()) return p;
      // The first virtual node at or after the key's point, wrapping around.
      auto it = std::lower_bound(t.ring.begin(), t.ring.end(), std::make_pair(*h, INT32_MIN));
      p.shard = (it == t.ring.end() ? t.ring.front() : *it).second;
      return p;
    }
    case config::ShardFunction::kRange: {
      auto [lo, hi] = bounds(t.type);
      auto v = parse_int(text, lo, hi);
      if (!v) return p;
      auto it = std::upper_bound(t.ranges.begin(), t.ranges.end(), *v,
                                 [](int64_t x, const config::RangeBound& b) { return x < b.from; });
      if (it != t.ranges.begin() && *v < std::prev(it)->to) {
        p.shard = std::prev(it)->shard;
      } else if (t.default_shard >= 0) {
        p.shard = t.default_shard;
      } else {
        p.error = "no shard holds key " + std::to_string(*v) + " of table \"" + t.table +
                  "\" (no range contains it and there is no default)";
      }
      return p;
    }
    case config::ShardFunction::kList: {
      if (t.type != config::KeyType::kText && t.type != config::KeyType::kVarchar &&
          !partition_hash(t.type, text))
        return p;
      auto key = config::canonical_key(t.type, text);
      auto it = std::lower_bound(t.lists.begin(), t.lists.end(), std::make_pair(key, INT32_MIN));
      if (it != t.lists.end() && it->first == key) {
        p.shard = it->second;
      } else if (t.default_shard >= 0) {
        p.shard = t.default_shard;
      } else {
        p.error = "no shard holds key '" + key + "' of table \"" + t.table +
                  "\" (not in any list and there is no default)";
      }
      return p;
    }
  }
  return p;
}

}  // namespace pgshard::router
