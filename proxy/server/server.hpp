// The listener and its workers: one io_context per thread; sessions and the server
// connections they use live on the same worker, so the data path takes no locks. This layer
// owns only the threads, the listener and the hand-off of accepted connections.
#pragma once

#include <atomic>
#include <functional>
#include <future>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>
#include <vector>

#include "config/config.hpp"
#include "proxy/asio.hpp"
#include "proxy/runtime/worker.hpp"
#include "proxy/txn/deadlock.hpp"

namespace pgshard::admin {
class HttpServer;
}

namespace pgshard::session {
class Session;
}

namespace pgshard::txn {
struct RecoveryResult;
}

namespace pgshard::server {

class Server;

// A worker thread: runs its io_context and keeps the sessions it serves; the services
// they use are runtime::Worker's.
class Worker final : public runtime::Worker {
 public:
  Worker(int index, runtime::Shared& shared) : runtime::Worker(index, shared) {}
  ~Worker() override;

  // Starts serving the client connected on `socket` (on this worker's thread).
  void start_session(tcp::socket socket);

  runtime::WorkerSnapshot snapshot() const override;
  bool kill_client(uint64_t id) override;
  void kill_shard(int shard) override;
  bool drop_oldest_unheard(uint64_t except) override;

  // Asks every session to finish: idle ones close now, busy ones at their next idle point.
  void begin_shutdown();
  void force_close();
  void dump_sessions();
  // Deadlock detection, from its thread: the transactions of this worker's sessions that
  // hold servers on several shards (empty if the worker does not answer in time), and the
  // cancel of a victim.
  std::vector<txn::WaitingTxn> waiting_txns();
  // Who holds servers of `pools` on this worker, for the pool waits of other workers'
  // transactions (empty if the worker does not answer in time).
  std::vector<txn::PoolWait> pool_holders(const std::set<const void*>& pools);
  void cancel_victim(const txn::Victim& v);

  void start();
  void join();
  void stop();

 private:
  awaitable<void> janitor();
  void remove(uint64_t session);
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard_;
  std::thread thread_;
  // By id, which orders them by age.
  std::map<uint64_t, std::weak_ptr<session::Session>> sessions_;
  std::map<uint64_t, std::weak_ptr<session::Session>> ending_;  // run() ended
  std::size_t peak_sessions_ = 0;  // most sessions since memory was last given back
};

class Server {
 public:
  explicit Server(std::shared_ptr<const config::Config> config);
  ~Server();
  // Runs until SIGTERM/SIGINT and the graceful shutdown finish; returns the exit code.
  int run();

 private:
  // The steps of run(), in order.
  bool recover_in_doubt(const config::Config& cfg, txn::RecoveryResult* startup);
  void listen(const config::Config& cfg);
  bool start_http(const config::Config& cfg);  // false: it failed, the workers are stopped
  void await_stop_signal(asio::signal_set& signals, const config::Config& cfg);
  void await_reload_signal(asio::signal_set& hup_signal);
  void await_dump_signal(asio::signal_set& dump_signal);
  void start_recovery_thread(const txn::RecoveryResult& startup);
  void start_deadlock_detector(const config::Config& cfg);
  void mark_stats_periods();  // the stats thread's loop
  void stop_all();
  // After the first SIGINT/SIGTERM: waits for the sessions, closes those left at the
  // timeout, then stops the main context.
  awaitable<void> drain_sessions(std::chrono::milliseconds timeout, Clock::time_point started);
  awaitable<void> accept_loop();
  bool reload(std::string* report);
  void install(std::shared_ptr<const config::Config> cfg);
  // Order matters for destruction: main_ctx_ (and the accept still pending on it, which
  // refers to a worker's socket service) goes before the workers; the HTTP endpoint's
  // context after them (a worker may still hold a snapshot request of it).
  runtime::Shared shared_;
  std::unique_ptr<admin::HttpServer> http_;
  std::vector<std::unique_ptr<Worker>> workers_;
  asio::io_context main_ctx_{1};
  std::thread recovery_thread_;
  std::optional<txn::DeadlockDetector> deadlocks_;
  std::optional<tcp::acceptor> acceptor_;
  std::size_t next_worker_ = 0;
  std::thread stats_thread_;   // marks the stats periods (SHOW STATS averages)
  int stop_signals_seen_ = 0;  // a second SIGINT/SIGTERM exits at once
};

}  // namespace pgshard::server
