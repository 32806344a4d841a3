// The listener and its workers: one io_context per thread; sessions and the server
// connections they use live on the same worker, so the data path takes no locks.
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
#include "protocol/buffer.hpp"
#include "proxy/admin/stats.hpp"
#include "proxy/asio.hpp"
#include "proxy/executor/unique_id.hpp"
#include "proxy/merge/value.hpp"
#include "proxy/pool/pool.hpp"
#include "proxy/router/analysis.hpp"
#include "proxy/router/placement.hpp"
#include "proxy/session/parked_relays.hpp"
#include "proxy/txn/cluster_gate.hpp"
#include "proxy/txn/deadlock.hpp"
#include "proxy/txn/decision_log.hpp"
#include "proxy/txn/visibility_gate.hpp"

namespace pgshard::admin {
class HttpServer;
}

namespace pgshard::session {
class Session;
}

namespace pgshard::server {

class Server;

// What a check of a server's settings after user-defined functions ran found: nothing the
// client did not have, a change (adopted by the client), or a setting a function had set
// before with the same value (the call may or may not have set it again).
enum class SettingsCheck { kUnchanged, kChanged, kUnknown };

// State shared by all workers; read-mostly, atomics only.
class Worker;

struct Shared {
  // The configuration in force. RELOAD installs a new one; every one installed stays alive
  // (a session keeps the one it logged in with), so references to one never dangle.
  const config::Config& config() const { return *config_now.load(std::memory_order_acquire); }
  std::atomic<const config::Config*> config_now{nullptr};
  std::vector<std::shared_ptr<const config::Config>> configs;  // every one installed
  // The TLS context new connections use (null: TLS off); every one installed stays alive.
  asio::ssl::context* tls() const { return tls_now.load(std::memory_order_acquire); }
  std::atomic<asio::ssl::context*> tls_now{nullptr};
  std::vector<std::unique_ptr<asio::ssl::context>> tls_contexts;
  std::mutex reload_mu;  // one reload at a time (configs, tls_contexts)
  // Re-reads the configuration file and applies it (SIGHUP, the console's RELOAD): false
  // with the reasons when the file is bad or changes what needs a restart.
  std::function<bool(std::string* report)> reload;
  std::atomic<int> clients{0};    // every session, for shutdown
  std::atomic<int> logged_in{0};  // sessions past authentication (max_client_conn)
  std::atomic<int> startups{0};   // sessions not past authentication (max_startups)
  // Bytes sessions hold in requests not yet sent, charged against listen.max_buffered_bytes.
  std::atomic<std::size_t> buffered{0};
  std::atomic<bool> shutting_down{false};
  txn::DecisionLog decisions;  // two-phase commit decisions (shared; locks inside)
  std::atomic<uint64_t> next_gid{1};
  std::atomic<uint64_t> committed_2pc{0};    // transactions committed with two-phase commit
  std::atomic<uint64_t> rolled_back_2pc{0};  // ... and rolled back after PREPARE began
  txn::VisibilityGate visibility;            // cross-shard commits vs multi-shard snapshots
  pool::SharedPools pools;  // each pool's limit and waiters across the workers (locks inside)
  std::vector<Worker*> workers;              // for the admin console and /metrics
  Clock::time_point started = Clock::now();
  // The stats period marks (see admin::Snapshot::period), written every kStatsPeriod.
  static constexpr auto kStatsPeriod = std::chrono::seconds(15);
  std::mutex stats_mu;
  std::optional<admin::PeriodMark> period_prev, period_last;
};

class Worker {
 public:
  Worker(int index, Shared& shared);
  ~Worker();
  asio::io_context& context() { return *ctx_; }
  asio::any_io_executor executor() { return ctx_->get_executor(); }
  Shared& shared() { return shared_; }
  const config::Config& config() const { return shared_.config(); }
  // A reload installed a new configuration: pools take its sizes and timeouts.
  void apply_config();
  int index() const { return index_; }

