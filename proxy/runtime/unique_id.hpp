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
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "config/config.hpp"

namespace pgshard::runtime {

class HostHealth;

// The id's parts, for tests: milliseconds since the epoch above, node, sequence.
struct UniqueIdParts {
  int64_t millis;
  int node;
  int sequence;
};
UniqueIdParts unique_id_parts(int64_t id, bool js_safe);

// The process's ids (one per process, in runtime::Shared): the two generators and the
// node lease, held (when the config sets no node_id) on a thread of its own.
class GlobalIds {
 public:
  GlobalIds() = default;
  GlobalIds(const GlobalIds&) = delete;
  GlobalIds& operator=(const GlobalIds&) = delete;
  ~GlobalIds() { stop_lease(); }

  // nullopt when `node` does not fit the variant (unique_id_53 with node >= 64).
  std::optional<int64_t> next(int node, bool js_safe);
  // The node to make ids with now: the configured node_id, else the lease's (nullopt while
  // no confirmed lease is held).
  std::optional<int> current_node(const config::Config& cfg) const;

  // The lease is held on shard 0's primary: the host that takes its writes as `hosts` says
  // when given (failover), looked up at each connection.
  void start_lease(const config::Config& cfg, const HostHealth* hosts = nullptr);
  void stop_lease();

 private:
  struct Generator {
    std::mutex mu;
    int64_t last_millis = 0;
    int64_t sequence = 0;
  };
  void run_lease(std::function<std::string()> conninfo);

  Generator wide_, safe_;
  // The lease, as the lease thread keeps it.
  std::atomic<int> node_{-1};
  std::atomic<int64_t> usable_from_{0};  // steady ns: the grace after taking the lease
  std::atomic<int64_t> confirmed_{0};    // steady ns: when the last confirmation was sent
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
};

}  // namespace pgshard::runtime
