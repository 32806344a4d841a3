// The shard map's replica settings: where reads may go, how hosts are checked, how far a
// replica may lag (config.hpp, Replication).
#include <string>

#include "config/checker.hpp"
#include "config/config.hpp"

namespace pgshard::config {

namespace detail {

std::optional<ReadFrom> load_read_from(Checker& c, const YAML::Node& n, const std::string& what) {
  return c.choice<ReadFrom>(n, what,
                            {{"primary", ReadFrom::kPrimary},
                             {"replicas", ReadFrom::kReplicas},
                             {"prefer_replicas", ReadFrom::kPreferReplicas}});
}

namespace {

constexpr Millis kHour{3600 * 1000};

void load_health(Checker& c, const YAML::Node& n, Replication& r) {
  if (!c.mapping(n, "health", {"interval", "timeout", "ban_time"})) return;
  r.health_interval =
      duration(c, n["interval"], "health.interval", Millis{50}, kHour).value_or(r.health_interval);
  r.health_timeout =
      duration(c, n["timeout"], "health.timeout", Millis{10}, kHour).value_or(r.health_timeout);
  r.ban_time = duration(c, n["ban_time"], "health.ban_time", Millis{0}, kHour).value_or(r.ban_time);
}

void load_max_lag(Checker& c, const YAML::Node& n, Replication& r) {
  if (!c.mapping(n, "max_replica_lag", {"bytes", "time"})) return;
  if (n["bytes"])
    r.max_lag_bytes =
        c.integer<uint64_t>(n["bytes"], "max_replica_lag.bytes", 0, uint64_t{1} << 50).value_or(0);
  r.max_lag_time =
      duration(c, n["time"], "max_replica_lag.time", Millis{0}, kHour).value_or(r.max_lag_time);
}

}  // namespace

void load_replication(Checker& c, const YAML::Node& root, Replication& r) {
  if (root["read_from"])
    r.read_from = load_read_from(c, root["read_from"], "read_from").value_or(r.read_from);
  if (root["load_balance"])
    r.load_balance = c.choice<LoadBalance>(root["load_balance"], "load_balance",
                                           {{"round_robin", LoadBalance::kRoundRobin},
                                            {"least_active", LoadBalance::kLeastActive},
                                            {"random", LoadBalance::kRandom}})
                         .value_or(r.load_balance);
  if (root["read_consistency"])
    r.consistency = c.choice<ReadConsistency>(root["read_consistency"], "read_consistency",
                                              {{"session", ReadConsistency::kSession},
                                               {"eventual", ReadConsistency::kEventual},
                                               {"strong", ReadConsistency::kStrong}})
                        .value_or(r.consistency);
  if (root["health"]) load_health(c, root["health"], r);
  if (root["max_replica_lag"]) load_max_lag(c, root["max_replica_lag"], r);
  if (auto f = root["read_safe_functions"]) {
    if (!f.IsSequence())
      c.fail(f, "read_safe_functions must be a list of function names (schema.name or name)");
    else
      for (const auto& n : f)
        if (auto s = c.string(n, "read_safe_functions entry")) r.read_safe_functions.push_back(*s);
  }
  if (auto w = root["read_your_writes"]; w && c.mapping(w, "read_your_writes", {"wait"}))
    r.read_your_writes_wait = duration(c, w["wait"], "read_your_writes.wait", Millis{0}, kHour)
                                  .value_or(r.read_your_writes_wait);
}

}  // namespace detail

ReadFrom Config::read_from(const User& user, int shard) const {
  if (user.read_from) return *user.read_from;
  if (shard >= 0 && shard < static_cast<int>(shards.size()) && shards[shard].read_from)
    return *shards[shard].read_from;
  return replication.read_from;
}

int Config::replica_target(int shard, int replica) const {
  int target = static_cast<int>(shards.size());
  for (int s = 0; s < shard; ++s) target += static_cast<int>(shards[s].replicas.size());
  return target + replica;
}

Config::Host Config::host_of(int target) const {
  const int n = static_cast<int>(shards.size());
  if (target < n) return {target, -1};
  int first = n;
  for (int s = 0; s < n; ++s) {
    const int count = static_cast<int>(shards[s].replicas.size());
    if (target < first + count) return {s, target - first};
    first += count;
  }
  return {target, -1};  // (not a target of this map)
}

int Config::targets() const {
  int n = static_cast<int>(shards.size());
  for (const auto& s : shards) n += static_cast<int>(s.replicas.size());
  return n;
}

const char* to_string(ReadFrom r) {
  switch (r) {
    case ReadFrom::kPrimary:
      return "primary";
    case ReadFrom::kReplicas:
      return "replicas";
    case ReadFrom::kPreferReplicas:
      return "prefer_replicas";
  }
  return "?";
}

const char* to_string(LoadBalance b) {
  switch (b) {
    case LoadBalance::kRoundRobin:
      return "round_robin";
    case LoadBalance::kLeastActive:
      return "least_active";
    case LoadBalance::kRandom:
      return "random";
  }
  return "?";
}

const char* to_string(ReadConsistency r) {
  switch (r) {
    case ReadConsistency::kSession:
      return "session";
    case ReadConsistency::kEventual:
      return "eventual";
    case ReadConsistency::kStrong:
      return "strong";
  }
  return "?";
}

}  // namespace pgshard::config
