// A worker's side of a (shard, user) pool of server connections: its idle servers, lent
// without a lock, and its clients waiting (with a timeout) for a server; the size bound
// across workers is its SharedPool's. Checkout returns a move-only Lease.
#include "proxy/pool/pool.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace pgshard::pool {

void Lease::release() {
  if (conn_ && pool_) pool_->give_back(std::move(conn_));
  conn_.reset();
}

Pool::Pool(asio::any_io_executor ex, int worker, SharedPool& shared, BackendTarget target,
           config::Millis wait_timeout, config::Millis connect_timeout)
    : ex_(std::move(ex)),
      worker_(worker),
      shared_(shared),
      target_(std::move(target)),
      wait_timeout_(wait_timeout),
      connect_timeout_(connect_timeout),
      deadlines_(std::in_place, ex_) {
  shared_.attach(worker_, this, ex_);
}

Pool::~Pool() {
  close_all();
}

awaitable<std::variant<Lease, std::string>> Pool::acquire(asio::cancellation_slot stop,
                                                          bool in_transaction,
                                                          WaitPatience patience) {
  if (!check_moved()) co_return refusal_;
  if (paused_ && !in_transaction) {
    // Until RESUME (which cancels the timer), the deadline or the caller's stop.
    Waiter w;
    w.queued = false;
    paused_waiters_.push_back(&w);
    const auto ec = co_await wait(w, stop, patience);
    std::erase(paused_waiters_, &w);
    if (paused_ && ec == asio::error::operation_aborted)
      co_return "the client left while waiting for a connection to shard " + target_.shard_name;
    if (paused_)
      co_return "timed out after " + std::to_string(wait_timeout_.count()) + " ms: shard " +
          target_.shard_name + " is paused (PAUSE on the admin console)";
  }
  if (auto lease = lend_idle(in_transaction)) co_return std::move(*lease);
  int donor = -1;
  if (shared_.reserve_or_queue(worker_, &donor)) co_return co_await open();
  // Queued: an idle server on another worker comes at once, else the next one given back
  // or the slot of the next one closed, on any worker.
  Waiter w;
  if (donor >= 0 && lent_.empty() && connecting_ == 0)
    shared_.ask_to_lend(donor);  // (nothing of this worker's will come back)
  else
    w.donor = donor;
  waiters_.push_back(&w);
  const auto ec = co_await wait(w, stop, patience);
  if (auto it = std::find(waiters_.begin(), waiters_.end(), &w); it != waiters_.end())
    waiters_.erase(it);
  if (w.queued) shared_.unqueue(worker_);
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
      std::to_string(shared_.limit()) + ")";
}

awaitable<error_code> Pool::wait(Waiter& w, asio::cancellation_slot stop, WaitPatience& patience) {
  const bool patient = patience.then && patience.after < wait_timeout_;
  w.patience = patient ? &patience : nullptr;
  w.deadline = next_deadline(w);
  w.ec = {};
  arm(w.deadline);
  if (stop.is_connected())
    stop.assign([this, &w](asio::cancellation_type) { end(w, asio::error::operation_aborted); });
  co_await asio::async_initiate<const asio::deferred_t&, void()>(
      [&w](Wake wake) { w.wake.emplace(std::move(wake)); }, asio::deferred);
  if (stop.is_connected()) stop.clear();
  co_return w.ec;
}

void Pool::end(Waiter& w, error_code ec) {
  if (!w.wake) return;
  w.ec = ec;
  Wake wake = std::move(*w.wake);
  w.wake.reset();
  asio::post(ex_, std::move(wake));
}

void Pool::arm(Clock::time_point deadline) {
  if (deadline >= armed_ || !deadlines_) return;  // (its scan will see this one too)
  armed_ = deadline;
  deadlines_->expires_at(deadline);
  deadlines_->async_wait([this](error_code ec) {
    if (ec) return;  // (re-armed earlier, or the pool is going away)
    armed_ = Clock::time_point::max();
    deadlines_passed();
  });
}

Clock::time_point Pool::next_deadline(const Waiter& w) const {
  if (w.donor >= 0) return w.since + kAskDonorAfter;
  if (w.patience) return w.since + w.patience->after;
  return w.since + wait_timeout_;
}

void Pool::deadlines_passed() {
  const auto now = Clock::now();
  auto next = Clock::time_point::max();
  auto look = [&](Waiter* w) {
    while (w->wake && w->deadline <= now) {
      if (w->donor >= 0) {
        shared_.ask_to_lend(std::exchange(w->donor, -1));
      } else if (auto* patience = std::exchange(w->patience, nullptr)) {
        // (Once: PAUSE's wait may have called it already.)
        if (patience->then) std::exchange(patience->then, nullptr)();
      } else {
        end(*w, {});  // (timed out)
        return;
      }
      w->deadline = next_deadline(*w);
    }
    if (w->wake) next = std::min(next, w->deadline);
  };
  // (Copies: a patience callback may start a coroutine, never one that waits here.)
  for (auto* w : std::vector<Waiter*>(waiters_.begin(), waiters_.end())) look(w);
  for (auto* w : std::vector<Waiter*>(paused_waiters_)) look(w);
  if (next != Clock::time_point::max()) arm(next);
}

