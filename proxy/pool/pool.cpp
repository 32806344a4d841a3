// Per-worker pools of server connections, one per (shard, user), with a bounded size,
// a FIFO wait queue and a timeout. Checkout returns a move-only Lease.
#include "proxy/pool/pool.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace pgshard::pool {

namespace {
constexpr auto kTrustRecent = std::chrono::milliseconds(100);
}

void Lease::release() {
  if (conn_ && pool_) pool_->give_back(std::move(conn_));
  conn_.reset();
}

Pool::Pool(asio::any_io_executor ex, BackendTarget target, int max_size,
           config::Millis wait_timeout, config::Millis connect_timeout)
    : ex_(std::move(ex)),
      target_(std::move(target)),
      max_size_(max_size),
      wait_timeout_(wait_timeout),
      connect_timeout_(connect_timeout) {}

Pool::~Pool() {
  close_all();
}

awaitable<std::variant<Lease, std::string>> Pool::acquire(asio::cancellation_slot stop,
                                                          bool in_transaction) {
  if (paused_ && !in_transaction) {
    const auto deadline = Clock::now() + wait_timeout_;
    while (paused_ && Clock::now() < deadline) {
      if (!resumed_) resumed_ = std::make_unique<asio::steady_timer>(ex_, Clock::time_point::max());
      asio::steady_timer limit(ex_, deadline);
      // Whichever comes first: RESUME (cancels resumed_) or the deadline.
      using namespace asio::experimental::awaitable_operators;
      co_await (resumed_->async_wait(use_nothrow) || limit.async_wait(use_nothrow));
    }
    if (paused_)
      co_return "timed out after " + std::to_string(wait_timeout_.count()) + " ms: shard " +
          target_.shard_name + " is paused (PAUSE on the admin console)";
  }
  if (auto lease = lend_idle(in_transaction)) co_return std::move(*lease);
  if (total_ < max_size_) co_return co_await open();

  Waiter w{asio::steady_timer(ex_, wait_timeout_), nullptr, false};
  waiters_.push_back(&w);
  auto [ec] = co_await w.timer.async_wait(asio::bind_cancellation_slot(stop, use_nothrow));
  if (auto it = std::find(waiters_.begin(), waiters_.end(), &w); it != waiters_.end())
    waiters_.erase(it);
  // Every hand-over sets conn or slot before cancelling the timer: an abort with neither
  // is the caller's stop (its client left), and the waiter just leaves the queue.
  if (ec == asio::error::operation_aborted && !w.conn && !w.slot)
    co_return "the client left while waiting for a connection to shard " + target_.shard_name;
  const uint64_t waited = micros_since(w.since);
  ++counters_.waits;
  counters_.wait_us += waited;
  counters_.max_wait_us = std::max(counters_.max_wait_us, waited);
  if (w.conn) co_return lend(std::move(w.conn));
  if (w.slot) co_return co_await open();
  co_return "timed out after " + std::to_string(wait_timeout_.count()) +
      " ms waiting for a connection to shard " + target_.shard_name + " (pool_size " +
      std::to_string(max_size_) + ")";
}

std::optional<Lease> Pool::lend_idle(bool in_transaction) {
  if (paused_ && !in_transaction) return std::nullopt;
  while (!idle_.empty()) {
    auto conn = std::move(idle_.back());  // LIFO: the warmest connection
    idle_.pop_back();
    // A connection back in the pool moments ago is trusted without a syscall; older ones
    // are checked for a server that went away meanwhile (restart, idle timeout).
    if (coarse_now() - conn->idle_since < kTrustRecent || !conn->stale())
      return lend(std::move(conn));
    spdlog::debug("S-{}: shard {}: discarding stale idle connection", conn->id(),
                  target_.shard_name);
    conn->close();
    --total_;
  }
  return std::nullopt;
}

