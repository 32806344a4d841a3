// `pgshard reshard start`: checks the move (what `plan --live` refuses, a key column outside
// the replica identity, rows already on a target), copies the moving tables' schema to
// targets that lack it, carries sequences past the sources' values, then creates on each
// source a publication of the moving rows (a row filter per table) and a logical replication
// slot, and on each target a subscription that copies them and then streams their changes.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "proxy/admin/reshard_filter.hpp"
#include "proxy/admin/reshard_move.hpp"

namespace pgshard::admin {

namespace {

std::string shell_quoted(const std::string& s) {
  std::string out = "'";
  for (char ch : s) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

// `conninfo` without its password, and the password (passed in PGPASSWORD, so it stays off
// command lines other users can read).
std::pair<std::string, std::string> split_password(const std::string& conninfo) {
  std::pair<std::string, std::string> out;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), nullptr);
  for (auto* o = opts; o && o->keyword; ++o) {
    if (!o->val || !*o->val) continue;
    if (std::string(o->keyword) == "password") {
      out.second = o->val;
      continue;
    }
    std::string v;
    for (const char* p = o->val; *p; ++p)
      v += (*p == '\'' || *p == '\\' ? "\\" : "") + std::string(1, *p);
    out.first += std::string(o->keyword) + "='" + v + "' ";
  }
  PQconninfoFree(opts);
  return out;
}

// Runs `command` with PGPASSWORD set to `password` (this process is single-threaded).
int run_with_password(const std::string& command, const std::string& password) {
  ::setenv("PGPASSWORD", password.c_str(), 1);
  const int rc = std::system(command.c_str());
  ::unsetenv("PGPASSWORD");
  return rc;
}

std::string pg_program(const char* name) {
  const char* dir = std::getenv("PGSHARD_PG_BINDIR");
  return dir ? std::string(dir) + "/" + name : std::string(name);
}

// The table's definition (pg_dump --schema-only: columns, keys, indexes, owned sequences)
// from source `from`, restored into target `to`.
bool copy_schema(ReshardSession& s, const TablePlan& p, const std::string& from,
                 const std::string& to) {
  const auto& t = *p.from;
  const auto src = split_password(s.conninfo(false, from, "pgshard-reshard"));
  const auto dst = split_password(s.conninfo(true, to, "pgshard-reshard"));
  const std::string file = "/tmp/pgshard-reshard-schema-" + std::to_string(::getpid()) + ".sql";
  const std::string pattern =
      (t.schema.empty() ? "" : sql_ident(t.schema) + ".") + sql_ident(t.table);
  const int dumped = run_with_password(
      pg_program("pg_dump") +
          " --schema-only --no-owner --no-privileges --no-publications "
          "--no-subscriptions -t " +
          shell_quoted(pattern) + " -f " + shell_quoted(file) + " -d " + shell_quoted(src.first),
      src.second);
  const int restored =
      dumped != 0 ? -1
                  : run_with_password(pg_program("psql") + " -X -q -v ON_ERROR_STOP=1 -f " +
                                          shell_quoted(file) + " -d " + shell_quoted(dst.first) +
                                          " >/dev/null",
                                      dst.second);
  std::remove(file.c_str());
  s.out() << "  schema of " << p.name << " copied " << from << " -> " << to
          << (restored == 0 ? " (pg_dump --schema-only)\n" : ": FAILED (pg_dump | psql)\n");
  return restored == 0;
}

bool table_exists(PGconn* c, const config::ShardedTable& t) {
  const auto r = pg_query(c, "select to_regclass($1) is not null", {table_sql(t)});
  return r.ok() && !r.rows.empty() && r.rows[0][0] == "t";
}

// A publication's row filter may name only columns of the replica identity when it
// publishes updates and deletes (else PostgreSQL refuses those writes on the source).
bool key_in_identity(PGconn* c, const config::ShardedTable& t) {
  const auto r = pg_query(
      c,
      "select c.relreplident = 'f' or exists (select 1 from pg_index i join pg_attribute a on "
      "a.attrelid = i.indrelid and a.attnum = any (i.indkey) where i.indrelid = c.oid and "
      "a.attname = $2 and ((c.relreplident = 'd' and i.indisprimary) or (c.relreplident = 'i' "
      "and i.indisreplident))) from pg_class c where c.oid = to_regclass($1)",
      {table_sql(t), t.column});
  return r.ok() && !r.rows.empty() && r.rows[0][0] == "t";
}

// Schemas missing on the targets, copied from the move's source.
bool copy_missing_schemas(ReshardSession& s, ReshardState& state) {
  for (const auto& [from, to] : s.pairs()) {
    PGconn* dst = s.target(to);
    if (!dst) return false;
    for (const auto& t : s.tables(from, to)) {
      if (table_exists(dst, *t.plan->from)) continue;
      if (!copy_schema(s, *t.plan, from, to)) return false;
      state.created.emplace_back(to, t.plan->name);
    }
  }
  return true;
}

// What `plan --live` does not check: the key in the replica identity, no moving rows on the
// target already. Prints each refusal; returns their count.
int check_moves(ReshardSession& s) {
  int refused = 0;
  auto& out = s.out();
  for (const auto& [from, to] : s.pairs()) {
    PGconn* src = s.source(from);
    PGconn* dst = s.target(to);
    if (!src || !dst) return refused + 1;
    for (const auto& t : s.tables(from, to)) {
      const auto& table = *t.plan->from;
      if (!key_in_identity(src, table)) {
        ++refused;
        out << "  REFUSED table " << t.plan->name << " on shard " << from << ": key column "
            << table.column << " is not in its replica identity (a row filter on it would "
            << "stop updates and deletes on the source)\n    fix: ALTER TABLE " << t.plan->name
            << " REPLICA IDENTITY FULL; (or a primary key that includes " << table.column << ")\n";
      }
      const auto other =
          pg_query(src,
                   "select string_agg(pubname, ', ') from pg_publication_tables where pubname like "
                   "'pgshard\\_rs\\_%' and format('%I.%I', schemaname, tablename)::regclass = "
                   "to_regclass($1)",
                   {table_sql(table)});
      if (other.ok() && !other.rows.empty() && !other.rows[0][0].empty()) {
        ++refused;
        out << "  REFUSED table " << t.plan->name << " on shard " << from
            << " is being moved by another reshard (publication " << other.rows[0][0]
            << ")\n    fix: finish or abort it first (pgshard reshard abort --to ITS-NEW.yaml)\n";
      }
      const auto r = pg_query(dst, "select count(*) from " + table_sql(table) + " where " +
                                       move_filter_sql(*t.plan, *t.move));
      if (r.ok() && !r.rows.empty() && r.rows[0][0] == "0") continue;
      ++refused;
      out << "  REFUSED target shard " << to << " already holds "
          << (r.ok() ? r.rows[0][0] + " rows" : "rows (" + r.error + ")") << " of " << t.plan->name
          << " that move from " << from << "\n    fix: delete them there (left by an earlier "
          << "reshard, or written past pgshard)\n";
    }
  }
  return refused;
}

// The publication and slot on the source, the subscription on the target.
bool create_move(ReshardSession& s, const ReshardMove& m) {
  PGconn* src = s.source(m.from);
  PGconn* dst = s.target(m.to);
  if (!src || !dst) return false;
  std::string tables;
  for (const auto& t : s.tables(m.from, m.to)) {
    if (!carry_sequences(s, m.from, m.to, *t.plan)) return false;
    tables += (tables.empty() ? "" : ", ") + table_sql(*t.plan->from) + " where (" +
              move_filter_sql(*t.plan, *t.move) + ")";
  }
  const std::string name = sql_ident(m.name);
  // Truncate is not published: a TRUNCATE on the source would empty the whole target table.
  // The slot is made apart from the subscription: CREATE SUBSCRIPTION making it would wait
  // forever when source and target are databases of one server.
  return run_on(src, m.from,
                "create publication " + name + " for table " + tables +
                    " with (publish = 'insert, update, delete')",
                s.out()) &&
         run_on(src, m.from, "select pg_create_logical_replication_slot($1, 'pgoutput')", s.out(),
                {m.name}) &&
         run_on(dst, m.to,
                "create subscription " + name + " connection " +
                    sql_literal(s.conninfo(false, m.from, m.name)) + " publication " + name +
                    " with (create_slot = false, slot_name = " + sql_literal(m.name) +
                    ", copy_data = true)",
                s.out());
}

std::string random_id() {
  std::random_device rd;
  char buf[16];
  std::snprintf(buf, sizeof buf, "%06x", rd() & 0xffffff);
  return buf;
}

}  // namespace

