// The HTTP side of operations, on `admin.http` (its own thread; never on the data path):
// /metrics (Prometheus text), /health (the process answers), /ready (every shard's primary
// answers), /dashboard (a static page) and /api/status (the JSON the page reads).
// A sampler thread pings the shards every second and reads their sizes from the catalogs
// every 10 s, so no request waits on a shard. The endpoint may never starve the client
// port: it holds at most admin.http_max_connections connections, each for at most
// admin.http_idle_timeout without a request, and none once the process nears its limit of
// open files. Credentials (http_auth.hpp) and TLS are optional.
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "proxy/admin/reports.hpp"
#include "proxy/asio.hpp"
#include "proxy/log_limit.hpp"

namespace pgshard::runtime {
struct Shared;
}  // namespace pgshard::runtime

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
  using Request = boost::beast::http::request<boost::beast::http::string_body>;
  using Response = boost::beast::http::response<boost::beast::http::string_body>;

  // `tls`: the context of admin.http_tls_cert/key (null: plain HTTP).
  HttpServer(runtime::Shared& shared, std::unique_ptr<asio::ssl::context> tls);
  ~HttpServer();
  // Binds admin.http (throws if it cannot) and starts the threads.
  void start();
  void stop();

  // The Prometheus text for a snapshot and samples (exposed for unit tests).
  static std::string metrics(const Snapshot& snap, const config::Config& cfg,
                             const std::vector<ShardSample>& samples);

 private:
  awaitable<void> accept_loop();
  // Why a just-accepted connection is turned away (nullptr: it is served).
  const char* refusal(tcp::socket& socket) const;
  void refuse(tcp::socket socket, const char* why);
  awaitable<void> serve(tcp::socket socket);
  template <typename Stream>
  awaitable<void> exchange(Stream& stream);
  awaitable<Response> answer(const Request& req);
  std::string not_ready();
  std::vector<ShardSample> samples();
  void sample_loop();
  // Latency over the last minutes: per shard, the histogram now minus one kept ~5 min ago.
  std::vector<pool::Histogram> recent_latency(const Snapshot& snap);
  std::string status_json(const Snapshot& snap);

  runtime::Shared& shared_;
  // Declared before ctx_: the coroutines it destroys last use them.
  std::unique_ptr<asio::ssl::context> tls_;
  int open_ = 0;  // connections being served (on ctx_'s thread only)
  // Accepted descriptors numbered this high mean the process nears RLIMIT_NOFILE (the
  // kernel hands out the lowest free number): the rest is kept for the client port.
  int fd_ceiling_ = 0;
  LogLimit refusals_{std::chrono::seconds(10)};
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
