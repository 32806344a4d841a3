// The multi-shard row merger (see merger.hpp).
#include "proxy/merge/merger.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "protocol/codec.hpp"

namespace pgshard::merge {

namespace proto = protocol;

namespace {

const Collation& c_collation() {
  static const Collation c;
  return c;
}

std::string type_name(int32_t type) {
  switch (type) {
    case oid::kInterval:
      return "interval";
    case 114:
      return "json";
    case 3802:
      return "jsonb";
    case 2249:
      return "record";
    default:
      return "type " + std::to_string(type);
  }
}

bool is_integer(int32_t t) {
  return t == oid::kInt2 || t == oid::kInt4 || t == oid::kInt8 || t == oid::kOid;
}

constexpr std::string_view kFewerColumns =
    "the shards returned fewer columns than pgshard asked for";

}  // namespace

Merger::Merger(const MergePlan& plan, int shards, const Collation& collation,
               std::optional<int64_t> limit, std::optional<int64_t> offset)
    : plan_(plan),
      collation_(collation),
      limit_(limit),
      offset_(offset),
      shards_(shards),
      ended_(static_cast<std::size_t>(shards), false),
      heads_(static_cast<std::size_t>(shards)) {
  if (limit_ && *limit_ <= 0) complete_ = true;
}

void Merger::fail(std::string message, std::string sqlstate) {
  if (error_.empty()) {
    error_ = std::move(message);
    error_code_ = std::move(sqlstate);
  }
  complete_ = true;
}

Merger::Column Merger::column_of(const proto::FieldDescription& f,
                                 const ColumnCollations* collations, bool schema_has_others) const {
  Column col;
  col.type = f.type_oid;
  col.format = f.format;
  if (f.type_oid != oid::kText && f.type_oid != oid::kVarchar && f.type_oid != oid::kBpchar)
    return col;
  if (f.table_oid != 0 && f.column > 0) {
    if (!collations) return col;
    auto it = collations->columns.find({static_cast<uint32_t>(f.table_oid), f.column});
    if (it == collations->columns.end()) return col;  // the database's collation
    col.problem = it->second.problem;
    col.deterministic = it->second.deterministic;
    col.collation = it->second.libc ? it->second.libc.get() : &c_collation();
    return col;
  }
  // A computed column takes its collation from what it is computed from: unknown to
  // pgshard, but the database's when no column has another. Equal values under a
  // nondeterministic one may differ in bytes: not grouped when the schema has any.
  if (collations)
    for (const auto& [at, entry] : collations->columns)
      if (!entry.deterministic) col.deterministic = false;
  if (schema_has_others)
    col.problem =
        "ordering computed text across shards when the schema has columns with "
        "other collations than the database's";
  return col;
}

std::optional<std::string> Merger::describe(std::string_view body, std::string* error,
                                            const ColumnCollations* collations) {
  auto desc = proto::RowDescription::parse(body);
  if (!desc) {
    *error = "malformed RowDescription from a shard";
    return std::nullopt;
  }
  described_ = true;
  const int n = static_cast<int>(desc->fields.size());
  shard_columns_.clear();
  bool others = false;
  for (const auto& r : plan_.relations)
    others = others || (collations && collations->relations.contains(r));
  for (const auto& f : desc->fields) shard_columns_.push_back(column_of(f, collations, others));
  visible_ = n - plan_.hidden;
  auto bad = [&](std::string message) -> std::optional<std::string> {
    *error = std::move(message);
    return std::nullopt;
  };
  if (visible_ < 0) return bad(std::string(kFewerColumns));
  order_ = plan_.order;
  for (auto& k : order_)
    if (k.column < 0) k.column = visible_ + (-k.column - 1);
  std::string problem = plan_.aggregate ? describe_outputs(n) : std::string();
  if (problem.empty()) problem = check_equality(n);
  if (problem.empty()) problem = check_order(plan_.aggregate ? output_columns_ : shard_columns_);
  if (!problem.empty()) return bad(std::move(problem));
  std::string frame;
  client_description(*desc).write(frame);
  return frame.substr(5);
}

std::string Merger::describe_outputs(int n) {
  // The merged row is the plan's outputs, the client's columns first.
  if (plan_.outputs.size() < static_cast<std::size_t>(visible_))
    return "the merge plan has fewer outputs than the client's columns";
  output_columns_.clear();
  for (const auto& o : plan_.outputs) {
    if (o.kind != Output::Kind::kAggregate) {
      if (o.column >= n) return std::string(kFewerColumns);
      output_columns_.push_back(shard_columns_[static_cast<std::size_t>(o.column)]);
      continue;
    }
    const auto& a = plan_.aggregates[static_cast<std::size_t>(o.column)];
    if (a.column >= n || a.count_column >= n) return std::string(kFewerColumns);
    Column partial = shard_columns_[static_cast<std::size_t>(a.column)];
    if (auto problem = merge_partial(a, partial); !problem.empty()) return problem;
    output_columns_.push_back(partial);
  }
  return {};
}

std::string Merger::merge_partial(const Aggregate& a, Column& partial) {
  const int32_t t = partial.type;
  switch (a.kind) {
    case Aggregate::Kind::kCount:
      if (t != oid::kInt8) return "count() from a shard is not bigint";
      break;
    case Aggregate::Kind::kSum:
      if (!is_integer(t) && t != oid::kNumeric && t != oid::kFloat4 && t != oid::kFloat8)
        return "sum() over " + type_name(t) + " across shards is not supported";
      // PostgreSQL adds real values in single precision, rounding after each row: the
      // shards' rounded parts added again give another total.
      if (t == oid::kFloat4)
        return "sum() over real across shards is not exact (cast the argument to "
               "double precision: sum(x::float8))";
      if (a.cast_type != 0) partial.type = a.cast_type;  // the merge casts the total
      break;
    case Aggregate::Kind::kAvg:
      if (t != oid::kInt8 && t != oid::kNumeric && t != oid::kFloat4 && t != oid::kFloat8)
        return "avg() over " + type_name(t) + " across shards is not supported";
      // PostgreSQL adds real values as double precision for avg(); the shards' sum()
      // of them is real, rounded on each shard: the quotient would differ.
      if (t == oid::kFloat4)
        return "avg() over real across shards is not exact (cast the argument to "
               "double precision: avg(x::float8) is the value PostgreSQL computes)";
      partial.type = (t == oid::kFloat4 || t == oid::kFloat8) ? oid::kFloat8 : oid::kNumeric;
      if (a.cast_type != 0) partial.type = a.cast_type;  // the merge casts the average
      break;
    case Aggregate::Kind::kMin:
    case Aggregate::Kind::kMax:
      if (!orderable(t))
        return "min()/max() over " + type_name(t) + " across shards is not supported";
      if (!partial.problem.empty()) return "min()/max(): " + partial.problem;
      break;
    case Aggregate::Kind::kBoolAnd:
    case Aggregate::Kind::kBoolOr:
      if (t != oid::kBool) return "bool_and()/bool_or() from a shard is not boolean";
      break;
  }
  return {};
}

std::string Merger::check_equality(int n) {
  // Under a nondeterministic collation equal values may differ in bytes: groups and
  // DISTINCT rows from different shards would not meet.
  std::vector<int> equal_columns = plan_.group_columns;
  for (int i = 0; plan_.distinct && i < visible_; ++i) equal_columns.push_back(i);
  for (int c : equal_columns)
    if (c >= 0 && c < n && !shard_columns_[static_cast<std::size_t>(c)].deterministic)
      return "GROUP BY or DISTINCT on a column with a nondeterministic collation";
  // Groups and DISTINCT rows that may span shards meet only for types whose equality
  // pgshard reproduces (exact_group_equality); keys holding the shard key never span.
  exact_groups_ = !plan_.groups_within_shard;
  exact_distinct_ = plan_.distinct && !plan_.distinct_within_shard;
  if (exact_groups_)
    for (int c : plan_.group_columns)
      if (c >= 0 && c < n) {
        const auto& col = shard_columns_[static_cast<std::size_t>(c)];
        if (!exact_group_equality(col.type, col.format))
          return "GROUP BY on values of " + type_name(col.type) +
                 " (whose equality is not their bytes) across shards";
      }
  if (exact_distinct_)
    for (int i = 0; i < visible_; ++i) {
      const auto& col = plan_.aggregate && i < static_cast<int>(output_columns_.size())
                            ? output_columns_[static_cast<std::size_t>(i)]
                            : shard_columns_[static_cast<std::size_t>(i)];
      if (!exact_group_equality(col.type, col.format))
        return "DISTINCT on values of " + type_name(col.type) +
               " (whose equality is not their bytes) across shards";
    }
  return {};
}

std::string Merger::check_order(const std::vector<Column>& sort_columns) const {
  for (const auto& k : order_) {
    if (k.column >= static_cast<int>(sort_columns.size())) return std::string(kFewerColumns);
    const auto& col = sort_columns[static_cast<std::size_t>(k.column)];
    if (!orderable(col.type))
      return "ordering values of " + type_name(col.type) + " across shards is not supported";
    if (!k.c_collation && !col.problem.empty()) return col.problem;
  }
  return {};
}

proto::RowDescription Merger::client_description(const proto::RowDescription& desc) const {
  // The client's columns: the visible ones, with the types of computed results.
  proto::RowDescription out;
  for (int i = 0; i < visible_; ++i) {
    auto f = desc.fields[static_cast<std::size_t>(i)];
    if (plan_.aggregate && i < static_cast<int>(output_columns_.size()) &&
        output_columns_[static_cast<std::size_t>(i)].type != f.type_oid) {
      f.type_oid = output_columns_[static_cast<std::size_t>(i)].type;
      f.type_size = f.type_oid == oid::kFloat8 || f.type_oid == oid::kInt8   ? 8
                    : f.type_oid == oid::kFloat4 || f.type_oid == oid::kInt4 ? 4
                    : f.type_oid == oid::kInt2                               ? 2
                                                                             : -1;
      f.type_modifier = -1;
    }
    if (plan_.aggregate && i < static_cast<int>(plan_.outputs.size()) &&
        plan_.outputs[static_cast<std::size_t>(i)].kind == Output::Kind::kAggregate) {
      const auto& a = plan_.aggregates[static_cast<std::size_t>(
          plan_.outputs[static_cast<std::size_t>(i)].column)];
      if (a.typmod >= 0) f.type_modifier = a.typmod;  // the shards summed without the cast's
    }
    out.fields.push_back(f);
  }
  return out;
}

int Merger::wants() const {
  if (complete_) return -1;
  for (int s = 0; s < shards_; ++s) {
    if (ended_[static_cast<std::size_t>(s)]) continue;
    if (plan_.aggregate || order_.empty() || !heads_[static_cast<std::size_t>(s)].present) return s;
  }
  return -1;
}

namespace {

// Appends one value to a GROUP BY / DISTINCT key: values PostgreSQL calls equal give equal
// keys (merge::exact_group_key when keys meet across shards, else merge::group_key), NULLs
// are one group. False when an exact key cannot be made of the value.
bool append_key(std::string& key, int32_t type, int16_t format, std::optional<std::string_view> v,
                bool exact) {
  if (!v) {
    key += 'N';
    return true;
  }
  std::string canon;
  if (exact) {
    auto k = exact_group_key(type, format, *v);
    if (!k) return false;
    canon = std::move(*k);
  } else {
    canon = group_key(type, format, *v);
  }
  key += 'V' + std::to_string(canon.size()) + ':' + canon;
  return true;
}

}  // namespace

void Merger::add_row(int shard, std::string_view body) {
  if (complete_) return;
  if (!plan_.aggregate && !order_.empty()) {
    // Kept as sent (the slot's buffers are reused); its columns are found in the copy.
    auto& h = heads_[static_cast<std::size_t>(shard)];
    h.body.assign(body);
    h.cells.clear();
    proto::BodyReader r(h.body);
    const int16_t n = r.i16();
    h.visible_end = 2;
    for (int16_t i = 0; i < n && !r.failed(); ++i) {
      const int32_t len = r.i32();
      h.cells.push_back(len < 0 ? proto::Value()
                                : proto::Value(r.bytes(static_cast<std::size_t>(len))));
      if (i < visible_) h.visible_end = h.body.size() - r.remaining();
    }
    if (!r.ok_and_done() || h.cells.size() != shard_columns_.size()) {
      fail("malformed DataRow from a shard");
      return;
    }
    // An integer first key is read once per row, not at every comparison.
    h.key.reset();
    const auto& k = order_.front();
    const auto& kc = shard_columns_[static_cast<std::size_t>(k.column)];
    if ((kc.type == oid::kInt2 || kc.type == oid::kInt4 || kc.type == oid::kInt8) &&
        kc.format == 0) {
      if (const auto& v = h.cells[static_cast<std::size_t>(k.column)]) {
        int64_t x = 0;
        auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), x);
        if (ec == std::errc() && end == v->data() + v->size()) h.key = x;
      }
    }
    h.present = true;
    step();
    return;
  }
  auto dr = proto::DataRow::parse(body);
  if (!dr || static_cast<int>(dr->values.size()) != static_cast<int>(shard_columns_.size())) {
    fail("malformed DataRow from a shard");
    return;
  }
  if (plan_.aggregate) {
    std::string key;
    for (int c : plan_.group_columns) {
      const auto& v = dr->values[static_cast<std::size_t>(c)];
      const auto& col = shard_columns_[static_cast<std::size_t>(c)];
      if (!append_key(key, col.type, col.format,
                      v ? std::optional<std::string_view>(*v) : std::nullopt, exact_groups_))
        return fail("GROUP BY on a value of " + type_name(col.type) +
                    " pgshard cannot compare across shards (set IntervalStyle to postgres)");
    }
    auto [it, fresh] = group_index_.try_emplace(key, groups_.size());
    if (fresh) {
      Group g;
      for (const auto& v : dr->values)
        g.keys.push_back(v ? std::optional<std::string>(std::string(*v)) : std::nullopt);
      g.accs.resize(plan_.aggregates.size());
      groups_.push_back(std::move(g));
    }
    accumulate(groups_[it->second], dr->values);
    return;
  }
  Row row;
  row.reserve(dr->values.size());
  for (const auto& v : dr->values)
    row.push_back(v ? std::optional<std::string>(std::string(*v)) : std::nullopt);
  emit(std::move(row));
}

