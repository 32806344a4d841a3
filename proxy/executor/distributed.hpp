// COMMIT or ROLLBACK of a transaction pgshard coordinates: one open on several shards
// (two-phase commit), or one pgshard failed.
#pragma once

#include "proxy/asio.hpp"
#include "proxy/executor/client.hpp"

namespace pgshard::executor {

// Ends the client's coordinated transaction and answers the client (simple: CommandComplete
// and ReadyForQuery; extended: the batch's replies).
awaitable<void> finish_distributed(executor::Client& c, bool commit, bool simple);

}  // namespace pgshard::executor
