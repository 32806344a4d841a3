// What a statement touches, from PostgreSQL's own parser (libpg_query): its tables, and the
// shard-key values its WHERE / VALUES pin down. Pure and cacheable by statement text.
// This file puts the pieces together (analysis_statement.cpp and the files it names,
// session_effects.cpp, merge_plan.cpp) and checks pgshard.unique_id() calls.
#include "proxy/router/analysis.hpp"

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <set>

#include "proxy/router/analysis_internal.hpp"
#include "proxy/router/ast.hpp"
#include "proxy/router/merge_plan.hpp"

namespace pgshard::router {

namespace detail {

using ast::str_of;
using ast::walk;

ParseTree parse_tree(const std::string& text) {
  auto result = pg_query_parse_protobuf(text.c_str());
  PgQuery__ParseResult* tree = nullptr;
  if (!result.error)
    tree = pg_query__parse_result__unpack(nullptr, result.parse_tree.len,
                                          reinterpret_cast<const uint8_t*>(result.parse_tree.data));
  pg_query_free_protobuf_parse_result(result);
  return ParseTree(tree);
}

int unique_id_function(const PgQuery__FuncCall* f) {
  if (f->n_funcname != 2 || str_of(f->funcname[0]) != "pgshard" || f->n_args != 0) return -1;
  const auto name = str_of(f->funcname[1]);
  return name == "unique_id" ? 0 : name == "unique_id_53" ? 1 : -1;
}

std::vector<Node*> unique_id_calls(const PgQuery__ParseResult* tree) {
  std::vector<Node*> calls;
  walk(&tree->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor != &pg_query__node__descriptor) return;
    auto* n = const_cast<Node*>(reinterpret_cast<const Node*>(m));
    if (n->node_case == PG_QUERY__NODE__NODE_FUNC_CALL && unique_id_function(n->func_call) >= 0)
      calls.push_back(n);
  });
  return calls;
}

}  // namespace detail

namespace {

using detail::Node;
using detail::unique_id_function;
using detail::walk;

// True when each call in `calls` is evaluated once by PostgreSQL, so one id put in per call
// gives what the function would: directly a value of an INSERT ... VALUES row, or an
// output column of a SELECT without FROM, set operations or other function calls (one that
// returns a set would repeat the row).
bool once_per_call(const PgQuery__ParseResult* tree, const std::vector<Node*>& calls) {
  std::set<const Node*> safe;
  for (size_t i = 0; i < tree->n_stmts; ++i) {
    const Node* st = tree->stmts[i]->stmt;
    if (!st) continue;
    const PgQuery__SelectStmt* sel = nullptr;
    if (st->node_case == PG_QUERY__NODE__NODE_INSERT_STMT && st->insert_stmt->select_stmt &&
        st->insert_stmt->select_stmt->node_case == PG_QUERY__NODE__NODE_SELECT_STMT) {
      const auto* v = st->insert_stmt->select_stmt->select_stmt;
      for (size_t r = 0; r < v->n_values_lists; ++r) {
        const Node* row = v->values_lists[r];
        if (row->node_case != PG_QUERY__NODE__NODE_LIST) continue;
        for (size_t k = 0; k < row->list->n_items; ++k) safe.insert(row->list->items[k]);
      }
    } else if (st->node_case == PG_QUERY__NODE__NODE_SELECT_STMT) {
      sel = st->select_stmt;
    }
    if (!sel || sel->n_from_clause > 0 || sel->n_values_lists > 0 || sel->larg || sel->rarg)
      continue;
    int other_calls = 0;
    for (size_t k = 0; k < sel->n_target_list; ++k) {
      const Node* t = sel->target_list[k];
      if (t->node_case != PG_QUERY__NODE__NODE_RES_TARGET || !t->res_target->val) continue;
      walk(&t->res_target->val->base, [&](const ProtobufCMessage* m) {
        if (m->descriptor == &pg_query__func_call__descriptor &&
            unique_id_function(reinterpret_cast<const PgQuery__FuncCall*>(m)) < 0)
          ++other_calls;
      });
    }
    if (other_calls > 0) continue;
    for (size_t k = 0; k < sel->n_target_list; ++k)
      if (sel->target_list[k]->node_case == PG_QUERY__NODE__NODE_RES_TARGET)
        safe.insert(sel->target_list[k]->res_target->val);
  }
  return std::all_of(calls.begin(), calls.end(), [&](const Node* c) { return safe.contains(c); });
}

// pgshard.unique_id() calls: each is put in as a constant before routing, which gives what
// the function would only where PostgreSQL evaluates each call once (else refused). A
// schema change keeps them (a column default, say).
void check_unique_ids(const PgQuery__ParseResult* tree, Analysis& a) {
  const auto calls = detail::unique_id_calls(tree);
  if (calls.empty()) return;
  a.names_unique_id = true;
  if (a.ddl) return;
  if (once_per_call(tree, calls)) {
    a.unique_ids = static_cast<int>(calls.size());
    return;
  }
  a.target = Analysis::Target::kError;
  a.error =
      "pgshard.unique_id() is evaluated by pgshard once per call written in the "
      "statement; here it could serve several rows, which would share one id";
  a.hint =
      "call it in INSERT ... VALUES (one call per row) or SELECT without FROM, or make "
      "it the key column's default";
}

// A SELECT (or EXPLAIN of one) over several shards that pgshard merges: its merge plan.
void plan_merge_of(PgQuery__ParseResult* tree, Analysis& a) {
  if (!a.merge_candidate || tree->n_stmts != 1 ||
      (a.target != Analysis::Target::kAllShards && a.target != Analysis::Target::kKeys))
    return;
  Node* st = tree->stmts[0]->stmt;
  if (st->node_case == PG_QUERY__NODE__NODE_EXPLAIN_STMT) st = st->explain_stmt->query;
  if (!st || st->node_case != PG_QUERY__NODE__NODE_SELECT_STMT) return;
  a.merge = plan_merge(tree, st->select_stmt, a.key_columns);
  a.concat_safe = false;
  a.merge_blocker = a.merge->unsupported;
  if (!a.merge->unsupported.empty()) a.hint = a.merge->hint;
}

}  // namespace

Analysis analyze_statement(std::string_view sql, const config::Config& cfg) {
  std::string text(sql);
  auto result = pg_query_parse_protobuf(text.c_str());
  Analysis a;
  if (result.error) {
    a.target = Analysis::Target::kUnparsed;
    a.reason = "does not parse";
    pg_query_free_protobuf_parse_result(result);
    return a;
  }
  auto* tree = pg_query__parse_result__unpack(
      nullptr, result.parse_tree.len, reinterpret_cast<const uint8_t*>(result.parse_tree.data));
  if (tree) {
    a = detail::analyze_tree(tree, cfg);
    detail::extract_settings(tree, a);
    a.signal_call = detail::signal_call(tree);
    check_unique_ids(tree, a);
    plan_merge_of(tree, a);
    pg_query__parse_result__free_unpacked(tree, nullptr);
  }
  pg_query_free_protobuf_parse_result(result);
  return a;
}

}  // namespace pgshard::router
