// The listener and its workers: one io_context per thread; sessions and the server
// connections they use live on the same worker, so the data path takes no locks.
#include "proxy/server/server.hpp"

#include <malloc.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <future>
#include <limits>

#include "proxy/admin/console.hpp"
#include "proxy/admin/http.hpp"
#include "proxy/executor/executor.hpp"
#include "proxy/server/tls.hpp"
#include "proxy/session/session.hpp"
#include "proxy/txn/recovery.hpp"

namespace pgshard::server {

namespace {

// A file descriptor closed when its owner goes (a handler dropped before it ran).
class OwnedFd {
 public:
  explicit OwnedFd(int fd) : fd_(fd) {}
  OwnedFd(OwnedFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  OwnedFd& operator=(OwnedFd&&) = delete;
  ~OwnedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  void disown() { fd_ = -1; }

 private:
  int fd_;
};

}  // namespace

Worker::Worker(int index, Shared& shared)
    : index_(index), shared_(shared), cache_(shared.config().router_cache_size, &shared.config()) {}

Worker::~Worker() {
  // Sessions still suspended inside the io_context hold leases; destroying the context
  // returns them, so the pools must outlive it, but idle sockets must close first.
  for (auto& [key, p] : pools_) p->close_all();
  sessions_.clear();
  guard_.reset();
  ctx_.reset();
}

pool::Pool& Worker::pool(int shard, const config::User& user) {
  auto key = std::make_pair(shard, pool_user_key(user));
  auto it = pools_.find(key);
  if (it != pools_.end()) return *it->second;
  const auto& cfg = config();
  const auto& s = cfg.shards[static_cast<std::size_t>(shard)];
  pool::BackendTarget t;
  t.shard = shard;
  t.shard_name = s.name;
  t.host = s.primary.host;
  t.port = s.primary.port;
  t.user = s.primary.user.empty() ? user.name : s.primary.user;
  t.password = s.primary.user.empty() ? user.plaintext.value_or("") : s.primary.password;
  t.database = !user.database.empty()       ? user.database
               : s.primary.database.empty() ? t.user
                                            : s.primary.database;
  auto& p = make_pool(key, std::move(t), s.pool_size);
  p.count_requests(cfg.admin.stats);
  p.pause(paused_.count(shard) > 0);
  return p;
}

pool::Pool& Worker::make_pool(const std::pair<int, std::string>& key, pool::BackendTarget target,
                              int limit) {
  const auto& cfg = config();
  const int workers =
      std::max({cfg.listen.workers, static_cast<int>(shared_.workers.size()), index_ + 1});
  auto& shared = shared_.pools.get(key, std::max(1, limit), workers);
  auto p = std::make_unique<pool::Pool>(executor(), index_, shared, std::move(target),
                                        cfg.timeouts.pool_wait, cfg.timeouts.connect);
  auto& ref = *p;
  pools_.emplace(key, std::move(p));
  return ref;
}

std::shared_ptr<const merge::ColumnCollations> Worker::column_collations(
    int shard, uint64_t generation) const {
  auto it = column_collations_.find(shard);
  if (it == column_collations_.end() || it->second.generation != generation ||
      Clock::now() - it->second.read_at > std::chrono::seconds(60))
    return nullptr;
  return it->second.columns;
}

void Worker::set_column_collations(int shard, uint64_t generation,
                                   std::shared_ptr<const merge::ColumnCollations> c) {
  column_collations_[shard] = {std::move(c), generation, Clock::now()};
}

bool Worker::functions_keep_settings(const std::vector<std::string>& names) {
  const uint64_t generation = executor::catalog_generation();
  if (generation != function_generation_ ||
      Clock::now() - function_checks_since_ > std::chrono::minutes(10)) {
    function_checks_.clear();
    function_generation_ = generation;
    function_checks_since_ = Clock::now();
  }
  for (const auto& name : names)
    if (auto it = function_checks_.find(name);
        it == function_checks_.end() || it->second < kTrustedAfter)
      return false;
  return true;
}

void Worker::functions_checked(const std::vector<std::string>& names, SettingsCheck outcome) {
  if (outcome == SettingsCheck::kUnknown) return;
  for (const auto& name : names) {
    int& n = function_checks_[name];
    n = outcome == SettingsCheck::kChanged ? -1 : (n < 0 ? n : n + 1);
  }
}

pool::Pool& Worker::directory_pool(int table, const config::User& user) {
  auto key = std::make_pair(-1 - table, user.name);
  auto it = pools_.find(key);
  if (it != pools_.end()) return *it->second;
  const auto& url = *config().sharded_tables[static_cast<std::size_t>(table)].directory_url;
  pool::BackendTarget t;
  t.shard = -1;
  t.shard_name = "directory of " + config().sharded_tables[static_cast<std::size_t>(table)].table;
  t.host = url.host;
  t.port = url.port;
  t.user = url.user.empty() ? user.name : url.user;
  t.password = url.user.empty() ? user.plaintext.value_or("") : url.password;
  t.database = url.database.empty() ? t.user : url.database;
  auto& p = make_pool(key, std::move(t), kDirectoryPoolSize);
  p.count_requests(config().admin.stats);
  return p;
}

pool::Pool& Worker::gate_pool() {
  const auto key = std::make_pair(std::numeric_limits<int>::min(), std::string());
  if (auto it = pools_.find(key); it != pools_.end()) return *it->second;
  const auto& shard = config().shards.front();
  const auto login = txn::maintenance_login(config(), shard);
  pool::BackendTarget t;
  t.shard = -1;
  t.shard_name = "visibility coordinator (shard " + shard.name + ")";
  t.host = shard.primary.host;
  t.port = shard.primary.port;
  t.user = login.user;
  t.password = login.password;
  // Where every instance takes the lock, apart from the application's database.
  t.database = "postgres";
  auto& p = make_pool(key, std::move(t), kGatePoolSize);
  p.count_requests(false);
  return p;
}

std::string Worker::pool_user_key(const config::User& user) {
  return user.database.empty() ? user.name : user.name + kDatabaseSeparator + user.database;
}

void Worker::drop_pools(const config::User& user) {
  const std::string key = pool_user_key(user);
  std::erase_if(pools_, [&](const auto& entry) {
    const auto stats = entry.second->stats();
    return entry.first.first >= 0 && entry.first.second == key && stats.total == 0 &&
           stats.waiting == 0;
  });
}

void Worker::close_idle_other_databases() {
  for (auto& [key, p] : pools_)
    if (key.first >= 0 && key.second.find(kDatabaseSeparator) != std::string::npos)
      p->prune(config::Millis(0));
}

awaitable<std::optional<std::map<std::string, std::string>>> Worker::server_params(
    const config::User& user, std::string* error) {
  // What a server tells this user (is_superuser, ...): never another user's login.
  for (std::size_t i = 0; i < config().shards.size(); ++i)
    if (auto& p = pool(static_cast<int>(i), user); !p.server_params().empty())
      co_return p.server_params();
  // Nothing cached: log in to the first shard that answers.
  for (std::size_t i = 0; i < config().shards.size(); ++i) {
    auto& p = pool(static_cast<int>(i), user);
    auto got = co_await p.acquire();
    if (auto* err = std::get_if<std::string>(&got)) {
      *error = *err;
      continue;
    }
    co_return p.server_params();
  }
  co_return std::nullopt;
}

admin::WorkerSnapshot Worker::snapshot() const {
  admin::WorkerSnapshot out;
  out.worker = index_;
  std::map<const pool::ServerConn*, uint64_t> held;  // server -> the client holding it
  for (const auto& [ptr, weak] : sessions_) {
    auto s = weak.lock();
    if (!s) continue;
    out.clients.push_back(s->client_row());
    for (const auto* conn : s->servers()) {
      held[conn] = s->id();
      out.clients.back().servers.push_back(conn->id());
    }
    if (auto t = s->waiting_txn()) {
      admin::TxnRow row{s->id(), out.clients.back().user, {}, t->busy ? "active" : "idle"};
      for (const auto& [shard, pid] : t->servers)
        row.shards.push_back(config().shards[static_cast<std::size_t>(shard)].name);
      out.transactions.push_back(std::move(row));
    }
  }
  auto server_row = [&](const pool::Pool& p, const pool::ServerConn& c, const char* state,
                        uint64_t client) {
    admin::ServerRow r;
    r.id = c.id();
    r.shard = p.target().shard;
    r.shard_name = p.target().shard_name;
    r.user = p.target().user;
    r.database = p.target().database;
    r.state = state;
    r.addr = p.target().host;
    r.port = p.target().port;
    r.pid = c.pid();
    r.client = client;
    r.txn = c.status;
    r.connected = c.connected_at;
    r.since = c.idle_since;
    return r;
  };
  for (const auto& [key, p] : pools_) {
    admin::PoolRow row;
    row.shard = key.first;
    row.shard_name = p->target().shard_name;
    row.user = key.second.substr(0, key.second.find(kDatabaseSeparator));
    row.host = p->target().host;
    row.port = p->target().port;
    row.database = p->target().database;
    row.stats = p->stats();
    row.counters = p->counters();
    row.health = p->health();
    for (const auto& [conn, client] : held)
      if (conn->target().shard == p->target().shard && conn->target().user == p->target().user) {
        ++row.clients;
        out.servers.push_back(server_row(*p, *conn, "active", client));
      }
    for (const auto& c : p->idle()) out.servers.push_back(server_row(*p, *c, "idle", 0));
    out.pools.push_back(std::move(row));
  }
  out.routes = routes_;
  out.paused.assign(paused_.begin(), paused_.end());
  out.cache_size = cache_.size();
  out.cache_hits = cache_.hits();
  out.cache_misses = cache_.misses();
  return out;
}

bool Worker::kill_client(uint64_t id) {
  for (auto& [ptr, weak] : sessions_)
    if (auto s = weak.lock(); s && s->id() == id) {
      s->force_close();
      return true;
    }
  return false;
}

void Worker::apply_config() {
  const auto& cfg = config();
  // Analyses depend on the map (reference tables): statements are analysed afresh.
  cache_ = router::AnalysisCache(cfg.router_cache_size, &cfg);
  for (auto& [key, p] : pools_) {
    if (key.first < 0) continue;  // directories: fixed size
    const int pool_size = cfg.shards[static_cast<std::size_t>(key.first)].pool_size;
    p->set_limits(std::max(1, pool_size), cfg.timeouts.pool_wait, cfg.timeouts.connect);
    p->count_requests(cfg.admin.stats);
  }
}

void Worker::pause(int shard, bool on) {
  for (int i = 0; i < static_cast<int>(config().shards.size()); ++i)
    if (shard < 0 || shard == i) on ? (void)paused_.insert(i) : (void)paused_.erase(i);
  for (auto& [key, p] : pools_)
    if (key.first >= 0 && (shard < 0 || key.first == shard)) p->pause(on);
}

void Worker::reconnect(int shard) {
  for (auto& [key, p] : pools_)
    if (key.first >= 0 && (shard < 0 || key.first == shard)) p->reconnect();
}

void Worker::kill_shard(int shard) {
  for (auto& [ptr, weak] : sessions_) {
    auto s = weak.lock();
    if (!s) continue;
    bool holds = shard < 0;
    for (const auto* conn : s->servers()) holds |= conn->target().shard == shard;
    if (holds && s->client_row().database != admin::kConsoleDatabase) s->force_close();
  }
  reconnect(shard);
}

void Worker::add(const std::shared_ptr<session::Session>& s) {
  sessions_[s.get()] = s;
  peak_sessions_ = std::max(peak_sessions_, sessions_.size());
}

void Worker::remove(session::Session* s) {
  // Its client is gone; until its last coroutine ends it is listed as ending (SIGUSR2).
  if (auto it = sessions_.find(s); it != sessions_.end()) {
    std::erase_if(ending_, [](const auto& kv) { return kv.second.expired(); });
    ending_[s] = it->second;
    sessions_.erase(it);
  }
}

bool Worker::drop_oldest_unheard(const session::Session* except) {
  // A silent connection first; else one whose login has taken over a second (a client
  // that stalls mid-authentication, e.g. never answering the SCRAM challenge).
  std::shared_ptr<session::Session> oldest;
  for (const bool silent : {true, false}) {
    for (auto& [ptr, weak] : sessions_)
      if (auto s = weak.lock(); s && s.get() != except &&
                                (silent ? s->unheard() : s->login_stalled()) &&
                                (!oldest || s->id() < oldest->id()))
        oldest = std::move(s);
    if (oldest) break;
  }
  if (!oldest) return false;
  oldest->drop_unheard();
  return true;
}

void Worker::begin_shutdown() {
  asio::post(*ctx_, [this] {
    for (auto& [ptr, weak] : sessions_)
      if (auto s = weak.lock()) s->request_shutdown();
  });
}

void Worker::dump_sessions() {
  asio::post(*ctx_, [this] {
    for (auto& [ptr, weak] : sessions_)
      if (auto s = weak.lock()) spdlog::info("{}", s->describe());
    // A session whose client left should end at once; one still here holds something.
    for (auto& [ptr, weak] : ending_)
      if (auto s = weak.lock()) spdlog::info("(client gone) {}", s->describe());
  });
}

std::vector<txn::WaitingTxn> Worker::waiting_txns() {
  return ask([this] {
           std::vector<txn::WaitingTxn> out;
           for (auto& [ptr, weak] : sessions_)
             if (auto s = weak.lock())
               if (auto t = s->waiting_txn()) {
                 t->worker = index_;
                 out.push_back(std::move(*t));
               }
           return out;
         })
      .value_or(std::vector<txn::WaitingTxn>{});
}

void Worker::cancel_victim(const txn::Victim& v) {
  asio::post(*ctx_, [this, v] {
    for (auto& [ptr, weak] : sessions_)
      if (auto s = weak.lock(); s && s->id() == v.txn.session) s->deadlock_victim(v);
  });
}

void Worker::force_close() {
  asio::post(*ctx_, [this] {
    for (auto& [ptr, weak] : sessions_)
      if (auto s = weak.lock()) s->force_close();
  });
}

awaitable<void> Worker::janitor() {
  asio::steady_timer timer(*ctx_);
  for (;;) {
    timer.expires_after(std::chrono::seconds(10));
    auto [ec] = co_await timer.async_wait(use_nothrow);
    if (ec) co_return;
    // Connections to other databases than the shards' own (template1, a client's) are not
    // kept idle long: PostgreSQL refuses CREATE DATABASE from a template, and DROP DATABASE,
    // while any session is connected to it.
    for (auto& [key, p] : pools_)
      p->prune(
          key.second.find(kDatabaseSeparator) == std::string::npos
              ? config().timeouts.server_idle
              : std::min<config::Millis>(config().timeouts.server_idle, std::chrono::seconds(5)));
    // After many clients left, give their memory back to the system: the allocator keeps
    // freed memory in its arenas otherwise, and RSS would stay at its peak.
    if (peak_sessions_ >= sessions_.size() + 256) {
      ::malloc_trim(0);
      peak_sessions_ = sessions_.size();
    }
  }
}

void Worker::start() {
  guard_.emplace(ctx_->get_executor());
  asio::co_spawn(*ctx_, janitor(), asio::detached);
  thread_ = std::thread([this] {
    try {
      ctx_->run();
    } catch (const std::exception& e) {
      spdlog::critical("worker {} stopped: {}", index_, e.what());
    }
  });
}

void Worker::stop() {
  guard_.reset();
  ctx_->stop();
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

Server::Server(std::shared_ptr<const config::Config> config) {
  install(std::move(config));
  const auto& cfg = shared_.config();
  shared_.reload = [this](std::string* report) { return reload(report); };
  int n = cfg.listen.workers;
  for (int i = 0; i < n; ++i) workers_.push_back(std::make_unique<Worker>(i, shared_));
  for (auto& w : workers_) shared_.workers.push_back(w.get());
}

Server::~Server() = default;

void Server::install(std::shared_ptr<const config::Config> cfg) {
  // The TLS context first: a client that sees the new configuration finds its certificate.
  if (cfg->tls.mode != config::TlsMode::kDisable) {
    shared_.tls_contexts.push_back(
        std::make_unique<asio::ssl::context>(make_tls_context(cfg->tls.cert, cfg->tls.key)));
    shared_.tls_now.store(shared_.tls_contexts.back().get(), std::memory_order_release);
  }
  shared_.configs.push_back(cfg);
  shared_.config_now.store(cfg.get(), std::memory_order_release);
}

bool Server::reload(std::string* report) {
  std::lock_guard lock(shared_.reload_mu);
  const auto& running = shared_.config();
  std::shared_ptr<const config::Config> next;
  try {
    auto loaded = config::load_file(running.path);
    auto copy = std::make_shared<config::Config>(*loaded);
    if (copy->listen.workers == 0) copy->listen.workers = running.listen.workers;
    next = copy;
  } catch (const config::ConfigError& e) {
    *report = std::string("the configuration was not changed: ") + e.what();
    return false;
  }
  if (auto refused = config::reload_refusals(running, *next); !refused.empty()) {
    *report = "the configuration was not changed; these changes need a restart (or resharding):";
    for (const auto& r : refused) *report += "\n  " + r;
    return false;
  }
  try {
    install(next);
  } catch (const std::exception& e) {  // a certificate that does not load
    *report = std::string("the configuration was not changed: TLS: ") + e.what();
    return false;
  }
  spdlog::set_level(spdlog::level::from_str(next->log_level));
  for (auto& w : workers_) asio::post(w->context(), [w = w.get()] { w->apply_config(); });
  *report = "configuration reloaded from " + next->path;
  return true;
}

// Every client, server connection and HTTP connection is a descriptor: the soft limit
// (often 1024, or the 4096 of a container) goes up to the hard one, which needs no privilege.
namespace {
void raise_open_files_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  const auto soft = lim.rlim_cur;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
      spdlog::warn("open files limit stays {} (raising it to {} failed: {})", soft, lim.rlim_max,
                   std::strerror(errno));
      return;
    }
  }
  spdlog::info("open files limit {} (was {})", lim.rlim_cur, soft);
}
}  // namespace

