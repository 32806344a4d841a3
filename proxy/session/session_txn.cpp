// The client's transaction as pgshard runs it: BEGIN/COMMIT/ROLLBACK it answers or
// coordinates, savepoint limits, snapshot checks, and the deadlock detector's victims.
#include <spdlog/spdlog.h>

#include "protocol/messages.hpp"
#include "proxy/executor/distributed.hpp"
#include "proxy/runtime/worker.hpp"
#include "proxy/session/session.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

namespace {

// The BEGIN an extended request runs, as the client wrote it (its modes): the text of the
// statement its Bind names. (Before, the client's unnamed statement stood in for it, which
// is another statement when the BEGIN is named: psycopg's unnamed DEALLOCATE ALL then ran
// instead of BEGIN, dropping statements pgshard had prepared there.)
std::string bound_text(std::string_view request, const Statements& statements) {
  for (const auto m : proto::frames(request)) {
    if (m.frame.type != proto::msg::kBind) continue;
    const auto bind = proto::Bind::parse(m.frame.body);
    if (!bind) break;
    const std::string_view text = statements.text(bind->statement);
    if (!text.empty()) return std::string(text);
    break;
  }
  return "BEGIN";
}

}  // namespace

awaitable<void> Session::control_locally(const router::Route& route, const Request& req) {
  using router::TxnControl;
  if (!co_await drain()) co_return;
  std::string answer;
  if (route.txn == TxnControl::kBegin) {
    std::string begin;
    if (req.simple)
      begin = pending_;
    else
      proto::Query{bound_text(pending_, statements_)}.write(begin);
    txn_.defer(std::move(begin), route.begin_modes);
    // (PostgreSQL's tag names the statement: START TRANSACTION is not answered BEGIN.)
    proto::CommandComplete{route.start_transaction ? "START TRANSACTION" : "BEGIN"}.write(answer);
  } else if (route.txn == TxnControl::kSetTransaction) {
    // Its modes (taken by adopt) go with the deferred BEGIN: every shard opens the
    // transaction with them, and a READ ONLY one picks its hosts as BEGIN READ ONLY's would.
    proto::CommandComplete{"SET"}.write(answer);
  } else {
    txn_.end();
    settings_.transaction_ended(route.txn == TxnControl::kCommit);
    hints_.local = {};
    proto::CommandComplete{route.txn == TxnControl::kCommit ? "COMMIT" : "ROLLBACK"}.write(answer);
  }
  std::string out;
  if (pipeline_step_ == PipelineStep::kControl) {
    // pgshard's own BEGIN/COMMIT of a pipeline it runs in parts: nothing for the client.
  } else if (req.simple) {
    out += answer;
    end_request(out, transaction_status());
  } else {
    answer_extended(answer, out);  // ends with ReadyForQuery at the Sync
  }
  pending_.clear();
  if (!out.empty()) co_await write_client(out);
}

awaitable<bool> Session::control_transaction(const router::Route& route, const Request& req) {
  using router::TxnControl;
  const bool ends = route.txn == TxnControl::kCommit || route.txn == TxnControl::kRollback;
  // BEGIN waits for the statement that picks the shard (transaction pooling would
  // otherwise pin the transaction to whatever shard BEGIN happened to reach); COMMIT or
  // ROLLBACK of a transaction no shard has seen is answered here too.
  // SET TRANSACTION before the first statement is held with the deferred BEGIN.
  const bool local =
      !backends_.active && req.lone &&
      (route.txn == TxnControl::kBegin
           ? txn_.state() == txn::State::kIdle && transaction_status() == proto::txn_status::kIdle
           : (ends || route.txn == TxnControl::kSetTransaction) && txn_.deferred());
  if (local) {
    co_await control_locally(route, req);
    co_return true;
  }
  // A BEGIN sent on to the server the session holds (a pinned client): the shards that join
  // later open the transaction with its modes too (before: a plain BEGIN, read-write and
  // READ COMMITTED, whatever the client's BEGIN said).
  if (route.txn == TxnControl::kBegin)
    txn_.begin_sql = route.begin_modes.empty() ? "BEGIN" : "BEGIN " + route.begin_modes;
  const bool ends_here = ends && req.lone;
  const bool recovers =
      route.txn == TxnControl::kRollbackTo && req.lone && txn_.can_roll_back_to_savepoint();
  if (!txn_.snapshots.empty()) {
    if (ends_here && backends_.active && !co_await drain()) co_return true;  // (its replies)
    check_snapshots();
  }
  if (txn_.failed() && !ends_here && !recovers) {
    co_await fail(Failure::kInFailedTransaction, txn_.refusal(), req.boundary);
    co_return true;
  }
  if (recovers) txn_.rolled_back_to_savepoint();
  if (route.txn == TxnControl::kSavepoint || route.txn == TxnControl::kRollbackTo) {
    // A savepoint covers the shards the transaction uses when it is taken; a shard that
    // joins later would not roll back to it, so savepoints stay on one shard.
    if (backends_.participant_count() > 0) {
      co_await fail(
          Failure::kRefused,
          proto::error(sqlstate::kFeatureNotSupported,
                       "savepoints in a transaction that uses several shards are not supported", {},
                       "keep the transaction on one shard"),
          req.boundary);
      co_return true;
    }
    txn_.savepoint();
  }
  if (ends_here && txn_.coordinated()) {
    const bool commit = route.txn == TxnControl::kCommit;
    bool committed = false;  // (no co_await in a ?: with GCC 12)
    if (pipeline_step_ == PipelineStep::kControl)
      committed = co_await end_pipeline_distributed(commit);
    else
      committed = co_await executor::finish_distributed(*this, *this, commit, req.simple);
    // The relay saw none of it: the transaction's SETs hold only if it committed.
    settings_.transaction_ended(committed);
    pending_.clear();
    co_return true;
  }
  co_return false;
}

