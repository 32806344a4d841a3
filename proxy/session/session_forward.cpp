// The relay's request side, the Forward action: a keyed request forwarded to its shard's
// server (attached from the session's own or the pool), with pgshard's preludes put ahead.
#include <spdlog/spdlog.h>

#include "protocol/messages.hpp"
#include "proxy/runtime/worker.hpp"
#include "proxy/session/session.hpp"
#include "proxy/session/session_internal.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

namespace {

// True when a batch runs a statement (Query, Execute, FunctionCall).
bool runs_something(std::string_view batch) {
  for (const auto m : proto::frames(batch)) {
    const char t = m.frame.type;
    if (t == proto::msg::kQuery || t == proto::msg::kExecute || t == proto::msg::kFunctionCall)
      return true;
  }
  return false;
}

}  // namespace

bool Session::forwarded_routed(router::Route& route, char boundary, std::string_view& rest) {
  // Only a plain forward to a server the session has, or takes idle from the pool, now;
  // nothing is done when anything else is needed (handle_routed does it all).
  const auto* forward = std::get_if<router::Forward>(&route.action);
  if (!forward || route.names_unique_id || route.txn != router::TxnControl::kNone ||
      txn_.failed() || route.signal_call || route.controls_txn ||
      (replicas_ && replica_sensitive(route) && txn_.state() != txn::State::kIdle))
    return false;
  int target = forward->shard;
  if (picks_host(route)) {
    // (A read that must wait for a replica to catch up takes the general path.)
    const auto chosen = read_target_now(route, target, boundary);
    if (!chosen) return false;
    target = *chosen;
    read_chosen_ = target;  // the general path goes there too, not asking again
  }
  if (backends_.active) {
    if (backends_.active->shard != target) return false;
  } else if (!attached_now(target)) {
    // Only a server is missing: the caller waits for one and tries again (a read that
    // picked a host takes the general path, which keeps its choice).
    if (!read_chosen_) server_wanted_ = target;
    return false;
  }
  read_chosen_.reset();
  worker_.routes().count(route);
  adopt(route, boundary);
  log_forward(route, target);
  return forwarded_now(target, boundary, rest);  // (true: the server is attached)
}

awaitable<void> Session::run_forward(const Request& req, const router::Route& route, int shard) {
  if (read_chosen_) {
    shard = *read_chosen_;
    read_chosen_.reset();
  } else if (picks_host(route)) {
    shard = co_await read_target(route, shard, req.boundary);
  }
  if (shard >= static_cast<int>(config_.shards.size()) && !backends_.active) {
    shard = co_await reach_read_target(route, shard, req.boundary);
    if (shard < 0) {
      pending_.clear();
      co_return;
    }
  }
  log_forward(route, shard);
  co_await forward(shard, req.boundary);
}

awaitable<void> Session::forward(int target, char boundary) {
  // At once when the server is at hand (forwarded_now); the rest when the socket was full.
  std::string_view rest;
  if (!forwarded_now(target, boundary, rest)) co_await forward_waiting(target, boundary, rest);
  if (!rest.empty()) co_await send_rest(rest);
}

awaitable<void> Session::send_rest(std::string_view rest) {
  auto link = backends_.active;  // (the socket was full)
  co_await write_server(link, rest);
  pending_.clear();
}

