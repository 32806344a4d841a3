// What a statement touches, from PostgreSQL's own parser (libpg_query): its tables, and the
// shard-key values its WHERE / VALUES pin down. Pure and cacheable by statement text.
#include "proxy/router/analysis.hpp"

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <tuple>

#include "proxy/router/ast.hpp"
#include "proxy/router/decomposition.hpp"
#include "proxy/router/merge_plan.hpp"
#include "proxy/router/text.hpp"

namespace pgshard::router {

namespace {

// CURSOR_OPT_HOLD (parsenodes.h): DECLARE ... WITH HOLD.
constexpr int32_t kCursorOptHold = 0x0020;

// pg_catalog's functions (PostgreSQL 15), sorted: calls to them change nothing unseen (but
// set_config, which the analysis reads itself).
constexpr std::string_view kBuiltinFunctions[] = {
#include "proxy/router/builtin_functions.inc"
};

bool builtin_function(const PgQuery__FuncCall* f) {
  if (f->n_funcname == 0) return true;
  if (f->n_funcname > 1 && ast::str_of(f->funcname[f->n_funcname - 2]) != "pg_catalog")
    return false;
  const std::string_view name = ast::str_of(f->funcname[f->n_funcname - 1]);
  return std::binary_search(std::begin(kBuiltinFunctions), std::end(kBuiltinFunctions), name);
}

}  // namespace

namespace {

using Node = PgQuery__Node;
using ast::deparse;
using ast::is_aggregate;
using ast::str_of;
using ast::walk;

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

struct FreeTree {
  void operator()(PgQuery__ParseResult* t) const {
    pg_query__parse_result__free_unpacked(t, nullptr);
  }
};
// The protobuf parse tree of a statement text (null when it does not parse).
std::unique_ptr<PgQuery__ParseResult, FreeTree> parse_tree(const std::string& text) {
  auto result = pg_query_parse_protobuf(text.c_str());
  PgQuery__ParseResult* tree = nullptr;
  if (!result.error)
    tree = pg_query__parse_result__unpack(nullptr, result.parse_tree.len,
                                          reinterpret_cast<const uint8_t*>(result.parse_tree.data));
  pg_query_free_protobuf_parse_result(result);
  return std::unique_ptr<PgQuery__ParseResult, FreeTree>(tree);
}

bool is_temp_schema(std::string_view name) {
  return name == "pg_temp" || name.starts_with("pg_temp_");
}

// Statements that change the schema, which is the same on every shard: they run on every
// shard whatever `unsharded` says (it governs data statements). CREATE TABLE AS and
// SELECT INTO carry data and are not among them.
bool schema_change(PgQuery__Node__NodeCase kind) {
  switch (kind) {
    case PG_QUERY__NODE__NODE_CREATE_STMT:
    case PG_QUERY__NODE__NODE_ALTER_TABLE_STMT:
    case PG_QUERY__NODE__NODE_INDEX_STMT:
    case PG_QUERY__NODE__NODE_DROP_STMT:
    case PG_QUERY__NODE__NODE_RENAME_STMT:
    case PG_QUERY__NODE__NODE_COMMENT_STMT:
    case PG_QUERY__NODE__NODE_CREATE_SEQ_STMT:
    case PG_QUERY__NODE__NODE_ALTER_SEQ_STMT:
    case PG_QUERY__NODE__NODE_VIEW_STMT:
    case PG_QUERY__NODE__NODE_CREATE_ENUM_STMT:
    case PG_QUERY__NODE__NODE_ALTER_ENUM_STMT:
    case PG_QUERY__NODE__NODE_COMPOSITE_TYPE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_RANGE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_DOMAIN_STMT:
    case PG_QUERY__NODE__NODE_ALTER_DOMAIN_STMT:
    case PG_QUERY__NODE__NODE_ALTER_TYPE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_SCHEMA_STMT:
    case PG_QUERY__NODE__NODE_CREATE_FUNCTION_STMT:
    case PG_QUERY__NODE__NODE_ALTER_FUNCTION_STMT:
    case PG_QUERY__NODE__NODE_DEFINE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_EXTENSION_STMT:
    case PG_QUERY__NODE__NODE_ALTER_EXTENSION_STMT:
    case PG_QUERY__NODE__NODE_GRANT_STMT:
    case PG_QUERY__NODE__NODE_GRANT_ROLE_STMT:
    case PG_QUERY__NODE__NODE_ALTER_DEFAULT_PRIVILEGES_STMT:
    case PG_QUERY__NODE__NODE_CREATE_ROLE_STMT:
    case PG_QUERY__NODE__NODE_ALTER_ROLE_STMT:
    case PG_QUERY__NODE__NODE_DROP_ROLE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_TRIG_STMT:
    case PG_QUERY__NODE__NODE_CREATE_POLICY_STMT:
    case PG_QUERY__NODE__NODE_ALTER_POLICY_STMT:
    case PG_QUERY__NODE__NODE_ALTER_OWNER_STMT:
    case PG_QUERY__NODE__NODE_ALTER_OBJECT_SCHEMA_STMT:
    case PG_QUERY__NODE__NODE_RULE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_STATS_STMT:
    case PG_QUERY__NODE__NODE_CREATE_CAST_STMT:
    case PG_QUERY__NODE__NODE_ALTER_COLLATION_STMT:
    case PG_QUERY__NODE__NODE_CREATE_CONVERSION_STMT:
    // Databases and role settings live in each shard's server.
    case PG_QUERY__NODE__NODE_CREATEDB_STMT:
    case PG_QUERY__NODE__NODE_DROPDB_STMT:
    case PG_QUERY__NODE__NODE_ALTER_DATABASE_STMT:
    case PG_QUERY__NODE__NODE_ALTER_DATABASE_SET_STMT:
    case PG_QUERY__NODE__NODE_ALTER_ROLE_SET_STMT:
      return true;
    default:
      return false;
  }
}

// Whether a statement names a temporary object (TEMP tables, pg_temp.anything): it lives
// in one server session, not in the schema.
bool names_temp_object(const PgQuery__Node* stmt) {
  bool temp = false;
  walk(&stmt->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor == &pg_query__range_var__descriptor) {
      const auto* rv = reinterpret_cast<const PgQuery__RangeVar*>(m);
      if ((rv->relpersistence && rv->relpersistence[0] == 't') ||
          (rv->schemaname && is_temp_schema(rv->schemaname)))
        temp = true;
    } else if (m->descriptor == &pg_query__string__descriptor) {
      const auto* str = reinterpret_cast<const PgQuery__String*>(m);
      if (str->sval && is_temp_schema(str->sval)) temp = true;
    }
  });
  return temp;
}

// nextval/setval/currval/lastval anywhere in the statement.
bool calls_sequence_function(const PgQuery__Node* stmt) {
  bool found = false;
  walk(&stmt->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor != &pg_query__func_call__descriptor) return;
    const auto* f = reinterpret_cast<const PgQuery__FuncCall*>(m);
    if (f->n_funcname == 0) return;
    const auto name = str_of(f->funcname[f->n_funcname - 1]);
    if (name == "nextval" || name == "setval" || name == "currval" || name == "lastval")
      found = true;
  });
  return found;
}

// pgshard.unique_id() (0) or pgshard.unique_id_53() (1); -1 for any other function.
int unique_id_function(const PgQuery__FuncCall* f) {
  if (f->n_funcname != 2 || str_of(f->funcname[0]) != "pgshard" || f->n_args != 0) return -1;
  const auto name = str_of(f->funcname[1]);
  return name == "unique_id" ? 0 : name == "unique_id_53" ? 1 : -1;
}

// The nodes of `tree` that call pgshard.unique_id() or unique_id_53().
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

// A sharded table as the statement names it.
struct Use {
  int table;         // index into sharded_tables
  std::string name;  // alias, or the table name
  int group;         // co-location group (union-find root)
};

class Analyzer {
 public:
  Analyzer(const config::Config& cfg) : cfg_(cfg) {}

  Analysis run(const PgQuery__ParseResult* tree) {
    if (tree->n_stmts != 1) {
      // Several statements in one Query: route as one unit only if they agree.
      Analysis a = several(tree);
      a.statements = static_cast<int>(tree->n_stmts);
      return a;
    }
    Analysis a1 = one(tree->stmts[0]->stmt);
    const Node* st = tree->stmts[0]->stmt;
    if (st && st->node_case == PG_QUERY__NODE__NODE_TRANSACTION_STMT &&
        !st->transaction_stmt->chain) {
      switch (st->transaction_stmt->kind) {
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_BEGIN:
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_START:
          a1.txn = TxnControl::kBegin;
          break;
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT:
          a1.txn = TxnControl::kCommit;
          break;
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK:
          a1.txn = TxnControl::kRollback;
          break;
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_SAVEPOINT:
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_RELEASE:
          a1.txn = TxnControl::kSavepoint;
          break;
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_TO:
          a1.txn = TxnControl::kRollbackTo;
          break;
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_PREPARE:
          a1.txn = TxnControl::kPrepare;
          a1.gid = st->transaction_stmt->gid;
          break;
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT_PREPARED:
        case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_PREPARED:
          a1.txn = TxnControl::kFinishPrepared;
          a1.gid = st->transaction_stmt->gid;
          break;
        default:
          break;
      }
    }
    return a1;
  }

 private:
  Analysis several(const PgQuery__ParseResult* tree) {
    Analysis a = several_body(tree);
    a.takes_snapshot = false;
    for (size_t i = 0; i < tree->n_stmts; ++i) {
      const Node* st = tree->stmts[i]->stmt;
      a.controls_txn =
          a.controls_txn || (st && st->node_case == PG_QUERY__NODE__NODE_TRANSACTION_STMT);
      a.takes_snapshot = a.takes_snapshot || (st && takes_snapshot(st->node_case));
    }
    return a;
  }

  Analysis several_body(const PgQuery__ParseResult* tree) {
    Analysis merged;
    merged.target = Analysis::Target::kAnyShard;
    for (size_t i = 0; i < tree->n_stmts; ++i) {
      Analysis a = one(tree->stmts[i]->stmt);
      if (a.target == Analysis::Target::kAnyShard) continue;
      if (merged.target == Analysis::Target::kAnyShard) {
        merged = a;
        continue;
      }
      if (a.target == Analysis::Target::kError) return a;
      if (a.target == Analysis::Target::kKeys && merged.target == Analysis::Target::kKeys &&
          a.table >= 0 &&
          cfg_.sharded_tables[a.table].type == cfg_.sharded_tables[merged.table].type &&
          !a.insert && !merged.insert) {
        merged.keys.insert(merged.keys.end(), a.keys.begin(), a.keys.end());
        merged.write = merged.write || a.write;
        continue;
      }
      if (a.target == merged.target && a.target != Analysis::Target::kKeys) {
        merged.write = merged.write || a.write;
        continue;
      }
      if (cfg_.shards.size() == 1) {
        // One shard holds everything (a schema change and a data statement, say): the
        // statements go there together; `unsharded: reject` still refuses data outside the map.
        if (a.target == Analysis::Target::kUnsharded) merged.target = a.target;
        merged.write = merged.write || a.write;
        merged.ddl = merged.ddl || a.ddl;
        continue;
      }
      merged.target = Analysis::Target::kError;
      merged.error = "a multi-statement query must stay on one shard";
      merged.hint = "send the statements separately, or add a shard hint";
      return merged;
    }
    return merged;
  }

  Analysis one(const Node* stmt) {
    Analysis a = body(stmt);
    a.takes_snapshot = stmt && takes_snapshot(stmt->node_case);
    return a;
  }

  // PlannedStmtRequiresSnapshot's list (PostgreSQL's pquery.c): utility statements that run
  // without a snapshot. EXPLAIN and COPY (query) take one as their statement does.
  static bool takes_snapshot(int kind) {
    switch (kind) {
      case PG_QUERY__NODE__NODE_TRANSACTION_STMT:
      case PG_QUERY__NODE__NODE_LOCK_STMT:
      case PG_QUERY__NODE__NODE_VARIABLE_SET_STMT:
      case PG_QUERY__NODE__NODE_VARIABLE_SHOW_STMT:
      case PG_QUERY__NODE__NODE_CONSTRAINTS_SET_STMT:
      case PG_QUERY__NODE__NODE_FETCH_STMT:
      case PG_QUERY__NODE__NODE_LISTEN_STMT:
      case PG_QUERY__NODE__NODE_NOTIFY_STMT:
      case PG_QUERY__NODE__NODE_UNLISTEN_STMT:
      case PG_QUERY__NODE__NODE_CHECK_POINT_STMT:
        return false;
      default:
        return true;
    }
  }

