#include "proxy/runtime/cluster_gate.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "proxy/pool/server_fate.hpp"

namespace pgshard::runtime {

namespace proto = protocol;

std::string coordinator_lock_sql(VisibilityGate::Mode mode, std::vector<std::string> shard_names,
                                 std::chrono::milliseconds wait) {
  // One order for every instance, whatever the order of its map.
  std::sort(shard_names.begin(), shard_names.end());
  shard_names.erase(std::unique(shard_names.begin(), shard_names.end()), shard_names.end());
  std::string sql =
      "BEGIN; SET LOCAL lock_timeout = " + std::to_string(wait.count()) + "; LOCK TABLE ONLY ";
  for (std::size_t i = 0; i < shard_names.size(); ++i)
    sql += (i ? ", " : "") + std::string("pgshard_gate.") + proto::quote_ident(shard_names[i]);
  sql += mode == VisibilityGate::Mode::kRead ? " IN SHARE MODE" : " IN ROW EXCLUSIVE MODE";
  return sql;
}

std::string coordinator_setup_sql(const std::vector<std::string>& shard_names) {
  std::string sql = "CREATE SCHEMA IF NOT EXISTS pgshard_gate";
  for (const auto& name : shard_names)
    sql += "; CREATE TABLE IF NOT EXISTS pgshard_gate." + proto::quote_ident(name) + " ()";
  return sql;
}

namespace {

// run_own, bounded: a coordinator that stops answering (a frozen host, a partition that
// sends no reset) must not hold up the statements waiting on it. Past `bound` the
// connection is cancelled and broken (closed when it goes back).
awaitable<bool> run_bounded(pool::ServerConn& conn, std::string_view sql, std::size_t max_message,
                            std::chrono::milliseconds bound, std::string* why) {
  auto alive = std::make_shared<bool>(true);
  auto expired = std::make_shared<bool>(false);
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(bound);
  timer.async_wait([&conn, alive, expired](error_code ec) {
    if (ec || !*alive) return;
    *expired = true;
    error_code ignored;
    conn.socket().cancel(ignored);
  });
  const bool ok = co_await conn.run_own(sql, max_message);
  *alive = false;
  timer.cancel();
  if (*expired) {
    pool::report(conn, pool::ServerFailure::kTimeout);
    *why = "the coordinator did not answer within " + std::to_string(bound.count()) + " ms";
    co_return false;
  }
  co_return ok;
}

// How long the coordinator may take beyond the lock's own wait.
constexpr std::chrono::milliseconds kAnswerWithin{1000};

// Takes the coordinator's lock on `conn`: true when held (its transaction open).
awaitable<bool> lock_on_coordinator(std::size_t max_message, pool::ServerConn& conn,
                                    VisibilityGate::Mode mode, std::vector<std::string> names,
                                    std::string* why) {
  const auto lock = coordinator_lock_sql(mode, names, VisibilityGate::kWaitLimit);
  // Up to two rounds of making the tables: a concurrent instance's setup can fail this
  // one's before it made every table this lock names.
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (!co_await run_bounded(conn, lock, max_message, VisibilityGate::kWaitLimit + kAnswerWithin,
                              why))
      break;
    if (conn.replies.error_code.empty() && conn.status == proto::txn_status::kInBlock)
      co_return true;
    *why = conn.replies.error;
    const std::string code = conn.replies.error_code;
    if (!co_await run_bounded(conn, "ROLLBACK", max_message, kAnswerWithin, why)) break;
    // The first use on this coordinator: its tables are made (a concurrent instance making
    // them too fails one of the two; the lock is then simply tried again).
    const bool missing = code == "42P01" || code == "3F000";
    if (code == "42501")
      *why += "; the login needs: GRANT USAGE ON SCHEMA pgshard_gate TO " +
              proto::quote_ident(conn.target().user) +
              "; GRANT SELECT, UPDATE ON ALL TABLES IN SCHEMA pgshard_gate TO " +
              proto::quote_ident(conn.target().user);
    if (!missing || attempt > 1) co_return false;
    const auto setup = coordinator_setup_sql(names);
    if (!co_await run_bounded(conn, setup, max_message, VisibilityGate::kWaitLimit, why)) break;
    if (const std::string failed = conn.replies.error_code;
        !failed.empty() && failed != "42P06" && failed != "42P07" && failed != "23505") {
      *why = "could not create the gate's tables: " + conn.replies.error +
             "; a superuser can run in the postgres database: " + setup +
             "; GRANT USAGE ON SCHEMA pgshard_gate TO " + proto::quote_ident(conn.target().user) +
             "; GRANT SELECT, UPDATE ON ALL TABLES IN SCHEMA pgshard_gate TO " +
             proto::quote_ident(conn.target().user);
      co_return false;
    }
  }
  if (why->empty()) *why = "the coordinator's connection failed";
  co_return false;
}

}  // namespace

awaitable<GateHold> GateEntry::enter(VisibilityGate::Mode mode, std::vector<int> shards) {
  const char* other =
      mode == VisibilityGate::Mode::kRead ? "a cross-shard commit" : "multi-shard reads";
  std::vector<std::string> names;
  for (int s : shards) names.push_back(config.shards[static_cast<std::size_t>(s)].name);
  GateHold h;
  h.local_ = co_await gate.enter(mode, std::move(shards), VisibilityGate::kWaitLimit);
  if (h.local_.forced) {
    spdlog::warn("{}: the visibility gate waited {} ms for {}; went ahead without it", log_prefix,
                 VisibilityGate::kWaitLimit.count(), other);
    co_return h;
  }
  if (!coordinator) co_return h;
  h.max_message_ = config.listen.max_message_size;
  std::string why;
  auto got = co_await coordinator->acquire();
  if (auto* lease = std::get_if<pool::Lease>(&got)) {
    if (co_await lock_on_coordinator(h.max_message_, **lease, mode, std::move(names), &why)) {
      h.coordinator_ = std::move(*lease);
      co_return h;
    }
    if (why.empty()) why = "its connection failed";
  } else {
    why = std::get<std::string>(got);
  }
  ++gate.forced;
  h.local_.forced = true;
  spdlog::warn(
      "{}: the visibility gate's coordinator did not give the lock ({}); the {} went "
      "ahead without it",
      log_prefix, why,
      mode == VisibilityGate::Mode::kRead ? "multi-shard read" : "cross-shard commit");
  co_return h;
}

awaitable<void> GateHold::release() {
  if (coordinator_) {
    // ROLLBACK ends the lock; a failed one leaves the connection broken (closed, not reused,
    // which ends its transaction too).
    std::string ignored;
    (void)co_await run_bounded(*coordinator_, "ROLLBACK", max_message_, kAnswerWithin, &ignored);
    coordinator_ = pool::Lease();
  }
  local_.hold.release();
}

}  // namespace pgshard::runtime
