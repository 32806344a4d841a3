// The visibility gate (see visibility_gate.hpp): per-shard counts of readers and commit
// phases under one mutex, waiters woken on their own executors.
#include "proxy/txn/visibility_gate.hpp"

#include <algorithm>

namespace pgshard::txn {

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
    o.gate_ = nullptr;
  }
  return *this;
}

void VisibilityGate::Hold::release() {
  if (!gate_) return;
  gate_->leave(mode_, shards_);
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

void VisibilityGate::take(Mode mode, const std::vector<int>& shards) {
  for (int s : shards) {
    auto& st = shards_[static_cast<std::size_t>(s)];
    ++(mode == Mode::kRead ? st.readers : st.committers);
  }
}

void VisibilityGate::leave(Mode mode, const std::vector<int>& shards) {
  std::lock_guard lock(mu_);
  for (int s : shards) {
    auto& st = shards_[static_cast<std::size_t>(s)];
    --(mode == Mode::kRead ? st.readers : st.committers);
  }
  grant_waiters();
}

void VisibilityGate::grant_waiters() {
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    auto& w = **it;
    if (fits(w.mode, w.shards) && first_in_line(w.mode, w.shards, it)) {
      take(w.mode, w.shards);
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
      take(mode, shards);
      out.hold = Hold(this, mode, std::move(shards));
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
      take(mode, shards);
      out.forced = true;
      ++forced;
      grant_waiters();  // its leaving the line may let others in
    }
  }
  out.hold = Hold(this, mode, std::move(shards));
  co_return out;
}

}  // namespace pgshard::txn