void Merger::end_of_rows(int shard) {
  ended_[static_cast<std::size_t>(shard)] = true;
  if (plan_.aggregate) {
    if (std::all_of(ended_.begin(), ended_.end(), [](bool e) { return e; })) finish_aggregate();
    return;
  }
  if (!order_.empty()) step();
}

void Merger::step() {
  // The k-way merge: once every shard still sending has a pending row, the smallest goes.
  while (!complete_) {
    int best = -1;
    for (int s = 0; s < shards_; ++s) {
      const auto& h = heads_[static_cast<std::size_t>(s)];
      if (!h.present) {
        if (!ended_[static_cast<std::size_t>(s)]) return;
        continue;
      }
      if (best < 0 || head_before(h, heads_[static_cast<std::size_t>(best)])) best = s;
    }
    if (best < 0) return;
    auto& head = heads_[static_cast<std::size_t>(best)];
    head.present = false;
    emit_head(head);
  }
}

bool Merger::head_before(const Head& a, const Head& b) const {
  if (a.key && b.key && *a.key != *b.key)
    return order_.front().descending ? *a.key > *b.key : *a.key < *b.key;
  return compare_rows(a.cells, b.cells, shard_columns_) < 0;
}

void Merger::emit_head(const Head& head) {
  if (complete_) return;
  if (plan_.distinct || plan_.distinct_on > 0) {
    Row row;
    row.reserve(head.cells.size());
    for (const auto& v : head.cells)
      row.push_back(v ? std::optional<std::string>(std::string(*v)) : std::nullopt);
    emit(std::move(row));
    return;
  }
  if (offset_ && skipped_ < *offset_) {
    ++skipped_;
    return;
  }
  if (visible_ == static_cast<int>(head.cells.size()))
    proto::MessageWriter(out_).begin(proto::msg::kDataRow).bytes(head.body).finish();
  else
    proto::MessageWriter(out_)
        .begin(proto::msg::kDataRow)
        .i16(static_cast<int16_t>(visible_))
        .bytes(std::string_view(head.body).substr(2, head.visible_end - 2))
        .finish();
  ++sent_;
  if (limit_ && static_cast<int64_t>(sent_) >= *limit_) complete_ = true;
}

