// A session's life: admission and login, the welcome, the idle timeout, cancel and
// terminate requests, shutdown, and the end that hands its servers back or closes them.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "protocol/messages.hpp"
#include "proxy/admin/console.hpp"
#include "proxy/log_limit.hpp"
#include "proxy/runtime/worker.hpp"
#include "proxy/session/session.hpp"
#include "proxy/session/session_internal.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

namespace {

// One row when the server session has a temporary schema (pgshard's reset at disconnect).
constexpr std::string_view kHasTempSchema = "SELECT 1 WHERE pg_catalog.pg_my_temp_schema() <> 0";

}  // namespace

awaitable<void> Session::run() {
  // Connections that have not logged in have their own bound, so half-open or slow
  // startups (a reconnect storm, a scanner) never take the places of real clients.
  auto& shared = worker_.shared();
  struct StartupSlot {
    std::atomic<int>& n;
    bool held = true;
    void end() {
      if (held) n--;
      held = false;
    }
    ~StartupSlot() { end(); }
  } startup_slot{shared.startups};
  // Over max_startups, the oldest connection that has not even sent its startup packet
  // gives its place (silent connections held open cannot lock logins out); only when
  // every one starting up has spoken is the new one refused.
  if (++shared.startups > config_.listen.max_startups && !worker_.drop_oldest_unheard(id_)) {
    static LogLimit refusals;
    if (const auto quiet = refusals.allow())
      spdlog::warn("{}: refusing connection: max_startups {} connections are in startup{}",
                   prefix(), config_.listen.max_startups,
                   *quiet ? " (" + std::to_string(*quiet) + " more refused in the last second)"
                          : std::string());
    co_await send_fatal(
        failure_error(Failure::kTooManyStartups, "sorry, too many connections are starting up"));
    co_return;
  }
  if (worker_.shared().shutting_down) {
    co_await fail(Failure::kShuttingDown, "pgshard is shutting down");
    co_return;
  }
  // A client has a bounded time to finish startup and authentication, and a shorter one to
  // send its startup packet.
  asio::steady_timer startup_timer(worker_.executor(), config_.timeouts.client_startup);
  auto self = shared_from_this();
  asio::steady_timer packet_timer(
      worker_.executor(),
      std::min(config_.timeouts.client_startup_packet, config_.timeouts.client_startup));
  packet_timer.async_wait([self](error_code ec) {
    if (!ec && self->state_ == State::kStartup) self->drop_unheard();  // (not whole yet)
  });
  startup_timer.async_wait([self](error_code ec) {
    if (!ec && self->state_ != State::kReady) {
      spdlog::info("{}: closing: startup not finished in time", self->prefix());
      self->stream_.close();
    }
  });
  Login login(
      worker_, stream_, in_, identity_, [this]() -> const std::string& { return prefix(); },
      [this] { state_ = State::kAuth; });
  bool ok = co_await login.run();
  user_ = identity_.user;
  startup_slot.end();
  if (ok && ++shared.logged_in > config_.listen.max_client_conn) {
    counted_ = true;
    spdlog::warn("{}: refusing connection: max_client_conn {} reached", prefix(),
                 config_.listen.max_client_conn);
    co_await fail(Failure::kTooManyClients, "sorry, too many clients already");
    co_return;
  }
  counted_ = ok;
  if (ok && identity_.database == admin::kConsoleDatabase) {
    startup_timer.cancel();
    co_await console();
    co_return;
  }
  if (ok) ok = co_await welcome();
  startup_timer.cancel();
  if (!ok) co_return;
  state_ = State::kReady;
  spdlog::info("{}: login db={} tls={} app={}", prefix(), log_safe(identity_.database),
               stream_.tls(), log_safe(settings_.value("application_name")));
  if (config_.timeouts.client_idle.count() > 0)
    asio::co_spawn(worker_.executor(), idle_watch(), asio::detached);
  co_await client_loop();
  idle_timer_.cancel();
  co_await finish();
}

bool Session::unheard() {
  if (state_ != State::kStartup || identity_.spoke) return false;
  error_code ec;
  const auto waiting = stream_.socket().available(ec);
  return !ec && waiting == 0;
}

void Session::drop_unheard() {
  spdlog::debug("{}: closing: no startup packet", prefix());
  stream_.close();
}

awaitable<void> Session::idle_watch() {
  // Checks a few times per timeout period; a client is idle when nothing is in flight and
  // it is outside a transaction (PgBouncer's client_idle_timeout).
  auto self = shared_from_this();
  const auto limit = config_.timeouts.client_idle;
  const auto step = std::max<config::Millis>(limit / 4, config::Millis(50));
  while (state_ == State::kReady && !client_gone_) {
    idle_timer_.expires_after(step);
    auto [ec] = co_await idle_timer_.async_wait(use_nothrow);
    if (ec || state_ != State::kReady) co_return;
    if (idle() && pending_.empty() && coarse_now() - last_activity_ >= limit) {
      spdlog::info("{}: closing idle client", prefix());
      co_await fail(Failure::kIdleTimeout, "terminating connection due to idle-session timeout");
      co_return;
    }
  }
}

