// Reads on replicas: which host of its shard a Forward runs on (read_routing.hpp decides;
// the session says what it is doing and waits when told to).
#include <spdlog/spdlog.h>

#include "proxy/runtime/worker.hpp"
#include "proxy/session/session.hpp"
#include "proxy/session/session_internal.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

std::optional<int> Session::read_target_now(const router::Route& route, int shard, char boundary) {
  if (!replicas_) return shard;
  if (txn_.state() != txn::State::kIdle) return transaction_target_now(route, shard);
  // Only a request that ends here (a Sync or a Query: nothing of it follows on the same
  // server), in transaction pooling, outside any transaction, by a client that keeps no
  // state in its server, may leave the primary.
  if (!route.read_only || boundary == proto::msg::kFlush || pinned_ ||
      user_->pool_mode != config::PoolMode::kTransaction || phase_.batch_open() ||
      backends_.participant_count() > 0)
    return shard;
  return chosen_read_host(shard);
}

std::optional<int> Session::chosen_read_host(int shard) {
  ReadRouting::Ask ask;
  ask.shard = shard;
  ask.in_flight = request_in_flight();
  ask.now = Clock::now();
  if (config_.replication.load_balance == config::LoadBalance::kLeastActive)
    ask.busy = [this](int target) { return pool_of(target).busy(); };
  return reads_.target(config_, *user_, worker_.shared().hosts, ask);
}

std::optional<int> Session::placed_in_transaction(int shard) const {
  for (const auto& link : backends_.all())
    if (link->lease && shard_of_target(link->shard) == shard) return link->shard;
  return std::nullopt;
}

bool Session::replica_transaction(const router::Route& route) const {
  // A READ ONLY transaction that is not SERIALIZABLE runs on a hot standby as on its
  // primary, by a client in transaction pooling that keeps no state in its server. A first
  // statement that a plain read's test does not show to be read-safe in what it runs (a
  // lock, advisory or LOCK TABLE; a pg_catalog function with a volatile variant; a function
  // outside read_safe_functions; DO, CALL, NOTIFY...) keeps its shard's part on the primary,
  // as outside a transaction, and so does one on several shards while the visibility gate
  // makes cross-shard commits visible whole on the primaries only.
  return !pinned_ && user_->pool_mode == config::PoolMode::kTransaction && !route.side_effects &&
         !keeps_server_state(route) &&
         txn_.read_only(settings_.value("default_transaction_read_only"),
                        route.transaction_modes) &&
         !txn_.serializable(settings_.value("default_transaction_isolation"),
                            route.transaction_modes) &&
         !(config_.atomic_visibility && router::shards_of(route).size() > 1);
}

bool Session::keeps_server_state(const router::Route& route) {
  // (SET ROLE and set_config pin too, but as settings the session replays anywhere.)
  return route.pins && route.settings.empty();
}

bool Session::replica_sensitive(const router::Route& route) {
  return route.locks || route.side_effects || keeps_server_state(route);
}

std::optional<int> Session::transaction_target_now(const router::Route& route, int shard) {
  // A transaction never moves hosts: a shard's part stays on the host it began on.
  if (auto placed = placed_in_transaction(shard)) return *placed;
  if (!replica_transaction(route)) return shard;
  return chosen_read_host(shard);
}

std::optional<protocol::ErrorInfo> Session::unsafe_on_replica(const router::Route& route) const {
  // A write is left to the replica: PostgreSQL refuses it there as on a READ ONLY primary
  // (25006). A lock, or a call that may lock or write where pgshard cannot see (a function
  // outside read_safe_functions, DO, CALL, txid_current, NOTIFY...), would succeed on the
  // primary and fails or means something else on a hot standby: refused, never run there.
  if (!replicas_ || txn_.state() == txn::State::kIdle) return std::nullopt;
  if (!route.locks && (!route.side_effects || route.write) && !keeps_server_state(route))
    return std::nullopt;
  for (const int shard : router::shards_of(route)) {
    const auto placed = placed_in_transaction(shard);
    if (!placed || *placed == shard) continue;
    const auto& name = config_.shards[static_cast<std::size_t>(shard)].name;
    if (keeps_server_state(route))
      return proto::error(
          sqlstate::kFeatureNotSupported,
          "cannot keep a cursor WITH HOLD, a prepared statement, a temporary object or a "
          "LISTEN past this READ ONLY transaction: its part on shard " +
              name + " runs on a replica, and the client's later statements run on the primary",
          {},
          "run it as the transaction's first statement on the shard (its part then runs on the "
          "primary), outside the transaction, or begin the transaction READ WRITE");
    if (route.locks)
      return proto::error(
          sqlstate::kFeatureNotSupported,
          "cannot take a lock in this READ ONLY transaction: its part on shard " + name +
              " runs on a replica, whose locks exclude nobody on the primary",
          {},
          "take the lock in the transaction's first statement on the shard (its part then "
          "runs on the primary), or begin the transaction READ WRITE");
    return proto::error(
        sqlstate::kFeatureNotSupported,
        "cannot run this statement in this READ ONLY transaction: its part on shard " + name +
            " runs on a replica, and the statement calls a function (or runs DO, CALL, "
            "NOTIFY...) that may lock or write, which a hot standby does not do as its primary",
        {},
        "run it as the transaction's first statement on the shard (its part then runs on the "
        "primary), list a read-only function in read_safe_functions, or begin the "
        "transaction READ WRITE");
  }
  return std::nullopt;
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
