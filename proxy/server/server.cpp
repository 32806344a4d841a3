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

Worker::~Worker() {
  // Sessions still suspended inside the io_context hold leases; destroying the context
  // returns them, so the pools must outlive it, but idle sockets must close first.
  close_pools();
  sessions_.clear();
  guard_.reset();
  ctx_.reset();
}

runtime::WorkerSnapshot Worker::snapshot() const {
  runtime::WorkerSnapshot out;
  out.worker = index_;
  std::map<const pool::ServerConn*, uint64_t> held;  // server -> the client holding it
  for (const auto& [id, weak] : sessions_) {
    auto s = weak.lock();
    if (!s) continue;
    out.clients.push_back(s->client_row());
    for (const auto* conn : s->servers()) {
      held[conn] = s->id();
      out.clients.back().servers.push_back(conn->id());
    }
    if (auto t = s->waiting_txn()) {
      runtime::TxnRow row{s->id(), out.clients.back().user, {}, t->busy ? "active" : "idle"};
      for (const auto& [shard, pid] : t->servers)
        row.shards.push_back(config().shards[static_cast<std::size_t>(shard)].name);
      out.transactions.push_back(std::move(row));
    }
  }
  add_pools(out, held);
  return out;
}

bool Worker::kill_client(uint64_t id) {
  auto it = sessions_.find(id);
  auto s = it == sessions_.end() ? nullptr : it->second.lock();
  if (s) s->kill();
  return s != nullptr;
}

void Worker::kill_shard(int shard) {
  for (auto& [id, weak] : sessions_) {
    auto s = weak.lock();
    if (!s) continue;
    // (Clients waiting for one of its servers too: they are its clients as much.)
    bool holds = shard < 0 || s->waiting_for() == shard;
    for (const auto* conn : s->servers()) holds |= conn->target().shard == shard;
    if (holds && s->client_row().database != admin::kConsoleDatabase) s->kill();
  }
  reconnect(shard);
}

void Worker::start_session(tcp::socket socket) {
  static std::atomic<uint64_t> next_id{1};
  shared().clients++;
  auto s = std::make_shared<session::Session>(*this, std::move(socket), next_id++);
  sessions_[s->id()] = s;
  peak_sessions_ = std::max(peak_sessions_, sessions_.size());
  asio::co_spawn(
      executor(),
      [this, s]() -> awaitable<void> {
        co_await s->serve();
        remove(s->id());
      },
      asio::detached);
}

void Worker::remove(uint64_t session) {
  // Its client is gone; until its last coroutine ends it is listed as ending (SIGUSR2).
  if (auto it = sessions_.find(session); it != sessions_.end()) {
    std::erase_if(ending_, [](const auto& kv) { return kv.second.expired(); });
    ending_[session] = it->second;
    sessions_.erase(it);
  }
}

bool Worker::drop_oldest_unheard(uint64_t except) {
  // A silent connection first; else one whose login has taken over a second (a client
  // that stalls mid-authentication, e.g. never answering the SCRAM challenge). The map is
  // ordered by id, oldest first.
  for (const bool silent : {true, false})
    for (auto& [id, weak] : sessions_)
      if (auto s = weak.lock(); s && id != except && (silent ? s->unheard() : s->login_stalled())) {
        s->drop_unheard();
        return true;
      }
  return false;
}

void Worker::begin_shutdown() {
  asio::post(*ctx_, [this] {
    for (auto& [id, weak] : sessions_)
      if (auto s = weak.lock()) s->request_shutdown();
  });
}

void Worker::dump_sessions() {
  asio::post(*ctx_, [this] {
    for (auto& [id, weak] : sessions_)
      if (auto s = weak.lock()) spdlog::info("{}", s->describe());
    // A session whose client left should end at once; one still here holds something.
    for (auto& [id, weak] : ending_)
      if (auto s = weak.lock()) spdlog::info("(client gone) {}", s->describe());
  });
}

std::vector<txn::WaitingTxn> Worker::waiting_txns() {
  return ask([this] {
           std::vector<txn::WaitingTxn> out;
           for (auto& [id, weak] : sessions_)
             if (auto s = weak.lock())
               if (auto t = s->waiting_txn()) {
                 t->worker = index_;
                 out.push_back(std::move(*t));
               }
           return out;
         })
      .value_or(std::vector<txn::WaitingTxn>{});
}

std::vector<txn::PoolWait> Worker::pool_holders(const std::set<const void*>& pools) {
  return ask([this, &pools] {
           std::vector<txn::PoolWait> out;
           for (auto& [id, h] : holders_of(pools))
             out.push_back(txn::PoolWait{-1, std::move(h.pids), h.spare, id, h.servers});
           return out;
         })
      .value_or(std::vector<txn::PoolWait>{});
}

void Worker::cancel_victim(const txn::Victim& v) {
  asio::post(*ctx_, [this, v] {
    for (auto& [id, weak] : sessions_)
      if (auto s = weak.lock(); s && s->id() == v.txn.session) s->deadlock_victim(v);
  });
}

