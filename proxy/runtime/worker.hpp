// What one worker thread owns for its sessions and executors: its io_context, its server
// pools, its caches (parsed statements, directory lookups, column orders, collations,
// functions' effects on settings), the relays parked between transactions and its route
// counters. The threads, the listener and the list of sessions belong to runtime::Worker,
// which implements the few operations on sessions that the layers below ask for.
#pragma once

#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.hpp"
#include "protocol/buffer.hpp"
#include "proxy/asio.hpp"
#include "proxy/merge/value.hpp"
#include "proxy/pool/pool.hpp"
#include "proxy/router/analysis.hpp"
#include "proxy/router/placement.hpp"
#include "proxy/runtime/cluster_gate.hpp"
#include "proxy/runtime/parked_relays.hpp"
#include "proxy/runtime/shared.hpp"
#include "proxy/runtime/stats.hpp"

namespace pgshard::runtime {

class Worker {
 public:
  Worker(int index, Shared& shared);
  virtual ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  asio::io_context& context() { return *ctx_; }
  asio::any_io_executor executor() { return ctx_->get_executor(); }
  Shared& shared() { return shared_; }
  const config::Config& config() const { return shared_.config(); }
  // A reload installed a new configuration: pools take its sizes and timeouts.
  void apply_config();
  int index() const { return index_; }

  // ---- what the sessions on this worker are (runtime::Worker keeps them) ----
  // Its pools, sessions and counters now (on the worker's thread).
  virtual WorkerSnapshot snapshot() const = 0;
  // Ends the session with id `id` if it is this worker's (KILL_CLIENT); true if found.
  virtual bool kill_client(uint64_t id) = 0;
  // KILL: closes every client holding a server of `shard` (-1: every client) and the
  // shard's server connections.
  virtual void kill_shard(int shard) = 0;
  // Closes this worker's oldest connection that has not said a word (else the oldest whose
  // login has stalled over a second), other than session `except`: false when there is none.
  virtual bool drop_oldest_unheard(uint64_t except) = 0;

  // ---- server pools ----
  // This worker's side of the pool for (shard, user), created on first use (per database,
  // for a session of another database than the shards' own: config::User::database);
  // pool_size bounds the pool's connections on all workers together.
  // `target` is a shard or one of its replicas (config::Config::host_of).
  // Why `conn`, a server of a shard's primary, may not go on with its transaction: a failover
  // moved the shard's writes to another host ("" when it is on the shard's primary). A
  // transaction there commits where nobody reads any more.
  std::string demoted_primary(const pool::ServerConn& conn) const;
  pool::Pool& pool(int target, const config::User& user);
  // Removes the user's pools that hold no connection and have no client waiting (a login
  // to a database no shard has).
  void drop_pools(const config::User& user);
  // Closes the idle connections to databases other than the shards' own (DDL on databases).
  void close_idle_other_databases();
  // Connections to the database holding sharded table `table`'s directory
  // (kDirectoryPoolSize per worker, shared by all of them).
  pool::Pool& directory_pool(int table, const config::User& user);
  // Connections to the coordinator of `atomic_visibility: cluster` (cluster_gate.hpp): the
  // first shard's server, its postgres database, logged in as for maintenance
  // (kGatePoolSize per worker, shared by all of them).
  pool::Pool& gate_pool();
  // Where a statement of a session with `cfg` enters the visibility gate (GateEntry).
  GateEntry visibility_entry(const config::Config& cfg, const std::string& log_prefix) {
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
  // PAUSE / RESUME / RECONNECT of shard `shard` (-1: every shard) on this worker's pools.
  void pause(int shard, bool on);
  void reconnect(int shard);

  // ---- caches ----
  router::AnalysisCache& analysis_cache() { return cache_; }
  protocol::SpareBlocks& spare_blocks() { return spare_blocks_; }  // (the sessions' reads)
  ParkedRelays& parked_relays() { return parked_relays_; }
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

  // How this worker's statements were routed.
  RouteCounters& routes() { return routes_; }

  // This worker's view of the pools in `pools` (SharedPool identities) it has a part of:
  // who holds their servers here (the deadlock detector merges the workers' views).
  std::vector<std::pair<const void*, pool::PoolHolders>> holders_of(
      const std::set<const void*>& pools) const;

  // Runs `f` on the worker's thread and returns its result to a thread outside the
  // workers (nullopt if the worker does not answer within a second).
  template <typename F>
  auto ask(F f) -> std::optional<decltype(f())>;

 protected:
  // The pools' part of snapshot(): `held` maps each server lent out to its client.
  void add_pools(WorkerSnapshot& out,
                 const std::map<const pool::ServerConn*, uint64_t>& held) const;
  // Closes the pools' connections idle too long (the janitor, every 10 s).
  void prune_pools();
  // Closes every idle server (before the io_context goes; sessions' leases return later).
  void close_pools();
  void stop_context();

  int index_;
  Shared& shared_;
  // (Before ctx_: sessions ending as it is destroyed take themselves off.)
  ParkedRelays parked_relays_;
  // One thread runs it, and only that thread uses or registers its sockets (other threads
  // post to it; the listener hands accepted connections over as file descriptors): the
  // reactor's per-socket locks are skipped.
  std::optional<asio::io_context> ctx_{std::in_place, BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};

 private:
  // The pool for `key` logging in to `target`, of `limit` connections in the process.
  pool::Pool& make_pool(const std::pair<int, std::string>& key, pool::BackendTarget target,
                        int limit);
  int workers() const;  // how many workers the process has
  // `p` (a pool of `shard`'s primary) follows the shard's writer (failover).
  void follow_writer(pool::Pool& p, int shard);
  std::map<std::pair<int, std::string>, std::unique_ptr<pool::Pool>> pools_;
  router::AnalysisCache cache_;
  protocol::SpareBlocks spare_blocks_;
  router::DirectoryCache directory_;
  router::ColumnCache columns_;
  RouteCounters routes_;
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

}  // namespace pgshard::runtime
