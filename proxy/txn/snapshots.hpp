// REPEATABLE READ and SERIALIZABLE transactions over several shards. One PostgreSQL takes
// such a transaction's snapshot once; each shard takes its own at the transaction's first
// statement there, so a shard that joins later takes a later snapshot. A cross-shard commit
// that lies between two of them would be seen half (visible on the later shard, not on the
// earlier one). Snapshots records, per shard, the window of commit numbers (VisibilityGate)
// in which its snapshot was taken, and finds such a commit; the transaction then fails with
// 40001, as PostgreSQL fails a transaction it cannot serialize, and the client retries it.
// Synchronous, no I/O.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

namespace pgshard::txn {

class Snapshots {
 public:
  // `between(from, to, a, b)`: whether a commit numbered in [from, to] touched shards a and
  // b (VisibilityGate::commits_between).
  using Between = std::function<bool(uint64_t from, uint64_t to, int a, int b)>;

  bool empty() const { return marks_.empty(); }
  bool has(int shard) const;
  // A statement of the transaction goes out to `shard` now; `first_unfinished` is the
  // gate's VisibilityGate::first_unfinished() (a snapshot taken later sees every commit
  // before it). The shard's snapshot is taken by its first statement that takes one
  // (`takes_snapshot`: not SET, SHOW, LOCK, LISTEN...; false when not known): until that
  // statement's replies are in, the shard's window stays open and grows. Shards of one
  // multi-shard read under the gate take their snapshots together: they share a `together`
  // number and are not compared (0: alone).
  void sending(int shard, uint64_t first_unfinished, bool takes_snapshot, uint64_t together = 0);
  // The replies to the request are in: each open window ends before `last_begun`
  // (VisibilityGate::last_begun()).
  void replied(uint64_t last_begun);
  // Two shards whose snapshots a commit on both may lie between (in either order).
  std::optional<std::pair<int, int>> fractured(const Between& between) const;
  void clear() { marks_.clear(); }

 private:
  struct Mark {
    int shard;
    uint64_t from;         // first_unfinished when its first statement went out
    uint64_t to = 0;       // last_begun when replies were last in
    bool replied = false;  // `to` is set (0 is a commit number: none begun yet)
    uint64_t together = 0;
    bool taken = false;   // its snapshot is taken: the window is closed
    bool taking = false;  // a statement that takes it is out
  };
  std::vector<Mark> marks_;  // in the order the shards joined
};

}  // namespace pgshard::txn