void Worker::force_close() {
  asio::post(*ctx_, [this] {
    for (auto& [id, weak] : sessions_)
      if (auto s = weak.lock()) s->force_close();
  });
}

awaitable<void> Worker::janitor() {
  asio::steady_timer timer(*ctx_);
  for (;;) {
    timer.expires_after(std::chrono::seconds(10));
    auto [ec] = co_await timer.async_wait(use_nothrow);
    if (ec) co_return;
    prune_pools();
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
  stop_context();
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
    // One line, each change after a "; ": the log escapes a line break (main.cpp), which
    // read as a literal \n between them.
    for (std::size_t i = 0; i < refused.size(); ++i) *report += (i ? "; " : " ") + refused[i];
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
      w.start_session(std::move(socket));
    });
  }
}

int Server::run() {
  raise_open_files_limit();
  const auto& cfg = shared_.config();
  txn::RecoveryResult startup_recovery;
  if (cfg.two_phase_commit && !recover_in_doubt(cfg, &startup_recovery)) return 1;
  // The signals are caught before the port opens: a SIGHUP (a reload) sent as soon as the
  // port answers would otherwise end the process with the default action. They are handled
  // once main_ctx_ runs, below.
  asio::signal_set stop_signals(main_ctx_, SIGINT, SIGTERM);
  await_stop_signal(stop_signals, cfg);
  // SIGHUP: re-read the configuration file (what may change without a restart).
  asio::signal_set hup_signal(main_ctx_, SIGHUP);
  await_reload_signal(hup_signal);
  // SIGUSR2: one log line per session saying what it waits on (diagnosing a stuck client).
  asio::signal_set dump_signal(main_ctx_, SIGUSR2);
  await_dump_signal(dump_signal);
  listen(cfg);
  for (auto& w : workers_) w->start();
  if (!cfg.admin.http_host.empty() && !start_http(cfg)) return 1;
  spdlog::info("pgshard {} listening on {}:{} with {} workers, {} shards", PGSHARD_VERSION,
               cfg.listen.host, cfg.listen.port, workers_.size(), cfg.shards.size());

  if (cfg.two_phase_commit) start_recovery_thread(startup_recovery);
  start_deadlock_detector(cfg);
  shared_.ids.start_lease(cfg, &shared_.hosts);
  asio::co_spawn(main_ctx_, accept_loop(), asio::detached);
  runtime::start_health_checks(shared_, main_ctx_.get_executor());
  stats_thread_ = std::thread([this] { mark_stats_periods(); });
  main_ctx_.run();
  stop_all();
  spdlog::info("pgshard stopped");
  return 0;
}

bool Server::recover_in_doubt(const config::Config& cfg, txn::RecoveryResult* startup) {
  // In-doubt transactions of an earlier run are resolved before any client comes in.
  std::string err;
  if (!shared_.decisions.open(cfg.two_phase_log, &err)) {
    spdlog::error("{}", err);
    return false;
  }
  if (shared_.decisions.fresh()) {
    spdlog::info("two-phase commit: new instance {} (log {})", shared_.decisions.prefix(),
                 cfg.two_phase_log);
  } else {
    const auto& r = *startup = txn::recover(cfg, shared_.decisions, true);
    spdlog::info("two-phase commit recovery: {} committed, {} rolled back, {} errors", r.committed,
                 r.rolled_back, r.errors);
  }
  return true;
}

void Server::listen(const config::Config& cfg) {
  tcp::endpoint ep(asio::ip::make_address(cfg.listen.host), cfg.listen.port);
  acceptor_.emplace(main_ctx_);
  acceptor_->open(ep.protocol());
  acceptor_->set_option(tcp::acceptor::reuse_address(true));
  acceptor_->bind(ep);
  acceptor_->listen(asio::socket_base::max_listen_connections);
}

bool Server::start_http(const config::Config& cfg) {
  try {
    std::unique_ptr<asio::ssl::context> http_tls;
    if (!cfg.admin.http_tls_cert.empty())
      http_tls = std::make_unique<asio::ssl::context>(
          make_tls_context(cfg.admin.http_tls_cert, cfg.admin.http_tls_key, "admin.http_tls_cert",
                           "admin.http_tls_key"));
    http_ = std::make_unique<admin::HttpServer>(shared_, std::move(http_tls));
    http_->start();
    return true;
  } catch (const std::exception& e) {
    spdlog::error("admin http {}:{}: {}", cfg.admin.http_host, cfg.admin.http_port, e.what());
    http_.reset();
    for (auto& w : workers_) w->stop();
    for (auto& w : workers_) w->join();
    return false;
  }
}

