// `pgshard reshard plan --live`: the rows and bytes each move carries, read from the shards
// that give them, and what stops the move (keys, targets, logical replication settings).
#include <libpq-fe.h>

#include <map>
#include <memory>
#include <set>

#include "proxy/admin/reshard_filter.hpp"
#include "proxy/admin/reshard_pg.hpp"
#include "proxy/admin/reshard_plan.hpp"
#include "proxy/runtime/maintenance.hpp"

namespace pgshard::admin {

namespace {

// Tables with more rows than this (pg_class.reltuples) are estimated, not counted.
constexpr double kCountLimit = 1e6;

std::string ident(PGconn* c, const std::string& name) {
  char* q = PQescapeIdentifier(c, name.c_str(), name.size());
  std::string out = q ? q : "";
  PQfreemem(q);
  return out;
}

std::string table_sql(PGconn* c, const config::ShardedTable& t) {
  return t.schema.empty() ? ident(c, t.table) : ident(c, t.schema) + "." + ident(c, t.table);
}

std::string bytes_text(double b) {
  const char* unit[] = {"bytes", "kB", "MB", "GB", "TB"};
  int i = 0;
  while (b >= 10240 && i < 4) b /= 1024, ++i;
  return std::to_string(static_cast<int64_t>(b)) + " " + unit[i];
}

// The part of the hash space `shard` holds in a ring.
double ring_share(const std::vector<std::pair<uint64_t, int>>& ring, int shard) {
  double share = 0;
  for (std::size_t i = 0; i < ring.size(); ++i) {
    if (ring[i].second != shard) continue;
    const uint64_t lo = ring[i == 0 ? ring.size() - 1 : i - 1].first;
    share += static_cast<double>(ring[i].first - lo) / 18446744073709551616.0;
  }
  return share;
}

class LivePlan {
 public:
  LivePlan(const config::Config& a, const config::Config& b, std::ostream& out)
      : a_(a), b_(b), out_(out) {}

  int run(const std::vector<TablePlan>& plan) {
    for (const auto& p : plan) {
      if (p.moves.empty()) continue;
      out_ << "table " << p.name << ":\n";
      for (const auto& m : p.moves) check_move(p, m);
    }
    if (refusals_ == 0)
      out_ << "live: OK, nothing stops the move\n";
    else
      out_ << "live: REFUSED, " << refusals_ << " problem" << (refusals_ == 1 ? "" : "s")
           << " to fix first\n";
    return refusals_;
  }

 private:
  void refuse(const std::string& what, const std::string& fix) {
    out_ << "  REFUSED " << what << "\n    fix: " << fix << "\n";
    ++refusals_;
  }

  // A connection to shard `name` of `cfg`, opened once; null (refused) when it fails.
  PGconn* connect(const config::Config& cfg, const std::string& name) {
    const auto key = (&cfg == &a_ ? "old:" : "new:") + name;
    if (auto it = conns_.find(key); it != conns_.end()) return it->second.get();
    const auto& shard = cfg.shards[static_cast<std::size_t>(cfg.shard_index(name))];
    PgConnection c(
        PQconnectdb(runtime::maintenance_conninfo(cfg, shard, "pgshard-reshard").c_str()),
        PQfinish);
    // (create temp table if not exists ... says NOTICE on each later count: not for people)
    if (c)
      PQsetNoticeProcessor(
          c.get(), [](void*, const char*) {}, nullptr);
    if (PQstatus(c.get()) != CONNECTION_OK) {
      std::string err = PQerrorMessage(c.get());
      while (!err.empty() && err.back() == '\n') err.pop_back();
      refuse("shard " + name + " (" + shard.primary.text() + "): cannot connect: " + err,
             "start the shard, or correct its URL in the map");
      c.reset();
    }
    return conns_.emplace(key, std::move(c)).first->second.get();
  }

  void check_move(const TablePlan& p, const Move& m) {
    PGconn* src = connect(a_, m.from);
    PGconn* dst = connect(b_, m.to);
    if (src) check_source_server(src, m.from);
    if (dst) check_target(dst, p, m.to);
    if (!src) return;
    const auto& t = *p.from;
    const auto info = pg_query(src,
                               "select c.reltuples::float8, pg_table_size(c.oid), "
                               "(c.relreplident in ('f', 'i') or (c.relreplident = 'd' and "
                               "exists (select 1 from pg_index i where i.indrelid = c.oid and "
                               "i.indisprimary))) from pg_class c where c.oid = to_regclass($1)",
                               {table_sql(src, t)});
    if (!info.error.empty() || info.rows.empty()) {
      refuse("shard " + m.from + " has no table " + p.name + " to move rows from",
             "check the old map against the shards: pgshard check --live OLD.yaml");
      return;
    }
    const auto& row = info.rows[0];
    if (row[2] != "t" && identity_checked_.insert(m.from + "/" + p.name).second)
      refuse("table " + p.name + " on shard " + m.from +
                 " has no primary key or replica identity (logical replication cannot carry "
                 "its updates and deletes)",
             "ALTER TABLE " + p.name + " ADD PRIMARY KEY (...); or ALTER TABLE " + p.name +
                 " REPLICA IDENTITY FULL;");
    count(p, m, src, std::stod(row[0]), std::stod(row[1]));
  }

