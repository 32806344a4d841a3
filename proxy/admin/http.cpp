#include "proxy/admin/http.hpp"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <climits>
#include <cmath>

#include "proxy/admin/console.hpp"
#include "proxy/admin/dashboard.hpp"
#include "proxy/admin/exposition.hpp"
#include "proxy/admin/host_report.hpp"
#include "proxy/admin/http_auth.hpp"
#include "proxy/runtime/worker.hpp"
#include "proxy/txn/recovery.hpp"

namespace pgshard::admin {

namespace beast = boost::beast;
namespace http = beast::http;

namespace {

constexpr auto kPingEvery = std::chrono::milliseconds(1000);
constexpr auto kSizesEvery = std::chrono::seconds(10);
constexpr auto kHistoryEvery = std::chrono::seconds(10);
constexpr auto kRecentWindow = std::chrono::minutes(5);

// The descriptor number from which the endpoint turns connections away: a quarter of the
// process's limit (at most 1024) stays for the client port and the shards' connections.
int fd_ceiling() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY ||
      lim.rlim_cur > static_cast<rlim_t>(INT_MAX))
    return INT_MAX;
  const auto soft = static_cast<int>(lim.rlim_cur);
  return soft - std::min(soft / 4, 1024);
}

const char* shard_state(const ShardSample& s) {
  if (s.pinged == Clock::time_point{}) return "unknown";
  return s.answered ? "up" : "down";
}

pool::Histogram minus(const pool::Histogram& now, const pool::Histogram& then) {
  pool::Histogram d;
  for (std::size_t i = 0; i < d.buckets.size(); ++i)
    d.buckets[i] = now.buckets[i] - std::min(now.buckets[i], then.buckets[i]);
  d.count = now.count - std::min(now.count, then.count);
  d.sum_us = now.sum_us - std::min(now.sum_us, then.sum_us);
  return d;
}

std::vector<pool::Histogram> shard_histograms(const Snapshot& snap, std::size_t shards) {
  std::vector<pool::Histogram> out(shards);
  for (const auto& r : snap.shards())
    if (r.shard >= 0 && static_cast<std::size_t>(r.shard) < shards)
      out[static_cast<std::size_t>(r.shard)] = r.counters.query_time;
  return out;
}

// /metrics, family by family in the order of the exposition.

void process_metrics(Exposition& e, const Snapshot& snap) {
  e.family("pgshard_up", "gauge", "1 while pgshard runs");
  e.sample("pgshard_up", {}, 1);
  e.family("pgshard_uptime_seconds", "gauge", "seconds since pgshard started");
  e.sample("pgshard_uptime_seconds", {},
           std::chrono::duration<double>(snap.taken - snap.started).count());
  e.family("pgshard_clients", "gauge", "client connections by state");
  int active = 0, idle = 0, login = 0;
  for (const auto& w : snap.workers)
    for (const auto& c : w.clients)
      (c.state == "active" ? active : c.state == "idle" ? idle : login)++;
  e.sample("pgshard_clients", {{"state", "active"}}, active);
  e.sample("pgshard_clients", {{"state", "idle"}}, idle);
  e.sample("pgshard_clients", {{"state", "login"}}, login);
}

// A family with one sample per pool (shard and user).
struct PoolMetric {
  const char* name;
  const char* type;
  const char* help;
  double (*value)(const PoolRow& p);
};

