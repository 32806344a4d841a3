// The HTTP side of operations, on `admin.http` (its own thread; never on the data path):
// /metrics (Prometheus text), /health (the process answers), /ready (every shard's primary
// answers), /dashboard (a static page) and /api/status (the JSON the page reads).
// A sampler thread pings the shards every second and reads their sizes from the catalogs
// every 10 s, so no request waits on a shard.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "proxy/admin/stats.hpp"
#include "proxy/asio.hpp"

namespace pgshard::server {
struct Shared;
}

namespace pgshard::admin {

// What the sampler last learned of one shard.
struct ShardSample {
  bool answered = false;  // the last ping got an answer
  Clock::time_point pinged{};
  std::string ping_error;
  int64_t database_bytes = -1;  // -1: not read yet
  // Per sharded table: estimated rows (pg_class.reltuples) and bytes with indexes.
  std::map<std::string, std::pair<int64_t, int64_t>> tables;
};

class HttpServer {
 public:
  explicit HttpServer(server::Shared& shared);
  ~HttpServer();
  // Binds admin.http (throws if it cannot) and starts the threads.
  void start();
  void stop();

  // The Prometheus text for a snapshot and samples (exposed for unit tests).
  static std::string metrics(const Snapshot& snap, const config::Config& cfg,
                             const std::vector<ShardSample>& samples);

 private:
  awaitable<void> accept_loop();
  awaitable<void> serve(tcp::socket socket);
  std::vector<ShardSample> samples();
  void sample_loop();
  // Latency over the last minutes: per shard, the histogram now minus one kept ~5 min ago.
  std::vector<pool::Histogram> recent_latency(const Snapshot& snap);
  std::string status_json(const Snapshot& snap);

  server::Shared& shared_;
  asio::io_context ctx_{1};
  std::optional<tcp::acceptor> acceptor_;
  std::thread thread_;
  std::thread sampler_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::vector<ShardSample> samples_;
  // (when, per-shard query histograms) taken by recent_latency, oldest first.
  std::vector<std::pair<Clock::time_point, std::vector<pool::Histogram>>> history_;
};

}  // namespace pgshard::admin
