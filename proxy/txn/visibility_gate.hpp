// Atomic visibility across shards: the commit phase of a cross-shard transaction and the
// moment a multi-shard read takes its snapshots exclude each other on the shards they share.
#pragma once

#include <atomic>
#include <chrono>
#include <list>
#include <memory>
#include <mutex>
#include <vector>

#include "proxy/asio.hpp"

namespace pgshard::txn {

// A reader-writer gate per shard, taken for a set of shards at once (all or nothing, so two
// holders never wait on each other). Readers (a multi-shard read while its shards take their
// snapshots) share it; committers (the COMMIT PREPAREDs of one transaction, or the COMMITs of
// one multi-shard autocommit write) share it with each other but not with readers. Waiters
// are served in arrival order where their shards overlap, so neither side starves.
//
// Why: each shard commits its part of a cross-shard transaction at its own moment, and each
// shard's part of a read takes its snapshot at its own moment. With the gate, every read
// takes all its snapshots either before any part of a commit became visible or after all of
// them did.
//
// A wait is bounded (`limit`): a holder can itself wait on a shard's lock held by a prepared
// transaction whose COMMIT PREPARED waits here (a read of a table a cross-shard DDL
// transaction holds). Past the bound the waiter goes ahead without the guarantee, counted in
// `forced` and logged by the caller, rather than deadlock.
class VisibilityGate {
 public:
  enum class Mode : uint8_t { kRead, kCommit };
  // How long either side waits for the other at most.
  static constexpr std::chrono::milliseconds kWaitLimit{2000};
  // How long a read holds the gate at most waiting for its shards to show they began.
  static constexpr std::chrono::milliseconds kSnapshotWait{1000};

  // Holds the gate for some shards until destroyed (or release()).
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&& o) noexcept : gate_(o.gate_), mode_(o.mode_), shards_(std::move(o.shards_)) {
      o.gate_ = nullptr;
    }
    Hold& operator=(Hold&& o) noexcept;
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    ~Hold() { release(); }
    void release();
    bool held() const { return gate_ != nullptr; }

   private:
    friend class VisibilityGate;
    Hold(VisibilityGate* g, Mode m, std::vector<int> s)
        : gate_(g), mode_(m), shards_(std::move(s)) {}
    VisibilityGate* gate_ = nullptr;
    Mode mode_ = Mode::kRead;
    std::vector<int> shards_;
  };

  struct Entered {
    Hold hold;
    bool waited = false;  // it had to wait for the other side
    bool forced = false;  // it waited past the limit and went ahead without the gate's guarantee
  };

  // Enters for `shards` (indexes into the shard map), waiting up to `limit`.
  awaitable<Entered> enter(Mode mode, std::vector<int> shards, std::chrono::milliseconds limit);

  // Counters for SHOW STATS / metrics and the tests.
  std::atomic<uint64_t> reads_waited{0}, commits_waited{0}, forced{0};

 private:
  struct Waiter {
    Mode mode;
    std::vector<int> shards;
    asio::any_io_executor executor;
    std::shared_ptr<asio::steady_timer> timer;
    bool granted = false;
  };
  struct Shard {
    int readers = 0;     // reads holding it
    int committers = 0;  // commit phases holding it
  };

  bool fits(Mode mode, const std::vector<int>& shards);  // (mu_ held) no holder conflicts
  // (mu_ held) no earlier waiter of the other mode on an overlapping shard.
  bool first_in_line(Mode mode, const std::vector<int>& shards,
                     std::list<std::shared_ptr<Waiter>>::iterator end);
  void take(Mode mode, const std::vector<int>& shards);  // (mu_ held)
  void leave(Mode mode, const std::vector<int>& shards);
  void grant_waiters();  // (mu_ held)

  std::mutex mu_;
  std::vector<Shard> shards_;
  std::list<std::shared_ptr<Waiter>> waiters_;  // in arrival order
};

}  // namespace pgshard::txn