constexpr PoolMetric kPoolMetrics[] = {
    {"pgshard_pool_waiting_clients", "gauge", "clients queued for a server connection",
     [](const PoolRow& p) { return static_cast<double>(p.stats.waiting); }},
    {"pgshard_pool_max_wait_seconds", "gauge", "longest current wait for a connection",
     [](const PoolRow& p) { return static_cast<double>(p.stats.max_wait_us) / 1e6; }},
    {"pgshard_pool_waits_total", "counter", "acquisitions that had to queue",
     [](const PoolRow& p) { return static_cast<double>(p.counters.waits); }},
    {"pgshard_pool_wait_seconds_total", "counter", "time spent queued for a connection",
     [](const PoolRow& p) { return static_cast<double>(p.counters.wait_us) / 1e6; }},
    {"pgshard_queries_total", "counter", "client requests answered by the shard",
     [](const PoolRow& p) { return static_cast<double>(p.counters.queries); }},
    {"pgshard_transactions_total", "counter", "client transactions ended on the shard",
     [](const PoolRow& p) { return static_cast<double>(p.counters.xacts); }},
    {"pgshard_bytes_sent_total", "counter", "bytes pgshard sent to the shard",
     [](const PoolRow& p) { return static_cast<double>(p.counters.bytes_sent); }},
    {"pgshard_bytes_received_total", "counter", "bytes pgshard received from the shard",
     [](const PoolRow& p) { return static_cast<double>(p.counters.bytes_received); }},
    {"pgshard_server_logins_total", "counter", "server connections opened",
     [](const PoolRow& p) { return static_cast<double>(p.counters.connects); }},
    {"pgshard_server_login_failures_total", "counter", "failed attempts to connect",
     [](const PoolRow& p) { return static_cast<double>(p.counters.connect_failures); }},
};

void pool_metrics(Exposition& e, const std::vector<PoolRow>& pools, const config::Config& cfg) {
  e.family("pgshard_server_connections", "gauge", "server connections by pool and state");
  for (const auto& p : pools) {
    const double used = p.stats.total - p.stats.idle - p.stats.connecting;
    e.sample("pgshard_server_connections",
             {{"shard", p.shard_name}, {"user", p.user}, {"state", "active"}}, used);
    e.sample("pgshard_server_connections",
             {{"shard", p.shard_name}, {"user", p.user}, {"state", "idle"}}, p.stats.idle);
    e.sample("pgshard_server_connections",
             {{"shard", p.shard_name}, {"user", p.user}, {"state", "login"}}, p.stats.connecting);
  }
  e.family("pgshard_pool_size", "gauge", "connections the shard's pool may open (pool_size)");
  for (const auto& p : pools)
    e.sample("pgshard_pool_size", {{"shard", p.shard_name}, {"user", p.user}},
             // A replica's pool (target past the shards) has its shard's size.
             p.shard >= 0
                 ? cfg.shards[static_cast<std::size_t>(cfg.host_of(p.shard).shard)].pool_size
                 : p.stats.max_size);
  for (const auto& m : kPoolMetrics) {
    e.family(m.name, m.type, m.help);
    for (const auto& p : pools)
      e.sample(m.name, {{"shard", p.shard_name}, {"user", p.user}}, m.value(p));
  }
  e.family("pgshard_errors_total", "counter", "errors the shards sent clients, by SQLSTATE class");
  for (const auto& p : pools)
    for (const auto& [cls, n] : p.counters.errors)
      e.sample("pgshard_errors_total", {{"shard", p.shard_name}, {"user", p.user}, {"class", cls}},
               static_cast<double>(n));
}

void latency_metrics(Exposition& e, const std::vector<PoolRow>& shards) {
  e.family("pgshard_query_duration_seconds", "histogram",
           "time from a client request sent to the shard to its ReadyForQuery");
  for (const auto& r : shards)
    e.histogram("pgshard_query_duration_seconds", r.shard_name, r.counters.query_time);
  e.family("pgshard_transaction_duration_seconds", "histogram",
           "time from a transaction's first request to the shard going idle");
  for (const auto& r : shards)
    e.histogram("pgshard_transaction_duration_seconds", r.shard_name, r.counters.xact_time);
}

