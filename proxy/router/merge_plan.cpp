// The merge plan of a multi-shard SELECT (see merge_plan.hpp).
#include "proxy/router/merge_plan.hpp"

#include <charconv>
#include <deque>
#include <optional>
#include <string_view>

#include "proxy/router/ast.hpp"

namespace pgshard::router {

namespace {

using Node = PgQuery__Node;
using merge::Aggregate;
using merge::Output;
using merge::Predicate;

bool is_star(const Node* n) {
  if (!n || n->node_case != PG_QUERY__NODE__NODE_COLUMN_REF) return false;
  const auto* c = n->column_ref;
  return c->n_fields > 0 && c->fields[c->n_fields - 1]->node_case == PG_QUERY__NODE__NODE_A_STAR;
}

std::string_view last_name(const Node* n) {
  if (!n || n->node_case != PG_QUERY__NODE__NODE_COLUMN_REF) return {};
  const auto* c = n->column_ref;
  return c->n_fields ? ast::str_of(c->fields[c->n_fields - 1]) : std::string_view();
}

const PgQuery__FuncCall* func_of(const Node* n) {
  return n && n->node_case == PG_QUERY__NODE__NODE_FUNC_CALL ? n->func_call : nullptr;
}

std::string_view func_name(const PgQuery__FuncCall* f) {
  return f->n_funcname ? ast::str_of(f->funcname[f->n_funcname - 1]) : std::string_view();
}

// numeric(p) / numeric(p,s) with constant integers: precision and scale.
std::optional<std::pair<int, int>> numeric_typmod(const PgQuery__TypeName* tn) {
  if (!tn || tn->n_typmods < 1 || tn->n_typmods > 2) return std::nullopt;
  int v[2] = {0, 0};
  for (size_t i = 0; i < tn->n_typmods; ++i) {
    const Node* m = tn->typmods[i];
    if (!m || m->node_case != PG_QUERY__NODE__NODE_A_CONST || !m->a_const->ival)
      return std::nullopt;
    v[i] = m->a_const->ival->ival;
  }
  if (v[0] < 1 || v[0] > 1000 || v[1] < 0 || v[1] > v[0]) return std::nullopt;
  return std::pair{v[0], v[1]};
}

// The OID of a number type a cast names (int2/int4/int8, numeric, float4/float8); 0 else.
int32_t cast_type_oid(std::string_view type) {
  if (type == "int2" || type == "smallint") return 21;
  if (type == "int4" || type == "integer" || type == "int") return 23;
  if (type == "int8" || type == "bigint") return 20;
  if (type == "numeric" || type == "decimal") return 1700;
  if (type == "float4" || type == "real") return 700;
  if (type == "float8") return 701;
  return 0;
}

// An aggregate call, or a cast of count()/sum()/avg() to an integer, numeric or float type
// (count(*)::int, sum(x)::numeric(10,2), avg(x)::int): the shards send the aggregate's
// parts without the cast and the merge casts the merged result (Aggregate::cast_type).
const PgQuery__FuncCall* aggregate_of(const Node* n, bool* cast) {
  *cast = false;
  if (n && n->node_case == PG_QUERY__NODE__NODE_TYPE_CAST && n->type_cast->type_name) {
    const auto* tn = n->type_cast->type_name;
    auto type = tn->n_names ? ast::str_of(tn->names[tn->n_names - 1]) : std::string_view();
    const bool numberish = cast_type_oid(type) != 0;
    const auto* inner = func_of(n->type_cast->arg);
    const bool typmod_ok = tn->n_typmods == 0 || (type == "numeric" && numeric_typmod(tn));
    if (numberish && typmod_ok && tn->n_array_bounds == 0 && inner && !inner->over &&
        (func_name(inner) == "count" || func_name(inner) == "sum" || func_name(inner) == "avg")) {
      *cast = true;
      return inner;
    }
    return nullptr;
  }
  const auto* f = func_of(n);
  return f && !f->over && ast::is_aggregate(func_name(f)) ? f : nullptr;
}

bool contains_aggregate(const Node* n) {
  bool found = false;
  ast::walk(&n->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor != &pg_query__func_call__descriptor) return;
    const auto* f = reinterpret_cast<const PgQuery__FuncCall*>(m);
    if (!f->over && ast::is_aggregate(func_name(f))) found = true;
  });
  return found;
}

