// Snapshot windows of a transaction across shards (see snapshots.hpp).
#include "proxy/txn/snapshots.hpp"

#include <algorithm>

namespace pgshard::txn {

bool Snapshots::has(int shard) const {
  return std::any_of(marks_.begin(), marks_.end(), [&](const Mark& m) { return m.shard == shard; });
}

void Snapshots::sending(int shard, uint64_t first_unfinished, bool takes_snapshot,
                        uint64_t together) {
  auto it =
      std::find_if(marks_.begin(), marks_.end(), [&](const Mark& m) { return m.shard == shard; });
  if (it == marks_.end()) {
    marks_.push_back({shard, first_unfinished, 0, false, together, false, takes_snapshot});
    return;
  }
  if (!it->taken && takes_snapshot) it->taking = true;
}

void Snapshots::replied(uint64_t last_begun) {
  for (auto& m : marks_) {
    if (m.taken) continue;
    m.to = last_begun;
    m.replied = true;
    m.taken = m.taking;
  }
}

std::optional<std::pair<int, int>> Snapshots::fractured(const Between& between) const {
  // Shard b's snapshot sees a commit on a and b that a's does not when the commit had not
  // finished as a's first statement went out (number >= a.from) and had begun when b's
  // snapshot was surely taken (number <= b.to); and the other way round.
  for (std::size_t j = 1; j < marks_.size(); ++j)
    for (std::size_t i = 0; i < j; ++i) {
      const auto& a = marks_[i];
      const auto& b = marks_[j];
      if (!a.replied || !b.replied || (a.together != 0 && a.together == b.together)) continue;
      if (between(a.from, b.to, a.shard, b.shard) || between(b.from, a.to, a.shard, b.shard))
        return std::make_pair(a.shard, b.shard);
    }
  return std::nullopt;
}

}  // namespace pgshard::txn