// What the sampler last found on each shard: the families first, then shard by shard.
void sampled_metrics(Exposition& e, const Snapshot& snap, const config::Config& cfg,
                     const std::vector<ShardSample>& samples) {
  e.family("pgshard_shard_up", "gauge",
           "1 when the shard's primary answered the last ping and its writes are not refused");
  e.family("pgshard_shard_database_bytes", "gauge", "size of the shard's database (sampled)");
  e.family("pgshard_table_rows", "gauge",
           "estimated rows of each sharded table per shard (sampled)");
  e.family("pgshard_table_bytes", "gauge", "bytes of each sharded table per shard (sampled)");
  for (std::size_t i = 0; i < cfg.shards.size() && i < samples.size(); ++i) {
    const auto& s = samples[i];
    const auto& name = cfg.shards[i].name;
    if (s.pinged != Clock::time_point{})
      e.sample("pgshard_shard_up", {{"shard", name}},
               s.answered && !shard_writes(snap, static_cast<int>(i)).refused);
    if (s.database_bytes >= 0)
      e.sample("pgshard_shard_database_bytes", {{"shard", name}},
               static_cast<double>(s.database_bytes));
    for (const auto& [table, v] : s.tables) {
      e.sample("pgshard_table_rows", {{"shard", name}, {"table", table}},
               static_cast<double>(v.first));
      e.sample("pgshard_table_bytes", {{"shard", name}, {"table", table}},
               static_cast<double>(v.second));
    }
  }
}

void route_metrics(Exposition& e, const RouteCounters& routes) {
  e.family("pgshard_statements_total", "counter", "statements by how they were routed");
  e.sample("pgshard_statements_total", {{"route", "single_shard"}},
           static_cast<double>(routes.single));
  e.sample("pgshard_statements_total", {{"route", "multi_shard"}},
           static_cast<double>(routes.multi));
  e.sample("pgshard_statements_total", {{"route", "local"}}, static_cast<double>(routes.local));
  e.sample("pgshard_statements_total", {{"route", "refused"}}, static_cast<double>(routes.refused));
  e.family("pgshard_multi_shard_statements_total", "counter",
           "multi-shard statements by how their results combine");
  for (std::size_t i = 0; i < routes.merges.size(); ++i)
    e.sample("pgshard_multi_shard_statements_total", {{"merge", RouteCounters::kMergeKinds[i]}},
             static_cast<double>(routes.merges[i]));
  e.family("pgshard_refusals_total", "counter", "statements pgshard refused, by SQLSTATE");
  for (const auto& [code, n] : routes.refusals)
    e.sample("pgshard_refusals_total", {{"sqlstate", code}}, static_cast<double>(n));
}

void cache_metrics(Exposition& e, const Snapshot& snap) {
  uint64_t size = 0, hits = 0, misses = 0;
  for (const auto& w : snap.workers) {
    size += w.cache_size;
    hits += w.cache_hits;
    misses += w.cache_misses;
  }
  e.family("pgshard_parse_cache_entries", "gauge", "parsed statements cached (all workers)");
  e.sample("pgshard_parse_cache_entries", {}, static_cast<double>(size));
  e.family("pgshard_parse_cache_hits_total", "counter", "statements routed from the cache");
  e.sample("pgshard_parse_cache_hits_total", {}, static_cast<double>(hits));
  e.family("pgshard_parse_cache_misses_total", "counter", "statements that had to be parsed");
  e.sample("pgshard_parse_cache_misses_total", {}, static_cast<double>(misses));
}

void two_phase_metrics(Exposition& e, const Snapshot& snap) {
  e.family("pgshard_2pc_committed_total", "counter",
           "transactions committed with two-phase commit");
  e.sample("pgshard_2pc_committed_total", {}, static_cast<double>(snap.committed_2pc));
  e.family("pgshard_2pc_rolled_back_total", "counter",
           "two-phase transactions rolled back (a shard failed PREPARE)");
  e.sample("pgshard_2pc_rolled_back_total", {}, static_cast<double>(snap.rolled_back_2pc));
  e.family("pgshard_2pc_in_doubt", "gauge", "committed decisions not yet finished on every shard");
  e.sample("pgshard_2pc_in_doubt", {}, static_cast<double>(snap.in_doubt));
}

}  // namespace

HttpServer::HttpServer(runtime::Shared& shared, std::unique_ptr<asio::ssl::context> tls)
    : shared_(shared), tls_(std::move(tls)) {}

HttpServer::~HttpServer() {
  stop();
}