  Analysis body(const Node* stmt) {
    Analysis a;
    if (!stmt) return a;
    if (stmt->node_case == PG_QUERY__NODE__NODE_EXPLAIN_STMT && stmt->explain_stmt->query) {
      // EXPLAIN goes where its statement goes; EXPLAIN (ROUTE) is answered by pgshard.
      bool route = false;
      for (size_t i = 0; i < stmt->explain_stmt->n_options; ++i) {
        const Node* o = stmt->explain_stmt->options[i];
        if (o && o->node_case == PG_QUERY__NODE__NODE_DEF_ELEM && o->def_elem->defname &&
            std::string_view(o->def_elem->defname) == "route")
          route = true;
      }
      a = one(stmt->explain_stmt->query);
      a.explain_route = route;
      if (!route && a.concat_safe) {
        a.concat_safe = false;
        a.merge_blocker = "EXPLAIN";
      }
      return a;
    }
    if (stmt->node_case == PG_QUERY__NODE__NODE_COPY_STMT && !stmt->copy_stmt->is_from &&
        stmt->copy_stmt->query) {
      // COPY (query) TO goes where its query goes and is checked as that query is (joins,
      // reference tables, subqueries); the shards' rows are concatenated, never merged.
      const auto* c = stmt->copy_stmt;
      a = one(c->query);
      a.copy_out_header = copy_options(c).header;
      if (a.merge_candidate || !a.concat_safe) {
        a.concat_safe = false;
        a.merge_candidate = false;
        if (a.merge_blocker.empty())
          a.merge_blocker = "COPY of a query whose rows pgshard would have to merge";
      }
      return a;
    }
    if (stmt->node_case == PG_QUERY__NODE__NODE_DECLARE_CURSOR_STMT &&
        stmt->declare_cursor_stmt->query) {
      // DECLARE goes where its query goes (the router refuses a query of several shards);
      // FETCH, MOVE and CLOSE then follow the cursor's name to its server.
      const auto* d = stmt->declare_cursor_stmt;
      a = one(d->query);
      a.cursor = d->portalname ? d->portalname : "";
      a.cursor_op = Analysis::CursorOp::kDeclare;
      a.cursor_hold = (d->options & kCursorOptHold) != 0;
      return a;
    }
    if (stmt->node_case == PG_QUERY__NODE__NODE_FETCH_STMT ||
        stmt->node_case == PG_QUERY__NODE__NODE_CLOSE_PORTAL_STMT) {
      const char* name = stmt->node_case == PG_QUERY__NODE__NODE_FETCH_STMT
                             ? stmt->fetch_stmt->portalname
                             : stmt->close_portal_stmt->portalname;
      a.cursor = name ? name : "";  // CLOSE ALL: no name
      a.cursor_op = stmt->node_case == PG_QUERY__NODE__NODE_FETCH_STMT ? Analysis::CursorOp::kFetch
                                                                       : Analysis::CursorOp::kClose;
      a.reason = "cursor: the server that declared it";
      return a;
    }
    // Every relation named anywhere, minus CTE names.
    std::set<std::string> ctes;
    std::vector<const PgQuery__RangeVar*> rels;
    walk(&stmt->base, [&](const ProtobufCMessage* m) {
      if (m->descriptor == &pg_query__range_var__descriptor)
        rels.push_back(reinterpret_cast<const PgQuery__RangeVar*>(m));
      else if (m->descriptor == &pg_query__common_table_expr__descriptor)
        ctes.insert(reinterpret_cast<const PgQuery__CommonTableExpr*>(m)->ctename);
    });
    const auto kind = stmt->node_case;
    // What stops rows from several shards being simply concatenated.
    auto block = [&](const char* what) {
      if (a.concat_safe) a.merge_blocker = what;
      a.concat_safe = false;
    };
    // Subqueries that read no sharded table give every shard the same rows, whatever they
    // compute (aggregates, ORDER BY, LIMIT...): what is inside them blocks nothing.
    std::set<const ProtobufCMessage*> replicated;
    walk(&stmt->base, [&](const ProtobufCMessage* m) {
      if (m->descriptor != &pg_query__select_stmt__descriptor || replicated.contains(m)) return;
      bool sharded = false;
      walk(m, [&](const ProtobufCMessage* x) {
        if (x->descriptor == &pg_query__range_var__descriptor) {
          const auto* r = reinterpret_cast<const PgQuery__RangeVar*>(x);
          // (A CTE's name counts as sharded: where its rows come from is not traced here.)
          if (sharded_index(r) >= 0 || (!r->schemaname[0] && ctes.contains(r->relname)))
            sharded = true;
        }
      });
      if (!sharded) walk(m, [&](const ProtobufCMessage* x) { replicated.insert(x); });
    });
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
        kind == PG_QUERY__NODE__NODE_SELECT_STMT ? stmt->select_stmt : nullptr;
    if (top && !top->larg && !top->rarg && top->n_values_lists == 0) {
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
    } else {
      walk(&stmt->base, blockers);
    }
    a.write = kind == PG_QUERY__NODE__NODE_INSERT_STMT ||
              kind == PG_QUERY__NODE__NODE_UPDATE_STMT || kind == PG_QUERY__NODE__NODE_DELETE_STMT;
    const bool select = kind == PG_QUERY__NODE__NODE_SELECT_STMT;
    a.ddl = !a.write && !select && kind != PG_QUERY__NODE__NODE_EXPLAIN_STMT &&
            kind != PG_QUERY__NODE__NODE_COPY_STMT && !rels.empty();
    if (select) {
      const auto* s = stmt->select_stmt;
      if (s->n_locking_clause > 0) a.write = true;  // SELECT ... FOR UPDATE takes row locks
      // WITH x AS (INSERT/UPDATE/DELETE ...) SELECT: a write (every copy of a reference table).
      for (size_t i = 0; s->with_clause && i < s->with_clause->n_ctes; ++i) {
        const Node* cte = s->with_clause->ctes[i];
        if (!cte || cte->node_case != PG_QUERY__NODE__NODE_COMMON_TABLE_EXPR ||
            !cte->common_table_expr->ctequery)
          continue;
        const auto q = cte->common_table_expr->ctequery->node_case;
        if (q == PG_QUERY__NODE__NODE_INSERT_STMT || q == PG_QUERY__NODE__NODE_UPDATE_STMT ||
            q == PG_QUERY__NODE__NODE_DELETE_STMT)
          a.write = true;
      }
    }

    bool unsharded = false, reference = false;
    uses_.clear();
    cte_wheres_.clear();
    sublink_wheres_.clear();
    for (const auto* r : rels) {
      if (!r->schemaname[0] && ctes.contains(r->relname)) continue;
      // System catalogs exist on every shard: drivers' type introspection runs anywhere.
      const std::string_view schema = r->schemaname, rel = r->relname;
      if (schema == "pg_catalog" || schema == "information_schema" ||
          (schema.empty() && rel.starts_with("pg_")))
        continue;
      int t = sharded_index(r);
      if (t >= 0) {
        std::string name = r->alias ? r->alias->aliasname : r->relname;
        uses_.push_back({t, name, static_cast<int>(uses_.size())});
      } else if (is_reference(r)) {
        reference = true;
      } else {
        unsharded = true;
      }
    }
    if (kind == PG_QUERY__NODE__NODE_DROP_STMT) {
      // DROP names its objects as lists of strings, not relations.
      const auto* d = stmt->drop_stmt;
      for (size_t i = 0; i < d->n_objects; ++i) {
        const Node* o = d->objects[i];
        if (!o || o->node_case != PG_QUERY__NODE__NODE_LIST || o->list->n_items == 0) continue;
        PgQuery__RangeVar rv = PG_QUERY__RANGE_VAR__INIT;
        std::string rel(str_of(o->list->items[o->list->n_items - 1]));
        std::string schema(o->list->n_items > 1 ? str_of(o->list->items[o->list->n_items - 2])
                                                : "");
        rv.relname = rel.data();
        rv.schemaname = schema.data();
        if (sharded_index(&rv) >= 0 || is_reference(&rv)) {
          a.ddl = true;
          a.target = Analysis::Target::kAllShards;
          a.reason = "DROP of a sharded or reference table: every shard";
          return a;
        }
      }
    }
    for (const auto* r : rels)
      if (r->relpersistence && r->relpersistence[0] == 't') a.temp_tables.emplace_back(r->relname);
    if (kind == PG_QUERY__NODE__NODE_DO_STMT) {
      std::string problem;
      if (do_block_changes_schema_only(stmt->do_stmt, problem)) {
        a.ddl = true;
        a.target = problem.empty() ? Analysis::Target::kAllShards : Analysis::Target::kError;
        a.error = problem;
        a.reason = "schema change in a DO block: every shard";
        return a;
      }
    }
    if (uses_.empty() && schema_change(kind) && !names_temp_object(stmt)) {
      a.ddl = true;
      a.target = Analysis::Target::kAllShards;
      a.reason = "schema change: every shard";
      for (const auto* r : rels) a.schema_objects.emplace_back(r->relname);
      if (kind == PG_QUERY__NODE__NODE_DROP_STMT) {
        a.drops = true;
        const auto* d = stmt->drop_stmt;
        for (size_t i = 0; i < d->n_objects; ++i) {
          const Node* o = d->objects[i];
          if (o && o->node_case == PG_QUERY__NODE__NODE_LIST && o->list->n_items > 0)
            a.schema_objects.emplace_back(str_of(o->list->items[o->list->n_items - 1]));
        }
      }
      return a;
    }
    if (uses_.empty()) {
      if (kind == PG_QUERY__NODE__NODE_COPY_STMT) copy_unmapped(stmt->copy_stmt, a);
      if (unsharded) {
        a.target = Analysis::Target::kUnsharded;
        a.reason = "table not in the shard map";
      } else if (reference) {
        a.target =
            a.write || a.ddl ? Analysis::Target::kAllShards : Analysis::Target::kReferenceRead;
        a.replicated = a.write;
        a.reason =
            a.write || a.ddl ? "write to reference table: every shard" : "reference table read";
        if (a.copy_in) {
          a.target = Analysis::Target::kCopyIn;
          a.reason = "COPY FROM STDIN into a reference table: every row to every shard";
        }
      } else if (calls_sequence_function(stmt)) {
        a.target = Analysis::Target::kSequenceHome;
        a.write = true;
        a.reason = "sequence function: the sequences' home shard";
      } else {
        a.reason = "no table";
      }
      return a;
    }
    if (kind == PG_QUERY__NODE__NODE_INSERT_STMT && inserts_select(stmt->insert_stmt)) {
      // The SELECT is routed (and checked) on its own when it runs.
      a.target = Analysis::Target::kInsertSelect;
      a.write = true;
      a.insert = true;
      a.table = uses_.front().table;
      a.reason = "INSERT ... SELECT: pgshard runs the SELECT, then inserts its rows by key";
      if (const auto* w = stmt->insert_stmt->select_stmt->select_stmt;
          w->n_from_clause == 0 && w->where_clause &&
          w->where_clause->node_case == PG_QUERY__NODE__NODE_A_CONST &&
          w->where_clause->a_const->val_case == PG_QUERY__A__CONST__VAL_BOOLVAL &&
          !w->where_clause->a_const->boolval->boolval) {
        // ... SELECT <values> WHERE false: inserts nothing; any shard answers it.
        a.target = Analysis::Target::kAnyShard;
        a.reason = "INSERT of no rows";
      }
      if (stmt->insert_stmt->with_clause) {
        a.target = Analysis::Target::kError;
        a.error = "INSERT ... SELECT into a sharded table with a WITH clause is not supported";
        a.hint = "put the WITH inside the SELECT";
      }
      return a;
    }
    if (unsharded) {
      a.target = Analysis::Target::kError;
      a.error = "statement mixes sharded tables with tables that are not in the shard map";
      a.hint = "add the tables to sharded_tables or reference_tables";
      return a;
    }
    a.table = uses_.front().table;
    for (const auto& u : uses_) a.key_columns.push_back(cfg_.sharded_tables[u.table].column);
    if (kind == PG_QUERY__NODE__NODE_COPY_STMT) return copy(stmt->copy_stmt, a);
    if (const PgQuery__RangeVar* target = write_target(stmt); target && is_reference(target)) {
      // Every shard would change its copy from its own sharded rows: the copies would differ.
      a.target = Analysis::Target::kError;
      a.error = "a write to reference table \"" + std::string(target->relname) +
                "\" that reads sharded tables (" + use_names() + ") is not supported";
      a.hint = "compute the values first, then write them to the reference table";
      return a;
    }
    if (a.ddl) {
      if (auto problem = foreign_key_problem(stmt)) {
        a.target = Analysis::Target::kError;
        a.error = *problem;
        a.hint =
            "reference the shard key from a table sharded alike by that key, or make the "
            "referenced table a reference table";
        return a;
      }
      a.target = Analysis::Target::kAllShards;
      a.reason = "DDL on a sharded table: every shard";
      return a;
    }
    switch (kind) {
      case PG_QUERY__NODE__NODE_INSERT_STMT:
        return insert(stmt->insert_stmt, a);
      case PG_QUERY__NODE__NODE_UPDATE_STMT: {
        const auto* u = stmt->update_stmt;
        for (size_t i = 0; i < u->n_target_list; ++i) {
          const auto* rt = u->target_list[i]->res_target;
          if (rt && rt->name && rt->name == cfg_.sharded_tables[uses_.front().table].column) {
            auto v = value_of(rt->val);
            if (!v || v->kind == KeyValue::Kind::kGenerate) {
              a.target = Analysis::Target::kError;
              a.error = "UPDATE of the shard key column \"" + std::string(rt->name) +
                        "\" could move rows to another shard";
              a.hint = "delete and re-insert the row instead";
              return a;
            }
            a.new_key = v;
          }
        }
        for (size_t i = 0; i < u->n_from_clause; ++i) joins(u->from_clause[i]);
        return keyed(u->where_clause, a);
      }
      case PG_QUERY__NODE__NODE_DELETE_STMT: {
        const auto* d = stmt->delete_stmt;
        return keyed(d->where_clause, a);
      }
      case PG_QUERY__NODE__NODE_SELECT_STMT: {
        const auto* s = stmt->select_stmt;
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
            if (!q || q->node_case != PG_QUERY__NODE__NODE_SELECT_STMT || q->select_stmt->larg)
              continue;
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
      default:
        a.target = Analysis::Target::kAllShards;
        a.reason = "statement on a sharded table without a key";
        return a;
    }
  }

  // Whether a SELECT gives a shard key column's name to something else: a derived table's or
  // CTE's output column, or an alias column list (`orders o(user_id, id)`), named like a key
  // but not that key column itself. Then a name in the statement may not mean the key.
  std::optional<std::string> renamed_key(const Node* stmt) const {
    auto is_key_name = [&](std::string_view name) {
      for (const auto& t : cfg_.sharded_tables)
        if (t.column == name) return true;
      return false;
    };
    std::optional<std::string> why;
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
        for (size_t i = 0; i < al->n_colnames && !why; ++i)
          if (is_key_name(str_of(al->colnames[i])))
            why = "an alias column list naming shard key \"" +
                  std::string(str_of(al->colnames[i])) + "\"";
      } else if (m->descriptor == &pg_query__common_table_expr__descriptor) {
        const auto* c = reinterpret_cast<const PgQuery__CommonTableExpr*>(m);
        for (size_t i = 0; i < c->n_aliascolnames && !why; ++i)
          if (is_key_name(str_of(c->aliascolnames[i])))
            why = "a CTE column list naming shard key \"" +
                  std::string(str_of(c->aliascolnames[i])) + "\"";
      }
    });
    return why;
  }

  // The table an INSERT, UPDATE or DELETE writes.
  static const PgQuery__RangeVar* write_target(const Node* stmt) {
    switch (stmt->node_case) {
      case PG_QUERY__NODE__NODE_INSERT_STMT:
        return stmt->insert_stmt->relation;
      case PG_QUERY__NODE__NODE_UPDATE_STMT:
        return stmt->update_stmt->relation;
      case PG_QUERY__NODE__NODE_DELETE_STMT:
        return stmt->delete_stmt->relation;
      default:
        return nullptr;
    }
  }

  // A SELECT that would run on several shards (concatenated or merged) only when the rows
  // every shard holds whole (reference tables, functions in FROM) cannot show once per
  // shard (decomposition.hpp); otherwise refused with what stops it. A single shard
  // (the key pins one) answers anything: the refusal happens only when several run it.
  Analysis& decomposes(const PgQuery__SelectStmt* s, Analysis& a) {
    if (a.target != Analysis::Target::kAllShards && a.target != Analysis::Target::kKeys) return a;
    if (!a.concat_safe && !a.merge_candidate) return a;  // refused already, for its own reason
    auto problem =
        decomposition_problem(s, [&](const PgQuery__RangeVar* r) { return sharded_index(r) >= 0; });
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

  int sharded_index(const PgQuery__RangeVar* r) const {
    for (size_t i = 0; i < cfg_.sharded_tables.size(); ++i) {
      const auto& t = cfg_.sharded_tables[i];
      if (t.table == r->relname &&
          (t.schema.empty() || !r->schemaname[0] || t.schema == r->schemaname))
        return static_cast<int>(i);
    }
    return -1;
  }

  bool is_reference(const PgQuery__RangeVar* r) const {
    for (const auto& t : cfg_.reference_tables) {
      auto dot = t.find('.');
      if (dot == std::string::npos ? t == r->relname
                                   : t.substr(dot + 1) == r->relname &&
                                         (!r->schemaname[0] || t.substr(0, dot) == r->schemaname))
        return true;
    }
    return false;
  }

  // The use a column reference names, if it is that use's shard key.
  int key_use(const Node* n) const {
    if (!n || n->node_case != PG_QUERY__NODE__NODE_COLUMN_REF) return -1;
    const auto* c = n->column_ref;
    if (c->n_fields == 0) return -1;
    auto col = str_of(c->fields[c->n_fields - 1]);
    std::string_view qual = c->n_fields >= 2 ? str_of(c->fields[c->n_fields - 2]) : "";
    int found = -1;
    for (size_t i = 0; i < uses_.size(); ++i) {
      const auto& t = cfg_.sharded_tables[uses_[i].table];
      if (col != t.column) continue;
      if (!qual.empty() && qual != uses_[i].name) continue;
      if (found >= 0 && qual.empty()) return -2;  // ambiguous
      found = static_cast<int>(i);
    }
    return found;
  }

  static const Node* strip_casts(const Node* n) {
    while (n && n->node_case == PG_QUERY__NODE__NODE_TYPE_CAST) n = n->type_cast->arg;
    return n;
  }

  static std::optional<KeyValue> value_of(const Node* n) {
    n = strip_casts(n);
    if (!n) return std::nullopt;
    if (n->node_case == PG_QUERY__NODE__NODE_SET_TO_DEFAULT)
      return KeyValue{KeyValue::Kind::kGenerate, {}, 0};
    if (n->node_case == PG_QUERY__NODE__NODE_PARAM_REF)
      return KeyValue{KeyValue::Kind::kParam, {}, n->param_ref->number};
    if (n->node_case == PG_QUERY__NODE__NODE_A_CONST) {
      const auto* c = n->a_const;
      switch (c->val_case) {
        case PG_QUERY__A__CONST__VAL_IVAL:
          return KeyValue{KeyValue::Kind::kLiteral, std::to_string(c->ival->ival), 0};
        case PG_QUERY__A__CONST__VAL_SVAL:
          return KeyValue{KeyValue::Kind::kLiteral, c->sval->sval, 0};
        case PG_QUERY__A__CONST__VAL_FVAL:
          return KeyValue{KeyValue::Kind::kLiteral, c->fval->fval, 0};
        default:
          return std::nullopt;
      }
    }
    // -42 arrives as a unary minus expression.
    if (n->node_case == PG_QUERY__NODE__NODE_A_EXPR && !n->a_expr->lexpr &&
        n->a_expr->n_name == 1 && str_of(n->a_expr->name[0]) == "-") {
      auto v = value_of(n->a_expr->rexpr);
      if (v && v->kind == KeyValue::Kind::kLiteral) {
        v->literal = "-" + v->literal;
        return v;
      }
    }
    return std::nullopt;
  }

  // Joins in FROM: ON quals join co-located tables.
  void joins(const Node* n) {
    if (!n || n->node_case != PG_QUERY__NODE__NODE_JOIN_EXPR) return;
    joins(n->join_expr->larg);
    joins(n->join_expr->rarg);
    collect(n->join_expr->quals, nullptr);
  }

  // The sharded tables the statement names, each once, for messages.
  std::string use_names() const {
    std::vector<std::string> names;
    for (const auto& u : uses_) {
      const auto& t = cfg_.sharded_tables[u.table].table;
      if (std::find(names.begin(), names.end(), t) == names.end()) names.push_back(t);
    }
    std::string out;
    for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
    return out;
  }

  int find(int u) {
    while (uses_[u].group != u) u = uses_[u].group = uses_[uses_[u].group].group;
    return u;
  }

  // Walks the AND-conjunction of `e`: records key equalities between uses (co-location),
  // and, when `keys` is given, the key values restricting each group.
  void collect(const Node* e, std::vector<std::pair<int, std::vector<KeyValue>>>* keys) {
    if (!e) return;
    if (e->node_case == PG_QUERY__NODE__NODE_BOOL_EXPR &&
        e->bool_expr->boolop == PG_QUERY__BOOL_EXPR_TYPE__AND_EXPR) {
      for (size_t i = 0; i < e->bool_expr->n_args; ++i) collect(e->bool_expr->args[i], keys);
      return;
    }
    if (e->node_case == PG_QUERY__NODE__NODE_A_EXPR &&
        e->a_expr->kind == PG_QUERY__A__EXPR__KIND__AEXPR_OP && e->a_expr->n_name == 1 &&
        str_of(e->a_expr->name[0]) == "=") {
      int l = key_use(strip_casts(e->a_expr->lexpr));
      int r = key_use(strip_casts(e->a_expr->rexpr));
      if (l >= 0 && r >= 0 &&
          cfg_.sharded_tables[uses_[l].table].type == cfg_.sharded_tables[uses_[r].table].type) {
        uses_[find(l)].group = find(r);
        return;
      }
    }
    if (!keys) return;
    int use = -1;
    if (auto v = key_values(e, &use); v && use >= 0) keys->emplace_back(use, std::move(*v));
  }

  // The key values the AND-conjuncts of `e` restrict uses to (no co-location recorded).
  void key_conjuncts(const Node* e, std::vector<std::pair<int, std::vector<KeyValue>>>& keys) {
    if (!e) return;
    if (e->node_case == PG_QUERY__NODE__NODE_BOOL_EXPR &&
        e->bool_expr->boolop == PG_QUERY__BOOL_EXPR_TYPE__AND_EXPR) {
      for (size_t i = 0; i < e->bool_expr->n_args; ++i) key_conjuncts(e->bool_expr->args[i], keys);
      return;
    }
    int use = -1;
    if (auto v = key_values(e, &use); v && use >= 0) keys.emplace_back(use, std::move(*v));
  }

  // Key values an expression restricts one use to: `key = v`, `key IN (...)`,
  // `key = ANY($n)`, and ORs of those on the same use.
  std::optional<std::vector<KeyValue>> key_values(const Node* e, int* use) {
    if (!e) return std::nullopt;
    if (e->node_case == PG_QUERY__NODE__NODE_BOOL_EXPR &&
        e->bool_expr->boolop == PG_QUERY__BOOL_EXPR_TYPE__OR_EXPR) {
      std::vector<KeyValue> all;
      for (size_t i = 0; i < e->bool_expr->n_args; ++i) {
        int u = -1;
        auto v = key_values(e->bool_expr->args[i], &u);
        if (!v || (*use >= 0 && u != *use)) return std::nullopt;
        *use = u;
        all.insert(all.end(), v->begin(), v->end());
      }
      return all;
    }
    if (e->node_case == PG_QUERY__NODE__NODE_BOOL_EXPR &&
        e->bool_expr->boolop == PG_QUERY__BOOL_EXPR_TYPE__AND_EXPR) {
      // Inside an OR: any conjunct that pins the key is enough.
      for (size_t i = 0; i < e->bool_expr->n_args; ++i)
        if (auto v = key_values(e->bool_expr->args[i], use)) return v;
      return std::nullopt;
    }
    if (e->node_case != PG_QUERY__NODE__NODE_A_EXPR) return std::nullopt;
    const auto* x = e->a_expr;
    if (x->n_name != 1 || str_of(x->name[0]) != "=") return std::nullopt;
    int l = key_use(strip_casts(x->lexpr));
    const Node* other = x->rexpr;
    if (l < 0) {
      l = key_use(strip_casts(x->rexpr));
      other = x->lexpr;
    }
    if (l < 0) return std::nullopt;
    std::vector<KeyValue> out;
    if (x->kind == PG_QUERY__A__EXPR__KIND__AEXPR_OP) {
      auto v = value_of(other);
      if (!v) return std::nullopt;
      out.push_back(*v);
    } else if (x->kind == PG_QUERY__A__EXPR__KIND__AEXPR_IN) {
      if (!other || other->node_case != PG_QUERY__NODE__NODE_LIST) return std::nullopt;
      for (size_t i = 0; i < other->list->n_items; ++i) {
        auto v = value_of(other->list->items[i]);
        if (!v) return std::nullopt;
        out.push_back(*v);
      }
    } else if (x->kind == PG_QUERY__A__EXPR__KIND__AEXPR_OP_ANY) {
      const Node* arr = strip_casts(other);
      if (arr && arr->node_case == PG_QUERY__NODE__NODE_PARAM_REF) {
        out.push_back({KeyValue::Kind::kArrayParam, {}, arr->param_ref->number});
      } else if (arr && arr->node_case == PG_QUERY__NODE__NODE_A_ARRAY_EXPR) {
        for (size_t i = 0; i < arr->a_array_expr->n_elements; ++i) {
          auto v = value_of(arr->a_array_expr->elements[i]);
          if (!v) return std::nullopt;
          out.push_back(*v);
        }
      } else {
        return std::nullopt;
      }
    } else {
      return std::nullopt;
    }
    if (*use >= 0 && *use != l) return std::nullopt;
    *use = l;
    return out;
  }

  Analysis& keyed(const Node* where, Analysis& a) {
    std::vector<std::pair<int, std::vector<KeyValue>>> keys;
    collect(where, &keys);
    for (const Node* w : cte_wheres_) collect(w, &keys);
    for (const Node* w : sublink_wheres_) key_conjuncts(w, keys);
    // Every sharded table must be tied (by key equality) to one group.
    int root = find(0);
    for (size_t i = 1; i < uses_.size(); ++i) {
      if (find(static_cast<int>(i)) != root) {
        a.target = a.write ? Analysis::Target::kError : Analysis::Target::kAllShards;
        a.reason = "sharded tables not joined on their shard keys";
        // Each shard would join only its own rows: pairs on different shards would be lost,
        // whatever pgshard merges afterwards (aggregates included).
        a.concat_safe = false;
        a.merge_candidate = false;
        a.merge_blocker =
            "joining sharded tables (" + use_names() + ") other than on their shard keys";
        if (a.write) {
          a.error =
              "statement writes across shards: its sharded tables are not joined on the shard key";
          a.hint = "join on the shard key columns, or add a sharding_key hint";
        }
        return a;
      }
    }
    // The smallest key set wins (a conjunction of restrictions).
    const std::vector<KeyValue>* best = nullptr;
    for (const auto& [use, values] : keys)
      if (find(use) == root && (!best || values.size() < best->size())) {
        best = &values;
        a.table = uses_[use].table;
      }
    if (!best) {
      a.target = Analysis::Target::kAllShards;
      a.reason = "no shard key in WHERE";
      return a;
    }
    a.target = Analysis::Target::kKeys;
    a.keys = *best;
    a.reason = "shard key in WHERE";
    return a;
  }

  Analysis& copy(const PgQuery__CopyStmt* c, Analysis& a) {
    if (!c->is_from) {
      // COPY (query) TO goes where its query goes; COPY table TO reads every shard.
      a.target = Analysis::Target::kAllShards;
      a.reason = c->relation ? "COPY TO of a sharded table: every shard"
                             : "COPY of a query on a sharded table";
      a.copy_out_header = copy_options(c).header;
      return a;
    }
    if (c->is_program || (c->filename && c->filename[0])) {
      a.target = Analysis::Target::kError;
      a.error = "COPY FROM a server file or program is not supported on a sharded table";
      a.hint = "use COPY ... FROM STDIN";
      return a;
    }
    const auto& t = cfg_.sharded_tables[uses_.front().table];
    if (t.function == config::ShardFunction::kDirectory) {
      a.target = Analysis::Target::kError;
      a.error = "COPY into a table placed by a directory is not supported yet";
      a.hint = "insert the rows with INSERT";
      return a;
    }
    CopySplit split = copy_options(c);
    split.key_name = t.column;
    if (c->n_attlist > 0) {
      for (size_t i = 0; i < c->n_attlist; ++i)
        if (str_of(c->attlist[i]) == t.column) split.key_column = static_cast<int>(i);
      if (split.key_column < 0) {
        a.target = Analysis::Target::kError;
        a.error = "COPY into sharded table \"" + t.table + "\" must include its shard key \"" +
                  t.column + "\"";
        return a;
      }
    }
    if (split.binary) {
      a.target = Analysis::Target::kError;
      a.error = "COPY FROM STDIN in binary format is not supported on a sharded table";
      a.hint = "use FORMAT text or csv";
      return a;
    }
    a.target = Analysis::Target::kCopyIn;
    a.write = true;
    a.copy_in = split;
    a.reason = "COPY FROM STDIN: rows split by " + t.column;
    return a;
  }

  // COPY of tables outside sharded_tables (reference tables, unsharded ones). COPY FROM
  // writes (every shard of a reference table); FROM STDIN is copied to every shard as the
  // client streams it (`replicate`), when the table is on several.
  void copy_unmapped(const PgQuery__CopyStmt* c, Analysis& a) {
    if (!c->is_from) {
      a.copy_out_header = copy_options(c).header;
      return;
    }
    a.write = true;
    if (c->is_program || (c->filename && c->filename[0])) return;
    CopySplit split = copy_options(c);
    split.replicate = true;
    a.copy_in = split;
  }

  // The table and the format options of a COPY (PostgreSQL's defaults, as copy.c sets them).
  static CopySplit copy_options(const PgQuery__CopyStmt* c) {
    CopySplit split;
    if (c->relation)
      split.table = c->relation->schemaname && c->relation->schemaname[0]
                        ? std::string(c->relation->schemaname) + "." + c->relation->relname
                        : std::string(c->relation->relname);
    bool delimiter = false, escape = false;
    for (size_t i = 0; i < c->n_options; ++i) {
      const Node* o = c->options[i];
      if (!o || o->node_case != PG_QUERY__NODE__NODE_DEF_ELEM) continue;
      std::string_view name = o->def_elem->defname;
      const Node* arg = o->def_elem->arg;
      std::string_view value = str_of(arg);
      if (name == "format") {
        split.csv = value == "csv";
        split.binary = value == "binary";
      } else if (name == "delimiter" && value.size() == 1) {
        split.delimiter = value[0];
        delimiter = true;
      } else if (name == "quote" && value.size() == 1) {
        split.quote = value[0];
      } else if (name == "escape" && value.size() == 1) {
        split.escape = value[0];
        escape = true;
      } else if (name == "header") {
        // defGetCopyHeaderChoice: no argument, true/on (any case), 1, or MATCH (COPY FROM).
        auto is = [&](std::string_view word) {
          return value.size() == word.size() &&
                 std::equal(value.begin(), value.end(), word.begin(), [](char x, char y) {
                   return std::tolower(static_cast<unsigned char>(x)) == y;
                 });
        };
        split.header =
            !arg || (arg->node_case == PG_QUERY__NODE__NODE_BOOLEAN && arg->boolean->boolval) ||
            (arg->node_case == PG_QUERY__NODE__NODE_INTEGER && arg->integer->ival == 1) ||
            (arg->node_case != PG_QUERY__NODE__NODE_INTEGER &&
             (is("true") || is("on") || is("match")));
      }
    }
    if (split.csv && !delimiter) split.delimiter = ',';
    if (!split.csv && split.delimiter == '"') split.delimiter = '\t';
    if (split.csv && !escape) split.escape = split.quote;
    return split;
  }

  // A DO block made only of schema changes (migration tools wrap a foreign key or an enum in
  // DO $$ BEGIN ... EXCEPTION WHEN duplicate_object THEN null; END $$): a schema change
  // itself, for every shard. Its statements are read with libpg_query's PL/pgSQL parser;
  // anything but plain SQL statements in blocks (IF, loops, EXECUTE, assignments) makes it
  // an ordinary DO block. `problem`: a foreign key that cannot hold across shards.
  bool do_block_changes_schema_only(const PgQuery__DoStmt* d, std::string& problem) {
    std::string_view body, language = "plpgsql";
    for (size_t i = 0; i < d->n_args; ++i) {
      const Node* arg = d->args[i];
      if (!arg || arg->node_case != PG_QUERY__NODE__NODE_DEF_ELEM || !arg->def_elem->defname)
        continue;
      const std::string_view name = arg->def_elem->defname;
      if (name == "as") body = str_of(arg->def_elem->arg);
      if (name == "language") language = str_of(arg->def_elem->arg);
    }
    if (body.empty() || language != "plpgsql") return false;
    std::string tag = "pgshard_do";
    while (body.find("$" + tag + "$") != std::string_view::npos) tag += "_";
    const std::string function = "CREATE FUNCTION pgshard_do() RETURNS void LANGUAGE plpgsql AS $" +
                                 tag + "$" + std::string(body) + "$" + tag + "$";
    auto parsed = pg_query_parse_plpgsql(function.c_str());
    bool schema_only = !parsed.error && parsed.plpgsql_funcs;
    std::vector<std::string> queries;
    if (schema_only) {
      const std::string_view json = parsed.plpgsql_funcs;
      static constexpr std::string_view kStmt = "\"PLpgSQL_stmt_", kQuery = "\"query\":\"";
      for (auto at = json.find(kStmt); at != std::string_view::npos && schema_only;
           at = json.find(kStmt, at + 1)) {
        const auto end = json.find('"', at + kStmt.size());
        const auto type = json.substr(at + kStmt.size(), end - at - kStmt.size());
        if (type != "block" && type != "execsql" && type != "return") schema_only = false;
      }
      for (auto at = json.find(kQuery); at != std::string_view::npos && schema_only;
           at = json.find(kQuery, at + 1)) {
        std::string q;  // the JSON string, unescaped (\uXXXX: not for schema changes)
        std::size_t i = at + kQuery.size();
        for (; i < json.size() && json[i] != '"'; ++i) {
          if (json[i] != '\\') {
            q += json[i];
            continue;
          }
          if (++i >= json.size()) break;
          switch (json[i]) {
            case 'n':
              q += '\n';
              break;
            case 't':
              q += '\t';
              break;
            case 'r':
              q += '\r';
              break;
            case 'u':
              schema_only = false;
              break;
            default:
              q += json[i];
          }
        }
        queries.push_back(std::move(q));
      }
    }
    pg_query_free_plpgsql_parse_result(parsed);
    if (!schema_only || queries.empty()) return false;
    for (const auto& q : queries) {
      const auto tree = parse_tree(q);
      if (!tree || tree->n_stmts == 0) return false;
      for (size_t i = 0; i < tree->n_stmts; ++i) {
        const Node* st = tree->stmts[i]->stmt;
        if (!st || !schema_change(st->node_case) || names_temp_object(st)) return false;
        if (auto p = foreign_key_problem(st); p && problem.empty()) problem = *p;
      }
    }
    return true;
  }

  // Whether two sharded tables put equal keys on the same shard.
  static bool placed_alike(const config::ShardedTable& a, const config::ShardedTable& b) {
    if (a.type != b.type || a.function != b.function || a.default_shard != b.default_shard)
      return false;
    switch (a.function) {
      case config::ShardFunction::kHash:
        return true;
      case config::ShardFunction::kRing:
        return a.ring == b.ring;
      case config::ShardFunction::kRange:
        return std::equal(a.ranges.begin(), a.ranges.end(), b.ranges.begin(), b.ranges.end(),
                          [](const auto& x, const auto& y) {
                            return x.from == y.from && x.to == y.to && x.shard == y.shard;
                          });
      case config::ShardFunction::kList:
        return a.lists == b.lists;
      case config::ShardFunction::kDirectory:
        return false;  // each table's directory may place a key anywhere
    }
    return false;
  }

  // A foreign key holds only between rows on one shard: from a sharded table's key to the
  // key of a table sharded alike, or to a reference table (on every shard). The reason
  // for any other foreign key a CREATE TABLE or ALTER TABLE declares.
  std::optional<std::string> foreign_key_problem(const Node* stmt) {
    const PgQuery__RangeVar* owner = nullptr;
    std::vector<std::pair<const PgQuery__Constraint*, std::string>> fks;  // (fk, column)
    auto column_def = [&](const PgQuery__ColumnDef* d) {
      for (size_t i = 0; i < d->n_constraints; ++i) {
        const Node* c = d->constraints[i];
        if (c && c->node_case == PG_QUERY__NODE__NODE_CONSTRAINT &&
            c->constraint->contype == PG_QUERY__CONSTR_TYPE__CONSTR_FOREIGN)
          fks.emplace_back(c->constraint, d->colname ? d->colname : "");
      }
    };
    auto element = [&](const Node* e) {
      if (!e) return;
      if (e->node_case == PG_QUERY__NODE__NODE_COLUMN_DEF) column_def(e->column_def);
      if (e->node_case == PG_QUERY__NODE__NODE_CONSTRAINT &&
          e->constraint->contype == PG_QUERY__CONSTR_TYPE__CONSTR_FOREIGN)
        fks.emplace_back(e->constraint, "");
    };
    if (stmt->node_case == PG_QUERY__NODE__NODE_CREATE_STMT) {
      owner = stmt->create_stmt->relation;
      for (size_t i = 0; i < stmt->create_stmt->n_table_elts; ++i)
        element(stmt->create_stmt->table_elts[i]);
    } else if (stmt->node_case == PG_QUERY__NODE__NODE_ALTER_TABLE_STMT) {
      owner = stmt->alter_table_stmt->relation;
      for (size_t i = 0; i < stmt->alter_table_stmt->n_cmds; ++i) {
        const Node* cmd = stmt->alter_table_stmt->cmds[i];
        if (cmd && cmd->node_case == PG_QUERY__NODE__NODE_ALTER_TABLE_CMD)
          element(cmd->alter_table_cmd->def);
      }
    }
    if (!owner) return std::nullopt;
    auto names = [](PgQuery__Node** items, size_t n) {
      std::vector<std::string> out;
      for (size_t i = 0; i < n; ++i) out.emplace_back(str_of(items[i]));
      return out;
    };
    const int from = sharded_index(owner);
    for (const auto& [fk, column] : fks) {
      if (!fk->pktable || is_reference(fk->pktable)) continue;
      const int to = sharded_index(fk->pktable);
      if (from < 0 && to < 0) continue;  // neither is sharded
      const std::string what = "foreign key from " + std::string(owner->relname) + " to " +
                               std::string(fk->pktable->relname);
      if (from < 0 || to < 0)
        return what + " cannot hold across shards: " +
               std::string(from < 0 ? owner->relname : fk->pktable->relname) +
               " is not sharded like the other";
      const auto& a = cfg_.sharded_tables[static_cast<std::size_t>(from)];
      const auto& b = cfg_.sharded_tables[static_cast<std::size_t>(to)];
      auto fk_cols =
          column.empty() ? names(fk->fk_attrs, fk->n_fk_attrs) : std::vector<std::string>{column};
      auto pk_cols = names(fk->pk_attrs, fk->n_pk_attrs);
      if (pk_cols.empty() && fk_cols.size() == 1) pk_cols = {b.column};  // its primary key
      bool key_to_key = false;
      for (std::size_t i = 0; i < fk_cols.size() && i < pk_cols.size(); ++i)
        if (fk_cols[i] == a.column && pk_cols[i] == b.column) key_to_key = true;
      if (!key_to_key)
        return what + " cannot hold across shards: it must map " + a.table + "." + a.column +
               " (its shard key) to " + b.table + "." + b.column;
      if (!placed_alike(a, b))
        return what +
               " cannot hold across shards: the tables are not sharded alike (type, "
               "function and shards must match)";
    }
    return std::nullopt;
  }

  // INSERT ... (cols) VALUES: the columns named and, for each, the rows giving DEFAULT,
  // so the router can tell which generated columns the rows leave to the database.
  static void note_insert_columns(const PgQuery__InsertStmt* ins, Analysis& a) {
    const auto* s = ins->select_stmt->select_stmt;
    for (size_t i = 0; i < ins->n_cols; ++i) {
      const auto* rt = ins->cols[i]->res_target;
      a.insert_columns.emplace_back(rt && rt->name ? rt->name : "");
      int defaults = 0;
      for (size_t r = 0; r < s->n_values_lists; ++r) {
        const auto* row = s->values_lists[r];
        defaults += row->node_case == PG_QUERY__NODE__NODE_LIST && i < row->list->n_items &&
                    row->list->items[i]->node_case == PG_QUERY__NODE__NODE_SET_TO_DEFAULT;
      }
      a.insert_defaults.push_back(defaults);
    }
  }

  // INSERT INTO <sharded table> SELECT ... (not VALUES).
  bool inserts_select(const PgQuery__InsertStmt* ins) const {
    if (uses_.empty() || !ins->relation || !ins->relation->relname) return false;
    const auto& t = cfg_.sharded_tables[uses_.front().table];
    if (t.table != ins->relation->relname) return false;
    const Node* sel = ins->select_stmt;
    return sel && sel->node_case == PG_QUERY__NODE__NODE_SELECT_STMT &&
           sel->select_stmt->n_values_lists == 0;
  }

  Analysis& insert(const PgQuery__InsertStmt* ins, Analysis& a) {
    a.insert = true;
    const auto& t = cfg_.sharded_tables[uses_.front().table];
    a.table = uses_.front().table;
    int col = -1;
    for (size_t i = 0; i < ins->n_cols; ++i) {
      const auto* rt = ins->cols[i]->res_target;
      if (rt && rt->name && t.column == rt->name) col = static_cast<int>(i);
    }
    const Node* sel = ins->select_stmt;
    const bool values = sel && sel->node_case == PG_QUERY__NODE__NODE_SELECT_STMT &&
                        sel->select_stmt->n_values_lists > 0 && uses_.size() == 1;
    if (ins->n_cols == 0 && values) {
      // The columns in table order: where the key is comes from the catalog when routing.
      for (size_t r = 0; r < sel->select_stmt->n_values_lists; ++r) {
        const auto* row = sel->select_stmt->values_lists[r];
        auto& out = a.positional.emplace_back();
        if (row->node_case != PG_QUERY__NODE__NODE_LIST) continue;
        for (size_t i = 0; i < row->list->n_items; ++i)
          out.push_back(value_of(row->list->items[i]));
      }
      a.target = Analysis::Target::kKeys;
      a.reason = "INSERT VALUES shard key (table column order)";
      return a;
    }
    if (values) note_insert_columns(ins, a);
    if (col < 0 && values) {
      // The key is left to the column's default: pgshard generates it (the session asks for
      // one value per row, then routes the statement with them put in).
      a.keys.assign(sel->select_stmt->n_values_lists, KeyValue{KeyValue::Kind::kGenerate, {}, 0});
      a.target = Analysis::Target::kKeys;
      a.reason = "INSERT VALUES shard key (generated)";
      return a;
    }
    if (col < 0) {
      a.target = Analysis::Target::kError;
      a.error = "INSERT into sharded table \"" + t.table + "\" must set its shard key \"" +
                t.column + "\"";
      a.hint = "name the columns, including " + t.column;
      return a;
    }
    if (!values) {
      a.target = Analysis::Target::kError;
      a.error = "INSERT ... SELECT into a sharded table is not supported";
      a.hint = "insert with VALUES";
      return a;
    }
    for (size_t r = 0; r < sel->select_stmt->n_values_lists; ++r) {
      const auto* row = sel->select_stmt->values_lists[r];
      if (row->node_case != PG_QUERY__NODE__NODE_LIST ||
          static_cast<size_t>(col) >= row->list->n_items) {
        a.target = Analysis::Target::kError;
        a.error = "INSERT row has no value for the shard key";
        return a;
      }
      auto v = value_of(row->list->items[col]);
      if (!v) {
        a.target = Analysis::Target::kError;
        a.error = "the shard key of an INSERT must be a constant or a parameter";
        a.hint = "compute the key in the application";
        return a;
      }
      a.keys.push_back(*v);
    }
    a.target = Analysis::Target::kKeys;
    a.reason = "INSERT VALUES shard key";
    return a;
  }

  const config::Config& cfg_;
  std::vector<Use> uses_;
  std::vector<const Node*> cte_wheres_;
  std::vector<const Node*> sublink_wheres_;
};

}  // namespace

