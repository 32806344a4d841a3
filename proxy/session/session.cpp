// One client session: startup, authentication, then requests routed to shards over pooled
// server connections, with responses relayed back untouched on the single-shard path.
#include "proxy/session/session.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>

#include "protocol/auth.hpp"
#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/admin/console.hpp"
#include "proxy/executor/capture.hpp"
#include "proxy/executor/distributed.hpp"
#include "proxy/executor/executor.hpp"
#include "proxy/executor/unique_id.hpp"
#include "proxy/log_limit.hpp"
#include "proxy/merge/value.hpp"
#include "proxy/router/placement.hpp"
#include "proxy/runtime/worker.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr std::size_t kReadChunk = 16 * 1024;
// The first read after a client was idle: small enough for the allocator's per-thread cache.
constexpr std::size_t kFirstReadChunk = 1000;

std::string canonical_parameter(std::string_view name) {
  // GUC names are case-insensitive; use the spelling PostgreSQL reports.
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "datestyle") return "DateStyle";
  if (lower == "timezone") return "TimeZone";
  if (lower == "intervalstyle") return "IntervalStyle";
  return lower;
}

// True when a batch binds or runs anything (Bind, Execute, Query, FunctionCall).
bool binds_or_runs(std::string_view batch) {
  for (const auto m : proto::frames(batch)) {
    const char t = m.frame.type;
    if (t == proto::msg::kBind || t == proto::msg::kExecute || t == proto::msg::kQuery ||
        t == proto::msg::kFunctionCall)
      return true;
  }
  return false;
}

// True when a batch runs a statement (Query, Execute, FunctionCall).
bool runs_something(std::string_view batch) {
  for (const auto m : proto::frames(batch)) {
    const char t = m.frame.type;
    if (t == proto::msg::kQuery || t == proto::msg::kExecute || t == proto::msg::kFunctionCall)
      return true;
  }
  return false;
}

// DDL: what was learned of the catalog is learned again.
void schema_changed() {
  router::ColumnCache::schema_changed();
  Statements::schema_changed();
}

// One row when the server session has a temporary schema (pgshard's reset at disconnect).
constexpr std::string_view kHasTempSchema = "SELECT 1 WHERE pg_catalog.pg_my_temp_schema() <> 0";

// A Route (about 1 KB) held in a request's coroutine frame would make the frame too large
// for Asio's per-thread frame recycling: each request would allocate and free it. Routes
// are built in place in storage kept per worker thread instead (a few: requests nest, a
// split pipeline runs its parts as requests).
class RouteBox {
 public:
  template <typename Make>
  explicit RouteBox(Make&& make) {
    if (spare().empty()) {
      storage_ = std::make_unique<Storage>();
    } else {
      storage_ = std::move(spare().back());
      spare().pop_back();
    }
    route_ = ::new (storage_->bytes) router::Route(make());  // (no copy, no move)
  }
  RouteBox(const RouteBox&) = delete;
  RouteBox& operator=(const RouteBox&) = delete;
  ~RouteBox() {
    route_->~Route();
    if (spare().size() < kKept) spare().push_back(std::move(storage_));
  }
  router::Route& operator*() { return *route_; }

 private:
  struct Storage {
    alignas(router::Route) std::byte bytes[sizeof(router::Route)];
  };
  static constexpr std::size_t kKept = 4;
  static std::vector<std::unique_ptr<Storage>>& spare() {
    thread_local std::vector<std::unique_ptr<Storage>> kept;
    return kept;
  }
  std::unique_ptr<Storage> storage_;
  router::Route* route_;
};

// spdlog::should_log without copying the default logger's shared_ptr (two atomic updates).
bool debug_logging() {
  return spdlog::default_logger_raw()->should_log(spdlog::level::debug);
}

bool synced_reported(std::string_view name) {
  return name == "application_name" || name == "client_encoding" || name == "DateStyle" ||
         name == "IntervalStyle" || name == "TimeZone" || name == "standard_conforming_strings";
}

}  // namespace

const char* to_string(Session::State s) {
  switch (s) {
    case Session::State::kStartup:
      return "startup";
    case Session::State::kAuth:
      return "auth";
    case Session::State::kReady:
      return "ready";
    case Session::State::kClosing:
      return "closing";
  }
  return "?";
}

Session::Session(runtime::Worker& worker, tcp::socket socket, uint64_t id)
    : worker_(worker),
      buffered_total_(worker.shared().buffered),
      config_(worker.config()),
      stream_(std::move(socket)),
      id_(id),
      backends_(worker.executor()),
      drained_(worker.executor()),
      aborted_(worker.executor()),
      client_write_done_(worker.executor()),
      server_write_done_(worker.executor()),
      idle_timer_(worker.executor()) {
  error_code ec;
  auto ep = stream_.socket().remote_endpoint(ec);
  // A Unix socket (the in-process tests' socketpair) reads as port 0, which no TCP peer has.
  peer_ = ec               ? "?"
          : ep.port() == 0 ? "unix"
                           : ep.address().to_string() + ":" + std::to_string(ep.port());
  stream_.socket().set_option(tcp::no_delay(true), ec);
  enable_drained_reads(stream_.socket());
}

Session::~Session() {
  worker_.parked_relays().unpark(*this);  // (its relay's frames go with next_relay_)
  if (key_.pid) runtime::CancelRegistry::instance().remove(key_);
  worker_.shared().clients--;
  buffered_total_ -= charged_;
  if (counted_) worker_.shared().logged_in--;
}

const std::string& Session::prefix() const {
  // Built once per state change, so a log call on the data path formats nothing extra.
  if (prefix_.empty() || (user_ && !prefix_has_user_)) {
    prefix_ =
        "C-" + std::to_string(id_) + ": " + (user_ ? user_->name + "@" : std::string()) + peer_;
    prefix_has_user_ = user_ != nullptr;
  }
  return prefix_;
}

awaitable<void> Session::serve() {
  try {
    co_await run();
  } catch (const std::exception& e) {
    spdlog::error("{}: session failed: {}", prefix(), e.what());
  }
  stream_.close();
}

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
               stream_.tls(), log_safe(client_params_["application_name"]));
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

auto Session::read_first_chunk() {
  // Between requests a client holds no read buffer (idle clients are most clients): a
  // small one (most requests are small; a larger one grows it) is taken only when the
  // socket has data, and given back when a try finds none.
  worker_.spare_blocks().take_from(in_);
  return client_reads_.read(
      [this](int fd, bool& drained) {
        worker_.spare_blocks().give_to(in_);
        std::size_t room;
        char* at = in_.prepare(kFirstReadChunk, &room);
        const ssize_t got = recv_noting_drained(fd, at, room, drained);
        if (got < 0) {
          const int error = errno;
          worker_.spare_blocks().take_from(in_);
          errno = error;
        }
        return got;
      },
      use_nothrow_op);
}

awaitable<bool> Session::read_client() {
  if (in_.empty() && !stream_.tls()) {
    auto [ec, n] = co_await read_first_chunk();
    if (ec) co_return false;
    in_.commit(n);
    co_return true;
  }
  std::size_t room;
  char* at = in_.prepare(kReadChunk, &room);
  auto [ec, n] = co_await stream_.read_some(asio::buffer(at, room));
  if (ec) co_return false;
  in_.commit(n);
  co_return true;
}

awaitable<void> Session::watch_client(std::shared_ptr<ClientWatch> watch,
                                      std::function<void()> on_gone) {
  // Waits for the client's socket to become readable; a peek of 0 bytes is EOF. Bytes the
  // client pipelines meanwhile are its next requests: on plain TCP they are moved into in_
  // for client_loop (up to a bound, so memory stays bounded and an EOF behind them is still
  // seen); behind TLS, or past the bound, the watch ends (such a client is not gone).
  auto self = shared_from_this();
  auto& socket = stream_.socket();
  const std::size_t limit = std::min<std::size_t>(config_.listen.max_message_size, 1 << 20);
  while (!watch->stopping && !client_gone_) {
    auto [ec] = co_await socket.async_wait(
        tcp::socket::wait_read, asio::bind_cancellation_slot(watch->stop.slot(), use_nothrow));
    if (watch->stopping || ec == asio::error::operation_aborted) break;
    char byte;
    const ssize_t n = ec ? -1 : ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) {
      if (stream_.tls() || in_.size() >= limit) break;
      std::size_t room;
      char* at = in_.prepare(kReadChunk, &room);
      const ssize_t got = ::recv(socket.native_handle(), at, room, MSG_DONTWAIT);
      if (got > 0) in_.commit(static_cast<std::size_t>(got));
      continue;
    }
    if (n < 0 && !ec && (errno == EAGAIN || errno == EINTR)) continue;
    spdlog::info("{}: client left while pgshard waited on servers: stopping them", prefix());
    client_gone_ = true;
    on_gone();
    break;
  }
  watch->running = false;
  watch->ended.notify_all();
}

awaitable<void> Session::stop_watch(ClientWatch& watch) {
  watch.stopping = true;
  watch.stop.emit(asio::cancellation_type::terminal);
  while (watch.running) co_await watch.ended.wait();
}

