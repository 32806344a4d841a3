#include "proxy/admin/console.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <csignal>
#include <ctime>
#include <set>

#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "proxy/runtime/worker.hpp"

namespace pgshard::admin {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

awaitable<Snapshot> collect(runtime::Shared& shared) {
  Snapshot s;
  s.started = shared.started;
  for (auto* w : shared.workers)
    s.workers.push_back(co_await asio::co_spawn(
        w->executor(), [w]() -> awaitable<WorkerSnapshot> { co_return w->snapshot(); },
        asio::use_awaitable));
  s.clients_total = shared.clients.load();
  s.logged_in = shared.logged_in.load();
  s.startups = shared.startups.load();
  if (shared.decisions.is_open()) s.in_doubt = shared.decisions.pending().size();
  s.committed_2pc = shared.committed_2pc.load();
  s.rolled_back_2pc = shared.rolled_back_2pc.load();
  s.hosts = shared.hosts.snapshot();
  {
    std::lock_guard lock(shared.stats_mu);
    if (shared.period_prev && shared.period_last)
      s.period.emplace(*shared.period_prev, *shared.period_last);
  }
  s.taken = Clock::now();
  co_return s;
}

namespace {

constexpr int32_t kText = 25;
constexpr int32_t kInt8 = 20;
constexpr int32_t kFloat8 = 701;

// A result set built row by row; every value is sent as text.
class Table {
 public:
  Table(std::initializer_list<std::pair<const char*, int32_t>> columns) : columns_(columns) {}
  Table& operator<<(std::string v) {
    row_.emplace_back(std::move(v));
    return *this;
  }
  Table& operator<<(const char* v) { return *this << std::string(v); }
  Table& operator<<(uint64_t v) { return *this << std::to_string(v); }
  Table& operator<<(int64_t v) { return *this << std::to_string(v); }
  Table& operator<<(int v) { return *this << std::to_string(v); }
  Table& operator<<(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", v);
    return *this << std::string(buf);
  }
  Table& null() {
    row_.emplace_back(std::nullopt);
    return *this;
  }
  void end_row() {
    rows_.push_back(std::move(row_));
    row_.clear();
  }
  std::string write(std::string_view tag) const {
    std::string out;
    proto::RowDescription rd;
    for (const auto& [name, type] : columns_) {
      proto::FieldDescription f;
      f.name = name;
      f.type_oid = type;
      f.type_size = type == kText ? -1 : 8;
      f.type_modifier = -1;
      rd.fields.push_back(f);
    }
    rd.write(out);
    for (const auto& r : rows_) {
      proto::DataRow dr;
      for (const auto& v : r) dr.values.push_back(v ? proto::Value(*v) : std::nullopt);
      dr.write(out);
    }
    proto::CommandComplete{tag}.write(out);
    return out;
  }

