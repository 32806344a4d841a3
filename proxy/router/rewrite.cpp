// Statements rewritten through libpg_query's deparser: a multi-row INSERT split by shard,
// pgshard.unique_id() calls, parameters and generated keys put in as constants, the SELECT of
// an INSERT ... SELECT taken out and its rows put back, and pg_prepared_statements replaced
// by a client's own.
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <set>
#include <tuple>

#include "proxy/router/analysis.hpp"
#include "proxy/router/analysis_internal.hpp"
#include "proxy/router/ast.hpp"
#include "proxy/router/text.hpp"

namespace pgshard::router {

namespace {

using ast::deparse;
using ast::walk;
using detail::Node;
using detail::parse_tree;

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

// Nodes put into a parse tree for a rewrite, owned here until the tree is deparsed. The
// tree's own arrays and nodes are put back when this goes (declare it after the tree:
// before the tree is freed).
class TreeEdits {
 public:
  TreeEdits() = default;
  TreeEdits(const TreeEdits&) = delete;
  TreeEdits& operator=(const TreeEdits&) = delete;
  ~TreeEdits() {
    for (auto& [slot, original] : replaced_) *slot = original;
    for (auto it = restore_.rbegin(); it != restore_.rend(); ++it) {
      auto [items, count, original, n] = *it;
      *items = original;
      *count = n;
    }
  }

  // The string constant 'v' (`v` must outlive the tree's use).
  Node* constant(const std::string& v) {
    auto& str = strings_.emplace_back();
    pg_query__string__init(&str);
    str.sval = const_cast<char*>(v.c_str());
    auto& c = consts_.emplace_back();
    pg_query__a__const__init(&c);
    c.val_case = PG_QUERY__A__CONST__VAL_SVAL;
    c.sval = &str;
    c.location = -1;
    auto& n = node(PG_QUERY__NODE__NODE_A_CONST);
    n.a_const = &c;
    return &n;
  }
  // A column of an INSERT's column list.
  Node* column(const std::string& name) {
    auto& rt = targets_.emplace_back();
    pg_query__res_target__init(&rt);
    rt.name = const_cast<char*>(name.c_str());
    rt.location = -1;
    auto& n = node(PG_QUERY__NODE__NODE_RES_TARGET);
    n.res_target = &rt;
    return &n;
  }
  // DEFAULT, as a VALUES item.
  Node* set_to_default() {
    auto& d = defaults_.emplace_back();
    pg_query__set_to_default__init(&d);
    d.location = -1;
    auto& n = node(PG_QUERY__NODE__NODE_SET_TO_DEFAULT);
    n.set_to_default = &d;
    return &n;
  }
  // `extra` added at the end of the array `*items` of `*count` nodes.
  void append(Node*** items, size_t* count, Node* extra) {
    auto& grown = arrays_.emplace_back(*items, *items + *count);
    grown.push_back(extra);
    restore_.emplace_back(items, count, *items, *count);
    *items = grown.data();
    *count = grown.size();
  }
  // `with` in the place of the node at `slot`.
  void replace(Node** slot, Node* with) {
    replaced_.emplace_back(slot, *slot);
    *slot = with;
  }

 private:
  Node& node(PgQuery__Node__NodeCase kind) {
    auto& n = nodes_.emplace_back();
    pg_query__node__init(&n);
    n.node_case = kind;
    return n;
  }

