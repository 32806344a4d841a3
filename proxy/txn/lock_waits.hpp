// Reading the lock waits of several shards at once for the deadlock detector, each bounded
// by a deadline: a shard that does not answer in time is left out of the round (and not
// asked again for a while) instead of holding up the shards that did answer.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace pgshard::runtime {
class HostHealth;
}

namespace pgshard::txn {

// One lock wait on a shard: backend `waiter` waits for backend `holder`.
struct LockWait {
  int shard = 0;
  int32_t waiter = 0;
  int32_t holder = 0;
};

// One thread's connections to the shards (the detector's), driven without blocking: libpq's
// non-blocking connect and query (PQconnectStart, PQsendQuery) over poll(). A frozen server
// (SIGSTOP, a hung host) accepts the TCP connection and then never answers; libpq's own
// connect_timeout and the server's statement_timeout cannot end that wait, the deadline can.
class LockWaitReader {
 public:
  explicit LockWaitReader(const config::Config& cfg, const runtime::HostHealth* hosts = nullptr);
  ~LockWaitReader();
  LockWaitReader(const LockWaitReader&) = delete;
  LockWaitReader& operator=(const LockWaitReader&) = delete;

  // The lock waits of each of `shards` that answered within `limit`, by shard. A shard
  // missing from the answer did not answer: its connection is closed, and it is asked
  // again only after a pause (so that a hung shard costs one deadline now and then, not one
  // per round). Its misses are logged, at most once a minute per shard.
  std::map<int, std::vector<LockWait>> read(const std::set<int>& shards,
                                            std::chrono::milliseconds limit);

 private:
  enum class Step : uint8_t { kConnecting, kFlushing, kReading, kDone, kFailed };
  struct Shard {
    void* conn = nullptr;  // PGconn
    Step step = Step::kFailed;
    int polling = 0;  // PostgresPollingStatusType, while connecting
    std::vector<LockWait> waits;
    std::string error;  // why it failed, for the log
    std::chrono::steady_clock::time_point retry_at{};
    std::chrono::steady_clock::time_point logged_at{};
    int misses = 0;  // rounds missed in a row
  };

  // Drives the shards asked until each has answered or failed, or the deadline.
  void wait_all(const std::vector<int>& asked, std::chrono::steady_clock::time_point deadline,
                std::chrono::milliseconds limit);
  void start(int shard, Shard& s, std::chrono::milliseconds limit);
  void send(int shard, Shard& s, std::chrono::milliseconds limit);
  void advance(int shard, Shard& s, std::chrono::milliseconds limit);
  void read_results(int shard, Shard& s);
  void fail(Shard& s, std::string why);
  void missed(int shard, Shard& s);
  short events(const Shard& s) const;
  const std::string& name(int shard) const;

  const config::Config& cfg_;
  const runtime::HostHealth* hosts_;  // where each shard's writes go (null: the map's primary)
  std::map<int, Shard> shards_;
};

}  // namespace pgshard::txn
