// Whether a SELECT may run per shard as far as where its rows come from (decomposition.hpp).
#include "proxy/router/decomposition.hpp"

#include <map>
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
  std::string name;  // for messages: the table, function or "a subquery"
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
      fail("a query whose rows come only from tables or functions every shard holds whole "
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
    if (a.rows == Rows::kPartitioned) return a;
    return b.rows == Rows::kPartitioned ? b : a;
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
      return {Rows::kReplicated, "VALUES"};
    }
    Item rows{Rows::kReplicated, "a query without FROM"};
    for (size_t i = 0; i < s->n_from_clause; ++i)
      rows = i == 0 ? from_item(s->from_clause[i], &scope)
                    : combine_inner(rows, from_item(s->from_clause[i], &scope));
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
    if (q->node_case == PG_QUERY__NODE__NODE_SELECT_STMT) return select(q->select_stmt, scope);
    return {names_sharded(&q->base) ? Rows::kPartitioned : Rows::kReplicated, "a subquery"};
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
        if (!r->schemaname[0])
          if (const Item* cte = scope->find(r->relname)) return *cte;
        return {sharded_(r) ? Rows::kPartitioned : Rows::kReplicated, r->relname};
      }
      case PG_QUERY__NODE__NODE_RANGE_SUBSELECT: {
        Item item = query(n->range_subselect->subquery, scope);
        if (item.rows == Rows::kReplicated || item.name.empty()) item.name = "a subquery";
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
            name = std::string(ast::str_of(
                       call->func_call->funcname[call->func_call->n_funcname - 1])) +
                   "()";
        }
        Item item{Rows::kReplicated, name};
        for (size_t i = 0; i < f->n_functions; ++i) expression(f->functions[i], item, scope);
        return item;
      }
      case PG_QUERY__NODE__NODE_RANGE_TABLE_SAMPLE:
        return from_item(n->range_table_sample->relation, scope);
      case PG_QUERY__NODE__NODE_JOIN_EXPR:
        return join(n->join_expr, scope);
      default:
        return {Rows::kReplicated, "a table function"};
    }
  }

  Item join(const PgQuery__JoinExpr* j, const Scope* scope) {
    const Item l = from_item(j->larg, scope);
    const Item r = from_item(j->rarg, scope);
    const bool left_kept =
        j->jointype == PG_QUERY__JOIN_TYPE__JOIN_LEFT || j->jointype == PG_QUERY__JOIN_TYPE__JOIN_FULL;
    const bool right_kept = j->jointype == PG_QUERY__JOIN_TYPE__JOIN_RIGHT ||
                            j->jointype == PG_QUERY__JOIN_TYPE__JOIN_FULL;
    const char* type = j->jointype == PG_QUERY__JOIN_TYPE__JOIN_LEFT    ? "LEFT JOIN"
                       : j->jointype == PG_QUERY__JOIN_TYPE__JOIN_RIGHT ? "RIGHT JOIN"
                                                                        : "FULL JOIN";
    // The unmatched rows of a kept replicated side come from every shard that lacks a match.
    if (left_kept && l.rows == Rows::kReplicated && r.rows == Rows::kPartitioned)
      fail(std::string(type) + " keeping every row of " + l.name +
           " (the same on every shard) against sharded rows (" + r.name + ")");
    if (right_kept && r.rows == Rows::kReplicated && l.rows == Rows::kPartitioned)
      fail(std::string(type) + " keeping every row of " + r.name +
           " (the same on every shard) against sharded rows (" + l.name + ")");
    const Item rows = combine_inner(l, r);
    expression(j->quals, rows, scope);
    return rows;
  }

  const std::function<bool(const PgQuery__RangeVar*)>& sharded_;
  std::string problem_;
};

}  // namespace

std::optional<std::string> decomposition_problem(
    const PgQuery__SelectStmt* select,
    const std::function<bool(const PgQuery__RangeVar*)>& sharded) {
  return Prover(sharded).run(select);
}

}  // namespace pgshard::router