void HttpServer::start() {
  const auto& cfg = shared_.config();
  samples_.resize(cfg.shards.size());
  fd_ceiling_ = fd_ceiling();
  tcp::endpoint ep(asio::ip::make_address(cfg.admin.http_host), cfg.admin.http_port);
  acceptor_.emplace(ctx_);
  acceptor_->open(ep.protocol());
  acceptor_->set_option(tcp::acceptor::reuse_address(true));
  acceptor_->bind(ep);
  acceptor_->listen();
  asio::co_spawn(ctx_, accept_loop(), asio::detached);
  asio::co_spawn(
      ctx_,
      [this]() -> awaitable<void> {
        asio::steady_timer t(ctx_);
        while (!stopping_) {
          auto snap = co_await collect(shared_);
          recent_latency(snap);
          t.expires_after(kHistoryEvery);
          co_await t.async_wait(use_nothrow);
        }
      },
      asio::detached);
  thread_ = std::thread([this] {
    try {
      ctx_.run();
    } catch (const std::exception& e) {
      spdlog::error("admin http stopped: {}", e.what());
    }
  });
  sampler_ = std::thread([this] { sample_loop(); });
  const bool auth = !cfg.admin.http_auth_token.empty() || !cfg.admin.http_basic_auth.empty();
  spdlog::info(
      "admin http{} on {}:{} (/metrics /health /ready /dashboard; {}; at most {} "
      "connections, idle {} ms)",
      tls_ ? "s" : "", cfg.admin.http_host, cfg.admin.http_port,
      auth ? "credentials needed but for /health /ready" : "no credentials",
      cfg.admin.http_max_connections, cfg.admin.http_idle_timeout.count());
}

void HttpServer::stop() {
  stopping_ = true;
  ctx_.stop();
  if (thread_.joinable()) thread_.join();
  if (sampler_.joinable()) sampler_.join();
}

void HttpServer::sample_loop() {
  // One connection per shard, kept: a ping is a `select 1` on it (no new backend on the
  // shard every second), and a failed one is opened again at the next round.
  const auto& cfg = shared_.config();
  std::vector<PGconn*> conns(cfg.shards.size(), nullptr);
  auto next_sizes = Clock::now();
  while (!stopping_) {
    const bool sizes = Clock::now() >= next_sizes;
    if (sizes) next_sizes = Clock::now() + kSizesEvery;
    for (std::size_t i = 0; i < cfg.shards.size() && !stopping_; ++i) {
      ShardSample s;
      {
        std::lock_guard lock(mu_);
        s = samples_[i];
      }
      PGconn*& c = conns[i];
      auto ask = [&](const char* sql, int n, const char* const* params) {
        PGresult* r = PQexecParams(c, sql, n, nullptr, params, nullptr, nullptr, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) return r;
        PQclear(r);
        return static_cast<PGresult*>(nullptr);
      };
      PGresult* r = c && PQstatus(c) == CONNECTION_OK ? ask("select 1", 0, nullptr) : nullptr;
      // (The host that takes the shard's writes: a promoted replica after a failover.)
      const auto& shard = cfg.shards[i];
      const auto& host = shard.host(shared_.hosts.writer(static_cast<int>(i)).host);
      if (!r) {
        if (c) PQfinish(c);
        // A shard that stops answering mid-query (network gone) fails the query in seconds.
        c = PQconnectdb((runtime::maintenance_conninfo(cfg, shard, host, "pgshard-monitor") +
                         " tcp_user_timeout=5000 keepalives_idle=5 keepalives_interval=2"
                         " keepalives_count=2")
                            .c_str());
        if (PQstatus(c) == CONNECTION_OK) r = ask("select 1", 0, nullptr);
      }
      s.pinged = Clock::now();
      s.answered = r != nullptr;
      s.ping_error = s.answered ? "" : "no answer from " + host.text() + ": " + PQerrorMessage(c);
      while (!s.ping_error.empty() && s.ping_error.back() == '\n') s.ping_error.pop_back();
      PQclear(r);
      if (s.answered && sizes) {
        if ((r = ask("select pg_database_size(current_database())", 0, nullptr))) {
          s.database_bytes = std::atoll(PQgetvalue(r, 0, 0));
          PQclear(r);
        }
        for (const auto& t : cfg.sharded_tables) {
          const std::string name = t.qualified_name();
          const char* params[] = {name.c_str()};
          // Live rows as the statistics system counts them (kept current by inserts and
          // deletes; reltuples only after ANALYZE), and bytes with indexes and TOAST.
          r =
              ask("select coalesce(s.n_live_tup, greatest(c.reltuples, 0))::bigint, "
                  "pg_total_relation_size(c.oid) from pg_class c "
                  "left join pg_stat_user_tables s on s.relid = c.oid "
                  "where c.oid = to_regclass($1)",
                  1, params);
          if (r && PQntuples(r) == 1)
            s.tables[name] = {std::atoll(PQgetvalue(r, 0, 0)), std::atoll(PQgetvalue(r, 0, 1))};
          PQclear(r);
        }
      }
      std::lock_guard lock(mu_);
      samples_[i] = std::move(s);
    }
    for (int i = 0; i < 10 && !stopping_; ++i) std::this_thread::sleep_for(kPingEvery / 10);
  }
  for (auto* c : conns)
    if (c) PQfinish(c);
}

