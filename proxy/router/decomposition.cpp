// Whether a SELECT may run per shard as far as where its rows come from (decomposition.hpp).
#include "proxy/router/decomposition.hpp"

#include <map>
#include <set>
#include <string_view>
#include <vector>

#include "proxy/router/ast.hpp"

namespace pgshard::router {

namespace {

using Node = PgQuery__Node;

// Where the rows of a query level or FROM item live.
enum class Rows {
  kReplicated,   // every shard produces all of them (reference tables, functions, VALUES)
  kPartitioned,  // each row is produced by one shard (a sharded table in an inner join)
};

struct Item {
  Rows rows = Rows::kReplicated;
  std::string name;                            // for messages: the table, function or "a subquery"
  std::set<std::string, std::less<>> aliases;  // the range names it brings into scope
};

// The CTE names visible at one query level, innermost first.
struct Scope {
  const Scope* parent = nullptr;
  std::map<std::string, Item, std::less<>> ctes;
  const Item* find(std::string_view name) const {
    for (const Scope* s = this; s; s = s->parent)
      if (auto it = s->ctes.find(name); it != s->ctes.end()) return &it->second;
    return nullptr;
  }
};

class Prover {
 public:
  explicit Prover(const std::function<bool(const PgQuery__RangeVar*)>& sharded)
      : sharded_(sharded) {}

  std::optional<std::string> run(const PgQuery__SelectStmt* s) {
    Scope top;
    const Item rows = select(s, &top);
    if (problem_.empty() && rows.rows == Rows::kReplicated && names_sharded(&s->base))
      fail(
          "a query whose rows come only from tables or functions every shard holds whole "
          "(sharded tables only in subqueries or unused CTEs)");
    if (problem_.empty()) return std::nullopt;
    return problem_;
  }

 private:
  void fail(std::string what) {
    if (problem_.empty()) problem_ = std::move(what);
  }

  bool names_sharded(const ProtobufCMessage* m) const {
    bool found = false;
    ast::walk(m, [&](const ProtobufCMessage* x) {
      if (x->descriptor == &pg_query__range_var__descriptor &&
          sharded_(reinterpret_cast<const PgQuery__RangeVar*>(x)))
        found = true;
    });
    return found;
  }

  static Item combine_inner(const Item& a, const Item& b) {
    Item out = a.rows == Rows::kPartitioned || b.rows != Rows::kPartitioned ? a : b;
    out.aliases = a.aliases;
    out.aliases.insert(b.aliases.begin(), b.aliases.end());
    return out;
  }

  // The range names whose columns a strict condition of `where` (an AND of conjuncts) uses:
  // a row whose columns of that range are all NULL fails WHERE, so an outer join keeping
  // rows without a match there acts as an inner join (PostgreSQL reduces it likewise).
  static void null_rejected(const Node* e, std::set<std::string, std::less<>>& out) {
    if (!e) return;
    if (e->node_case == PG_QUERY__NODE__NODE_BOOL_EXPR &&
        e->bool_expr->boolop == PG_QUERY__BOOL_EXPR_TYPE__AND_EXPR) {
      for (size_t i = 0; i < e->bool_expr->n_args; ++i) null_rejected(e->bool_expr->args[i], out);
      return;
    }
    auto range_of = [&](const Node* n) {
      while (n && n->node_case == PG_QUERY__NODE__NODE_TYPE_CAST) n = n->type_cast->arg;
      if (n && n->node_case == PG_QUERY__NODE__NODE_COLUMN_REF && n->column_ref->n_fields == 2 &&
          n->column_ref->fields[0]->node_case == PG_QUERY__NODE__NODE_STRING)
        out.insert(std::string(ast::str_of(n->column_ref->fields[0])));
    };
    if (e->node_case == PG_QUERY__NODE__NODE_NULL_TEST &&
        e->null_test->nulltesttype == PG_QUERY__NULL_TEST_TYPE__IS_NOT_NULL) {
      range_of(e->null_test->arg);
      return;
    }
    if (e->node_case != PG_QUERY__NODE__NODE_A_EXPR) return;
    switch (e->a_expr->kind) {
      case PG_QUERY__A__EXPR__KIND__AEXPR_OP:
      case PG_QUERY__A__EXPR__KIND__AEXPR_IN:
      case PG_QUERY__A__EXPR__KIND__AEXPR_LIKE:
      case PG_QUERY__A__EXPR__KIND__AEXPR_ILIKE:
      case PG_QUERY__A__EXPR__KIND__AEXPR_BETWEEN:
      case PG_QUERY__A__EXPR__KIND__AEXPR_NOT_BETWEEN:
        // Built-in comparison operators are strict: NULL in, NULL (not true) out.
        range_of(e->a_expr->lexpr);
        range_of(e->a_expr->rexpr);
        return;
      default:
        return;
    }
  }

