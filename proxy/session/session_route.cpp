// A request routed and handed to its action: forward to one shard, fan out, COPY, answer
// locally; what the route says of the session (hints, pinning, cursors) taken on.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "protocol/messages.hpp"
#include "proxy/executor/executor.hpp"
#include "proxy/runtime/worker.hpp"
#include "proxy/session/session.hpp"
#include "proxy/session/session_internal.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

namespace {

// spdlog::should_log without copying the default logger's shared_ptr (two atomic updates).
bool debug_logging() {
  return spdlog::default_logger_raw()->should_log(spdlog::level::debug);
}

}  // namespace

bool Session::routes_at_once(char boundary) const {
  return !aborting_ && !phase_.split_pipeline() && !phase_.skipping_to_sync() &&
         !(!backends_.active && boundary == proto::msg::kSync && pending_.size() == 5) &&
         !(phase_.batch_open() && backends_.active);
}

void Session::begin_request() {
  ++requests_;
  deadlock_detail_.clear();  // a cancel that came too late must not turn into 40P01 now
  statements_.clear_injected();
}

void Session::log_forward(const router::Route& route, int target) {
  if (debug_logging())  // (prefix() builds a string)
    spdlog::debug("{}: route to shard {}: {}", prefix(), config_.shards[target].name, route.reason);
  if (route.prepared_statements_view) statements_.show_own_statements();
}

awaitable<void> Session::handle_request(char boundary) {
  while (aborting_) co_await aborted_.wait();  // a deadlock victim's rollback goes first
  begin_request();
  // The rest of a pipeline over several shards, up to its Sync, joins its transaction.
  if (phase_.split_pipeline() && pipeline_step_ == PipelineStep::kNone &&
      co_await run_split_pipeline())
    co_return;
  if (phase_.skipping_to_sync() && co_await skip_failed_batch(boundary)) co_return;
  if (!backends_.active && boundary == proto::msg::kSync && pending_.size() == 5) {
    // A Sync with nothing open on any server: PostgreSQL's answer is just ReadyForQuery.
    pending_.clear();
    co_await write_client(proto::ready_for_query(transaction_status()));
    co_return;
  }
  // Mid-batch (extended messages sent without Sync) the batch stays where it started.
  if (phase_.batch_open() && backends_.active) {
    if (continues_elsewhere()) {
      co_await abandon_open_batch(boundary);
      co_return;
    }
    co_await forward(backends_.active->shard, boundary);
    co_return;
  }
  Request req{boundary};
  RouteBox box([&] { return route_batch(&req.simple); });
  co_await handle_routed(req, *box);
}

awaitable<void> Session::handle_routed(Request& req, router::Route& route) {
  const char boundary = req.boundary;
  // Directory-placed keys not cached yet: look them up, then route again.
  if (route.kind == router::RouteKind::kLookup) co_await resolve_lookups(req, route);
  if (route.names_unique_id) co_await executor::declare_unique_id(*this);
  req.lone = lone(req, route);
  if (route.signal_call && route.kind == router::RouteKind::kShard &&
      co_await signal_client(route, req))
    co_return;
  const auto act = router::action(route);
  worker_.routes().count(route, act);
  if (route.split_pipeline && pipeline_step_ == PipelineStep::kNone &&
      co_await run_split_pipeline())
    co_return;
  if (act == router::Action::kAnswer || act == router::Action::kRefuse) {
    co_await answer_locally(route, req);
    co_return;
  }
  adopt(route, boundary);
  if ((route.txn == router::TxnControl::kPrepare ||
       route.txn == router::TxnControl::kFinishPrepared) &&
      co_await client_two_phase(route, req))
    co_return;
  if (route.controls_txn && co_await refuse_split_control(route, req)) co_return;
  // (Most statements neither control nor meet a failed transaction: no coroutine for them.)
  if ((route.txn != router::TxnControl::kNone || txn_.failed()) &&
      co_await control_transaction(route, req))
    co_return;
  // Parse/Describe alone (a driver preparing) is answered alike by every shard: one does.
  const bool prepare_only = !req.simple && !binds_or_runs(pending_);
  switch (act) {
    case router::Action::kCopyIn:
      if (req.simple) {
        co_await executor::copy_in_split(*this, *this, route);
        pending_.clear();
        co_return;
      }
      [[fallthrough]];
    case router::Action::kFanOut:
    case router::Action::kDdl:
      if (!prepare_only) {
        // (DDL included.)
        co_await executor::fan_out(*this, *this, route, {pending_, req.simple, boundary});
        if (route.ddl) schema_changed();  // (and once it has run)
        pending_.clear();
        co_return;
      }
      [[fallthrough]];
    case router::Action::kForward: {
      const int target = route.shards.size() > 1 ? route.shards.front() : route.shard;
      log_forward(route, target);
      std::string_view rest;
      if (!forwarded_now(target, boundary, rest)) {
        co_await forward(target, boundary);
      } else if (!rest.empty()) {
        auto link = backends_.active;  // (the socket was full)
        co_await write_server(link, rest);
        pending_.clear();
      }
      co_return;
    }
    case router::Action::kAnswer:
    case router::Action::kRefuse:
    case router::Action::kLookup:
      break;  // answered above; resolve_lookups resolved them
  }
}