bool contains(const Node* n, bool (*pred)(const PgQuery__FuncCall*)) {
  bool found = false;
  if (n)
    ast::walk(&n->base, [&](const ProtobufCMessage* m) {
      if (m->descriptor == &pg_query__func_call__descriptor &&
          pred(reinterpret_cast<const PgQuery__FuncCall*>(m)))
        found = true;
    });
  return found;
}

bool is_window(const PgQuery__FuncCall* f) {
  return f->over != nullptr;
}

bool is_volatile(const PgQuery__FuncCall* f) {
  static constexpr std::string_view kVolatile[] = {
      "random",  "clock_timestamp",  "timeofday",    "gen_random_uuid", "nextval",
      "setseed", "uuid_generate_v4", "txid_current", "pg_backend_pid"};
  for (auto v : kVolatile)
    if (func_name(f) == v) return true;
  return false;
}

std::optional<int64_t> const_int(const Node* n) {
  if (!n || n->node_case != PG_QUERY__NODE__NODE_A_CONST) return std::nullopt;
  const auto* c = n->a_const;
  if (c->val_case == PG_QUERY__A__CONST__VAL_IVAL) return c->ival->ival;
  if (c->val_case == PG_QUERY__A__CONST__VAL_FVAL) {
    std::string_view s = c->fval->fval;
    int64_t v = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec == std::errc() && r.ptr == s.data() + s.size()) return v;
  }
  return std::nullopt;
}

class Planner {
 public:
  Planner(const Planner&) = delete;
  Planner& operator=(const Planner&) = delete;
  ~Planner() = default;
  Planner(PgQuery__ParseResult* tree, PgQuery__SelectStmt* s, const std::vector<std::string>& keys)
      : tree_(tree), s_(s), keys_(keys), n_(static_cast<int>(s->n_target_list)) {}

  std::shared_ptr<const merge::MergePlan> run() {
    plan_ = std::make_shared<merge::MergePlan>();
    for (int i = 0; i < n_; ++i) {
      star_before_.push_back(star_seen_ || is_star(val(i)));
      star_seen_ = star_before_.back();
    }
    for (int i = 0; i < n_; ++i) targets_.push_back(s_->target_list[i]);
    if (s_->n_window_clause || any_target(is_window)) {
      fail("window functions");
    } else if (contains_volatile_order()) {
      fail("ORDER BY a volatile function");
    } else if (s_->limit_option == PG_QUERY__LIMIT_OPTION__LIMIT_OPTION_WITH_TIES) {
      fail("FETCH FIRST ... WITH TIES");
    } else if (aggregate_query()) {
      plan_aggregate();
    } else {
      plan_rows();
    }
    if (plan_->unsupported.empty()) deparse();
    // The relations it reads: a computed text column's collation comes from them.
    ast::walk(&s_->base, [&](const ProtobufCMessage* m) {
      if (m->descriptor == &pg_query__range_var__descriptor)
        plan_->relations.emplace_back(reinterpret_cast<const PgQuery__RangeVar*>(m)->relname);
    });
    return plan_;
  }

 private:
  Node* val(int i) const {
    const Node* t = s_->target_list[i];
    return t->node_case == PG_QUERY__NODE__NODE_RES_TARGET ? t->res_target->val : nullptr;
  }
  const char* alias(int i) const {
    const Node* t = s_->target_list[i];
    return t->node_case == PG_QUERY__NODE__NODE_RES_TARGET ? t->res_target->name : nullptr;
  }
  bool any_target(bool (*pred)(const PgQuery__FuncCall*)) const {
    for (int i = 0; i < n_; ++i)
      if (contains(val(i), pred)) return true;
    return false;
  }
  bool contains_volatile_order() const {
    for (size_t i = 0; i < s_->n_sort_clause; ++i)
      if (contains(s_->sort_clause[i], is_volatile)) return true;
    return false;
  }
  bool aggregate_query() const {
    if (s_->n_group_clause || s_->having_clause) return true;
    for (int i = 0; i < n_; ++i)
      if (val(i) && contains_aggregate(val(i))) return true;
    for (size_t i = 0; i < s_->n_sort_clause; ++i)
      if (contains_aggregate(s_->sort_clause[i])) return true;
    return false;
  }

  void fail(std::string what, std::string hint = {}) {
    if (!plan_->unsupported.empty()) return;
    plan_->unsupported = std::move(what);
    plan_->hint = hint.empty() ? "add the shard key to the WHERE clause so one shard answers, or "
                                 "a /* pgshard: shard=NAME */ hint"
                               : std::move(hint);
  }