  std::deque<PgQuery__String> strings_;
  std::deque<PgQuery__AConst> consts_;
  std::deque<PgQuery__ResTarget> targets_;
  std::deque<PgQuery__SetToDefault> defaults_;
  std::deque<Node> nodes_;
  std::deque<std::vector<Node*>> arrays_;
  std::vector<std::tuple<Node***, size_t*, Node**, size_t>> restore_;
  std::vector<std::pair<Node**, Node*>> replaced_;  // (slot, original)
};

// The key column added to an INSERT's column list, with the next of `values` in every row.
// False when a row is not a list or the values run out.
bool add_key_column(PgQuery__InsertStmt* ins, PgQuery__SelectStmt* s, const std::string& column,
                    const std::vector<std::string>& values, std::size_t& used, TreeEdits& edits) {
  edits.append(&ins->cols, &ins->n_cols, edits.column(column));
  for (size_t r = 0; r < s->n_values_lists; ++r) {
    Node* row = s->values_lists[r];
    if (row->node_case != PG_QUERY__NODE__NODE_LIST || used >= values.size()) return false;
    edits.append(&row->list->items, &row->list->n_items, edits.constant(values[used++]));
  }
  return true;
}

// The next of `values` in the place of each row's DEFAULT at column `col`. False when a row
// is not a list, is too short for a column list, or the values run out.
bool fill_key_defaults(PgQuery__InsertStmt* ins, PgQuery__SelectStmt* s, int col,
                       const std::vector<std::string>& values, std::size_t& used,
                       TreeEdits& edits) {
  for (size_t r = 0; r < s->n_values_lists; ++r) {
    Node* row = s->values_lists[r];
    if (row->node_case != PG_QUERY__NODE__NODE_LIST ||
        (ins->n_cols > 0 && static_cast<size_t>(col) >= row->list->n_items))
      return false;
    // Without a column list a row may stop before the column (the rest take their
    // defaults): it is padded with DEFAULT up to the column.
    while (static_cast<size_t>(col) >= row->list->n_items)
      edits.append(&row->list->items, &row->list->n_items, edits.set_to_default());
    Node** slot = &row->list->items[col];
    if ((*slot)->node_case != PG_QUERY__NODE__NODE_SET_TO_DEFAULT) continue;
    if (used >= values.size()) return false;
    edits.replace(slot, edits.constant(values[used++]));
  }
  return true;
}

}  // namespace

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

std::optional<std::string> with_unique_ids(
    std::string_view sql, const std::function<std::optional<int64_t>(bool js_safe)>& next) {
  const auto owned = parse_tree(std::string(sql));
  if (!owned) return std::nullopt;
  const auto calls = detail::unique_id_calls(owned.get());
  if (calls.empty()) return std::nullopt;
  std::vector<std::string> ids;
  for (Node* call : calls) {
    const auto id = next(detail::unique_id_function(call->func_call) == 1);
    if (!id) return std::nullopt;
    ids.push_back("'" + std::to_string(*id) + "'::pg_catalog.int8");
  }
  return deparse_with(owned.get(), calls, ids);
}

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

namespace {

// The SQL text of expression `e` (with `cast`: CAST(e AS cast)), by the deparser: a
// `SELECT CAST(NULL AS int)` parsed here gets the nodes in its place for the while.
std::optional<std::string> expression_sql(Node* e, Node* cast) {
  const auto tree = parse_tree(cast ? "SELECT CAST(NULL AS int)" : "SELECT NULL");
  if (!tree) return std::nullopt;
  Node*& value = tree->stmts[0]->stmt->select_stmt->target_list[0]->res_target->val;
  Node* const own = value;
  std::optional<std::string> out;
  if (cast) {
    auto* tc = own->type_cast;
    Node* const own_arg = tc->arg;
    PgQuery__TypeName* const own_type = tc->type_name;
    tc->arg = e;
    tc->type_name = cast->type_name;
    out = deparse(tree.get());
    tc->arg = own_arg;
    tc->type_name = own_type;
  } else {
    value = e;
    out = deparse(tree.get());
    value = own;
  }
  constexpr std::string_view kSelect = "SELECT ";
  if (!out || !out->starts_with(kSelect)) return std::nullopt;
  out->erase(0, kSelect.size());
  return out;
}

// A statement's text with the tree's statement replaced by `stmt` while it is deparsed.
std::optional<std::string> statement_sql(PgQuery__ParseResult* tree, Node* stmt) {
  Node* const own = tree->stmts[0]->stmt;
  tree->stmts[0]->stmt = stmt;
  auto out = deparse(tree);
  tree->stmts[0]->stmt = own;
  return out;
}

// Whether an EXECUTE argument is a constant expression (literals, casts, operators): a
// function call or subquery would run once for each place of its parameter.
bool constant_argument(const Node* arg) {
  bool constant = true;
  walk(&arg->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor == &pg_query__func_call__descriptor ||
        m->descriptor == &pg_query__sub_link__descriptor ||
        m->descriptor == &pg_query__column_ref__descriptor ||
        m->descriptor == &pg_query__param_ref__descriptor)
      constant = false;
  });
  return constant;
}

}  // namespace