template <typename Cells>
int Merger::compare_rows(const Cells& a, const Cells& b, const std::vector<Column>& columns) const {
  for (const auto& k : order_) {
    const auto& x = a[static_cast<std::size_t>(k.column)];
    const auto& y = b[static_cast<std::size_t>(k.column)];
    int c = 0;
    if (!x || !y) {
      if (!x && !y) continue;
      // A NULL sorts where NULLS FIRST/LAST puts it, whatever the direction.
      return !x ? (k.nulls_first ? -1 : 1) : (k.nulls_first ? 1 : -1);
    }
    const auto& col = columns[static_cast<std::size_t>(k.column)];
    auto r = compare_values(col.type, col.format, *x, *y,
                            k.c_collation ? c_collation() : collation_of(col));
    if (!r) {
      const_cast<Merger*>(this)->fail("cannot compare values of " + type_name(col.type) +
                                      " from different shards");
      return 0;
    }
    c = k.descending ? -*r : *r;
    if (c != 0) return c;
  }
  return 0;
}

void Merger::emit(Row row) {
  if (complete_) return;
  const auto& columns = plan_.aggregate ? output_columns_ : shard_columns_;
  if (plan_.distinct_on > 0) {
    if (last_distinct_on_) {
      bool same = true;
      for (int i = 0; i < plan_.distinct_on && same; ++i) {
        const int c = order_[static_cast<std::size_t>(i)].column;
        const auto& x = row[static_cast<std::size_t>(c)];
        const auto& y = (*last_distinct_on_)[static_cast<std::size_t>(c)];
        if (!x || !y) {
          same = !x && !y;
          continue;
        }
        const auto& col = columns[static_cast<std::size_t>(c)];
        auto r = compare_values(col.type, col.format, *x, *y, collation_of(col));
        same = r && *r == 0;
      }
      if (same) return;
    }
    last_distinct_on_ = row;
  }
  if (plan_.distinct) {
    std::string key;
    for (int i = 0; i < visible_; ++i) {
      const auto& v = row[static_cast<std::size_t>(i)];
      const auto& col = columns[static_cast<std::size_t>(i)];
      if (!append_key(key, col.type, col.format,
                      v ? std::optional<std::string_view>(*v) : std::nullopt, exact_distinct_))
        return fail("DISTINCT on a value of " + type_name(col.type) +
                    " pgshard cannot compare across shards (set IntervalStyle to postgres)");
    }
    if (!seen_.insert(std::move(key)).second) return;
  }
  if (offset_ && skipped_ < *offset_) {
    ++skipped_;
    return;
  }
  std::vector<proto::Value> values;
  values.reserve(static_cast<std::size_t>(visible_));
  for (int i = 0; i < visible_; ++i) {
    const auto& v = row[static_cast<std::size_t>(i)];
    values.push_back(v ? proto::Value(std::string_view(*v)) : proto::Value());
  }
  proto::DataRow{std::move(values)}.write(out_);
  ++sent_;
  if (limit_ && static_cast<int64_t>(sent_) >= *limit_) complete_ = true;
}