namespace {

bool plain_identifier(std::string_view s) {
  if (s.empty() || (s[0] >= '0' && s[0] <= '9')) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

std::optional<std::string> const_text(const Node* n);

// SET TRANSACTION modes (`this_transaction`) become BEGIN's words for shards that join the
// transaction later; SET SESSION CHARACTERISTICS AS TRANSACTION becomes the session
// settings it is (default_transaction_isolation, _read_only, _deferrable).
void transaction_modes(const PgQuery__VariableSetStmt* v, bool this_transaction, Analysis& a) {
  for (size_t i = 0; i < v->n_args; ++i) {
    const Node* n = v->args[i];
    if (!n || n->node_case != PG_QUERY__NODE__NODE_DEF_ELEM || !n->def_elem->defname) continue;
    const std::string option = n->def_elem->defname;
    const auto value = const_text(n->def_elem->arg);
    if (!value) continue;
    const bool on = *value == "1" || *value == "true" || *value == "on";
    std::string words, setting, setting_value;
    if (option == "transaction_isolation") {
      std::string level = *value;
      for (auto& ch : level) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      words = "ISOLATION LEVEL " + level;
      setting = "default_transaction_isolation";
      setting_value = *value;
    } else if (option == "transaction_read_only") {
      words = on ? "READ ONLY" : "READ WRITE";
      setting = "default_transaction_read_only";
      setting_value = on ? "on" : "off";
    } else if (option == "transaction_deferrable") {
      words = on ? "DEFERRABLE" : "NOT DEFERRABLE";
      setting = "default_transaction_deferrable";
      setting_value = on ? "on" : "off";
    } else {
      continue;
    }
    if (this_transaction)
      a.transaction_modes += (a.transaction_modes.empty() ? "" : " ") + words;
    else
      a.settings.push_back({setting, setting_value, false});
  }
}

std::optional<std::string> const_text(const Node* n) {
  if (!n || n->node_case != PG_QUERY__NODE__NODE_A_CONST || n->a_const->isnull) return std::nullopt;
  const auto* c = n->a_const;
  switch (c->val_case) {
    case PG_QUERY__A__CONST__VAL_SVAL:
      return std::string(c->sval->sval);
    case PG_QUERY__A__CONST__VAL_IVAL:
      return std::to_string(c->ival->ival);
    case PG_QUERY__A__CONST__VAL_FVAL:
      return std::string(c->fval->fval);
    default:
      return std::nullopt;
  }
}

// SELECT pg_terminate_backend(pid) or pg_cancel_backend(pid) as a whole statement, with the
// pid a literal or a parameter (maybe cast).
std::optional<Analysis::SignalCall> signal_call(const PgQuery__ParseResult* tree) {
  if (tree->n_stmts != 1 || !tree->stmts[0]->stmt ||
      tree->stmts[0]->stmt->node_case != PG_QUERY__NODE__NODE_SELECT_STMT)
    return std::nullopt;
  const auto* sel = tree->stmts[0]->stmt->select_stmt;
  if (sel->n_target_list != 1 || sel->n_from_clause || sel->where_clause || sel->n_group_clause ||
      sel->having_clause || sel->n_sort_clause || sel->limit_count || sel->n_values_lists ||
      sel->with_clause || sel->op != PG_QUERY__SET_OPERATION__SETOP_NONE)
    return std::nullopt;
  const Node* t = sel->target_list[0];
  if (t->node_case != PG_QUERY__NODE__NODE_RES_TARGET || !t->res_target->val ||
      t->res_target->val->node_case != PG_QUERY__NODE__NODE_FUNC_CALL)
    return std::nullopt;
  const auto* f = t->res_target->val->func_call;
  if (f->n_funcname == 0 || f->n_funcname > 2 || f->n_args < 1 || f->n_args > 2)
    return std::nullopt;
  if (f->n_funcname == 2 && ast::str_of(f->funcname[0]) != "pg_catalog") return std::nullopt;
  const auto name = ast::str_of(f->funcname[f->n_funcname - 1]);
  if (name != "pg_terminate_backend" && name != "pg_cancel_backend") return std::nullopt;
  if (name == "pg_cancel_backend" && f->n_args != 1) return std::nullopt;
  const Node* arg = f->args[0];
  while (arg && arg->node_case == PG_QUERY__NODE__NODE_TYPE_CAST) arg = arg->type_cast->arg;
  if (!arg) return std::nullopt;
  Analysis::SignalCall call;
  call.terminate = name == "pg_terminate_backend";
  if (arg->node_case == PG_QUERY__NODE__NODE_PARAM_REF) {
    call.param = arg->param_ref->number;
  } else if (arg->node_case == PG_QUERY__NODE__NODE_A_CONST && !arg->a_const->isnull &&
             arg->a_const->val_case == PG_QUERY__A__CONST__VAL_IVAL) {
    call.pid = arg->a_const->ival->ival;
  } else {
    return std::nullopt;
  }
  return call;
}

// Session-level SET / RESET / DISCARD ALL / set_config(..., false): the settings a client
// changes for the rest of its session, with values flattened as PostgreSQL flattens them
// (list settings such as search_path quote each element that needs it).
void extract_settings(const PgQuery__ParseResult* tree, Analysis& a) {
  static constexpr std::string_view kListQuote[] = {
      "search_path", "temp_tablespaces", "local_preload_libraries", "session_preload_libraries"};
  for (size_t i = 0; i < tree->n_stmts; ++i) {
    const Node* st = tree->stmts[i]->stmt;
    if (!st) continue;
    switch (st->node_case) {
      case PG_QUERY__NODE__NODE_LISTEN_STMT:
      case PG_QUERY__NODE__NODE_PREPARE_STMT:
      // A DO block may change anything (set_config, SET ROLE) where pgshard cannot see.
      case PG_QUERY__NODE__NODE_DO_STMT:
        a.pins = true;
        break;
      case PG_QUERY__NODE__NODE_DECLARE_CURSOR_STMT:
        // A WITH HOLD cursor outlives its transaction.
        if (st->declare_cursor_stmt->options & kCursorOptHold) a.pins = true;
        break;
      default:
        break;
    }
    int set_configs = 0;  // set_config calls anywhere in the statement
    ast::walk(&st->base, [&](const ProtobufCMessage* m) {
      if (m->descriptor == &pg_query__range_var__descriptor) {
        // CREATE TEMP TABLE, SELECT ... INTO TEMP: relpersistence 't'.
        const auto* rv = reinterpret_cast<const PgQuery__RangeVar*>(m);
        if (rv->relpersistence && rv->relpersistence[0] == 't') a.pins = true;
        if (std::string_view(rv->relname) == "pg_prepared_statements" &&
            (!rv->schemaname[0] || std::string_view(rv->schemaname) == "pg_catalog"))
          a.prepared_statements_view = true;
        if (rv->schemaname && is_temp_schema(rv->schemaname)) a.pins = true;
      } else if (m->descriptor == &pg_query__string__descriptor) {
        // pg_temp.name anywhere (functions, types, sequences, views in the session's
        // temporary schema): the object lives in this server session.
        const auto* str = reinterpret_cast<const PgQuery__String*>(m);
        if (str->sval && is_temp_schema(str->sval)) a.pins = true;
      } else if (m->descriptor == &pg_query__func_call__descriptor) {
        const auto* f = reinterpret_cast<const PgQuery__FuncCall*>(m);
        auto name = f->n_funcname ? str_of(f->funcname[f->n_funcname - 1]) : std::string_view();
        if (name == "pg_advisory_lock" || name == "pg_advisory_lock_shared" ||
            name == "pg_try_advisory_lock" || name == "pg_try_advisory_lock_shared")
          a.pins = true;
        if (name == "set_config") ++set_configs;
        if (!builtin_function(f)) {
          std::string called;
          for (size_t i = 0; i < f->n_funcname; ++i)
            called += (i ? "." : "") + std::string(ast::str_of(f->funcname[i]));
          a.user_functions.push_back(std::move(called));
        }
      }
    });
    // COPY FROM STDIN: no statement may follow it in the request (the server waits for
    // CopyData); a function in its WHERE clause is left unchecked.
    if (st->node_case == PG_QUERY__NODE__NODE_COPY_STMT && st->copy_stmt->is_from)
      a.user_functions.clear();
    if (st->node_case == PG_QUERY__NODE__NODE_DISCARD_STMT &&
        st->discard_stmt->target == PG_QUERY__DISCARD_MODE__DISCARD_ALL) {
      a.settings.push_back({"", std::nullopt, true});
    } else if (st->node_case == PG_QUERY__NODE__NODE_VARIABLE_SET_STMT) {
      const auto* v = st->variable_set_stmt;
      std::string name = v->name ? v->name : "";
      if (v->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_MULTI &&
          (name == "TRANSACTION" || name == "SESSION CHARACTERISTICS")) {
        transaction_modes(v, name == "TRANSACTION", a);
        continue;
      }
      if (v->is_local) continue;
      // The role and the session authorization decide what the server lets the session do:
      // a client that changes them keeps its servers, which are reset before anyone else
      // gets them (DISCARD ALL resets both).
      if (name == "role" || name == "session_authorization") a.pins = true;
      if (name.starts_with("pgshard.")) continue;
      switch (v->kind) {
        case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET_ALL:
          a.settings.push_back({"", std::nullopt, true});
          break;
        case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET:
        case PG_QUERY__VARIABLE_SET_KIND__VAR_SET_DEFAULT:
          a.settings.push_back({name, std::nullopt, false});
          break;
        case PG_QUERY__VARIABLE_SET_KIND__VAR_SET_VALUE: {
          bool list_quote = false;
          for (auto k : kListQuote) list_quote = list_quote || k == name;
          std::string value;
          bool ok = v->n_args > 0;
          for (size_t k = 0; k < v->n_args && ok; ++k) {
            auto t = const_text(v->args[k]);
            if (!t) {
              ok = false;  // SET TIME ZONE INTERVAL ... and friends: not tracked
              break;
            }
            const bool is_string = v->args[k]->a_const->val_case == PG_QUERY__A__CONST__VAL_SVAL;
            if (k) value += ", ";
            if (list_quote && is_string && !plain_identifier(*t)) {
              value += '"';
              for (char ch : *t) value += ch == '"' ? std::string("\"\"") : std::string(1, ch);
              value += '"';
            } else {
              value += *t;
            }
          }
          if (ok) a.settings.push_back({name, value, false});
          break;
        }
        default:
          break;
      }
    } else if (st->node_case == PG_QUERY__NODE__NODE_SELECT_STMT) {
      // SELECT set_config('name', 'value', false)
      const auto* s = st->select_stmt;
      for (size_t k = 0; k < s->n_target_list; ++k) {
        const Node* t = s->target_list[k];
        const Node* e =
            t->node_case == PG_QUERY__NODE__NODE_RES_TARGET ? t->res_target->val : nullptr;
        if (!e || e->node_case != PG_QUERY__NODE__NODE_FUNC_CALL) continue;
        const auto* f = e->func_call;
        if (f->n_funcname == 0 || str_of(f->funcname[f->n_funcname - 1]) != "set_config" ||
            f->n_args != 3)
          continue;
        auto name = const_text(f->args[0]);
        auto value = const_text(f->args[1]);
        const Node* local = f->args[2];
        const bool is_false = local && local->node_case == PG_QUERY__NODE__NODE_A_CONST &&
                              local->a_const->val_case == PG_QUERY__A__CONST__VAL_BOOLVAL &&
                              !local->a_const->boolval->boolval;
        if (name && value && is_false && !name->starts_with("pgshard.")) {
          a.settings.push_back({*name, *value, false});
          if (*name == "role" || *name == "session_authorization") a.pins = true;
          --set_configs;  // seen and tracked
        }
      }
    }
    // set_config where pgshard cannot follow it (a subselect, a computed name or value, an
    // expression): the client keeps its servers rather than leak the setting.
    if (set_configs > 0) a.pins = true;
  }
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
    a = Analyzer(cfg).run(tree);
    extract_settings(tree, a);
    a.signal_call = signal_call(tree);
    if (const auto calls = unique_id_calls(tree); !calls.empty()) {
      a.names_unique_id = true;
      if (!a.ddl && once_per_call(tree, calls)) {
        a.unique_ids = static_cast<int>(calls.size());
      } else if (!a.ddl) {
        a.target = Analysis::Target::kError;
        a.error =
            "pgshard.unique_id() is evaluated by pgshard once per call written in the "
            "statement; here it could serve several rows, which would share one id";
        a.hint =
            "call it in INSERT ... VALUES (one call per row) or SELECT without FROM, or make "
            "it the key column's default";
      }
    }
    if (a.merge_candidate && tree->n_stmts == 1 &&
        (a.target == Analysis::Target::kAllShards || a.target == Analysis::Target::kKeys)) {
      Node* st = tree->stmts[0]->stmt;
      if (st->node_case == PG_QUERY__NODE__NODE_EXPLAIN_STMT) st = st->explain_stmt->query;
      if (st && st->node_case == PG_QUERY__NODE__NODE_SELECT_STMT) {
        a.merge = plan_merge(tree, st->select_stmt, a.key_columns);
        a.concat_safe = false;
        a.merge_blocker = a.merge->unsupported;
        if (!a.merge->unsupported.empty()) a.hint = a.merge->hint;
      }
    }
    pg_query__parse_result__free_unpacked(tree, nullptr);
  }
  pg_query_free_protobuf_parse_result(result);
  return a;
}

std::optional<std::vector<std::pair<int, std::string>>> split_insert(
    std::string_view sql, std::span<const int> row_shard) {
  std::optional<std::vector<std::pair<int, std::string>>> out;
  const auto owned = parse_tree(std::string(sql));
  auto* tree = owned.get();
  if (!tree) return out;
  Node* stmt = tree->n_stmts == 1 ? tree->stmts[0]->stmt : nullptr;
  Node* sel = stmt && stmt->node_case == PG_QUERY__NODE__NODE_INSERT_STMT
                  ? stmt->insert_stmt->select_stmt
                  : nullptr;
  if (sel && sel->node_case == PG_QUERY__NODE__NODE_SELECT_STMT &&
      sel->select_stmt->n_values_lists == row_shard.size()) {
    auto* s = sel->select_stmt;
    Node** all = s->values_lists;
    const size_t rows = s->n_values_lists;
    std::vector<Node*> mine;
    std::vector<std::pair<int, std::string>> parts;
    std::set<int> shards(row_shard.begin(), row_shard.end());
    bool ok = true;
    for (int shard : shards) {
      mine.clear();
      for (size_t i = 0; i < rows; ++i)
        if (row_shard[i] == shard) mine.push_back(all[i]);
      // Point the tree at this shard's rows, deparse, then restore it.
      s->values_lists = mine.data();
      s->n_values_lists = mine.size();
      auto part = deparse(tree);
      s->values_lists = all;
      s->n_values_lists = rows;
      if (!part) {
        ok = false;
        break;
      }
      parts.emplace_back(shard, std::move(*part));
    }
    if (ok) out = std::move(parts);
  }
  return out;
}

namespace {
std::optional<std::string> deparse_with(PgQuery__ParseResult* tree,
                                        const std::vector<Node*>& targets,
                                        const std::vector<std::string>& exprs);
}  // namespace

std::optional<std::string> with_unique_ids(
    std::string_view sql, const std::function<std::optional<int64_t>(bool js_safe)>& next) {
  const auto owned = parse_tree(std::string(sql));
  if (!owned) return std::nullopt;
  const auto calls = unique_id_calls(owned.get());
  if (calls.empty()) return std::nullopt;
  std::vector<std::string> ids;
  for (Node* call : calls) {
    const auto id = next(unique_id_function(call->func_call) == 1);
    if (!id) return std::nullopt;
    ids.push_back("'" + std::to_string(*id) + "'::pg_catalog.int8");
  }
  return deparse_with(owned.get(), calls, ids);
}

namespace {

// PostgreSQL's name for a result column's type, for a literal cast back to it; nullptr for
// types without one here (the literal stays untyped and takes the target column's type).
const char* type_name(uint32_t oid) {
  switch (oid) {
    case 16:
      return "pg_catalog.bool";
    case 17:
      return "pg_catalog.bytea";
    case 18:
      return "pg_catalog.\"char\"";
    case 20:
      return "pg_catalog.int8";
    case 21:
      return "pg_catalog.int2";
    case 23:
      return "pg_catalog.int4";
    case 25:
      return "pg_catalog.text";
    case 26:
      return "pg_catalog.oid";
    case 114:
      return "pg_catalog.json";
    case 700:
      return "pg_catalog.float4";
    case 701:
      return "pg_catalog.float8";
    case 1042:
      return "pg_catalog.bpchar";
    case 1043:
      return "pg_catalog.varchar";
    case 1082:
      return "pg_catalog.date";
    case 1083:
      return "pg_catalog.time";
    case 1114:
      return "pg_catalog.timestamp";
    case 1184:
      return "pg_catalog.timestamptz";
    case 1186:
      return "pg_catalog.interval";
    case 1700:
      return "pg_catalog.numeric";
    case 2950:
      return "pg_catalog.uuid";
    case 3802:
      return "pg_catalog.jsonb";
    default:
      return nullptr;
  }
}

// `tree` deparsed with each node of `targets` standing for the SQL expression of the same
// place in `exprs` (parsed together as one SELECT list); the nodes get their own content
// back before the trees are freed. nullopt when the expressions do not parse.
std::optional<std::string> deparse_with(PgQuery__ParseResult* tree,
                                        const std::vector<Node*>& targets,
                                        const std::vector<std::string>& exprs) {
  std::string list = "SELECT ";
  for (std::size_t i = 0; i < exprs.size(); ++i) list += (i ? ", " : "") + exprs[i];
  const auto parsed = parse_tree(list);
  if (!parsed || parsed->n_stmts != 1 ||
      parsed->stmts[0]->stmt->node_case != PG_QUERY__NODE__NODE_SELECT_STMT ||
      parsed->stmts[0]->stmt->select_stmt->n_target_list != targets.size())
    return std::nullopt;
  const auto* select = parsed->stmts[0]->stmt->select_stmt;
  std::vector<std::pair<Node*, Node>> saved;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    saved.emplace_back(targets[i], *targets[i]);
    Node copy = *select->target_list[i]->res_target->val;
    copy.base = targets[i]->base;
    *targets[i] = copy;
  }
  auto out = deparse(tree);
  for (auto& [n, original] : saved) *n = original;
  return out;
}

void append_literal(std::string& out, std::string_view v) {
  out += '\'';
  for (char c : v) {
    if (c == '\'') out += '\'';
    out += c;
  }
  out += '\'';
}

}  // namespace