// `cfg` is the configuration the server started with (kept alive in shared_.configs), so
// a reload does not change the shutdown timeout of a run already going.
void Server::await_stop_signal(asio::signal_set& signals, const config::Config& cfg) {
  signals.async_wait([this, &signals, &cfg](error_code ec, int sig) {
    if (ec) return;
    if (++stop_signals_seen_ > 1) {
      spdlog::warn("second signal ({}): exiting now", sig);
      std::_Exit(1);
    }
    spdlog::info("signal {}: no new connections; waiting up to {} ms for sessions to finish", sig,
                 cfg.timeouts.shutdown.count());
    shared_.shutting_down = true;
    error_code ignored;
    acceptor_->close(ignored);
    for (auto& w : workers_) w->begin_shutdown();
    await_stop_signal(signals, cfg);
    asio::co_spawn(main_ctx_, drain_sessions(cfg.timeouts.shutdown, Clock::now()), asio::detached);
  });
}

awaitable<void> Server::drain_sessions(std::chrono::milliseconds timeout,
                                       Clock::time_point started) {
  asio::steady_timer tick(main_ctx_);
  while (shared_.clients.load() > 0 && Clock::now() - started < timeout) {
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
}

void Server::await_reload_signal(asio::signal_set& hup_signal) {
  hup_signal.async_wait([this, &hup_signal](error_code ec, int) {
    if (ec) return;
    std::string report;
    if (reload(&report))
      spdlog::info("SIGHUP: {}", report);
    else
      spdlog::error("SIGHUP: {}", report);
    await_reload_signal(hup_signal);
  });
}

void Server::await_dump_signal(asio::signal_set& dump_signal) {
  dump_signal.async_wait([this, &dump_signal](error_code ec, int) {
    if (ec) return;
    for (auto& w : workers_) w->dump_sessions();
    await_dump_signal(dump_signal);
  });
}

void Server::start_recovery_thread(const txn::RecoveryResult& startup) {
  recovery_thread_ = std::thread([this, rounds = txn::RecoveryRounds(startup)]() mutable {
    // Every 10 s: finish decided commits a shard missed (it was down at the time) and roll
    // back what undecided transactions left; a round with nothing to do logs in nowhere.
    // A shard's primary moving (failover) starts a pass at once, on the new primary.
    uint64_t moves = shared_.hosts.moves().load();
    while (!shared_.shutting_down) {
      for (int i = 0; i < 100 && !shared_.shutting_down; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (shared_.hosts.moves().load() != moves) break;
      }
      if (const uint64_t now = shared_.hosts.moves().load(); now != moves) {
        moves = now;
        rounds.retry();
      }
      if (!shared_.shutting_down) rounds.round(shared_.config(), shared_.decisions, &shared_.hosts);
    }
  });
}

void Server::start_deadlock_detector(const config::Config& cfg) {
  deadlocks_.emplace(
      cfg,
      [this] {
        std::vector<txn::WaitingTxn> all;
        for (auto& w : workers_) {
          auto some = w->waiting_txns();
          all.insert(all.end(), some.begin(), some.end());
        }
        // A pool's servers are lent on every worker: a wait for one on this worker may
        // be a wait for a client of another.
        std::set<const void*> pools;
        for (const auto& t : all)
          if (t.pool_wait) pools.insert(t.pool_wait->pool);
        std::vector<txn::PoolWait> seen;
        if (!pools.empty())
          for (auto& w : workers_) {
            auto some = w->pool_holders(pools);
            seen.insert(seen.end(), some.begin(), some.end());
          }
        txn::merge_pool_waits(all, seen);
        return all;
      },
      [this](const txn::Victim& v) {
        workers_[static_cast<std::size_t>(v.txn.worker)]->cancel_victim(v);
      },
      &shared_.hosts);
  deadlocks_->start();
}

void Server::mark_stats_periods() {
  // Every stats period: the shards' totals, for SHOW STATS averages.
  while (!shared_.shutting_down) {
    const auto until = Clock::now() + runtime::Shared::kStatsPeriod;
    while (!shared_.shutting_down && Clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (shared_.shutting_down) break;
    runtime::Snapshot snap;
    for (auto& w : workers_)
      if (auto s = w->ask([w = w.get()] { return w->snapshot(); })) snap.workers.push_back(*s);
    runtime::PeriodMark mark{Clock::now(), {}};
    for (const auto& r : snap.shards()) mark.shards[r.shard] = runtime::ShardTotals::of(r.counters);
    std::lock_guard lock(shared_.stats_mu);
    shared_.period_prev = std::move(shared_.period_last);
    shared_.period_last = std::move(mark);
  }
}

void Server::stop_all() {
  if (http_) http_->stop();
  deadlocks_->stop();
  shared_.ids.stop_lease();
  for (auto& w : workers_) w->stop();
  for (auto& w : workers_) w->join();
  shared_.shutting_down = true;
  if (recovery_thread_.joinable()) recovery_thread_.join();
  if (stats_thread_.joinable()) stats_thread_.join();
}

}  // namespace pgshard::server