void Merger::take(std::string& out) {
  out += out_;
  out_.clear();
}

void Merger::accumulate(Group& g, const std::vector<proto::Value>& values) {
  for (std::size_t k = 0; k < plan_.aggregates.size(); ++k) {
    const auto& a = plan_.aggregates[k];
    auto& acc = g.accs[k];
    const auto& v = values[static_cast<std::size_t>(a.column)];
    const auto& col = shard_columns_[static_cast<std::size_t>(a.column)];
    auto add_count = [&](int column) {
      const auto& cv = values[static_cast<std::size_t>(column)];
      if (!cv) return;
      auto n = decode_int(oid::kInt8, shard_columns_[static_cast<std::size_t>(column)].format, *cv);
      if (!n) return fail("malformed count from a shard");
      acc.count += *n;
    };
    switch (a.kind) {
      case Aggregate::Kind::kCount:
        add_count(a.column);
        break;
      case Aggregate::Kind::kAvg:
        add_count(a.count_column);
        [[fallthrough]];
      case Aggregate::Kind::kSum: {
        if (!v) break;
        acc.any = true;
        if (is_integer(col.type)) {
          auto n = decode_int(col.type, col.format, *v);
          if (!n) return fail("malformed sum from a shard");
          int64_t total = 0;
          // sum(int2/int4) and avg's sum are bigint in PostgreSQL too.
          if (__builtin_add_overflow(acc.int_sum.value_or(0), *n, &total))
            return fail("bigint out of range", "22003");
          acc.int_sum = total;
        } else if (col.type == oid::kNumeric) {
          auto d = decode_numeric(col.format, *v);
          if (!d) return fail("malformed numeric from a shard");
          acc.num_sum = acc.num_sum ? acc.num_sum->add(*d) : *d;
        } else {
          auto d = decode_float(col.type, col.format, *v);
          if (!d) return fail("malformed float from a shard");
          acc.float_sum = col.type == oid::kFloat4 ? static_cast<float>(acc.float_sum.value_or(0)) +
                                                         static_cast<float>(*d)
                                                   : acc.float_sum.value_or(0) + *d;
        }
        break;
      }
      case Aggregate::Kind::kMin:
      case Aggregate::Kind::kMax: {
        if (!v) break;
        if (!acc.best) {
          acc.best = std::string(*v);
          break;
        }
        auto r = compare_values(col.type, col.format, *v, *acc.best, collation_of(col));
        if (!r) return fail("cannot compare values of " + type_name(col.type));
        if (a.kind == Aggregate::Kind::kMin ? *r < 0 : *r > 0) acc.best = std::string(*v);
        break;
      }
      case Aggregate::Kind::kBoolAnd:
      case Aggregate::Kind::kBoolOr: {
        if (!v) break;
        const bool b = col.format == 0 ? *v == "t" : (!v->empty() && (*v)[0] != 0);
        if (!acc.flag)
          acc.flag = b;
        else
          acc.flag = a.kind == Aggregate::Kind::kBoolAnd ? (*acc.flag && b) : (*acc.flag || b);
        break;
      }
    }
  }
}