awaitable<bool> Session::end_pipeline_distributed(bool commit) {
  const auto ended = co_await executor::end_distributed(*this, commit);
  if (!ended) co_return false;
  std::string out;
  if (ended->warning) proto::write_notice(out, *ended->warning);
  if (ended->error) proto::write_error(out, *ended->error);
  if (!out.empty()) co_await write_client(out);
  co_return ended->committed();
}

void Session::check_snapshots() {
  if (txn_.state() == txn::State::kIdle || txn_.failed()) {
    if (txn_.state() == txn::State::kIdle) txn_.snapshots.clear();
    return;
  }
  if (!txn_.one_snapshot(settings_.value("default_transaction_isolation"))) return;
  auto& gate = worker_.shared().visibility;
  const auto pair = txn_.snapshots.fractured([&](uint64_t from, uint64_t to, int a, int b) {
    return gate.commits_between(from, to, a, b);
  });
  if (!pair) return;
  const auto& earlier = config_.shards[static_cast<std::size_t>(pair->first)].name;
  const auto& later = config_.shards[static_cast<std::size_t>(pair->second)].name;
  spdlog::info("{}: a cross-shard commit between the snapshots of shards {} and {}: 40001",
               prefix(), earlier, later);
  txn_.lose("could not serialize access: a transaction across shards " + earlier + " and " + later +
                " committed between this transaction's snapshots on them; retry it",
            false, sqlstate::kSerializationFailure);
}

void Session::fail_transaction() {
  // An error pgshard gives inside a transaction block fails the transaction on every shard
  // it uses, as an ERROR from PostgreSQL would: nothing of it may commit.
  if (txn_.state() != txn::State::kIdle) txn_.fail();
}

std::optional<txn::WaitingTxn> Session::waiting_txn() const {
  // An autocommit statement on several shards holds its row locks (and the pool's servers)
  // on each shard until it ends, as a transaction would: before, the detector saw only
  // transaction blocks, and a cycle through such a statement lasted until a timeout.
  const bool block = txn_.state() == txn::State::kOpenMulti;
  const bool statement = txn_.state() == txn::State::kIdle && !statement_servers_.empty();
  if (!block && !statement) return std::nullopt;
  txn::WaitingTxn t;
  t.session = id_;
  t.serial = txn_.serial();
  t.began = block ? txn_.began() : statement_began_;
  t.request = requests_;
  t.statement = statement;
  t.busy = statement || !fan_out_servers_.empty() || pool_waiting_;
  add_waits(t);
  return t;
}

void Session::add_waits(txn::WaitingTxn& t) const {
  const auto shards = static_cast<int>(config_.shards.size());
  // (A READ ONLY transaction's part on a replica waits for no lock of the primaries.)
  if (t.statement) {
    for (const auto* conn : statement_servers_)
      if (conn->target().shard >= 0 && conn->target().shard < shards)
        t.servers.emplace_back(conn->target().shard, conn->pid());
  } else {
    for (const auto& link : backends_.all()) {
      if (!link->lease) continue;
      if (link->shard < shards) t.servers.emplace_back(link->shard, link->lease->pid());
      t.busy = t.busy || link->lease->replies.client_owed() > 0;
    }
  }
  if (pool_waiting_) {
    auto holders = pool_waiting_->pool->holders();
    t.pool_wait = txn::PoolWait{pool_waiting_->shard, std::move(holders.pids), holders.spare,
                                &pool_waiting_->pool->shared(), holders.servers};
  }
}

void Session::holding(std::vector<pool::ServerConn*> servers) {
  if (statement_servers_.empty() && !servers.empty()) statement_began_ = Clock::now();
  statement_servers_ = std::move(servers);
}

void Session::statement_victim(const txn::Victim& v) {
  // Only the statement the detector saw: a later request has nothing to do with it.
  if (txn_.state() != txn::State::kIdle || statement_servers_.empty() || requests_ != v.txn.request)
    return;
  spdlog::warn("{}: deadlock across shards: this statement is cancelled", prefix());
  deadlock_detail_ = v.detail;
  // Waiting for a server: wait_for_server answers 40P01 and the statement ends before it
  // began anywhere. Running: the shard where it waits answers 57014, which becomes 40P01,
  // and the executor rolls the statement back on every shard (FanOut::end_write).
  if (pool_waiting_)
    pool_waiting_->stop->emit(asio::cancellation_type::terminal);
  else
    cancel_victim();
}