  // This worker's side of the pool for (shard, user), created on first use (per database,
  // for a session of another database than the shards' own: config::User::database);
  // pool_size bounds the pool's connections on all workers together.
  pool::Pool& pool(int shard, const config::User& user);
  // Removes the user's pools that hold no connection and have no client waiting (a login
  // to a database no shard has).
  void drop_pools(const config::User& user);
  // Closes the idle connections to databases other than the shards' own (DDL on databases).
  void close_idle_other_databases();
  router::AnalysisCache& analysis_cache() { return cache_; }
  protocol::SpareBlocks& spare_blocks() { return spare_blocks_; }  // (the sessions' reads)
  session::ParkedRelays& parked_relays() { return parked_relays_; }
  router::DirectoryCache& directory() { return directory_; }
  router::ColumnCache& columns() { return columns_; }
  // The shards' text collation once known (null before), opened with newlocale.
  const merge::Collation* collation() const { return collation_ ? &*collation_ : nullptr; }
  const merge::Collation* set_collation(const std::string& name) {
    if (auto c = merge::Collation::open(name)) collation_.emplace(std::move(*c));
    return collation();
  }
  // Each shard's columns with collations other than the database's, read from its catalog
  // at most every 60 s, and again after DDL through pgshard (`generation` changes).
  std::shared_ptr<const merge::ColumnCollations> column_collations(int shard,
                                                                   uint64_t generation) const;
  void set_column_collations(int shard, uint64_t generation,
                             std::shared_ptr<const merge::ColumnCollations> c);
  // User-defined functions seen to leave settings alone: after kTrustedAfter checks of the
  // server's settings found nothing changed, calls to one no longer read every setting
  // (only the role); forgotten after DDL through pgshard and every 10 minutes. One seen
  // changing settings is always checked.
  static constexpr int kTrustedAfter = 3;
  bool functions_keep_settings(const std::vector<std::string>& names);
  void functions_checked(const std::vector<std::string>& names, SettingsCheck outcome);
  // Connections to the database holding sharded table `table`'s directory
  // (kDirectoryPoolSize for the whole process).
  pool::Pool& directory_pool(int table, const config::User& user);
  // Connections to the coordinator of `atomic_visibility: cluster` (txn/cluster_gate.hpp):
  // the first shard's server, its postgres database, logged in as for maintenance
  // (kGatePoolSize for the whole process).
  pool::Pool& gate_pool();
  // Where a statement of a session with `cfg` enters the visibility gate (txn::GateEntry).
  txn::GateEntry visibility_entry(const config::Config& cfg, const std::string& log_prefix) {
    return {shared_.visibility, cfg.visibility_cluster ? &gate_pool() : nullptr, cfg, log_prefix};
  }
  static constexpr int kGatePoolSize = 16;
  static constexpr int kDirectoryPoolSize = 2;
  static constexpr char kDatabaseSeparator = '\x1f';  // user, then database, in a pool key
  static std::string pool_user_key(const config::User& user);
  // Server parameters to announce to clients: from any pool that has logged in, else
  // learned by opening one connection (nullopt and an error message if no shard answers).
  awaitable<std::optional<std::map<std::string, std::string>>> server_params(
      const config::User& user, std::string* error);

  // How this worker's statements were routed.
  admin::RouteCounters& routes() { return routes_; }
  // Its pools, sessions and counters now (on the worker's thread).
  admin::WorkerSnapshot snapshot() const;
  // Ends the session with id `id` if it is this worker's (KILL_CLIENT); true if found.
  bool kill_client(uint64_t id);
  // PAUSE / RESUME / RECONNECT of shard `shard` (-1: every shard) on this worker's pools.
  void pause(int shard, bool on);
  void reconnect(int shard);
  // KILL: closes every client holding a server of `shard` (-1: every client) and the
  // shard's server connections.
  void kill_shard(int shard);