std::optional<std::string> Merger::encode_integer(int32_t type, int64_t v, int16_t format) const {
  // A cast count or sum (count(*)::int) stays in its type; past its range PostgreSQL fails.
  const int64_t lo = type == oid::kInt2 ? INT16_MIN : type == oid::kInt4 ? INT32_MIN : INT64_MIN;
  const int64_t hi = type == oid::kInt2 ? INT16_MAX : type == oid::kInt4 ? INT32_MAX : INT64_MAX;
  if (v < lo || v > hi) {
    const_cast<Merger*>(this)->fail(type == oid::kInt2   ? "smallint out of range"
                                    : type == oid::kInt4 ? "integer out of range"
                                                         : "bigint out of range",
                                    "22003");
    return std::nullopt;
  }
  std::string wide = encode_int8(v, format);
  if (format == 0 || type == oid::kInt8) return wide;
  return wide.substr(type == oid::kInt4 ? 4 : 6);  // big-endian: the low bytes
}

std::optional<std::string> Merger::cast_total(const Aggregate& a, const Acc& acc,
                                              const Column& col) {
  // The total as the shards' type holds it: an integer, a numeric or a float; avg's
  // quotient is a numeric (float8 over floats), as PostgreSQL's avg returns it.
  const bool avg = a.kind == Aggregate::Kind::kAvg;
  const bool from_float = col.type == oid::kFloat4 || col.type == oid::kFloat8;
  const bool from_int = is_integer(col.type) && !avg;
  Decimal exact = acc.num_sum.value_or(Decimal::from_int(0));
  if (acc.int_sum) exact = exact.add(Decimal::from_int(*acc.int_sum));
  double approx = acc.float_sum.value_or(0);
  if (avg && from_float) approx /= static_cast<double>(acc.count);
  if (avg && !from_float) exact = exact.divide(acc.count);
  const int32_t to = a.cast_type;
  if (to == oid::kInt2 || to == oid::kInt4 || to == oid::kInt8) {
    const char* range = to == oid::kInt2   ? "smallint out of range"
                        : to == oid::kInt4 ? "integer out of range"
                                           : "bigint out of range";
    if (from_int) return encode_integer(to, acc.int_sum.value_or(0), col.format);
    if (from_float) {
      // float8 -> int: rint (ties to even), then the range check (float8_int4).
      const double r = std::rint(approx);
      if (!std::isfinite(r) || r < -9.2233720368547758e18 || r >= 9.2233720368547758e18) {
        fail(range, "22003");
        return std::nullopt;
      }
      return encode_integer(to, static_cast<int64_t>(r), col.format);
    }
    // numeric -> int: rounded half away from zero (numeric_int4).
    auto rounded = exact.round(1000, 0);
    int64_t v = 0;
    std::string text = rounded ? rounded->to_text() : std::string();
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (!rounded || ec != std::errc() || p != text.data() + text.size()) {
      fail(text == "NaN" ? "cannot convert NaN to integer" : range,
           text == "NaN" ? "0A000" : "22003");
      return std::nullopt;
    }
    return encode_integer(to, v, col.format);
  }
  if (to == oid::kNumeric) {
    Decimal d = exact;
    if (from_float) {
      // float8_numeric / float4_numeric: DBL_DIG (FLT_DIG) significant digits.
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.*g", col.type == oid::kFloat4 && !avg ? 6 : 15, approx);
      std::string t = buf;
      if (std::isnan(approx)) t = "NaN";
      if (std::isinf(approx)) t = approx > 0 ? "Infinity" : "-Infinity";
      auto parsed = Decimal::parse(t);
      if (!parsed) {
        fail("cannot convert a float total to numeric");
        return std::nullopt;
      }
      d = *parsed;
    }
    if (a.scale >= 0) {
      // numeric(p,s) holds no infinity (numeric_overflow on an infinite value).
      const std::string text = d.to_text();
      auto rounded = text.ends_with("Infinity") ? std::nullopt : d.round(a.precision, a.scale);
      if (!rounded) {
        fail("numeric field overflow", "22003");
        return std::nullopt;
      }
      d = *rounded;
    }
    return encode_numeric(d, col.format);
  }
  // float4 / float8.
  double v = approx;
  if (from_int)
    v = static_cast<double>(acc.int_sum.value_or(0));
  else if (!from_float)
    v = std::strtod(exact.to_text().c_str(), nullptr);
  if (to == oid::kFloat4 && std::isfinite(v) && std::isinf(static_cast<float>(v))) {
    fail("value out of range: overflow", "22003");
    return std::nullopt;
  }
  return encode_float(to, to == oid::kFloat4 ? static_cast<double>(static_cast<float>(v)) : v,
                      col.format);
}

