// What every worker shares: the configuration in force, process-wide counters and the
// services that coordinate workers (two-phase commit decisions, the visibility gate, cancel
// keys). Read-mostly; atomics or locks inside.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "proxy/asio.hpp"
#include "proxy/pool/shared_pool.hpp"
#include "proxy/runtime/cancel.hpp"
#include "proxy/runtime/decision_log.hpp"
#include "proxy/runtime/health.hpp"
#include "proxy/runtime/stats.hpp"
#include "proxy/runtime/unique_id.hpp"
#include "proxy/runtime/visibility_gate.hpp"

namespace pgshard::runtime {

class Worker;

// What a check of a server's settings after user-defined functions ran found: nothing the
// client did not have, a change (adopted by the client), or a setting a function had set
// before with the same value (the call may or may not have set it again).
enum class SettingsCheck { kUnchanged, kChanged, kUnknown };

// State shared by all workers; read-mostly, atomics only.
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
  DecisionLog decisions;  // two-phase commit decisions (shared; locks inside)
  std::atomic<uint64_t> next_gid{1};
  // Bumped by DDL through pgshard: what was read of the shards' catalogs (column
  // collations, functions' effects on settings) is read again.
  std::atomic<uint64_t> catalog_generation{0};
  GlobalIds ids;  // pgshard.unique_id(): its generators and node lease
  std::atomic<bool> unique_id_declared{false};  // on every shard, once per process
  std::atomic<uint64_t> committed_2pc{0};       // transactions committed with two-phase commit
  std::atomic<uint64_t> rolled_back_2pc{0};     // ... and rolled back after PREPARE began
  VisibilityGate visibility;                    // cross-shard commits vs multi-shard snapshots
  HostHealth hosts;         // every host's last health check (only when some shard has replicas)
  pool::SharedPools pools;  // each pool's limit and waiters across the workers (locks inside)
  std::vector<Worker*> workers;  // for the admin console and /metrics
  Clock::time_point started = Clock::now();
  // The stats period marks (see Snapshot::period), written every kStatsPeriod.
  static constexpr auto kStatsPeriod = std::chrono::seconds(15);
  std::mutex stats_mu;
  std::optional<PeriodMark> period_prev, period_last;
};

}  // namespace pgshard::runtime