  // ---- new parse-tree nodes, owned here until the shard statement is deparsed ----
  Node* wrap_res_target(Node* v, const char* name) {
    auto& rt = res_targets_.emplace_back();
    rt = PG_QUERY__RES_TARGET__INIT;
    rt.val = v;
    rt.name = name ? strings_.emplace_back(name).data() : const_cast<char*>("");
    auto& n = nodes_.emplace_back();
    n = PG_QUERY__NODE__INIT;
    n.node_case = PG_QUERY__NODE__NODE_RES_TARGET;
    n.res_target = &rt;
    return &n;
  }
  Node* string_node(const char* text) {
    auto& str = pg_strings_.emplace_back();
    str = PG_QUERY__STRING__INIT;
    str.sval = strings_.emplace_back(text).data();
    auto& n = nodes_.emplace_back();
    n = PG_QUERY__NODE__INIT;
    n.node_case = PG_QUERY__NODE__NODE_STRING;
    n.string = &str;
    return &n;
  }
  Node* renamed_func(const PgQuery__FuncCall* f, const char* name) {
    Node* sn = string_node(name);
    auto& names = arrays_.emplace_back(1, sn);
    auto& fc = funcs_.emplace_back(*f);  // same arguments, FILTER and DISTINCT
    fc.funcname = names.data();
    fc.n_funcname = 1;
    auto& n = nodes_.emplace_back();
    n = PG_QUERY__NODE__INIT;
    n.node_case = PG_QUERY__NODE__NODE_FUNC_CALL;
    n.func_call = &fc;
    return &n;
  }
  Node* int_const(int64_t v) {
    auto& c = consts_.emplace_back();
    c = PG_QUERY__A__CONST__INIT;
    auto& f = floats_.emplace_back();
    f = PG_QUERY__FLOAT__INIT;
    f.fval = strings_.emplace_back(std::to_string(v)).data();
    c.val_case = PG_QUERY__A__CONST__VAL_FVAL;
    c.fval = &f;
    auto& n = nodes_.emplace_back();
    n = PG_QUERY__NODE__INIT;
    n.node_case = PG_QUERY__NODE__NODE_A_CONST;
    n.a_const = &c;
    return &n;
  }
  // (v)::bigint — parameters in LIMIT + OFFSET need a type the sum can resolve.
  Node* cast_int8(Node* v) {
    auto& names = arrays_.emplace_back();
    names.push_back(string_node("pg_catalog"));
    names.push_back(string_node("int8"));
    auto& tn = type_names_.emplace_back();
    tn = PG_QUERY__TYPE_NAME__INIT;
    tn.names = names.data();
    tn.n_names = names.size();
    tn.typemod = -1;
    auto& tc = casts_.emplace_back();
    tc = PG_QUERY__TYPE_CAST__INIT;
    tc.arg = v;
    tc.type_name = &tn;
    auto& n = nodes_.emplace_back();
    n = PG_QUERY__NODE__INIT;
    n.node_case = PG_QUERY__NODE__NODE_TYPE_CAST;
    n.type_cast = &tc;
    return &n;
  }
  Node* plus(Node* l, Node* r) {
    auto& names = arrays_.emplace_back(1, string_node("+"));
    auto& e = exprs_.emplace_back();
    e = PG_QUERY__A__EXPR__INIT;
    e.kind = PG_QUERY__A__EXPR__KIND__AEXPR_OP;
    e.name = names.data();
    e.n_name = 1;
    e.lexpr = l;
    e.rexpr = r;
    auto& n = nodes_.emplace_back();
    n = PG_QUERY__NODE__INIT;
    n.node_case = PG_QUERY__NODE__NODE_A_EXPR;
    n.a_expr = &e;
    return &n;
  }
  // Appends a helper column to the shard statement; returns its shard column.
  int add_hidden(Node* v) {
    targets_.push_back(wrap_res_target(v, nullptr));
    ++plan_->hidden;
    return static_cast<int>(targets_.size()) - 1;
  }

