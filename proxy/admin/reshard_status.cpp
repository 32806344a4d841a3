// `pgshard reshard status` (per move: tables synchronized, rows on source and target,
// replication lag) and `pgshard reshard abort` (drops everything `start` created and the
// rows it copied; the old map stays).
#include <cstdio>

#include "proxy/admin/reshard_filter.hpp"
#include "proxy/admin/reshard_move.hpp"

namespace pgshard::admin {

namespace {

// Lag under this many bytes counts as caught up (a cutover then waits a moment at most).
constexpr long long kSmallLag = 1 << 20;

std::string first(const PgResult& r, std::size_t column = 0) {
  return r.ok() && !r.rows.empty() ? r.rows[0][column] : std::string();
}

long long number(const std::string& s) {
  return s.empty() ? -1 : std::stoll(s);
}

// Rows of the table's share of the move on `c` (-1: cannot count).
long long moving_rows(PGconn* c, const MovingTable& t) {
  const auto r = pg_query(c, "select count(*) from " + table_sql(*t.plan->from) + " where " +
                                 move_filter_sql(*t.plan, *t.move));
  return r.ok() ? number(first(r)) : -1;
}

// "rows orders 10/12, items 3/3 (target/source)"
std::string rows_text(ReshardSession& s, PGconn* src, PGconn* dst, const ReshardMove& m) {
  std::string out;
  for (const auto& t : s.tables(m.from, m.to))
    out += (out.empty() ? "rows " : ", ") + t.plan->name + " " +
           std::to_string(moving_rows(dst, t)) + "/" + std::to_string(moving_rows(src, t));
  return out + " (target/source)";
}

// One line for the move; true when it has caught up.
bool print_move(ReshardSession& s, const ReshardMove& m) {
  auto& out = s.out();
  out << m.from << " -> " << m.to << " (" << m.name << "): ";
  PGconn* src = s.source(m.from);
  PGconn* dst = s.target(m.to);
  if (!src || !dst) return false;
  const auto tables = pg_query(
      dst,
      "select count(*) filter (where sr.srsubstate = 'r'), count(*) from pg_subscription s "
      "join pg_subscription_rel sr on sr.srsubid = s.oid where s.subname = $1",
      {m.name});
  const auto worker =
      pg_query(dst,
               "select count(*) from pg_stat_subscription where subname = $1 and relid is null and "
               "pid is not null",
               {m.name});
  // PostgreSQL 15 counts a subscription's failed applies and table copies.
  const auto errors =
      pg_query(dst,
               "select apply_error_count, sync_error_count from pg_stat_subscription_stats where "
               "subname = $1",
               {m.name});
  const auto slot = pg_query(src,
                             "select active, pg_wal_lsn_diff(pg_current_wal_lsn(), "
                             "confirmed_flush_lsn)::bigint from pg_replication_slots where "
                             "slot_name = $1",
                             {m.name});
  const long long ready = number(first(tables)), total = number(first(tables, 1));
  const long long lag = number(first(slot, 1));
  out << "tables " << ready << "/" << total << " synchronized, " << rows_text(s, src, dst, m)
      << ", " << (first(worker) == "1" ? "streaming" : "NO apply worker (see the target's log)")
      << ", slot "
      << (first(slot).empty()  ? "MISSING"
          : first(slot) == "t" ? "active"
                               : "idle")
      << ", lag " << lag << " bytes";
  if (number(first(errors)) > 0 || number(first(errors, 1)) > 0)
    out << ", ERRORS: " << first(errors) << " applying, " << first(errors, 1)
        << " copying (the target's log says why)";
  out << "\n";
  return total > 0 && ready == total && first(worker) == "1" && lag >= 0 && lag < kSmallLag;
}

std::optional<ReshardState> open_state(const std::string& to_map, std::ostream& err) {
  std::string error;
  auto state = load_state(reshard_state_path(to_map), &error);
  if (!state) err << error << "\n";
  return state;
}

}  // namespace

int with_reshard(const std::string& to_map, std::ostream& out, std::ostream& err,
                 const std::function<int(ReshardSession&, ReshardState&)>& body) {
  auto state = open_state(to_map, err);
  if (!state) return 1;
  try {
    ReshardSession s(config::load_file(state->from_map), config::load_file(to_map), out);
    return body(s, *state);
  } catch (const config::ConfigError& e) {
    err << e.what() << "\n";
    return 1;
  }
}

int reshard_status(const std::string& to_map, std::ostream& out, std::ostream& err) {
  return with_reshard(to_map, out, err, [&](ReshardSession& s, ReshardState& state) {
    out << "reshard " << state.id << ": " << state.from_map << " -> " << state.to_map << ", phase "
        << to_string(state.phase) << "\n";
    // A count blocked behind a lock on a table is reported as -1, not waited for.
    for (const auto& m : state.moves)
      for (PGconn* c : {s.source(m.from), s.target(m.to)})
        if (c) pg_query(c, "set lock_timeout = '3s'");
    bool caught_up = true;
    for (const auto& m : state.moves) caught_up = print_move(s, m) && caught_up;
    out << "caught up: " << (caught_up ? "yes" : "no") << "\n";
    return 0;
  });
}

int reshard_abort(const std::string& to_map, std::ostream& out, std::ostream& err) {
  return with_reshard(to_map, out, err, [&](ReshardSession& s, ReshardState& state) {
    const std::string path = reshard_state_path(to_map);
    std::string error;
    if (state.phase == ReshardPhase::kDeleting) {
      out << "abort: REFUSED, cleanup has begun deleting the moved rows from the sources: the "
             "targets hold the only copy of some; finish it with pgshard reshard cleanup\n";
      return 1;
    }
    state.phase = ReshardPhase::kAborting;
    if (!save_state(path, state, &error)) {
      err << error << "\n";
      return 1;
    }
    out << "abort: reshard " << state.id << "\n";
    if (!undo_moves(s, state)) {
      out << "abort: NOT finished (fix the errors above and run it again)\n";
      return 1;
    }
    std::remove(path.c_str());
    out << "abort: done; the old map " << state.from_map << " stays in force\n";
    return 0;
  });
}

}  // namespace pgshard::admin