  bool rejects_nulls(const Item& side) const {
    if (!rejected_) return false;
    for (const auto& a : side.aliases)
      if (rejected_->contains(a)) return true;
    return false;
  }

  // A query level: its CTEs, FROM, and the subqueries of its expressions.
  Item select(const PgQuery__SelectStmt* s, const Scope* outer) {
    Scope scope;
    scope.parent = outer;
    if (s->with_clause) {
      for (size_t i = 0; i < s->with_clause->n_ctes; ++i) {
        const Node* c = s->with_clause->ctes[i];
        if (!c || c->node_case != PG_QUERY__NODE__NODE_COMMON_TABLE_EXPR) continue;
        const auto* cte = c->common_table_expr;
        Item item = query(cte->ctequery, &scope);
        item.name = cte->ctename;
        if (s->with_clause->recursive && item.rows == Rows::kPartitioned)
          fail("WITH RECURSIVE over sharded tables (each shard would recurse over its own rows)");
        scope.ctes[cte->ctename] = item;
      }
    }
    if (s->larg || s->rarg) {
      const Item l = s->larg ? select(s->larg, &scope) : Item{};
      const Item r = s->rarg ? select(s->rarg, &scope) : Item{};
      if (l.rows != r.rows)
        fail("a set operation between sharded rows and rows every shard holds whole (" +
             (l.rows == Rows::kReplicated ? l.name : r.name) + ")");
      return combine_inner(l, r);
    }
    if (s->n_values_lists > 0) {
      for (size_t i = 0; i < s->n_values_lists; ++i) expression(s->values_lists[i], {}, &scope);
      return {Rows::kReplicated, "VALUES", {}};
    }
    Item rows{Rows::kReplicated, "a query without FROM", {}};
    std::set<std::string, std::less<>> rejected;
    null_rejected(s->where_clause, rejected);
    const auto* outer_rejected = rejected_;
    rejected_ = &rejected;
    for (size_t i = 0; i < s->n_from_clause; ++i)
      rows = i == 0 ? from_item(s->from_clause[i], &scope)
                    : combine_inner(rows, from_item(s->from_clause[i], &scope));
    rejected_ = outer_rejected;
    expression(s->where_clause, rows, &scope);
    for (size_t i = 0; i < s->n_target_list; ++i) expression(s->target_list[i], rows, &scope);
    for (size_t i = 0; i < s->n_group_clause; ++i) expression(s->group_clause[i], rows, &scope);
    expression(s->having_clause, rows, &scope);
    for (size_t i = 0; i < s->n_sort_clause; ++i) expression(s->sort_clause[i], rows, &scope);
    return rows;
  }

  // The statement of a CTE or subquery: a SELECT, or a data-modifying statement (whose rows
  // are partitioned when it touches a sharded table).
  Item query(const Node* q, const Scope* scope) {
    if (!q) return {};
    const auto* saved = rejected_;  // a subquery's joins see its own WHERE only
    struct Restore {
      const std::set<std::string, std::less<>>*& slot;
      const std::set<std::string, std::less<>>* value;
      ~Restore() { slot = value; }
    } restore{rejected_, saved};
    rejected_ = nullptr;
    if (q->node_case == PG_QUERY__NODE__NODE_SELECT_STMT) return select(q->select_stmt, scope);
    return {names_sharded(&q->base) ? Rows::kPartitioned : Rows::kReplicated, "a subquery", {}};
  }

  // Subqueries (SubLinks) inside an expression of a query level whose rows are `level`:
  // a subquery over sharded rows there is a semi/anti join (or a scalar lookup) that each
  // shard answers from its own rows only.
  void expression(const Node* e, const Item& level, const Scope* scope) {
    if (!e) return;
    std::vector<const PgQuery__SubLink*> links;
    ast::walk(&e->base, [&](const ProtobufCMessage* m) {
      if (m->descriptor == &pg_query__sub_link__descriptor)
        links.push_back(reinterpret_cast<const PgQuery__SubLink*>(m));
    });
    for (const auto* link : links) {
      const Item sub = query(link->subselect, scope);
      if (sub.rows == Rows::kPartitioned && level.rows == Rows::kReplicated)
        fail(std::string(kind_of(link)) + " over sharded rows (" + sub.name +
             ") in a query whose rows every shard holds whole (" + level.name + ")");
    }
  }

  static const char* kind_of(const PgQuery__SubLink* l) {
    switch (l->sub_link_type) {
      case PG_QUERY__SUB_LINK_TYPE__EXISTS_SUBLINK:
        return "EXISTS / NOT EXISTS";
      case PG_QUERY__SUB_LINK_TYPE__ANY_SUBLINK:
        return "IN / NOT IN / ANY (subquery)";
      case PG_QUERY__SUB_LINK_TYPE__ALL_SUBLINK:
        return "ALL (subquery)";
      default:
        return "a subquery";
    }
  }

