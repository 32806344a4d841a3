// pgshard.unique_id(): 64-bit ids unique across shards and pgshard instances without asking
// any database, Snowflake-style: milliseconds since 2025-01-01 UTC (41 bits, until 2094),
// the instance's node_id (10 bits, 0-1023, from the config) and a sequence within the
// millisecond (12 bits). pgshard.unique_id_53(): the JavaScript-safe variant below 2^53
// (Number.MAX_SAFE_INTEGER): milliseconds (41 bits), node_id (6 bits: 0-63), sequence
// (6 bits). Ids from one instance only grow; when a millisecond's sequence runs out the
// next id takes the next millisecond (a burst runs ahead of the clock, then the clock
// catches up), and a clock stepped back is not followed.
#pragma once

#include <cstdint>
#include <optional>

namespace pgshard::executor {

// nullopt when node_id does not fit the variant (unique_id_53 with node_id >= 64).
std::optional<int64_t> unique_id(int node_id, bool js_safe);

// The id's parts, for tests and the admin console: milliseconds since the epoch above,
// node, sequence.
struct UniqueIdParts {
  int64_t millis;
  int node;
  int sequence;
};
UniqueIdParts unique_id_parts(int64_t id, bool js_safe);

}  // namespace pgshard::executor