std::string sql_literal(const std::optional<std::string>& v, uint32_t type) {
  std::string text;
  if (v)
    append_literal(text, *v);
  else
    text = "NULL";
  if (const char* t = type_name(type)) {
    text += "::";
    text += t;
  }
  return text;
}

std::optional<std::string> with_parameter_values(std::string_view sql,
                                                 const std::vector<std::string>& values) {
  const auto owned = parse_tree(std::string(sql));
  if (!owned) return std::nullopt;
  std::vector<Node*> params;
  std::vector<std::string> exprs;
  walk(&owned->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor != &pg_query__node__descriptor) return;
    auto* n = const_cast<Node*>(reinterpret_cast<const Node*>(m));
    if (n->node_case != PG_QUERY__NODE__NODE_PARAM_REF) return;
    params.push_back(n);
    const int k = n->param_ref->number;
    exprs.push_back(k >= 1 && static_cast<std::size_t>(k) <= values.size() ? values[k - 1] : "");
  });
  if (std::find(exprs.begin(), exprs.end(), "") != exprs.end()) return std::nullopt;
  if (params.empty()) return deparse(owned.get());
  return deparse_with(owned.get(), params, exprs);
}

std::optional<std::string> insert_select_sql(std::string_view sql) {
  const auto owned = parse_tree(std::string(sql));
  auto* tree = owned.get();
  Node* stmt = tree && tree->n_stmts == 1 ? tree->stmts[0]->stmt : nullptr;
  if (!stmt || stmt->node_case != PG_QUERY__NODE__NODE_INSERT_STMT ||
      !stmt->insert_stmt->select_stmt)
    return std::nullopt;
  // The tree's statement points at the SELECT while it is deparsed.
  Node* const insert = tree->stmts[0]->stmt;
  tree->stmts[0]->stmt = insert->insert_stmt->select_stmt;
  auto out = deparse(tree);
  tree->stmts[0]->stmt = insert;
  return out;
}