awaitable<void> Server::accept_loop() {
  const auto protocol = acceptor_->local_endpoint().protocol();
  for (;;) {
    auto& w = *workers_[next_worker_++ % workers_.size()];
    // Accepted here, then added to the worker's reactor by the worker itself: that reactor
    // skips per-socket locks, so no other thread may register a socket with it.
    auto [ec, sock] = co_await acceptor_->async_accept(use_nothrow);
    if (ec == asio::error::operation_aborted || !acceptor_->is_open()) co_return;
    if (ec) {
      // EMFILE and friends: log and back off instead of spinning.
      spdlog::error("accept failed: {}", ec.message());
      asio::steady_timer t(main_ctx_, std::chrono::milliseconds(100));
      co_await t.async_wait(use_nothrow);
      continue;
    }
    error_code released;
    OwnedFd fd(sock.release(released));
    if (released) {
      spdlog::error("accepted connection not handed over: {}", released.message());
      continue;
    }
    asio::post(w.context(), [&w, protocol, fd = std::move(fd)]() mutable {
      tcp::socket socket(w.context());
      error_code assigned;
      socket.assign(protocol, fd.get(), assigned);
      if (assigned) {
        spdlog::error("accepted connection not registered: {}", assigned.message());
        return;  // (fd closes it)
      }
      fd.disown();
      session::Session::start(w, std::move(socket));
    });
  }
}