 private:
  std::vector<std::pair<const char*, int32_t>> columns_;
  std::vector<std::optional<std::string>> row_;
  std::vector<std::vector<std::optional<std::string>>> rows_;
};

// A steady-clock moment as wall-clock text, PgBouncer's format ("2026-11-29 16:00:00 UTC").
std::string wall_time(Clock::time_point t, Clock::time_point now) {
  if (t == Clock::time_point{}) return "";
  const auto wall = std::chrono::system_clock::now() -
                    std::chrono::duration_cast<std::chrono::system_clock::duration>(now - t);
  const std::time_t tt = std::chrono::system_clock::to_time_t(wall);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string> words(std::string_view s) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    std::size_t j = i;
    while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

std::string error_answer(std::string_view code, std::string message, std::string hint = {}) {
  std::string out;
  proto::write_error(out, proto::error(code, std::move(message), {}, std::move(hint)));
  return out;
}

constexpr const char* kHelp[] = {
    "SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|SHARDS|HOSTS|REPLICAS|VERSION",
    "SHOW STATS|STATS_TOTALS|STATS_AVERAGES|LISTS|TRANSACTIONS|ROUTES",
    "RELOAD                (admin.users only; also SIGHUP)",
    "PAUSE [shard] | RESUME [shard] | RECONNECT [shard]   (admin.users only)",
    "KILL [shard]          closes the shard's clients and servers (admin.users only)",
    "KILL_CLIENT <id>      (admin.users only)",
    "SHUTDOWN              (admin.users only)",
};

const char* pool_mode(const config::Config& cfg, const std::string& user) {
  const auto* u = cfg.find_user(user);
  return u ? config::to_string(u->pool_mode) : "";
}

double seconds_up(const Snapshot& s) {
  return std::max(1.0, std::chrono::duration<double>(s.taken - s.started).count());
}

std::string show_pools(const Snapshot& s, const config::Config& cfg) {
  Table t{{"database", kText},
          {"user", kText},
          {"cl_active", kInt8},
          {"cl_waiting", kInt8},
          {"cl_active_cancel_req", kInt8},
          {"cl_waiting_cancel_req", kInt8},
          {"sv_active", kInt8},
          {"sv_active_cancel", kInt8},
          {"sv_being_canceled", kInt8},
          {"sv_idle", kInt8},
          {"sv_used", kInt8},
          {"sv_tested", kInt8},
          {"sv_login", kInt8},
          {"maxwait", kInt8},
          {"maxwait_us", kInt8},
          {"pool_mode", kText}};
  for (const auto& p : s.pools()) {
    const int active = p.stats.total - p.stats.idle - p.stats.connecting;
    t << p.shard_name << p.user << p.clients << p.stats.waiting << 0 << 0 << active << 0 << 0
      << p.stats.idle << 0 << 0 << p.stats.connecting << p.stats.max_wait_us / 1000000
      << p.stats.max_wait_us % 1000000 << pool_mode(cfg, p.user);
    t.end_row();
  }
  return t.write("SHOW");
}

// STATS, STATS_TOTALS and STATS_AVERAGES: per shard. Bytes are those pgshard sent to and
// received from the shard; times are in microseconds, as PgBouncer's.
std::string show_stats(const Snapshot& s, bool totals, bool averages) {
  // Averages: over the last stats period once one has passed, else since the start.
  double span = seconds_up(s);
  if (s.period)
    span = std::max(
        1e-3, std::chrono::duration<double>(s.period->second.at - s.period->first.at).count());
  auto avg = [&](int shard, const pool::Counters& now) {
    ShardTotals d = ShardTotals::of(now);
    if (s.period) {
      auto get = [&](const PeriodMark& m) {
        auto it = m.shards.find(shard);
        return it == m.shards.end() ? ShardTotals{} : it->second;
      };
      const ShardTotals a = get(s.period->first), b = get(s.period->second);
      d = {b.xacts - a.xacts,           b.queries - a.queries,
           b.bytes_sent - a.bytes_sent, b.bytes_received - a.bytes_received,
           b.xact_us - a.xact_us,       b.query_us - a.query_us,
           b.wait_us - a.wait_us,       b.waits - a.waits};
    }
    return d;
  };
  auto per_second = [&](uint64_t v) {
    return static_cast<uint64_t>(static_cast<double>(v) / span);
  };
  auto mean = [](uint64_t sum, uint64_t n) { return n ? sum / n : 0; };
  if (totals || averages) {
    Table t{{"database", kText},       {"xact_count", kInt8}, {"query_count", kInt8},
            {"bytes_received", kInt8}, {"bytes_sent", kInt8}, {"xact_time", kInt8},
            {"query_time", kInt8},     {"wait_time", kInt8}};
    for (const auto& r : s.shards()) {
      const auto& c = r.counters;
      if (totals)
        t << r.shard_name << c.xacts << c.queries << c.bytes_sent << c.bytes_received
          << c.xact_time.sum_us << c.query_time.sum_us << c.wait_us;
      else {
        const auto d = avg(r.shard, c);
        t << r.shard_name << per_second(d.xacts) << per_second(d.queries)
          << per_second(d.bytes_sent) << per_second(d.bytes_received) << mean(d.xact_us, d.xacts)
          << mean(d.query_us, d.queries) << mean(d.wait_us, d.waits);
      }
      t.end_row();
    }
    return t.write("SHOW");
  }
  Table t{{"database", kText},         {"total_xact_count", kInt8}, {"total_query_count", kInt8},
          {"total_received", kInt8},   {"total_sent", kInt8},       {"total_xact_time", kInt8},
          {"total_query_time", kInt8}, {"total_wait_time", kInt8},  {"avg_xact_count", kInt8},
          {"avg_query_count", kInt8},  {"avg_recv", kInt8},         {"avg_sent", kInt8},
          {"avg_xact_time", kInt8},    {"avg_query_time", kInt8},   {"avg_wait_time", kInt8}};
  for (const auto& r : s.shards()) {
    const auto& c = r.counters;
    const auto d = avg(r.shard, c);
    t << r.shard_name << c.xacts << c.queries << c.bytes_sent << c.bytes_received
      << c.xact_time.sum_us << c.query_time.sum_us << c.wait_us << per_second(d.xacts)
      << per_second(d.queries) << per_second(d.bytes_sent) << per_second(d.bytes_received)
      << mean(d.xact_us, d.xacts) << mean(d.query_us, d.queries) << mean(d.wait_us, d.waits);
    t.end_row();
  }
  return t.write("SHOW");
}

std::string show_clients(const Snapshot& s) {
  Table t{{"type", kText},         {"user", kText},
          {"database", kText},     {"state", kText},
          {"addr", kText},         {"port", kInt8},
          {"connect_time", kText}, {"request_time", kText},
          {"wait", kInt8},         {"wait_us", kInt8},
          {"close_needed", kInt8}, {"ptr", kText},
          {"link", kText},         {"remote_pid", kInt8},
          {"tls", kText},          {"application_name", kText},
          {"id", kInt8},           {"transaction", kText},
          {"waiting_on", kText},   {"servers", kText},
          {"worker", kInt8}};
  for (const auto& w : s.workers)
    for (const auto& c : w.clients) {
      std::string servers;
      for (auto id : c.servers) servers += (servers.empty() ? "S-" : ",S-") + std::to_string(id);
      t << "C" << c.user << c.database << c.state << c.addr << static_cast<int>(c.port)
        << wall_time(c.connected, s.taken) << wall_time(c.last_request, s.taken)
        << c.wait_us / 1000000 << c.wait_us % 1000000 << 0 << ("C-" + std::to_string(c.id))
        << servers << 0 << (c.tls ? "TLS" : "") << c.application_name << c.id
        << std::string(1, c.txn) << c.waiting_on << servers << w.worker;
      t.end_row();
    }
  return t.write("SHOW");
}

std::string show_servers(const Snapshot& s) {
  Table t{
      {"type", kText},  {"user", kText},       {"database", kText},     {"state", kText},
      {"addr", kText},  {"port", kInt8},       {"connect_time", kText}, {"request_time", kText},
      {"wait", kInt8},  {"wait_us", kInt8},    {"close_needed", kInt8}, {"ptr", kText},
      {"link", kText},  {"remote_pid", kInt8}, {"tls", kText},          {"application_name", kText},
      {"shard", kText}, {"id", kInt8},         {"transaction", kText},  {"worker", kInt8}};
  for (const auto& w : s.workers)
    for (const auto& r : w.servers) {
      t << "S" << r.user << r.database << r.state << r.addr << static_cast<int>(r.port)
        << wall_time(r.connected, s.taken) << wall_time(r.since, s.taken) << 0 << 0 << 0
        << ("S-" + std::to_string(r.id)) << (r.client ? "C-" + std::to_string(r.client) : "")
        << static_cast<int64_t>(r.pid) << ""
        << "" << r.shard_name << r.id << std::string(1, r.txn) << w.worker;
      t.end_row();
    }
  return t.write("SHOW");
}

// Every host of every shard as its last health check saw it (SHOW HOSTS), or only the
// replicas (SHOW REPLICAS). Empty when no shard lists replicas (nothing is checked then).
std::string show_hosts(const Snapshot& s, bool replicas_only) {
  Table t{{"shard", kText},     {"host", kText},      {"port", kInt8},
          {"listed_as", kText}, {"role", kText},      {"state", kText},
          {"lag_bytes", kInt8}, {"lag_ms", kInt8},    {"banned_until", kText},
          {"checks", kInt8},    {"failures", kInt8},  {"last_error", kText},
          {"reads", kInt8},     {"fallbacks", kInt8}, {"waited", kInt8},
          {"timeline", kInt8},  {"writes", kText},    {"failovers", kInt8}};
  for (const auto& h : s.hosts) {
    if (replicas_only && h.listed_primary) continue;
    const bool banned = h.banned_until > s.taken;
    t << h.shard_name << h.host << static_cast<int>(h.port)
      << (h.listed_primary ? "primary" : "replica") << runtime::to_string(h.role)
      << runtime::state_of(h, s.taken);
    if (h.role == runtime::HostRole::kReplica && h.lag_bytes >= 0)
      t << h.lag_bytes;
    else
      t.null();
    if (h.role == runtime::HostRole::kReplica && h.lag_ms >= 0)
      t << h.lag_ms;
    else
      t.null();
    t << (banned ? wall_time(h.banned_until, s.taken) : "") << h.checks << h.failures << h.error
      << h.reads << h.fallbacks << h.waited;
    if (h.timeline)
      t << static_cast<int64_t>(h.timeline);
    else
      t.null();
    // writes: where the shard's writes go now ("refused" on each primary of a shard that
    // has two); failovers: how often they moved to another host of the shard.
    t << (h.writes                                                     ? "yes"
          : h.refused && h.up && h.role == runtime::HostRole::kPrimary ? "refused"
                                                                       : "no")
      << h.failovers;
    t.end_row();
  }
  return t.write("SHOW");
}

std::string show_databases(const Snapshot& s, const config::Config& cfg) {
  Table t{{"name", kText},
          {"host", kText},
          {"port", kInt8},
          {"database", kText},
          {"force_user", kText},
          {"pool_size", kInt8},
          {"min_pool_size", kInt8},
          {"reserve_pool", kInt8},
          {"pool_mode", kText},
          {"max_connections", kInt8},
          {"current_connections", kInt8},
          {"paused", kInt8},
          {"disabled", kInt8}};
  const auto rows = s.shards();
  for (std::size_t i = 0; i < cfg.shards.size(); ++i) {
    const auto& sh = cfg.shards[i];
    int current = 0;
    for (const auto& r : rows)
      if (r.shard == static_cast<int>(i)) current = r.stats.total;
    int paused = 0;
    for (const auto& w : s.workers)
      for (int p : w.paused) paused |= p == static_cast<int>(i);
    t << sh.name << sh.primary.host << static_cast<int>(sh.primary.port) << sh.primary.database
      << sh.primary.user << sh.pool_size << 0 << 0 << "" << sh.pool_size << current << paused << 0;
    t.end_row();
  }
  return t.write("SHOW");
}

// Whether a shard answers, from its pools' last attempts to connect.
const char* shard_state(const PoolRow* r) {
  if (!r ||
      (r->health.last_ok == Clock::time_point{} && r->health.last_failure == Clock::time_point{}))
    return "unknown";
  return r->health.last_failure > r->health.last_ok ? "down" : "up";
}

std::string show_shards(const Snapshot& s, const config::Config& cfg) {
  Table t{{"name", kText},      {"primary", kText},   {"state", kText},    {"pool_used", kInt8},
          {"pool_idle", kInt8}, {"pool_size", kInt8}, {"waiting", kInt8},  {"queries", kInt8},
          {"xacts", kInt8},     {"errors", kInt8},    {"p50_ms", kFloat8}, {"p99_ms", kFloat8},
          {"last_error", kText}};
  const auto rows = s.shards();
  for (std::size_t i = 0; i < cfg.shards.size(); ++i) {
    const auto& sh = cfg.shards[i];
    const PoolRow* r = nullptr;
    for (const auto& row : rows)
      if (row.shard == static_cast<int>(i)) r = &row;
    const std::string primary = sh.primary.host + ":" + std::to_string(sh.primary.port) +
                                (sh.primary.database.empty() ? "" : "/" + sh.primary.database);
    t << sh.name << primary << shard_state(r);
    if (r) {
      t << r->stats.total - r->stats.idle << r->stats.idle << sh.pool_size << r->stats.waiting
        << r->counters.queries << r->counters.xacts << r->counters.error_count()
        << r->counters.query_time.quantile(0.5) / 1000
        << r->counters.query_time.quantile(0.99) / 1000 << r->health.last_error;
    } else {
      t << 0 << 0 << sh.pool_size << 0 << 0 << 0 << 0 << 0.0 << 0.0 << "";
    }
    t.end_row();
  }
  return t.write("SHOW");
}

std::string show_config(const config::Config& cfg) {
  Table t{{"key", kText}, {"value", kText}, {"default", kText}, {"changeable", kText}};
  // Changeable: applied by RELOAD / SIGHUP (see config::reload_refusals for the rest).
  auto row = [&](const char* key, std::string value, std::string def) {
    static const std::set<std::string_view> live = {"max_client_conn",
                                                    "max_startups",
                                                    "client_login_timeout",
                                                    "client_idle_timeout",
                                                    "server_connect_timeout",
                                                    "query_wait_timeout",
                                                    "server_idle_timeout",
                                                    "shard_statement_timeout",
                                                    "log_level",
                                                    "partial_results"};
    t << key << std::move(value) << std::move(def) << (live.count(key) ? "yes" : "no");
    t.end_row();
  };
  const config::Config d;
  auto ms = [](config::Millis m) { return std::to_string(m.count()) + "ms"; };
  row("config_file", cfg.path, "");
  row("listen_addr", cfg.listen.host, d.listen.host);
  row("listen_port", std::to_string(cfg.listen.port), std::to_string(d.listen.port));
  row("workers", std::to_string(cfg.listen.workers), "0");
  row("max_client_conn", std::to_string(cfg.listen.max_client_conn),
      std::to_string(d.listen.max_client_conn));
  row("max_startups", std::to_string(cfg.listen.max_startups),
      std::to_string(d.listen.max_startups));
  row("max_message_size", std::to_string(cfg.listen.max_message_size),
      std::to_string(d.listen.max_message_size));
  row("max_buffered_bytes", std::to_string(cfg.listen.max_buffered_bytes),
      std::to_string(d.listen.max_buffered_bytes));
  row("tls_mode", config::to_string(cfg.tls.mode), config::to_string(d.tls.mode));
  row("client_login_timeout", ms(cfg.timeouts.client_startup), ms(d.timeouts.client_startup));
  row("client_startup_packet_timeout", ms(cfg.timeouts.client_startup_packet),
      ms(d.timeouts.client_startup_packet));
  row("client_idle_timeout", ms(cfg.timeouts.client_idle), ms(d.timeouts.client_idle));
  row("server_connect_timeout", ms(cfg.timeouts.connect), ms(d.timeouts.connect));
  row("query_wait_timeout", ms(cfg.timeouts.pool_wait), ms(d.timeouts.pool_wait));
  row("shutdown_timeout", ms(cfg.timeouts.shutdown), ms(d.timeouts.shutdown));
  row("server_idle_timeout", ms(cfg.timeouts.server_idle), ms(d.timeouts.server_idle));
  row("shard_statement_timeout", ms(cfg.timeouts.shard_statement), ms(d.timeouts.shard_statement));
  row("deadlock_timeout", ms(cfg.timeouts.deadlock), ms(d.timeouts.deadlock));
  row("log_level", cfg.log_level, d.log_level);
  row("partial_results", cfg.partial_results ? "true" : "false", "false");
  row("two_phase_commit", cfg.two_phase_commit ? "true" : "false", "true");
  row("two_phase_log", cfg.two_phase_log, d.two_phase_log);
  row("router_cache_size", std::to_string(cfg.router_cache_size),
      std::to_string(d.router_cache_size));
  row("router_parse", cfg.router_parse ? "true" : "false", "true");
  row("shards", std::to_string(cfg.shards.size()), "");
  row("sharded_tables", std::to_string(cfg.sharded_tables.size()), "");
  row("reference_tables", std::to_string(cfg.reference_tables.size()), "");
  row("admin_http",
      cfg.admin.http_host.empty() ? std::string()
                                  : cfg.admin.http_host + ":" + std::to_string(cfg.admin.http_port),
      "");
  return t.write("SHOW");
}

std::string show_lists(const Snapshot& s, const config::Config& cfg) {
  Table t{{"list", kText}, {"items", kInt8}};
  int clients_active = 0, clients_login = 0, servers_used = 0, servers_free = 0;
  for (const auto& w : s.workers) {
    for (const auto& c : w.clients) {
      if (c.state == "login")
        ++clients_login;
      else
        ++clients_active;
    }
    for (const auto& r : w.servers) (r.state == "idle" ? servers_free : servers_used)++;
  }
  auto row = [&](const char* name, int64_t n) {
    t << name << n;
    t.end_row();
  };
  row("databases", static_cast<int64_t>(cfg.shards.size()));
  row("users", static_cast<int64_t>(cfg.users.size()));
  row("pools", static_cast<int64_t>(s.pools().size()));
  row("free_clients", 0);
  row("used_clients", clients_active);
  row("login_clients", clients_login);
  row("free_servers", servers_free);
  row("used_servers", servers_used);
  row("workers", static_cast<int64_t>(s.workers.size()));
  return t.write("SHOW");
}

std::string show_transactions(const Snapshot& s) {
  Table t{{"kind", kText}, {"client", kText}, {"user", kText}, {"shards", kText}, {"state", kText}};
  for (const auto& w : s.workers)
    for (const auto& x : w.transactions) {
      std::string shards;
      for (const auto& n : x.shards) shards += (shards.empty() ? "" : ",") + n;
      t << "multi-shard" << ("C-" + std::to_string(x.session)) << x.user << shards << x.state;
      t.end_row();
    }
  if (s.in_doubt) {
    t << "in-doubt 2PC"
      << ""
      << ""
      << "" << (std::to_string(s.in_doubt) + " decided, not finished");
    t.end_row();
  }
  return t.write("SHOW");
}

std::string show_routes(const Snapshot& s) {
  Table t{{"name", kText}, {"value", kInt8}};
  uint64_t size = 0, hits = 0, misses = 0;
  for (const auto& w : s.workers) {
    size += w.cache_size;
    hits += w.cache_hits;
    misses += w.cache_misses;
  }
  const auto r = s.routes();
  auto row = [&](std::string name, uint64_t v) {
    t << std::move(name) << v;
    t.end_row();
  };
  row("statements_cached", size);
  row("cache_hits", hits);
  row("cache_misses", misses);
  row("single_shard", r.single);
  row("multi_shard", r.multi);
  row("answered_locally", r.local);
  row("refused", r.refused);
  for (std::size_t i = 0; i < r.merges.size(); ++i)
    row(std::string("multi_shard_") + RouteCounters::kMergeKinds[i], r.merges[i]);
  for (const auto& [code, n] : r.refusals) row("refused_" + code, n);
  return t.write("SHOW");
}

void write_notice(std::string& out, std::string message) {
  proto::ErrorInfo n;
  n.severity = "NOTICE";
  n.code = "00000";
  n.message = std::move(message);
  proto::write_notice(out, n);
}

std::string show_help() {
  std::string out;
  for (const char* line : kHelp) write_notice(out, line);
  proto::CommandComplete{"SHOW"}.write(out);
  return out;
}

std::string show_version() {
  Table t{{"version", kText}};
  t << (std::string("pgshard ") + PGSHARD_VERSION);
  t.end_row();
  return t.write("SHOW");
}

std::string command_complete(std::string_view tag) {
  std::string out;
  proto::CommandComplete{tag}.write(out);
  return out;
}

// SHOW's items, by their upper-case names.
struct ShowItem {
  std::string_view name;
  std::string (*answer)(const Snapshot& s, const config::Config& cfg);
};

constexpr ShowItem kShowItems[] = {
    {"HELP", [](const Snapshot&, const config::Config&) { return show_help(); }},
    {"VERSION", [](const Snapshot&, const config::Config&) { return show_version(); }},
    {"POOLS", [](const Snapshot& s, const config::Config& cfg) { return show_pools(s, cfg); }},
    {"STATS", [](const Snapshot& s, const config::Config&) { return show_stats(s, false, false); }},
    {"STATS_TOTALS",
     [](const Snapshot& s, const config::Config&) { return show_stats(s, true, false); }},
    {"STATS_AVERAGES",
     [](const Snapshot& s, const config::Config&) { return show_stats(s, false, true); }},
    {"CLIENTS", [](const Snapshot& s, const config::Config&) { return show_clients(s); }},
    {"SERVERS", [](const Snapshot& s, const config::Config&) { return show_servers(s); }},
    {"HOSTS", [](const Snapshot& s, const config::Config&) { return show_hosts(s, false); }},
    {"REPLICAS", [](const Snapshot& s, const config::Config&) { return show_hosts(s, true); }},
    {"DATABASES",
     [](const Snapshot& s, const config::Config& cfg) { return show_databases(s, cfg); }},
    {"SHARDS", [](const Snapshot& s, const config::Config& cfg) { return show_shards(s, cfg); }},
    {"CONFIG", [](const Snapshot&, const config::Config& cfg) { return show_config(cfg); }},
    {"LISTS", [](const Snapshot& s, const config::Config& cfg) { return show_lists(s, cfg); }},
    {"TRANSACTIONS", [](const Snapshot& s, const config::Config&) { return show_transactions(s); }},
    {"ROUTES", [](const Snapshot& s, const config::Config&) { return show_routes(s); }},
};

std::string show(const std::string& item, const Snapshot& snap, const config::Config& cfg) {
  const auto what = upper(item);
  for (const auto& i : kShowItems)
    if (i.name == what) return i.answer(snap, cfg);
  return error_answer(sqlstate::kSyntaxError, "unknown SHOW item \"" + item + "\"",
                      "SHOW HELP lists the console's commands");
}

// The commands that change something: for admin.users only.
constexpr std::string_view kChangingVerbs[] = {
    "SHUTDOWN",  "KILL_CLIENT", "KILL",    "RELOAD", "PAUSE", "RESUME",
    "RECONNECT", "SUSPEND",     "DISABLE", "ENABLE", "SET",   "WAIT_CLOSE"};

bool changes_something(std::string_view verb) {
  return std::find(std::begin(kChangingVerbs), std::end(kChangingVerbs), verb) !=
         std::end(kChangingVerbs);
}

// PAUSE, RESUME, RECONNECT or KILL, of one shard (`w[1]`) or of every shard.
std::string act_on_shards(const std::string& verb, const std::vector<std::string>& w,
                          const config::Config& cfg, Effects* effects) {
  int shard = -1;
  if (w.size() == 2 && (shard = cfg.shard_index(w[1])) < 0)
    return error_answer(sqlstate::kUndefinedObject, "no shard \"" + w[1] + "\"",
                        "SHOW SHARDS lists them");
  effects->shard = shard;
  effects->pools = verb == "PAUSE"    ? Effects::Pools::kPause
                   : verb == "RESUME" ? Effects::Pools::kResume
                   : verb == "KILL"   ? Effects::Pools::kKill
                                      : Effects::Pools::kReconnect;
  return command_complete(verb);
}

// KILL_CLIENT `client`: its id as SHOW CLIENTS gives it, "C-" optional.
std::string kill_client(const std::string& client, const Snapshot& snap, Effects* effects) {
  std::string id = client;
  if (id.size() > 2 && (id[0] == 'C' || id[0] == 'c') && id[1] == '-') id = id.substr(2);
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(id.data(), id.data() + id.size(), n);
  if (ec != std::errc() || p != id.data() + id.size())
    return error_answer(sqlstate::kSyntaxError, "KILL_CLIENT takes a client id (SHOW CLIENTS)");
  bool found = false;
  for (const auto& wk : snap.workers)
    for (const auto& c : wk.clients) found |= c.id == n;
  if (!found) return error_answer(sqlstate::kUndefinedObject, "no client C-" + std::to_string(n));
  effects->kill.push_back(n);
  return command_complete("KILL_CLIENT");
}

}  // namespace

std::string answer(std::string_view command, const Snapshot& snap, const config::Config& cfg,
                   bool admin, Effects* effects) {
  Effects ignored;
  if (!effects) effects = &ignored;
  const auto w = words(command);
  if (w.empty()) {
    std::string out;
    proto::write_empty(out, proto::msg::kEmptyQueryResponse);
    return out;
  }
  const auto verb = upper(w[0]);
  if (verb == "SHOW" && w.size() == 2) return show(w[1], snap, cfg);
  const bool changes = changes_something(verb);
  if (changes && !admin)
    return error_answer(sqlstate::kInsufficientPrivilege,
                        "permission denied: " + verb + " needs a user listed in admin.users",
                        "admin.stats_users may run SHOW commands only");
  if ((verb == "PAUSE" || verb == "RESUME" || verb == "RECONNECT" || verb == "KILL") &&
      w.size() <= 2)
    return act_on_shards(verb, w, cfg, effects);
  if (verb == "SHUTDOWN" && w.size() == 1) {
    effects->shutdown = true;
    return command_complete("SHUTDOWN");
  }
  if (verb == "KILL_CLIENT" && w.size() == 2) return kill_client(w[1], snap, effects);
  if (changes)
    return error_answer(sqlstate::kFeatureNotSupported,
                        "the console does not support " + verb + " yet",
                        "SHOW HELP lists the console's commands");
  return error_answer(sqlstate::kSyntaxError, "unknown console command \"" + w[0] + "\"",
                      "SHOW HELP lists the console's commands");
}

// PAUSE holds new work for the shards and returns once none of their servers is in use;
// RESUME lets the held clients go on; RECONNECT renews the shards' server connections.
awaitable<void> act_on_pools(runtime::Shared& shared, const Effects& e) {
  for (auto* w : shared.workers)
    co_await asio::co_spawn(
        w->executor(),
        [w, e]() -> awaitable<void> {
          if (e.pools == Effects::Pools::kReconnect)
            w->reconnect(e.shard);
          else if (e.pools == Effects::Pools::kKill)
            w->kill_shard(e.shard);
          else
            w->pause(e.shard, e.pools == Effects::Pools::kPause);
          co_return;
        },
        asio::use_awaitable);
  if (e.pools != Effects::Pools::kPause) co_return;
  asio::steady_timer tick(co_await asio::this_coro::executor);
  for (;;) {
    const auto snap = co_await collect(shared);
    int busy = 0;
    for (const auto& r : snap.pools())
      if (r.shard >= 0 && (e.shard < 0 || r.shard == e.shard))
        busy += r.stats.total - r.stats.idle - r.stats.connecting;
    if (busy == 0) co_return;
    tick.expires_after(std::chrono::milliseconds(50));
    co_await tick.async_wait(use_nothrow);
  }
}

namespace {

// The statements of a simple query, separated by ';' and answered one after another; a
// query of nothing but blanks is one empty statement (EmptyQueryResponse, as on PostgreSQL).
std::vector<std::string_view> statements(std::string_view sql) {
  std::vector<std::string_view> parts;
  for (std::size_t start = 0; start <= sql.size();) {
    auto end = std::min(sql.find(';', start), sql.size());
    auto part = sql.substr(start, end - start);
    if (!words(part).empty()) parts.push_back(part);
    start = end + 1;
  }
  if (parts.empty()) parts.push_back({});
  return parts;
}

bool is_extended(char type) {
  return type == proto::msg::kParse || type == proto::msg::kBind || type == proto::msg::kDescribe ||
         type == proto::msg::kExecute || type == proto::msg::kClose || type == proto::msg::kFlush ||
         type == proto::msg::kFunctionCall;
}

// One console connection: reads the client's messages and answers them.
class Console {
 public:
  Console(runtime::Worker& worker, runtime::ClientStream& stream, protocol::Buffer& in,
          const config::User& user, std::function<const std::string&()> prefix)
      : worker_(worker),
        shared_(worker.shared()),
        stream_(stream),
        in_(in),
        user_(user),
        prefix_(std::move(prefix)) {}

