// Health and lag of every host (see health.hpp).
#include "proxy/runtime/health.hpp"

#include <spdlog/spdlog.h>

#include <charconv>
#include <memory>

#include "protocol/messages.hpp"
#include "proxy/pool/server_conn.hpp"
#include "proxy/runtime/maintenance.hpp"
#include "proxy/runtime/shared.hpp"

namespace pgshard::runtime {

using namespace asio::experimental::awaitable_operators;

const char* to_string(HostRole r) {
  switch (r) {
    case HostRole::kUnknown:
      return "unknown";
    case HostRole::kPrimary:
      return "primary";
    case HostRole::kReplica:
      return "replica";
  }
  return "?";
}

const char* state_of(const HostState& h, Clock::time_point now) {
  if (h.checks == 0) return "unchecked";
  if (!h.up) return "down";
  if (h.banned_until > now) return "banned";
  return h.lagging ? "lagging" : "up";
}

// A replica's time behind is how long ago it replayed its newest commit, while it has
// received WAL it has not replayed yet (a caught-up replica of an idle primary is 0 behind,
// however old its last commit). A restarted replica reports as received only the start of
// the WAL segment it streams from, below what it replayed, until new WAL comes; one that is
// not streaming reports nothing: neither is behind in time (its lag in bytes still shows
// a primary that moved on).
const char* const kHealthCheckSql =
    "SELECT pg_is_in_recovery(), "
    "(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_insert_lsn() END - '0/0'::pg_lsn)::bigint, "
    "CASE WHEN NOT pg_is_in_recovery() "
    "OR coalesce(pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn(), true) THEN 0 "
    "ELSE coalesce((extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint, "
    "0) END, "
    "(SELECT system_identifier FROM pg_control_system()), "
    // The timeline: a primary's from the name of the WAL file it writes (PostgreSQL 15 names
    // it after the insertion timeline at once on promotion, before the end-of-recovery
    // checkpoint shows it in pg_control), a replica's from its last restartpoint or, newer,
    // the timeline of its minimum recovery point (moved on as replayed pages are written).
    "CASE WHEN pg_is_in_recovery() THEN greatest((SELECT timeline_id FROM "
    "pg_control_checkpoint()), (SELECT min_recovery_end_timeline FROM pg_control_recovery())) "
    "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int END";

namespace {

template <typename T>
std::optional<T> number(const protocol::Value& v) {
  if (!v) return std::nullopt;
  T out{};
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
  if (ec != std::errc() || p != v->data() + v->size()) return std::nullopt;
  return out;
}

}  // namespace

std::optional<CheckResult> parse_check_row(std::string_view body) {
  auto row = protocol::DataRow::parse(body);
  if (!row || row->values.size() != 5 || !row->values[0]) return std::nullopt;
  CheckResult r;
  r.in_recovery = *row->values[0] == "t";
  auto lsn = number<int64_t>(row->values[1]);
  auto lag = number<int64_t>(row->values[2]);
  auto system = number<uint64_t>(row->values[3]);
  auto timeline = number<uint32_t>(row->values[4]);  // (NULL: unknown)
  if (!lsn || *lsn < 0 || !lag || !system) return std::nullopt;
  r.timeline = timeline.value_or(0);
  r.lsn = static_cast<uint64_t>(*lsn);
  r.lag_ms = std::max<int64_t>(0, *lag);
  r.system = *system;
  return r;
}

void HostHealth::configure(const config::Config& cfg) {
  std::vector<HostState> next;
  for (std::size_t s = 0; s < cfg.shards.size(); ++s) {
    const auto& shard = cfg.shards[s];
    auto add = [&](const config::PgUrl& url, bool primary) {
      HostState h;
      h.shard = static_cast<int>(s);
      h.shard_name = shard.name;
      h.host = url.host;
      h.port = url.port;
      h.listed_primary = primary;
      next.push_back(std::move(h));
    };
    add(shard.primary, true);
    for (const auto& r : shard.replicas) add(r, false);
  }
  std::lock_guard lock(mu_);
  for (auto& h : next)
    for (const auto& old : hosts_)
      if (old.shard == h.shard && old.host == h.host && old.port == h.port &&
          old.listed_primary == h.listed_primary)
        h = old;
  hosts_ = std::move(next);
  // (A reload keeps the shards and their hosts: config::reload_refusals.)
  writers_.resize(cfg.shards.size());
  for (std::size_t s = 0; s < cfg.shards.size(); ++s) writers_[s].name = cfg.shards[s].name;
}

WriterChoice choose_writer(const std::vector<WriterCandidate>& hosts, int current) {
  std::vector<int> primaries;
  for (int i = 0; i < static_cast<int>(hosts.size()); ++i)
    if (hosts[i].up && hosts[i].role == HostRole::kPrimary) primaries.push_back(i);
  if (primaries.empty()) return {current, {}};
  if (primaries.size() == 1) return {primaries[0], {}};
  uint32_t highest = 0;
  bool unknown = false;
  for (int i : primaries) {
    highest = std::max(highest, hosts[i].timeline);
    unknown |= hosts[i].timeline == 0;
  }
  std::vector<int> top;
  for (int i : primaries)
    if (unknown || hosts[i].timeline == highest) top.push_back(i);
  if (top.size() == 1) return {top[0], {}};
  return {current, std::move(top)};
}

Writer HostHealth::writer(int shard) const {
  std::lock_guard lock(mu_);
  if (shard < 0 || shard >= static_cast<int>(writers_.size())) return {};
  const auto& w = writers_[static_cast<std::size_t>(shard)];
  return {w.host, w.refusal};
}

namespace {

std::string address(const HostState& h) {
  return h.host + ":" + std::to_string(h.port);
}

}  // namespace

void HostHealth::decide_writer(int shard) {
  if (shard < 0 || shard >= static_cast<int>(writers_.size())) return;
  std::vector<const HostState*> hosts;  // the shard's, in its host order
  for (const auto& h : hosts_)
    if (h.shard == shard) hosts.push_back(&h);
  // Not before every host has answered or failed once: at start, the first host to answer
  // out of recovery is not yet known to be the only one.
  for (const auto* h : hosts)
    if (h->checks == 0) return;
  std::vector<WriterCandidate> seen;
  for (const auto* h : hosts) seen.push_back({h->up, h->role, h->timeline});
  auto& w = writers_[static_cast<std::size_t>(shard)];
  const auto choice = choose_writer(seen, w.host);
  std::string refusal;
  if (!choice.rivals.empty()) {
    refusal = "shard " + w.name + " has more than one primary (";
    for (std::size_t i = 0; i < choice.rivals.size(); ++i)
      refusal += (i ? " and " : "") + address(*hosts[static_cast<std::size_t>(choice.rivals[i])]);
    refusal +=
        " are out of recovery, none on a higher timeline): its writes are refused until one is "
        "a standby again or stopped";
  }
  const auto& chosen = seen[static_cast<std::size_t>(choice.host)];
  const bool was_found = w.found;
  w.found |= choice.rivals.empty() && chosen.up && chosen.role == HostRole::kPrimary;
  if (choice.host == w.host && refusal == w.refusal) return;
  const auto& from = *hosts[static_cast<std::size_t>(w.host)];
  const auto& to = *hosts[static_cast<std::size_t>(choice.host)];
  if (choice.host != w.host && was_found) {
    spdlog::warn("shard {}: primary moved from {} to {} (timeline {})", w.name, address(from),
                 address(to), to.timeline);
    ++w.failovers;
  } else if (choice.host != w.host) {
    spdlog::info("shard {}: primary is {} (timeline {}), not {} listed first", w.name, address(to),
                 to.timeline, address(from));
  }
  if (refusal != w.refusal) {
    if (refusal.empty())
      spdlog::warn("shard {}: one primary again ({}): writes resume", w.name,
                   address(*hosts[static_cast<std::size_t>(choice.host)]));
    else
      spdlog::error("{}", refusal);
  }
  w.host = choice.host;
  w.refusal = std::move(refusal);
  moves_.fetch_add(1, std::memory_order_release);
}

std::vector<HostState> HostHealth::snapshot() const {
  std::lock_guard lock(mu_);
  auto out = hosts_;
  int host = 0;  // within its shard
  for (std::size_t i = 0; i < out.size(); ++i) {
    host = i > 0 && out[i].shard == out[i - 1].shard ? host + 1 : 0;
    if (out[i].shard >= static_cast<int>(writers_.size())) continue;
    const auto& w = writers_[static_cast<std::size_t>(out[i].shard)];
    out[i].writes = w.host == host && w.refusal.empty();
    out[i].refused = !w.refusal.empty();
    out[i].failovers = w.failovers;
  }
  return out;
}

std::size_t HostHealth::size() const {
  std::lock_guard lock(mu_);
  return hosts_.size();
}

void HostHealth::record(std::size_t index, const CheckResult& r, Clock::time_point now,
                        const config::Replication& limits) {
  std::lock_guard lock(mu_);
  if (index >= hosts_.size()) return;
  auto& h = hosts_[index];
  h.up = true;
  h.role = r.in_recovery ? HostRole::kReplica : HostRole::kPrimary;
  h.lsn = r.lsn;
  h.system = r.system;
  h.timeline = r.timeline;
  h.lag_ms = r.in_recovery ? r.lag_ms : 0;
  h.checked_at = now;
  h.check_started = r.started;
  h.checks++;
  h.error.clear();
  decide_writer(h.shard);
  update_lag(h.shard, limits);
}

void HostHealth::record_failure(std::size_t index, std::string error, Clock::time_point now,
                                const config::Replication& limits) {
  std::lock_guard lock(mu_);
  if (index >= hosts_.size()) return;
  auto& h = hosts_[index];
  h.up = false;
  h.checked_at = now;
  h.checks++;
  h.failures++;
  h.bans += now >= h.banned_until;  // (a failure while banned extends that ban)
  h.banned_until = now + limits.ban_time;
  h.error = std::move(error);
  decide_writer(h.shard);
}

HostState* HostHealth::writer_host(int shard) {
  int host = shard >= 0 && shard < static_cast<int>(writers_.size())
                 ? writers_[static_cast<std::size_t>(shard)].host
                 : 0;
  for (auto& h : hosts_)
    if (h.shard == shard && host-- == 0) return &h;
  return nullptr;
}

namespace {

// A caught-up replica of an idle primary may show as far behind as a WAL page header (the
// primary's insert position skips it at a page boundary, the replica's replay end does not).
constexpr int64_t kCaughtUpSlack = 64;

}  // namespace

void HostHealth::note_stuck(HostState& h) {
  // Behind its primary with the same replay position as at an earlier check: behind by at
  // least the time since then, whatever the replica reports (one that receives nothing, or
  // cannot replay, says 0). A replica that replays, however slowly, is not stuck.
  if (h.lag_bytes <= kCaughtUpSlack) {
    h.stuck_since = {};
    return;
  }
  if (h.stuck_since == Clock::time_point{} || h.lsn != h.stuck_lsn) {
    h.stuck_lsn = h.lsn;
    h.stuck_since = h.checked_at;
  }
  const auto stuck =
      std::chrono::duration_cast<std::chrono::milliseconds>(h.checked_at - h.stuck_since);
  h.lag_ms = std::max<int64_t>(h.lag_ms, stuck.count());
}

void HostHealth::update_lag(int shard, const config::Replication& limits) {
  // The shard's primary: the host that takes its writes, once it answered out of recovery.
  const HostState* primary = writer_host(shard);
  if (primary && !(primary->up && primary->role == HostRole::kPrimary)) primary = nullptr;
  for (auto& h : hosts_) {
    if (h.shard != shard || h.role != HostRole::kReplica || !h.up) continue;
    h.lag_bytes = primary
                      ? std::max<int64_t>(
                            0, static_cast<int64_t>(primary->lsn - std::min(primary->lsn, h.lsn)))
                      : -1;
    note_stuck(h);
    const bool bytes_over =
        limits.max_lag_bytes &&
        (h.lag_bytes < 0 || static_cast<uint64_t>(h.lag_bytes) > limits.max_lag_bytes);
    const bool time_over = limits.max_lag_time.count() && h.lag_ms > limits.max_lag_time.count();
    // A replica on an older timeline than its primary's follows a primary that is gone or
    // was demoted: what it serves may never become the primary's data, whatever its lag.
    const bool behind_timeline =
        primary && primary->timeline && h.timeline && h.timeline < primary->timeline;
    const bool over = bytes_over || time_over || behind_timeline;
    h.bans += over && !h.lagging;
    h.lagging = over;
  }
}

bool HostHealth::readable(std::size_t index, Clock::time_point now) const {
  std::lock_guard lock(mu_);
  if (index >= hosts_.size()) return false;
  const auto& h = hosts_[index];
  return h.up && h.role == HostRole::kReplica && !h.lagging && now >= h.banned_until;
}

bool HostHealth::readable_replicas(int shard, uint64_t min_lsn, Clock::time_point now,
                                   std::vector<int>& out) const {
  std::lock_guard lock(mu_);
  bool any_up = false;
  int replica = 0;
  for (const auto& h : hosts_) {
    if (h.shard != shard || h.listed_primary) continue;
    const bool up = h.up && h.role == HostRole::kReplica && now >= h.banned_until;
    any_up |= up;
    if (up && !h.lagging && h.lsn >= min_lsn) out.push_back(replica);
    ++replica;
  }
  return any_up;
}

std::optional<uint64_t> HostHealth::primary_position_since(int shard, Clock::time_point since) {
  std::lock_guard lock(mu_);
  auto* h = writer_host(shard);
  if (!h) return std::nullopt;
  if (h->up && h->role == HostRole::kPrimary && h->check_started > since) return h->lsn;
  h->wanted = true;
  return std::nullopt;
}

void HostHealth::want_checks(int shard) {
  std::lock_guard lock(mu_);
  for (auto& h : hosts_)
    if (h.shard == shard) h.wanted = true;
}

void HostHealth::count_read(int shard, int replica, ReadCount how) {
  std::lock_guard lock(mu_);
  int seen = -1;  // replicas of the shard passed so far
  HostState* primary = replica < 0 ? writer_host(shard) : nullptr;
  for (auto& h : hosts_) {
    if (h.shard != shard) continue;
    if (primary ? &h != primary : h.listed_primary || ++seen != replica) continue;
    ++h.reads;
    h.fallbacks += how == ReadCount::kFallback;
    h.waited += how == ReadCount::kWaitedForReplica;
    return;
  }
}

void HostHealth::ban_replica(int shard, int replica, std::string error, Clock::time_point now,
                             const config::Replication& limits) {
  std::lock_guard lock(mu_);
  int seen = -1;  // the shard's replicas follow its primary, in map order
  for (auto& h : hosts_) {
    if (h.shard != shard || h.listed_primary || ++seen != replica) continue;
    h.up = false;
    h.banned_until = now + limits.ban_time;
    h.error = std::move(error);
    return;
  }
}

bool HostHealth::take_wanted(std::size_t index) {
  std::lock_guard lock(mu_);
  if (index >= hosts_.size() || !hosts_[index].wanted) return false;
  hosts_[index].wanted = false;
  return true;
}

namespace {

constexpr auto kWantedStep = std::chrono::milliseconds(5);

// One host's checks, for as long as the process runs.
awaitable<void> check_host(Shared& shared, std::size_t index, pool::BackendTarget target) {
  auto ex = co_await asio::this_coro::executor;
  std::unique_ptr<pool::ServerConn> conn;
  asio::steady_timer pause(ex);
  for (;;) {
    const auto& cfg = shared.config();
    const auto& limits = cfg.replication;
    std::string error;
    if (!conn || conn->broken) {
      conn = std::make_unique<pool::ServerConn>(ex, target);
      error = co_await conn->connect(limits.health_timeout);
      if (!error.empty()) conn.reset();
    }
    if (conn) {
      std::optional<CheckResult> result;
      const auto started = Clock::now();
      asio::steady_timer limit(ex);
      limit.expires_after(limits.health_timeout);
      auto done =
          co_await (conn->run_own(kHealthCheckSql, cfg.listen.max_message_size,
                                  [&](std::string_view row) { result = parse_check_row(row); }) ||
                    limit.async_wait(asio::use_awaitable));
      if (done.index() == 1) {
        error = "no answer within " + std::to_string(limits.health_timeout.count()) + " ms";
        conn.reset();
      } else if (!std::get<0>(done)) {
        error = "connection lost";
        conn.reset();
      } else if (!conn->replies.error.empty()) {
        error = conn->replies.error;
      } else if (!result) {
        error = "unexpected answer to the health check";
      } else {
        result->started = started;
        shared.hosts.record(index, *result, Clock::now(), limits);
      }
    }
    if (!error.empty()) {
      spdlog::debug("health check of {}:{} (shard {}) failed: {}", target.host, target.port,
                    target.shard_name, error);
      shared.hosts.record_failure(index, std::move(error), Clock::now(), limits);
    }
    // The interval, cut short when a read waits on this host's shard (want_checks): it is
    // watched in short steps, one lock each, rather than woken across threads.
    const auto next = Clock::now() + limits.health_interval;
    while (Clock::now() < next && !shared.hosts.take_wanted(index)) {
      pause.expires_after(std::min<Clock::duration>(kWantedStep, next - Clock::now()));
      co_await pause.async_wait(use_nothrow);
    }
  }
}

}  // namespace

void start_health_checks(Shared& shared, asio::any_io_executor ex) {
  const auto& cfg = shared.config();
  bool any_replica = false;
  for (const auto& s : cfg.shards) any_replica |= !s.replicas.empty();
  if (!any_replica) return;
  shared.hosts.configure(cfg);
  // In configure's order: each shard's primary, then its replicas.
  std::size_t index = 0;
  for (std::size_t s = 0; s < cfg.shards.size(); ++s) {
    const auto& shard = cfg.shards[s];
    auto check = [&](const config::PgUrl& url) {
      const auto login = maintenance_login(cfg, shard, url);
      pool::BackendTarget target{static_cast<int>(s), shard.name,     url.host,      url.port,
                                 login.user,          login.password, login.database};
      asio::co_spawn(ex, check_host(shared, index++, std::move(target)), asio::detached);
    };
    check(shard.primary);
    for (const auto& r : shard.replicas) check(r);
  }
}

}  // namespace pgshard::runtime