  // The visible column an ORDER BY / GROUP BY item names: an ordinal, an output name, or
  // the same expression as a select-list entry. -1 if none (or its position is unknown
  // because a * comes before it).
  int visible_column(const Node* e) const {
    if (auto k = const_int(e)) return *k >= 1 ? static_cast<int>(*k - 1) : -2;
    auto name = last_name(e);
    if (!name.empty() && e->column_ref->n_fields == 1)
      for (int i = 0; i < n_; ++i)
        if (!star_before_[i] && alias(i) && alias(i)[0] && name == alias(i)) return i;
    for (int i = 0; i < n_; ++i)
      if (!star_before_[i] && val(i) && ast::equal(&val(i)->base, &e->base)) return i;
    return -1;
  }

  std::optional<merge::SortKey> sort_key(const PgQuery__SortBy* sb, int column) {
    if (sb->sortby_dir == PG_QUERY__SORT_BY_DIR__SORTBY_USING) {
      fail("ORDER BY ... USING");
      return std::nullopt;
    }
    merge::SortKey k;
    k.column = column;
    k.descending = sb->sortby_dir == PG_QUERY__SORT_BY_DIR__SORTBY_DESC;
    k.nulls_first =
        sb->sortby_nulls == PG_QUERY__SORT_BY_NULLS__SORTBY_NULLS_FIRST ||
        (sb->sortby_nulls != PG_QUERY__SORT_BY_NULLS__SORTBY_NULLS_LAST && k.descending);
    const Node* e = sb->node;
    if (e && e->node_case == PG_QUERY__NODE__NODE_COLLATE_CLAUSE) {
      const auto* cc = e->collate_clause;
      auto coll = cc->n_collname ? ast::str_of(cc->collname[cc->n_collname - 1]) : "";
      if (coll != "C" && coll != "POSIX") {
        fail("ORDER BY ... COLLATE \"" + std::string(coll) + "\"",
             "only the database collation and COLLATE \"C\" are merged");
        return std::nullopt;
      }
      k.c_collation = true;
    }
    return k;
  }

  // ---- plain rows: ORDER BY, DISTINCT, LIMIT/OFFSET ----
  void plan_rows() {
    for (size_t i = 0; i < s_->n_sort_clause; ++i) {
      const Node* item = s_->sort_clause[i];
      if (item->node_case != PG_QUERY__NODE__NODE_SORT_BY) return fail("this ORDER BY form");
      const auto* sb = item->sort_by;
      int col = visible_column(sb->node);
      if (col == -2) return fail("ORDER BY position 0");
      if (col < 0) col = -(add_hidden(sb->node) - n_) - 1;
      auto key = sort_key(sb, col);
      if (!key) return;
      plan_->order.push_back(*key);
    }
    if (s_->n_distinct_clause) {
      bool plain = true;
      for (size_t i = 0; i < s_->n_distinct_clause; ++i)
        if (s_->distinct_clause[i] &&
            s_->distinct_clause[i]->node_case != PG_QUERY__NODE__NODE__NOT_SET)
          plain = false;
      if (plain) {
        plan_->distinct = true;
        plan_->distinct_within_shard = key_selected();
        if (auto c = visible_collation(); c && !plan_->distinct_within_shard)
          return fail("DISTINCT under COLLATE \"" + *c +
                      "\" (pgshard cannot tell whether it is deterministic)");
      } else {
        // DISTINCT ON (a, b) ORDER BY a, b, ...: the merged stream is sorted on the
        // DISTINCT ON keys, so the first row of each run is kept.
        const size_t n = s_->n_distinct_clause;
        if (s_->n_sort_clause < n) return fail("DISTINCT ON without a matching ORDER BY");
        for (size_t i = 0; i < n; ++i) {
          const Node* d = s_->distinct_clause[i];
          const Node* o = s_->sort_clause[i]->sort_by->node;
          int dc = visible_column(d), oc = visible_column(o);
          bool same = (dc >= 0 && dc == oc) || ast::equal(&d->base, &o->base);
          if (!same) return fail("DISTINCT ON keys that are not the leading ORDER BY keys");
        }
        plan_->distinct_on = static_cast<int>(n);
      }
    }
    if (!bound(s_->limit_count, plan_->limit) || !bound(s_->limit_offset, plan_->offset)) return;
    // Each shard returns its first LIMIT + OFFSET rows; pgshard skips OFFSET of the merge.
    if (plan_->offset.present()) {
      new_offset_ = nullptr;
      if (plan_->limit.value && plan_->offset.value)
        new_limit_ = int_const(*plan_->limit.value + *plan_->offset.value);
      else if (plan_->limit.present())
        new_limit_ = plus(cast_int8(s_->limit_count), cast_int8(s_->limit_offset));
      rewrite_limit_ = true;
    }
  }