  Item from_item(const Node* n, const Scope* scope) {
    if (!n) return {};
    switch (n->node_case) {
      case PG_QUERY__NODE__NODE_RANGE_VAR: {
        const auto* r = n->range_var;
        const std::string alias = r->alias ? r->alias->aliasname : r->relname;
        if (!r->schemaname[0])
          if (const Item* cte = scope->find(r->relname)) {
            Item item = *cte;
            item.aliases = {alias};
            return item;
          }
        return {sharded_(r) ? Rows::kPartitioned : Rows::kReplicated, r->relname, {alias}};
      }
      case PG_QUERY__NODE__NODE_RANGE_SUBSELECT: {
        Item item = query(n->range_subselect->subquery, scope);
        if (item.rows == Rows::kReplicated || item.name.empty()) item.name = "a subquery";
        item.aliases.clear();
        if (n->range_subselect->alias) item.aliases.insert(n->range_subselect->alias->aliasname);
        return item;
      }
      case PG_QUERY__NODE__NODE_RANGE_FUNCTION: {
        const auto* f = n->range_function;
        std::string name = "a function in FROM";
        if (f->n_functions > 0 && f->functions[0]->node_case == PG_QUERY__NODE__NODE_LIST &&
            f->functions[0]->list->n_items > 0) {
          const Node* call = f->functions[0]->list->items[0];
          if (call && call->node_case == PG_QUERY__NODE__NODE_FUNC_CALL &&
              call->func_call->n_funcname > 0)
            name = std::string(
                       ast::str_of(call->func_call->funcname[call->func_call->n_funcname - 1])) +
                   "()";
        }
        Item item{Rows::kReplicated, name, {}};
        if (f->alias) item.aliases.insert(f->alias->aliasname);
        for (size_t i = 0; i < f->n_functions; ++i) expression(f->functions[i], item, scope);
        return item;
      }
      case PG_QUERY__NODE__NODE_RANGE_TABLE_SAMPLE:
        return from_item(n->range_table_sample->relation, scope);
      case PG_QUERY__NODE__NODE_JOIN_EXPR:
        return join(n->join_expr, scope);
      default:
        return {Rows::kReplicated, "a table function", {}};
    }
  }

  Item join(const PgQuery__JoinExpr* j, const Scope* scope) {
    const Item l = from_item(j->larg, scope);
    const Item r = from_item(j->rarg, scope);
    const bool left_kept = j->jointype == PG_QUERY__JOIN_TYPE__JOIN_LEFT ||
                           j->jointype == PG_QUERY__JOIN_TYPE__JOIN_FULL;
    const bool right_kept = j->jointype == PG_QUERY__JOIN_TYPE__JOIN_RIGHT ||
                            j->jointype == PG_QUERY__JOIN_TYPE__JOIN_FULL;
    const char* type = j->jointype == PG_QUERY__JOIN_TYPE__JOIN_LEFT    ? "LEFT JOIN"
                       : j->jointype == PG_QUERY__JOIN_TYPE__JOIN_RIGHT ? "RIGHT JOIN"
                                                                        : "FULL JOIN";
    // The unmatched rows of a kept replicated side come from every shard that lacks a match
    // (unless WHERE drops rows whose sharded side is NULL: an inner join then).
    if (left_kept && l.rows == Rows::kReplicated && r.rows == Rows::kPartitioned &&
        !rejects_nulls(r))
      fail(std::string(type) + " keeping every row of " + l.name +
           " (the same on every shard) against sharded rows (" + r.name + ")");
    if (right_kept && r.rows == Rows::kReplicated && l.rows == Rows::kPartitioned &&
        !rejects_nulls(l))
      fail(std::string(type) + " keeping every row of " + r.name +
           " (the same on every shard) against sharded rows (" + l.name + ")");
    Item rows = combine_inner(l, r);
    expression(j->quals, rows, scope);
    if (j->alias) rows.aliases = {j->alias->aliasname};
    return rows;
  }

  const std::function<bool(const PgQuery__RangeVar*)>& sharded_;
  std::string problem_;
  // Range names the WHERE of the query level being read rejects NULLs of.
  const std::set<std::string, std::less<>>* rejected_ = nullptr;
};

}  // namespace

std::optional<std::string> decomposition_problem(
    const PgQuery__SelectStmt* select,
    const std::function<bool(const PgQuery__RangeVar*)>& sharded) {
  return Prover(sharded).run(select);
}

}  // namespace pgshard::router