void Session::cancel_running(std::function<void()> done) {
  // Only what runs when the request arrives is cancelled: a server with nothing owed is idle
  // (the statement the client meant is over) and is left alone, and `done` runs once every
  // server cancelled has it. A statement waiting for a pooled server has not started: its
  // wait ends now, and attach() or the executor (wait_for_server) answers 57014.
  if (pool_waiting_) {
    pool_waiting_->stopped = PoolWaiting::Stopped::kCancel;
    pool_waiting_->stop->emit(asio::cancellation_type::terminal);
  }
  std::vector<const pool::ServerConn*> running;
  for (auto& l : backends_.all())
    if (l->lease && !l->lease->replies.empty()) running.push_back(&*l->lease);
  for (const auto* conn : fan_out_servers_) running.push_back(conn);  // a multi-shard statement
  auto left = std::make_shared<std::size_t>(running.size());
  auto finished = std::make_shared<std::function<void()>>(std::move(done));
  if (running.empty()) {
    (*finished)();
    return;
  }
  for (const auto* conn : running) {
    const auto& t = conn->target();
    spdlog::info("{}: cancel request forwarded to shard {}", prefix(), t.shard_name);
    runtime::send_server_cancel(worker_.executor(), t.host, t.port, conn->pid(), conn->secret(),
                                [left, finished] {
                                  if (--*left == 0) (*finished)();
                                });
  }
}

awaitable<void> Session::console() {
  if (!config_.admin.may_view(user_->name)) {
    spdlog::warn("{}: refused the admin console: not in admin.users or admin.stats_users",
                 prefix());
    co_await fail(Failure::kLoginRefused,
                  proto::error(sqlstate::kInsufficientPrivilege,
                               "user \"" + user_->name + "\" may not use the admin console", {},
                               "list the user under admin.users or admin.stats_users"),
                  proto::msg::kSync);
    co_return;
  }
  state_ = State::kReady;
  spdlog::info("{}: admin console login", prefix());
  std::string out;
  proto::Authentication{proto::auth::kOk, {}}.write(out);
  const std::pair<const char*, std::string> params[] = {
      {"server_version", std::string("15.0 (pgshard ") + PGSHARD_VERSION + ")"},
      {"server_encoding", "UTF8"},
      {"client_encoding", "UTF8"},
      {"DateStyle", "ISO, MDY"},
      {"TimeZone", "UTC"},
      {"integer_datetimes", "on"},
      {"standard_conforming_strings", "on"},
      {"is_superuser", "off"},
      {"session_authorization", user_->name},
      {"application_name", std::string(identity_.startup.param("application_name"))}};
  for (const auto& [k, v] : params) proto::ParameterStatus{k, v}.write(out);
  proto::BackendKeyData{0, 0}.write(out);
  proto::ReadyForQuery{'I'}.write(out);
  co_await admin::run_console(worker_, stream_, in_, *user_, std::move(out),
                              [this]() -> const std::string& { return prefix(); });
}

awaitable<bool> Session::welcome() {
  // Another database than the shards' own (template1, one the client created): served from
  // the same shards, with pools of its own; one no shard has is refused as PostgreSQL does.
  const auto& home = config_.shards.front().primary;
  const std::string home_db = !home.database.empty() ? home.database
                              : !home.user.empty()   ? home.user
                                                     : user_->name;
  if (!identity_.database.empty() && identity_.database != home_db) {
    own_user_ = *user_;
    own_user_->database = identity_.database;
    user_ = &*own_user_;
  }
  // Settings from the startup packet follow the client to every server it is given.
  Params wanted;
  if (auto err = Settings::from_startup(identity_.startup.params, wanted)) {
    co_await fail(Failure::kLoginRefused, proto::error(sqlstate::kFeatureNotSupported, *err),
                  proto::msg::kSync);
    co_return false;
  }
  std::string err;
  auto server = co_await worker_.server_params(*user_, &err);
  if (!server && own_user_) {
    worker_.drop_pools(*user_);  // (names of databases that do not exist are not kept)
    if (err.find("failed: database \"") != std::string::npos &&
        err.find("\" does not exist") != std::string::npos) {
      co_await fail(Failure::kLoginRefused,
                    proto::error(sqlstate::kInvalidCatalogName,
                                 "database \"" + identity_.database + "\" does not exist"),
                    proto::msg::kSync);
      co_return false;
    }
  }
  if (!server) {
    // At login, no server is the end of the connection.
    co_await fail(Failure::kLoginRefused, proto::error(sqlstate::kSqlclientUnableToEstablish, err),
                  proto::msg::kSync);
    co_return false;
  }
  settings_.start(*server, std::move(wanted));
  co_return co_await send_welcome(*server);
}