  bool bound(const Node* e, merge::Bound& b) {
    if (!e) return true;
    if (e->node_case == PG_QUERY__NODE__NODE_TYPE_CAST) e = e->type_cast->arg;
    if (e->node_case == PG_QUERY__NODE__NODE_A_CONST && e->a_const->isnull) return true;
    if (auto v = const_int(e)) {
      b.value = *v;
      return true;
    }
    if (e->node_case == PG_QUERY__NODE__NODE_PARAM_REF) {
      b.param = e->param_ref->number;
      return true;
    }
    fail("LIMIT/OFFSET with an expression", "use a constant or a parameter");
    return false;
  }

  // ---- aggregates and groups ----
  // A plain reference to a shard-key column (each of its values lives on one shard).
  bool key_column(const Node* e) const {
    auto name = last_name(e);
    if (name.empty() || is_star(e)) return false;
    for (const auto& k : keys_)
      if (name == k) return true;
    return false;
  }
  // A COLLATE in `e` naming a collation other than the byte-order and default ones: it may
  // be nondeterministic (equal values with other bytes), which pgshard cannot tell.
  static std::optional<std::string> unknown_collation(const Node* e) {
    std::optional<std::string> found;
    if (!e) return found;
    ast::walk(&e->base, [&](const ProtobufCMessage* m) {
      if (m->descriptor != &pg_query__collate_clause__descriptor || found) return;
      const auto* cc = reinterpret_cast<const PgQuery__CollateClause*>(m);
      const auto name = cc->n_collname ? ast::str_of(cc->collname[cc->n_collname - 1]) : "";
      if (name != "C" && name != "POSIX" && name != "default" && name != "ucs_basic")
        found = std::string(name);
    });
    return found;
  }
  // The first such collation in the visible columns (DISTINCT).
  std::optional<std::string> visible_collation() const {
    for (int i = 0; i < n_; ++i)
      if (auto c = unknown_collation(val(i))) return c;
    return std::nullopt;
  }

  // Whether DISTINCT rows hold a shard-key column among the visible ones.
  bool key_selected() const {
    for (int i = 0; i < n_; ++i)
      if (key_column(val(i))) return true;
    return false;
  }

  bool key_argument(const PgQuery__FuncCall* f) const {
    if (f->n_args != 1) return false;
    auto name = last_name(f->args[0]);
    for (const auto& k : keys_)
      if (!name.empty() && name == k) return true;
    return false;
  }

