// SELECT in the analyser: what stops several shards' rows from being concatenated (and what
// pgshard merges instead), where its keys restrict it (CTEs, subqueries), and the shapes
// several shards cannot answer (decomposition.hpp, renamed key columns).
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include "proxy/router/analyzer.hpp"
#include "proxy/router/ast.hpp"
#include "proxy/router/decomposition.hpp"

namespace pgshard::router::detail {

namespace {

using ast::is_aggregate;
using ast::str_of;
using ast::walk;

// Whether a SELECT's own clauses need pgshard to merge several shards' rows.
bool needs_merge(const PgQuery__SelectStmt* s) {
  if (s->n_sort_clause || s->limit_count || s->limit_offset || s->n_distinct_clause ||
      s->n_group_clause || s->having_clause || s->n_window_clause)
    return true;
  bool aggregates = false;
  for (size_t i = 0; i < s->n_target_list; ++i)
    walk(&s->target_list[i]->base, [&](const ProtobufCMessage* m) {
      if (m->descriptor != &pg_query__func_call__descriptor) return;
      const auto* f = reinterpret_cast<const PgQuery__FuncCall*>(m);
      if (f->over || (f->n_funcname > 0 && is_aggregate(str_of(f->funcname[f->n_funcname - 1]))))
        aggregates = true;
    });
  return aggregates;
}

// Subqueries that read no sharded table give every shard the same rows, whatever they
// compute (aggregates, ORDER BY, LIMIT...): what is inside them blocks nothing.
std::set<const ProtobufCMessage*> replicated_subqueries(const config::Config& cfg, const Node* stmt,
                                                        const std::set<std::string>& ctes) {
  std::set<const ProtobufCMessage*> replicated;
  walk(&stmt->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor != &pg_query__select_stmt__descriptor || replicated.contains(m)) return;
    bool sharded = false;
    walk(m, [&](const ProtobufCMessage* x) {
      if (x->descriptor == &pg_query__range_var__descriptor) {
        const auto* r = reinterpret_cast<const PgQuery__RangeVar*>(x);
        // (A CTE's name counts as sharded: where its rows come from is not traced here.)
        if (sharded_index(cfg, r) >= 0 || (!r->schemaname[0] && ctes.contains(r->relname)))
          sharded = true;
      }
    });
    if (!sharded) walk(m, [&](const ProtobufCMessage* x) { replicated.insert(x); });
  });
  return replicated;
}

}  // namespace

// What stops rows from several shards being simply concatenated (a.concat_safe,
// a.merge_blocker), and whether a top-level SELECT is one pgshard merges.
void Analyzer::note_merge_blockers(const Node* stmt, const std::set<std::string>& ctes,
                                   Analysis& a) const {
  auto block = [&](const char* what) {
    if (a.concat_safe) a.merge_blocker = what;
    a.concat_safe = false;
  };
  const auto replicated = replicated_subqueries(cfg_, stmt, ctes);
  auto blockers = [&](const ProtobufCMessage* m) {
    if (replicated.contains(m)) return;
    if (m->descriptor == &pg_query__select_stmt__descriptor) {
      const auto* s = reinterpret_cast<const PgQuery__SelectStmt*>(m);
      if (s->larg || s->rarg) block("set operations (UNION, INTERSECT, EXCEPT)");
      if (s->n_sort_clause) block("ORDER BY");
      if (s->limit_count || s->limit_offset) block("LIMIT/OFFSET");
      if (s->n_group_clause || s->having_clause) block("GROUP BY/HAVING");
      if (s->n_distinct_clause) block("DISTINCT");
      if (s->n_window_clause) block("window functions");
    } else if (m->descriptor == &pg_query__func_call__descriptor) {
      const auto* f = reinterpret_cast<const PgQuery__FuncCall*>(m);
      if (f->over) block("window functions");
      if (f->n_funcname > 0 && is_aggregate(str_of(f->funcname[f->n_funcname - 1])))
        block("aggregates");
    }
  };
  const PgQuery__SelectStmt* top =
      stmt->node_case == PG_QUERY__NODE__NODE_SELECT_STMT ? stmt->select_stmt : nullptr;
  if (!top || top->larg || top->rarg || top->n_values_lists != 0) {
    walk(&stmt->base, blockers);
    return;
  }
  // The top-level SELECT's own ORDER BY, LIMIT, DISTINCT, GROUP BY, HAVING and
  // aggregates are merged by pgshard (merge_plan.cpp); what is nested in FROM, WHERE and
  // WITH must still be answerable by each shard alone.
  for (size_t i = 0; i < top->n_from_clause; ++i) walk(&top->from_clause[i]->base, blockers);
  if (top->where_clause) walk(&top->where_clause->base, blockers);
  if (top->with_clause) walk(&top->with_clause->base, blockers);
  auto subqueries = [&](const ProtobufCMessage* m) {
    if (m->descriptor == &pg_query__sub_link__descriptor)
      block("subqueries in the select list, HAVING or ORDER BY");
  };
  for (size_t i = 0; i < top->n_target_list; ++i) walk(&top->target_list[i]->base, subqueries);
  if (top->having_clause) walk(&top->having_clause->base, subqueries);
  for (size_t i = 0; i < top->n_sort_clause; ++i) walk(&top->sort_clause[i]->base, subqueries);
  a.merge_candidate = a.concat_safe && needs_merge(top);
}

