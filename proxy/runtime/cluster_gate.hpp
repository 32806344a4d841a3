// The visibility gate of one statement or commit phase, in this process and, with
// `atomic_visibility: cluster`, across every pgshard instance serving the same shards.
//
// Across instances the gate is a table lock on a coordinator PostgreSQL (the first shard's
// server, its `postgres` database), one empty table per shard (`pgshard_gate."<shard>"`,
// created on first use): a multi-shard read locks its shards' tables IN SHARE MODE, a commit
// phase IN ROW EXCLUSIVE MODE. PostgreSQL's lock table gives exactly the gate's rules: reads
// share with reads, commit phases with commit phases, and the two exclude each other; a
// statement locks its tables in one LOCK TABLE, in name order, so two holders never wait on
// each other; waiters are queued by PostgreSQL in arrival order. The lock lives in a
// transaction of its own on a connection of the worker's coordinator pool, and ends with
// it: a pgshard that dies frees its locks with its connections.
//
// The process's own gate (VisibilityGate) is entered first, so an instance's readers and
// committers meet there, and the coordinator sees one waiter per holder.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "proxy/pool/pool.hpp"
#include "proxy/runtime/visibility_gate.hpp"

namespace pgshard::runtime {

class GateHold {
 public:
  bool held() const { return local_.hold.held(); }
  // Ends the hold: the coordinator's transaction is rolled back (its locks go with it),
  // then the process's gate is released. Destroyed without it, the coordinator's connection
  // is closed instead (which ends its transaction too).
  awaitable<void> release();

 private:
  friend struct GateEntry;
  VisibilityGate::Entered local_;
  pool::Lease coordinator_;
  std::size_t max_message_ = 0;
};

// Where a statement enters the gate: the process's gate, and with `atomic_visibility:
// cluster` the worker's coordinator pool (null otherwise); the map names the shards.
struct GateEntry {
  VisibilityGate& gate;
  pool::Pool* coordinator;
  const config::Config& config;
  const std::string& log_prefix;
  // Enters for `shards` (indexes into the shard map). Past the wait limit, or when the
  // coordinator cannot be reached, it goes ahead without the guarantee: logged as a
  // WARNING naming the visibility gate and counted in VisibilityGate::forced.
  awaitable<GateHold> enter(VisibilityGate::Mode mode, std::vector<int> shards);
};

// The coordinator's statement that takes the lock for `shard_names` in `mode` (exposed for
// the unit tests): its transaction, its wait bound and the LOCK TABLE, in one message.
std::string coordinator_lock_sql(VisibilityGate::Mode mode, std::vector<std::string> shard_names,
                                 std::chrono::milliseconds wait);
// What creates the gate's tables for `shard_names` (idempotent).
std::string coordinator_setup_sql(const std::vector<std::string>& shard_names);

}  // namespace pgshard::runtime
