// The relay's reply side: a server's replies streamed back to the client (server_loop), a
// lost server answered, and the waits for what a server still owes.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "protocol/messages.hpp"
#include "proxy/runtime/worker.hpp"
#include "proxy/session/session.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

bool Session::can_detach(const Link& link) const {
  return !session_pooled() && !phase_.batch_open() && !writing_server_ && link.lease &&
         link.lease->replies.empty() && link.lease->status == 'I';
}

bool Session::idle() const {
  return owed() == 0 && !phase_.batch_open() && !writing_server_ && transaction_status() == 'I';
}

int Session::owed() const {
  return backends_.active && backends_.active->lease
             ? backends_.active->lease->replies.client_owed()
             : 0;
}

char Session::transaction_status() const {
  return txn_.status(backends_.active && backends_.active->lease ? backends_.active->lease->status
                                                                 : proto::txn_status::kIdle);
}

void Session::server_lost(const std::shared_ptr<Link>& link, std::string& out) {
  auto& conn = *link->lease;
  pool::report(conn, pool::ServerFailure::kIoError);
  settings_.drop_pipelined();  // those requests get no ReadyForQuery from this server
  // (A replica's pool names it: "s0 replica host:port".)
  const auto& shard = conn.target().shard_name;
  const auto& fatal = conn.replies.fatal;
  std::string code = conn.replies.fatal_code.empty()
                         ? std::string(rule(Failure::kServerLost).sqlstate)
                         : conn.replies.fatal_code;
  std::string message = fatal.empty() ? "server connection to shard " + shard + " was lost"
                                      : "shard " + shard + ": " + fatal;
  // A transaction whose server is gone is gone with it: the client must never be moved to
  // a fresh server inside it (its next statements would run in autocommit and COMMIT would
  // report success for writes that were lost). It fails until the client ends it.
  bool in_txn = link->lease->status != 'I';
  in_txn = in_txn || backends_.is_participant(*link);
  const int owed_client = link == backends_.active ? conn.replies.client_owed() : 0;
  const bool tell_now = link == backends_.active && (owed_client > 0 || phase_.batch_open());
  if (in_txn) txn_.lose(message + "; the transaction was rolled back", tell_now);
  if (tell_now) {
    proto::write_error(
        out, proto::error(code, message, {},
                          in_txn ? "" : "the statement may or may not have run; retry it"));
    // Answer every outstanding Sync/Query so the client is back in step.
    for (int i = 0; i < std::max(owed_client, 1); ++i)
      end_request(out, in_txn ? proto::txn_status::kFailed : proto::txn_status::kIdle);
    phase_.batch_closed();
  }
  if (!client_gone_)
    spdlog::warn("{}: lost server connection to shard {}{}", prefix(), shard,
                 fatal.empty() ? "" : ": " + fatal);
  conn.replies.clear();
}

awaitable<void> Session::server_loop(std::shared_ptr<Link> link) {
  auto self = shared_from_this();
  RelayFilter filter(config_.listen.max_message_size, *this);
  while (link) {
    ++relays_;
    filter.reset();
    auto& conn = *link->lease;
    for (;;) {
      bool lost = false;
      if (link->done) break;
      if (link->borrowed) {
        // A multi-shard statement is using this server: wait until it is given back.
        relay_at_ = "parked (server lent)";
        co_await backends_.park(*link);
        continue;
      }
      // The client left while this server was lent or between reads: finish() found no read
      // to cancel, and an idle server would never answer one (it would keep its transaction,
      // and its locks, open for as long as pgshard runs).
      if (stop_for_gone_client(*link)) break;
      {
        relay_at_ = "reading the server";
        relay_server_ = conn.id();
        // (Backends::wake ends this read, and only this one.)
        const error_code ec = std::get<0>(co_await conn.read_some(link->wake.reading()));
        link->wake.read_ended();
        if (ec == asio::error::operation_aborted && !conn.broken) {
          if (read_interrupted(link)) break;
          continue;
        }
        if (ec) lost = true;
      }

      // Whole frames go to the client unless hidden; large rows stream through.
      std::string_view relay;
      std::size_t used = 0;
      if (!lost) {
        const auto step = filter.walk(conn, conn.rbuf.view());
        relay = step.relay;
        used = step.used;
        if (step.invalid) {
          spdlog::error("{}: invalid message length from shard {}", prefix(),
                        config_.shards[shard_of_target(link->shard)].name);
          pool::report(conn, pool::ServerFailure::kProtocolViolation);
          lost = true;
        }
      }
      if (lost) {
        relay_at_ = "answering a lost server";
        co_await relay_lost(link, relay);
        break;
      }
      relay_at_ = "writing to the client";
      if (!relay.empty() && !client_gone_ && !wrote_client_now(relay) &&
          !co_await write_client(relay))
        pool::report(conn, pool::ServerFailure::kClientGone);
      conn.rbuf.consume(used);
      if (stop_for_gone_client(*link) || relay_ends(link)) break;
    }
    // Hand the server back once the request writer is done with it, and once a
    // multi-shard statement that borrowed it has given it back (the link can end while it
    // is lent: the client left, the transaction ended).
    relay_at_ = "waiting for the request's write";
    while (writing_server_) co_await server_write_done_.wait();
    relay_at_ = "waiting for a lent server";
    co_await backends_.given_back(*link);
    link_finished(link);
    if (state_ == State::kClosing || client_gone_ || next_relay_.waiting()) break;
    self.reset();  // a waiting relay must not keep its session alive
    worker_.parked_relays().park(*this);
    co_await next_relay_.wait();
    link = std::move(next_link_);
    if (link) self = shared_from_this();
  }
}

