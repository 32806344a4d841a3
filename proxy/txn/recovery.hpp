// Recovery of in-doubt two-phase commits: pgshard's prepared transactions left on shards
// by a crash are committed when the decision log says so and rolled back otherwise. Uses
// libpq (control plane), blocking: run it before accepting clients or on its own thread.
#pragma once

#include <chrono>
#include <string>

#include "config/config.hpp"
#include "proxy/runtime/decision_log.hpp"
#include "proxy/runtime/health.hpp"
#include "proxy/runtime/maintenance.hpp"

namespace pgshard::txn {

struct RecoveryResult {
  int committed = 0;
  int rolled_back = 0;
  int errors = 0;  // shards that could not be reached or statements that failed
};

// Only this instance's transactions (log.prefix()) are touched. `at_startup`: undecided ones
// are rolled back too (nothing can be committing them); later passes only finish decided
// commits. Each shard is reached on the host that takes its writes as `hosts` says (a
// promoted replica holds its old primary's prepared transactions); without it, the map's
// primary. A shard with two primaries is skipped (an error: tried again next pass).
RecoveryResult recover(const config::Config& cfg, runtime::DecisionLog& log, bool at_startup,
                       const runtime::HostHealth* hosts = nullptr);

// The later passes (every 10 s on the recovery thread). Each pass logs in to every shard
// (a backend, a SCRAM login), so a pass runs only when it may have work: the previous pass
// did not finish (a shard unreachable, a statement failed: the start-up pass counts), the
// log holds decided commits not finished everywhere or transactions that ended undecided
// (DecisionLog::needs_recovery), or every kSweepEvery-th round, a sweep for what none of
// these foresaw (a PREPARE that reached its shard after the session had given up on it).
class RecoveryRounds {
 public:
  static constexpr int kSweepEvery = 30;
  // An undecided transaction is looked for until a complete pass that started this long
  // after it ended: a PREPARE still on its way when the session gave up has landed by then.
  static constexpr std::chrono::seconds kSettle{30};

  explicit RecoveryRounds(const RecoveryResult& startup) : incomplete_(startup.errors > 0) {}
  // The next round makes a pass (a shard's primary moved: what its old primary had prepared is
  // on the new one, holding its rows' locks until resolved).
  void retry() { incomplete_ = true; }
  // One round: a pass when due. True when it connected.
  bool round(const config::Config& cfg, runtime::DecisionLog& log,
             const runtime::HostHealth* hosts = nullptr);

 private:
  bool incomplete_;
  int idle_rounds_ = 0;
};

}  // namespace pgshard::txn
