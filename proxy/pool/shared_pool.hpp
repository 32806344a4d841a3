// The process-wide side of a (shard, user) pool: its limit across every worker, the
// workers' clients waiting for a server, and hand-overs of servers between workers.
//
// Each worker keeps its own Pool (idle servers, its waiters) and lends from it without a
// lock. A SharedPool is touched only when a worker cannot lend (it reserves a slot to open a
// server, or queues for one), when a server opens or closes, and when a server comes back
// while a client waits elsewhere: then the server (its socket released from this worker's
// reactor, see ServerConn::leave) is posted to the waiting worker, which registers it with
// its own. Waiters are served in the order they queued, whichever worker they are on, except
// that a server given back goes to a waiter of its own worker (no hand-over between threads)
// while the longest waiter elsewhere has waited less than kFairAfter.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "proxy/asio.hpp"
#include "proxy/pool/server_conn.hpp"

namespace pgshard::pool {

class Pool;

class SharedPool {
 public:
  SharedPool(int limit, int workers);
  SharedPool(const SharedPool&) = delete;
  SharedPool& operator=(const SharedPool&) = delete;

  // ---- membership: worker `worker`'s pool, posted to on `ex` ----
  void attach(int worker, Pool* pool, asio::any_io_executor ex);
  // The pool goes (or closes at exit): nothing is posted to it any more, and its waiters
  // leave the queue.
  void detach(int worker, const Pool* pool);

  // ---- read without a lock (the lending fast path) ----
  int limit() const { return limit_.load(std::memory_order_relaxed); }
  int total() const { return total_.load(std::memory_order_relaxed); }
  bool has_room() const { return total() < limit(); }
  // Servers lent out or opening, on every worker (least_active read balancing).
  int busy() const {
    int idle = 0;
    for (const auto& m : members_) idle += m.idle.load(std::memory_order_relaxed);
    return std::max(0, total() - idle);
  }
  bool over_limit() const { return total() > limit(); }  // (a reload made it smaller)
  // Clients queued on every worker (not those whose hand-over is on its way).
  int waiting() const { return waiting_.load(std::memory_order_seq_cst); }
  // Parameters the server reported at the pool's first login on any worker
  // (server_version, encodings...): empty before; never changed once known.
  const std::map<std::string, std::string>& server_params() const;
  void learn_server_params(const std::map<std::string, std::string>& params);
  // RECONNECT: connections of older generations are not reused.
  uint64_t generation() const { return generation_.load(std::memory_order_relaxed); }
  void new_generation() { generation_.fetch_add(1, std::memory_order_relaxed); }
  // How many idle servers worker `worker` holds, for waiters elsewhere to ask it for one.
  // `fence`: the store is ordered before the caller's next read of waiting(), so that a
  // waiter that queued meanwhile either sees this idle server or is seen by the caller.
  void set_idle(int worker, std::size_t n, bool fence) {
    members_[static_cast<std::size_t>(worker)].idle.store(
        static_cast<int>(n), fence ? std::memory_order_seq_cst : std::memory_order_relaxed);
  }

  // ---- accounting (a lock) ----
  // A slot to open a server (true), else worker `worker` is queued for one; then *donor is
  // a worker that had an idle server (-1: none), to ask with ask_to_lend.
  bool reserve_or_queue(int worker, int* donor);
  // A waiter of `worker` left without a hand-over (served by its own worker, timed out,
  // its client left): its place in the queue goes.
  void unqueue(int worker);
  // The worker of the longest waiter, taken off the queue (-1: nobody waits): it gets the
  // next server or slot, which the caller sends. With `own` (the giver's worker), a waiter
  // of `own` comes first unless the longest waiter has waited kFairAfter or more.
  int next_waiter(int own = -1);
  // How long a waiter on another worker lets a server given back go to a waiter of the
  // giver's worker: a hand-over between threads costs a post and a re-registration of the
  // socket with the other reactor, about a quarter of a pooled transaction's CPU.
  static constexpr std::chrono::microseconds kFairAfter{5000};
  // A server closed or failed to open: the worker whose waiter gets its slot (-1: the
  // slot is free, or the pool is over its limit).
  int release();
  // RELOAD: the new limit; returns the workers whose waiters get the slots it adds.
  std::vector<int> set_limit(int limit);

  // ---- delivery (posted to the worker's thread) ----
  // Sends `conn` (left its worker: ServerConn::leave), or a slot when null, to `worker`,
  // whose pool hands it to a waiter; if the pool is gone the connection closes and the slot
  // goes on to the next waiter.
  void send(int worker, std::unique_ptr<ServerConn> conn);
  // Asks `worker` to send one of its idle servers to the longest waiter.
  void ask_to_lend(int worker);

 private:
  struct alignas(64) Member {  // (its own cache line: `idle` is written by its worker)
    std::atomic<int> idle{0};
    Pool* pool = nullptr;
    asio::any_io_executor ex;
  };
  Pool* pool_of(int worker);
  // A slot nobody could use: freed, or passed to the next waiter.
  void release_and_pass();
  friend class Parcel;

  mutable std::mutex mu_;
  std::atomic<int> limit_;
  std::atomic<int> total_{0};    // open + opening, on every worker (written under mu_)
  std::atomic<int> waiting_{0};  // queue_.size() (written under mu_)
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> params_known_{false};
  std::map<std::string, std::string> params_;  // (written once, under mu_)
  struct Place {
    int worker;
    std::chrono::steady_clock::time_point since;
  };
  std::deque<Place> queue_;      // a place per waiter, longest waiting first
  std::vector<Member> members_;  // by worker index
  std::size_t next_donor_ = 0;   // where the search for an idle server starts (round robin)
};

// The process's shared pools, one per (shard or other target, user key), created on first
// use and kept (a worker's pool may come and go; the count of its servers may not).
class SharedPools {
 public:
  // The pool for `key`; its limit becomes `limit` (the configuration in force).
  SharedPool& get(const std::pair<int, std::string>& key, int limit, int workers);

 private:
  std::mutex mu_;
  std::map<std::pair<int, std::string>, std::unique_ptr<SharedPool>> pools_;
};

}  // namespace pgshard::pool