std::optional<std::string> sql_executed(std::string_view prepare_sql, std::string_view execute_sql,
                                        protocol::ErrorInfo& error) {
  const auto prepare = parse_tree(std::string(prepare_sql));
  const auto execute = parse_tree(std::string(execute_sql));
  error = protocol::error(protocol::sqlstate::kInternalError,
                          "pgshard could not put the EXECUTE's arguments into its statement");
  if (!prepare || !execute || prepare->n_stmts != 1 || execute->n_stmts != 1 ||
      prepare->stmts[0]->stmt->node_case != PG_QUERY__NODE__NODE_PREPARE_STMT ||
      execute->stmts[0]->stmt->node_case != PG_QUERY__NODE__NODE_EXECUTE_STMT)
    return std::nullopt;
  const auto* p = prepare->stmts[0]->stmt->prepare_stmt;
  const auto* e = execute->stmts[0]->stmt->execute_stmt;
  const auto statement = statement_sql(prepare.get(), p->query);
  if (!statement) return std::nullopt;
  // PostgreSQL's count: the types declared, or more when the statement uses $n beyond them.
  const auto used = parameters_of(*statement);
  const std::size_t expected = std::max<std::size_t>(
      p->n_argtypes, used.empty() ? 0 : static_cast<std::size_t>(*used.rbegin()));
  if (e->n_params != expected) {
    error = protocol::error(
        protocol::sqlstate::kSyntaxError,
        "wrong number of parameters for prepared statement \"" + std::string(p->name) + "\"",
        "Expected " + std::to_string(expected) + " parameters but got " +
            std::to_string(e->n_params) + ".");
    return std::nullopt;
  }
  std::vector<std::string> values;
  for (std::size_t i = 0; i < e->n_params; ++i) {
    if (!constant_argument(e->params[i])) {
      error = protocol::error(
          protocol::sqlstate::kFeatureNotSupported,
          "EXECUTE of prepared statement \"" + std::string(p->name) +
              "\" (kept by pgshard) takes constants as arguments: argument " +
              std::to_string(i + 1) + " is not one",
          {},
          "compute the value first and pass it as a constant, or use the extended protocol's "
          "parameters (your driver's placeholders)");
      return std::nullopt;
    }
    Node* cast = i < p->n_argtypes ? p->argtypes[i] : nullptr;
    if (cast && cast->node_case != PG_QUERY__NODE__NODE_TYPE_NAME) return std::nullopt;
    auto text = expression_sql(e->params[i], cast);
    if (!text) return std::nullopt;
    values.push_back("(" + *text + ")");
  }
  return with_parameter_values(*statement, values);
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
  TreeEdits edits;  // after `owned`: the tree gets its own nodes back before it is freed
  std::size_t used = 0;
  const bool ok = col < 0 ? add_key_column(ins, s, column, values, used, edits)
                          : fill_key_defaults(ins, s, col, values, used, edits);
  std::optional<std::string> out;
  // GENERATED ALWAYS AS IDENTITY takes a value only with OVERRIDING SYSTEM VALUE.
  if (overriding && ins->override == PG_QUERY__OVERRIDING_KIND__OVERRIDING_NOT_SET)
    ins->override = PG_QUERY__OVERRIDING_KIND__OVERRIDING_SYSTEM_VALUE;
  if (ok && used == values.size()) out = deparse(tree);
  return out;
}

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