awaitable<void> Session::forward_waiting(int target, char boundary, std::string_view& rest) {
  // The server is on another shard or not at hand: the earlier replies drained, the
  // transaction moved on, a server waited for.
  bool joins_transaction = false;
  if (backends_.active && backends_.active->shard != target) {
    if (!co_await drain()) co_return;
    if (backends_.active && !backends_.active->lease) {
      // Its server went away while the earlier replies drained (the relay ended it).
      co_await lost_before_request(boundary);
      co_return;
    }
    const char status = backends_.active ? backends_.active->lease->status : 'I';
    if (status == proto::txn_status::kFailed) {
      // An aborted transaction answers 25P02 wherever it lives: keep it where it is.
      target = backends_.active->shard;
    } else if (status == proto::txn_status::kInBlock && txn_.savepoints()) {
      co_await fail(Failure::kRefused,
                    proto::error(sqlstate::kFeatureNotSupported,
                                 "this transaction has savepoints on shard " +
                                     config_.shards[shard_of_target(backends_.active->shard)].name +
                                     " and the statement needs shard " +
                                     config_.shards[shard_of_target(target)].name,
                                 {}, "keep a transaction with savepoints on one shard"),
                    boundary);
      co_return;
    } else if (status == proto::txn_status::kInBlock) {
      // The transaction spreads to another shard: this server waits for the commit.
      txn_.joined();
      joins_transaction = !backends_.move_to(target);
    } else if (backends_.active) {
      // Transaction pooling: the server goes back; session pooling: keep it for later.
      auto link = std::move(backends_.active);
      backends_.active.reset();
      if (session_pooled()) {
        backends_.keep(link);
      } else {
        link->closing = false;
        release(link);
      }
    }
  }
  if (!backends_.active && !co_await attach(target)) {
    pending_.clear();
    co_return;
  }
  auto link = backends_.active;
  if (!link || !link->lease) {
    // The server was lost while this request waited for it: the client is told, never a
    // request written to nothing (the session fuzzer's segfault at address 8).
    co_await lost_before_request(boundary);
    co_return;
  }
  sent_now(link, joins_transaction, boundary, rest);
}

awaitable<void> Session::lost_before_request(char boundary) {
  pending_.clear();
  if (transaction_status() != proto::txn_status::kIdle) txn_.fail();
  co_await fail(Failure::kServerLost,
                proto::error(std::string(rule(Failure::kServerLost).sqlstate),
                             "the server connection was lost before the request was sent"),
                boundary);
}

bool Session::forwarded_now(int target, char boundary, std::string_view& rest) {
  if (backends_.active ? backends_.active->shard != target : !attached_now(target)) return false;
  const auto& link = backends_.active;
  if (!link || !link->lease) return false;  // (forward() answers a lost server)
  if (link->lease->status != proto::txn_status::kIdle) leave_if_demoted(*link->lease);
  sent_now(link, false, boundary, rest);
  return true;
}

void Session::leave_if_demoted(pool::ServerConn& conn) {
  auto why = worker_.demoted_primary(conn);
  if (why.empty()) return;
  // The server is lost to the transaction as if its host had died: the request written to it
  // fails, its relay answers the client (server_lost) with this reason, and COMMIT never
  // reports success.
  spdlog::warn("{}: {}", prefix(), why);
  conn.replies.fatal = std::move(why);
  conn.replies.fatal_code = std::string(sqlstate::kConnectionFailure);
  pool::report(conn, pool::ServerFailure::kIoError);
  conn.close();
}

void Session::sent_now(const std::shared_ptr<Link>& link, bool joins_transaction, char boundary,
                       std::string_view& rest) {
  prepare_request(*link, joins_transaction, boundary);
  rest = pending_;
  if (write_server_now(link, rest)) {
    rest = {};
    pending_.clear();
  }
}