// The sequences the source's table owns (serial, identity) set on the target past the
// source's value.
bool carry_sequences(ReshardSession& s, const std::string& from, const std::string& to,
                     const TablePlan& p) {
  PGconn* src = s.source(from);
  PGconn* dst = s.target(to);
  const auto seqs = pg_query(
      src,
      "select format('%I.%I', q.schemaname, q.sequencename), coalesce(q.last_value, 0)::text "
      "from pg_depend d join pg_class c on c.oid = d.objid and c.relkind = 'S' join "
      "pg_namespace n on n.oid = c.relnamespace join pg_sequences q on q.schemaname = "
      "n.nspname and q.sequencename = c.relname where d.refobjid = to_regclass($1) and "
      "d.deptype in ('a', 'i')",
      {table_sql(*p.from)});
  if (!seqs.ok()) {
    s.out() << "  ERROR on " << from << ": " << seqs.error << "\n";
    return false;
  }
  for (const auto& row : seqs.rows) {
    if (row[1] == "0") continue;
    if (!run_on(dst, to,
                "select setval($1::regclass, $2::bigint) where $2::bigint > coalesce((select "
                "last_value from pg_sequences where format('%I.%I', schemaname, sequencename)"
                "::regclass = $1::regclass), 0)",
                s.out(), {row[0], row[1]}))
      return false;
    s.out() << "  sequence " << row[0] << " on " << to << " set to at least " << row[1] << "\n";
  }
  return true;
}