std::string Session::filter_out(std::string_view bytes) {
  auto& f = *out_filter_;
  std::string kept;
  while (!bytes.empty()) {
    if (f.remaining == 0 && f.have < 5) {
      f.header[f.have++] = bytes.front();
      bytes.remove_prefix(1);
      if (f.have < 5) continue;
      const auto* h = reinterpret_cast<const unsigned char*>(f.header);
      const uint32_t length =
          (uint32_t{h[1]} << 24) | (uint32_t{h[2]} << 16) | (uint32_t{h[3]} << 8) | uint32_t{h[4]};
      f.remaining = length >= 4 ? length - 4 : 0;
      f.dropping = f.drop == "*" || f.drop.find(f.header[0]) != std::string::npos;
      if (!f.dropping) kept.append(f.header, 5);
      if (f.remaining == 0) f.have = 0;
      continue;
    }
    const auto n = std::min<std::size_t>(f.remaining, bytes.size());
    if (!f.dropping) kept.append(bytes.substr(0, n));
    bytes.remove_prefix(n);
    f.remaining -= static_cast<uint32_t>(n);
    if (f.remaining == 0) f.have = 0;
  }
  return kept;
}

bool Session::wrote_client_now(std::string_view& bytes) {
  if (out_filter_ || client_writing_ || client_gone_) return false;
  error_code ec;
  bytes.remove_prefix(stream_.write_now(bytes, ec));
  if (ec) client_gone_ = true;
  return !ec && bytes.empty();
}

awaitable<bool> Session::write_client(std::string_view bytes) {
  std::string kept;
  if (out_filter_) {
    kept = filter_out(bytes);
    if (kept.empty()) co_return !client_gone_;
    bytes = kept;
  }
  while (client_writing_) co_await client_write_done_.wait();
  if (client_gone_) co_return false;
  client_writing_ = true;
  error_code ec;
  const std::size_t sent = stream_.write_now(bytes, ec);
  if (!ec && sent < bytes.size()) {
    auto [e, n] = co_await stream_.write(asio::buffer(bytes.data() + sent, bytes.size() - sent));
    ec = e;
  }
  client_writing_ = false;
  client_write_done_.notify_all();
  if (ec) client_gone_ = true;
  co_return !ec;
}

awaitable<void> Session::send_fatal(const proto::ErrorInfo& e) {
  std::string out;
  proto::write_error(out, e);
  co_await write_client(out);
  stream_.close();
}

void Session::cancel_running(std::function<void()> done) {
  // Only what runs when the request arrives is cancelled: a server with nothing owed is idle
  // (the statement the client meant is over) and is left alone, and `done` runs once every
  // server cancelled has it.
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
  for (const auto& [k, v] : identity_.startup.params) {
    auto name = canonical_parameter(k);
    if (name == "options") {
      if (auto err = parse_options(v, wanted)) {
        co_await fail(Failure::kLoginRefused, proto::error(sqlstate::kFeatureNotSupported, *err),
                      proto::msg::kSync);
        co_return false;
      }
    } else if (is_synced_startup_parameter(name)) {
      wanted[name] = v;
    }
  }
  // ParameterStatus reports the encoding as PostgreSQL names it.
  if (auto it = wanted.find("client_encoding"); it != wanted.end())
    it->second = canonical_encoding(it->second);
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
  for (const auto& [k, v] : *server)
    if (synced_reported(k)) client_params_[k] = v;
  for (auto& [k, v] : wanted) client_params_[canonical_parameter(k)] = v;
  {
    Params canonical;
    for (auto& [k, v] : wanted) canonical[canonical_parameter(k)] = v;
    wanted = std::move(canonical);
  }
  params_fingerprint_ = fingerprint(client_params_);
  startup_params_ = client_params_;
  sent_params_ = std::move(wanted);

  std::string out;
  proto::Authentication{proto::auth::kOk, {}}.write(out);
  auto announced = *server;
  for (const auto& [k, v] : client_params_)
    if (pool::is_reported_parameter(k)) announced[k] = v;
  announced["session_authorization"] = user_->name;
  for (const auto& [k, v] : announced) proto::ParameterStatus{k, v}.write(out);
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

// ---- requests ----

awaitable<void> Session::client_loop() {
  for (;;) {
    for (;;) {
      // The extended messages read so far join the request in one copy (a driver's batch
      // usually arrives whole), with no coroutine for them.
      const std::size_t max_message = config_.listen.max_message_size;
      const std::string_view in = in_.view();
      std::size_t run = 0;
      while (in.size() - run >= 5 && joins_request(in[run])) {
        const std::size_t len = proto::load_be32(in.data() + run + 1);
        if (len < 4 || len > max_message || in.size() - run < len + 1 ||
            special(pending_.size() + run + len + 1))
          break;  // (decode_frame below judges it)
        run += len + 1;
      }
      if (run > 0) gathered(run);
      auto d = proto::decode_frame(in_.view(), max_message);
      if (d.status == proto::DecodeStatus::kError) {
        co_await fail(Failure::kProtocolViolation, d.error);
        co_return;
      }
      if (d.status == proto::DecodeStatus::kNeedMore) break;
      if (takes_boundary(d.frame.type, d.consumed)) {
        const char boundary = d.frame.type;
        if (routes_at_once(boundary)) {
          // (The common request, routed and sent without a coroutine of its own.)
          begin_request();
          Request req{boundary};
          RouteBox box([&] { return route_batch(&req.simple); });
          std::string_view rest;
          if (!forwarded_routed(*box, boundary, rest)) {
            co_await handle_routed(req, *box);
          } else if (!rest.empty()) {
            auto link = backends_.active;  // (the socket was full)
            co_await write_server(link, rest);
            pending_.clear();
          }
        } else {
          co_await handle_request(boundary);
        }
        ends_request();
        if (client_gone_) co_return;
        continue;
      }
      if (!co_await on_message(d.frame.type, d.consumed)) co_return;
    }
    // COPY FROM STDIN data streams through as it arrives; outside COPY it is ignored, as
    // PostgreSQL does.
    if (!pending_.empty() && copy_only_) co_await flush_copy();
    in_.shrink(1 << 20);
    maybe_close_for_shutdown();
    if (client_gone_) co_return;
    drop_discarded();
    if (!charge_buffers() && !co_await over_buffer_budget()) co_return;

    bool read = false;
    if (in_.empty() && !stream_.tls()) {  // (read_client's common case, in this coroutine)
      auto [ec, n] = co_await read_first_chunk();
      in_.commit(n);
      read = !ec;
    } else {
      read = co_await read_client();
    }
    if (!read) {
      spdlog::debug("{}: client read ended", prefix());
      co_return;
    }
    drop_discarded();
    last_activity_ = coarse_now();
  }
}

bool Session::takes_boundary(char type, std::size_t size) {
  switch (type) {
    case proto::msg::kQuery:
    case proto::msg::kFunctionCall:
    case proto::msg::kSync:
    case proto::msg::kFlush:
      return take_unless_special(size);
    default:
      return false;
  }
}

bool Session::joins_request(char type) {
  switch (type) {
    case proto::msg::kParse:
    case proto::msg::kBind:
    case proto::msg::kDescribe:
    case proto::msg::kExecute:
    case proto::msg::kClose:
      return true;
    default:
      return false;
  }
}

bool Session::gather(char type, std::size_t size) {
  if (!joins_request(type) || special(pending_.size() + size)) return false;
  gathered(size);
  return true;
}

void Session::gathered(std::size_t size) {
  take_front(size);
  copy_only_ = false;
}

bool Session::special(std::size_t pending_after) const {
  return skipping_batch_ || copy_in_ || (copy_only_ && !pending_.empty()) ||
         pending_after > config_.listen.max_message_size;
}

bool Session::take_unless_special(std::size_t size) {
  if (special(pending_.size() + size)) return false;
  take_front(size);
  return true;
}

awaitable<bool> Session::on_message(char type, std::size_t size) {
  auto take = [&] { take_front(size); };
  if (skipping_batch_ && type != proto::msg::kTerminate) {
    // A batch refused for its size: the rest of it, up to its Sync, is dropped unread.
    in_.consume(size);
    if (type != proto::msg::kSync) co_return true;
    skipping_batch_ = false;
    co_return co_await write_client(proto::ready_for_query(transaction_status()));
  }
  if (type != proto::msg::kCopyData && !copy_in_ &&
      pending_.size() + size > config_.listen.max_message_size)
    co_return co_await refuse_batch();
  switch (type) {
    case proto::msg::kTerminate:
      in_.consume(size);
      co_return false;
    case proto::msg::kCopyData:
    case proto::msg::kCopyDone:
    case proto::msg::kCopyFail:
      if (type != proto::msg::kCopyData) copy_in_ = false;
      take();
      co_return true;
    case proto::msg::kParse:
    case proto::msg::kBind:
    case proto::msg::kDescribe:
    case proto::msg::kExecute:
    case proto::msg::kClose:
      if (copy_in_) {
        co_await copy_violation(type);
        co_return false;
      }
      if (copy_only_ && !pending_.empty()) {
        co_await flush_copy();
        co_return true;  // the message is still at the front of in_
      }
      co_return gather(type, size);  // (true: nothing above stops it now)
    case proto::msg::kQuery:
    case proto::msg::kFunctionCall:
    case proto::msg::kSync:
    case proto::msg::kFlush:
      if (copy_in_ && (type == proto::msg::kQuery || type == proto::msg::kFunctionCall)) {
        co_await copy_violation(type);
        co_return false;
      }
      if (copy_in_) {  // Sync and Flush are ignored during COPY, as PostgreSQL does
        in_.consume(size);
        co_return true;
      }
      if (copy_only_ && !pending_.empty()) {
        co_await flush_copy();
        co_return true;
      }
      take();
      co_await handle_request(type);
      ends_request();
      co_return !client_gone_;
    default:
      co_await fail(
          Failure::kProtocolViolation,
          "invalid frontend message type " + std::to_string(static_cast<unsigned char>(type)));
      co_return false;
  }
}

awaitable<bool> Session::refuse_batch() {
  // Memory per client is bounded by max_message_size: an extended-protocol batch that grows
  // past it without a Sync is refused, as one oversized message would be; the rest of it is
  // skipped up to its Sync (skipping_batch_).
  const std::size_t max_message = config_.listen.max_message_size;
  spdlog::info("{}: batch without Sync exceeds max_message_size; refused", prefix());
  pending_.clear();
  skipping_batch_ = true;
  std::string out;
  proto::write_error(out, failure_error(Failure::kBatchTooLarge,
                                        "extended-protocol batch exceeds max_message_size (" +
                                            std::to_string(max_message) + " bytes) before its Sync",
                                        "send Sync more often"));
  co_return co_await write_client(out);
}

awaitable<void> Session::copy_violation(char type) {
  // Only COPY messages (and Sync/Flush, ignored) may come during COPY FROM STDIN.
  // PostgreSQL answers an ERROR for the message, then FATAL: the protocol is out of step.
  // A relayed COPY's server, still in its COPY, is discarded (its transaction rolls back);
  // the split COPY (copy_in_split) has already failed its shards.
  spdlog::info("{}: protocol violation: message type {} during COPY from stdin", prefix(),
               int(static_cast<unsigned char>(type)));
  const bool relayed = copy_in_ && backends_.active && backends_.active->lease;
  if (relayed && rule(Failure::kCopyViolation).server == ServerFate::kDiscard)
    backends_.active->lease->broken = true;
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(type));
  auto error = failure_error(Failure::kCopyViolation, std::string("unexpected message type ") +
                                                          hex + " during COPY from stdin");
  error.severity = "ERROR";
  std::string out;
  proto::write_error(out, error);
  proto::write_error(out, failure_error(Failure::kCopyViolation,
                                        "terminating connection because protocol "
                                        "synchronization was lost"));
  co_await write_client(out);
  client_gone_ = true;
  stream_.close();
  if (relayed) {
    error_code ignored;
    backends_.active->lease->socket().cancel(ignored);
  }
}