// A SELECT on sharded tables: set operations run everywhere; otherwise its joins and the
// keys of its WHERE, its plain CTEs and its subqueries decide the shards.
Analysis& Analyzer::select(const Node* stmt, Analysis& a) {
  const auto* s = stmt->select_stmt;
  // (Before anything sends the statement to every shard: a WITH that writes.)
  for (size_t i = 0; s->with_clause && i < s->with_clause->n_ctes; ++i) {
    const Node* c = s->with_clause->ctes[i];
    if (c && c->node_case == PG_QUERY__NODE__NODE_COMMON_TABLE_EXPR)
      if (auto refused = cte_write(c->common_table_expr->ctequery, a)) return *refused;
  }
  if (s->larg || s->rarg) {
    a.target = Analysis::Target::kAllShards;
    a.reason = "set operation";
    return a;
  }
  if (auto why = renamed_key(stmt)) {
    // The parser matches key columns by name; a name another level gave to something
    // else would be read as the key (a wrong shard, or a join taken as co-located).
    if (uses_.size() > 1) {
      a.target = Analysis::Target::kError;
      a.error = *why + " with several sharded tables is not supported";
      a.hint = "refer to the shard key by its own name";
      return a;
    }
    a.target = Analysis::Target::kAllShards;
    a.reason = *why + ": every shard";
    return decomposes(s, a);
  }
  for (size_t i = 0; i < s->n_from_clause; ++i) joins(s->from_clause[i]);
  // A key inside a plain CTE restricts that CTE's table use.
  if (s->with_clause && !s->with_clause->recursive) {
    for (size_t i = 0; i < s->with_clause->n_ctes; ++i) {
      const Node* c = s->with_clause->ctes[i];
      if (!c || c->node_case != PG_QUERY__NODE__NODE_COMMON_TABLE_EXPR) continue;
      const Node* q = c->common_table_expr->ctequery;
      if (!q || q->node_case != PG_QUERY__NODE__NODE_SELECT_STMT || q->select_stmt->larg) continue;
      for (size_t j = 0; j < q->select_stmt->n_from_clause; ++j)
        joins(q->select_stmt->from_clause[j]);
      cte_wheres_.push_back(q->select_stmt->where_clause);
    }
  }
  // A key in a subquery's WHERE restricts that subquery's table use: a statement whose
  // sharded rows all come from one shard is answered there exactly (`products WHERE
  // sku NOT IN (SELECT sku FROM order_items WHERE user_id = 5)`). Keys only: joins
  // with the outer query's tables are not read from a subquery.
  walk(&stmt->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor != &pg_query__sub_link__descriptor) return;
    const Node* q = reinterpret_cast<const PgQuery__SubLink*>(m)->subselect;
    if (q && q->node_case == PG_QUERY__NODE__NODE_SELECT_STMT && !q->select_stmt->larg)
      sublink_wheres_.push_back(q->select_stmt->where_clause);
  });
  return decomposes(s, keyed(s->where_clause, a));
}

