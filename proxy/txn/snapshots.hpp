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
  // The transaction's first statement on `shard` goes out now; `first_unfinished` is the
  // gate's VisibilityGate::first_unfinished() (the snapshot sees every commit before it).
  // Shards of one multi-shard read under the gate take their snapshots together: they share
  // a `together` number and are not compared (0: alone).
  void sending(int shard, uint64_t first_unfinished, uint64_t together = 0);
  // The replies to the request are in: each snapshot still open was taken before
  // `last_begun` (VisibilityGate::last_begun()).
  void replied(uint64_t last_begun);
  // Two shards whose snapshots a commit on both may lie between (earlier, later), once:
  // later calls look only at snapshots taken since.
  std::optional<std::pair<int, int>> fractured(const Between& between);
  void clear() {
    marks_.clear();
    checked_ = 0;
  }

 private:
  struct Mark {
    int shard;
    uint64_t from;    // first_unfinished when its statement went out
    uint64_t to = 0;  // last_begun when its replies were in (0: not yet)
    uint64_t together;
  };
  std::vector<Mark> marks_;  // in the order the shards joined
  std::size_t checked_ = 0;  // marks_[0, checked_) were compared with each other
};

}  // namespace pgshard::txn