std::optional<Lease> Pool::lend_idle(bool in_transaction) {
  if ((paused_ && !in_transaction) || !check_moved()) return std::nullopt;
  std::optional<Lease> lease;
  while (!idle_.empty() && !lease) {
    auto conn = std::move(idle_.back());  // LIFO: the warmest connection
    idle_.pop_back();
    // Checked for a server that went away while it was idle (terminated, restarted, its
    // idle timeout): no read is pending on an idle server, so only a look at its socket
    // tells, and a server killed a moment after it came back is as dead as an old one.
    if (!conn->stale()) {
      lease = lend(std::move(conn));
      break;
    }
    spdlog::debug("S-{}: shard {}: discarding stale idle connection", conn->id(),
                  target_.shard_name);
    conn->close();
    drop();
  }
  publish_idle(false);
  return lease;
}

awaitable<std::variant<Lease, std::string>> Pool::open() {
  // (A waiter given a slot after the host moved opens to the new one, or not at all.)
  if (!check_moved()) {
    release_slot();
    co_return refusal_;
  }
  ++total_;
  ++connecting_;
  auto conn = std::make_unique<ServerConn>(ex_, target_);
  auto err = co_await conn->connect(connect_timeout_);
  --connecting_;
  if (!err.empty()) {
    ++counters_.connect_failures;
    health_.last_failure = Clock::now();
    health_.last_error = err;
    // The next waiter tries its own connection rather than wait for a timeout.
    drop();
    co_return err;
  }
  if (shared_.server_params().empty()) shared_.learn_server_params(conn->params);
  ++counters_.connects;
  health_.last_ok = Clock::now();
  if (count_requests_) conn->replies.counters = &counters_;
  conn->generation = shared_.generation();
  spdlog::debug("S-{}: connected to shard {} pid {}", conn->id(), target_.shard_name, conn->pid());
  co_return lend(std::move(conn));
}

void Pool::close_all() {
  if (deadlines_) {
    // (At exit, before the io_context goes: the waiters' resumptions are destroyed with it,
    // as their own timers' waits were.)
    for (auto* w : waiters_) end(*w, asio::error::operation_aborted);
    for (auto* w : paused_waiters_) end(*w, asio::error::operation_aborted);
    deadlines_.reset();
  }
  closed_ = true;
  shared_.detach(worker_, this);  // (first: the slots freed below go to other workers)
  for (auto& c : idle_) {
    c->close();
    drop();
  }
  idle_.clear();
}

Lease Pool::lend(std::unique_ptr<ServerConn> conn) {
  lent_.push_back(conn.get());
  return Lease(this, std::move(conn));
}

void Pool::give_back(std::unique_ptr<ServerConn> conn) {
  std::erase(lent_, conn.get());
  // Unread bytes mean replies nobody consumed: such a server is out of step for anyone.
  const bool reusable = current(*conn) && !conn->broken && conn->status == 'I' &&
                        conn->rbuf.empty() && conn->replies.empty() && conn->socket().is_open() &&
                        !shared_.over_limit();  // (a reload made the pool smaller)
  if (!reusable) {
    spdlog::debug("S-{}: shard {}: closing connection (status {}, broken {})", conn->id(),
                  target_.shard_name, conn->status, conn->broken);
    conn->close();
    drop();
    return;
  }
  conn->idle_since = coarse_now();
  // Clients wait on other workers (the queue says who first, see SharedPool::next_waiter):
  // one read, no lock, else.
  if (shared_.waiting() > static_cast<int>(waiters_.size()) && hand_over(conn)) return;
  if (!waiters_.empty()) {
    auto* w = waiters_.front();
    waiters_.pop_front();
    w->conn = std::move(conn);
    end(*w, asio::error::operation_aborted);
    return;
  }
  make_idle(std::move(conn));
}

void Pool::make_idle(std::unique_ptr<ServerConn> conn) {
  idle_.push_back(std::move(conn));
  publish_idle(true);
  // A client that queued on another worker as this one came back may not have seen it.
  if (shared_.waiting() > 0) lend_away();
}

