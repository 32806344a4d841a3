// `pgshard check --live FILE`: connects to every shard and checks what the map assumes.
#pragma once

#include <ostream>

#include "config/config.hpp"

namespace pgshard::admin {

// Each sharded table exists on every shard with its key column of the configured type and
// the same columns everywhere; reference tables exist everywhere; two-phase commit has
// max_prepared_transactions > 0; the shards' copies of the sequences behind sharded
// tables' generated columns have not handed out values the first shard's (which pgshard
// draws from) will hand out again (an ERROR), and a NOTE with the fix where the copies can
// collide for writes that bypass pgshard; every replica a shard lists answers, is in recovery
// and has its primary's system identifier (pg_control_system(): a replica of that primary,
// not a server of another cluster). Prints one line per problem (naming the shard)
// and a summary; returns the number of problems.
int check_live(const config::Config& cfg, std::ostream& out);

}  // namespace pgshard::admin