void Session::cancel_victim() {
  ++cancels_on_way_;
  cancel_running([self = shared_from_this()] {
    --self->cancels_on_way_;
    self->cancels_landed_.notify_all();
  });
}

awaitable<void> Session::cancels_delivered() {
  // The cancelled statement may end before its cancel lands (a lock granted as the cycle
  // was broken elsewhere, or a cycle seen in stale waits); a cancel that lands later hits
  // whatever the server runs then.
  while (cancels_on_way_ > 0) co_await cancels_landed_.wait();
}

void Session::deadlock_victim(const txn::Victim& v) {
  if (v.txn.statement) {
    statement_victim(v);
    return;
  }
  // Only the request the detector saw waiting: a later one has nothing to do with it.
  if (txn_.state() != txn::State::kOpenMulti || txn_.serial() != v.txn.serial ||
      requests_ != v.txn.request)
    return;
  spdlog::warn("{}: deadlock across shards: this transaction is cancelled", prefix());
  deadlock_detail_ = v.detail;
  const bool relayed = fan_out_servers_.empty();
  if (pool_waiting_)
    pool_waiting_->stop->emit(asio::cancellation_type::terminal);  // attach() answers 40P01
  else
    cancel_victim();
  // As PostgreSQL aborts a deadlock victim, the whole transaction fails now (the client
  // must ROLLBACK; COMMIT answers ROLLBACK) and every shard rolls back at once, so the others
  // proceed without waiting for the client: after a statement on one server (or a wait for
  // one) now, after a statement on several shards once it has ended (handle_routed).
  txn_.fail();
  if (!relayed) {
    victim_after_statement_ = txn_.serial();
    return;
  }
  if (aborting_) return;
  aborting_ = true;
  asio::co_spawn(
      worker_.executor(),
      [self = shared_from_this()]() -> awaitable<void> { co_await self->roll_back_victim(); },
      asio::detached);
}

awaitable<void> Session::roll_back_victim() {
  // The cancelled statement answers first (its 40P01 is the client's).
  while (backends_.active && backends_.active->lease && !backends_.active->done &&
         backends_.active->lease->replies.client_owed() > 0)
    co_await drained_.wait();
  co_await cancels_delivered();
  bool lent = false;  // a statement on several shards still uses some of the servers
  for (const auto& link : backends_.all()) {
    lent = lent || link->borrowed;
    if (link->lease && !link->done && !link->borrowed && link->lease->replies.empty() &&
        link->lease->status != proto::txn_status::kIdle)
      co_await run_ours(link, "ROLLBACK");
  }
  if (lent)
    victim_after_statement_ = txn_.serial();
  else
    hand_back_victim_servers();
  aborting_ = false;
  aborted_.notify_all();
}

awaitable<void> Session::roll_back_after_statement() {
  while (aborting_) co_await aborted_.wait();
  const auto serial = std::exchange(victim_after_statement_, std::nullopt);
  // (A transaction ended, or another begun, since: nothing of the victim's is left here.)
  if (!serial || *serial != txn_.serial() || !txn_.failed()) co_return;
  aborting_ = true;
  co_await roll_back_victim();
}

void Session::hand_back_victim_servers() {
  // The victim holds nothing once it is rolled back, as PostgreSQL's does: its servers go
  // back now, not at the client's ROLLBACK. Before, a transaction waiting for one of them
  // (the pool wait of the cycle) waited its whole pool_wait though the cycle was "broken".
  // The transaction stays failed: every statement but COMMIT and ROLLBACK gets 25P02
  // without a server, and COMMIT or ROLLBACK ends it with nothing left to roll back. (An
  // extended batch left open without Sync keeps its server: the client's Sync ends it.)
  if (!txn_.failed() || phase_.batch_open()) return;
  for (auto& link : backends_.take_participants()) {
    if (link->done) continue;
    const bool idle = link->lease && link->lease->status == proto::txn_status::kIdle &&
                      link->lease->replies.empty();
    if (idle && session_pooled())
      backends_.keep(link);
    else
      release(link);  // (discarded unless idle: pool::report by the relay)
  }
}

std::optional<std::string> Session::replace_error(std::string_view body) {
  if (deadlock_detail_.empty() && !terminate_requested_) return std::nullopt;
  auto e = proto::ErrorFields::parse(body);
  if (!e || e->code() != sqlstate::kQueryCanceled) return std::nullopt;
  std::string out;
  if (terminate_requested_) {
    terminated_told_ = true;
    proto::write_error(out, proto::fatal(sqlstate::kAdminShutdown,
                                         "terminating connection due to administrator command"));
    return out;
  }
  proto::write_error(out,
                     proto::error(sqlstate::kDeadlockDetected, "deadlock detected",
                                  std::exchange(deadlock_detail_, {}), "Retry the transaction."));
  return out;
}

}  // namespace pgshard::session
