// Every host's metrics and dashboard rows (see host_report.hpp).
#include "proxy/admin/host_report.hpp"

#include <algorithm>
#include <array>
#include <map>
#include <optional>
#include <vector>

namespace pgshard::admin {

namespace {

using runtime::HostRole;
using runtime::HostState;

// A family with one sample per host, where `value` gives one (nullopt: no sample).
struct HostMetric {
  const char* name;
  const char* type;
  const char* help;
  std::optional<double> (*value)(const HostState& h);
};

constexpr HostMetric kHostMetrics[] = {
    {"pgshard_host_up", "gauge", "1 when the host answered its last health check",
     [](const HostState& h) -> std::optional<double> {
       if (h.checks == 0) return std::nullopt;
       return h.up ? 1 : 0;
     }},
    {"pgshard_host_in_recovery", "gauge",
     "1 when the host answered its last check in recovery (a replica), 0 out of it (a primary)",
     [](const HostState& h) -> std::optional<double> {
       if (h.role == HostRole::kUnknown) return std::nullopt;
       return h.role == HostRole::kReplica ? 1 : 0;
     }},
    {"pgshard_host_lag_bytes", "gauge",
     "replica: its primary's WAL position minus its replay position",
     [](const HostState& h) -> std::optional<double> {
       if (h.role != HostRole::kReplica || h.lag_bytes < 0) return std::nullopt;
       return static_cast<double>(h.lag_bytes);
     }},
    {"pgshard_host_lag_seconds", "gauge",
     "replica: how long ago it replayed its newest commit while it has WAL not replayed",
     [](const HostState& h) -> std::optional<double> {
       if (h.role != HostRole::kReplica || h.lag_ms < 0) return std::nullopt;
       return static_cast<double>(h.lag_ms) / 1000;
     }},
    {"pgshard_host_timeline", "gauge", "the timeline the host reported at its last check",
     [](const HostState& h) -> std::optional<double> {
       if (h.timeline == 0) return std::nullopt;
       return h.timeline;
     }},
    {"pgshard_host_takes_writes", "gauge",
     "1 on the host the shard's writes go to (failover moves it), 0 on the others",
     [](const HostState& h) -> std::optional<double> { return h.writes && !h.refused ? 1 : 0; }},
    {"pgshard_host_reads_total", "counter",
     "reads that could go to a replica routed to the host (on a primary: kept there)",
     [](const HostState& h) -> std::optional<double> { return static_cast<double>(h.reads); }},
    {"pgshard_host_bans_total", "counter",
     "times the host was banned (a failed check) or turned lagging (past max_replica_lag)",
     [](const HostState& h) -> std::optional<double> { return static_cast<double>(h.bans); }},
    {"pgshard_host_read_your_writes_waits_total", "counter",
     "primary: reads it took after waiting read_your_writes.wait for a replica in vain",
     [](const HostState& h) -> std::optional<double> {
       if (!h.listed_primary) return std::nullopt;
       return static_cast<double>(h.waited);
     }},
    {"pgshard_host_primary_fallbacks_total", "counter",
     "primary: reads it took because no replica was up (read_from: replicas)",
     [](const HostState& h) -> std::optional<double> {
       if (!h.listed_primary) return std::nullopt;
       return static_cast<double>(h.fallbacks);
     }},
};

const char* listed_role(const HostState& h) {
  return h.listed_primary ? "primary" : "replica";
}

std::string address(const HostState& h) {
  return h.host + ":" + std::to_string(h.port);
}

// The pool target of each host of the snapshot (Config::host_of's numbering: the shards'
// primaries, then every shard's replicas in map order), -1 where the map has no such host.
std::vector<int> targets_of(const std::vector<HostState>& hosts, const config::Config& cfg) {
  std::vector<int> out;
  std::map<int, int> replicas_seen;  // per shard
  for (const auto& h : hosts) {
    int target = h.shard;
    if (!h.listed_primary) {
      target = static_cast<int>(cfg.shards.size());
      for (int s = 0; s < h.shard && s < static_cast<int>(cfg.shards.size()); ++s)
        target += static_cast<int>(cfg.shards[static_cast<std::size_t>(s)].replicas.size());
      target += replicas_seen[h.shard]++;
    }
    const auto host = cfg.host_of(target);
    out.push_back(host.shard == h.shard && (host.replica < 0) == h.listed_primary ? target : -1);
  }
  return out;
}

// Per shard, from its hosts' rows (each carries its shard's writer state).
void shard_write_metrics(Exposition& e, const Snapshot& snap) {
  std::map<int, std::string> shards;  // shard -> name, in shard order
  for (const auto& h : snap.hosts) shards.emplace(h.shard, h.shard_name);
  e.family("pgshard_shard_writes_refused", "gauge",
           "1 while the shard's writes are refused: two of its hosts say they are primaries");
  for (const auto& [shard, name] : shards)
    e.sample("pgshard_shard_writes_refused", {{"shard", name}},
             shard_writes(snap, shard).refused ? 1 : 0);
  e.family("pgshard_shard_failovers_total", "counter",
           "times the shard's writes moved to another of its hosts");
  for (const auto& [shard, name] : shards)
    e.sample("pgshard_shard_failovers_total", {{"shard", name}},
             static_cast<double>(shard_writes(snap, shard).failovers));
}

}  // namespace

ShardWrites shard_writes(const Snapshot& snap, int shard) {
  ShardWrites w;
  for (const auto& h : snap.hosts) {
    if (h.shard != shard) continue;
    w.refused = w.refused || h.refused;
    w.failovers = std::max(w.failovers, h.failovers);
    if (h.writes) w.writer = address(h);
  }
  if (w.refused) w.writer.clear();
  return w;
}

void host_metrics(Exposition& e, const Snapshot& snap, const config::Config& cfg) {
  std::vector<std::string> addresses;
  for (const auto& h : snap.hosts) addresses.push_back(address(h));
  auto labels = [&](std::size_t i) {
    const auto& h = snap.hosts[i];
    return std::array<Label, 3>{Label{"shard", h.shard_name}, Label{"host", addresses[i]},
                                Label{"role", listed_role(h)}};
  };
  for (const auto& m : kHostMetrics) {
    e.family(m.name, m.type, m.help);
    for (std::size_t i = 0; i < snap.hosts.size(); ++i)
      if (const auto v = m.value(snap.hosts[i])) e.sample(m.name, labels(i), *v);
  }
  shard_write_metrics(e, snap);
  // Latency per host: its pool's (every user's) requests, replicas' pools included.
  e.family("pgshard_host_query_duration_seconds", "histogram",
           "time from a client request sent to the host to its ReadyForQuery");
  const auto rows = snap.shards();
  const auto targets = targets_of(snap.hosts, cfg);
  for (std::size_t i = 0; i < snap.hosts.size(); ++i) {
    if (targets[i] < 0) continue;
    pool::Histogram h;
    for (const auto& r : rows)
      if (r.shard == targets[i]) h = r.counters.query_time;
    const auto l = labels(i);
    e.histogram("pgshard_host_query_duration_seconds", l, h);
  }
}

std::string hosts_json(const Snapshot& snap, int shard) {
  std::string j = "[";
  for (const auto& h : snap.hosts) {
    if (h.shard != shard) continue;
    if (j.size() > 1) j += ',';
    const bool replica = h.role == HostRole::kReplica;
    j += "{\"host\":\"" + escaped(address(h)) + "\",\"listed_as\":\"" + listed_role(h) +
         "\",\"role\":\"" + runtime::to_string(h.role) + "\",\"state\":\"" +
         runtime::state_of(h, snap.taken) + "\",\"lag_bytes\":" +
         (replica && h.lag_bytes >= 0 ? std::to_string(h.lag_bytes) : "null") +
         ",\"lag_ms\":" + (replica && h.lag_ms >= 0 ? std::to_string(h.lag_ms) : "null") +
         ",\"reads\":" + std::to_string(h.reads) + ",\"bans\":" + std::to_string(h.bans) +
         ",\"last_error\":\"" + escaped(h.error) + "\"}";
  }
  return j + "]";
}

}  // namespace pgshard::admin
