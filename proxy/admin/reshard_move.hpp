// `pgshard reshard start|status|abort|verify`: the move itself for one pgshard instance, by
// PostgreSQL's logical replication (a publication with a row filter and a slot on each source
// shard, a subscription on each target shard), with its state in a file beside the new map.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "proxy/admin/reshard_pg.hpp"
#include "proxy/admin/reshard_plan.hpp"
#include "proxy/admin/reshard_state.hpp"

namespace pgshard::admin {

// One table's share of a move: its plan and the rows it moves from ReshardMove::from to ::to.
struct MovingTable {
  const TablePlan* plan;
  const Move* move;
};

// The two maps, their plan and connections to their shards, opened once each.
class ReshardSession {
 public:
  ReshardSession(std::shared_ptr<const config::Config> from,
                 std::shared_ptr<const config::Config> to, std::ostream& out);

  const config::Config& from() const { return *from_; }
  const config::Config& to() const { return *to_; }
  const std::vector<TablePlan>& plan() const { return plan_; }
  // The moving tables of the move from `from` to `to`.
  std::vector<MovingTable> tables(const std::string& from, const std::string& to) const;
  // Every (from, to) shard pair some table moves rows between, in plan order.
  std::vector<std::pair<std::string, std::string>> pairs() const;

  // Shard `name` of the old map (a source) or of the new one (a target); null after printing
  // why when it cannot connect.
  PGconn* source(const std::string& name) { return connect(false, name); }
  PGconn* target(const std::string& name) { return connect(true, name); }
  // The libpq conninfo of shard `name` of the old map (a source; what a target's
  // subscription uses to reach it) or of the new one.
  std::string conninfo(bool target, const std::string& name, const std::string& application) const;
  std::ostream& out() { return out_; }

 private:
  PGconn* connect(bool target, const std::string& name);

  std::shared_ptr<const config::Config> from_, to_;
  std::vector<TablePlan> plan_;
  std::ostream& out_;
  std::map<std::string, PgConnection> conns_;
};

// Runs `sql`; prints "  ERROR on WHERE: ..." and returns false when it fails.
bool run_on(PGconn* c, const std::string& where, const std::string& sql, std::ostream& out,
            const std::vector<std::string>& params = {});

// Waits until the subscription of `m` has confirmed, on its source, everything up to the
// source's WAL position when called; false after `timeout_ms`.
bool wait_caught_up(ReshardSession& s, const ReshardMove& m, int timeout_ms);

// Loads the state beside `to_map` and both maps, then runs `body` (the exit code of a
// command: 1 when the state or a map cannot be read).
int with_reshard(const std::string& to_map, std::ostream& out, std::ostream& err,
                 const std::function<int(ReshardSession&, ReshardState&)>& body);

// The commands (return the process's exit code: 0 done, 1 refused or failed, 2 usage).
int reshard_start(const std::string& from_map, const std::string& to_map, std::ostream& out,
                  std::ostream& err);
int reshard_status(const std::string& to_map, std::ostream& out, std::ostream& err);
int reshard_abort(const std::string& to_map, std::ostream& out, std::ostream& err);
// With writes to the moving keys stopped (`writes_stopped`, the operator's word: there is
// no cutover yet): waits for the targets, compares, drops the subscriptions, slots and
// publications, compares again, then deletes the moved rows from the sources in batches.
int reshard_cleanup(const std::string& to_map, bool writes_stopped, int timeout_ms,
                    std::ostream& out, std::ostream& err);
int reshard_verify(const std::string& to_map, int timeout_ms, std::ostream& out, std::ostream& err);

// Compares every move's rows on source and target (as `verify`); the rows that differ, or
// -1 when they could not be compared. `timeout_ms` < 0: the subscriptions are gone, one
// round without waiting for the targets.
long compare_moves(ReshardSession& s, const ReshardState& state, int timeout_ms);

// Drops the subscription of `m` (with its slots) on its target, then any slot of it and its
// publication left on its source; true when all is gone.
bool drop_move_replication(ReshardSession& s, const ReshardMove& m);

// The sequences `p`'s table owns on source `from` (serial, identity) set on target `to` to at
// least the source's value (by start, and again by cleanup).
bool carry_sequences(ReshardSession& s, const std::string& from, const std::string& to,
                     const TablePlan& p);

// The drops of `abort`, also run when `start` fails half way: subscriptions (with their
// slots), leftover slots, publications, then the copied rows on the targets. True when
// everything is gone.
bool undo_moves(ReshardSession& s, const ReshardState& state);

}  // namespace pgshard::admin