bool Session::routes_at_once(char boundary) const {
  return !aborting_ && !pipeline_txn_ && !discard_until_sync_ &&
         !(!backends_.active && boundary == proto::msg::kSync && pending_.size() == 5) &&
         !(open_extended_ && backends_.active);
}

void Session::begin_request() {
  ++requests_;
  deadlock_detail_.clear();  // a cancel that came too late must not turn into 40P01 now
  statements_.clear_injected();
}

bool Session::forwarded_routed(router::Route& route, char boundary, std::string_view& rest) {
  // Only a plain forward to a server the session has, or takes idle from the pool, now;
  // nothing is done when anything else is needed (handle_routed does it all).
  if (route.kind != router::RouteKind::kShard || route.names_unique_id || route.split_pipeline ||
      route.txn != router::TxnControl::kNone || txn_.failed() || route.signal_call ||
      route.controls_txn)
    return false;
  const auto act = router::action(route);
  if (act != router::Action::kForward) return false;
  const int target = route.shard;
  if (backends_.active ? backends_.active->shard != target : !attached_now(target)) return false;
  worker_.routes().count(route, act);
  adopt(route);
  log_forward(route, target);
  return forwarded_now(target, boundary, rest);  // (true: the server is attached)
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
  if (pipeline_txn_ && !out_filter_ && co_await run_split_pipeline()) co_return;
  if (discard_until_sync_ && !backends_.active && co_await skip_failed_batch(boundary)) co_return;
  if (!backends_.active && boundary == proto::msg::kSync && pending_.size() == 5) {
    // A Sync with nothing open on any server: PostgreSQL's answer is just ReadyForQuery.
    pending_.clear();
    co_await write_client(proto::ready_for_query(transaction_status()));
    co_return;
  }
  // Mid-batch (extended messages sent without Sync) the batch stays where it started.
  if (open_extended_ && backends_.active) {
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
  if (route.split_pipeline && !out_filter_ && co_await run_split_pipeline()) co_return;
  if (act == router::Action::kAnswer || act == router::Action::kRefuse) {
    co_await answer_locally(route, req);
    co_return;
  }
  adopt(route);
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
        co_await executor::copy_in_split(*this, route);
        pending_.clear();
        co_return;
      }
      [[fallthrough]];
    case router::Action::kFanOut:
    case router::Action::kDdl:
      if (!prepare_only) {
        co_await executor::fan_out(*this, route, req.simple, boundary);  // DDL included
        if (route.ddl) schema_changed();                                 // (and once it has run)
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

bool Session::continues_elsewhere() {
  // Only a Bind says where a statement goes; Execute, Describe, Close follow the batch.
  bool binds = false;
  for (const auto m : proto::frames(pending_)) binds = binds || m.frame.type == proto::msg::kBind;
  if (!binds) return false;
  bool simple = false;
  const router::Route r = route_batch(&simple);
  if (r.kind == router::RouteKind::kAnswer) return false;
  return r.kind != router::RouteKind::kShard || r.shards.size() > 1 ||
         (r.shards.empty() && r.shard != backends_.active->shard);
}

awaitable<void> Session::abandon_open_batch(char boundary) {
  // The open batch's statements so far ran on one shard, in that server's implicit
  // transaction; this part needs another. Rather than run it on the wrong shard (or commit
  // the first part alone), the pipeline fails as PostgreSQL fails one: the client gets the
  // replies of what ran, then an error; the server is closed (its part rolls back) and the
  // rest up to the Sync is skipped.
  auto link = backends_.active;
  auto& conn = *link->lease;
  // The server is closed, never pooled: its implicit transaction holds the first part until
  // a Sync that will not come (with the batch no longer open, its relay would otherwise
  // hand it back as idle once the replies below are in, and the next client's statements
  // would commit the first part; found from outside).
  conn.broken = true;
  open_extended_ = false;
  // A Parse of an empty statement, hidden: once its reply is in, so is every earlier one.
  std::string probe;
  proto::Parse{"", "", {}}.write(probe);
  proto::write_empty(probe, proto::msg::kFlush);
  conn.replies.expect_parse(pool::Replies::Owner::kClient, pool::Replies::Action::kHide);
  if (co_await write_server(link, probe)) {
    // A server skipping to a Sync after an error never answers it: the wait is bounded
    // (and nobody reads the client meanwhile).
    Waiting waiting(*this, "server replies (pipeline failed)");
    asio::steady_timer timer(worker_.executor());
    // (The relay frees the server once the link is done: `conn` only while it is not.)
    for (int i = 0; i < 100 && !client_gone_ && !link->done && !conn.replies.empty(); ++i) {
      timer.expires_after(std::chrono::milliseconds(10));
      co_await timer.async_wait(use_nothrow);
    }
  }
  release(link);
  spdlog::info("{}: pipeline moved to another shard mid-batch: failed", prefix());
  std::string out;
  proto::write_error(
      out, proto::error(sqlstate::kFeatureNotSupported,
                        "a pipeline sent in parts (Flush) whose later statements "
                        "go to another shard than its first ones",
                        {}, "send the whole pipeline before its Sync, or Sync between shards"));
  pending_.clear();
  if (boundary == proto::msg::kSync)
    out += proto::ready_for_query(transaction_status());
  else
    discard_until_sync_ = true;
  fail_transaction();
  co_await write_client(out);
}

awaitable<bool> Session::run_split_pipeline() {
  // Its statements, each with the messages before it (Parse, Bind, Describe...); messages
  // after the last Execute go with it. A Sync ends the pipeline; a Flush leaves it open for
  // the client's next messages (psycopg 3 reads results as they come).
  std::vector<std::string> units;
  std::string unit;
  bool synced = false;
  for (const auto m : proto::frames(pending_)) {
    if (m.frame.type == proto::msg::kQuery) co_return false;
    if (m.frame.type == proto::msg::kSync) {
      synced = true;
      break;
    }
    if (m.frame.type == proto::msg::kFlush) continue;
    unit.append(m.raw);
    if (m.frame.type == proto::msg::kExecute) {
      units.push_back(std::move(unit));
      unit.clear();
    }
  }
  if (!unit.empty()) {
    if (units.empty())
      units.push_back(std::move(unit));
    else
      units.back() += unit;
  }
  // Consecutive statements bound for the same one shard go together (one round trip; an
  // error there skips the rest of them as PostgreSQL would).
  std::vector<std::string> groups;
  {
    Statements scratch = statements_;
    std::optional<int> last;
    for (auto& u : units) {
      bool simple = false;
      const auto r =
          session::route_batch(u, scratch, hints_, config_, routing_context(), false, &simple);
      // Transaction control inside (JDBC's BEGIN, a COMMIT) would not mean the same.
      if (r.txn != router::TxnControl::kNone) co_return false;
      const bool one = r.kind == router::RouteKind::kShard && r.shards.empty();
      if (one && last == r.shard)
        groups.back() += u;
      else
        groups.push_back(std::move(u));
      last = one ? std::optional<int>(r.shard) : std::nullopt;
    }
  }
  spdlog::debug(
      "{}: pipeline part of {} statements in {} groups over several shards: one "
      "transaction",
      prefix(), units.size(), groups.size());
  pending_.clear();
  // A part after the pipeline failed is skipped, as PostgreSQL skips to the Sync.
  bool skipping = pipeline_txn_ && transaction_status() == proto::txn_status::kFailed;
  std::string q;
  if (!pipeline_txn_ && transaction_status() == proto::txn_status::kIdle) {
    proto::Query{"BEGIN"}.write(q);
    co_await run_filtered(std::move(q), proto::msg::kQuery, "*");
    pipeline_txn_ = true;
  }
  std::string sync;
  proto::write_empty(sync, proto::msg::kSync);
  for (auto& u : groups) {
    if (client_gone_ || skipping) break;
    co_await run_filtered(u + sync, proto::msg::kSync, "Z");
    // After an error PostgreSQL skips the rest of the pipeline up to its Sync.
    skipping = transaction_status() == proto::txn_status::kFailed;
  }
  if (!synced || client_gone_) co_return true;
  if (std::exchange(pipeline_txn_, false)) {
    // The Sync ends the implicit transaction: committed, or rolled back after an error. A
    // failed COMMIT's error reaches the client.
    q.clear();
    proto::Query{transaction_status() == proto::txn_status::kFailed ? "ROLLBACK" : "COMMIT"}.write(
        q);
    co_await run_filtered(std::move(q), proto::msg::kQuery, "CZ");
  }
  co_await write_client(proto::ready_for_query(transaction_status()));
  co_return true;
}

awaitable<void> Session::run_filtered(std::string request, char boundary, std::string drop) {
  pending_ = std::move(request);
  out_filter_.emplace();
  out_filter_->drop = std::move(drop);
  co_await handle_request(boundary);
  co_await drain();
  out_filter_.reset();
}

awaitable<bool> Session::skip_failed_batch(char boundary) {
  // After pgshard itself failed an extended request, skip to Sync as PostgreSQL does.
  if (boundary == proto::msg::kSync) {
    discard_until_sync_ = false;
    pending_.clear();
    co_await write_client(proto::ready_for_query(transaction_status()));
  } else if (boundary != proto::msg::kFlush) {
    discard_until_sync_ = false;  // a simple Query ends the skipping
  } else {
    pending_.clear();
  }
  co_return pending_.empty();
}

awaitable<void> Session::resolve_lookups(Request& req, router::Route& route) {
  for (int attempt = 0; route.kind == router::RouteKind::kLookup; ++attempt) {
    // (No co_await inside ?: — GCC 12 mishandles temporaries there.)
    std::string err = "directory entries expire faster than they are read";
    std::string code(sqlstate::kSqlclientUnableToEstablish);
    if (attempt < 4 && route.insert_select) {
      err = co_await insert_select(code);
    } else if (attempt < 4 && route.unique_ids) {
      err = co_await put_unique_ids();
      code = sqlstate::kFeatureNotSupported;
    } else if (attempt < 4 && (route.generate_count > 0 || !route.generate_columns.empty())) {
      err = co_await generate_keys(route);
      code = sqlstate::kFeatureNotSupported;
    } else if (attempt < 4 && !route.column_lookups.empty()) {
      err = co_await executor::resolve_columns(*this, route.column_lookups);
    } else if (attempt < 4) {
      err = co_await executor::resolve_directory(*this, route.lookups);
    }
    if (!err.empty()) {
      route = router::Route{};
      route.kind = router::RouteKind::kError;
      route.error = proto::error(code, err);
      route.hints = hints_;
      break;
    }
    route = route_batch(&req.simple);
  }
}

awaitable<std::string> Session::generate_keys(const router::Route& route) {
  // Values for the rows of an INSERT that leave the key, or another column drawing from a
  // sequence, to the column's default, taken from the sequences' home and put into the
  // statement the client sent; routing it again then places each row by its key.
  std::vector<std::string> keys;
  if (route.generate_count > 0) {
    std::string err =
        co_await executor::generate_keys(*this, route.generate_table, route.generate_count, keys);
    if (!err.empty()) co_return err;
  }
  std::vector<std::vector<std::string>> values(route.generate_columns.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    const auto& g = route.generate_columns[i];
    std::string err = co_await executor::generate_keys(*this, route.generate_table, g.count,
                                                       values[i], g.column.name);
    if (!err.empty()) co_return err;
  }
  const auto& t = config_.sharded_tables[static_cast<std::size_t>(route.generate_table)];
  const int position = worker_.columns().key_position(t.qualified_name()).value_or(-1);
  if (!rewrite_statement(pending_, statements_, [&](std::string_view sql, const proto::Bind*) {
        std::optional<std::string> out(sql);
        if (!keys.empty()) out = router::with_generated_keys(*out, t.column, position, keys);
        for (std::size_t i = 0; i < values.size() && out; ++i) {
          const auto& g = route.generate_columns[i];
          out = router::with_generated_keys(*out, g.column.name,
                                            g.positional ? g.column.position : -1, values[i],
                                            g.column.always);
        }
        return out;
      }))
    co_return "an INSERT that leaves the shard key \"" + t.column +
        "\" or a generated column to its default could not be rewritten with generated "
        "values: set them";
  co_return std::string();
}

awaitable<std::string> Session::insert_select(std::string& code) {
  // INSERT INTO <sharded table> SELECT ...: the SELECT runs where it routes (in the client's
  // transaction where that has a server), its rows go in as VALUES, and routing again puts
  // each row on its key's shard: one INSERT, atomic across shards like any other.
  code = sqlstate::kFeatureNotSupported;
  static const std::vector<int32_t> kNoTypes;
  std::string sql;
  std::vector<std::string> params;  // the Bind's values, as SQL literals
  bool binary = false;
  rewrite_statement(pending_, statements_,
                    [&](std::string_view text, const proto::Bind* b) -> std::optional<std::string> {
                      sql = text;
                      const auto& types = b ? statements_.types(b->statement) : kNoTypes;
                      for (std::size_t i = 0; b && i < b->params.size(); ++i) {
                        const int32_t type = i < types.size() ? types[i] : 0;
                        const auto& v = b->params[i];
                        std::optional<std::string> text;
                        if (v && b->format_of(i) == 1) {
                          // Binary (psycopg 3 sends numbers so): decoded by its declared type.
                          text = merge::binary_to_text(type, *v);
                          binary = binary || !text;
                        } else if (v) {
                          text = std::string(*v);
                        }
                        params.push_back(router::sql_literal(text, static_cast<uint32_t>(type)));
                      }
                      return std::nullopt;  // only read here
                    });
  if (binary)
    co_return "INSERT ... SELECT with a parameter bound in binary format of a type pgshard does "
              "not decode (or undeclared) is not supported yet: bind it as text";
  auto select = router::insert_select_sql(sql);
  if (select && !params.empty()) select = router::with_parameter_values(*select, params);
  if (!select) co_return "INSERT ... SELECT could not be read";
  const router::Route r = router::route_query(*select, hints_, config_, routing_context());
  if (r.kind == router::RouteKind::kError) {
    code = r.error.code;
    co_return r.error.message;
  }
  if (r.kind != router::RouteKind::kShard)
    co_return "the SELECT of an INSERT ... SELECT must be a query pgshard routes to shards";
  executor::Captured got(100000, 64u << 20);
  if (r.shards.size() > 1) {
    // Several shards: the execution and merge a client's read gets (ORDER BY, LIMIT,
    // aggregates, GROUP BY...), its answer kept.
    co_await executor::capture_read(*this, r, *select, got);
  } else {
    got.error_message = co_await executor::run_on_shard(
        *this, r.shard, *select, [&](std::string_view body) { got.add_row(body); },
        [&](std::string_view body) { got.describe(body); }, got.error_code);
  }
  if (!got.error_message.empty() || !got.error_code.empty()) {
    code = got.error_code.empty() ? std::string(sqlstate::kInternalError) : got.error_code;
    co_return got.error_message.empty() ? "the SELECT of an INSERT ... SELECT failed"
                                        : got.error_message;
  }
  if (got.too_big) {
    code = sqlstate::kProgramLimitExceeded;
    co_return "INSERT ... SELECT of more than " + std::to_string(got.max_rows) + " rows or " +
        std::to_string(got.max_bytes >> 20) + " MiB through pgshard is not supported";
  }
  auto rewritten = router::with_select_rows(sql, got.types, got.rows);
  if (!rewritten ||
      !rewrite_statement(pending_, statements_,
                         [&](std::string_view, const proto::Bind*) { return rewritten; }))
    co_return "INSERT ... SELECT could not be rewritten with its rows";
  co_return std::string();
}

awaitable<std::string> Session::put_unique_ids() {
  // pgshard.unique_id() calls become this instance's ids, put into the statement the client
  // sent; routing it again then places it by them.
  std::string err = "pgshard.unique_id() could not be put into the statement";
  const auto node = co_await executor::node_for_ids(*this, err);
  if (!node) co_return err;
  const bool ok =
      rewrite_statement(pending_, statements_, [&](std::string_view sql, const proto::Bind*) {
        return router::with_unique_ids(sql, [&](bool js_safe) {
          auto id = executor::unique_id(*node, js_safe);
          if (!id)
            err = "pgshard.unique_id_53() needs a node below 64 (this instance's is " +
                  std::to_string(*node) + ")";
          return id;
        });
      });
  co_return ok ? std::string() : err;
}

bool Session::lone(const Request& req, const router::Route& route) const {
  // BEGIN/COMMIT/ROLLBACK pgshard may answer itself: a simple Query, or an extended batch
  // of one statement ending with Sync (psycopg 3, asyncpg...).
  if (req.simple) return true;
  if (req.boundary != proto::msg::kSync || route.txn == router::TxnControl::kNone) return false;
  int executes = 0;
  for (const auto m : proto::frames(pending_)) executes += m.frame.type == proto::msg::kExecute;
  return executes == 1;
}

awaitable<void> Session::answer_locally(const router::Route& route, const Request& req) {
  if (!co_await drain()) co_return;
  std::string out;
  const bool refused = route.kind == router::RouteKind::kError;
  if (refused) {
    spdlog::debug("{}: routing error: {}", prefix(), route.error.message);
    proto::write_error(out, route.error);
    fail_transaction();
  } else if (req.simple) {
    out += route.answer;
    hints_ = route.hints;
  } else {
    answer_extended(route.answer, out);  // ends with ReadyForQuery at a Sync
    hints_ = route.hints;
    if (req.boundary == proto::msg::kSync) {
      pending_.clear();
      co_await write_client(out);
      co_return;
    }
  }
  if (transaction_status() == proto::txn_status::kIdle) hints_.local = {};
  if (req.boundary == proto::msg::kFlush)
    discard_until_sync_ = refused;
  else
    out += proto::ready_for_query(transaction_status());
  pending_.clear();
  co_await write_client(out);
}

void Session::adopt(const router::Route& route) {
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
  if (const int ahead = owed(); ahead > 0 && !route.settings.empty())
    pipelined_settings_.push_back({ahead, route.settings});
  else
    pending_settings_.insert(pending_settings_.end(), route.settings.begin(), route.settings.end());
  if (route.settings.empty())
    finish_sql_.clear();  // (most statements: nothing to restore)
  else
    finish_sql_ = restore_startup_sql(route.settings);
  if (!route.user_functions.empty() && user_->pool_mode == config::PoolMode::kTransaction) {
    // The role is always checked (cheap); all settings while a function is not yet known
    // to leave them alone (reading pg_settings costs the server far more than the call).
    settings_unknown_ = true;
    if (!worker_.functions_keep_settings(route.user_functions)) {
      full_check_ = true;
      checked_functions_.insert(checked_functions_.end(), route.user_functions.begin(),
                                route.user_functions.end());
    }
  }
}

std::string Session::restore_startup_sql(const std::vector<router::SettingChange>& changes) const {
  // The server resets a reported setting to its own default and says so with
  // ParameterStatus; PostgreSQL resets to the value the session started with. Only where
  // the RESET took effect (the setting is at the server's reset value) is it put back.
  std::string sql;
  auto restore = [&](const std::string& name, const std::string& value) {
    sql += "SELECT pg_catalog.set_config(name, " + quote_literal(value) +
           ", false) FROM pg_catalog.pg_settings WHERE name = " + quote_literal(name) +
           " AND setting IS NOT DISTINCT FROM reset_val;";
  };
  for (const auto& c : changes) {
    for (const auto& [name, value] : sent_params_) {
      if (!synced_reported(name) || c.value) continue;
      if (c.reset_all || canonical_parameter(c.name) == name) restore(name, value);
    }
  }
  return sql;
}

awaitable<bool> Session::control_transaction(const router::Route& route, const Request& req) {
  using router::TxnControl;
  const bool ends = route.txn == TxnControl::kCommit || route.txn == TxnControl::kRollback;
  // BEGIN waits for the statement that picks the shard (transaction pooling would
  // otherwise pin the transaction to whatever shard BEGIN happened to reach); COMMIT or
  // ROLLBACK of a transaction no shard has seen is answered here too.
  const bool local =
      !backends_.active && req.lone &&
      (route.txn == TxnControl::kBegin
           ? txn_.state() == txn::State::kIdle && transaction_status() == proto::txn_status::kIdle
           : ends && txn_.deferred());
  if (local) {
    if (!co_await drain()) co_return true;
    std::string answer;
    if (route.txn == TxnControl::kBegin) {
      std::string begin;
      if (req.simple)
        begin = pending_;
      else
        proto::Query{statements_.unnamed().empty() ? std::string_view("BEGIN")
                                                   : std::string_view(statements_.unnamed())}
            .write(begin);
      txn_.defer(std::move(begin));
      proto::CommandComplete{"BEGIN"}.write(answer);
    } else {
      txn_.end();
      hints_.local = {};
      proto::CommandComplete{route.txn == TxnControl::kCommit ? "COMMIT" : "ROLLBACK"}.write(
          answer);
    }
    std::string out;
    if (req.simple) {
      out += answer;
      out += proto::ready_for_query(transaction_status());
    } else {
      answer_extended(answer, out);  // ends with ReadyForQuery at the Sync
    }
    pending_.clear();
    co_await write_client(out);
    co_return true;
  }
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
    co_await executor::finish_distributed(*this, route.txn == TxnControl::kCommit, req.simple);
    pending_.clear();
    co_return true;
  }
  co_return false;
}

awaitable<void> Session::forward(int target, char boundary) {
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
      co_await fail(
          Failure::kRefused,
          proto::error(sqlstate::kFeatureNotSupported,
                       "this transaction has savepoints on shard " +
                           config_.shards[backends_.active->shard].name +
                           " and the statement needs shard " + config_.shards[target].name,
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
  prepare_request(*link, joins_transaction, boundary);
  co_await write_server(link, pending_);
  pending_.clear();
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
  prepare_request(*link, false, boundary);
  rest = pending_;
  if (write_server_now(link, rest)) {
    rest = {};
    pending_.clear();
  }
  return true;
}

void Session::prepare_request(Link& link, bool joins_transaction, char boundary) {
  auto& replies = link.lease->replies;
  // Where the transaction's snapshot on this shard is taken (txn::Snapshots).
  if (txn_.state() != txn::State::kIdle)
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
  if (txn_.deferred() && binds_or_runs(pending_)) {
    // The client's BEGIN, answered earlier by pgshard, opens the transaction here.
    link.prelude += txn_.take_deferred();
    replies.expect_ready(Owner::kOwn);
  }
  // What the server will owe, pushed before anything is written so the reader never hands
  // the server back while this request is on its way.
  const bool transaction_pooled = user_->pool_mode == config::PoolMode::kTransaction;
  if (transaction_pooled)
    statements_.map(pending_, *link.lease);
  else if (statements_.has_injected())
    statements_.expect_injected(pending_, *link.lease);
  open_extended_ = replies.expect_batch(pending_, Owner::kClient);
  if (transaction_pooled && boundary == proto::msg::kFlush && !binds_or_runs(pending_)) {
    // A prepare-only batch ending in Flush (asyncpg, JDBC) gets a Sync pgshard hides, so
    // the server is left idle and the statement's Bind can go to the shard its key names.
    proto::write_empty(pending_, proto::msg::kSync);
    replies.expect_ready(Owner::kClientHiddenSync);
    open_extended_ = false;
  }
  if (transaction_pooled) pending_.insert(0, statements_.take_prefix());
  // pgshard's closing statement goes only where the client awaits a ReadyForQuery (its
  // request ends in Sync or is a Query): its ReadyForQuery stands in for the client's. After
  // a Flush the client awaits none (a stray one desynchronises it: asyncpg then read the
  // next statement's rows as this one's), and a batch that only prepares ran no function.
  const bool ends_ready = boundary != proto::msg::kFlush;
  if (settings_unknown_ && !pinned_ && !open_extended_ && ends_ready && runs_something(pending_)) {
    // What a function set with set_config(…, false) or SET inside it: the server's
    // session settings, read after the client's statement.
    // (role is not in pg_settings: a role taken shows as current_user.)
    if (full_check_)
      finish_sql_ +=
          "SELECT name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings "
          "WHERE source = 'session' UNION ALL ";
    finish_sql_ += "SELECT 'role', current_user::text WHERE current_user <> session_user;";
    checking_settings_ = true;
    checked_settings_.clear();
  }
  if (!finish_sql_.empty() && !open_extended_ && ends_ready) {
    // The request ends with pgshard's statement, whose ReadyForQuery is the client's.
    replies.hide_last_client_ready();
    proto::Query{finish_sql_}.write(pending_);
    replies.expect_ready(Owner::kOwnFinishing);
    finish_sql_.clear();
  }
  if (!link.prelude.empty()) {
    // pgshard's own settings go first, in the same write.
    pending_.insert(0, link.prelude);
    link.prelude.clear();
  }
}

void Session::check_snapshots() {
  if (txn_.state() == txn::State::kIdle || txn_.failed()) {
    if (txn_.state() == txn::State::kIdle) txn_.snapshots.clear();
    return;
  }
  const auto isolation = client_params_.find("default_transaction_isolation");
  if (!txn_.one_snapshot(isolation == client_params_.end() ? "" : isolation->second)) return;
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

awaitable<void> Session::flush_copy() {
  if (backends_.active) {
    auto link = backends_.active;
    co_await write_server(link, pending_);
  }
  pending_.clear();
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
  if (link == backends_.active && can_detach(*link)) {
    error_code ignored;
    link->lease->socket().cancel(ignored);
  }
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

void Session::answer_extended(std::string_view answer, std::string& out) {
  // pgshard answers an extended-protocol batch itself (EXPLAIN (ROUTE)): every message
  // gets the reply PostgreSQL would send. `answer` is RowDescription, rows, CommandComplete.
  auto first = proto::decode_frame(answer);
  std::string_view desc =
      first.status == proto::DecodeStatus::kFrame && first.frame.type == proto::msg::kRowDescription
          ? answer.substr(0, first.consumed)
          : std::string_view();
  std::string_view rows = answer.substr(desc.size());
  std::vector<int32_t> param_types;
  for (const auto m : proto::frames(pending_)) {
    const auto& f = m.frame;
    switch (f.type) {
      case proto::msg::kParse:
        if (auto p = proto::Parse::parse(f.body)) param_types = p->param_types;
        proto::write_empty(out, proto::msg::kParseComplete);
        break;
      case proto::msg::kBind:
        proto::write_empty(out, proto::msg::kBindComplete);
        break;
      case proto::msg::kDescribe:
        if (auto dsc = proto::Describe::parse(f.body); dsc && dsc->kind == 'S')
          proto::ParameterDescription{param_types}.write(out);
        if (desc.empty())
          proto::write_empty(out, proto::msg::kNoData);
        else
          out.append(desc);
        break;
      case proto::msg::kExecute:
        out.append(rows);
        break;
      case proto::msg::kClose:
        proto::write_empty(out, proto::msg::kCloseComplete);
        break;
      case proto::msg::kSync:
        out += proto::ready_for_query(transaction_status());
        break;
      default:
        break;
    }
  }
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
  if (pools_.empty()) pools_.resize(config_.shards.size(), nullptr);
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

awaitable<bool> Session::attach(int shard) {
  if (attached_now(shard)) co_return true;
  auto& pool = pool_of(shard);
  Waiting waiting(*this, "a pooled server (attach)");
  // A wait for a busy pool ends when the client leaves: the session may hold servers of
  // other shards in its transaction, which must not stay locked until pool_wait.
  std::shared_ptr<ClientWatch> watch;
  asio::cancellation_signal gone;  // outlives the watch: stop_watch below waits for its end
  if (!pool.lends_now()) {
    watch = std::make_shared<ClientWatch>(worker_.executor());
    asio::co_spawn(worker_.executor(),
                   watch_client(watch, [&gone] { gone.emit(asio::cancellation_type::terminal); }),
                   asio::detached);
  }
  if (watch) pool_waiting_ = PoolWaiting{shard, &pool, &gone};
  // (A transaction that holds a server: BEGIN alone, deferred, holds none and waits.)
  auto got = co_await pool.acquire(watch ? gone.slot() : asio::cancellation_slot(),
                                   backends_.in_transaction_besides(-1));
  pool_waiting_.reset();
  if (watch) co_await stop_watch(*watch);
  // A deadlock victim while it waited: 40P01, even if a server came at the last moment.
  if (!deadlock_detail_.empty()) got = "deadlock detected";
  if (auto* err = std::get_if<std::string>(&got)) {
    spdlog::warn("{}: {}", prefix(), *err);
    std::string out;
    proto::write_error(
        out, deadlock_detail_.empty()
                 ? failure_error(Failure::kNoServer, *err)
                 : proto::error(sqlstate::kDeadlockDetected, "deadlock detected",
                                std::exchange(deadlock_detail_, {}), "Retry the transaction."));
    out += proto::ready_for_query(transaction_status());
    co_await write_client(out);
    co_return false;
  }
  start_relay(std::move(std::get<pool::Lease>(got)), shard);
  co_return true;
}

// ---- server side ----

std::string Session::sync_prelude(pool::ServerConn& conn) {
  // Most clients share their settings, so a server last synced for an identical set needs
  // no comparison at all.
  std::string out;
  if (conn.synced_fingerprint == params_fingerprint_) return out;
  conn.synced_fingerprint = params_fingerprint_;
  const auto sync = sync_statements(client_params_, conn.params);
  if (sync.empty()) return out;
  spdlog::debug("{}: S-{}: applying settings: {}", prefix(), conn.id(), sync);
  for (const auto& [k, v] : client_params_) conn.params[k] = v;
  std::erase_if(conn.params, [&](const auto& kv) {
    return !client_params_.contains(kv.first) && !pool::is_reported_parameter(kv.first);
  });
  proto::Query{sync}.write(out);
  conn.replies.expect_ready(pool::Replies::Owner::kOwn);
  return out;
}

bool Session::session_pooled() const {
  return pinned_ || (user_ && user_->pool_mode == config::PoolMode::kSession);
}

bool Session::can_detach(const Link& link) const {
  return !session_pooled() && !open_extended_ && !writing_server_ && link.lease &&
         link.lease->replies.empty() && link.lease->status == 'I';
}

bool Session::idle() const {
  return owed() == 0 && !open_extended_ && !writing_server_ && transaction_status() == 'I';
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

void Session::release(std::shared_ptr<Link> link) {
  // By value: callers pass the active link, which this resets.
  backends_.release(link, link == backends_.active && open_extended_);
}

void Session::server_lost(const std::shared_ptr<Link>& link, std::string& out) {
  auto& conn = *link->lease;
  conn.broken = true;
  pipelined_settings_.clear();  // those requests get no ReadyForQuery from this server
  const auto& shard = config_.shards[link->shard].name;
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
  const bool tell_now = link == backends_.active && (owed_client > 0 || open_extended_);
  if (in_txn) txn_.lose(message + "; the transaction was rolled back", tell_now);
  if (tell_now) {
    proto::write_error(
        out, proto::error(code, message, {},
                          in_txn ? "" : "the statement may or may not have run; retry it"));
    // Answer every outstanding Sync/Query so the client is back in step.
    for (int i = 0; i < std::max(owed_client, 1); ++i)
      out += proto::ready_for_query(in_txn ? proto::txn_status::kFailed : proto::txn_status::kIdle);
    open_extended_ = false;
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
    // Once the client has left, a server being reset is read until its reset is answered; any
    // other stops (it may never answer a request its client abandoned), and is discarded
    // unless it is idle and owes nothing.
    auto stop_for_gone_client = [&] {
      if (!client_gone_ || (link->resetting && !conn.broken)) return false;
      conn.broken = conn.broken || conn.status != 'I' || !conn.replies.empty();
      return true;
    };
    for (;;) {
      bool lost = false;
      if (link->done) break;
      if (link->borrowed) {
        // A multi-shard statement is using this server: wait until it is given back.
        co_await backends_.park(*link);
        continue;
      }
      // The client left while this server was lent or between reads: finish() found no read
      // to cancel, and an idle server would never answer one (it would keep its transaction,
      // and its locks, open for as long as pgshard runs).
      if (stop_for_gone_client()) break;
      {
        const error_code ec = std::get<0>(co_await conn.read_some());
        if (ec == asio::error::operation_aborted && !conn.broken) {
          if (link->done) break;
          if (link == backends_.active && can_detach(*link)) {
            release(link);
            break;
          }
          if (link->closing && conn.replies.own_owed() == 0) break;
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
                        config_.shards[link->shard].name);
          lost = true;
        }
      }
      if (lost) {
        // A session-pooled or pinned client's server session is its session (settings,
        // prepared statements, temporary tables, LISTEN): ended by the server
        // (pg_terminate_backend, the shard shutting down), the client's ends with the
        // server's FATAL, as on PostgreSQL (before: the next statement ran on a fresh server
        // without them).
        std::string fatal;
        if (!client_gone_ && !conn.replies.fatal.empty() &&
            (pinned_ || user_->pool_mode == config::PoolMode::kSession))
          proto::write_error(fatal, proto::fatal(conn.replies.fatal_code.empty()
                                                     ? std::string(sqlstate::kAdminShutdown)
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
        break;
      }
      if (!relay.empty() && !client_gone_ && !wrote_client_now(relay) &&
          !co_await write_client(relay))
        conn.broken = true;
      conn.rbuf.consume(used);
      if (stop_for_gone_client()) break;
      if (conn.replies.client_owed() == 0 && !open_extended_) {
        last_activity_ = coarse_now();
        drained_.notify_all();
        if (terminate_requested_) maybe_close_for_shutdown();  // (its statement is answered)
      }
      if (link->closing && conn.replies.empty()) {
        if (client_gone_ && conn.replies.tag == "SELECT 1") {
          spdlog::debug("{}: S-{}: has a temporary schema: closed, not reused", prefix(),
                        conn.id());
          conn.broken = true;
        }
        break;
      }
      if (link == backends_.active && can_detach(*link)) {
        release(link);
        break;
      }
    }
    // Hand the server back once the request writer is done with it, and once a
    // multi-shard statement that borrowed it has given it back (the link can end while it
    // is lent: the client left, the transaction ended).
    while (writing_server_) co_await server_write_done_.wait();
    co_await backends_.given_back(*link);
    if (conn.status != 'I' || !conn.replies.empty()) conn.broken = true;
    if (!link->done) {
      link->done = true;
      if (backends_.forget(*link)) open_extended_ = false;
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
    if (state_ == State::kClosing || client_gone_ || next_relay_.waiting()) break;
    self.reset();  // a waiting relay must not keep its session alive
    worker_.parked_relays().park(*this);
    co_await next_relay_.wait();
    link = std::move(next_link_);
    if (link) self = shared_from_this();
  }
}

void Session::reported(pool::ServerConn& conn, std::string_view name, std::string_view value) {
  if (name == "session_authorization" && user_ && value != user_->name && !pinned_) {
    // The server now acts as another user (SET SESSION AUTHORIZATION, maybe in a function):
    // the client keeps its servers, and they are reset before anyone else gets them.
    pinned_ = true;
    spdlog::debug("{}: pinned to its servers: session authorization {}", prefix(), log_safe(value));
  }
  if (!synced_reported(name)) return;
  client_params_[std::string(name)] = std::string(value);
  params_fingerprint_ = fingerprint(client_params_);
  conn.synced_fingerprint = params_fingerprint_;
}

void Session::own_statement_failed(pool::ServerConn& conn) {
  // (A settings check after the client's statement failed its transaction fails too.)
  if (conn.replies.error_code == sqlstate::kInFailedSqlTransaction) return;
  spdlog::warn("{}: shard {} rejected pgshard's statement: {}", prefix(), conn.target().shard_name,
               conn.replies.error);
}

bool Session::client_ready(pool::ServerConn& conn) {
  copy_in_ = false;
  if (std::exchange(ddl_running_, false)) schema_changed();
  const char status = conn.status;
  // Snapshots taken by the request were taken before now (txn::Snapshots).
  if (!txn_.snapshots.empty()) txn_.snapshots.replied(worker_.shared().visibility.last_begun());
  // Settings the client changed take effect once its statement (or transaction) has
  // succeeded; a failure or ROLLBACK drops them, as PostgreSQL does.
  if (!pending_settings_.empty() && status == proto::txn_status::kFailed) settings_failed_ = true;
  if (status == proto::txn_status::kIdle) {
    if (!pending_settings_.empty() && !settings_failed_) apply_settings(conn);
    pending_settings_.clear();
    settings_failed_ = false;
  }
  if (std::exchange(checking_settings_, false) && status == proto::txn_status::kIdle) {
    const auto outcome = adopt_checked_settings(conn);
    if (full_check_) worker_.functions_checked(checked_functions_, outcome);
    checked_functions_.clear();
    settings_unknown_ = false;
    full_check_ = false;
  }
  // The requests pipelined behind this one: their SETs are judged from now on.
  for (auto& p : pipelined_settings_) --p.ahead;
  while (!pipelined_settings_.empty() && pipelined_settings_.front().ahead <= 0) {
    auto& s = pipelined_settings_.front().settings;
    pending_settings_.insert(pending_settings_.end(), s.begin(), s.end());
    pipelined_settings_.pop_front();
  }
  txn_.server_ready(status);
  if (status != proto::txn_status::kIdle) return true;
  if (txn_.state() == txn::State::kIdle) hints_.local = {};
  return !txn_.deferred();
}

void Session::finishing_row(pool::ServerConn&, std::string_view body) {
  if (!checking_settings_) return;
  auto row = proto::DataRow::parse(body);
  if (row && row->values.size() == 2 && row->values[0] && row->values[1])
    checked_settings_.emplace_back(*row->values[0], *row->values[1]);
}

runtime::SettingsCheck Session::adopt_checked_settings(pool::ServerConn& conn) {
  // The server's session settings after a function ran: what differs from the client's
  // becomes the client's (it follows it, and no other client gets it: the server is synced
  // to its next client's settings). A role taken inside a function pins the client.
  auto outcome = runtime::SettingsCheck::kUnchanged;
  bool changed = false;
  for (const auto& [name, value] : checked_settings_) {
    if (pool::is_reported_parameter(name)) continue;  // ParameterStatus told already
    if (name == "role" || name == "session_authorization") {
      if (!pinned_) spdlog::debug("{}: pinned: a function changed {}", prefix(), name);
      pinned_ = true;
      outcome = runtime::SettingsCheck::kChanged;
      continue;
    }
    auto it = client_params_.find(name);
    if (it != client_params_.end() && it->second == value) {
      // The same value a function set earlier: this call may have set it again.
      if (function_settings_.contains(name) && outcome == runtime::SettingsCheck::kUnchanged)
        outcome = runtime::SettingsCheck::kUnknown;
      continue;
    }
    client_params_[name] = value;
    conn.params[name] = value;
    function_settings_.insert(name);
    changed = true;
    outcome = runtime::SettingsCheck::kChanged;
  }
  checked_settings_.clear();
  if (changed) {
    params_fingerprint_ = fingerprint(client_params_);
    conn.synced_fingerprint = 0;
  }
  return outcome;
}

void Session::apply_settings(pool::ServerConn& conn) {
  // Reported settings (TimeZone, DateStyle...) follow ParameterStatus; the rest are kept
  // here and set on whichever server the client gets next.
  auto set = [&](const std::string& name, const std::optional<std::string>& value) {
    if (pool::is_reported_parameter(name)) return;
    if (value) {
      client_params_[name] = *value;
      conn.params[name] = *value;
      return;
    }
    // RESET goes back to the value the client connected with, else the server default.
    conn.params.erase(name);
    if (auto it = startup_params_.find(name); it != startup_params_.end())
      client_params_[name] = it->second;
    else
      client_params_.erase(name);
  };
  for (const auto& c : pending_settings_) {
    if (c.reset_all) {
      std::vector<std::string> names;
      for (const auto& [k, v] : client_params_) names.push_back(k);
      for (const auto& k : names) set(k, std::nullopt);
    } else {
      set(canonical_parameter(c.name), c.value);
    }
  }
  params_fingerprint_ = fingerprint(client_params_);
  conn.synced_fingerprint = 0;  // compare settings on the next use
}

awaitable<void> Session::fail(Failure f, std::string message, std::string hint) {
  co_await fail(f, failure_error(f, std::move(message), std::move(hint)), proto::msg::kSync);
}

awaitable<void> Session::fail(Failure f, protocol::ErrorInfo e, char boundary) {
  // What the server has sent the client so far reaches it first.
  if (!co_await drain()) co_return;
  spdlog::info("{}: {}: {}", prefix(), to_string(f), e.message);
  const auto r = rule(f);
  if (r.server == ServerFate::kDiscard && backends_.active && backends_.active->lease)
    backends_.active->lease->broken = true;
  if (r.fatal) {
    e.severity = "FATAL";
    co_await send_fatal(e);
    co_return;
  }
  if (r.fails_transaction) fail_transaction();
  // As PostgreSQL fails a request: an extended batch without Sync skips to the Sync.
  std::string out;
  proto::write_error(out, e);
  if (boundary == proto::msg::kFlush)
    discard_until_sync_ = true;
  else
    out += proto::ready_for_query(transaction_status());
  pending_.clear();
  co_await write_client(out);
}

void Session::fail_transaction() {
  // An error pgshard gives inside a transaction block fails the transaction on every shard
  // it uses, as an ERROR from PostgreSQL would: nothing of it may commit.
  if (txn_.state() != txn::State::kIdle) txn_.fail();
}

awaitable<bool> Session::drain() {
  // Until the server has answered everything sent so far. (Not until an open batch ends:
  // that takes the client's Sync, and nobody reads the client meanwhile.)
  auto busy = [&] {
    return backends_.active && backends_.active->lease && !backends_.active->lease->replies.empty();
  };
  if (!busy()) co_return !client_gone_;
  if (client_gone_) co_return false;
  if (open_extended_) {
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

// ---- ending ----

awaitable<void> Session::finish() {
  state_ = State::kClosing;
  client_gone_ = true;
  for (auto& link : backends_.all()) {
    if (link->done || !link->lease) continue;
    auto& conn = *link->lease;
    if (conn.status != 'I' || !conn.replies.empty() || open_extended_) {
      // Left mid-transaction or mid-request: never hand this server to someone else.
      conn.broken = true;
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
      std::erase_if(conn.params,
                    [](const auto& kv) { return !pool::is_reported_parameter(kv.first); });
      conn.synced_fingerprint = 0;
      auto [ec, n] = co_await asio::async_write(conn.socket(), asio::buffer(q), use_nothrow);
      if (ec) conn.broken = true;
      continue;
    }
    link->closing = true;
    error_code ignored;
    conn.socket().cancel(ignored);
  }
  wake_relay(nullptr);  // (with no server: it ends)
  spdlog::info("{}: closing", prefix());
}

void Session::maybe_close_for_shutdown() {
  if (closing_for_shutdown_ || client_gone_ || state_ != State::kReady) return;
  // A shutdown waits for the client's transaction to end; pg_terminate_backend only for the
  // statement running (cancelled), and ends a transaction in progress (rolled back).
  const bool quiet = owed() == 0 && !open_extended_ && !writing_server_;
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
  if (owed() > 0) cancel_running([] {});
  maybe_close_for_shutdown();
}

awaitable<bool> Session::signal_client(const router::Route& route, const Request& req) {
  // pg_terminate_backend(pid) / pg_cancel_backend(pid) of a pid pgshard gave a client: that
  // client (a server's pid goes to the server, as before).
  const auto& call = *route.signal_call;
  int64_t pid = call.pid;
  std::optional<std::string> text;
  bool binary = false;  // the Bind asks for its result in binary (asyncpg)
  for (const auto m : proto::frames(pending_))
    if (m.frame.type == proto::msg::kBind)
      if (auto b = proto::Bind::parse(m.frame.body)) {
        if (call.param > 0) text = router::param_text(*b, call.param, config::KeyType::kInt8);
        binary = !b->result_formats.empty() && b->result_formats[0] == 1;
      }
  if (call.param > 0) {
    if (!text) co_return false;
    pid = std::strtoll(text->c_str(), nullptr, 10);
  }
  if (pid <= 0 || pid > INT32_MAX) co_return false;
  const auto pid32 = static_cast<int32_t>(pid);
  if (call.terminate && pid32 == key_.pid) {
    co_await fail(Failure::kAdminShutdown, "terminating connection due to administrator command");
    co_return true;
  }
  router::Route answer;
  answer.hints = route.hints;
  if (pid32 == key_.pid) {  // cancelling itself: this very statement, as on PostgreSQL
    answer.kind = router::RouteKind::kError;
    answer.error =
        proto::error(sqlstate::kQueryCanceled, "canceling statement due to user request");
    co_await answer_locally(answer, req);
    co_return true;
  }
  const auto done = runtime::CancelRegistry::instance().signal(pid32, call.terminate, user_->name);
  if (!done) co_return false;
  if (!*done) {
    answer.kind = router::RouteKind::kError;
    answer.error = proto::error(sqlstate::kInsufficientPrivilege,
                                std::string("permission denied to ") +
                                    (call.terminate ? "terminate" : "cancel") + " process",
                                "Only roles with privileges of the role whose process is being " +
                                    std::string(call.terminate ? "terminated" : "canceled") +
                                    " or with privileges of the \"pg_signal_backend\" role may " +
                                    (call.terminate ? "terminate" : "cancel") + " this process.");
  } else {
    answer.kind = router::RouteKind::kAnswer;
    proto::RowDescription desc;
    desc.fields.push_back({call.terminate ? "pg_terminate_backend" : "pg_cancel_backend", 0, 0, 16,
                           1, -1, static_cast<int16_t>(binary ? 1 : 0)});
    desc.write(answer.answer);
    proto::DataRow{{std::string_view(binary ? "\x01" : "t", 1)}}.write(answer.answer);
    proto::CommandComplete{"SELECT 1"}.write(answer.answer);
  }
  co_await answer_locally(answer, req);
  co_return true;
}

void Session::request_shutdown() {
  shutdown_requested_ = true;
  if (state_ != State::kReady) {
    stream_.close();
    return;
  }
  maybe_close_for_shutdown();
}

std::string Session::describe() const {
  std::string out = prefix() + ": " + to_string(state_) + ", waiting on " + waiting_on_ +
                    ", in flight " + std::to_string(owed()) +
                    (open_extended_ ? ", open batch" : "") + ", txn " + transaction_status() +
                    " (" + txn::to_string(txn_.state()) + ")";
  if (backends_.active && backends_.active->lease)
    out += ", server S-" + std::to_string(backends_.active->lease->id()) + " (" +
           config_.shards[static_cast<std::size_t>(backends_.active->shard)].name + ", " +
           backends_.active->lease->status + ")";
  out += ", kept " + std::to_string(backends_.kept_count()) + ", txn servers " +
         std::to_string(backends_.participant_count());
  out += ", relays " + std::to_string(relays_) + (writing_server_ ? ", writing to a server" : "") +
         (client_writing_ ? ", writing to the client" : "") + (aborting_ ? ", aborting" : "");
  for (const auto& link : backends_.all()) {
    if (!link->lease) continue;
    out += ", S-" + std::to_string(link->lease->id()) + " (" +
           config_.shards[static_cast<std::size_t>(link->shard)].name + ", " + link->lease->status +
           (link->borrowed ? ", lent" : "") + (link->parked ? ", parked" : "") +
           (link->done ? ", done" : "") + (link->closing ? ", closing" : "") + ")";
  }
  return out;
}

runtime::ClientRow Session::client_row() const {
  runtime::ClientRow r;
  r.id = id_;
  r.user = user_ ? user_->name : std::string(identity_.startup.param("user"));
  r.database = identity_.database;
  const bool busy = owed() > 0 || backends_.active || backends_.participant_count() > 0 ||
                    !fan_out_servers_.empty();
  r.state = state_ != State::kReady ? (state_ == State::kClosing ? "closing" : "login")
            : busy                  ? "active"
                                    : "idle";
  if (auto colon = peer_.rfind(':'); colon != std::string::npos) {
    r.addr = peer_.substr(0, colon);
    r.port = static_cast<uint16_t>(std::atoi(peer_.c_str() + colon + 1));
  }
  if (auto it = client_params_.find("application_name"); it != client_params_.end())
    r.application_name = it->second;
  r.tls = stream_.tls();
  r.txn = transaction_status();
  r.waiting_on = waiting_on_;
  r.connected = connected_;
  r.last_request = last_activity_;
  return r;
}

std::vector<const pool::ServerConn*> Session::servers() const {
  std::vector<const pool::ServerConn*> out;
  for (const auto& link : backends_.all())
    if (link->lease && !link->done) out.push_back(&*link->lease);
  for (const auto* conn : fan_out_servers_)
    if (std::find(out.begin(), out.end(), conn) == out.end()) out.push_back(conn);
  return out;
}

std::optional<txn::WaitingTxn> Session::waiting_txn() const {
  if (txn_.state() != txn::State::kOpenMulti) return std::nullopt;
  txn::WaitingTxn t;
  t.session = id_;
  t.serial = txn_.serial();
  t.began = txn_.began();
  t.request = requests_;
  t.busy = !fan_out_servers_.empty() || pool_waiting_;
  for (const auto& link : backends_.all()) {
    if (!link->lease) continue;
    t.servers.emplace_back(link->shard, link->lease->pid());
    t.busy = t.busy || link->lease->replies.client_owed() > 0;
  }
  if (pool_waiting_) {
    auto holders = pool_waiting_->pool->holders();
    t.pool_wait = txn::PoolWait{pool_waiting_->shard, std::move(holders.pids), holders.spare};
  }
  return t;
}

void Session::deadlock_victim(const txn::Victim& v) {
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
    cancel_running([] {});
  // As PostgreSQL aborts a deadlock victim, the whole transaction fails now (the client
  // must ROLLBACK; COMMIT answers ROLLBACK) and, for a statement on one server, every shard
  // rolls back at once so the others proceed without waiting for the client.
  txn_.fail();
  if (!relayed || aborting_) return;
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
  for (const auto& link : backends_.all())
    if (link->lease && !link->done && !link->borrowed && link->lease->replies.empty() &&
        link->lease->status != proto::txn_status::kIdle)
      co_await run_ours(link, "ROLLBACK");
  aborting_ = false;
  aborted_.notify_all();
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

void Session::force_close() {
  stream_.close();
  for (auto& link : backends_.all())
    if (link->lease) link->lease->close();
}

}  // namespace pgshard::session