// A WITH query that writes: an UPDATE or DELETE of a sharded table is restricted by the
// keys of its own WHERE (cte_wheres_), as a plain CTE's SELECT is; an INSERT into a sharded
// table is refused (its rows' keys are not read here: every shard would insert them).
std::optional<std::reference_wrapper<Analysis>> Analyzer::cte_write(const Node* q, Analysis& a) {
  if (!q) return std::nullopt;
  if (q->node_case == PG_QUERY__NODE__NODE_UPDATE_STMT) {
    cte_wheres_.push_back(q->update_stmt->where_clause);
  } else if (q->node_case == PG_QUERY__NODE__NODE_DELETE_STMT) {
    cte_wheres_.push_back(q->delete_stmt->where_clause);
  } else if (q->node_case == PG_QUERY__NODE__NODE_INSERT_STMT &&
             sharded_index(cfg_, q->insert_stmt->relation) >= 0) {
    a.target = Analysis::Target::kError;
    a.error = "INSERT into sharded table \"" + std::string(q->insert_stmt->relation->relname) +
              "\" inside WITH is not supported";
    a.hint = "run the INSERT ... RETURNING as a statement of its own";
    return a;
  }
  return std::nullopt;
}

// Whether a SELECT gives a shard key column's name to something else: a derived table's or
// CTE's output column, or an alias column list (`orders o(user_id, id)`), named like a key
// but not that key column itself. Then a name in the statement may not mean the key.
std::optional<std::string> Analyzer::renamed_key(const Node* stmt) const {
  auto is_key_name = [&](std::string_view name) {
    for (const auto& t : cfg_.sharded_tables)
      if (t.column == name) return true;
    return false;
  };
  std::optional<std::string> why;
  // A column list (`what`) that names a key.
  auto key_in_list = [&](PgQuery__Node** names, size_t n, const char* what) {
    for (size_t i = 0; i < n && !why; ++i)
      if (is_key_name(str_of(names[i])))
        why = std::string(what) + " naming shard key \"" + std::string(str_of(names[i])) + "\"";
  };
  walk(&stmt->base, [&](const ProtobufCMessage* m) {
    if (why) return;
    if (m->descriptor == &pg_query__res_target__descriptor) {
      const auto* r = reinterpret_cast<const PgQuery__ResTarget*>(m);
      if (!r->name || !r->name[0] || !is_key_name(r->name)) return;
      const Node* v = r->val;
      const bool same = v && v->node_case == PG_QUERY__NODE__NODE_COLUMN_REF &&
                        v->column_ref->n_fields > 0 &&
                        str_of(v->column_ref->fields[v->column_ref->n_fields - 1]) == r->name;
      if (!same)
        why = std::string("a column named like shard key \"") + r->name + "\" that is not it";
    } else if (m->descriptor == &pg_query__alias__descriptor) {
      const auto* al = reinterpret_cast<const PgQuery__Alias*>(m);
      key_in_list(al->colnames, al->n_colnames, "an alias column list");
    } else if (m->descriptor == &pg_query__common_table_expr__descriptor) {
      const auto* c = reinterpret_cast<const PgQuery__CommonTableExpr*>(m);
      key_in_list(c->aliascolnames, c->n_aliascolnames, "a CTE column list");
    }
  });
  return why;
}

// A SELECT that would run on several shards (concatenated or merged) only when the rows
// every shard holds whole (reference tables, functions in FROM) cannot show once per
// shard (decomposition.hpp); otherwise refused with what stops it. A single shard
// (the key pins one) answers anything: the refusal happens only when several run it.
Analysis& Analyzer::decomposes(const PgQuery__SelectStmt* s, Analysis& a) const {
  if (a.target != Analysis::Target::kAllShards && a.target != Analysis::Target::kKeys) return a;
  if (!a.concat_safe && !a.merge_candidate) return a;  // refused already, for its own reason
  auto problem = decomposition_problem(
      s, [&](const PgQuery__RangeVar* r) { return sharded_index(cfg_, r) >= 0; });
  if (!problem) return a;
  a.concat_safe = false;
  a.merge_candidate = false;
  a.merge_blocker = *problem;
  a.hint =
      "put the sharded table on the kept side of the outer join or in the outer query, or "
      "add the shard key so one shard answers";
  if (a.write) {
    // SELECT ... FOR UPDATE is not merged: refuse it here.
    a.target = Analysis::Target::kError;
    a.error = *problem + " across shards is not supported";
  }
  return a;
}

}  // namespace pgshard::router::detail
