// INSERT, UPDATE and COPY in the analyser: the key each VALUES row gives (or leaves to the
// column's default), INSERT ... SELECT, UPDATE of the key column, and how COPY FROM STDIN
// rows are split by key (or copied to every shard).
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <cctype>

#include "proxy/router/analyzer.hpp"
#include "proxy/router/ast.hpp"

namespace pgshard::router::detail {

using ast::str_of;

namespace {

// INSERT ... (cols) VALUES: the columns named and, for each, the rows giving DEFAULT,
// so the router can tell which generated columns the rows leave to the database.
void note_insert_columns(const PgQuery__InsertStmt* ins, Analysis& a) {
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

}  // namespace

const PgQuery__RangeVar* write_target(const Node* stmt) {
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

CopySplit copy_options(const PgQuery__CopyStmt* c) {
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
      split.header = !arg ||
                     (arg->node_case == PG_QUERY__NODE__NODE_BOOLEAN && arg->boolean->boolval) ||
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

Analysis& Analyzer::copy(const PgQuery__CopyStmt* c, Analysis& a) const {
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

// INSERT INTO <sharded table> SELECT ... (not VALUES).
bool Analyzer::inserts_select(const PgQuery__InsertStmt* ins) const {
  if (uses_.empty() || !ins->relation || !ins->relation->relname) return false;
  const auto& t = cfg_.sharded_tables[uses_.front().table];
  if (t.table != ins->relation->relname) return false;
  const Node* sel = ins->select_stmt;
  return sel && sel->node_case == PG_QUERY__NODE__NODE_SELECT_STMT &&
         sel->select_stmt->n_values_lists == 0;
}

// INSERT INTO <sharded table> SELECT ...: the SELECT is routed (and checked) on its own when
// it runs.
Analysis& Analyzer::insert_select(const PgQuery__InsertStmt* ins, Analysis& a) const {
  a.target = Analysis::Target::kInsertSelect;
  a.write = true;
  a.insert = true;
  a.table = uses_.front().table;
  a.reason = "INSERT ... SELECT: pgshard runs the SELECT, then inserts its rows by key";
  if (const auto* w = ins->select_stmt->select_stmt;
      w->n_from_clause == 0 && w->where_clause &&
      w->where_clause->node_case == PG_QUERY__NODE__NODE_A_CONST &&
      w->where_clause->a_const->val_case == PG_QUERY__A__CONST__VAL_BOOLVAL &&
      !w->where_clause->a_const->boolval->boolval) {
    // ... SELECT <values> WHERE false: inserts nothing; any shard answers it.
    a.target = Analysis::Target::kAnyShard;
    a.reason = "INSERT of no rows";
  }
  if (ins->with_clause) {
    a.target = Analysis::Target::kError;
    a.error = "INSERT ... SELECT into a sharded table with a WITH clause is not supported";
    a.hint = "put the WITH inside the SELECT";
  }
  return a;
}

Analysis& Analyzer::insert(const PgQuery__InsertStmt* ins, Analysis& a) const {
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
      for (size_t i = 0; i < row->list->n_items; ++i) out.push_back(value_of(row->list->items[i]));
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
    a.error =
        "INSERT into sharded table \"" + t.table + "\" must set its shard key \"" + t.column + "\"";
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

// UPDATE: the rows its WHERE names; SET key = value only where the new key stays on their
// shard (the router checks `new_key`).
Analysis& Analyzer::update(const PgQuery__UpdateStmt* u, Analysis& a) {
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

}  // namespace pgshard::router::detail