std::optional<std::string> Merger::final_value(const Group& g, int k) {
  const auto& a = plan_.aggregates[static_cast<std::size_t>(k)];
  const auto& acc = g.accs[static_cast<std::size_t>(k)];
  const auto& col = shard_columns_[static_cast<std::size_t>(a.column)];
  auto sum_decimal = [&]() {
    Decimal d = acc.num_sum.value_or(Decimal::from_int(0));
    if (acc.int_sum) d = d.add(Decimal::from_int(*acc.int_sum));
    return d;
  };
  switch (a.kind) {
    case Aggregate::Kind::kCount:
      return encode_int8(acc.count, col.format);
    case Aggregate::Kind::kSum:
      if (!acc.any) return std::nullopt;
      if (a.cast_type != 0) return cast_total(a, acc, col);
      if (is_integer(col.type))
        return encode_integer(col.type, acc.int_sum.value_or(0), col.format);
      if (col.type == oid::kNumeric) {
        if (a.scale < 0) return encode_numeric(sum_decimal(), col.format);
        auto rounded = sum_decimal().round(a.precision, a.scale);
        if (!rounded) {
          fail("numeric field overflow", "22003");
          return std::nullopt;
        }
        return encode_numeric(*rounded, col.format);
      }
      return encode_float(col.type, acc.float_sum.value_or(0), col.format);
    case Aggregate::Kind::kAvg:
      if (!acc.any || acc.count == 0) return std::nullopt;
      if (a.cast_type != 0) return cast_total(a, acc, col);
      if (col.type == oid::kFloat4 || col.type == oid::kFloat8)
        return encode_float(oid::kFloat8,
                            acc.float_sum.value_or(0) / static_cast<double>(acc.count), col.format);
      return encode_numeric(sum_decimal().divide(acc.count), col.format);
    case Aggregate::Kind::kMin:
    case Aggregate::Kind::kMax:
      return acc.best;
    case Aggregate::Kind::kBoolAnd:
    case Aggregate::Kind::kBoolOr:
      if (!acc.flag) return std::nullopt;
      if (col.format == 0) return std::string(*acc.flag ? "t" : "f");
      return std::string(1, *acc.flag ? '\1' : '\0');
  }
  return std::nullopt;
}