  // wal_level logical, a free replication slot and WAL sender on each shard giving rows.
  void check_source_server(PGconn* c, const std::string& name) {
    if (!sources_checked_.insert(name).second) return;
    const auto r = pg_query(
        c,
        "select current_setting('wal_level'), current_setting('max_replication_slots')::int - "
        "(select count(*) from pg_replication_slots), current_setting('max_wal_senders')::int - "
        "(select count(*) from pg_stat_replication)");
    if (r.rows.empty()) {
      refuse("shard " + name + ": cannot read its replication settings: " + r.error,
             "connect as a user who may read pg_replication_slots and pg_stat_replication");
      return;
    }
    const auto& row = r.rows[0];
    if (row[0] != "logical")
      refuse("shard " + name + " has wal_level " + row[0] +
                 " (the move reads its changes by logical replication)",
             "ALTER SYSTEM SET wal_level = logical; then restart the shard");
    if (std::stoi(row[1]) < 1)
      refuse("shard " + name + " has no free replication slot (max_replication_slots)",
             "ALTER SYSTEM SET max_replication_slots = <in use + 1>; then restart the shard");
    if (std::stoi(row[2]) < 1)
      refuse("shard " + name + " has no free WAL sender (max_wal_senders)",
             "ALTER SYSTEM SET max_wal_senders = <in use + 1>; then restart the shard");
  }

  void check_target(PGconn* c, const TablePlan& p, const std::string& name) {
    if (!targets_checked_.insert(name + "/" + p.name).second) return;
    const auto r = pg_query(c, "select to_regclass($1) is not null", {table_sql(c, *p.to)});
    if (!r.rows.empty() && r.rows[0][0] == "t") return;
    refuse("target shard " + name + " has no table " + p.name,
           "create it there as it is on the other shards (pg_dump --schema-only -t " + p.name +
               " from a shard, restored into " + name + ")");
  }

  void count(const TablePlan& p, const Move& m, PGconn* c, double reltuples, double size);
  std::optional<std::pair<double, double>> count_rows(const TablePlan& p, const Move& m, PGconn* c);

  const config::Config& a_;
  const config::Config& b_;
  std::ostream& out_;
  int refusals_ = 0;
  std::map<std::string, PgConnection> conns_;
  std::set<std::string> sources_checked_, targets_checked_, identity_checked_;
};

// The rows and bytes of `m`, counted on the source (nullopt when the count failed).
std::optional<std::pair<double, double>> LivePlan::count_rows(const TablePlan& p, const Move& m,
                                                              PGconn* c) {
  const auto& t = *p.from;
  // The row filter `reshard start` publishes: for hash tables PostgreSQL's partition hash
  // modulo the plan's modulus, computed once per row (the remainders PostgreSQL's
  // satisfies_hash_partition() accepts: tests/integration/reshard_move_test.cpp).
  const std::string where = move_filter_sql(p, m);
  const auto r =
      pg_query(c, "select count(*)::float8, coalesce(sum(pg_column_size(t.*)), 0)::float8 from " +
                      table_sql(c, t) + " t where " + where);
  if (r.rows.empty()) return std::nullopt;
  return std::make_pair(std::stod(r.rows[0][0]), std::stod(r.rows[0][1]));
}

void LivePlan::count(const TablePlan& p, const Move& m, PGconn* c, double reltuples, double size) {
  const std::string head = "  rows " + m.from + " -> " + m.to + ": ";
  const bool ring = p.from->function == config::ShardFunction::kRing;
  if (ring || (p.modulus > 0 && reltuples > kCountLimit)) {
    // The share of the source's hash space that moves, times its rows (pg_class's estimate).
    double held = 0;
    if (ring) {
      held = ring_share(p.from->ring, a_.shard_index(m.from));
    } else {
      const auto& owners = p.from->bucket_shard;
      const int units = p.from->buckets > 0 ? p.from->buckets : static_cast<int>(a_.shards.size());
      int mine = 0;
      for (int u = 0; u < units; ++u)
        mine += (p.from->buckets > 0 ? owners[static_cast<std::size_t>(u)] : u) ==
                a_.shard_index(m.from);
      held = static_cast<double>(mine) / units;
    }
    if (reltuples < 0) {  // never analyzed: count the table's rows
      const auto all = pg_query(c, "select count(*)::float8 from " + table_sql(c, *p.from));
      reltuples = all.rows.empty() ? 0 : std::stod(all.rows[0][0]);
    }
    const double f = held > 0 ? m.share / held : 0;
    const double rows = reltuples * f;
    out_ << head << "~" << static_cast<int64_t>(rows) << " rows, ~" << bytes_text(size * f)
         << " (estimated: the table's rows (pg_class.reltuples, or counted when never analyzed)"
         << " x the moving share of the source's hash space"
         << (ring ? ", ring" : ", table above 1000000 rows") << ")\n";
    return;
  }
  const auto counted = count_rows(p, m, c);
  if (!counted) {
    out_ << head << "cannot count: " << PQerrorMessage(c);
    return;
  }
  out_ << head << static_cast<int64_t>(counted->first) << " rows, " << bytes_text(counted->second)
       << (p.modulus > 0 ? " (counted with PostgreSQL's partition hash)" : " (counted)") << "\n";
}

}  // namespace

int plan_live(const std::vector<TablePlan>& plan, const config::Config& from,
              const config::Config& to, std::ostream& out) {
  return LivePlan(from, to, out).run(plan);
}

}  // namespace pgshard::admin