std::optional<std::string> with_select_rows(
    std::string_view sql, const std::vector<uint32_t>& types,
    const std::vector<std::vector<std::optional<std::string>>>& rows) {
  std::string text;
  auto value = [&](const std::optional<std::string>& v, std::size_t col) {
    text += sql_literal(v, col < types.size() ? types[col] : 0);
  };
  if (rows.empty()) {
    text = "SELECT ";
    for (std::size_t c = 0; c < types.size(); ++c) {
      if (c) text += ", ";
      value(std::nullopt, c);
    }
    text += " WHERE false";
  } else {
    text = "VALUES ";
    for (std::size_t r = 0; r < rows.size(); ++r) {
      text += r ? ", (" : "(";
      for (std::size_t c = 0; c < rows[r].size(); ++c) {
        if (c) text += ", ";
        value(rows[r][c], c);
      }
      text += ')';
    }
  }
  const auto owned = parse_tree(std::string(sql));
  const auto values = parse_tree(text);
  auto* tree = owned.get();
  Node* stmt = tree && tree->n_stmts == 1 ? tree->stmts[0]->stmt : nullptr;
  if (!values || values->n_stmts != 1 || !stmt ||
      stmt->node_case != PG_QUERY__NODE__NODE_INSERT_STMT || !stmt->insert_stmt->select_stmt)
    return std::nullopt;
  // The INSERT points at the rows' SELECT while it is deparsed (each tree frees its own).
  Node* const select = stmt->insert_stmt->select_stmt;
  stmt->insert_stmt->select_stmt = values->stmts[0]->stmt;
  auto out = deparse(tree);
  stmt->insert_stmt->select_stmt = select;
  return out;
}