void Session::adopt(const router::Route& route, char boundary) {
  hints_ = route.hints;
  takes_snapshot_ = route.takes_snapshot;
  // Key positions are read again, statements prepared again (and again once it has run).
  if (route.ddl) schema_changed();
  ddl_running_ |= route.ddl;
  temp_tables_.insert(route.temp_tables.begin(), route.temp_tables.end());
  if (route.drops)
    for (const auto& name : route.schema_objects) temp_tables_.erase(name);
  if (route.pins && !pinned_) {
    // LISTEN, session advisory locks, temp tables, WITH HOLD cursors, SQL PREPARE live in
    // the server session: from now on this client keeps its servers (session pooling).
    pinned_ = true;
    spdlog::debug("{}: pinned to its servers: {}", prefix(), route.reason);
  }
  if (!route.transaction_modes.empty() && transaction_status() != proto::txn_status::kIdle)
    txn_.add_modes(route.transaction_modes);
  // A request that only prepares (Parse/Describe up to a Sync, pgshard's hidden one after a
  // Flush in transaction pooling) runs none of its SETs. One ending in Flush in session
  // pooling does, later: its next part joins the server without being routed.
  const bool transaction_pooled = user_->pool_mode == config::PoolMode::kTransaction;
  const bool runs = route.settings.empty() || binds_or_runs(pending_) ||
                    (boundary == proto::msg::kFlush && !transaction_pooled);
  settings_.statement(route.settings, owed(), runs);
  if (!route.user_functions.empty() && transaction_pooled)
    settings_.functions_called(route.user_functions,
                               worker_.functions_keep_settings(route.user_functions));
}

void Session::follow_cursors(router::Route& r) {
  using Op = router::Analysis::CursorOp;
  // Outside a transaction block only WITH HOLD cursors are left.
  if (!cursors_.empty() && transaction_status() == proto::txn_status::kIdle)
    std::erase_if(cursors_, [](const auto& e) { return !e.second.hold; });
  if (r.cursor_op == Op::kNone || r.kind != router::RouteKind::kShard) return;
  if (r.cursor_op == Op::kDeclare) {
    // A name taken on another shard: that server would not see it. PostgreSQL's answer.
    if (auto it = cursors_.find(r.cursor); it != cursors_.end() && it->second.shard != r.shard) {
      r.kind = router::RouteKind::kError;
      r.error =
          proto::error(sqlstate::kDuplicateCursor, "cursor \"" + r.cursor + "\" already exists");
      return;
    }
    if (r.shards.empty()) cursors_[r.cursor] = {r.shard, r.cursor_hold};
    if (r.cursor_hold && transaction_status() != proto::txn_status::kIdle)
      txn_.declared_hold_cursor(r.cursor);
    return;
  }
  if (r.cursor_op == Op::kClose && r.cursor.empty()) {
    cursors_.clear();  // CLOSE ALL
    txn_.closed_cursor({});
    return;
  }
  if (r.cursor_op == Op::kClose) txn_.closed_cursor(r.cursor);
  const auto it = cursors_.find(r.cursor);
  if (it == cursors_.end()) return;  // unknown here: the server says it does not exist
  r.shard = it->second.shard;
  r.shards.clear();
  if (r.cursor_op == Op::kClose) cursors_.erase(it);
}

router::Context Session::routing_context() {
  router::Context ctx;
  ctx.cache = &worker_.analysis_cache();
  ctx.reasons = debug_logging();
  ctx.directory = &worker_.directory();
  ctx.columns = &worker_.columns();
  ctx.round_robin = &round_robin_;
  ctx.memo = &memo_;
  if (backends_.active) ctx.attached = backends_.active->shard;
  return ctx;
}

router::Route Session::route_batch(bool* simple) {
  const router::Context ctx = routing_context();
  router::Route r = session::route_batch(pending_, statements_, hints_, config_, ctx,
                                         txn_.coordinated() || txn_.deferred(), simple);
  if (r.kind == router::RouteKind::kShard && r.ddl && !temp_tables_.empty() &&
      std::any_of(r.schema_objects.begin(), r.schema_objects.end(),
                  [&](const std::string& name) { return temp_tables_.contains(name); })) {
    // A schema change of the client's own temporary table (DROP, ALTER, CREATE INDEX by
    // its plain name): the table lives in its server session only.
    r.shards.clear();
    r.shard = ctx.attached.value_or(r.shard);
    r.ddl = false;
  }
  follow_cursors(r);
  return r;
}

}  // namespace pgshard::session
