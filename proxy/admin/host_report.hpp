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

// Shard `shard`'s hosts as a JSON array for /api/status ("[]" without health checks).
std::string hosts_json(const Snapshot& snap, int shard);

}  // namespace pgshard::admin
