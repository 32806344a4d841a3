// Distributed deadlock detection: two transactions that lock rows on two shards in opposite
// orders each wait on one shard, where PostgreSQL sees one waiter and no cycle. When a
// pgshard transaction spanning shards has waited longer than timeouts.deadlock, the detector
// reads the lock waits on the shards involved (pg_locks, pg_blocking_pids), maps backend
// pids to pgshard's transactions, finds cycles in the global wait-for graph that cross
// shards (one shard's own cycles are PostgreSQL's to break) and cancels the youngest
// transaction of each: its client gets 40P01, the others proceed. Nothing is read from a
// shard while no transaction on several shards waits.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "config/config.hpp"

namespace pgshard::txn {

// A client transaction holding servers on several shards, as its session reports it.
struct WaitingTxn {
  int worker = 0;
  uint64_t session = 0;  // the session's id
  uint64_t serial = 0;   // which of the session's transactions (a later one is not a victim)
  std::chrono::steady_clock::time_point began;  // the youngest in a cycle is the victim
  uint64_t request = 0;  // the session's request counter: a later request is not the victim
  bool busy = false;     // a request is running on its servers
  std::vector<std::pair<int, int32_t>> servers;  // (shard, backend pid) of each server
};

// One lock wait on a shard: backend `waiter` waits for backend `holder`.
struct LockWait {
  int shard = 0;
  int32_t waiter = 0;
  int32_t holder = 0;
};

struct Victim {
  WaitingTxn txn;
  std::string detail;  // names the shards of the cycle, for the client's 40P01
};

// The transactions to cancel so that no cycle crossing shards is left: in each cycle of the
// wait-for graph (nodes: pgshard transactions, and backends pgshard does not know) whose
// waits lie on two shards or more, the youngest pgshard transaction spanning shards.
// Synchronous and pure.
std::vector<Victim> find_victims(const std::vector<WaitingTxn>& txns,
                                 const std::vector<LockWait>& waits,
                                 const std::vector<std::string>& shard_names);

class DeadlockDetector {
 public:
  // `collect` lists the transactions on several shards (any thread may call it); `cancel`
  // cancels a victim's running request, if it is still that transaction's.
  DeadlockDetector(const config::Config& cfg, std::function<std::vector<WaitingTxn>()> collect,
                   std::function<void(const Victim&)> cancel);
  ~DeadlockDetector();
  DeadlockDetector(const DeadlockDetector&) = delete;
  DeadlockDetector& operator=(const DeadlockDetector&) = delete;

  // Starts the thread (a no-op when timeouts.deadlock is 0).
  void start();
  void stop();
  // Cycles broken so far (for logs and tests).
  uint64_t victims() const { return victims_; }

 private:
  void run();
  void check();
  // The lock waits on `shard` (false: the shard could not be asked).
  bool read_waits(int shard, std::vector<LockWait>& out);

  // When each busy request was first seen, by (worker, session): a request seen busy for
  // timeouts.deadlock gets the shards asked (sessions keep no clock for this).
  struct Seen {
    uint64_t serial = 0, request = 0;
    std::chrono::steady_clock::time_point since;
  };
  std::map<std::pair<int, uint64_t>, Seen> seen_;
  const config::Config& cfg_;
  std::function<std::vector<WaitingTxn>()> collect_;
  std::function<void(const Victim&)> cancel_;
  std::map<int, void*> conns_;  // PGconn per shard, opened on first need
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::atomic<uint64_t> victims_{0};
};

}  // namespace pgshard::txn
