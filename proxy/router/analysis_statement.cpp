// The analyser's entry: one statement or several, transaction control, statements that wrap
// a query (EXPLAIN, COPY (query), DECLARE, FETCH, CLOSE), and the tables a statement names
// sorted into sharded, reference and unmapped before the steps by statement kind.
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <set>
#include <string_view>

#include "proxy/router/analyzer.hpp"
#include "proxy/router/ast.hpp"

namespace pgshard::router::detail {

namespace {

using ast::walk;

// The transaction control a statement alone is (BEGIN, COMMIT, PREPARE TRANSACTION...);
// AND CHAIN forms are left as ordinary statements.
void note_txn_control(const Node* st, Analysis& a) {
  if (st && st->node_case == PG_QUERY__NODE__NODE_VARIABLE_SET_STMT &&
      st->variable_set_stmt->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_MULTI &&
      st->variable_set_stmt->name &&
      std::string_view(st->variable_set_stmt->name) == "TRANSACTION" &&
      st->variable_set_stmt->n_args > 0) {
    a.txn = TxnControl::kSetTransaction;  // (SET TRANSACTION SNAPSHOT is named otherwise)
    return;
  }
  if (std::string words; st && st->node_case == PG_QUERY__NODE__NODE_VARIABLE_SET_STMT &&
                         transaction_setting_words(st->variable_set_stmt, words)) {
    a.txn = TxnControl::kSetTransaction;  // SET transaction_read_only = ..., alike
    return;
  }
  if (!st || st->node_case != PG_QUERY__NODE__NODE_TRANSACTION_STMT || st->transaction_stmt->chain)
    return;
  switch (st->transaction_stmt->kind) {
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_BEGIN:
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_START:
      a.txn = TxnControl::kBegin;
      a.start_transaction =
          st->transaction_stmt->kind == PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_START;
      transaction_mode_words(st->transaction_stmt->options, st->transaction_stmt->n_options,
                             &a.begin_modes, nullptr);
      break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT:
      a.txn = TxnControl::kCommit;
      break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK:
      a.txn = TxnControl::kRollback;
      break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_SAVEPOINT:
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_RELEASE:
      a.txn = TxnControl::kSavepoint;
      break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_TO:
      a.txn = TxnControl::kRollbackTo;
      break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_PREPARE:
      a.txn = TxnControl::kPrepare;
      a.gid = st->transaction_stmt->gid;
      break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT_PREPARED:
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_PREPARED:
      a.txn = TxnControl::kFinishPrepared;
      a.gid = st->transaction_stmt->gid;
      break;
    default:
      break;
  }
}

// PlannedStmtRequiresSnapshot's list (PostgreSQL's pquery.c): utility statements that run
// without a snapshot. EXPLAIN and COPY (query) take one as their statement does.
bool takes_snapshot(int kind) {
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

// FETCH, MOVE and CLOSE follow the cursor's name to the server that declared it.
Analysis cursor_use(const Node* stmt) {
  Analysis a;
  const char* name = stmt->node_case == PG_QUERY__NODE__NODE_FETCH_STMT
                         ? stmt->fetch_stmt->portalname
                         : stmt->close_portal_stmt->portalname;
  a.cursor = name ? name : "";  // CLOSE ALL: no name
  a.cursor_op = stmt->node_case == PG_QUERY__NODE__NODE_FETCH_STMT ? Analysis::CursorOp::kFetch
                                                                   : Analysis::CursorOp::kClose;
  a.reason = "cursor: the server that declared it";
  return a;
}

// SQL PREPARE, EXECUTE or DEALLOCATE as one of several statements: the session keeps no
// statement of such a text (a PREPARE on sharded tables is refused) and refuses an EXECUTE
// or DEALLOCATE of one it keeps (the first such statement is noted).
void note_prepared_among_several(const Node* st, Analysis& a) {
  if (!st) return;
  a.sql_prepare_alone = false;
  a.sql_prepare_held = false;
  if (a.sql_prepare != Analysis::SqlPrepareOp::kNone) return;
  switch (st->node_case) {
    case PG_QUERY__NODE__NODE_PREPARE_STMT:
    case PG_QUERY__NODE__NODE_EXECUTE_STMT:
    case PG_QUERY__NODE__NODE_DEALLOCATE_STMT:
      break;
    default:
      return;
  }
  if (st->node_case == PG_QUERY__NODE__NODE_PREPARE_STMT) {
    a.sql_prepare = Analysis::SqlPrepareOp::kPrepare;
    a.sql_prepared = st->prepare_stmt->name ? st->prepare_stmt->name : "";
  } else if (st->node_case == PG_QUERY__NODE__NODE_EXECUTE_STMT) {
    a.sql_prepare = Analysis::SqlPrepareOp::kExecute;
    a.sql_prepared = st->execute_stmt->name ? st->execute_stmt->name : "";
  } else {
    a.sql_prepare = Analysis::SqlPrepareOp::kDeallocate;
    a.sql_prepared = st->deallocate_stmt->name ? st->deallocate_stmt->name : "";
  }
}

// nextval/setval/currval/lastval anywhere in the statement.
bool calls_sequence_function(const PgQuery__Node* stmt) {
  bool found = false;
  walk(&stmt->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor != &pg_query__func_call__descriptor) return;
    const auto* f = reinterpret_cast<const PgQuery__FuncCall*>(m);
    if (f->n_funcname == 0) return;
    const auto name = ast::str_of(f->funcname[f->n_funcname - 1]);
    if (name == "nextval" || name == "setval" || name == "currval" || name == "lastval")
      found = true;
  });
  return found;
}

// INSERT, UPDATE and DELETE write; so do SELECT ... FOR UPDATE (row locks) and a SELECT
// whose WITH holds one of them (every copy of a reference table). Other statements naming
// tables are schema changes (`ddl`).
void note_writes(const Node* stmt, bool names_tables, Analysis& a) {
  const auto kind = stmt->node_case;
  a.write = kind == PG_QUERY__NODE__NODE_INSERT_STMT || kind == PG_QUERY__NODE__NODE_UPDATE_STMT ||
            kind == PG_QUERY__NODE__NODE_DELETE_STMT;
  const bool select = kind == PG_QUERY__NODE__NODE_SELECT_STMT;
  a.ddl = !a.write && !select && kind != PG_QUERY__NODE__NODE_EXPLAIN_STMT &&
          kind != PG_QUERY__NODE__NODE_COPY_STMT && names_tables;
  if (!select) return;
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

}  // namespace

Analysis analyze_tree(const PgQuery__ParseResult* tree, const config::Config& cfg) {
  return Analyzer(cfg).run(tree);
}

Analysis Analyzer::run(const PgQuery__ParseResult* tree) {
  named_tables_.clear();
  if (tree->n_stmts != 1) {
    // Several statements in one Query: route as one unit only if they agree.
    Analysis a = several(tree);
    a.statements = static_cast<int>(tree->n_stmts);
    a.sharded_tables = named_tables_;
    return a;
  }
  Analysis a1 = one(tree->stmts[0]->stmt);
  note_txn_control(tree->stmts[0]->stmt, a1);
  a1.sharded_tables = named_tables_;
  return a1;
}

Analysis Analyzer::several(const PgQuery__ParseResult* tree) {
  Analysis a = several_body(tree);
  a.takes_snapshot = false;
  for (size_t i = 0; i < tree->n_stmts; ++i) {
    const Node* st = tree->stmts[i]->stmt;
    note_prepared_among_several(st, a);
    if (st && st->node_case == PG_QUERY__NODE__NODE_PREPARE_STMT && prepared(st).sql_prepare_held) {
      a.target = Analysis::Target::kError;
      a.error = "PREPARE of a statement on sharded or reference tables must be a Query of its own";
      a.hint = "send the PREPARE alone, then EXECUTE it";
    }
    a.controls_txn =
        a.controls_txn || (st && st->node_case == PG_QUERY__NODE__NODE_TRANSACTION_STMT);
    a.takes_snapshot = a.takes_snapshot || (st && takes_snapshot(st->node_case));
  }
  return a;
}

Analysis Analyzer::several_body(const PgQuery__ParseResult* tree) {
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
        cfg_.sharded_tables[a.table].type == cfg_.sharded_tables[merged.table].type && !a.insert &&
        !merged.insert) {
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

Analysis Analyzer::one(const Node* stmt) {
  Analysis a = body(stmt);
  a.takes_snapshot = stmt && takes_snapshot(stmt->node_case);
  return a;
}

Analysis Analyzer::body(const Node* stmt) {
  if (!stmt) return Analysis{};
  switch (stmt->node_case) {
    case PG_QUERY__NODE__NODE_EXPLAIN_STMT:
      if (stmt->explain_stmt->query) return explained(stmt->explain_stmt);
      break;
    case PG_QUERY__NODE__NODE_COPY_STMT:
      if (!stmt->copy_stmt->is_from && stmt->copy_stmt->query) return copied_query(stmt->copy_stmt);
      break;
    case PG_QUERY__NODE__NODE_DECLARE_CURSOR_STMT:
      if (stmt->declare_cursor_stmt->query) return declared_cursor(stmt->declare_cursor_stmt);
      break;
    case PG_QUERY__NODE__NODE_FETCH_STMT:
    case PG_QUERY__NODE__NODE_CLOSE_PORTAL_STMT:
      return cursor_use(stmt);
    case PG_QUERY__NODE__NODE_PREPARE_STMT:
      return prepared(stmt);
    case PG_QUERY__NODE__NODE_EXECUTE_STMT:
    case PG_QUERY__NODE__NODE_DEALLOCATE_STMT:
      return prepared_use(stmt);
    default:
      break;
  }
  return tables(stmt);
}

// EXPLAIN goes where its statement goes; EXPLAIN (ROUTE) is answered by pgshard.
Analysis Analyzer::explained(const PgQuery__ExplainStmt* e) {
  bool route = false;
  for (size_t i = 0; i < e->n_options; ++i) {
    const Node* o = e->options[i];
    if (o && o->node_case == PG_QUERY__NODE__NODE_DEF_ELEM && o->def_elem->defname &&
        std::string_view(o->def_elem->defname) == "route")
      route = true;
  }
  Analysis a = one(e->query);
  a.explain_route = route;
  a.sql_prepare_alone = false;  // EXPLAIN EXECUTE: not the statement itself
  if (!route && a.concat_safe) {
    a.concat_safe = false;
    a.merge_blocker = "EXPLAIN";
  }
  return a;
}

// COPY (query) TO goes where its query goes and is checked as that query is (joins,
// reference tables, subqueries); the shards' rows are concatenated, never merged.
Analysis Analyzer::copied_query(const PgQuery__CopyStmt* c) {
  Analysis a = one(c->query);
  a.copy_out_header = copy_options(c).header;
  if (a.merge_candidate || !a.concat_safe) {
    a.concat_safe = false;
    a.merge_candidate = false;
    if (a.merge_blocker.empty())
      a.merge_blocker = "COPY of a query whose rows pgshard would have to merge";
  }
  return a;
}

// DECLARE goes where its query goes (the router refuses a query of several shards);
// FETCH, MOVE and CLOSE then follow the cursor's name to its server.
Analysis Analyzer::declared_cursor(const PgQuery__DeclareCursorStmt* d) {
  Analysis a = one(d->query);
  a.cursor = d->portalname ? d->portalname : "";
  a.cursor_op = Analysis::CursorOp::kDeclare;
  a.cursor_hold = (d->options & kCursorOptHold) != 0;
  return a;
}

// A statement by the tables it names: none placed, schema changes, sharded tables mixed
// with others, then by kind (analysis_dml.cpp, analysis_select.cpp).
Analysis Analyzer::tables(const Node* stmt) {
  Analysis a;
  Relations relations;
  // `FOR UPDATE OF t`: t names a FROM item (a table or an alias) already counted, not a
  // table read once more.
  std::set<const ProtobufCMessage*> locked;
  walk(&stmt->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor != &pg_query__locking_clause__descriptor) return;
    const auto* lc = reinterpret_cast<const PgQuery__LockingClause*>(m);
    for (size_t i = 0; i < lc->n_locked_rels; ++i)
      if (lc->locked_rels[i] && lc->locked_rels[i]->node_case == PG_QUERY__NODE__NODE_RANGE_VAR)
        locked.insert(&lc->locked_rels[i]->range_var->base);
  });
  walk(&stmt->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor == &pg_query__range_var__descriptor && !locked.contains(m))
      relations.rels.push_back(reinterpret_cast<const PgQuery__RangeVar*>(m));
    else if (m->descriptor == &pg_query__common_table_expr__descriptor)
      relations.ctes.insert(reinterpret_cast<const PgQuery__CommonTableExpr*>(m)->ctename);
  });
  const auto& rels = relations.rels;
  const auto kind = stmt->node_case;
  note_merge_blockers(stmt, relations.ctes, a);
  note_writes(stmt, !rels.empty(), a);
  const Others others = sort_relations(relations);
  if (kind == PG_QUERY__NODE__NODE_DROP_STMT && drops_placed_table(cfg_, stmt->drop_stmt)) {
    a.ddl = true;
    a.target = Analysis::Target::kAllShards;
    a.reason = "DROP of a sharded or reference table: every shard";
    return a;
  }
  for (const auto* r : rels)
    if (r->relpersistence && r->relpersistence[0] == 't') a.temp_tables.emplace_back(r->relname);
  if (kind == PG_QUERY__NODE__NODE_DO_STMT) {
    std::string problem;
    if (do_block_changes_schema_only(cfg_, stmt->do_stmt, problem)) {
      a.ddl = true;
      a.target = problem.empty() ? Analysis::Target::kAllShards : Analysis::Target::kError;
      a.error = problem;
      a.reason = "schema change in a DO block: every shard";
      return a;
    }
  }
  if ((kind == PG_QUERY__NODE__NODE_DO_STMT || kind == PG_QUERY__NODE__NODE_CALL_STMT) &&
      unplaced_routine(stmt, a))
    return a;
  if (uses_.empty() && schema_change(kind) && !names_temp_object(stmt))
    return schema_change_everywhere(stmt, rels, a);
  if (uses_.empty()) return without_sharded_tables(stmt, others, a);
  if (kind == PG_QUERY__NODE__NODE_INSERT_STMT && inserts_select(stmt->insert_stmt))
    return insert_select(stmt->insert_stmt, a);
  if (others.unsharded) {
    a.target = Analysis::Target::kError;
    a.error = "statement mixes sharded tables with tables that are not in the shard map";
    a.hint = "add the tables to sharded_tables or reference_tables";
    return a;
  }
  a.table = uses_.front().table;
  for (const auto& u : uses_) a.key_columns.push_back(cfg_.sharded_tables[u.table].column);
  if (kind == PG_QUERY__NODE__NODE_COPY_STMT) return copy(stmt->copy_stmt, a);
  if (const PgQuery__RangeVar* target = write_target(stmt); target && is_reference(cfg_, target)) {
    // Every shard would change its copy from its own sharded rows: the copies would differ.
    a.target = Analysis::Target::kError;
    a.error = "a write to reference table \"" + std::string(target->relname) +
              "\" that reads sharded tables (" + use_names() + ") is not supported";
    a.hint = "compute the values first, then write them to the reference table";
    return a;
  }
  if (a.ddl) return sharded_schema_change(cfg_, stmt, a);
  return by_kind(stmt, a);
}

