// pgshard.unique_id(): 64-bit ids unique across shards and pgshard instances without asking
// any database, Snowflake-style: milliseconds since 2025-01-01 UTC (41 bits, until 2094),
// the instance's node (10 bits, 0-1023) and a sequence within the millisecond (12 bits).
// pgshard.unique_id_53(): the JavaScript-safe variant below 2^53 (Number.MAX_SAFE_INTEGER):
// milliseconds (41 bits), node (6 bits: 0-63), sequence (6 bits). Ids from one instance
// only grow; when a millisecond's sequence runs out the next id takes the next millisecond
// (a burst runs ahead of the clock, then the clock catches up), and a clock stepped back is
// not followed.
//
// The node: `node_id` from the config, or else leased from the first shard: a session-level
// advisory lock (pg_try_advisory_lock(1885827944, n), the lowest free n, in the first shard's
// postgres database) held by a connection of its own, confirmed every 250 ms. Ids are made only
// while the last confirmation was sent less than a second ago, and a newly taken lease is used
// after two seconds: an instance that lost its lease (its connection gone, so the lock freed) has
// stopped before another instance uses the same node.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <thread>

#include "config/config.hpp"

namespace pgshard::executor {

// nullopt when `node` does not fit the variant (unique_id_53 with node >= 64).
std::optional<int64_t> unique_id(int node, bool js_safe);

// The id's parts, for tests: milliseconds since the epoch above, node, sequence.
struct UniqueIdParts {
  int64_t millis;
  int node;
  int sequence;
};
UniqueIdParts unique_id_parts(int64_t id, bool js_safe);

// The node to make ids with now: the configured node_id, else the lease's (nullopt while
// no confirmed lease is held).
std::optional<int> current_node(const config::Config& cfg);

// Holds the lease (when the config sets no node_id) on a thread of its own.
class NodeLease {
 public:
  void start(const config::Config& cfg);
  void stop();
  ~NodeLease() { stop(); }

 private:
  void run(std::string conninfo);
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
};

}  // namespace pgshard::executor
