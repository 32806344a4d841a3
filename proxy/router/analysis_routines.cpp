// SQL-level prepared statements and procedural code in the analysis: PREPARE of a statement
// on sharded tables (kept by the session), EXECUTE and DEALLOCATE, DO blocks and CALL, whose
// work pgshard cannot place by their text alone.
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <set>

#include "proxy/router/analyzer.hpp"
#include "proxy/router/ast.hpp"

namespace pgshard::router::detail {

namespace {

using ast::walk;

// The sharded and reference tables (and, under `unsharded: all`, every other table: each
// shard has its own copy) a tree names, by name, each once; catalogs left out.
std::set<std::string> placed_tables(const config::Config& cfg, const ProtobufCMessage* m) {
  std::set<std::string> out;
  walk(m, [&](const ProtobufCMessage* v) {
    if (v->descriptor != &pg_query__range_var__descriptor) return;
    const auto* r = reinterpret_cast<const PgQuery__RangeVar*>(v);
    const std::string_view schema = r->schemaname, rel = r->relname;
    if (schema == "pg_catalog" || schema == "information_schema" ||
        (schema.empty() && rel.starts_with("pg_")))
      return;
    if (sharded_index(cfg, r) >= 0 || is_reference(cfg, r) ||
        cfg.unsharded.policy == config::Unsharded::Policy::kAll)
      out.emplace(rel);
  });
  return out;
}

std::string listed(const std::set<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "\"" : ", \"") + n + "\"";
  return out;
}

// The tables a DO block's statements and expressions name (an expression's text is parsed
// as a SELECT of it). nullopt when some text does not parse: pgshard cannot tell.
std::optional<std::set<std::string>> do_block_tables(const config::Config& cfg,
                                                     const DoBlock& block) {
  std::set<std::string> out;
  for (const auto& q : block.queries) {
    auto tree = parse_tree(q);
    if (!tree) tree = parse_tree("SELECT " + q);
    if (!tree) return std::nullopt;
    out.merge(placed_tables(cfg, &tree->base));
  }
  return out;
}

constexpr const char* kRoutineHint =
    "choose its shard with a hint: /* pgshard: sharding_key=VALUE */ or /* pgshard: shard=NAME "
    "*/ in front of it, or SET pgshard.sharding_key / SET pgshard.shard first; or send its "
    "statements one by one";

}  // namespace

// PREPARE of a statement naming sharded tables: where it runs depends on the arguments of
// each EXECUTE, so no server keeps it; the session does (Analysis::sql_prepare_held). So is
// one naming tables every shard has a copy of, when there are several (a write must reach
// every copy, a read any). Other PREPAREs go where a statement naming their tables goes,
// and pin the client there.
Analysis Analyzer::prepared(const Node* stmt) {
  const auto* p = stmt->prepare_stmt;
  bool sharded = false;
  walk(&stmt->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor == &pg_query__range_var__descriptor &&
        sharded_index(cfg_, reinterpret_cast<const PgQuery__RangeVar*>(m)) >= 0)
      sharded = true;
  });
  const bool held =
      sharded || (cfg_.shards.size() > 1 && !placed_tables(cfg_, &stmt->base).empty());
  Analysis a = held ? Analysis{} : tables(stmt);
  a.sql_prepare = Analysis::SqlPrepareOp::kPrepare;
  a.sql_prepared = p->name ? p->name : "";
  a.sql_prepare_held = held;
  if (held) a.reason = "PREPARE of a statement on placed tables: kept by pgshard";
  return a;
}

// EXECUTE and DEALLOCATE name a statement the session may keep; the session decides.
Analysis Analyzer::prepared_use(const Node* stmt) {
  Analysis a;
  if (stmt->node_case == PG_QUERY__NODE__NODE_EXECUTE_STMT) {
    a.sql_prepare = Analysis::SqlPrepareOp::kExecute;
    a.sql_prepared = stmt->execute_stmt->name ? stmt->execute_stmt->name : "";
    a.reason = "EXECUTE of a server's prepared statement";
  } else {
    a.sql_prepare = Analysis::SqlPrepareOp::kDeallocate;
    a.sql_prepared = stmt->deallocate_stmt->name ? stmt->deallocate_stmt->name : "";
    a.reason = "DEALLOCATE";
  }
  return a;
}

// A DO block or CALL on a map of several shards: pgshard cannot see what a procedure does
// and reads a DO block's statements only where they are static SQL. One that touches
// placed tables, or whose work pgshard cannot see (dynamic SQL, another language, a CALL),
// is refused unless a hint chooses its shard: on whatever server it landed it would read
// and change that shard's rows only. False: route it as before (one server).
bool Analyzer::unplaced_routine(const Node* stmt, Analysis& a) const {
  if (cfg_.shards.size() < 2 || (cfg_.sharded_tables.empty() && cfg_.reference_tables.empty() &&
                                 cfg_.unsharded.policy != config::Unsharded::Policy::kAll))
    return false;
  const std::string error = routine_problem(stmt);
  if (error.empty()) return false;
  a.target = Analysis::Target::kError;
  a.error = error;
  a.hint = kRoutineHint;
  return true;
}

// Why a DO block or CALL cannot be placed by its text ("": a DO block that touches no
// placed table, or whose syntax error PostgreSQL reports).
std::string Analyzer::routine_problem(const Node* stmt) const {
  if (stmt->node_case == PG_QUERY__NODE__NODE_CALL_STMT)
    return "CALL of a procedure is not routed: pgshard cannot see which shards' rows it touches";
  const DoBlock block = read_do_block(stmt->do_stmt);
  if (!block.read && block.language != "plpgsql")
    return "a DO block in language " + std::string(block.language) +
           " is not routed: pgshard cannot see which shards' rows it touches";
  if (!block.read) return {};
  if (block.dynamic)
    return "a DO block with dynamic SQL (EXECUTE) is not routed: pgshard cannot see which "
           "shards' rows it touches";
  const auto touched = do_block_tables(cfg_, block);
  if (!touched) return "a DO block whose statements pgshard cannot read is not routed";
  if (touched->empty()) return {};
  return "a DO block on tables every shard holds part or a copy of (" + listed(*touched) +
         ") is not routed: it would run on one shard only";
}

}  // namespace pgshard::router::detail