  // Adds the aggregate `node` (a FuncCall) with its partial columns; for a visible target
  // `column` is its position, else the partial becomes a hidden column. Returns the output.
  int add_aggregate(Node* node, int column) {
    bool cast = false;
    const auto* f = aggregate_of(node, &cast);
    for (std::size_t k = 0; k < agg_nodes_.size(); ++k)
      if (column < 0 && ast::equal(&agg_nodes_[k]->base, &node->base))
        for (std::size_t o = 0; o < plan_->outputs.size(); ++o)
          if (plan_->outputs[o].kind == Output::Kind::kAggregate &&
              plan_->outputs[o].column == static_cast<int>(k))
            return static_cast<int>(o);
    const std::string name(func_name(f));
    Aggregate a;
    if (f->agg_within_group) {
      fail(name + "() WITHIN GROUP");
      return -1;
    }
    Node* partial = node;  // what the shards compute
    if (cast) {
      // Counts and sums add up; the cast applies to the total only: rounding or converting
      // each shard's part would not give the cast of the total (sum(numeric)::int).
      a.kind = name == "avg" ? Aggregate::Kind::kAvg : Aggregate::Kind::kSum;
      auto* tn = node->type_cast->type_name;
      a.cast_type = cast_type_oid(ast::str_of(tn->names[tn->n_names - 1]));
      if (auto pm = numeric_typmod(tn)) {
        a.precision = pm->first;
        a.scale = pm->second;
        a.typmod = ((pm->first << 16) | pm->second) + 4;  // VARHDRSZ, as numeric stores it
      }
      partial = node->type_cast->arg;
      if (column >= 0)
        targets_[static_cast<std::size_t>(column)] = wrap_res_target(partial, alias(column));
    } else if (name == "count") {
      a.kind = Aggregate::Kind::kCount;
    } else if (name == "sum") {
      a.kind = Aggregate::Kind::kSum;
    } else if (name == "avg") {
      a.kind = Aggregate::Kind::kAvg;
    } else if (name == "min") {
      a.kind = Aggregate::Kind::kMin;
    } else if (name == "max") {
      a.kind = Aggregate::Kind::kMax;
    } else if (name == "bool_and" || name == "every") {
      a.kind = Aggregate::Kind::kBoolAnd;
    } else if (name == "bool_or") {
      a.kind = Aggregate::Kind::kBoolOr;
    } else {
      fail(name + "()", "add the shard key to the WHERE clause, or compute " + name +
                            "() from rows read with a shard hint");
      return -1;
    }
    // DISTINCT per shard is DISTINCT overall only for the shard key (each key value lives on
    // one shard); min/max ignore DISTINCT.
    if (f->agg_distinct && a.kind != Aggregate::Kind::kMin && a.kind != Aggregate::Kind::kMax &&
        !key_argument(f)) {
      fail(name + "(DISTINCT ...) over a column other than the shard key",
           "count distinct values per shard with a shard hint, or group by the shard key");
      return -1;
    }
    if (a.kind == Aggregate::Kind::kAvg) {
      // avg(x) = sum(x) / count(x) over all shards.
      Node* sum = renamed_func(f, "sum");
      const char* name_of_avg =
          column >= 0 && alias(column) && alias(column)[0] ? alias(column) : "avg";
      Node* target = wrap_res_target(sum, name_of_avg);
      if (column >= 0)
        targets_[static_cast<std::size_t>(column)] = target;
      else
        column = add_hidden(sum);
      a.column = column;
      a.count_column = add_hidden(renamed_func(f, "count"));
    } else {
      a.column = column >= 0 ? column : add_hidden(partial);
    }
    plan_->aggregates.push_back(a);
    agg_nodes_.push_back(node);
    plan_->outputs.push_back(
        {Output::Kind::kAggregate, static_cast<int>(plan_->aggregates.size()) - 1});
    return static_cast<int>(plan_->outputs.size()) - 1;
  }

  void plan_aggregate() {
    plan_->aggregate = true;
    for (int i = 0; i < n_; ++i) {
      Node* v = val(i);
      if (!v || is_star(v)) return fail("SELECT * with GROUP BY or aggregates");
      bool cast = false;
      if (aggregate_of(v, &cast)) {
        if (add_aggregate(v, i) < 0) return;
        // add_aggregate appended the output; keep outputs in select-list order.
        continue;
      }
      if (contains_aggregate(v))
        return fail("expressions over aggregate results",
                    "select the aggregates themselves and combine them in the application");
      plan_->outputs.push_back({Output::Kind::kConstant, i});
    }
    for (size_t g = 0; g < s_->n_group_clause; ++g) {
      Node* item = s_->group_clause[g];
      if (item->node_case == PG_QUERY__NODE__NODE_GROUPING_SET)
        return fail("GROUPING SETS, ROLLUP and CUBE");
      int col = visible_column(item);
      if (col == -2 || col >= n_) return fail("GROUP BY position out of range");
      if (key_column(col >= 0 ? val(col) : item)) plan_->groups_within_shard = true;
      if (const auto c = unknown_collation(col >= 0 ? val(col) : item))
        group_collations_.push_back(*c);
      if (col >= 0) {
        auto& o = plan_->outputs[static_cast<std::size_t>(col)];
        if (o.kind == Output::Kind::kAggregate) return fail("aggregates in GROUP BY");
        o.kind = Output::Kind::kGroupKey;
        plan_->group_columns.push_back(col);
      } else {
        int shard_col = add_hidden(item);
        plan_->group_columns.push_back(shard_col);
        hidden_groups_.emplace_back(item, shard_col);
      }
    }
    if (s_->group_distinct) return fail("GROUP BY DISTINCT");
    if (!plan_->groups_within_shard && !group_collations_.empty())
      return fail("GROUP BY under COLLATE \"" + group_collations_.front() +
                  "\" (pgshard cannot tell whether it is deterministic)");
    if (s_->having_clause) {
      Predicate p;
      if (!predicate(s_->having_clause, p)) return;
      plan_->having = std::move(p);
    }
    for (size_t i = 0; i < s_->n_sort_clause; ++i) {
      const Node* item = s_->sort_clause[i];
      if (item->node_case != PG_QUERY__NODE__NODE_SORT_BY) return fail("this ORDER BY form");
      const auto* sb = item->sort_by;
      Node* e = sb->node;
      if (e && e->node_case == PG_QUERY__NODE__NODE_COLLATE_CLAUSE) e = e->collate_clause->arg;
      int out = operand_output(e);
      if (out < 0) {
        if (plan_->unsupported.empty())
          fail("ORDER BY an expression that is neither selected, grouped nor aggregated");
        return;
      }
      auto key = sort_key(sb, out);
      if (!key) return;
      plan_->order.push_back(*key);
    }
    if (s_->n_distinct_clause) {
      for (size_t i = 0; i < s_->n_distinct_clause; ++i)
        if (s_->distinct_clause[i] &&
            s_->distinct_clause[i]->node_case != PG_QUERY__NODE__NODE__NOT_SET)
          return fail("DISTINCT ON with aggregates");
      plan_->distinct = true;
      plan_->distinct_within_shard = key_selected();
      if (auto c = visible_collation(); c && !plan_->distinct_within_shard)
        return fail("DISTINCT under COLLATE \"" + *c +
                    "\" (pgshard cannot tell whether it is deterministic)");
    }
    if (!bound(s_->limit_count, plan_->limit) || !bound(s_->limit_offset, plan_->offset)) return;
    // The shards return every partial group; the rest happens in pgshard.
    strip_for_aggregate_ = true;
  }