awaitable<bool> Session::send_welcome(const Params& server) {
  std::string out;
  proto::Authentication{proto::auth::kOk, {}}.write(out);
  for (const auto& [k, v] : settings_.welcome(server, user_->name))
    proto::ParameterStatus{k, v}.write(out);
  std::weak_ptr<Session> weak = weak_from_this();
  key_ = runtime::CancelRegistry::instance().add(
      worker_.executor(),
      [weak](std::function<void()> done) {
        auto s = weak.lock();
        if (s)
          s->cancel_running(std::move(done));
        else
          done();
      },
      [weak] {
        if (auto s = weak.lock()) s->terminate();
      },
      user_->name);
  proto::BackendKeyData{key_.pid, key_.secret}.write(out);
  proto::ReadyForQuery{'I'}.write(out);
  co_return co_await write_client(out);
}

awaitable<void> Session::finish() {
  state_ = State::kClosing;
  client_gone_ = true;
  for (auto& link : backends_.all()) {
    if (link->done || !link->lease) continue;
    auto& conn = *link->lease;
    if (conn.status != 'I' || !conn.replies.empty() || phase_.batch_open()) {
      // Left mid-transaction or mid-request: never hand this server to someone else.
      abandon(conn);
    } else if (session_pooled() && !conn.broken) {
      // Session pooling: reset the server before it serves another client.
      link->closing = true;
      link->resetting = true;
      std::string q;
      proto::Query{"DISCARD ALL"}.write(q);
      conn.replies.expect_ready(pool::Replies::Owner::kOwnReset);
      // DISCARD ALL drops temporary objects but the session keeps its temporary schema,
      // which changes what the next client sees (PREPARE TRANSACTION after touching it
      // fails on a fresh session only): such a server is closed instead (see below).
      proto::Query{std::string(kHasTempSchema)}.write(q);
      conn.replies.expect_ready(pool::Replies::Owner::kOwnReset);
      conn.prepared.clear();
      Settings::server_discarded(conn);
      auto [ec, n] = co_await asio::async_write(conn.socket(), asio::buffer(q), use_nothrow);
      if (ec) pool::report(conn, pool::ServerFailure::kIoError);
      continue;
    }
    link->closing = true;
    backends_.wake(*link);
  }
  wake_relay(nullptr);  // (with no server: it ends)
  spdlog::info("{}: closing", prefix());
}

void Session::maybe_close_for_shutdown() {
  if (closing_for_shutdown_ || client_gone_ || state_ != State::kReady) return;
  // A shutdown waits for the client's transaction to end; pg_terminate_backend only for the
  // statement running (cancelled), and ends a transaction in progress (rolled back).
  const bool quiet = owed() == 0 && !phase_.batch_open() && !writing_server_;
  if (!(terminate_requested_ && quiet) && !(shutdown_requested_ && idle())) return;
  closing_for_shutdown_ = true;
  auto self = shared_from_this();
  asio::co_spawn(
      worker_.executor(),
      [self]() -> awaitable<void> {
        if (self->terminated_told_) {  // (its FATAL went in place of the cancel's error)
          self->force_close();
          co_return;
        }
        co_await self->fail(Failure::kAdminShutdown,
                            "terminating connection due to administrator command",
                            self->shutdown_requested_ ? "pgshard is shutting down" : "");
      },
      asio::detached);
}

void Session::terminate() {
  // pg_terminate_backend by another client: as a PostgreSQL backend, the session ends with
  // 57P01 at once. A running statement is cancelled and its cancel error replaced by that
  // FATAL (replace_error); a transaction in progress is rolled back with its servers.
  terminate_requested_ = true;
  if (state_ != State::kReady) {
    stream_.close();
    return;
  }
  if (pool_waiting_) {
    // attach() ends the wait with the FATAL (and nobody else does); a multi-shard
    // statement's executor answers with it, and the session closes after the request.
    if (!pool_waiting_->statement) closing_for_shutdown_ = true;
    pool_waiting_->stopped = PoolWaiting::Stopped::kTerminate;
    pool_waiting_->stop->emit(asio::cancellation_type::terminal);
    return;
  }
  if (owed() > 0) cancel_running([] {});
  maybe_close_for_shutdown();
}

void Session::request_shutdown() {
  shutdown_requested_ = true;
  if (state_ != State::kReady) {
    stream_.close();
    return;
  }
  maybe_close_for_shutdown();
}

void Session::kill() {
  // As pg_terminate_backend, the client learns why its connection ends. Only when its socket
  // takes the message now: a reply being written cannot be cut into, and a kill does not
  // wait for a client that does not read.
  if (state_ == State::kReady) {
    const auto e = failure_error(Failure::kAdminShutdown,
                                 "terminating connection due to administrator command");
    std::string out;
    proto::write_error(out, e);
    std::string_view rest = out;
    wrote_client_now(rest);
  }
  force_close();
  // A wait for a pooled server ends now, not when it times out.
  if (pool_waiting_) pool_waiting_->stop->emit(asio::cancellation_type::terminal);
}

void Session::force_close() {
  stream_.close();
  for (auto& link : backends_.all())
    if (link->lease) link->lease->close();
}

}  // namespace pgshard::session