bool Session::stop_for_gone_client(Link& link) {
  // Once the client has left, a server being reset is read until its reset is answered; any
  // other stops (it may never answer a request its client abandoned), and is discarded
  // unless it is idle and owes nothing.
  auto& conn = *link.lease;
  if (!client_gone_ || (link.resetting && !conn.broken)) return false;
  if (conn.status != 'I' || !conn.replies.empty()) abandon(conn);
  return true;
}

void Session::abandon(pool::ServerConn& conn) {
  // A statement the server is still running would go on after its connection closes
  // (PostgreSQL notices a gone client only when it writes to it), holding a backend the
  // pool no longer counts: cancel it, so the shard's backends stay within pool_size.
  if (!conn.broken && !conn.replies.empty()) {
    const auto& t = conn.target();
    runtime::send_server_cancel(worker_.executor(), t.host, t.port, conn.pid(), conn.secret());
  }
  pool::report(conn, pool::ServerFailure::kAbandoned);
}

bool Session::read_interrupted(const std::shared_ptr<Link>& link) {
  // The relay's read was cancelled, the server not broken: true when its relay ends.
  if (link->done) return true;
  if (link == backends_.active && can_detach(*link)) {
    release(link);
    return true;
  }
  return link->closing && link->lease->replies.own_owed() == 0;
}

awaitable<void> Session::relay_lost(const std::shared_ptr<Link>& link, std::string_view relay) {
  auto& conn = *link->lease;
  // A session-pooled or pinned client's server session is its session (settings,
  // prepared statements, temporary tables, LISTEN): ended by the server
  // (pg_terminate_backend, the shard shutting down), the client's ends with the
  // server's FATAL, as on PostgreSQL (before: the next statement ran on a fresh server
  // without them).
  std::string fatal;
  if (!client_gone_ && !conn.replies.fatal.empty() &&
      (pinned_ || user_->pool_mode == config::PoolMode::kSession))
    proto::write_error(
        fatal, proto::fatal(conn.replies.fatal_code.empty() ? std::string(sqlstate::kAdminShutdown)
                                                            : conn.replies.fatal_code,
                            conn.replies.fatal));
  std::string notice;
  server_lost(link, notice);
  if (!relay.empty()) co_await write_client(relay);
  if (!fatal.empty()) {
    co_await write_client(fatal);
    stream_.close();
  } else if (!notice.empty()) {
    co_await write_client(notice);
  }
}

bool Session::relay_ends(const std::shared_ptr<Link>& link) {
  // After a relayed reply: the client's requests answered, the server closing once it
  // owes nothing, or free to go back to the pool.
  auto& conn = *link->lease;
  if (conn.replies.client_owed() == 0 && !phase_.batch_open()) {
    last_activity_ = coarse_now();
    drained_.notify_all();
    if (terminate_requested_) maybe_close_for_shutdown();  // (its statement is answered)
  }
  if (link->closing && conn.replies.empty()) {
    if (client_gone_ && conn.replies.tag == "SELECT 1") {
      spdlog::debug("{}: S-{}: has a temporary schema: closed, not reused", prefix(), conn.id());
      pool::report(conn, pool::ServerFailure::kSessionState);
    }
    return true;
  }
  if (link == backends_.active && can_detach(*link)) {
    release(link);
    return true;
  }
  return false;
}

void Session::link_finished(std::shared_ptr<Link>& link) {
  auto& conn = *link->lease;
  if (conn.status != 'I') pool::report(conn, pool::ServerFailure::kInTransaction);
  if (!conn.replies.empty()) pool::report(conn, pool::ServerFailure::kOwesReplies);
  if (!link->done) {
    link->done = true;
    if (backends_.forget(*link)) phase_.batch_closed();
  }
  link->lease.release();
  --relays_;
  drained_.notify_all();
  maybe_close_for_shutdown();
  // The next server the session takes is relayed by this coroutine (start_relay), unless
  // the session is ending or another relay waits already; its link too, when nothing
  // else holds it.
  if (link.use_count() == 1 && !spare_link_) {
    *link = Link{};
    spare_link_ = std::move(link);
  }
  link.reset();
}

awaitable<bool> Session::drain() {
  // Until the server has answered everything sent so far. (Not until an open batch ends:
  // that takes the client's Sync, and nobody reads the client meanwhile.)
  auto busy = [&] {
    return backends_.active && backends_.active->lease && !backends_.active->lease->replies.empty();
  };
  if (!busy()) co_return !client_gone_;
  if (client_gone_) co_return false;
  if (phase_.batch_open()) {
    // An open batch's replies stay in the server's buffer until a Sync or Flush: ask for
    // them (PostgreSQL, too, sends them before an error of its own).
    std::string flush;
    proto::write_empty(flush, proto::msg::kFlush);
    if (!co_await write_server(backends_.active, flush)) co_return !client_gone_;
  }
  Waiting waiting(*this, "server replies (drain)");
  // A server may never answer (a failed extended batch waits for a Sync the client never
  // sends): the client leaving must still end the wait, or the session and its servers
  // would be held forever.
  auto watch = std::make_shared<ClientWatch>(worker_.executor());
  asio::co_spawn(worker_.executor(), watch_client(watch, [this] { drained_.notify_all(); }),
                 asio::detached);
  while (busy() && !client_gone_) co_await drained_.wait();
  co_await stop_watch(*watch);
  co_return !client_gone_;
}

}  // namespace pgshard::session