void Session::prepare_request(Link& link, bool joins_transaction, char boundary) {
  auto& replies = link.lease->replies;
  // Where the transaction's snapshot on this shard is taken (txn::Snapshots).
  // (Not on a replica: the visibility gate orders commits on the primaries only.)
  if (txn_.state() != txn::State::kIdle && link.shard < static_cast<int>(config_.shards.size()))
    txn_.snapshots.sending(link.shard, worker_.shared().visibility.first_unfinished(),
                           takes_snapshot_);
  using Owner = pool::Replies::Owner;
  if (joins_transaction) {
    // A new participant opens the transaction the way the client did.
    proto::Query{txn_.joining_begin()}.write(link.prelude);
    replies.expect_ready(Owner::kOwn);
  }
  // Only a batch that binds or runs something opens the deferred transaction; a
  // prepare-only batch (Parse/Describe) must not pin it to a shard (its ReadyForQuery is
  // shown as 'T'). A Bind does: its portal must outlive the batch's Sync (asyncpg's cursor
  // binds in one batch and executes in the next; before, the portal died with the implicit
  // transaction: 'portal "__asyncpg_portal_3__" does not exist').
  bool opens = false;
  if (txn_.deferred() && binds_or_runs(pending_)) {
    // The client's BEGIN, answered earlier by pgshard, opens the transaction here.
    link.prelude += txn_.take_deferred();
    replies.expect_ready(Owner::kOwn);
    opens = true;
  }
  // The transaction's SETs that ran elsewhere run here too, inside it (not in an aborted one).
  const char status = link.lease->status;
  link.prelude += catch_up_settings(
      *link.lease, joins_transaction || opens || status == proto::txn_status::kInBlock);
  // What the server will owe, pushed before anything is written so the reader never hands
  // the server back while this request is on its way.
  const bool transaction_pooled = user_->pool_mode == config::PoolMode::kTransaction;
  if (transaction_pooled)
    statements_.map(pending_, *link.lease, txn_.state() != txn::State::kIdle);
  else if (statements_.has_injected())
    statements_.expect_injected(pending_, *link.lease);
  // A step of a pipeline pgshard runs in parts: what of its replies is not the client's.
  using Action = pool::Replies::Action;
  const Action ready = pipeline_step_ == PipelineStep::kPart      ? Action::kHide
                       : pipeline_step_ == PipelineStep::kControl ? Action::kHideCompletion
                                                                  : Action::kForward;
  bool open = replies.expect_batch(pending_, Owner::kClient, ready);
  if (transaction_pooled && boundary == proto::msg::kFlush && !binds_or_runs(pending_)) {
    // A prepare-only batch ending in Flush (asyncpg, JDBC) gets a Sync pgshard hides, so
    // the server is left idle and the statement's Bind can go to the shard its key names.
    proto::write_empty(pending_, proto::msg::kSync);
    replies.expect_ready(Owner::kClientHiddenSync);
    open = false;
  }
  phase_.request_sent(open);
  if (transaction_pooled) pending_.insert(0, statements_.take_prefix());
  // pgshard's closing statement goes only where the client awaits a ReadyForQuery (its
  // request ends in Sync or is a Query): its ReadyForQuery stands in for the client's. After
  // a Flush the client awaits none (a stray one desynchronises it: asyncpg then read the
  // next statement's rows as this one's), and a batch that only prepares ran no function.
  const bool ends_ready = boundary != proto::msg::kFlush;
  if (!open && ends_ready) {
    // The request ends with pgshard's statement, whose ReadyForQuery is the client's: a
    // RESET's startup value put back, the settings check after user-defined functions.
    const std::string finish = settings_.take_finishing_sql(!pinned_ && runs_something(pending_));
    if (!finish.empty()) {
      replies.hide_last_client_ready();
      proto::Query{finish}.write(pending_);
      replies.expect_ready(Owner::kOwnFinishing, ready);
    }
  }
  if (!link.prelude.empty()) {
    // pgshard's own settings go first, in the same write.
    pending_.insert(0, link.prelude);
    link.prelude.clear();
  }
}

std::optional<bool> Session::write_server_now(const std::shared_ptr<Link>& link,
                                              std::string_view& bytes) {
  error_code ec;
  const std::size_t sent = send_now(link->lease->socket(), bytes, ec);
  link->lease->count_sent(sent);
  bytes.remove_prefix(sent);
  if (!ec && !bytes.empty()) return std::nullopt;
  return server_written(link, ec);
}

bool Session::server_written(const std::shared_ptr<Link>& link, error_code ec) {
  if (ec) {
    // The reader sees the same failure and tells the client.
    link->lease->close();
    return false;
  }
  // The answer may have been relayed while this write was completing: let the reader
  // hand the server back now.
  if (link == backends_.active && can_detach(*link)) backends_.wake(*link);
  return true;
}

awaitable<bool> Session::write_server(const std::shared_ptr<Link>& link, std::string_view bytes) {
  if (const auto done = write_server_now(link, bytes)) co_return *done;
  writing_server_ = true;
  auto [ec, n] =
      co_await asio::async_write(link->lease->socket(), asio::buffer(bytes), use_nothrow);
  writing_server_ = false;
  server_write_done_.notify_all();
  link->lease->count_sent(n);
  co_return server_written(link, ec);
}