// Starts the statement's uses_ (its sharded tables) and says what else it reads. System
// catalogs exist on every shard: drivers' type introspection runs anywhere.
Analyzer::Others Analyzer::sort_relations(const Relations& relations) {
  Others others;
  uses_.clear();
  cte_wheres_.clear();
  sublink_wheres_.clear();
  for (const auto* r : relations.rels) {
    if (!r->schemaname[0] && relations.ctes.contains(r->relname)) continue;
    const std::string_view schema = r->schemaname, rel = r->relname;
    if (schema == "pg_catalog" || schema == "information_schema" ||
        (schema.empty() && rel.starts_with("pg_")))
      continue;
    int t = sharded_index(cfg_, r);
    if (t >= 0) {
      std::string name = r->alias ? r->alias->aliasname : r->relname;
      uses_.push_back({t, name, static_cast<int>(uses_.size())});
      if (std::find(named_tables_.begin(), named_tables_.end(), t) == named_tables_.end())
        named_tables_.push_back(t);
    } else if (is_reference(cfg_, r)) {
      others.reference = true;
    } else {
      others.unsharded = true;
    }
  }
  return others;
}

// No sharded table: tables outside the map, reference tables, sequences, or none at all.
Analysis& Analyzer::without_sharded_tables(const Node* stmt, Others others, Analysis& a) {
  if (stmt->node_case == PG_QUERY__NODE__NODE_COPY_STMT) copy_unmapped(stmt->copy_stmt, a);
  if (others.unsharded) {
    a.target = Analysis::Target::kUnsharded;
    a.reason = "table not in the shard map";
  } else if (others.reference) {
    a.target = a.write || a.ddl ? Analysis::Target::kAllShards : Analysis::Target::kReferenceRead;
    a.replicated = a.write;
    a.reason = a.write || a.ddl ? "write to reference table: every shard" : "reference table read";
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

// A data statement on sharded tables, by its kind.
Analysis& Analyzer::by_kind(const Node* stmt, Analysis& a) {
  switch (stmt->node_case) {
    case PG_QUERY__NODE__NODE_INSERT_STMT:
      return insert(stmt->insert_stmt, a);
    case PG_QUERY__NODE__NODE_UPDATE_STMT:
      return update(stmt->update_stmt, a);
    case PG_QUERY__NODE__NODE_DELETE_STMT:
      return keyed(stmt->delete_stmt->where_clause, a);
    case PG_QUERY__NODE__NODE_SELECT_STMT:
      return select(stmt, a);
    default:
      a.target = Analysis::Target::kAllShards;
      a.reason = "statement on a sharded table without a key";
      return a;
  }
}

int sharded_index(const config::Config& cfg, const PgQuery__RangeVar* r) {
  for (size_t i = 0; i < cfg.sharded_tables.size(); ++i) {
    const auto& t = cfg.sharded_tables[i];
    if (t.table == r->relname &&
        (t.schema.empty() || !r->schemaname[0] || t.schema == r->schemaname))
      return static_cast<int>(i);
  }
  return -1;
}

bool is_reference(const config::Config& cfg, const PgQuery__RangeVar* r) {
  for (const auto& t : cfg.reference_tables) {
    auto dot = t.find('.');
    if (dot == std::string::npos ? t == r->relname
                                 : t.substr(dot + 1) == r->relname &&
                                       (!r->schemaname[0] || t.substr(0, dot) == r->schemaname))
      return true;
  }
  return false;
}

}  // namespace pgshard::router::detail
