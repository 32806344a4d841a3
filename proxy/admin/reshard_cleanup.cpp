// `pgshard reshard cleanup --writes-stopped`: the end of a move while writes to the moving
// keys are stopped by the operator (there is no cutover yet): the targets caught up and
// compared, the subscriptions dropped before anything is deleted (so the deletes do not
// replicate), compared again, then the moved rows deleted from the sources in small batches.
#include <chrono>
#include <cstdio>
#include <thread>

#include "proxy/admin/reshard_filter.hpp"
#include "proxy/admin/reshard_move.hpp"

namespace pgshard::admin {

namespace {

constexpr int kBatchRows = 5000;
constexpr auto kBatchPause = std::chrono::milliseconds(5);  // lets other work in between

// Deletes the move's rows from its source, kBatchRows per transaction; -1 on an error.
long long delete_moved(ReshardSession& s, const ReshardMove& m) {
  PGconn* src = s.source(m.from);
  if (!src) return -1;
  long long rows = 0;
  for (const auto& t : s.tables(m.from, m.to)) {
    const std::string table = table_sql(*t.plan->from);
    const std::string sql = "delete from " + table + " where ctid = any (array(select ctid from " +
                            table + " where " + move_filter_sql(*t.plan, *t.move) + " limit " +
                            std::to_string(kBatchRows) + "))";
    for (;;) {
      PGresult* r = PQexec(src, sql.c_str());
      const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
      const long long n = ok ? std::atoll(PQcmdTuples(r)) : 0;
      if (!ok) s.out() << "  ERROR on " << m.from << ": " << PQresultErrorMessage(r);
      PQclear(r);
      if (!ok) return -1;
      rows += n;
      if (n == 0) break;
      std::this_thread::sleep_for(kBatchPause);
    }
  }
  return rows;
}

// Every subscription, slot and publication dropped, then the rows compared once more.
bool drop_and_compare(ReshardSession& s, const ReshardState& state) {
  auto& out = s.out();
  for (const auto& m : state.moves)
    if (!drop_move_replication(s, m)) return false;
  out << "  subscriptions, slots and publications dropped\n";
  // A write that reached a source after the subscriptions stopped would be lost by the
  // deletes: compare once more first.
  const long after = compare_moves(s, state, -1);
  if (after == 0) return true;
  out << "cleanup: STOPPED before deleting anything from the sources: "
      << (after < 0 ? "cannot compare" : "rows changed on a source (writes were not stopped)")
      << "; pgshard reshard abort --to " << state.to_map << " returns to the old map\n";
  return false;
}

int clean(ReshardSession& s, ReshardState& state, int timeout_ms, const std::string& path) {
  auto& out = s.out();
  std::string error;
  if (state.phase == ReshardPhase::kCopying) {
    const long before = compare_moves(s, state, timeout_ms);
    if (before != 0) {
      out << "cleanup: REFUSED, the targets " << (before < 0 ? "did not catch up" : "differ")
          << "; nothing changed (pgshard reshard verify)\n";
      return 1;
    }
    state.phase = ReshardPhase::kCleaning;
    if (!save_state(path, state, &error)) {
      out << error << "\n";
      return 1;
    }
  }
  if (state.phase == ReshardPhase::kCleaning && !drop_and_compare(s, state)) return 1;
  if (state.phase == ReshardPhase::kCleaning) {
    state.phase = ReshardPhase::kDeleting;
    if (!save_state(path, state, &error)) {
      out << error << "\n";
      return 1;
    }
  }
  if (state.phase != ReshardPhase::kDeleting) {
    out << "cleanup: REFUSED in phase " << to_string(state.phase) << " (pgshard reshard abort)\n";
    return 1;
  }
  for (const auto& m : state.moves)
    for (const auto& t : s.tables(m.from, m.to))
      if (!carry_sequences(s, m.from, m.to, *t.plan)) return 1;
  for (const auto& m : state.moves) {
    const long long rows = delete_moved(s, m);
    if (rows < 0) return 1;
    out << "  " << m.from << " -> " << m.to << ": " << rows << " moved rows deleted on " << m.from
        << "\n";
  }
  std::remove(path.c_str());
  out << "cleanup: done; every row is where " << state.to_map
      << " places it: start pgshard on that map\n";
  return 0;
}

}  // namespace

int reshard_cleanup(const std::string& to_map, bool writes_stopped, int timeout_ms,
                    std::ostream& out, std::ostream& err) {
  if (!writes_stopped) {
    err << "cleanup deletes the moved rows from the sources, and there is no cutover yet: stop\n"
        << "the writes first (stop pgshard), run cleanup with --writes-stopped, then start\n"
        << "pgshard on " << to_map << "\n";
    return 1;
  }
  return with_reshard(to_map, out, err, [&](ReshardSession& s, ReshardState& state) {
    return clean(s, state, timeout_ms, reshard_state_path(to_map));
  });
}

}  // namespace pgshard::admin