  awaitable<void> serve(std::string welcome) {
    if (!co_await send(welcome)) co_return;
    for (;;) {
      auto d = proto::decode_frame(in_.view(), 1 << 20);
      if (d.status == proto::DecodeStatus::kError) {
        std::string out;
        proto::write_error(out, proto::fatal(sqlstate::kProtocolViolation, d.error));
        co_await send(out);
        co_return;
      }
      if (d.status == proto::DecodeStatus::kNeedMore) {
        std::size_t room;
        char* at = in_.prepare(4096, &room);
        auto [ec, n] = co_await stream_.read_some(asio::buffer(at, room));
        if (ec) co_return;
        in_.commit(n);
        continue;
      }
      const char type = d.frame.type;
      const std::string body(d.frame.body);
      in_.consume(d.consumed);
      if (type == proto::msg::kTerminate) co_return;
      if (!co_await on_message(type, body)) co_return;
    }
  }

 private:
  awaitable<bool> send(const std::string& bytes) {
    auto [ec, n] = co_await stream_.write(asio::buffer(bytes));
    co_return !ec;
  }

  // Answers one message; false when the connection ends.
  awaitable<bool> on_message(char type, const std::string& body) {
    std::string out;
    if (type == proto::msg::kQuery) co_return co_await on_query(body.substr(0, body.find('\0')));
    if (type == proto::msg::kSync) {
      failed_batch_ = false;
      proto::ReadyForQuery{'I'}.write(out);
      co_return co_await send(out);
    }
    if (is_extended(type)) {
      if (failed_batch_) co_return true;
      failed_batch_ = type != proto::msg::kFunctionCall;
      out = error_answer(sqlstate::kFeatureNotSupported,
                         "the admin console accepts simple queries only");
      if (type == proto::msg::kFunctionCall) proto::ReadyForQuery{'I'}.write(out);
      co_return co_await send(out);
    }
    if (type == proto::msg::kCopyData || type == proto::msg::kCopyDone ||
        type == proto::msg::kCopyFail)
      co_return true;  // outside COPY these are ignored, as PostgreSQL does
    proto::write_error(out, proto::fatal(sqlstate::kProtocolViolation,
                                         std::string("unexpected message type '") + type + "'"));
    co_await send(out);
    co_return false;
  }