std::vector<ShardSample> HttpServer::samples() {
  std::lock_guard lock(mu_);
  return samples_;
}

std::vector<pool::Histogram> HttpServer::recent_latency(const Snapshot& snap) {
  const auto shards = shared_.config().shards.size();
  auto now = shard_histograms(snap, shards);
  const auto at = Clock::now();
  if (history_.empty() || at - history_.back().first >= kHistoryEvery)
    history_.emplace_back(at, now);
  while (history_.size() > 1 && at - history_[1].first >= kRecentWindow)
    history_.erase(history_.begin());
  std::vector<pool::Histogram> out(shards);
  const auto& then = history_.front().second;
  for (std::size_t i = 0; i < shards; ++i) out[i] = minus(now[i], then[i]);
  return out;
}

std::string HttpServer::metrics(const Snapshot& snap, const config::Config& cfg,
                                const std::vector<ShardSample>& samples) {
  Exposition e;
  process_metrics(e, snap);
  pool_metrics(e, snap.pools(), cfg);
  latency_metrics(e, snap.shards());
  sampled_metrics(e, snap, cfg, samples);
  route_metrics(e, snap.routes());
  cache_metrics(e, snap);
  two_phase_metrics(e, snap);
  host_metrics(e, snap, cfg);
  return e.take();
}

