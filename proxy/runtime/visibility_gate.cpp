// The visibility gate (see visibility_gate.hpp): per-shard counts of readers and commit
// phases under one mutex, waiters woken on their own executors.
#include "proxy/runtime/visibility_gate.hpp"

#include <algorithm>

namespace pgshard::runtime {

namespace {

bool overlap(const std::vector<int>& a, const std::vector<int>& b) {
  for (int x : a)
    if (std::find(b.begin(), b.end(), x) != b.end()) return true;
  return false;
}

}  // namespace

VisibilityGate::Hold& VisibilityGate::Hold::operator=(Hold&& o) noexcept {
  if (this != &o) {
    release();
    gate_ = o.gate_;
    mode_ = o.mode_;
    shards_ = std::move(o.shards_);
    commit_ = o.commit_;
    o.gate_ = nullptr;
  }
  return *this;
}

void VisibilityGate::Hold::release() {
  if (!gate_) return;
  gate_->leave(mode_, shards_, commit_);
  gate_ = nullptr;
}

bool VisibilityGate::fits(Mode mode, const std::vector<int>& shards) {
  for (int s : shards) {
    if (static_cast<std::size_t>(s) >= shards_.size())
      shards_.resize(static_cast<std::size_t>(s) + 1);
    const auto& st = shards_[static_cast<std::size_t>(s)];
    if (mode == Mode::kRead ? st.committers > 0 : st.readers > 0) return false;
  }
  return true;
}

bool VisibilityGate::first_in_line(Mode mode, const std::vector<int>& shards,
                                   std::list<std::shared_ptr<Waiter>>::iterator end) {
  for (auto it = waiters_.begin(); it != end; ++it)
    if (!(*it)->granted && (*it)->mode != mode && overlap((*it)->shards, shards)) return false;
  return true;
}

uint64_t VisibilityGate::take(Mode mode, const std::vector<int>& shards) {
  for (int s : shards) {
    auto& st = shards_[static_cast<std::size_t>(s)];
    ++(mode == Mode::kRead ? st.readers : st.committers);
  }
  if (mode == Mode::kRead) return 0;
  const uint64_t number = next_commit_++;
  committing_.insert(number);
  commits_.push_back({number, shards});
  if (commits_.size() > kCommitLog) commits_.pop_front();
  return number;
}

void VisibilityGate::leave(Mode mode, const std::vector<int>& shards, uint64_t commit) {
  std::lock_guard lock(mu_);
  for (int s : shards) {
    auto& st = shards_[static_cast<std::size_t>(s)];
    --(mode == Mode::kRead ? st.readers : st.committers);
  }
  if (mode == Mode::kCommit) committing_.erase(commit);
  grant_waiters();
}

uint64_t VisibilityGate::first_unfinished() {
  std::lock_guard lock(mu_);
  return committing_.empty() ? next_commit_ : *committing_.begin();
}

uint64_t VisibilityGate::last_begun() {
  std::lock_guard lock(mu_);
  return next_commit_ - 1;
}

bool VisibilityGate::commits_between(uint64_t from, uint64_t to, int a, int b) {
  std::lock_guard lock(mu_);
  if (from > to) return false;
  if (commits_.empty() || commits_.front().number > from) return from < next_commit_;
  // Numbers are consecutive in the log: index by difference.
  const uint64_t first = commits_.front().number;
  for (uint64_t n = from; n <= to && n - first < commits_.size(); ++n) {
    const auto& shards = commits_[static_cast<std::size_t>(n - first)].shards;
    if (std::binary_search(shards.begin(), shards.end(), a) &&
        std::binary_search(shards.begin(), shards.end(), b))
      return true;
  }
  return false;
}

void VisibilityGate::grant_waiters() {
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    auto& w = **it;
    if (fits(w.mode, w.shards) && first_in_line(w.mode, w.shards, it)) {
      w.commit = take(w.mode, w.shards);
      w.granted = true;
      // The timer belongs to the waiter's executor: cancel it there.
      asio::post(w.executor, [t = w.timer] { t->cancel(); });
      it = waiters_.erase(it);
    } else {
      ++it;
    }
  }
}

awaitable<VisibilityGate::Entered> VisibilityGate::enter(Mode mode, std::vector<int> shards,
                                                         std::chrono::milliseconds limit) {
  std::sort(shards.begin(), shards.end());
  shards.erase(std::unique(shards.begin(), shards.end()), shards.end());
  Entered out;
  std::shared_ptr<Waiter> me;
  auto executor = co_await asio::this_coro::executor;
  {
    std::lock_guard lock(mu_);
    if (fits(mode, shards) && first_in_line(mode, shards, waiters_.end())) {
      const uint64_t commit = take(mode, shards);
      out.hold = Hold(this, mode, std::move(shards), commit);
      co_return out;
    }
    me = std::make_shared<Waiter>(
        Waiter{mode, shards, executor, std::make_shared<asio::steady_timer>(executor), false});
    me->timer->expires_after(limit);
    waiters_.push_back(me);
  }
  out.waited = true;
  ++(mode == Mode::kRead ? reads_waited : commits_waited);
  co_await me->timer->async_wait(use_nothrow);
  {
    std::lock_guard lock(mu_);
    if (!me->granted) {
      // Past the limit: go ahead without waiting for the other side (see the header).
      waiters_.remove(me);
      for (int s : shards)
        if (static_cast<std::size_t>(s) >= shards_.size())
          shards_.resize(static_cast<std::size_t>(s) + 1);
      me->commit = take(mode, shards);
      out.forced = true;
      ++forced;
      grant_waiters();  // its leaving the line may let others in
    }
  }
  out.hold = Hold(this, mode, std::move(shards), me->commit);
  co_return out;
}

}  // namespace pgshard::runtime