  // A simple query: each statement's answer, ReadyForQuery, then what the commands asked
  // of the process (KILL_CLIENT, SHUTDOWN).
  awaitable<bool> on_query(std::string sql) {
    std::string out;
    Effects effects;
    for (const auto part : statements(sql))
      if (!co_await answer_statement(part, effects, out)) break;
    proto::ReadyForQuery{'I'}.write(out);
    if (!co_await send(out)) co_return false;
    for (auto id : effects.kill)
      for (auto* w : shared_.workers) asio::post(w->executor(), [w, id] { w->kill_client(id); });
    if (effects.shutdown) {
      spdlog::info("{}: console: SHUTDOWN", prefix_());
      ::kill(::getpid(), SIGTERM);
    }
    co_return true;
  }

  // Appends one statement's answer to `out`; false when it failed (the query's other
  // statements are skipped).
  awaitable<bool> answer_statement(std::string_view part, Effects& effects, std::string& out) {
    // Rights as the configuration in force gives them: a user RELOAD took out of
    // admin.users (or out of the console) loses them in a console already open.
    const auto& now = shared_.config();
    const bool admin = now.admin.is_admin(user_.name);
    if (!now.admin.may_view(user_.name)) {
      out += error_answer(sqlstate::kInsufficientPrivilege,
                          "user \"" + user_.name + "\" may no longer use the admin console",
                          "list the user under admin.users or admin.stats_users");
      co_return false;
    }
    const auto w = words(part);
    const std::string verb = w.empty() ? std::string() : upper(w[0]);
    const bool needs = !w.empty() && verb != "SHUTDOWN";
    if (admin && w.size() == 1 && verb == "RELOAD") co_return reload(out);
    Snapshot snap;  // (not `needs ? co_await ... : ...`: GCC 12 miscompiles co_await in ?:)
    if (needs) snap = co_await collect(shared_);
    const auto reply = answer(part, snap, worker_.config(), admin, &effects);
    if (effects.pools != Effects::Pools::kNone) {
      co_await act_on_pools(shared_, effects);
      effects.pools = Effects::Pools::kNone;
    }
    out += reply;
    spdlog::info("{}: console: {}", prefix_(), std::string(part.substr(0, 200)));
    co_return reply.empty() || reply[0] != proto::msg::kErrorResponse;
  }

  // RELOAD, answered here: it needs the process (shared_.reload), not a snapshot.
  bool reload(std::string& out) {
    std::string report;
    const bool ok = shared_.reload && shared_.reload(&report);
    spdlog::info("{}: console: RELOAD: {}", prefix_(), report);
    if (ok) {
      write_notice(out, report);
      proto::CommandComplete{"RELOAD"}.write(out);
      return true;
    }
    proto::write_error(out, proto::error("F0000", report));
    return false;
  }

  runtime::Worker& worker_;
  runtime::Shared& shared_;
  runtime::ClientStream& stream_;
  protocol::Buffer& in_;
  const config::User& user_;
  std::function<const std::string&()> prefix_;
  bool failed_batch_ = false;  // an extended-protocol message was refused: skip to Sync
};

}  // namespace

awaitable<void> run_console(runtime::Worker& worker, runtime::ClientStream& stream,
                            protocol::Buffer& in, const config::User& user, std::string welcome,
                            std::function<const std::string&()> prefix) {
  Console console(worker, stream, in, user, std::move(prefix));
  co_await console.serve(std::move(welcome));
}

}  // namespace pgshard::admin
