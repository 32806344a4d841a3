// Every host of every shard (primary and replicas) as /metrics and the dashboard report it:
// from the health checks' snapshot (runtime::HostState) and the hosts' pools. Only when some
// shard lists replicas: hosts are checked only then.
#pragma once

#include <string>

#include "config/config.hpp"
#include "proxy/admin/exposition.hpp"
#include "proxy/admin/reports.hpp"

namespace pgshard::admin {

// The pgshard_host_* families, labelled shard, host ("host:port") and role (as the map
// lists the host: primary or replica).
void host_metrics(Exposition& e, const Snapshot& snap, const config::Config& cfg);

// Where shard `shard`'s writes go as the health checks last decided (hosts are checked only
// when some shard lists several): the host taking them ("host:port", "" when unknown), or
// refused (two primaries), and how many times they moved.
struct ShardWrites {
  std::string writer;
  bool refused = false;
  uint64_t failovers = 0;
};
ShardWrites shard_writes(const Snapshot& snap, int shard);

// Shard `shard`'s hosts as a JSON array for /api/status ("[]" without health checks).
std::string hosts_json(const Snapshot& snap, int shard);

}  // namespace pgshard::admin