awaitable<bool> Session::run_ours(const std::shared_ptr<Link>& link, const std::string& sql) {
  if (link->done || !link->lease || link->lease->broken) co_return false;
  Waiting waiting(*this, "pgshard's own statement (run_ours)");
  auto& replies = link->lease->replies;
  std::string q;
  proto::Query{sql}.write(q);
  replies.expect_ready(pool::Replies::Owner::kOwn);
  if (!co_await write_server(link, q)) co_return false;
  while (!link->done && link->lease && !link->lease->broken && replies.own_owed() > 0)
    co_await drained_.wait();
  co_return !link->done && link->lease && replies.own_owed() == 0;
}

bool Session::attached_now(int shard) {
  if (auto kept = backends_.take_kept(shard)) {
    backends_.active = std::move(kept);
    return true;
  }
  auto lease = pool_of(shard).lend_idle();
  if (!lease) return false;
  start_relay(std::move(*lease), shard);
  return true;
}

pool::Pool& Session::pool_of(int shard) {
  // The worker's pools live as long as it does: each shard's is looked up once per session.
  if (pools_.empty()) pools_.resize(static_cast<std::size_t>(config_.targets()), nullptr);
  auto*& known = pools_[static_cast<std::size_t>(shard)];
  if (!known) known = &worker_.pool(shard, *user_);
  return *known;
}

void Session::start_relay(pool::Lease lease, int shard) {
  auto link = spare_link_ ? std::move(spare_link_) : std::make_shared<Link>();
  link->lease = std::move(lease);
  link->shard = shard;
  link->prelude = sync_prelude(*link->lease);
  backends_.active = link;
  if (wake_relay(link)) return;  // (it runs until it waits for the server's reply)
  asio::co_spawn(worker_.executor(), server_loop(link), asio::detached);
}

bool Session::wake_relay(std::shared_ptr<Link> link) {
  if (!next_relay_.waiting()) return false;
  worker_.parked_relays().unpark(*this);
  next_link_ = std::move(link);
  next_relay_.wake();
  return true;
}

awaitable<Session::PoolWaitEnd> Session::wait_in_pool(int shard, bool statement) {
  auto& pool = pool_of(shard);
  // A wait for a busy pool ends when the client leaves: the session may hold servers of
  // other shards in its transaction, which must not stay locked until pool_wait.
  // The watch starts once the wait has lasted kWatchClientAfter: most waits end sooner,
  // and a client that left is seen that much later.
  struct {
    std::shared_ptr<ClientWatch> watch;
    asio::cancellation_signal stop;  // outlives the watch: stop_watch below waits for its end
  } w;
  pool::WaitPatience patience{
      kWatchClientAfter, [this, &w] {
        w.watch = std::make_shared<ClientWatch>(worker_.executor());
        asio::co_spawn(
            worker_.executor(),
            watch_client(w.watch, [&w] { w.stop.emit(asio::cancellation_type::terminal); }),
            asio::detached);
      }};
  // The wait SHOW CLIENTS reports, the deadlock detector sees, and a CancelRequest or
  // pg_terminate_backend ends (the statement has not started: nothing else would).
  pool_waiting_ = PoolWaiting{shard, &pool, &w.stop};
  pool_waiting_->statement = statement;
  // PAUSE holds new work and lets running work take the servers it still needs: a
  // transaction that holds a server (BEGIN alone, deferred, holds none and waits), also
  // while a statement of it on several shards joins a shard (its server is set aside then),
  // and a statement on several shards that holds some of its servers. Held, these would
  // keep the servers PAUSE waits for until pool_wait.
  const bool running = backends_.in_transaction_besides(-1) || txn_.state() == txn::State::kOpen ||
                       txn_.state() == txn::State::kOpenMulti || !statement_servers_.empty();
  auto got = co_await pool.acquire(w.stop.slot(), running, std::move(patience));
  const auto stopped = pool_waiting_->stopped;
  pool_waiting_.reset();
  if (w.watch) co_await stop_watch(*w.watch);
  // A server that came at the last moment goes back unused: the statement was stopped.
  if (stopped != PoolWaiting::Stopped::kNo || !deadlock_detail_.empty()) got = std::string();
  const bool refused = std::holds_alternative<std::string>(got) && !pool.refusal().empty();
  if (refused && replicas_) reads_.refused(shard, requests_);  // (nothing was written there)
  // (Built in the co_return: GCC 12 destroys a co_await's result in a braced initializer,
  // or a local converted by co_return, twice.)
  co_return PoolWaitEnd{std::move(got), stopped, refused};
}