void Merger::finish_aggregate() {
  std::vector<Row> rows;
  rows.reserve(groups_.size());
  for (const auto& g : groups_) {
    Row row;
    row.reserve(plan_.outputs.size());
    for (const auto& o : plan_.outputs) {
      if (o.kind == Output::Kind::kAggregate)
        row.push_back(final_value(g, o.column));
      else
        row.push_back(g.keys[static_cast<std::size_t>(o.column)]);
    }
    if (!error_.empty()) return;
    if (plan_.having) {
      auto keep = evaluate(*plan_.having, row);
      if (!error_.empty()) return;
      if (!keep || !*keep) continue;
    }
    rows.push_back(std::move(row));
  }
  groups_.clear();
  group_index_.clear();
  if (!order_.empty())
    std::stable_sort(rows.begin(), rows.end(), [&](const Row& a, const Row& b) {
      return compare_rows(a, b, output_columns_) < 0;
    });
  if (!error_.empty()) return;
  for (auto& r : rows) emit(std::move(r));
  complete_ = true;
}

std::optional<int> Merger::compare_operand(const Row& row, int value,
                                           const std::optional<std::string>& constant,
                                           int other_value) const {
  // value (an output column) against a constant, or against another output column.
  const auto& col = output_columns_[static_cast<std::size_t>(value)];
  const auto& v = row[static_cast<std::size_t>(value)];
  if (!v) return std::nullopt;
  auto as_text = [&](const Column& c, const std::string& raw) -> std::optional<std::string> {
    if (c.format == 0) return raw;
    if (c.type == oid::kText || c.type == oid::kVarchar || c.type == oid::kBpchar) return raw;
    return binary_to_text(c.type, raw);
  };
  std::optional<std::string> other;
  int32_t other_type = col.type;
  if (other_value >= 0) {
    const auto& oc = output_columns_[static_cast<std::size_t>(other_value)];
    const auto& ov = row[static_cast<std::size_t>(other_value)];
    if (!ov) return std::nullopt;
    other = as_text(oc, *ov);
    other_type = oc.type;
  } else {
    if (!constant) return std::nullopt;
    other = constant;
  }
  auto mine = as_text(col, *v);
  if (!mine || !other) {
    const_cast<Merger*>(this)->fail("cannot evaluate HAVING on values of " + type_name(col.type));
    return std::nullopt;
  }
  const bool numeric_like = [](int32_t t) { return is_integer(t) || t == oid::kNumeric; }(col.type);
  const bool float_like = col.type == oid::kFloat4 || col.type == oid::kFloat8 ||
                          other_type == oid::kFloat4 || other_type == oid::kFloat8;
  if (float_like) {
    auto x = decode_float(oid::kFloat8, 0, *mine), y = decode_float(oid::kFloat8, 0, *other);
    if (x && y) return compare_values(oid::kFloat8, 0, *mine, *other, collation_);
  }
  if (numeric_like) {
    auto x = Decimal::parse(*mine), y = Decimal::parse(*other);
    if (x && y) return x->compare(*y);
  }
  auto r = compare_values(col.type, 0, *mine, *other, collation_);
  if (!r)
    const_cast<Merger*>(this)->fail("cannot evaluate HAVING on values of " + type_name(col.type));
  return r;
}