  // The merged-row column an expression in HAVING / ORDER BY stands for: a select-list
  // entry, a group key, or an aggregate (added as a hidden partial when not selected).
  int operand_output(Node* e) {
    if (!e) return -1;
    int col = visible_column(e);
    if (col >= 0 && col < n_) return col;
    if (bool cast = false; aggregate_of(e, &cast)) return add_aggregate(e, -1);
    for (const auto& [node, shard_col] : hidden_groups_)
      if (ast::equal(&node->base, &e->base)) {
        for (std::size_t o = 0; o < plan_->outputs.size(); ++o)
          if (plan_->outputs[o].kind == Output::Kind::kGroupKey &&
              plan_->outputs[o].column == shard_col)
            return static_cast<int>(o);
        plan_->outputs.push_back({Output::Kind::kGroupKey, shard_col});
        return static_cast<int>(plan_->outputs.size()) - 1;
      }
    return -1;
  }

  bool constant(const Node* e, std::optional<std::string>& out) {
    if (e && e->node_case == PG_QUERY__NODE__NODE_TYPE_CAST) e = e->type_cast->arg;
    if (!e || e->node_case != PG_QUERY__NODE__NODE_A_CONST) return false;
    const auto* c = e->a_const;
    if (c->isnull) {
      out.reset();
      return true;
    }
    switch (c->val_case) {
      case PG_QUERY__A__CONST__VAL_IVAL:
        out = std::to_string(c->ival->ival);
        return true;
      case PG_QUERY__A__CONST__VAL_FVAL:
        out = c->fval->fval;
        return true;
      case PG_QUERY__A__CONST__VAL_SVAL:
        out = c->sval->sval;
        return true;
      case PG_QUERY__A__CONST__VAL_BOOLVAL:
        out = c->boolval->boolval ? "t" : "f";
        return true;
      default:
        return false;
    }
  }

  bool side(Node* e, int& value, std::optional<std::string>& c) {
    if (constant(e, c)) return true;
    value = operand_output(e);
    if (value >= 0) return true;
    if (plan_->unsupported.empty()) fail("this HAVING expression");
    return false;
  }