awaitable<bool> Session::attach(int shard) {
  if (attached_now(shard)) co_return true;
  Waiting waiting(*this, "a pooled server (attach)");
  auto end = co_await wait_in_pool(shard, false);
  if (auto* lease = std::get_if<pool::Lease>(&end.got)) {
    start_relay(std::move(*lease), shard);  // (take_server's common case, no coroutine)
    co_return true;
  }
  const bool took = co_await take_server(std::move(end), shard);
  co_return took;
}

awaitable<bool> Session::forwarded_after_wait(router::Route& route, char boundary,
                                              std::string_view& rest) {
  // The fast path found every condition met but no idle server: the same try-step again,
  // once a server came. A wait that failed has answered the client (take_server).
  const int shard = std::exchange(server_wanted_, -1);
  if (!co_await attach(shard)) {
    pending_.clear();
    co_return true;
  }
  co_return forwarded_routed(route, boundary, rest);
}

awaitable<bool> Session::take_server(PoolWaitEnd end, int shard) {
  if (end.stopped == PoolWaiting::Stopped::kTerminate) {
    co_await fail(Failure::kAdminShutdown, "terminating connection due to administrator command");
    co_return false;
  }
  if (auto* lease = std::get_if<pool::Lease>(&end.got)) {
    start_relay(std::move(*lease), shard);
    co_return true;
  }
  auto e = pool_wait_error(end);
  spdlog::warn("{}: {}", prefix(), e.message);
  // As any error: it fails a transaction block (and pgshard's transaction of a split
  // pipeline, whose later statements are then skipped; before, they ran and committed),
  // and a batch ending in Flush skips to its Sync.
  co_await fail(Failure::kNoServer, std::move(e), request_boundary_);
  co_return false;
}

awaitable<std::variant<pool::Lease, proto::ErrorInfo>> Session::wait_for_server(int shard) {
  using Got = std::variant<pool::Lease, proto::ErrorInfo>;
  // (Each co_return builds its value in place: GCC 12 destroys a local converted by
  // co_return twice.)
  auto end = co_await wait_in_pool(shard, true);
  if (std::holds_alternative<pool::Lease>(end.got))
    co_return Got(std::in_place_index<0>, std::move(std::get<pool::Lease>(end.got)));
  if (end.stopped == PoolWaiting::Stopped::kTerminate) {
    // Its FATAL goes in place of the statement's answer; the session ends after it
    // (maybe_close_for_shutdown, once the request is over).
    terminated_told_ = true;
    co_return Got(std::in_place_index<1>,
                  failure_error(Failure::kAdminShutdown,
                                "terminating connection due to administrator command"));
  }
  Got failed(std::in_place_index<1>, pool_wait_error(end));
  spdlog::warn("{}: {}", prefix(), std::get<1>(failed).message);
  co_return std::move(failed);
}

proto::ErrorInfo Session::pool_wait_error(const PoolWaitEnd& end) {
  // A deadlock victim while it waited: 40P01, even if a server came at the last moment.
  if (!deadlock_detail_.empty())
    return proto::error(sqlstate::kDeadlockDetected, "deadlock detected",
                        std::exchange(deadlock_detail_, {}), "Retry the transaction.");
  if (end.stopped == PoolWaiting::Stopped::kCancel) {
    fail_transaction();  // (as PostgreSQL's cancel of a statement in a transaction block)
    return proto::error(sqlstate::kQueryCanceled, "canceling statement due to user request");
  }
  const auto* err = std::get_if<std::string>(&end.got);
  return failure_error(end.two_primaries ? Failure::kTwoPrimaries : Failure::kNoServer,
                       err ? *err : std::string("no server"));
}

bool Session::session_pooled() const {
  return pinned_ || (user_ && user_->pool_mode == config::PoolMode::kSession);
}

void Session::release(std::shared_ptr<Link> link) {
  // By value: callers pass the active link, which this resets.
  backends_.release(link, link == backends_.active && phase_.batch_open());
}

}  // namespace pgshard::session
