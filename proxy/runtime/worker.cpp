// A worker's pools and caches (see worker.hpp).
#include "proxy/runtime/worker.hpp"

#include <algorithm>
#include <limits>

#include "proxy/runtime/maintenance.hpp"

namespace pgshard::runtime {

Worker::Worker(int index, Shared& shared)
    : index_(index),
      shared_(shared),
      cache_(shared.config().router_cache_size, &shared.config()),
      columns_(shared.catalog_generation) {}

Worker::~Worker() {
  // Sessions still suspended inside the io_context hold leases; destroying the context
  // returns them, so the pools must outlive it, but idle sockets must close first.
  close_pools();
  ctx_.reset();
}

void Worker::close_pools() {
  for (auto& [key, p] : pools_) p->close_all();
}

void Worker::stop_context() {
  ctx_->stop();
}

pool::Pool& Worker::pool(int target, const config::User& user) {
  auto key = std::make_pair(target, pool_user_key(user));
  auto it = pools_.find(key);
  if (it != pools_.end()) return *it->second;
  const auto& cfg = config();
  // A shard's primary, or one of its replicas (a target past the shards: Config::host_of).
  const auto host = cfg.host_of(target);
  const auto& s = cfg.shards[static_cast<std::size_t>(host.shard)];
  const auto& url =
      host.replica < 0 ? s.primary : s.replicas[static_cast<std::size_t>(host.replica)];
  pool::BackendTarget t;
  t.shard = target;
  t.shard_name =
      host.replica < 0 ? s.name : s.name + " replica " + url.host + ":" + std::to_string(url.port);
  t.host = url.host;
  t.port = url.port;
  t.user = url.user.empty() ? user.name : url.user;
  t.password = url.user.empty() ? user.plaintext.value_or("") : url.password;
  t.database = !user.database.empty() ? user.database
               : url.database.empty() ? t.user
                                      : url.database;
  auto& p = make_pool(key, std::move(t), s.pool_size);
  p.count_requests(cfg.admin.stats);
  p.pause(paused_.count(host.shard) > 0);
  if (host.replica < 0) follow_writer(p, host.shard);
  return p;
}

namespace {

// Where `shard`'s writes go now: the host the health checks found out of recovery.
pool::PoolHost writer_host(const config::Config& cfg, const HostHealth& hosts, int shard) {
  const auto w = hosts.writer(shard);
  const auto& url = cfg.shards[static_cast<std::size_t>(shard)].host(w.host);
  return pool::PoolHost{url.host, url.port, w.refusal};
}

}  // namespace

std::string Worker::demoted_primary(const pool::ServerConn& conn) const {
  const auto& cfg = config();
  const int shard = conn.target().shard;
  // (No failover yet: every shard's writes are where pgshard started them.)
  if (shared_.hosts.moves().load(std::memory_order_acquire) == 0 || shard < 0 ||
      shard >= static_cast<int>(cfg.shards.size()))
    return {};
  const auto to = writer_host(cfg, shared_.hosts, shard);
  const auto& at = conn.target();
  if (!to.refusal.empty() || (to.host == at.host && to.port == at.port)) return {};
  return "shard " + cfg.shards[static_cast<std::size_t>(shard)].name + "'s primary moved to " +
         to.host + ":" + std::to_string(to.port) + "; this transaction's server is on " + at.host +
         ":" + std::to_string(at.port);
}

void Worker::follow_writer(pool::Pool& p, int shard) {
  p.follow(shared_.hosts.moves(),
           [this, shard] { return writer_host(config(), shared_.hosts, shard); });
}

int Worker::workers() const {
  return std::max({config().listen.workers, static_cast<int>(shared_.workers.size()), index_ + 1});
}

pool::Pool& Worker::make_pool(const std::pair<int, std::string>& key, pool::BackendTarget target,
                              int limit) {
  const auto& cfg = config();
  auto& shared = shared_.pools.get(key, std::max(1, limit), workers());
  auto p = std::make_unique<pool::Pool>(executor(), index_, shared, std::move(target),
                                        cfg.timeouts.pool_wait, cfg.timeouts.connect);
  auto& ref = *p;
  pools_.emplace(key, std::move(p));
  return ref;
}

std::vector<std::pair<const void*, pool::PoolHolders>> Worker::holders_of(
    const std::set<const void*>& pools) const {
  std::vector<std::pair<const void*, pool::PoolHolders>> out;
  for (const auto& [key, p] : pools_)
    if (const void* id = &p->shared(); pools.contains(id)) out.emplace_back(id, p->holders());
  return out;
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
  const uint64_t generation = shared_.catalog_generation.load(std::memory_order_relaxed);
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
  auto& p = make_pool(key, std::move(t), kDirectoryPoolSize * workers());
  p.count_requests(config().admin.stats);
  return p;
}

pool::Pool& Worker::gate_pool() {
  const auto key = std::make_pair(std::numeric_limits<int>::min(), std::string());
  if (auto it = pools_.find(key); it != pools_.end()) return *it->second;
  const auto& shard = config().shards.front();
  const auto login = runtime::maintenance_login(config(), shard);
  pool::BackendTarget t;
  t.shard = -1;
  t.shard_name = "visibility coordinator (shard " + shard.name + ")";
  t.host = shard.primary.host;
  t.port = shard.primary.port;
  t.user = login.user;
  t.password = login.password;
  // Where every instance takes the lock, apart from the application's database.
  t.database = "postgres";
  auto& p = make_pool(key, std::move(t), kGatePoolSize * workers());
  p.count_requests(false);
  follow_writer(p, 0);
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

void Worker::apply_config() {
  const auto& cfg = config();
  // Analyses depend on the map (reference tables): statements are analysed afresh.
  cache_ = router::AnalysisCache(cfg.router_cache_size, &cfg);
  for (auto& [key, p] : pools_) {
    if (key.first < 0) continue;  // directories: fixed size
    // (A replica's pool has its shard's size: targets past the shards are replicas.)
    const int shard = cfg.host_of(key.first).shard;
    const int pool_size = cfg.shards[static_cast<std::size_t>(shard)].pool_size;
    p->set_limits(std::max(1, pool_size), cfg.timeouts.pool_wait, cfg.timeouts.connect);
    p->count_requests(cfg.admin.stats);
  }
}

void Worker::pause(int shard, bool on) {
  for (int i = 0; i < static_cast<int>(config().shards.size()); ++i)
    if (shard < 0 || shard == i) on ? (void)paused_.insert(i) : (void)paused_.erase(i);
  for (auto& [key, p] : pools_)
    if (key.first >= 0 && (shard < 0 || config().host_of(key.first).shard == shard)) p->pause(on);
}

void Worker::reconnect(int shard) {
  for (auto& [key, p] : pools_)
    if (key.first >= 0 && (shard < 0 || config().host_of(key.first).shard == shard)) p->reconnect();
}

void Worker::add_pools(WorkerSnapshot& out,
                       const std::map<const pool::ServerConn*, uint64_t>& held) const {
  auto server_row = [&](const pool::Pool& p, const pool::ServerConn& c, const char* state,
                        uint64_t client) {
    runtime::ServerRow r;
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
    runtime::PoolRow row;
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
}

void Worker::prune_pools() {
  // Connections to other databases than the shards' own (template1, a client's) are not
  // kept idle long: PostgreSQL refuses CREATE DATABASE from a template, and DROP DATABASE,
  // while any session is connected to it.
  for (auto& [key, p] : pools_)
    p->prune(
        key.second.find(kDatabaseSeparator) == std::string::npos
            ? config().timeouts.server_idle
            : std::min<config::Millis>(config().timeouts.server_idle, std::chrono::seconds(5)));
}

}  // namespace pgshard::runtime