awaitable<std::variant<Lease, std::string>> Pool::open() {
  ++total_;
  ++connecting_;
  auto conn = std::make_unique<ServerConn>(ex_, target_);
  auto err = co_await conn->connect(connect_timeout_);
  --connecting_;
  if (!err.empty()) {
    --total_;
    ++counters_.connect_failures;
    health_.last_failure = Clock::now();
    health_.last_error = err;
    // Let the next waiter try its own connection rather than wait for a timeout.
    if (!waiters_.empty()) {
      auto* w = waiters_.front();
      waiters_.pop_front();
      w->slot = true;
      w->timer.cancel();
    }
    co_return err;
  }
  if (server_params_.empty()) server_params_ = conn->params;
  ++counters_.connects;
  health_.last_ok = Clock::now();
  if (count_requests_) conn->replies.counters = &counters_;
  conn->generation = generation_;
  spdlog::debug("S-{}: connected to shard {} pid {}", conn->id(), target_.shard_name, conn->pid());
  co_return lend(std::move(conn));
}

void Pool::close_all() {
  closed_ = true;
  for (auto& c : idle_) c->close();
  total_ -= static_cast<int>(idle_.size());
  idle_.clear();
}

Lease Pool::lend(std::unique_ptr<ServerConn> conn) {
  lent_.push_back(conn.get());
  return Lease(this, std::move(conn));
}

void Pool::give_back(std::unique_ptr<ServerConn> conn) {
  std::erase(lent_, conn.get());
  // Unread bytes mean replies nobody consumed: such a server is out of step for anyone.
  const bool reusable = !closed_ && !conn->broken && conn->status == 'I' && conn->rbuf.empty() &&
                        conn->replies.empty() && conn->socket().is_open() &&
                        total_ <= max_size_ &&            // (a reload made the pool smaller)
                        conn->generation == generation_;  // (RECONNECT since it opened)
  if (!reusable) {
    spdlog::debug("S-{}: shard {}: closing connection (status {}, broken {})", conn->id(),
                  target_.shard_name, conn->status, conn->broken);
    conn->close();
    --total_;
    if (!waiters_.empty()) {
      auto* w = waiters_.front();
      waiters_.pop_front();
      w->slot = true;
      w->timer.cancel();
    }
    return;
  }
  if (!waiters_.empty()) {
    auto* w = waiters_.front();
    waiters_.pop_front();
    w->conn = std::move(conn);
    w->timer.cancel();
    return;
  }
  conn->idle_since = coarse_now();
  idle_.push_back(std::move(conn));
}

void Pool::prune(config::Millis idle) {
  auto now = Clock::now();
  std::erase_if(idle_, [&](std::unique_ptr<ServerConn>& c) {
    if (now - c->idle_since < idle && !c->stale()) return false;
    c->close();
    --total_;
    return true;
  });
}

void Pool::set_limits(int max_size, config::Millis wait_timeout, config::Millis connect_timeout) {
  max_size_ = max_size;
  wait_timeout_ = wait_timeout;
  connect_timeout_ = connect_timeout;
  while (total_ > max_size_ && !idle_.empty()) {
    idle_.front()->close();
    idle_.pop_front();
    --total_;
  }
  for (int room = max_size_ - total_; room > 0 && !waiters_.empty(); --room) {
    auto* w = waiters_.front();
    waiters_.pop_front();
    w->slot = true;
    w->timer.cancel();
  }
}

void Pool::pause(bool on) {
  paused_ = on;
  if (!on && resumed_) {
    resumed_->cancel();
    resumed_.reset();
  }
}

void Pool::reconnect() {
  ++generation_;
  for (auto& c : idle_) c->close();
  total_ -= static_cast<int>(idle_.size());
  idle_.clear();
}

PoolStats Pool::stats() const {
  PoolStats s{total_,
              static_cast<int>(idle_.size()),
              static_cast<int>(waiters_.size()),
              connecting_,
              max_size_,
              0};
  for (const auto* w : waiters_) s.max_wait_us = std::max(s.max_wait_us, micros_since(w->since));
  return s;
}

PoolHolders Pool::holders() const {
  PoolHolders h;
  for (const auto* conn : lent_) h.pids.push_back(conn->pid());
  h.spare = paused_ || !idle_.empty() || total_ < max_size_ || connecting_ > 0 || h.pids.empty();
  return h;
}

}  // namespace pgshard::pool