std::vector<int32_t> declared_types(std::string_view sql, std::vector<int32_t> declared,
                                    const protocol::Bind& bind) {
  if (declared.size() >= bind.params.size() &&
      std::none_of(declared.begin(), declared.end(), [](int32_t t) { return t == 0; }))
    return declared;
  const auto used = parameters_of(sql);
  if (declared.size() < bind.params.size()) declared.resize(bind.params.size(), 0);
  constexpr int32_t kText = 25, kBytea = 17;  // pg_type OIDs
  for (std::size_t i = 0; i < declared.size(); ++i)
    if (declared[i] == 0 && !used.contains(static_cast<int>(i + 1)))
      declared[i] = bind.format_of(i) == 1 ? kBytea : kText;
  return declared;
}

std::set<int> parameters_of(std::string_view sql) {
  std::set<int> out;
  const auto owned = parse_tree(std::string(sql));
  if (!owned) return out;
  walk(&owned->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor == &pg_query__param_ref__descriptor)
      out.insert(reinterpret_cast<const PgQuery__ParamRef*>(m)->number);
  });
  return out;
}

std::optional<std::string> with_generated_keys(std::string_view sql, const std::string& column,
                                               int position, const std::vector<std::string>& values,
                                               bool overriding) {
  const auto owned = parse_tree(std::string(sql));
  auto* tree = owned.get();
  Node* stmt = tree && tree->n_stmts == 1 ? tree->stmts[0]->stmt : nullptr;
  if (!stmt || stmt->node_case != PG_QUERY__NODE__NODE_INSERT_STMT) return std::nullopt;
  auto* ins = stmt->insert_stmt;
  Node* sel = ins->select_stmt;
  if (!sel || sel->node_case != PG_QUERY__NODE__NODE_SELECT_STMT ||
      sel->select_stmt->n_values_lists == 0)
    return std::nullopt;
  auto* s = sel->select_stmt;
  if (ins->n_cols == 0 && position < 0) return std::nullopt;
  int col = position;
  if (ins->n_cols > 0) {
    col = -1;
    for (size_t i = 0; i < ins->n_cols; ++i) {
      const auto* rt = ins->cols[i]->res_target;
      if (rt && rt->name && column == rt->name) col = static_cast<int>(i);
    }
  }
  // New nodes live here until the tree is packed; the tree's own arrays are put back before
  // it is freed.
  std::deque<PgQuery__String> strings;
  std::deque<PgQuery__AConst> consts;
  std::deque<PgQuery__ResTarget> targets;
  std::deque<PgQuery__SetToDefault> defaults;
  std::deque<Node> nodes;
  std::deque<std::vector<Node*>> arrays;
  std::vector<std::tuple<Node***, size_t*, Node**, size_t>> restore;
  auto constant = [&](const std::string& v) {
    auto& str = strings.emplace_back();
    pg_query__string__init(&str);
    str.sval = const_cast<char*>(v.c_str());
    auto& c = consts.emplace_back();
    pg_query__a__const__init(&c);
    c.val_case = PG_QUERY__A__CONST__VAL_SVAL;
    c.sval = &str;
    c.location = -1;
    auto& n = nodes.emplace_back();
    pg_query__node__init(&n);
    n.node_case = PG_QUERY__NODE__NODE_A_CONST;
    n.a_const = &c;
    return &n;
  };
  auto append = [&](Node*** items, size_t* count, Node* extra) {
    auto& grown = arrays.emplace_back(*items, *items + *count);
    grown.push_back(extra);
    restore.emplace_back(items, count, *items, *count);
    *items = grown.data();
    *count = grown.size();
  };
  std::size_t used = 0;
  bool ok = true;
  std::vector<std::pair<Node**, Node*>> replaced;  // (slot, original)
  if (col < 0) {
    // The key column is added to the column list, with a value in every row.
    auto& rt = targets.emplace_back();
    pg_query__res_target__init(&rt);
    rt.name = const_cast<char*>(column.c_str());
    rt.location = -1;
    auto& n = nodes.emplace_back();
    pg_query__node__init(&n);
    n.node_case = PG_QUERY__NODE__NODE_RES_TARGET;
    n.res_target = &rt;
    append(&ins->cols, &ins->n_cols, &n);
    for (size_t r = 0; r < s->n_values_lists && ok; ++r) {
      Node* row = s->values_lists[r];
      if (row->node_case != PG_QUERY__NODE__NODE_LIST || used >= values.size()) {
        ok = false;
        break;
      }
      append(&row->list->items, &row->list->n_items, constant(values[used++]));
    }
  } else {
    for (size_t r = 0; r < s->n_values_lists && ok; ++r) {
      Node* row = s->values_lists[r];
      if (row->node_case != PG_QUERY__NODE__NODE_LIST ||
          (ins->n_cols > 0 && static_cast<size_t>(col) >= row->list->n_items)) {
        ok = false;
        break;
      }
      // Without a column list a row may stop before the column (the rest take their
      // defaults): it is padded with DEFAULT up to the column.
      while (static_cast<size_t>(col) >= row->list->n_items) {
        auto& d = defaults.emplace_back();
        pg_query__set_to_default__init(&d);
        d.location = -1;
        auto& n = nodes.emplace_back();
        pg_query__node__init(&n);
        n.node_case = PG_QUERY__NODE__NODE_SET_TO_DEFAULT;
        n.set_to_default = &d;
        append(&row->list->items, &row->list->n_items, &n);
      }
      Node** slot = &row->list->items[col];
      if ((*slot)->node_case != PG_QUERY__NODE__NODE_SET_TO_DEFAULT) continue;
      if (used >= values.size()) {
        ok = false;
        break;
      }
      replaced.emplace_back(slot, *slot);
      *slot = constant(values[used++]);
    }
  }
  std::optional<std::string> out;
  // GENERATED ALWAYS AS IDENTITY takes a value only with OVERRIDING SYSTEM VALUE.
  if (overriding && ins->override == PG_QUERY__OVERRIDING_KIND__OVERRIDING_NOT_SET)
    ins->override = PG_QUERY__OVERRIDING_KIND__OVERRIDING_SYSTEM_VALUE;
  if (ok && used == values.size()) out = deparse(tree);
  for (auto& [slot, original] : replaced) *slot = original;
  for (auto it = restore.rbegin(); it != restore.rend(); ++it) {
    auto [items, count, original, n] = *it;
    *items = original;
    *count = n;
  }
  return out;
}