int Server::run() {
  raise_open_files_limit();
  const auto& cfg = shared_.config();
  if (cfg.two_phase_commit) {
    // In-doubt transactions of an earlier run are resolved before any client comes in.
    std::string err;
    if (!shared_.decisions.open(cfg.two_phase_log, &err)) {
      spdlog::error("{}", err);
      return 1;
    }
    if (shared_.decisions.fresh()) {
      spdlog::info("two-phase commit: new instance {} (log {})", shared_.decisions.prefix(),
                   cfg.two_phase_log);
    } else {
      auto r = txn::recover(cfg, shared_.decisions, true);
      spdlog::info("two-phase commit recovery: {} committed, {} rolled back, {} errors",
                   r.committed, r.rolled_back, r.errors);
    }
  }
  tcp::endpoint ep(asio::ip::make_address(cfg.listen.host), cfg.listen.port);
  acceptor_.emplace(main_ctx_);
  acceptor_->open(ep.protocol());
  acceptor_->set_option(tcp::acceptor::reuse_address(true));
  acceptor_->bind(ep);
  acceptor_->listen(asio::socket_base::max_listen_connections);
  for (auto& w : workers_) w->start();
  if (!cfg.admin.http_host.empty()) {
    try {
      std::unique_ptr<asio::ssl::context> http_tls;
      if (!cfg.admin.http_tls_cert.empty())
        http_tls = std::make_unique<asio::ssl::context>(
            make_tls_context(cfg.admin.http_tls_cert, cfg.admin.http_tls_key, "admin.http_tls_cert",
                             "admin.http_tls_key"));
      http_ = std::make_unique<admin::HttpServer>(shared_, std::move(http_tls));
      http_->start();
    } catch (const std::exception& e) {
      spdlog::error("admin http {}:{}: {}", cfg.admin.http_host, cfg.admin.http_port, e.what());
      http_.reset();
      for (auto& w : workers_) w->stop();
      for (auto& w : workers_) w->join();
      return 1;
    }
  }
  spdlog::info("pgshard {} listening on {}:{} with {} workers, {} shards", PGSHARD_VERSION,
               cfg.listen.host, cfg.listen.port, workers_.size(), cfg.shards.size());

  int signals_seen = 0;
  asio::signal_set signals(main_ctx_, SIGINT, SIGTERM);
  asio::steady_timer deadline(main_ctx_);
  std::function<void(error_code, int)> on_signal = [&](error_code ec, int sig) {
    if (ec) return;
    if (++signals_seen > 1) {
      spdlog::warn("second signal ({}): exiting now", sig);
      std::_Exit(1);
    }
    spdlog::info("signal {}: no new connections; waiting up to {} ms for sessions to finish", sig,
                 cfg.timeouts.shutdown.count());
    shared_.shutting_down = true;
    error_code ignored;
    acceptor_->close(ignored);
    for (auto& w : workers_) w->begin_shutdown();
    signals.async_wait(on_signal);
    deadline.expires_after(cfg.timeouts.shutdown);
    auto started = Clock::now();
    asio::co_spawn(
        main_ctx_,
        [&, started]() -> awaitable<void> {
          asio::steady_timer tick(main_ctx_);
          while (shared_.clients.load() > 0 && Clock::now() - started < cfg.timeouts.shutdown) {
            tick.expires_after(std::chrono::milliseconds(50));
            co_await tick.async_wait(use_nothrow);
          }
          if (shared_.clients.load() > 0) {
            spdlog::warn("shutdown timeout: closing {} sessions", shared_.clients.load());
            for (auto& w : workers_) w->force_close();
            tick.expires_after(std::chrono::milliseconds(200));
            co_await tick.async_wait(use_nothrow);
          }
          main_ctx_.stop();
        },
        asio::detached);
  };
  signals.async_wait(on_signal);
  // SIGHUP: re-read the configuration file (what may change without a restart).
  asio::signal_set hup_signal(main_ctx_, SIGHUP);
  std::function<void(error_code, int)> on_hup = [&](error_code ec, int) {
    if (ec) return;
    std::string report;
    if (reload(&report))
      spdlog::info("SIGHUP: {}", report);
    else
      spdlog::error("SIGHUP: {}", report);
    hup_signal.async_wait(on_hup);
  };
  hup_signal.async_wait(on_hup);
  // SIGUSR2: one log line per session saying what it waits on (diagnosing a stuck client).
  asio::signal_set dump_signal(main_ctx_, SIGUSR2);
  std::function<void(error_code, int)> on_dump = [&](error_code ec, int) {
    if (ec) return;
    for (auto& w : workers_) w->dump_sessions();
    dump_signal.async_wait(on_dump);
  };
  dump_signal.async_wait(on_dump);
  if (cfg.two_phase_commit)
    recovery_thread_ = std::thread([this] {
      // Every 10 s: finish decided commits a shard missed (it was down at the time).
      while (!shared_.shutting_down) {
        for (int i = 0; i < 100 && !shared_.shutting_down; ++i)
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (!shared_.shutting_down) txn::recover(shared_.config(), shared_.decisions, false);
      }
    });
  deadlocks_.emplace(
      cfg,
      [this] {
        std::vector<txn::WaitingTxn> all;
        for (auto& w : workers_) {
          auto some = w->waiting_txns();
          all.insert(all.end(), some.begin(), some.end());
        }
        return all;
      },
      [this](const txn::Victim& v) {
        workers_[static_cast<std::size_t>(v.txn.worker)]->cancel_victim(v);
      });
  deadlocks_->start();
  node_lease_.start(cfg);
  asio::co_spawn(main_ctx_, accept_loop(), asio::detached);
  stats_thread_ = std::thread([this] {
    // Every stats period: the shards' totals, for SHOW STATS averages.
    while (!shared_.shutting_down) {
      const auto until = Clock::now() + Shared::kStatsPeriod;
      while (!shared_.shutting_down && Clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (shared_.shutting_down) break;
      admin::Snapshot snap;
      for (auto& w : workers_)
        if (auto s = w->ask([w = w.get()] { return w->snapshot(); })) snap.workers.push_back(*s);
      admin::PeriodMark mark{Clock::now(), {}};
      for (const auto& r : snap.shards()) mark.shards[r.shard] = admin::ShardTotals::of(r.counters);
      std::lock_guard lock(shared_.stats_mu);
      shared_.period_prev = std::move(shared_.period_last);
      shared_.period_last = std::move(mark);
    }
  });
  main_ctx_.run();
  if (http_) http_->stop();
  deadlocks_->stop();
  node_lease_.stop();
  for (auto& w : workers_) w->stop();
  for (auto& w : workers_) w->join();
  shared_.shutting_down = true;
  if (recovery_thread_.joinable()) recovery_thread_.join();
  if (stats_thread_.joinable()) stats_thread_.join();
  spdlog::info("pgshard stopped");
  return 0;
}

}  // namespace pgshard::server
