// What the workers report to the console and /metrics (runtime/stats.hpp), by the names
// the admin code uses.
#pragma once

#include "proxy/runtime/stats.hpp"

namespace pgshard::admin {

using runtime::PeriodMark;
using runtime::PoolRow;
using runtime::RouteCounters;
using runtime::ShardTotals;
using runtime::Snapshot;
using runtime::WorkerSnapshot;

}  // namespace pgshard::admin
