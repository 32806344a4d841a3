// Where a key lives: the table's sharding function (hash and its buckets, ring, range, list)
// applied to the text form of one key value.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace pgshard::router {

// Directory entries known to this worker: (table index, key) -> shard, or -1 when the key
// is not in the directory (the table's hash places it). Filled by the session.
class DirectoryCache {
 public:
  struct Entry {
    int shard;
    std::chrono::steady_clock::time_point expires;
  };
  std::optional<int> find(int table, const std::string& key) const;
  void put(int table, std::string key, int shard, std::chrono::milliseconds ttl);

 private:
  std::map<std::pair<int, std::string>, Entry> entries_;
};

// A column of a sharded table other than its key whose default draws from a sequence
// (serial, bigserial, identity, DEFAULT nextval(...)) or is pgshard.unique_id(): pgshard
// generates its values on the sequence's home so that they are unique across shards.
struct GeneratedColumn {
  std::string name;
  int position = -1;    // 0-based place in the table's column order
  bool always = false;  // GENERATED ALWAYS AS IDENTITY (needs OVERRIDING SYSTEM VALUE)
  bool operator==(const GeneratedColumn&) const = default;
};

// Where each sharded table's key column sits in the table's column order (for INSERT
// without a column list), and its generated columns, read from a shard's catalog by the
// session: table name -> 0-based position, or -1 when the table or column does not exist.
// Per worker; every worker's entries are forgotten when a schema change passes through
// pgshard: `generation` (runtime::Shared::catalog_generation) moves on.
class ColumnCache {
 public:
  explicit ColumnCache(const std::atomic<uint64_t>& generation) : generation_(&generation) {}
  std::optional<int> key_position(const std::string& table) const;
  // Null when the table's columns are not known yet.
  const std::vector<GeneratedColumn>* generated(const std::string& table) const;
  void put(const std::string& table, int position, std::vector<GeneratedColumn> generated = {});

 private:
  struct Entry {
    int position;
    uint64_t generation;
    std::vector<GeneratedColumn> generated;
  };
  uint64_t generation() const { return generation_->load(std::memory_order_acquire); }
  const std::atomic<uint64_t>* generation_;
  std::map<std::string, Entry> entries_;
};

struct Placement {
  std::optional<int> shard;
  bool needs_lookup = false;  // directory: the key is not cached yet
  // Set when the key is valid but no shard holds it (range/list without default).
  std::string error;
};

// The bucket of a key of a table with `buckets:` (its partition hash modulo the bucket
// count); nullopt for other tables and invalid keys.
std::optional<int> bucket_of(const config::ShardedTable& t, std::string_view text);

// An invalid key for the type (e.g. 'abc' for bigint) gives neither shard nor error:
// PostgreSQL reports that itself.
Placement place_key(const config::ShardedTable& t, std::string_view text, int shards,
                    const DirectoryCache* directory = nullptr, int table_index = -1);

}  // namespace pgshard::router
