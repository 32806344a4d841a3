// How the rows of a multi-shard SELECT are combined: what the router's rewrite asks every
// shard for, and what pgshard does with the shards' rows. Plain data, built by the router
// from PostgreSQL's parse tree and executed by merge::Merger.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pgshard::merge {

// One ORDER BY key over the merged output (a column of the shard result). A negative
// column -(h+1) is hidden helper column h, counted from the first hidden column.
struct SortKey {
  int column = 0;
  bool descending = false;
  bool nulls_first = false;  // PostgreSQL: NULLS LAST for ASC, NULLS FIRST for DESC
  bool c_collation = false;  // COLLATE "C" / "POSIX": byte order
  bool operator==(const SortKey&) const = default;
};

// LIMIT and OFFSET: constants, Bind parameters, or absent.
struct Bound {
  std::optional<int64_t> value;
  int param = 0;  // 1-based $n when the bound is a parameter
  bool present() const { return value || param > 0; }
  bool operator==(const Bound&) const = default;
};

// An aggregate in the client's query and the shard columns it is computed from.
struct Aggregate {
  enum class Kind { kCount, kSum, kMin, kMax, kAvg, kBoolAnd, kBoolOr };
  Kind kind = Kind::kCount;
  int column = 0;         // shard column with the partial (count, sum, min...)
  int count_column = -1;  // avg: the shard column with count(x)
  // sum(x)::numeric(p,s) / count(x)::numeric(p,s): shards send the exact sum; the total is
  // rounded to `scale` (as the cast rounds) and described with `typmod`. -1: no typmod.
  int scale = -1;
  int precision = 0;
  int32_t typmod = -1;
  // count(x)::int, sum(x)::numeric(p,s), sum(x)::float8...: the type the client's cast
  // names (a type OID; 0: no cast). The shards send the aggregate without the cast and the
  // merge casts the total once, as PostgreSQL casts its one total (a cast on each shard's
  // part would round each part: sum(numeric)::int).
  int32_t cast_type = 0;
  bool operator==(const Aggregate&) const = default;
};

// HAVING, evaluated on merged groups: a small tree of AND/OR/NOT and comparisons between
// output values (aggregates, group keys) and constants.
struct Predicate {
  enum class Kind { kAnd, kOr, kNot, kCompare, kIsNull, kIsNotNull };
  enum class Op { kEq, kNe, kLt, kLe, kGt, kGe };
  Kind kind = Kind::kCompare;
  Op op = Op::kEq;
  std::vector<Predicate> children;  // kAnd/kOr/kNot
  // kCompare: each side is an output value (value >= 0) or a constant.
  int left_value = -1, right_value = -1;
  std::optional<std::string> left_const, right_const;  // text of the constant; nullopt = NULL
  bool operator==(const Predicate&) const = default;
};

// One value of a merged group, in the order of the shard columns that follow the plan.
struct Output {
  enum class Kind { kGroupKey, kAggregate, kConstant };
  Kind kind = Kind::kGroupKey;
  int column = 0;  // kGroupKey/kConstant: the shard column; kAggregate: index into aggregates
  bool operator==(const Output&) const = default;
};

struct MergePlan {
  // The statement each shard runs (deparsed by libpg_query). Empty: the client's own.
  std::string shard_sql;
  // The last `hidden` shard columns are pgshard's helpers (sort keys not in the select
  // list, avg's counts...); the client never sees them.
  int hidden = 0;

  std::vector<SortKey> order;  // k-way merge (or sort of merged groups)
  Bound limit, offset;

  bool distinct = false;  // DISTINCT: drop repeated visible rows
  int distinct_on = 0;    // DISTINCT ON: the first N sort keys identify a row

  // Aggregation: when `aggregate` is set, every shard returns partial groups whose
  // columns are described by `outputs` (one per merged column, visible ones first).
  bool aggregate = false;
  std::vector<int> group_columns;  // shard columns that form the group key
  std::vector<Aggregate> aggregates;
  std::vector<Output> outputs;
  std::optional<Predicate> having;

  // GROUP BY / DISTINCT keys that include the shard key column: every group (distinct
  // row) is on one shard, so no equality of values from different shards is needed and any
  // type groups exactly. Otherwise the merge groups only types whose equality it
  // reproduces (merge::exact_group_equality).
  bool groups_within_shard = false;
  bool distinct_within_shard = false;

  // The relations the statement reads (a computed text column takes its collation from
  // their columns).
  std::vector<std::string> relations;

  // What stops the merge entirely (0A000), when not empty.
  std::string unsupported;
  std::string hint;

  bool needs_merge() const {
    return !shard_sql.empty() || hidden > 0 || !order.empty() || limit.present() ||
           offset.present() || distinct || distinct_on > 0 || aggregate;
  }
  std::string describe() const;  // one line for EXPLAIN (ROUTE)
  bool operator==(const MergePlan&) const = default;
};

}  // namespace pgshard::merge