  bool predicate(Node* e, Predicate& p) {
    if (e->node_case == PG_QUERY__NODE__NODE_BOOL_EXPR) {
      const auto* b = e->bool_expr;
      p.kind = b->boolop == PG_QUERY__BOOL_EXPR_TYPE__AND_EXPR  ? Predicate::Kind::kAnd
               : b->boolop == PG_QUERY__BOOL_EXPR_TYPE__OR_EXPR ? Predicate::Kind::kOr
                                                                : Predicate::Kind::kNot;
      for (size_t i = 0; i < b->n_args; ++i) {
        Predicate c;
        if (!predicate(b->args[i], c)) return false;
        p.children.push_back(std::move(c));
      }
      return true;
    }
    if (e->node_case == PG_QUERY__NODE__NODE_NULL_TEST) {
      const auto* t = e->null_test;
      p.kind = t->nulltesttype == PG_QUERY__NULL_TEST_TYPE__IS_NULL ? Predicate::Kind::kIsNull
                                                                    : Predicate::Kind::kIsNotNull;
      return side(t->arg, p.left_value, p.left_const);
    }
    if (e->node_case == PG_QUERY__NODE__NODE_A_EXPR &&
        e->a_expr->kind == PG_QUERY__A__EXPR__KIND__AEXPR_OP && e->a_expr->n_name == 1 &&
        e->a_expr->lexpr) {
      const auto op = ast::str_of(e->a_expr->name[0]);
      p.kind = Predicate::Kind::kCompare;
      if (op == "=")
        p.op = Predicate::Op::kEq;
      else if (op == "<>" || op == "!=")
        p.op = Predicate::Op::kNe;
      else if (op == "<")
        p.op = Predicate::Op::kLt;
      else if (op == "<=")
        p.op = Predicate::Op::kLe;
      else if (op == ">")
        p.op = Predicate::Op::kGt;
      else if (op == ">=")
        p.op = Predicate::Op::kGe;
      else {
        fail("HAVING with operator " + std::string(op) + "");
        return false;
      }
      return side(e->a_expr->lexpr, p.left_value, p.left_const) &&
             side(e->a_expr->rexpr, p.right_value, p.right_const);
    }
    fail("this HAVING expression",
         "use comparisons of aggregates and grouped columns with constants, AND, OR, NOT");
    return false;
  }

  // ---- the shard statement ----
  void deparse() {
    const bool targets_changed = targets_.size() != static_cast<std::size_t>(n_) || [&] {
      for (int i = 0; i < n_; ++i)
        if (targets_[static_cast<std::size_t>(i)] != s_->target_list[i]) return true;
      return false;
    }();
    if (!targets_changed && !rewrite_limit_ && !strip_for_aggregate_) return;
    // Point the tree at the shard's version, pack and deparse it, then restore it.
    auto saved = *s_;
    s_->target_list = targets_.data();
    s_->n_target_list = targets_.size();
    if (rewrite_limit_) {
      s_->limit_count = new_limit_;
      s_->limit_offset = new_offset_;
    }
    if (strip_for_aggregate_) {
      s_->having_clause = nullptr;
      s_->n_sort_clause = 0;
      s_->sort_clause = nullptr;
      s_->limit_count = nullptr;
      s_->limit_offset = nullptr;
      s_->limit_option = PG_QUERY__LIMIT_OPTION__LIMIT_OPTION_DEFAULT;
      s_->n_distinct_clause = 0;
      s_->distinct_clause = nullptr;
    }
    auto sql = ast::deparse(tree_);
    *s_ = saved;
    if (!sql)
      fail("a statement pgshard cannot rewrite for the shards");
    else
      plan_->shard_sql = std::move(*sql);
  }

  PgQuery__ParseResult* tree_;
  PgQuery__SelectStmt* s_;
  const std::vector<std::string>& keys_;
  const int n_;
  std::shared_ptr<merge::MergePlan> plan_;
  std::vector<bool> star_before_;
  bool star_seen_ = false;
  std::vector<Node*> targets_;  // the shard statement's select list
  std::vector<Node*> agg_nodes_;
  std::vector<std::pair<Node*, int>> hidden_groups_;
  std::vector<std::string> group_collations_;  // COLLATE names in GROUP BY keys
  bool rewrite_limit_ = false;
  bool strip_for_aggregate_ = false;
  Node* new_limit_ = nullptr;
  Node* new_offset_ = nullptr;
  std::deque<Node> nodes_;
  std::deque<PgQuery__ResTarget> res_targets_;
  std::deque<PgQuery__FuncCall> funcs_;
  std::deque<PgQuery__String> pg_strings_;
  std::deque<PgQuery__AConst> consts_;
  std::deque<PgQuery__Float> floats_;
  std::deque<PgQuery__AExpr> exprs_;
  std::deque<PgQuery__TypeName> type_names_;
  std::deque<PgQuery__TypeCast> casts_;
  std::deque<std::vector<Node*>> arrays_;
  std::deque<std::string> strings_;
};

}  // namespace

std::shared_ptr<const merge::MergePlan> plan_merge(PgQuery__ParseResult* tree,
                                                   PgQuery__SelectStmt* select,
                                                   const std::vector<std::string>& key_columns) {
  return Planner(tree, select, key_columns).run();
}

}  // namespace pgshard::router
