// Reads on replicas: which host of its shard a Forward runs on (read_routing.hpp decides;
// the session says what it is doing and waits when told to).
#include <spdlog/spdlog.h>

#include "proxy/runtime/worker.hpp"
#include "proxy/session/session.hpp"
#include "proxy/session/session_internal.hpp"

namespace pgshard::session {

namespace proto = protocol;

std::optional<int> Session::read_target_now(const router::Route& route, int shard, char boundary) {
  // Only a request that ends here (a Sync or a Query: nothing of it follows on the same
  // server), in transaction pooling, outside any transaction, by a client that keeps no
  // state in its server, may leave the primary.
  if (!replicas_ || !route.read_only || boundary == proto::msg::kFlush || pinned_ ||
      user_->pool_mode != config::PoolMode::kTransaction || txn_.state() != txn::State::kIdle ||
      phase_.batch_open() || backends_.participant_count() > 0)
    return shard;
  ReadRouting::Ask ask;
  ask.shard = shard;
  ask.in_flight = request_in_flight();
  ask.now = Clock::now();
  if (config_.replication.load_balance == config::LoadBalance::kLeastActive)
    ask.busy = [this](int target) { return pool_of(target).busy(); };
  return reads_.target(config_, *user_, worker_.shared().hosts, ask);
}

awaitable<int> Session::read_target(const router::Route& route, int shard, char boundary) {
  const auto until = Clock::now() + config_.replication.read_your_writes_wait;
  asio::steady_timer step(worker_.executor());
  for (;;) {
    if (auto target = read_target_now(route, shard, boundary)) co_return *target;
    if (Clock::now() >= until) co_return reads_.give_up(worker_.shared().hosts, shard);
    step.expires_after(std::chrono::milliseconds(1));
    co_await step.async_wait(use_nothrow);
  }
}

awaitable<int> Session::reach_read_target(const router::Route& route, int target, char boundary) {
  const int shards = static_cast<int>(config_.shards.size());
  while (target >= shards && !attached_now(target)) {
    Waiting waiting(*this, "a replica's server");
    auto end = co_await wait_in_pool(target, false);
    const auto* failed = std::get_if<std::string>(&end.got);
    if (failed && end.stopped == PoolWaiting::Stopped::kNo && deadlock_detail_.empty()) {
      // Nothing was sent: the read may go elsewhere.
      const auto host = config_.host_of(target);
      spdlog::warn("{}: {}; the read goes to another host of shard {}", prefix(), *failed,
                   config_.shards[static_cast<std::size_t>(host.shard)].name);
      worker_.shared().hosts.ban_replica(host.shard, host.replica, *failed, Clock::now(),
                                         config_.replication);
      target = co_await read_target(route, host.shard, boundary);
      continue;
    }
    const bool took = co_await take_server(std::move(end), target);
    if (!took) co_return -1;
    break;
  }
  co_return target;
}

void Session::sync_read_token() {
  // A value the client SET (either level) differs from what the hint showed: take it in.
  for (auto* slot : {&hints_.local.read_token, &hints_.session.read_token})
    if (*slot && **slot != shown_token_) reads_.take_token(config_, **slot);
  hints_.local.read_token.reset();
  shown_token_ = reads_.token_text(config_);
  if (shown_token_.empty())
    hints_.session.read_token.reset();
  else
    hints_.session.read_token = shown_token_;
}

awaitable<void> Session::settle_read_token() {
  // Bounded: a primary that does not answer its checks leaves the token as it was.
  const auto& r = config_.replication;
  const auto until = Clock::now() + 2 * r.health_interval + r.health_timeout;
  asio::steady_timer step(worker_.executor());
  while (!reads_.resolve(worker_.shared().hosts, request_in_flight(), Clock::now()) &&
         Clock::now() < until) {
    step.expires_after(std::chrono::milliseconds(2));
    co_await step.async_wait(use_nothrow);
  }
  sync_read_token();
}

}  // namespace pgshard::session