std::optional<bool> Merger::evaluate(const Predicate& p, const Row& row) const {
  switch (p.kind) {
    case Predicate::Kind::kAnd:
    case Predicate::Kind::kOr: {
      const bool is_and = p.kind == Predicate::Kind::kAnd;
      bool unknown = false;
      for (const auto& c : p.children) {
        auto v = evaluate(c, row);
        if (!v)
          unknown = true;
        else if (*v != is_and)
          return !is_and;
      }
      if (unknown) return std::nullopt;
      return is_and;
    }
    case Predicate::Kind::kNot: {
      auto v = evaluate(p.children.at(0), row);
      if (!v) return std::nullopt;
      return !*v;
    }
    case Predicate::Kind::kIsNull:
    case Predicate::Kind::kIsNotNull: {
      const bool null =
          p.left_value >= 0 ? !row[static_cast<std::size_t>(p.left_value)] : !p.left_const;
      return p.kind == Predicate::Kind::kIsNull ? null : !null;
    }
    case Predicate::Kind::kCompare:
      break;
  }
  std::optional<int> c;
  if (p.left_value >= 0) {
    c = compare_operand(row, p.left_value, p.right_const, p.right_value);
  } else if (p.right_value >= 0) {
    c = compare_operand(row, p.right_value, p.left_const, -1);
    if (c) c = -*c;
  } else {
    return std::nullopt;
  }
  if (!c) return std::nullopt;
  switch (p.op) {
    case Predicate::Op::kEq:
      return *c == 0;
    case Predicate::Op::kNe:
      return *c != 0;
    case Predicate::Op::kLt:
      return *c < 0;
    case Predicate::Op::kLe:
      return *c <= 0;
    case Predicate::Op::kGt:
      return *c > 0;
    case Predicate::Op::kGe:
      return *c >= 0;
  }
  return std::nullopt;
}

std::string MergePlan::describe() const {
  std::string s;
  auto add = [&](const std::string& part) { s += (s.empty() ? "" : ", ") + part; };
  if (aggregate) {
    add(group_columns.empty() ? "combine aggregates"
                              : "merge " + std::to_string(group_columns.size()) + "-column groups");
    if (having) add("HAVING after the merge");
  }
  if (!order.empty()) add(aggregate ? "sort merged groups" : "k-way merge on ORDER BY");
  if (distinct || distinct_on > 0) add(distinct_on ? "DISTINCT ON" : "DISTINCT");
  if (offset.present()) add("OFFSET applied by pgshard");
  if (limit.present())
    add(aggregate ? "LIMIT after the merge" : "LIMIT (LIMIT+OFFSET pushed to shards)");
  if (s.empty()) s = "concatenate rows";
  return s;
}

}  // namespace pgshard::merge
