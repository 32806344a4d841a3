// Where a key lives: the table's sharding function (hash, ring, range, list) applied to the
// text form of one key value.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "config/config.hpp"

namespace pgshard::router {

struct Placement {
  std::optional<int> shard;
  // Set when the key is valid but no shard holds it (range/list without default).
  std::string error;
};

// An invalid key for the type (e.g. 'abc' for bigint) gives neither shard nor error:
// PostgreSQL reports that itself.
Placement place_key(const config::ShardedTable& t, std::string_view text, int shards);

}  // namespace pgshard::router