std::string HttpServer::status_json(const Snapshot& snap) {
  const auto& cfg = shared_.config();
  const auto samples = this->samples();
  const auto recent = recent_latency(snap);
  const auto rows = snap.shards();
  std::string j = "{\"version\":\"" + std::string(PGSHARD_VERSION) + "\",\"uptime_s\":" +
                  number(std::chrono::duration<double>(snap.taken - snap.started).count()) +
                  ",\"clients\":" + std::to_string(snap.logged_in) +
                  ",\"in_doubt\":" + std::to_string(snap.in_doubt) + ",\"shards\":[";
  std::map<std::string, uint64_t> errors;
  for (std::size_t i = 0; i < cfg.shards.size(); ++i) {
    const auto& sh = cfg.shards[i];
    const PoolRow* r = nullptr;
    for (const auto& row : rows)
      if (row.shard == static_cast<int>(i)) r = &row;
    const auto& s = samples[i];
    if (i) j += ',';
    // (After a failover the host taking writes; none while two hosts say they are primaries.)
    const auto writer = shared_.hosts.writer(static_cast<int>(i));
    const bool refused = !writer.refusal.empty();
    j += "{\"name\":\"" + escaped(sh.name) + "\",\"primary\":\"" +
         escaped(refused ? "" : sh.host(writer.host).text()) + "\",\"state\":\"" +
         (refused ? "refusing writes" : shard_state(s)) +
         "\",\"pool_used\":" + std::to_string(r ? r->stats.total - r->stats.idle : 0) +
         ",\"pool_idle\":" + std::to_string(r ? r->stats.idle : 0) +
         ",\"pool_size\":" + std::to_string(sh.pool_size) +
         ",\"waiting\":" + std::to_string(r ? r->stats.waiting : 0) +
         ",\"queries\":" + std::to_string(r ? r->counters.queries : 0) +
         ",\"errors\":" + std::to_string(r ? r->counters.error_count() : 0) +
         ",\"p50_ms\":" + number(recent[i].quantile(0.5) / 1000) +
         ",\"p99_ms\":" + number(recent[i].quantile(0.99) / 1000) +
         ",\"recent_queries\":" + std::to_string(recent[i].count) +
         ",\"database_bytes\":" + std::to_string(s.database_bytes) +
         ",\"hosts\":" + hosts_json(snap, static_cast<int>(i)) + ",\"last_error\":\"" +
         escaped(!s.answered && !s.ping_error.empty() ? s.ping_error
                 : r                                  ? r->health.last_error
                                                      : "") +
         "\"}";
    if (r)
      for (const auto& [cls, n] : r->counters.errors) errors[cls] += n;
  }
  j += "],\"tables\":[";
  bool first_table = true;
  for (const auto& t : cfg.sharded_tables) {
    const std::string name = t.qualified_name();
    if (!first_table) j += ',';
    first_table = false;
    j += "{\"table\":\"" + escaped(name) + "\",\"shards\":[";
    int64_t total = 0, most = 0;
    std::size_t known = 0;
    for (std::size_t i = 0; i < cfg.shards.size(); ++i) {
      auto it = samples[i].tables.find(name);
      const int64_t rows_n = it == samples[i].tables.end() ? -1 : it->second.first;
      const int64_t bytes = it == samples[i].tables.end() ? -1 : it->second.second;
      if (rows_n >= 0) {
        total += rows_n;
        most = std::max(most, rows_n);
        ++known;
      }
      if (i) j += ',';
      j += "{\"shard\":\"" + escaped(cfg.shards[i].name) + "\",\"rows\":" + std::to_string(rows_n) +
           ",\"bytes\":" + std::to_string(bytes) + "}";
    }
    // Skew: the fullest shard against the mean (1.0 is perfectly even).
    const double mean = known ? static_cast<double>(total) / static_cast<double>(known) : 0;
    j += "],\"skew\":" + number(mean > 0 ? static_cast<double>(most) / mean : 1.0) + "}";
  }
  j += "],\"errors\":[";
  bool first_error = true;
  for (const auto& [cls, n] : errors) {
    if (!first_error) j += ',';
    first_error = false;
    j += "{\"class\":\"" + escaped(cls) + "\",\"count\":" + std::to_string(n) + "}";
  }
  j += "]}";
  return j;
}

awaitable<void> HttpServer::accept_loop() {
  asio::steady_timer backoff(ctx_);
  for (;;) {
    auto [ec, sock] = co_await acceptor_->async_accept(use_nothrow);
    if (ec == asio::error::operation_aborted || stopping_) co_return;
    if (ec) {
      // EMFILE and friends: the connection stays queued; back off instead of spinning.
      refuse(tcp::socket(ctx_), ec.message().c_str());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(use_nothrow);
      continue;
    }
    if (const char* why = refusal(sock)) {
      refuse(std::move(sock), why);
      continue;
    }
    asio::co_spawn(ctx_, serve(std::move(sock)), asio::detached);
  }
}

const char* HttpServer::refusal(tcp::socket& socket) const {
  if (open_ >= shared_.config().admin.http_max_connections)
    return "admin.http_max_connections reached";
  if (socket.native_handle() >= fd_ceiling_)
    return "open files near the limit (the rest is kept for clients)";
  return nullptr;
}

void HttpServer::refuse(tcp::socket socket, const char* why) {
  if (socket.is_open()) {
    // Answered on the spot, never waited on: a 503 when the socket takes it at once (over
    // TLS nothing: that would need a handshake), then closed.
    static constexpr std::string_view k503 =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: "
        "21\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections\n";
    error_code ignored;
    socket.non_blocking(true, ignored);
    if (!tls_) socket.write_some(asio::buffer(k503), ignored);
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
  }
  // One line per 10 s at most: a flood must not become a flood of log lines.
  if (const auto held = refusals_.allow())
    spdlog::warn("admin http: refused a connection: {} ({} open; {} more refused in the last 10 s)",
                 why, open_, *held);
}