bool Pool::hand_over(std::unique_ptr<ServerConn>& conn) {
  const int to = shared_.next_waiter(waiters_.empty() ? -1 : worker_);
  if (to < 0) return false;
  if (to == worker_) {
    serve(std::move(conn));
    return true;
  }
  --total_;
  spdlog::debug("S-{}: shard {}: handed over to worker {}", conn->id(), target_.shard_name, to);
  if (!conn->leave()) conn.reset();  // (closed: its slot goes instead)
  shared_.send(to, std::move(conn));
  return true;
}

void Pool::receive(std::unique_ptr<ServerConn> conn) {
  if (conn) {
    // (A server that died on its way is closed here: its slot serves the waiter instead.)
    if (conn->arrive(ex_) && !conn->stale()) {
      ++total_;
      conn->replies.counters = count_requests_ ? &counters_ : nullptr;
    } else {
      conn->close();
      conn.reset();  // (its slot serves instead)
    }
  }
  serve(std::move(conn));
}

void Pool::serve(std::unique_ptr<ServerConn> conn) {
  if (conn && !current(*conn)) {  // RECONNECT (or exit) while it travelled: its slot serves
    conn->close();
    conn.reset();
    --total_;
  }
  if (closed_ || waiters_.empty()) {
    if (conn)
      make_idle(std::move(conn));
    else
      release_slot();
    return;
  }
  auto* w = waiters_.front();
  waiters_.pop_front();
  w->queued = false;  // (the hand-over took a place of this worker's in the queue)
  if (conn)
    w->conn = std::move(conn);
  else
    w->slot = true;
  end(*w, asio::error::operation_aborted);
}

void Pool::lend_away() {
  if (idle_.empty() || !waiters_.empty()) return;
  auto conn = std::move(idle_.front());  // the coldest: the warm ones stay here
  idle_.pop_front();
  publish_idle(false);
  if (conn->stale()) {
    conn->close();
    drop();  // (its slot goes to the waiter)
    return;
  }
  if (hand_over(conn)) return;
  idle_.push_front(std::move(conn));  // nobody waits any more
  publish_idle(false);
}

void Pool::drop() {
  --total_;
  release_slot();
}

void Pool::release_slot() {
  if (const int to = shared_.release(); to >= 0) shared_.send(to, nullptr);
}

void Pool::prune(config::Millis idle) {
  auto now = Clock::now();
  std::erase_if(idle_, [&](std::unique_ptr<ServerConn>& c) {
    if (now - c->idle_since < idle && !c->stale()) return false;
    c->close();
    drop();
    return true;
  });
  publish_idle(false);
}

void Pool::set_limits(int max_size, config::Millis wait_timeout, config::Millis connect_timeout) {
  wait_timeout_ = wait_timeout;
  connect_timeout_ = connect_timeout;
  // Every worker sets the same limit: the slots it adds go to waiters once.
  for (const int to : shared_.set_limit(max_size)) shared_.send(to, nullptr);
  while (shared_.over_limit() && !idle_.empty()) {
    idle_.front()->close();
    idle_.pop_front();
    drop();
  }
  publish_idle(false);
}

void Pool::pause(bool on) {
  paused_ = on;
  if (!on)
    for (auto* w : paused_waiters_) end(*w, asio::error::operation_aborted);
}

void Pool::reconnect() {
  shared_.new_generation();
  close_idle();
}

void Pool::close_idle() {
  for (auto& c : idle_) {
    c->close();
    drop();
  }
  idle_.clear();
  publish_idle(false);
}

void Pool::move_host() {
  seen_moves_ = moves_->load(std::memory_order_acquire);
  auto to = where_();
  refusal_ = std::move(to.refusal);
  if (to.host == target_.host && to.port == target_.port) return;
  spdlog::info("shard {}: user {}'s servers move from {}:{} to {}:{}", target_.shard_name,
               target_.user, target_.host, target_.port, to.host, to.port);
  target_.host = std::move(to.host);
  target_.port = to.port;
  // Servers of the old host: idle ones close now, lent ones as they come back (current()).
  close_idle();
}

PoolStats Pool::stats() const {
  PoolStats s{total_,
              static_cast<int>(idle_.size()),
              static_cast<int>(waiters_.size() + paused_waiters_.size()),
              connecting_,
              shared_.limit(),
              0};
  for (const auto* w : waiters_) s.max_wait_us = std::max(s.max_wait_us, micros_since(w->since));
  for (const auto* w : paused_waiters_)
    s.max_wait_us = std::max(s.max_wait_us, micros_since(w->since));
  return s;
}

PoolHolders Pool::holders() const {
  PoolHolders h;
  for (const auto* conn : lent_) h.pids.push_back(conn->pid());
  h.spare = paused_ || !idle_.empty() || shared_.has_room() || connecting_ > 0;
  h.servers = shared_.total();
  return h;
}

}  // namespace pgshard::pool
