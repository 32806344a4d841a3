// The shared part of the reshard commands: the maps and their plan, connections to the
// shards, waiting for a subscription to catch up, and undoing a move (abort, failed start).
#include <chrono>
#include <cstdlib>
#include <set>
#include <thread>

#include "proxy/admin/reshard_filter.hpp"
#include "proxy/admin/reshard_move.hpp"
#include "proxy/runtime/maintenance.hpp"

namespace pgshard::admin {

ReshardSession::ReshardSession(std::shared_ptr<const config::Config> from,
                               std::shared_ptr<const config::Config> to, std::ostream& out)
    : from_(std::move(from)), to_(std::move(to)), plan_(plan_reshard(*from_, *to_)), out_(out) {}

std::vector<MovingTable> ReshardSession::tables(const std::string& from,
                                                const std::string& to) const {
  std::vector<MovingTable> out;
  for (const auto& p : plan_)
    for (const auto& m : p.moves)
      if (m.from == from && m.to == to) out.push_back({&p, &m});
  return out;
}

std::vector<std::pair<std::string, std::string>> ReshardSession::pairs() const {
  std::vector<std::pair<std::string, std::string>> out;
  std::set<std::pair<std::string, std::string>> seen;
  for (const auto& p : plan_)
    for (const auto& m : p.moves)
      if (seen.insert({m.from, m.to}).second) out.emplace_back(m.from, m.to);
  return out;
}

std::string ReshardSession::conninfo(bool target, const std::string& name,
                                     const std::string& application) const {
  const auto& cfg = target ? *to_ : *from_;
  const auto& shard = cfg.shards[static_cast<std::size_t>(cfg.shard_index(name))];
  return runtime::maintenance_conninfo(cfg, shard, application);
}

PGconn* ReshardSession::connect(bool target, const std::string& name) {
  const auto key = (target ? "new:" : "old:") + name;
  if (auto it = conns_.find(key); it != conns_.end()) return it->second.get();
  const auto& cfg = target ? *to_ : *from_;
  const int i = cfg.shard_index(name);
  PgConnection c(nullptr, PQfinish);
  if (i < 0) {
    out_ << "  ERROR: shard " << name << " is not in the " << (target ? "new" : "old") << " map\n";
  } else {
    std::string error;
    const auto& shard = cfg.shards[static_cast<std::size_t>(i)];
    c = pg_connect(cfg, shard, "pgshard-reshard", &error);
    if (!c) out_ << "  ERROR: cannot connect to shard " << name << ": " << error << "\n";
  }
  return conns_.emplace(key, std::move(c)).first->second.get();
}

bool run_on(PGconn* c, const std::string& where, const std::string& sql, std::ostream& out,
            const std::vector<std::string>& params) {
  const auto r = pg_query(c, sql, params);
  if (!r.ok()) out << "  ERROR on " << where << ": " << r.error << "\n";
  return r.ok();
}

bool wait_caught_up(ReshardSession& s, const ReshardMove& m, int timeout_ms) {
  PGconn* src = s.source(m.from);
  if (!src) return false;
  const auto lsn = pg_query(src, "select pg_current_wal_lsn()::text");
  if (!lsn.ok() || lsn.rows.empty()) return false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto r = pg_query(src,
                            "select confirmed_flush_lsn >= $1::pg_lsn from pg_replication_slots "
                            "where slot_name = $2",
                            {lsn.rows[0][0], m.name});
    if (r.ok() && !r.rows.empty() && r.rows[0][0] == "t") return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// The subscription of `m` on its target (its replication slot dropped on the source by
// DROP SUBSCRIPTION), then what is left on the source: the slot, the table
// synchronization slots of the subscription (pg_<subscription oid>_sync_<table oid>_<system
// id>) and the publication.
bool drop_move_replication(ReshardSession& s, const ReshardMove& m) {
  auto& out = s.out();
  bool ok = true;
  std::string sub_oid;
  if (PGconn* dst = s.target(m.to)) {
    const auto oid = pg_query(dst,
                              "select oid::text from pg_subscription where subname = $1 and "
                              "subdbid = (select oid from pg_database where datname = "
                              "current_database())",
                              {m.name});
    if (oid.ok() && !oid.rows.empty()) {
      sub_oid = oid.rows[0][0];
      const std::string sub = sql_ident(m.name);
      ok = run_on(dst, m.to, "alter subscription " + sub + " disable", out) &&
           run_on(dst, m.to, "drop subscription " + sub, out);
    }
  } else {
    ok = false;
  }
  PGconn* src = s.source(m.from);
  if (!src) return false;
  const std::string sync = sub_oid.empty() ? "" : "pg\\_" + sub_oid + "\\_sync\\_%";
  ok = run_on(src, m.from,
              "select pg_drop_replication_slot(slot_name) from pg_replication_slots where "
              "slot_name = $1 or slot_name like $2",
              out, {m.name, sync.empty() ? "-" : sync}) &&
       ok;
  ok = run_on(src, m.from, "drop publication if exists " + sql_ident(m.name), out) && ok;
  return ok;
}

bool undo_moves(ReshardSession& s, const ReshardState& state) {
  // Every stream stopped first (the slots hold WAL on the sources), then the rows deleted.
  std::vector<const ReshardMove*> dropped;
  for (const auto& m : state.moves) {
    const bool ok = drop_move_replication(s, m);
    if (ok) dropped.push_back(&m);
    s.out() << "  " << m.from << " -> " << m.to << ": " << m.name
            << (ok ? ": subscription, slot and publication dropped\n"
                   : ": NOT everything dropped (see above)\n");
  }
  bool ok = dropped.size() == state.moves.size();
  // (only where nothing streams any more: rows deleted under a subscription could come back)
  for (const auto* m : dropped) {
    PGconn* dst = s.target(m->to);
    if (!dst) continue;
    long long rows = 0;
    for (const auto& t : s.tables(m->from, m->to)) {
      PGresult* r = PQexec(dst, ("delete from " + table_sql(*t.plan->from) + " where " +
                                 move_filter_sql(*t.plan, *t.move))
                                    .c_str());
      if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        rows += std::atoll(PQcmdTuples(r));
      } else if (const char* code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
                 !code || std::string(code) != "42P01") {  // (no table: nothing copied)
        s.out() << "  ERROR on " << m->to << ": " << PQresultErrorMessage(r);
        ok = false;
      }
      PQclear(r);
    }
    s.out() << "  " << m->from << " -> " << m->to << ": " << rows << " copied rows deleted on "
            << m->to << "\n";
  }
  return ok;
}

}  // namespace pgshard::admin