awaitable<void> HttpServer::serve(tcp::socket socket) {
  ++open_;
  struct Held {
    int& open;
    ~Held() { --open; }
  } held{open_};
  beast::tcp_stream tcp(std::move(socket));
  if (!tls_) {
    co_await exchange(tcp);
    co_return;
  }
  beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp), *tls_);
  stream.next_layer().expires_after(shared_.config().admin.http_idle_timeout);
  auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, use_nothrow);
  if (ec) co_return;
  co_await exchange(stream);
  stream.next_layer().expires_after(std::chrono::seconds(1));
  co_await stream.async_shutdown(use_nothrow);
}

template <typename Stream>
awaitable<void> HttpServer::exchange(Stream& stream) {
  beast::flat_buffer buffer;
  for (;;) {
    // One deadline for the wait and the whole request: a slow sender is idle too.
    Request req;
    beast::get_lowest_layer(stream).expires_after(shared_.config().admin.http_idle_timeout);
    auto [ec, n] = co_await http::async_read(stream, buffer, req, use_nothrow);
    if (ec) co_return;
    Response res = co_await answer(req);
    res.version(req.version());
    res.set(http::field::server, "pgshard");
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(30));
    auto [wec, m] = co_await http::async_write(stream, res, use_nothrow);
    if (wec || !res.keep_alive()) co_return;
  }
}

awaitable<HttpServer::Response> HttpServer::answer(const Request& req) {
  Response res;
  const auto t = req.target();
  const std::string target(t.substr(0, t.find('?')));
  const auto& admin = shared_.config().admin;
  const auto authorization = req[http::field::authorization];
  auto text = [&](http::status status, std::string body) {
    res.result(status);
    res.set(http::field::content_type, "text/plain");
    res.body() = std::move(body);
  };
  if (!http_open_path(target) &&
      !http_authorized(admin, std::string_view(authorization.data(), authorization.size()))) {
    text(http::status::unauthorized, "credentials needed\n");
    for (const auto& challenge : http_challenges(admin))
      res.insert(http::field::www_authenticate, challenge);
  } else if (req.method() != http::verb::get) {
    text(http::status::method_not_allowed, "only GET\n");
  } else if (target == "/health" || target == "/healthz") {
    text(http::status::ok, "ok\n");
  } else if (target == "/ready" || target == "/readyz") {
    const auto down = not_ready();
    text(down.empty() ? http::status::ok : http::status::service_unavailable,
         down.empty() ? "ready\n" : "not ready:\n" + down);
  } else if (target == "/metrics") {
    auto snap = co_await collect(shared_);
    text(http::status::ok, metrics(snap, shared_.config(), samples()));
    res.set(http::field::content_type, "text/plain; version=0.0.4");
  } else if (target == "/api/status") {
    auto snap = co_await collect(shared_);
    text(http::status::ok, status_json(snap));
    res.set(http::field::content_type, "application/json");
    res.set(http::field::cache_control, "no-store");
  } else if (target == "/favicon.ico") {
    res.result(http::status::no_content);
  } else if (target == "/dashboard" || target == "/") {
    text(http::status::ok, kDashboardHtml);
    res.set(http::field::content_type, "text/html; charset=utf-8");
  } else {
    text(http::status::not_found, "not found; try /metrics /health /ready /dashboard\n");
  }
  co_return res;
}

// The shards whose primary did not answer the last ping (or not lately), or whose writes are
// refused (two primaries), one per line.
std::string HttpServer::not_ready() {
  std::string down;
  const auto s = samples();
  const auto& cfg = shared_.config();
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto refusal = shared_.hosts.writer(static_cast<int>(i)).refusal;
    if (!refusal.empty())
      down += cfg.shards[i].name + ": " + refusal + "\n";
    else if (!s[i].answered || Clock::now() - s[i].pinged > std::chrono::seconds(10))
      down += cfg.shards[i].name + (s[i].ping_error.empty() ? "" : ": " + s[i].ping_error) + "\n";
  }
  if (shared_.shutting_down) down += "shutting down\n";
  return down;
}

}  // namespace pgshard::admin