  void add(const std::shared_ptr<session::Session>& s);
  void remove(session::Session* s);
  // Closes this worker's oldest connection that has not said a word (else the oldest whose
  // login has stalled over a second), other than `except`: false when there is none.
  bool drop_oldest_unheard(const session::Session* except);
  // Asks every session to finish: idle ones close now, busy ones at their next idle point.
  void begin_shutdown();
  void force_close();
  void dump_sessions();
  // Deadlock detection, from its thread: the transactions of this worker's sessions that
  // hold servers on several shards (empty if the worker does not answer in time), and the
  // cancel of a victim.
  std::vector<txn::WaitingTxn> waiting_txns();
  // Runs `f` on the worker's thread and returns its result to a thread outside the
  // workers (nullopt if the worker does not answer within a second).
  template <typename F>
  auto ask(F f) -> std::optional<decltype(f())>;
  void cancel_victim(const txn::Victim& v);

  void start();
  void join();
  void stop();

 private:
  awaitable<void> janitor();
  // The pool for `key` logging in to `target`, of `limit` connections in the process.
  pool::Pool& make_pool(const std::pair<int, std::string>& key, pool::BackendTarget target,
                        int limit);
  int index_;
  Shared& shared_;
  // (Before ctx_: sessions ending as it is destroyed take themselves off.)
  session::ParkedRelays parked_relays_;
  // One thread runs it, and only that thread uses or registers its sockets (other threads
  // post to it; the listener hands accepted connections over as file descriptors): the
  // reactor's per-socket locks are skipped.
  std::optional<asio::io_context> ctx_{std::in_place, BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard_;
  std::thread thread_;
  std::map<std::pair<int, std::string>, std::unique_ptr<pool::Pool>> pools_;
  std::map<session::Session*, std::weak_ptr<session::Session>> sessions_;
  std::map<session::Session*, std::weak_ptr<session::Session>> ending_;  // run() ended
  std::size_t peak_sessions_ = 0;  // most sessions since memory was last given back
  router::AnalysisCache cache_;
  protocol::SpareBlocks spare_blocks_;
  router::DirectoryCache directory_;
  router::ColumnCache columns_;
  admin::RouteCounters routes_;
  std::set<int> paused_;  // shards paused (pools created later start paused)
  std::optional<merge::Collation> collation_;
  struct CachedCollations {
    std::shared_ptr<const merge::ColumnCollations> columns;
    uint64_t generation = 0;
    Clock::time_point read_at;
  };
  std::map<int, CachedCollations> column_collations_;
  std::unordered_map<std::string, int> function_checks_;  // clean checks; < 0: changes them
  uint64_t function_generation_ = 0;
  Clock::time_point function_checks_since_ = Clock::now();
};

class Server {
 public:
  explicit Server(std::shared_ptr<const config::Config> config);
  ~Server();
  // Runs until SIGTERM/SIGINT and the graceful shutdown finish; returns the exit code.
  int run();

 private:
  awaitable<void> accept_loop();
  bool reload(std::string* report);
  void install(std::shared_ptr<const config::Config> cfg);
  // Order matters for destruction: main_ctx_ (and the accept still pending on it, which
  // refers to a worker's socket service) goes before the workers; the HTTP endpoint's
  // context after them (a worker may still hold a snapshot request of it).
  Shared shared_;
  std::unique_ptr<admin::HttpServer> http_;
  std::vector<std::unique_ptr<Worker>> workers_;
  asio::io_context main_ctx_{1};
  std::thread recovery_thread_;
  std::optional<txn::DeadlockDetector> deadlocks_;
  executor::NodeLease node_lease_;  // pgshard.unique_id()'s node, when no node_id is set
  std::optional<tcp::acceptor> acceptor_;
  std::size_t next_worker_ = 0;
  std::thread stats_thread_;  // marks the stats periods (SHOW STATS averages)
};

template <typename F>
auto Worker::ask(F f) -> std::optional<decltype(f())> {
  using T = decltype(f());
  auto done = std::make_shared<std::promise<T>>();
  auto got = done->get_future();
  asio::post(*ctx_, [done, f = std::move(f)]() mutable { done->set_value(f()); });
  if (got.wait_for(std::chrono::seconds(1)) != std::future_status::ready) return std::nullopt;
  try {
    return got.get();
  } catch (const std::future_error&) {
    return std::nullopt;  // the worker stopped and dropped the request
  }
}

}  // namespace pgshard::server