namespace {

// True when the text cannot touch a sharded or reference table: none of their names occur.
bool names_no_placed_table(std::string_view sql, const config::Config& cfg) {
  for (const auto& t : cfg.sharded_tables)
    if (icontains(sql, t.table)) return false;
  for (const auto& r : cfg.reference_tables) {
    auto dot = r.find('.');
    if (icontains(sql, dot == std::string::npos ? std::string_view(r)
                                                : std::string_view(r).substr(dot + 1)))
      return false;
  }
  return true;
}

// A character that continues an identifier (or a $n parameter).
bool ident_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' ||
         static_cast<unsigned char>(c) >= 0x80;
}

// The text with numeric and quoted-string literals replaced by '?', for caching statements
// whose routing cannot depend on literals. False (no key) for text with forms we do not
// mask safely (escape strings, dollar quoting).
bool mask_literals(std::string_view sql, std::string& out) {
  out.clear();
  auto ident = [](char c) { return ident_char(c) || c == '.'; };
  for (std::size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (c == '\\') return false;
    if (c == '$' && i + 1 < sql.size() && !std::isdigit(static_cast<unsigned char>(sql[i + 1])))
      return false;
    if (c == '\'') {
      if (i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e' || sql[i - 1] == '&')) return false;
      ++i;
      for (;; ++i) {
        if (i >= sql.size()) return false;
        if (sql[i] == '\'') {
          if (i + 1 < sql.size() && sql[i + 1] == '\'') {
            ++i;
            continue;
          }
          break;
        }
      }
      out.push_back('?');
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) && (i == 0 || !ident(sql[i - 1]))) {
      while (i + 1 < sql.size() && std::isdigit(static_cast<unsigned char>(sql[i + 1]))) ++i;
      out.push_back('?');
      continue;
    }
    out.push_back(c);
  }
  return true;
}

// Characters where a literal, quote, comment or parameter may start (see parameterize).
constexpr auto kLiteralStart = [] {
  std::array<bool, 256> t{};
  for (const char ch : std::string_view("$\\\"-/'.0123456789"))
    t[static_cast<unsigned char>(ch)] = true;
  return t;
}();

// The first position from `j` on (up to `n`) whose character is in kLiteralStart. All of
// them but the backslash lie in 0x22..0x39: sixteen bytes at a time, only a byte there (or
// a backslash) is looked up.
std::size_t next_literal_start(const char* s, std::size_t j, std::size_t n) {
#ifdef __SSE2__
  const __m128i above = _mm_set1_epi8(0x21), below = _mm_set1_epi8(0x3A),
                backslash = _mm_set1_epi8('\\');
  for (; j + 16 <= n; j += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + j));
    const __m128i maybe =
        _mm_or_si128(_mm_and_si128(_mm_cmpgt_epi8(v, above), _mm_cmplt_epi8(v, below)),
                     _mm_cmpeq_epi8(v, backslash));  // (signed: bytes from 0x80 are below 0x21)
    for (auto m = static_cast<unsigned>(_mm_movemask_epi8(maybe)); m != 0; m &= m - 1) {
      const std::size_t at = j + static_cast<std::size_t>(std::countr_zero(m));
      if (kLiteralStart[static_cast<unsigned char>(s[at])]) return at;
    }
  }
#endif
  while (j < n && !kLiteralStart[static_cast<unsigned char>(s[j])]) ++j;
  return j;
}

