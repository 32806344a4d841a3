// Shard keys in the analyser: the key values a WHERE pins (`key = v`, IN, ANY, ORs of them),
// the key equalities that join sharded tables on one shard (co-location groups), and the
// shards a statement's restrictions leave.
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <set>
#include <string_view>

#include "proxy/router/analyzer.hpp"
#include "proxy/router/ast.hpp"

namespace pgshard::router::detail {

using ast::str_of;

// The use a column reference names, if it is that use's shard key.
int Analyzer::key_use(const Node* n) const {
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

namespace {

// A cast that keeps every key apart (equal after it only if equal before, for each key
// type): the integer types, numeric, text and varchar without a length, uuid. Not a cast to
// real or double precision, numeric(p, s), varchar(n), char(n), bit(n), name...: keys that
// differ may compare equal after it (16777217::real = 16777216::real), so a comparison
// through it does not name one key's shard.
bool keeps_keys_apart(const PgQuery__TypeCast* c) {
  const auto* t = c->type_name;
  if (!t || t->n_names == 0 || t->n_typmods > 0) return false;
  const Node* last = t->names[t->n_names - 1];
  if (!last || last->node_case != PG_QUERY__NODE__NODE_STRING || !last->string->sval) return false;
  static const std::set<std::string_view> kExact{"int2", "int4",    "int8", "numeric",
                                                 "text", "varchar", "uuid"};
  return kExact.contains(last->string->sval);
}

}  // namespace

const Node* strip_casts(const Node* n) {
  // (Stops at a cast that may make different keys equal: that node is no key nor value.)
  while (n && n->node_case == PG_QUERY__NODE__NODE_TYPE_CAST && keeps_keys_apart(n->type_cast))
    n = n->type_cast->arg;
  return n;
}

std::optional<KeyValue> value_of(const Node* n) {
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
  if (n->node_case == PG_QUERY__NODE__NODE_A_EXPR && !n->a_expr->lexpr && n->a_expr->n_name == 1 &&
      str_of(n->a_expr->name[0]) == "-") {
    auto v = value_of(n->a_expr->rexpr);
    if (v && v->kind == KeyValue::Kind::kLiteral) {
      v->literal = "-" + v->literal;
      return v;
    }
  }
  return std::nullopt;
}

// Joins in FROM: ON quals join co-located tables.
void Analyzer::joins(const Node* n) {
  if (!n || n->node_case != PG_QUERY__NODE__NODE_JOIN_EXPR) return;
  joins(n->join_expr->larg);
  joins(n->join_expr->rarg);
  collect(n->join_expr->quals, nullptr);
}

// The sharded tables the statement names, each once, for messages.
std::string Analyzer::use_names() const {
  std::vector<std::string> names;
  for (const auto& u : uses_) {
    const auto& t = cfg_.sharded_tables[u.table].table;
    if (std::find(names.begin(), names.end(), t) == names.end()) names.push_back(t);
  }
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

int Analyzer::find(int u) {
  while (uses_[u].group != u) u = uses_[u].group = uses_[uses_[u].group].group;
  return u;
}

// Walks the AND-conjunction of `e`: records key equalities between uses (co-location),
// and, when `keys` is given, the key values restricting each group.
void Analyzer::collect(const Node* e, UseKeys* keys) {
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
    // Equal keys meet on one shard only when both tables place a key alike (two hash
    // tables with different buckets, or a hash and a ring table, do not).
    if (l >= 0 && r >= 0) {
      const auto& x = cfg_.sharded_tables[uses_[l].table];
      const auto& y = cfg_.sharded_tables[uses_[r].table];
      if (config::same_placement(x, y)) {
        uses_[find(l)].group = find(r);
        return;
      }
      unlike_placement_ = x.table + " and " + y.table;
    }
  }
  if (!keys) return;
  int use = -1;
  if (auto v = key_values(e, &use); v && use >= 0) keys->emplace_back(use, std::move(*v));
}

// The key values the AND-conjuncts of `e` restrict uses to (no co-location recorded).
void Analyzer::key_conjuncts(const Node* e, UseKeys& keys) {
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
std::optional<std::vector<KeyValue>> Analyzer::key_values(const Node* e, int* use) {
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

Analysis& Analyzer::keyed(const Node* where, Analysis& a) {
  UseKeys keys;
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
          unlike_placement_.empty()
              ? "joining sharded tables (" + use_names() + ") other than on their shard keys"
              : "joining sharded tables whose keys are placed differently (" + unlike_placement_ +
                    ": another key type, function, buckets, ranges or lists)";
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
}  // namespace pgshard::router::detail
