// Recovery of in-doubt two-phase commits: pgshard's prepared transactions left on shards
// by a crash are committed when the decision log says so and rolled back otherwise. Uses
// libpq (control plane), blocking: run it before accepting clients or on its own thread.
#pragma once

#include <string>

#include "config/config.hpp"
#include "proxy/runtime/decision_log.hpp"
#include "proxy/runtime/maintenance.hpp"

namespace pgshard::txn {

struct RecoveryResult {
  int committed = 0;
  int rolled_back = 0;
  int errors = 0;  // shards that could not be reached or statements that failed
};

// Only this instance's transactions (log.prefix()) are touched. `at_startup`: undecided ones
// are rolled back too (nothing can be committing them); later passes only finish decided
// commits.
RecoveryResult recover(const config::Config& cfg, runtime::DecisionLog& log, bool at_startup);

}  // namespace pgshard::txn
