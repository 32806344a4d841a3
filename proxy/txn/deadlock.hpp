// Distributed deadlock detection: two transactions that lock rows on two shards in opposite
// orders each wait on one shard, where PostgreSQL sees one waiter and no cycle. When a
// pgshard transaction spanning shards has waited longer than timeouts.deadlock, the detector
// reads the lock waits on the shards involved (pg_locks, pg_blocking_pids; all shards at
// once, each within a deadline), maps backend pids to pgshard's transactions, adds the waits
// for a pooled server that pgshard itself imposes, finds cycles in the global wait-for graph
// that cross shards or pass through a pool wait (one shard's own lock cycles are
// PostgreSQL's to break) and cancels the youngest transaction of each: its client gets
// 40P01, the others proceed. A shard that does not answer in time leaves its waits out: a
// cycle among the shards that answered is a cycle all the same. Nothing is read from a shard
// while no transaction on several shards waits. A statement on several shards outside a
// transaction block counts as a transaction of its own (its row locks and servers are held
// until it ends).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "proxy/txn/lock_waits.hpp"

namespace pgshard::txn {

// A wait for a server of a shard's pool, every one of which is lent out. Any holder that
// finishes frees a server: an OR-wait, where a lock wait needs every holder (an AND-wait).
struct PoolWait {
  int shard = -1;
  std::vector<int32_t> holders;  // backend pids of the pool's servers lent out
  bool spare = false;            // a server may come free without a holder finishing
  // The process-wide pool (its identity): its servers are lent on every worker, and each
  // worker knows only its own holders (merge_pool_waits).
  const void* pool = nullptr;
  int servers = 0;  // the pool's servers in the whole process (open, opening or moving)
};

// A client transaction holding servers on several shards, or a statement on several shards
// outside a transaction block (an autocommit UPDATE without the key holds its row locks on
// every shard until it ends, as a transaction would), as its session reports it.
struct WaitingTxn {
  int worker = 0;
  uint64_t session = 0;  // the session's id
  uint64_t serial = 0;   // which of the session's transactions (a later one is not a victim)
  std::chrono::steady_clock::time_point began;  // the youngest in a cycle is the victim
  uint64_t request = 0;  // the session's request counter: a later request is not the victim
  bool busy = false;     // a request is running on its servers
  std::vector<std::pair<int, int32_t>> servers;  // (shard, backend pid) of each server
  std::optional<PoolWait> pool_wait;             // waiting for a server of another shard
  // A statement on several shards outside a transaction block (its servers the pool's, not
  // a transaction's): as a victim it fails alone and rolls back on every shard.
  bool statement = false;
};

struct Victim {
  WaitingTxn txn;
  std::string detail;  // names the shards of the cycle, for the client's 40P01
};

// The pool waits of `txns` made whole: each wait's holders become those every worker
// reported for its pool in `seen` (one PoolWait per worker and pool: that worker's holders,
// whether a server may come free there), and a server of the pool that nobody listed as
// lent (idle, opening, on its way between workers, or on a worker that did not answer)
// makes the wait one a server may end without a holder finishing.
void merge_pool_waits(std::vector<WaitingTxn>& txns, const std::vector<PoolWait>& seen);

// Leaves out of `txns` each transaction not in `later` as it was (the same request, on the
// same servers): the lock waits read between the two lists are of servers it may have
// handed on, and would make cycles that are not there.
void keep_unchanged(std::vector<WaitingTxn>& txns, const std::vector<WaitingTxn>& later);

// The transactions to cancel so that no cycle crossing shards is left: in each cycle of the
// wait-for graph (nodes: pgshard transactions, and backends pgshard does not know) whose
// waits lie on two shards or more, or include a pool wait, the youngest pgshard transaction
// spanning shards (a pool wait's shard counts). Only transactions that can never proceed
// are in a cycle: one that waits for a pool is stuck only when every holder of the pool is
// (graph reduction, AND for lock waits, OR for pool waits). `waits` may lack the shards
// that did not answer: fewer edges, never a wrong victim. (A holder stuck only in one
// shard's own lock cycle counts as stuck, though PostgreSQL will break that cycle: a pool
// wait on it may then lose a victim that would have got its server a little later.)
// Synchronous and pure.
std::vector<Victim> find_victims(const std::vector<WaitingTxn>& txns,
                                 const std::vector<LockWait>& waits,
                                 const std::vector<std::string>& shard_names);

class DeadlockDetector {
 public:
  // `collect` lists the transactions on several shards (any thread may call it); `cancel`
  // cancels a victim's running request, if it is still that transaction's.
  // Shards' lock waits are read on the host that takes their writes as `hosts` says (the
  // map's primaries without it).
  DeadlockDetector(const config::Config& cfg, std::function<std::vector<WaitingTxn>()> collect,
                   std::function<void(const Victim&)> cancel,
                   const runtime::HostHealth* hosts = nullptr);
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
  // How long a round waits for the shards' answers.
  std::chrono::milliseconds read_limit() const;

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
  LockWaitReader reader_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::atomic<uint64_t> victims_{0};
};

}  // namespace pgshard::txn
