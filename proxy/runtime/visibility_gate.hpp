// Atomic visibility across shards: the commit phase of a cross-shard transaction and the
// moment a multi-shard read takes its snapshots exclude each other on the shards they share.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "proxy/asio.hpp"

namespace pgshard::runtime {

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
    Hold(Hold&& o) noexcept
        : gate_(o.gate_), mode_(o.mode_), shards_(std::move(o.shards_)), commit_(o.commit_) {
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
    Hold(VisibilityGate* g, Mode m, std::vector<int> s, uint64_t commit)
        : gate_(g), mode_(m), shards_(std::move(s)), commit_(commit) {}
    VisibilityGate* gate_ = nullptr;
    Mode mode_ = Mode::kRead;
    std::vector<int> shards_;
    uint64_t commit_ = 0;  // a commit phase's number (see commits_between)
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

  // Commit phases are numbered in the order they enter, and the shards of the last
  // kCommitLog are kept: a transaction whose snapshot is taken at different moments on
  // different shards (REPEATABLE READ, SERIALIZABLE; txn::Snapshots) asks which commits can
  // lie between two of its snapshots.
  static constexpr std::size_t kCommitLog = 65536;
  // The oldest commit phase in progress, else the next one: a snapshot taken after this
  // call sees every commit numbered before it, on all of that commit's shards.
  uint64_t first_unfinished();
  // The last commit that has begun: a snapshot taken before this call sees none after it.
  uint64_t last_begun();
  // Whether a commit numbered in [from, to] touched both shards a and b (true when that
  // part of the log is gone: it cannot tell).
  bool commits_between(uint64_t from, uint64_t to, int a, int b);

 private:
  struct Waiter {
    Mode mode;
    std::vector<int> shards;
    asio::any_io_executor executor;
    std::shared_ptr<asio::steady_timer> timer;
    bool granted = false;
    uint64_t commit = 0;  // its number, once granted (a commit phase)
  };
  struct Shard {
    int readers = 0;     // reads holding it
    int committers = 0;  // commit phases holding it
  };

  bool fits(Mode mode, const std::vector<int>& shards);  // (mu_ held) no holder conflicts
  // (mu_ held) no earlier waiter of the other mode on an overlapping shard.
  bool first_in_line(Mode mode, const std::vector<int>& shards,
                     std::list<std::shared_ptr<Waiter>>::iterator end);
  // (mu_ held) A commit phase's number, 0 for a read.
  uint64_t take(Mode mode, const std::vector<int>& shards);
  void leave(Mode mode, const std::vector<int>& shards, uint64_t commit);
  void grant_waiters();  // (mu_ held)

  std::mutex mu_;
  std::vector<Shard> shards_;
  std::list<std::shared_ptr<Waiter>> waiters_;  // in arrival order
  struct Commit {
    uint64_t number;
    std::vector<int> shards;
  };
  uint64_t next_commit_ = 1;
  std::set<uint64_t> committing_;  // commit phases in progress
  std::deque<Commit> commits_;     // the last kCommitLog, in number order
};

}  // namespace pgshard::runtime
