// A request routed and handed to its action's handler (forward to one shard, fan out, DDL,
// COPY, answer locally...): the dispatcher; what the route says of the session (hints,
// pinning, cursors) taken on.
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
  read_chosen_.reset();
}

void Session::log_forward(const router::Route& route, int target) {
  if (debug_logging())  // (prefix() builds a string)
    spdlog::debug("{}: route to {}: {}", prefix(), pool_of(target).target().shard_name,
                  route.reason);
  if (route.prepared_statements_view) statements_.show_own_statements();
}

awaitable<void> Session::handle_request(char boundary) {
  while (aborting_) co_await aborted_.wait();  // a deadlock victim's rollback goes first
  begin_request();
  request_boundary_ = boundary;
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
  // Directory keys not cached yet, values pgshard puts in: done, then routed again.
  if (router::routes_again(route)) co_await resolve_lookups(req, route);
  if (route.shows_read_token && replicas_) {
    // SHOW pgshard.read_token: every write's position first (a read in between may have
    // settled one after the hint was last set), then the answer from the token as it is.
    co_await settle_read_token();
    route = route_batch(&req.simple);
  }
  if (route.names_unique_id) co_await executor::declare_unique_id(*this);
  req.lone = lone(req, route);
  const bool runs = router::runs_on_shards(route);
  if (route.signal_call && runs && co_await signal_client(route, req)) co_return;
  worker_.routes().count(route);
  // (Before adopt: a refused statement pins nothing, changes no setting.)
  if (replicas_ && replica_sensitive(route) && !txn_.failed()) {
    if (auto refusal = unsafe_on_replica(route)) {
      co_await fail(Failure::kRefused, std::move(*refusal), req.boundary);
      co_return;
    }
  }
  if (runs) {
    adopt(route, req.boundary);
    if ((route.txn == router::TxnControl::kPrepare ||
         route.txn == router::TxnControl::kFinishPrepared) &&
        co_await client_two_phase(route, req))
      co_return;
    if (route.controls_txn && co_await refuse_split_control(route, req)) co_return;
    // (Most statements neither control nor meet a failed transaction: no coroutine for them.)
    if ((route.txn != router::TxnControl::kNone || txn_.failed()) &&
        co_await control_transaction(route, req))
      co_return;
  }
  co_await run_action(req, route);
  // A deadlock victim's statement on several shards has ended: its servers roll back now.
  if (victim_after_statement_) co_await roll_back_after_statement();
}

awaitable<void> Session::run_action(const Request& req, router::Route& route) {
  // (The action is read only now: a client's COMMIT PREPARED goes where its identifier is.)
  switch (router::action(route)) {
    case router::Action::kForward:
      co_await run_forward(req, route, std::get<router::Forward>(route.action).shard);
      co_return;
    case router::Action::kFanOut:
      co_await run_fan_out(req, route);
      co_return;
    case router::Action::kDdl:
      co_await run_schema_change(req, route);
      co_return;
    case router::Action::kCopyIn:
      co_await run_copy_in(req, route, std::get<router::CopyIn>(route.action));
      co_return;
    case router::Action::kAnswer:
    case router::Action::kRefuse:
      co_await answer_locally(route, req);
      co_return;
    case router::Action::kSplitPipeline:
      co_await run_pipeline_split(req, route);
      co_return;
    case router::Action::kLookup:
    case router::Action::kGenerateKeys:
    case router::Action::kInsertSelect:
    case router::Action::kUniqueIds:
      co_return;  // resolve_lookups left none of these
  }
}

void Session::adopt(const router::Route& route, char boundary) {
  hints_ = route.hints;
  note_writes(route);
  if (replicas_) sync_read_token();
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
  // (A request that never reached a ReadyForQuery of the relay, such as a statement on
  // several shards, leaves what it ran recorded until here.)
  if (owed() == 0 && transaction_status() == proto::txn_status::kIdle) settings_.no_transaction();
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
  if (r.cursor_op == Op::kNone || !router::runs_on_shards(r)) return;
  if (r.cursor_op == Op::kDeclare) {
    const auto* forward = std::get_if<router::Forward>(&r.action);
    const int shard = router::shards_of(r).front();
    // A name taken on another shard: that server would not see it. PostgreSQL's answer.
    if (auto it = cursors_.find(r.cursor); it != cursors_.end() && it->second.shard != shard) {
      r.action = router::Refuse{
          proto::error(sqlstate::kDuplicateCursor, "cursor \"" + r.cursor + "\" already exists")};
      return;
    }
    if (forward) cursors_[r.cursor] = {forward->shard, r.cursor_hold};
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
  r.action = router::Forward{it->second.shard};
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
  ctx.client_encoding = settings_.value("client_encoding");
  if (backends_.active) ctx.attached = shard_of_target(backends_.active->shard);
  return ctx;
}

bool Session::catalog_shadowed() const {
  // PostgreSQL searches pg_catalog first unless search_path names it later explicitly.
  const std::string path(settings_.value("search_path"));
  std::size_t at = 0;
  for (bool first = true; at <= path.size(); first = false) {
    const std::size_t comma = std::min(path.find(',', at), path.size());
    std::string item = path.substr(at, comma - at);
    std::erase_if(item, [](char ch) { return ch == ' ' || ch == '"'; });
    if (item == "pg_catalog") return !first;
    at = comma + 1;
  }
  return false;
}

router::Route Session::route_batch(bool* simple) {
  const router::Context ctx = routing_context();
  const TxnAt at = txn_.coordinated() || txn_.deferred()              ? TxnAt::kManaged
                   : transaction_status() != proto::txn_status::kIdle ? TxnAt::kServer
                                                                      : TxnAt::kNone;
  router::Route r = session::route_batch(pending_, statements_, hints_, config_, ctx, at, simple);
  if (router::runs_on_shards(r) && r.ddl && !temp_tables_.empty() &&
      std::any_of(r.schema_objects.begin(), r.schema_objects.end(),
                  [&](const std::string& name) { return temp_tables_.contains(name); })) {
    // A schema change of the client's own temporary table (DROP, ALTER, CREATE INDEX by
    // its plain name): the table lives in its server session only.
    r.action = router::Forward{ctx.attached.value_or(router::shards_of(r).front())};
    r.ddl = false;
  }
  if (r.unqualified_calls && replicas_ && catalog_shadowed()) {
    // A function called by its plain name may be the user's (search_path lists a schema
    // before pg_catalog): not shown read-safe, as a function outside pg_catalog is not.
    r.read_only = false;
    r.side_effects = true;
  }
  follow_cursors(r);
  // (A rewritten EXECUTE is its statement now: routed again, once.)
  if (follow_sql_prepared(r, *simple)) return route_batch(simple);
  return r;
}

}  // namespace pgshard::session