// The text with each literal (numbers, standard 'strings') replaced by $1, $2... in order,
// and the literals' values. False for text this does not rewrite safely: parameters of its
// own, backslashes, dollar quoting, prefixed strings (E'', B'', U&''...), unterminated
// quotes or comments. Quoted identifiers and comments are kept as written.
bool parameterize(std::string_view sql, std::string& out, std::vector<std::string>& values) {
  out.clear();
  values.clear();
  const std::size_t n = sql.size();
  auto param = [&](std::string value) {
    values.push_back(std::move(value));
    out += '$';
    out += std::to_string(values.size());
  };
  // Runs of characters where no literal, quote, comment or parameter starts are copied
  // whole.
  for (std::size_t i = 0; i < n; ++i) {
    const char c = sql[i];
    if (!kLiteralStart[static_cast<unsigned char>(c)]) {
      const std::size_t j = next_literal_start(sql.data(), i + 1, n);
      out.append(sql.data() + i, j - i);
      i = j - 1;
      continue;
    }
    const char next = i + 1 < n ? sql[i + 1] : '\0';
    if (c == '$' || c == '\\') return false;
    if (c == '"') {
      const std::size_t end = sql.find('"', i + 1);
      if (end == std::string_view::npos) return false;
      out.append(sql.substr(i, end - i + 1));  // "" inside is two adjacent quoted parts
      i = end;
    } else if (c == '-' && next == '-') {
      std::size_t end = sql.find('\n', i);
      if (end == std::string_view::npos) end = n - 1;
      out.append(sql.substr(i, end - i + 1));
      i = end;
    } else if (c == '/' && next == '*') {
      int depth = 0;  // PostgreSQL's block comments nest
      std::size_t j = i;
      for (; j + 1 < n; ++j) {
        if (sql[j] == '/' && sql[j + 1] == '*') {
          ++depth;
          ++j;
        } else if (sql[j] == '*' && sql[j + 1] == '/') {
          ++j;
          if (--depth == 0) break;
        }
      }
      if (depth != 0) return false;
      out.append(sql.substr(i, j - i + 1));
      i = j;
    } else if (c == '\'') {
      if (i > 0 && (ident_char(sql[i - 1]) || sql[i - 1] == '&')) return false;
      std::string value;
      for (++i;; ++i) {
        if (i >= n) return false;
        if (sql[i] == '\'') {
          if (i + 1 < n && sql[i + 1] == '\'') {
            value += '\'';
            ++i;
            continue;
          }
          break;
        }
        value += sql[i];
      }
      param(std::move(value));
    } else if ((std::isdigit(static_cast<unsigned char>(c)) ||
                (c == '.' && std::isdigit(static_cast<unsigned char>(next)))) &&
               (i == 0 || (!ident_char(sql[i - 1]) && sql[i - 1] != '.'))) {
      std::size_t j = i;
      auto digits = [&] {
        while (j < n && std::isdigit(static_cast<unsigned char>(sql[j]))) ++j;
      };
      digits();
      if (j < n && sql[j] == '.') {
        ++j;
        digits();
      }
      if (j < n && (sql[j] == 'e' || sql[j] == 'E')) {
        ++j;
        if (j < n && (sql[j] == '+' || sql[j] == '-')) ++j;
        digits();
      }
      if (j < n && (ident_char(sql[j]) || sql[j] == '.')) return false;
      param(std::string(sql.substr(i, j - i)));
      i = j - 1;
    } else {
      out += c;
    }
  }
  return true;
}

// The key values of `out` (a copy of `shape`, or an analysis made from it before) with the
// shape's parameters $1..$n put back as the literals `v`; false when a parameter stands
// where no literal can (an array parameter, a generated key).
bool put_literals(Analysis& out, const Analysis& shape, const std::vector<std::string>& v) {
  auto put = [&](KeyValue& to, const KeyValue& from) {
    if (from.kind == KeyValue::Kind::kLiteral) return true;
    if (from.kind != KeyValue::Kind::kParam || from.param < 1 ||
        static_cast<std::size_t>(from.param) > v.size())
      return false;
    to.literal = v[static_cast<std::size_t>(from.param - 1)];
    to.kind = KeyValue::Kind::kLiteral;
    to.param = 0;
    return true;
  };
  for (std::size_t i = 0; i < shape.keys.size(); ++i)
    if (!put(out.keys[i], shape.keys[i])) return false;
  for (std::size_t r = 0; r < shape.positional.size(); ++r)
    for (std::size_t i = 0; i < shape.positional[r].size(); ++i)
      if (shape.positional[r][i] && !put(*out.positional[r][i], *shape.positional[r][i]))
        return false;
  return !shape.new_key || put(*out.new_key, *shape.new_key);
}

// LIMIT / OFFSET literals: such a shape's statements each need a plan of their own.
bool bounds_are_literals(const Analysis& shape) {
  return shape.merge && (shape.merge->limit.param > 0 || shape.merge->offset.param > 0);
}

// `shape` with its parameters $1..$n (the literals) put back as literal key values; null
// when a parameter stands where no literal can (an array parameter).
std::shared_ptr<Analysis> with_literals(const Analysis& shape, const std::vector<std::string>& v) {
  auto out = std::make_shared<Analysis>(shape);
  if (!put_literals(*out, shape, v)) return nullptr;
  if (bounds_are_literals(*out)) {
    // LIMIT / OFFSET literals: the plan with this statement's bounds.
    auto plan = std::make_shared<merge::MergePlan>(*out->merge);
    for (auto* b : {&plan->limit, &plan->offset}) {
      if (b->param <= 0) continue;
      if (static_cast<std::size_t>(b->param) > v.size()) return nullptr;
      const auto& text = v[static_cast<std::size_t>(b->param - 1)];
      int64_t n = 0;
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
      if (ec != std::errc() || end != text.data() + text.size()) return nullptr;
      b->value = n;
      b->param = 0;
    }
    out->merge = std::move(plan);
  }
  return out;
}

// Whether two analyses route alike: everything routing reads is equal, merge plans
// included (a plan whose shards run a rewritten statement never is: its text would carry
// the parameters).
// Settings, a signalled pid and a prepared transaction's identifier carry their literals:
// such statements are cached by their exact text only.
bool carries_literals(const Analysis& a) {
  return !a.settings.empty() || a.pins || a.signal_call || !a.gid.empty();
}

bool routes_alike(const Analysis& a, const Analysis& b) {
  auto same_plan = [](const std::shared_ptr<const merge::MergePlan>& p,
                      const std::shared_ptr<const merge::MergePlan>& q) {
    if (!p || !q) return !p && !q;
    return p->shard_sql.empty() && q->shard_sql.empty() && *p == *q;
  };
  return a.target == b.target && a.write == b.write && a.ddl == b.ddl && a.table == b.table &&
         a.keys == b.keys && a.new_key == b.new_key && a.positional == b.positional &&
         a.insert_columns == b.insert_columns && a.insert_defaults == b.insert_defaults &&
         a.cursor_op == b.cursor_op && a.cursor == b.cursor && a.cursor_hold == b.cursor_hold &&
         a.insert == b.insert && a.replicated == b.replicated && a.txn == b.txn &&
         a.controls_txn == b.controls_txn && !a.explain_route && !b.explain_route && !a.copy_in &&
         !b.copy_in && a.copy_out_header == b.copy_out_header && a.statements == b.statements &&
         a.concat_safe == b.concat_safe && a.merge_blocker == b.merge_blocker &&
         a.merge_candidate == b.merge_candidate && same_plan(a.merge, b.merge) &&
         a.key_columns == b.key_columns && !carries_literals(a) && !carries_literals(b) &&
         a.user_functions == b.user_functions &&
         a.prepared_statements_view == b.prepared_statements_view && a.error == b.error &&
         a.hint == b.hint && a.reason == b.reason;
}

}  // namespace

std::shared_ptr<const Analysis> AnalysisCache::learn_shape(std::string_view sql,
                                                           const config::Config& cfg) {
  // Analyse the statement and its shape (masked_, literals_); keep the shape only when
  // putting this statement's literals back gives the statement's own analysis.
  ++misses_;
  auto real = std::make_shared<const Analysis>(analyze_statement(sql, cfg));
  auto shape = std::make_shared<const Analysis>(analyze_statement(masked_, cfg));
  auto back = with_literals(*shape, literals_);
  if (shapes_.size() >= capacity_) shapes_.clear();
  shapes_.emplace(masked_, Shape{back && routes_alike(*back, *real) ? shape : nullptr, nullptr});
  return real;
}

std::shared_ptr<const Analysis> AnalysisCache::Shape::with(const std::vector<std::string>& v) {
  // (A refilled analysis had no holder left: nobody sees it change.)
  if (built && built.use_count() == 1 && !bounds_are_literals(*analysis) &&
      put_literals(*built, *analysis, v))
    return built;
  built = with_literals(*analysis, v);
  return built;
}

std::shared_ptr<const Analysis> AnalysisCache::get(std::string_view sql,
                                                   const config::Config& cfg) {
  if (&cfg != owner_) return std::make_shared<const Analysis>(analyze_statement(sql, cfg));
  // Statements that name no sharded or reference table route alike whatever their literals,
  // so simple-protocol traffic with inline values shares one entry per shape.
  // The exact text first: the common case of a repeated statement costs one hash lookup.
  if (auto it = map_.find(sql); it != map_.end()) {
    ++hits_;
    order_.splice(order_.begin(), order_, it->second.order);
    return it->second.analysis;
  }
  // A statement of a shape seen before: the shape's analysis, with this statement's
  // literals. (Its identifiers are the shape's: it names the placed tables the shape does.)
  const bool shaped = capacity_ > 0 && parameterize(sql, masked_, literals_) && !literals_.empty();
  bool shape_known = false;
  if (shaped) {
    if (auto it = shapes_.find(masked_); it != shapes_.end()) {
      shape_known = true;
      if (auto a = it->second.analysis ? it->second.with(literals_) : nullptr) {
        ++hits_;
        return a;
      }
    }
  }
  std::string_view key = sql;
  if (!names_no_placed_table(sql, cfg)) {
    // Keys of sharded tables are literals that matter: statements of one shape share the
    // shape's analysis with their own literals put back (simple-protocol traffic parses
    // each shape once instead of each statement). A known shape that does not fit is
    // cached by the statement's text.
    return lookup(sql, sql, cfg, shaped && !shape_known ? learn_shape(sql, cfg) : nullptr);
  }
  if (mask_literals(sql, masked_)) key = masked_;
  if (key.data() == masked_.data()) {
    // A shape shared across literals never holds settings (see lookup).
    if (auto it = map_.find(key); it != map_.end() && carries_literals(*it->second.analysis))
      key = sql;
  }
  return lookup(key, sql, cfg);
}

std::shared_ptr<const Analysis> AnalysisCache::lookup(std::string_view key, std::string_view sql,
                                                      const config::Config& cfg,
                                                      std::shared_ptr<const Analysis> known) {
  if (auto it = map_.find(key); it != map_.end()) {
    ++hits_;
    order_.splice(order_.begin(), order_, it->second.order);
    return it->second.analysis;
  }
  if (!known) ++misses_;
  auto a = known ? std::move(known) : std::make_shared<const Analysis>(analyze_statement(sql, cfg));
  if (carries_literals(*a)) key = sql;
  if (capacity_ == 0) return a;
  if (map_.size() >= capacity_) {
    map_.erase(order_.back());
    order_.pop_back();
  }
  order_.emplace_front(key);
  map_.emplace(order_.front(), Entry{a, order_.begin()});
  return a;
}

}  // namespace pgshard::router

namespace pgshard::router {

std::optional<std::string> with_own_prepared_statements(std::string_view sql,
                                                        std::string_view own_sql) {
  std::string text(sql);
  std::optional<std::string> out;
  const auto owned = parse_tree(text);
  const auto* tree = owned.get();
  if (!tree) return out;
  const Node* stmt = tree->n_stmts == 1 ? tree->stmts[0]->stmt : nullptr;
  if (stmt && stmt->node_case == PG_QUERY__NODE__NODE_SELECT_STMT) {
    // Text edits, applied from the end: "pg_catalog." goes from the view's references (the
    // CTE is found by its bare name), the CTE goes first in the WITH list.
    std::vector<std::pair<std::size_t, std::pair<std::size_t, std::string>>> edits;
    bool ok = true;
    ast::walk(&stmt->base, [&](const ProtobufCMessage* m) {
      if (m->descriptor != &pg_query__range_var__descriptor) return;
      const auto* rv = reinterpret_cast<const PgQuery__RangeVar*>(m);
      if (std::string_view(rv->relname) != "pg_prepared_statements" || !rv->schemaname[0]) return;
      const auto from = static_cast<std::size_t>(rv->location);
      const auto found = from <= text.size()
                             ? ifind(std::string_view(text).substr(from), "pg_prepared_statements")
                             : std::string_view::npos;
      const std::size_t at = found == std::string_view::npos ? found : from + found;
      if (rv->catalogname[0] || at == std::string::npos) {
        ok = false;
        return;
      }
      std::size_t end = at + std::string_view("pg_prepared_statements").size();
      if (end < text.size() && text[end] == '"') ++end;
      edits.push_back({from, {end - from, "pg_prepared_statements"}});
    });
    const std::string cte = "pg_prepared_statements AS (" + std::string(own_sql) + ")";
    if (const auto* with = stmt->select_stmt->with_clause) {
      std::size_t at = static_cast<std::size_t>(with->location) + 4;  // after WITH
      if (with->recursive) {
        const auto r = ifind(std::string_view(text).substr(at), "recursive");
        ok = ok && r != std::string_view::npos;
        at += r + 9;
      }
      edits.push_back({at, {0, " " + cte + ","}});
    } else {
      edits.push_back(
          {static_cast<std::size_t>(tree->stmts[0]->stmt_location), {0, "WITH " + cte + " "}});
    }
    if (ok) {
      std::sort(edits.begin(), edits.end(),
                [](const auto& a, const auto& b) { return a.first > b.first; });
      for (const auto& [at, edit] : edits) text.replace(at, edit.first, edit.second);
      out = std::move(text);
    }
  }
  return out;
}

}  // namespace pgshard::router
