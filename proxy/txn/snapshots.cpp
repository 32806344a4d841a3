// Snapshot windows of a transaction across shards (see snapshots.hpp).
#include "proxy/txn/snapshots.hpp"

#include <algorithm>

namespace pgshard::txn {

bool Snapshots::has(int shard) const {
  return std::any_of(marks_.begin(), marks_.end(), [&](const Mark& m) { return m.shard == shard; });
}

void Snapshots::sending(int shard, uint64_t first_unfinished, uint64_t together) {
  if (!has(shard)) marks_.push_back({shard, first_unfinished, 0, together});
}

void Snapshots::replied(uint64_t last_begun) {
  for (auto& m : marks_)
    if (m.to == 0) m.to = last_begun;
}

std::optional<std::pair<int, int>> Snapshots::fractured(const Between& between) {
  // Shard b's snapshot sees a commit on a and b that a's does not when the commit had not
  // finished as a's statement went out (number >= a.from) and had begun when b's replies
  // came (number <= b.to). The other way round the same commit is caught: one finished
  // before a's snapshot is visible on b, taken later, too.
  std::size_t done = checked_;
  while (done < marks_.size() && marks_[done].to != 0) ++done;
  for (std::size_t j = checked_; j < done; ++j)
    for (std::size_t i = 0; i < j; ++i) {
      const auto& a = marks_[i];
      const auto& b = marks_[j];
      if (a.together != 0 && a.together == b.together) continue;
      if (between(a.from, b.to, a.shard, b.shard)) {
        checked_ = done;
        return std::make_pair(a.shard, b.shard);
      }
    }
  checked_ = done;
  return std::nullopt;
}

}  // namespace pgshard::txn