int reshard_start(const std::string& from_map, const std::string& to_map, std::ostream& out,
                  std::ostream& err) {
  const std::string path = reshard_state_path(to_map);
  if (::access(path.c_str(), F_OK) == 0) {
    err << "a reshard to " << to_map << " is in progress (" << path
        << "): pgshard reshard status|abort --to " << to_map << "\n";
    return 1;
  }
  std::shared_ptr<const config::Config> from, to;
  try {
    from = config::load_file(from_map);
    to = config::load_file(to_map);
  } catch (const config::ConfigError& e) {
    err << e.what() << "\n";
    return 1;
  }
  ReshardSession s(from, to, out);
  ReshardState state;
  // Absolute: status, verify, abort and cleanup may run from another directory.
  state.from_map = std::filesystem::absolute(from_map).string();
  state.to_map = std::filesystem::absolute(to_map).string();
  state.id = random_id();
  for (const auto& [a, b] : s.pairs())
    state.moves.push_back({a, b, move_object_name(state.id, a, b)});
  out << "start: " << from_map << " -> " << to_map << "\n";
  print_plan(s.plan(), out, false);
  if (state.moves.empty()) {
    out << "start: nothing moves\n";
    return 0;
  }
  int refused = 0;
  for (const auto& p : s.plan()) refused += !p.refusal.empty();
  if (refused == 0 && !copy_missing_schemas(s, state)) ++refused;
  if (refused == 0) refused += plan_live(s.plan(), *from, *to, out);
  if (refused == 0) refused += check_moves(s);
  if (refused > 0) {
    out << "start: REFUSED, nothing created"
        << (state.created.empty() ? "" : " but the tables above") << "\n";
    return 1;
  }
  std::string error;
  if (!save_state(path, state, &error)) {
    err << error << "\n";
    return 1;
  }
  for (const auto& m : state.moves) {
    if (create_move(s, m)) {
      out << "  " << m.from << " -> " << m.to << ": publication, slot and subscription " << m.name
          << "\n";
      continue;
    }
    out << "start: FAILED at " << m.from << " -> " << m.to << "; undoing what was created\n";
    state.phase = ReshardPhase::kAborting;
    save_state(path, state, &error);
    if (undo_moves(s, state)) std::remove(path.c_str());
    return 1;
  }
  state.phase = ReshardPhase::kCopying;
  if (!save_state(path, state, &error)) {
    err << error << "\n";
    return 1;
  }
  out << "start: copying (state in " << path << "); follow it with pgshard reshard status --to "
      << to_map << "\n";
  return 0;
}

}  // namespace pgshard::admin
